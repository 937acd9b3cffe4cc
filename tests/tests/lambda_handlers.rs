//! The pipeline Lambda bodies on realistic events: DynamoDB stream -> relay, SQS -> submitter.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::sqs::SqsEvent;
use closeflow_aws::lambda::{relay_stream_event, submit_sqs_event, watch_sqs_event};
use closeflow_domain::{PositionAggregate, PositionId};
use closeflow_pipeline::{
    ManualClock, MemoryQueue, MemoryWatch, QueueMessage, SimScenarios, SimulatedBroker, WatchRequest,
};
use closeflow_store::dynamo::codec;
use closeflow_store::{AggregateKey, AuditLog, AuditQuery, CloseStore, MemoryStore};
use closeflow_tests::{start_time, Backend, TestApp};
use serde_json::{json, Value};

fn image(agg: &PositionAggregate) -> Value {
    closeflow_store::dynamo::json::item_to_json(&codec::aggregate_item(agg))
}

fn record(seq: &str, old: Option<Value>, new: Value) -> Value {
    let mut change = json!({
        "ApproximateCreationDateTime": 1767364200.0,
        "Keys": {"pk": new["pk"].clone(), "sk": new["sk"].clone()},
        "NewImage": new,
        "SequenceNumber": seq,
        "SizeBytes": 512,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(o) = old {
        change["OldImage"] = o;
    }
    json!({
        "awsRegion": "us-east-1",
        "dynamodb": change,
        "eventID": format!("ev-{seq}"),
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventVersion": "1.1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/closeflow/stream/2026-01-01T00:00:00.000"
    })
}

fn watch() -> MemoryWatch {
    MemoryWatch::new(Arc::new(ManualClock::new(start_time())))
}

/// An aggregate before and after a close was accepted, produced by the real API.
async fn closing_aggregates() -> (PositionAggregate, PositionAggregate) {
    let app = TestApp::new(Backend::Embedded).await;
    app.open_position("pos-ev", "10").await;
    let before = app.aggregate("pos-ev").await;
    assert_eq!(app.close("pos-ev", "k").await.status, 201);
    (before, app.aggregate("pos-ev").await)
}

#[tokio::test]
async fn a_stream_record_of_a_new_close_request_becomes_one_fifo_message_even_when_replayed() {
    let (before, after) = closing_aggregates().await;
    let event: dynamodb::Event =
        serde_json::from_value(json!({"Records": [record("100", Some(image(&before)), image(&after))]})).unwrap();
    let queue = MemoryQueue::new();
    let watch = watch();
    let resp = relay_stream_event(&queue, &watch, event.clone()).await;
    assert!(resp.batch_item_failures.is_empty());
    let replay = relay_stream_event(&queue, &watch, event).await;
    assert!(replay.batch_item_failures.is_empty());
    let msgs = queue.take_all();
    assert_eq!(msgs.len(), 1, "the replay carried the same deduplication id");
    let cr = after.latest_close_request.unwrap();
    assert_eq!(msgs[0].dedup_id, format!("{}-1", cr.id));
    assert_eq!(msgs[0].group_id, "pos-ev");
}

#[tokio::test]
async fn an_undecodable_record_is_reported_and_holds_the_records_behind_it() {
    let (before, after) = closing_aggregates().await;
    let mut broken = image(&after);
    broken["status"] = json!({"S": "BROKEN"});
    let event: dynamodb::Event = serde_json::from_value(json!({"Records": [
        record("200", Some(image(&before)), broken),
        record("201", Some(image(&before)), image(&after)),
    ]}))
    .unwrap();
    let queue = MemoryQueue::new();
    let resp = relay_stream_event(&queue, &watch(), event).await;
    let ids: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(ids, [Some("200".to_string())]);
    assert!(
        queue.is_empty(),
        "nothing behind the failed record was relayed out of order"
    );
}

fn sqs_event(msgs: &[(&str, &QueueMessage)]) -> SqsEvent {
    serde_json::from_value(sqs_event_json(msgs)).unwrap()
}

#[tokio::test]
async fn a_message_delivered_twice_in_one_batch_places_one_order() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(start_time()));
    let (_, after) = closing_aggregates().await;
    store.insert_aggregate(after.clone());
    let msg = closeflow_pipeline::relay::message_for(None, &after).unwrap();

    let sim = SimulatedBroker::new(SimScenarios::parse("AAPL=hold").unwrap(), b"s", clock.clone());
    let resp = submit_sqs_event(
        store.as_ref(),
        &sim,
        clock.as_ref(),
        &MemoryQueue::new(),
        &closeflow_pipeline::LogSink,
        sqs_event(&[("m1", &msg), ("m2", &msg)]),
    )
    .await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(sim.orders_placed(), 1, "the duplicate message placed nothing");
    let agg = store
        .aggregate(&AggregateKey::Position(PositionId::parse("pos-ev").unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(agg.orders.len(), 1);
}

#[tokio::test]
async fn an_unknown_outcome_fails_the_message_and_the_rest_of_its_group() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(start_time()));
    let (_, after) = closing_aggregates().await;
    store.insert_aggregate(after.clone());
    let msg = closeflow_pipeline::relay::message_for(None, &after).unwrap();
    let broken = QueueMessage {
        body: "{not json".into(),
        ..msg.clone()
    };
    // A broker that cannot be reached: every submission's outcome is unknown.
    let broker = closeflow_alpaca::AlpacaBroker::new(closeflow_alpaca::AlpacaConfig {
        base_url: "http://127.0.0.1:9".into(),
        key_id: "k".into(),
        secret_key: "s".into(),
        timeout: std::time::Duration::from_millis(200),
    })
    .unwrap();
    let resp = submit_sqs_event(
        store.as_ref(),
        &broker,
        clock.as_ref(),
        &MemoryQueue::new(),
        &closeflow_pipeline::LogSink,
        sqs_event(&[("m1", &msg), ("m2", &msg)]),
    )
    .await;
    let ids: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    let resp = submit_sqs_event(
        store.as_ref(),
        &broker,
        clock.as_ref(),
        &MemoryQueue::new(),
        &closeflow_pipeline::LogSink,
        sqs_event(&[("m3", &broken)]),
    )
    .await;
    assert_eq!(
        resp.batch_item_failures.len(),
        1,
        "a poison message goes to the DLQ via redrive"
    );
}

#[tokio::test]
async fn the_event_publisher_turns_a_stream_record_into_its_state_change_event() {
    let (before, after) = closing_aggregates().await;
    let event: dynamodb::Event =
        serde_json::from_value(json!({"Records": [record("300", Some(image(&before)), image(&after))]})).unwrap();
    let sink = closeflow_pipeline::RecordingSink::default();
    let audit = closeflow_store::MemoryStore::new();
    let retention = closeflow_domain::Policy::default().audit_retention;
    let resp = closeflow_aws::lambda::publish_stream_event(&sink, &audit, retention, event).await;
    assert!(resp.batch_item_failures.is_empty());
    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail_type, "PositionClosing");
    assert_eq!(events[0].position_id, "pos-ev");
    assert_eq!(events[0].account_id, "acct-1");
    let trail = audit
        .trail(&AuditQuery::Position(after.position.id.clone()), 10, None)
        .await
        .unwrap();
    let actions: Vec<_> = trail.entries.iter().map(|e| e.action).collect();
    assert_eq!(actions, ["position_changed", "close_requested"]);
    assert_eq!(trail.entries[1].actor, "ops", "the API token's name");
}

/// Writes the generated sample events in `events/` (run with `--ignored` after changing the
/// item layout; the other tests then check the committed samples still work).
#[tokio::test]
#[ignore = "regenerates events/*.json"]
async fn generate_sample_events() {
    let (before, after) = closing_aggregates().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let stream = json!({"Records": [record("4900000000000000000000001", Some(image(&before)), image(&after))]});
    std::fs::write(
        format!("{dir}/dynamodb-stream.json"),
        serde_json::to_string_pretty(&stream).unwrap(),
    )
    .unwrap();
    let msg = closeflow_pipeline::relay::message_for(Some(&before), &after).unwrap();
    let sqs = serde_json::to_value(sqs_event_json(&[("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", &msg)])).unwrap();
    std::fs::write(
        format!("{dir}/sqs-order-message.json"),
        serde_json::to_string_pretty(&sqs).unwrap(),
    )
    .unwrap();
}

fn sqs_event_json(msgs: &[(&str, &QueueMessage)]) -> Value {
    json!({"Records": msgs.iter().map(|(id, m)| json!({
        "messageId": id,
        "receiptHandle": format!("AQEB-{id}"),
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795377600000",
            "SenderId": "AROAEXAMPLE:outbox-relay",
            "ApproximateFirstReceiveTimestamp": "1795377600050",
            "MessageGroupId": m.group_id,
            "MessageDeduplicationId": m.dedup_id,
            "SequenceNumber": "18849496460467696128"
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:closeflow-orders.fifo",
        "awsRegion": "us-east-1"
    })).collect::<Vec<_>>()})
}

/// Every committed sample event runs through its function (embedded mode) with the
/// expected outcome: what `make invoke` shows a person.
#[tokio::test]
async fn every_sample_event_runs_through_its_function() {
    use closeflow_embedded::invoke::invoke;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
    let put = invoke("http-api", &read("http-api-put-position.json")).await.unwrap();
    assert_eq!(put["statusCode"], 201, "{put}");
    assert_eq!(put["body"]["account_id"], "acct-1");
    let close = invoke("http-api", &read("http-api-close-position.json")).await.unwrap();
    assert_eq!(close["statusCode"], 404, "a fresh embedded store has no pos-1: {close}");
    let hook = invoke("broker-webhook", &read("broker-webhook.json")).await.unwrap();
    assert_eq!(
        (hook["statusCode"].as_u64(), hook["body"]["result"].as_str()),
        (Some(202), Some("unknown_order")),
        "{hook}"
    );
    let relay = invoke("outbox-relay", &read("dynamodb-stream.json")).await.unwrap();
    assert_eq!(relay["response"]["batchItemFailures"], json!([]));
    assert_eq!(relay["messages"].as_array().unwrap().len(), 1);
    let events = invoke("event-publisher", &read("dynamodb-stream.json")).await.unwrap();
    assert_eq!(events["events"][0]["detail-type"], "PositionClosing");
    let submit = invoke("order-submitter", &read("sqs-order-message.json"))
        .await
        .unwrap();
    assert_eq!(submit["response"]["batchItemFailures"], json!([]), "{submit}");
    let watch = invoke("order-watch", &read("sqs-order-watch.json")).await.unwrap();
    assert_eq!(
        (
            watch["response"]["batchItemFailures"].clone(),
            watch["watches_scheduled"].clone()
        ),
        (json!([]), json!(0)),
        "a fresh embedded store has no such order: nothing to check again: {watch}"
    );
    for f in ["reconciler", "cleanup"] {
        let r = invoke(f, &read("schedule.json")).await.unwrap();
        assert_eq!(r["items_read"], 0, "{f}: {r}");
    }
    assert!(invoke("nope", "{}").await.is_err());
}

/// The relay schedules the first check of an order exactly when a record shows it recorded;
/// the watch Lambda applies what the broker says (a fill no webhook reported) and stops.
#[tokio::test]
async fn recorded_orders_are_watched_and_a_silent_fill_closes_the_position() {
    let app = closeflow_tests::pipeline::PipelineApp::new(Backend::Embedded, "NVDA=hold").await;
    let cr = app.open_and_close("pos-w", "NVDA", "10").await;
    let closing = app.aggregate("pos-w").await;
    app.driver.pump().await;
    let submitted = app.aggregate("pos-w").await;
    let stream = |old: &PositionAggregate, new: &PositionAggregate| -> dynamodb::Event {
        serde_json::from_value(json!({"Records": [record("300", Some(image(old)), image(new))]})).unwrap()
    };
    let queue = MemoryQueue::new();
    let scheduled = watch();
    relay_stream_event(&queue, &scheduled, stream(&closing, &submitted)).await;
    assert_eq!(scheduled.len(), 1, "the order the submitter recorded");
    let unrelated = watch();
    relay_stream_event(&queue, &unrelated, stream(&submitted, &submitted)).await;
    assert!(
        unrelated.is_empty(),
        "a record that recorded no new order schedules nothing"
    );

    let coid = closeflow_domain::ClientOrderId::new(closeflow_domain::CloseRequestId::parse(&cr).unwrap(), 1);
    app.sim.settle_silently(
        &coid,
        closeflow_domain::OrderStatus::Filled,
        closeflow_domain::Quantity::from(10),
    );
    let body = serde_json::to_string(&WatchRequest::first(&coid)).unwrap();
    let event: SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "w-1", "body": body},
        {"messageId": "w-2", "body": "not a watch request"},
    ]}))
    .unwrap();
    let next = watch();
    let resp = watch_sqs_event(app.store.as_ref(), app.sim.as_ref(), app.clock.as_ref(), &next, event).await;
    assert!(
        resp.batch_item_failures.is_empty(),
        "a malformed message is dropped, not retried"
    );
    assert_eq!(app.position("pos-w").await.body["status"], "closed");
    assert!(next.is_empty(), "an ended order is not checked again");
}

/// The guard-events function: an EventBridge event delivered twice starts one bulk close
/// (and queues its first step once); an invalid event is answered, not retried.
#[tokio::test]
async fn a_guard_event_delivered_twice_starts_one_bulk_close() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(start_time()));
    let queue = MemoryQueue::new();
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/guard-triggered.json")).unwrap();
    let first = closeflow_aws::lambda::guard_event(store.as_ref(), &queue, clock.as_ref(), &raw, 3)
        .await
        .unwrap();
    let again = closeflow_aws::lambda::guard_event(store.as_ref(), &queue, clock.as_ref(), &raw, 3)
        .await
        .unwrap();
    assert_eq!(
        (first["started"].as_bool(), again["started"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(first["bulk_close_id"], again["bulk_close_id"]);
    assert_eq!(queue.take_all().len(), 1, "its first step is queued once");
    let id = closeflow_domain::BulkCloseId::parse(first["bulk_close_id"].as_str().unwrap()).unwrap();
    let bulk = closeflow_store::BulkLog::bulk_close(store.as_ref(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bulk.actor, "guard:gap-1");
    assert_eq!(bulk.filter.symbols, Some(vec!["AAPL".to_string()]));
    assert!(bulk.reason.unwrap().contains("observed 7.5 >= threshold 5"));

    let mut tampered: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    tampered["detail"]["position_ids"] = serde_json::json!(["p-1"]);
    let r = closeflow_aws::lambda::guard_event(
        store.as_ref(),
        &queue,
        clock.as_ref(),
        tampered.to_string().as_bytes(),
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        (r["error"].as_str(), r["field"].as_str()),
        (Some("invalid_guard_event"), Some("position_ids"))
    );
    assert!(queue.take_all().is_empty());
}
