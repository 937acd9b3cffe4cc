//! Pipeline scenarios on the embedded stack (memory store, change feed, in-process queue).

closeflow_tests::pipeline_tests!(closeflow_tests::Backend::Embedded);
