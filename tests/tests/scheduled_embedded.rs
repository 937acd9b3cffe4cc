//! Reconciler and cleanup scenarios on the embedded stack.

closeflow_tests::reconcile_tests!(closeflow_tests::Backend::Embedded);

mod sync {
    closeflow_tests::sync_tests!(closeflow_tests::Backend::Embedded);
}
