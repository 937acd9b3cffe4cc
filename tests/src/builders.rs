//! The shared test builders live in the domain crate (`closeflow_domain::testing`), so the
//! domain's own unit tests use the same ones; every suite here imports them from this path.

pub use closeflow_domain::testing::*;
