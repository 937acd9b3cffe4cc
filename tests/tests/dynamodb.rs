//! Scenario tests on DynamoDB (moto in `make test`), plus the store-specific promises:
//! round trips per close path, and what the position item carries for the outbox.

use closeflow_tests::{Backend, TestApp};

closeflow_tests::scenario_tests!(closeflow_tests::Backend::DynamoDb);
closeflow_tests::hardening_tests!(closeflow_tests::Backend::DynamoDb);

/// Issue target: phase 1 is one conditional write, so every close path is one round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_path_costs_one_dynamodb_round_trip() {
    let app = TestApp::new(Backend::DynamoDb).await;
    app.open_position("pos-rt", "10").await;

    let mut measure = Vec::new();
    for (path, key, id) in [
        ("create", "k1", "pos-rt"),
        ("replay", "k1", "pos-rt"),
        ("different key", "k2", "pos-rt"),
        ("not found", "k1", "pos-missing"),
    ] {
        let before = app.round_trips();
        let r = app.close(id, key).await;
        measure.push((path, r.status, app.round_trips() - before));
    }
    assert_eq!(
        measure,
        [
            ("create", 201, 1),
            ("replay", 200, 1),
            ("different key", 409, 1),
            ("not found", 404, 1)
        ]
    );
    let before = app.round_trips();
    assert_eq!(app.get("/positions/pos-rt").await.status, 200);
    assert_eq!(app.round_trips() - before, 1, "GET position is one read");
}

mod store_contract {
    closeflow_tests::store_contract_tests!(closeflow_tests::Backend::DynamoDb);
}
