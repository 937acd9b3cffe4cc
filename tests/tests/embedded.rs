//! Scenario tests on the embedded in-memory store.

closeflow_tests::scenario_tests!(closeflow_tests::Backend::Embedded);
closeflow_tests::hardening_tests!(closeflow_tests::Backend::Embedded);
closeflow_tests::hardening_embedded_tests!();

mod options {
    closeflow_tests::options_tests!(closeflow_tests::Backend::Embedded);
}

mod strategy {
    closeflow_tests::strategy_tests!(closeflow_tests::Backend::Embedded);
}

mod store_contract {
    closeflow_tests::store_contract_tests!(closeflow_tests::Backend::Embedded);
}
