//! Pipeline scenarios on DynamoDB + its stream + SQS FIFO (moto), driven locally.

closeflow_tests::pipeline_tests!(closeflow_tests::Backend::DynamoDb);

use closeflow_domain::{
    apply_order_update, Applied, ClientOrderId, CloseRequestId, OrderStatus, OrderUpdate, Quantity,
};
use closeflow_tests::pipeline::PipelineApp;
use closeflow_tests::Backend;

fn fill(cr: &str, status: OrderStatus, filled: i64, seq: Option<u64>, exec: Option<&str>, second: u32) -> OrderUpdate {
    use chrono::TimeZone;
    OrderUpdate {
        client_order_id: ClientOrderId::new(CloseRequestId::parse(cr).unwrap(), 1),
        broker_order_id: Some("brk-1".into()),
        status,
        filled_qty: Quantity::from(filled),
        filled_avg_price: closeflow_domain::Price::parse("99.5").unwrap(),
        seq,
        execution_id: exec.map(str::to_string),
        updated_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 14, 31, second).unwrap(),
    }
}

/// Issue target: a non-terminal partial fill is one round trip, a settling fill at most
/// two; and the in-place write leaves exactly what the domain merge would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_cost_one_or_two_round_trips_and_match_the_domain_merge() {
    let app = PipelineApp::new(Backend::DynamoDb, "NVDA=hold").await;
    let cr = app.open_and_close("p-rt", "NVDA", "10").await;
    app.driver.pump().await;
    let now = closeflow_api::Clock::now(app.clock.as_ref());
    let counter = app.round_trips.clone().unwrap();

    let mut results = Vec::new();
    for u in [
        fill(&cr, OrderStatus::PartiallyFilled, 3, Some(2), None, 1),
        fill(&cr, OrderStatus::PartiallyFilled, 5, None, Some("x-9"), 2),
    ] {
        let before = app.aggregate("p-rt").await;
        let rt = counter.get();
        app.store.apply_order_update(&u, now, "tester").await.unwrap();
        results.push(counter.get() - rt);
        let after = app.aggregate("p-rt").await;
        let Ok(Applied::Changed(mut expected)) = apply_order_update(&before, &u, now) else {
            panic!("the domain applies this update")
        };
        // The protocol stamps who wrote the change; the fast path must too.
        expected.changed_by = Some("tester".into());
        assert_eq!(after, *expected, "in-place write == domain merge");
    }
    let rt = counter.get();
    app.store
        .apply_order_update(&fill(&cr, OrderStatus::Filled, 10, Some(3), None, 3), now, "tester")
        .await
        .unwrap();
    results.push(counter.get() - rt);
    assert_eq!(results, [1, 1, 2], "partial, partial (execution id), terminal");
    assert_eq!(app.position("p-rt").await.body["status"], "closed");

    // A stale partial after the close: the in-place condition fails, the general path
    // reads once and writes nothing.
    let rt = counter.get();
    let r = app
        .store
        .apply_order_update(
            &fill(&cr, OrderStatus::PartiallyFilled, 4, Some(1), None, 4),
            now,
            "tester",
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        closeflow_store::UpdateResult::Ignored(closeflow_domain::Ignored::StaleSeq)
    );
    assert_eq!(counter.get() - rt, 2);
}

/// The order watch's SQS schedule: a check is delivered only after its delay (a standard
/// queue's per-message delay), with the request intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_check_on_sqs_arrives_after_its_delay() {
    use closeflow_pipeline::{WatchQueue, WatchRequest};
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let name = format!("{}-watch", closeflow_tests::unique_table_name());
    let queue = closeflow_aws::SqsWatchQueue::create(sqs.clone(), &name).await.unwrap();
    let req = WatchRequest {
        client_order_id: "7c3e1a2b-9d4f-8a6b-8c1d-2e3f4a5b6c7d-1".into(),
        step: 2,
    };
    queue.schedule(&req, chrono::TimeDelta::seconds(1)).await.unwrap();
    let receive = || async {
        sqs.receive_message()
            .queue_url(queue.url())
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages()
            .to_vec()
    };
    assert!(receive().await.is_empty(), "not visible before its delay");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let got = loop {
        let msgs = receive().await;
        if !msgs.is_empty() || std::time::Instant::now() > deadline {
            break msgs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(got.len(), 1, "delivered after the delay");
    let back: WatchRequest = serde_json::from_str(got[0].body().unwrap()).unwrap();
    assert_eq!(back, req);
}
