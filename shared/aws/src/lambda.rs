//! The bodies of the pipeline's Lambda functions, separate from their `main`s so they are
//! tested on sample events without Lambda.

use std::collections::HashSet;

use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use closeflow_domain::{audit_entries, events_for};
use closeflow_pipeline::relay::relay;
use closeflow_pipeline::{
    submit, watch_change, watch_order, Broker, BulkJob, Clock, EventSink, OrderQueue, QueueMessage, SubmitError,
    WatchQueue, WatchRequest, Work,
};
use closeflow_store::{AuditLog, Change, CloseStore};

use crate::images::{change_from_images, lambda_item};

/// Runs `handle` on the change of each stream record, in order. On the first record that
/// fails it stops and reports that record, so Lambda retries from it: records of a shard
/// stay in order and nothing is dropped. An undecodable image is a failure too (a bug or
/// corruption holds the shard and raises the iterator-age alarm rather than skip a close).
async fn for_each_change<F, Fut>(event: dynamodb::Event, mut handle: F) -> DynamoDbEventResponse
where
    F: FnMut(Change) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut response = DynamoDbEventResponse::default();
    for record in event.records {
        let seq = record.change.sequence_number.clone();
        let outcome = match change_from_images(
            Some(lambda_item(record.change.old_image)),
            Some(lambda_item(record.change.new_image)),
        ) {
            Ok(None) => Ok(()),
            Ok(Some(change)) => handle(change).await,
            Err(e) => Err(format!("undecodable stream image: {e}")),
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, sequence_number = ?seq, "stream record not processed");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = seq;
            response.batch_item_failures.push(failure);
            break;
        }
    }
    response
}

/// Outbox relay: each stream record -> at most one SQS FIFO message, and the first check
/// of an order the record shows recorded (the order watch).
pub async fn relay_stream_event(
    queue: &dyn OrderQueue,
    watch: &dyn WatchQueue,
    event: dynamodb::Event,
) -> DynamoDbEventResponse {
    for_each_change(event, |c| async move {
        relay(queue, c.before.as_ref(), &c.after)
            .await
            .map_err(|e| e.to_string())?;
        // A failure retries the record: the order message is deduplicated, and a second
        // watch of the same order only looks it up once more.
        watch_change(watch, c.before.as_ref(), &c.after)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// Order watch: each SQS message is one check of one order. A check that cannot reach the
/// store is a failure (SQS redelivers it); broker trouble is handled inside the check.
pub async fn watch_sqs_event(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    queue: &dyn WatchQueue,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for m in event.records {
        let id = m.message_id.clone().unwrap_or_default();
        let req: WatchRequest = match serde_json::from_str(m.body.as_deref().unwrap_or_default()) {
            Ok(r) => r,
            Err(e) => {
                // Nothing to watch; a redelivery cannot make it readable.
                tracing::error!(error = %e, message_id = %id, "malformed order watch message dropped");
                continue;
            }
        };
        match watch_order(store, broker, clock, queue, &req).await {
            Ok(outcome) => tracing::info!(?outcome, client_order_id = %req.client_order_id, "order checked"),
            Err(e) => {
                tracing::warn!(error = %e, message_id = %id, "order watch will be redelivered");
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                response.batch_item_failures.push(f);
            }
        }
    }
    response
}

/// Event publisher: each stream record -> its audit entries (kept `audit_retention`) and
/// its state-change events and alerts on the bus. The entries go first: a record whose
/// entries could not be written is retried, and writing them again changes nothing.
pub async fn publish_stream_event(
    sink: &dyn EventSink,
    audit: &dyn AuditLog,
    audit_retention: chrono::TimeDelta,
    event: dynamodb::Event,
) -> DynamoDbEventResponse {
    for_each_change(event, |c| async move {
        let entries = audit_entries(c.before.as_ref(), &c.after);
        if !entries.is_empty() {
            audit
                .record(&entries, audit_retention)
                .await
                .map_err(|e| format!("audit entries not recorded: {e}"))?;
        }
        let events = events_for(c.before.as_ref(), &c.after);
        if events.is_empty() {
            return Ok(());
        }
        sink.publish(&events).await.map_err(|e| e.to_string())
    })
    .await
}

/// Order submitter: each SQS message -> `submit` (or one step of a bulk close job, whose
/// next step goes back on `queue`). Messages with an unknown outcome are
/// reported as failures (SQS redelivers them); so are later messages of the same group,
/// which must not overtake them.
pub async fn submit_sqs_event(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    queue: &dyn OrderQueue,
    events: &dyn EventSink,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut blocked_groups = HashSet::new();
    for m in event.records {
        let id = m.message_id.clone().unwrap_or_default();
        let group = m.attributes.get("MessageGroupId").cloned().unwrap_or_default();
        let fail = |response: &mut SqsBatchResponse| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.clone();
            response.batch_item_failures.push(f);
        };
        if blocked_groups.contains(&group) {
            fail(&mut response);
            continue;
        }
        let msg = QueueMessage {
            dedup_id: m.attributes.get("MessageDeduplicationId").cloned().unwrap_or_default(),
            group_id: group.clone(),
            body: m.body.clone().unwrap_or_default(),
        };
        let work = match msg.work() {
            Ok(w) => w,
            Err(e) => {
                // Poison message: retrying cannot help; the redrive policy moves it to the DLQ.
                tracing::error!(error = %e, message_id = %id, "malformed order message");
                fail(&mut response);
                blocked_groups.insert(group);
                continue;
            }
        };
        let req = match work {
            Work::Submit(req) => req,
            Work::Job(step) => {
                let job = BulkJob {
                    store,
                    queue,
                    clock,
                    broker,
                    events,
                };
                if let Err(e) = job.run(&step).await {
                    tracing::warn!(error = %e, message_id = %id, "bulk close step will be redelivered");
                    fail(&mut response);
                    blocked_groups.insert(group);
                }
                continue;
            }
        };
        match submit(store, broker, clock, &req).await {
            Ok(outcome) => tracing::info!(?outcome, message_id = %id, "order message handled"),
            // Try-later (rate limit, open breaker) included: the queue's visibility timeout is the
            // delay, and the reconciler re-drives it should the queue give up on it.
            Err(e @ (SubmitError::Ambiguous(_) | SubmitError::TryLater { .. } | SubmitError::Store(_))) => {
                tracing::warn!(error = %e, message_id = %id, "order message will be redelivered");
                fail(&mut response);
                blocked_groups.insert(group);
            }
        }
    }
    response
}

/// Guard events from the EventBridge rule on `GuardTriggered`: each starts what it asks for
/// once per event id (EventBridge delivers at least once). An event that can never be
/// handled (invalid, or its id reused with other contents) is logged and answered, not
/// retried; a store or queue failure is an error, so the invocation is retried.
pub async fn guard_event(
    store: &dyn CloseStore,
    queue: &dyn OrderQueue,
    clock: &dyn Clock,
    raw: &[u8],
    max_retries: u32,
) -> Result<serde_json::Value, String> {
    use closeflow_pipeline::{start_guard, Started};
    let event = match closeflow_domain::GuardEvent::from_eventbridge(raw) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, code = e.code(), field = ?e.field(), "guard event refused");
            return Ok(serde_json::json!({"error": e.code(), "message": e.to_string(), "field": e.field()}));
        }
    };
    let refused = |code: &str, message: String| {
        tracing::error!(event_id = event.event_id(), code, %message, "guard event refused");
        Ok(serde_json::json!({"error": code, "message": message}))
    };
    match start_guard(store, queue, clock, &event, max_retries).await {
        Ok(Ok(Started::Created(b))) => Ok(serde_json::json!({"bulk_close_id": b.id.to_string(), "started": true})),
        Ok(Ok(Started::Existing(b))) => Ok(serde_json::json!({"bulk_close_id": b.id.to_string(), "started": false})),
        Ok(Ok(Started::KeyReused)) => refused(
            "idempotency_key_reused",
            "this event id was handled before with other contents".into(),
        ),
        Ok(Err(why)) => refused("invalid_guard_event", why),
        Err(e) => Err(e.to_string()),
    }
}

/// Everything the guards function is invoked with: a `Scheduled Event` runs the drawdown
/// guard over its accounts; anything else is taken as a guard event.
#[allow(clippy::too_many_arguments)]
pub async fn guards_invocation(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    queue: &dyn OrderQueue,
    clock: &dyn Clock,
    events: &dyn EventSink,
    drawdown: &closeflow_pipeline::DrawdownConfig,
    raw: &[u8],
    max_retries: u32,
) -> Result<serde_json::Value, String> {
    let detail_type = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw)
        .ok()
        .and_then(|m| m.get("detail-type").and_then(|v| v.as_str()).map(str::to_string));
    if detail_type.as_deref() == Some("Scheduled Event") {
        let r = closeflow_pipeline::drawdown_once(store, broker, queue, clock, events, drawdown)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(r.to_json());
    }
    guard_event(store, queue, clock, raw, max_retries).await
}
