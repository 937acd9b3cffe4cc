//! Every scenario suite on the SQLite store (the durable embedded stack), each test in its
//! own database file.

mod scenarios {
    closeflow_tests::scenario_tests!(closeflow_tests::Backend::Sqlite);
}

mod pipeline {
    closeflow_tests::pipeline_tests!(closeflow_tests::Backend::Sqlite);
}

mod scheduled {
    closeflow_tests::reconcile_tests!(closeflow_tests::Backend::Sqlite);
}

mod store_contract {
    closeflow_tests::store_contract_tests!(closeflow_tests::Backend::Sqlite);
}

mod hardening {
    closeflow_tests::hardening_tests!(closeflow_tests::Backend::Sqlite);
}

mod options {
    closeflow_tests::options_tests!(closeflow_tests::Backend::Sqlite);
}

mod strategy {
    closeflow_tests::strategy_tests!(closeflow_tests::Backend::Sqlite);
}

mod sync {
    closeflow_tests::sync_tests!(closeflow_tests::Backend::Sqlite);
}
