//! Scenario tests on the embedded in-memory store.

closeflow_tests::scenario_tests!(closeflow_tests::Backend::Embedded);
closeflow_tests::hardening_tests!(closeflow_tests::Backend::Embedded);
closeflow_tests::hardening_embedded_tests!();
