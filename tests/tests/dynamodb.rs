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

/// A page of a listing is one Query on its index (never a Scan), and a partial limit
/// close is still one conditional write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_and_a_partial_limit_close_cost_one_round_trip_each() {
    let app = TestApp::new(Backend::DynamoDb).await;
    for i in 0..5 {
        app.open_position(&format!("lp-{i}"), "10").await;
    }
    let counter = app.round_trips.clone().expect("counter");
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let before = app.round_trips();
        let path = match &cursor {
            Some(c) => format!("/positions?account_id=acct-1&limit=2&cursor={c}"),
            None => "/positions?account_id=acct-1&limit=2".to_string(),
        };
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(app.round_trips() - before, 1, "one round trip per page");
        pages += 1;
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert!(!counter.operations().iter().any(|op| op == "Scan"), "never a Scan");
    let before = app.round_trips();
    let r = app
        .close_with(
            "lp-0",
            "k",
            Some(r#"{"qty":"4","order_type":"limit","limit_price":"101.5"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(app.round_trips() - before, 1, "a partial limit close is one UpdateItem");
}

mod options {
    closeflow_tests::options_tests!(closeflow_tests::Backend::DynamoDb);
}

mod strategy {
    closeflow_tests::strategy_tests!(closeflow_tests::Backend::DynamoDb);
}

mod store_contract {
    closeflow_tests::store_contract_tests!(closeflow_tests::Backend::DynamoDb);
}
