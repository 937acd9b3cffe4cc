//! The store port for positions and close requests, with two adapters of identical
//! semantics: [`MemoryStore`] (embedded stack, fast tests) and [`DynamoStore`] (AWS, moto).
//!
//! Both adapters keep a position, the idempotency keys used on it and its latest close
//! request together in one record, so that phase 1 of a close (seed 000 §4) is a single
//! atomic conditional write, and both classify outcomes with the same pure domain
//! functions ([`decide_close`], [`decide_register`]).

use async_trait::async_trait;
use closeflow_domain::{
    CloseCommand, CloseRejection, CloseRequest, CloseRequestId, Position, PositionId,
    RegisterDecision, RegisterPosition, RegisterRejection,
};

pub mod dynamo;
pub mod memory;

pub use dynamo::{DynamoStore, RoundTripCounter};
pub use memory::MemoryStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent write or throttling: nothing was written, the caller may retry.
    #[error("the position is busy (write conflict or throttling)")]
    Contention,
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Result of [`CloseStore::open_close_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    Created {
        position: Position,
        close_request: CloseRequest,
    },
    Replayed {
        position: Position,
        close_request: CloseRequest,
    },
    Rejected(CloseRejection),
}

pub type RegisterOutcome = Result<RegisterDecision, RegisterRejection>;

#[async_trait]
pub trait CloseStore: Send + Sync {
    /// Registers a new position or updates an open one (PUT semantics).
    async fn register_position(
        &self,
        cmd: &RegisterPosition,
    ) -> Result<RegisterOutcome, StoreError>;

    async fn position(&self, id: &PositionId) -> Result<Option<Position>, StoreError>;

    /// Phase 1 of a close in one atomic conditional write: idempotency check, state
    /// validation, close request creation, position -> `closing`.
    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError>;

    async fn close_request(&self, id: &CloseRequestId) -> Result<Option<CloseRequest>, StoreError>;
}
