//! `make invoke FN=<function> EVENT=<file>`: runs one Lambda function's handler on a sample
//! event, without Lambda or Docker, and returns what the function would return.
//!
//! Against DynamoDB (moto, LocalStack or AWS) when `TABLE_NAME` is set (with
//! `AWS_ENDPOINT_URL` for an emulator); otherwise against a fresh embedded store. Queue,
//! bus and broker follow the same rule: `QUEUE_URL`, `EVENT_BUS_NAME`, `ALPACA_API_KEY_ID`
//! select the real ones; otherwise an in-process queue, a recorder and the simulated broker.

use std::sync::Arc;

use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::body::to_bytes;
use closeflow_api::auth::Auth;
use closeflow_api::{router, webhook_router, SystemClock};
use closeflow_aws::lambda::{
    guards_invocation, publish_stream_event, relay_stream_event, submit_sqs_event, watch_sqs_event,
};
use closeflow_aws::{EventBridgeSink, SqsQueue, SqsWatchQueue};
use closeflow_pipeline::webhook::sign;
use closeflow_pipeline::{
    cleanup_once, reconcile_once, Broker, Clock, EventSink, LogSink, MemoryQueue, MemoryWatch, OrderQueue,
    RecordingSink, SimulatedBroker, WatchQueue,
};
use closeflow_root::Policy;
use closeflow_store::{CloseStore, MemoryStore};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const FUNCTIONS: &[&str] = &[
    "http-api",
    "broker-webhook",
    "outbox-relay",
    "order-submitter",
    "order-watch",
    "event-publisher",
    "reconciler",
    "cleanup",
    "position-sync",
    "guard-events",
];

/// A webhook sample whose signature header is this placeholder is signed at invocation
/// time (a committed signature would be older than the 300 s tolerance).
pub const SIGN_AT_INVOKE: &str = "sign-at-invoke";

use closeflow_root::env;

/// DynamoDB through the composition root when `TABLE_NAME` is set, as the function would
/// build it; otherwise a fresh embedded store.
async fn store() -> Result<Arc<dyn CloseStore>, String> {
    Ok(match env("TABLE_NAME") {
        Some(_) => Arc::new(closeflow_root::dynamo_store(&Policy::from_env()?).await?),
        None => Arc::new(MemoryStore::new()),
    })
}

/// The order watch's queue: `WATCH_QUEUE_URL`, or an in-process schedule whose size the
/// caller reports.
async fn watch_queue() -> (Arc<dyn WatchQueue>, Option<Arc<MemoryWatch>>) {
    match env("WATCH_QUEUE_URL") {
        Some(url) => (
            Arc::new(SqsWatchQueue::new(
                aws_sdk_sqs::Client::new(&shared_config().await),
                url,
            )),
            None,
        ),
        None => {
            let local = Arc::new(MemoryWatch::new(Arc::new(SystemClock)));
            (local.clone(), Some(local))
        }
    }
}

async fn shared_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

fn broker() -> Result<Arc<dyn Broker>, String> {
    if env("ALPACA_API_KEY_ID").is_some() || env("ALPACA_ACCOUNTS").is_some() || env("ALPACA_ACCOUNTS_JSON").is_some() {
        return Ok(Arc::new(closeflow_alpaca::accounts::AccountBrokers::from_env()?));
    }
    let scenarios = closeflow_pipeline::config::sim_scenarios_from_env()?;
    Ok(Arc::new(SimulatedBroker::new(
        scenarios,
        b"invoke",
        Arc::new(SystemClock),
    )))
}

async fn http(function: &str, event: &str, store: Arc<dyn CloseStore>) -> Result<Value, String> {
    let mut req = lambda_http::request::from_str(event).map_err(|e| format!("not an API Gateway event: {e}"))?;
    // A bulk close's first step: to the real queue when one is named, else to an
    // in-process one (`make invoke` runs one function, not the pipeline behind it).
    let queue: Arc<dyn OrderQueue> = match env("QUEUE_URL") {
        Some(url) => Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&shared_config().await), url)),
        None => Arc::new(MemoryQueue::new()),
    };
    let mut state = closeflow_root::api_state(store, broker()?, queue, &Policy::from_env()?.api);
    state.auth = Auth::Jwt {
        claim: env("ACCOUNTS_CLAIM").unwrap_or_else(|| "accounts".into()),
    };
    let broker_webhook = function == "broker-webhook";
    if broker_webhook {
        let secret = env("WEBHOOK_SECRET").unwrap_or_else(|| "dev-webhook-secret".into());
        if req.headers().get("x-closeflow-signature").and_then(|v| v.to_str().ok()) == Some(SIGN_AT_INVOKE) {
            let body = match req.body() {
                lambda_http::Body::Text(t) => t.as_bytes().to_vec(),
                lambda_http::Body::Binary(b) => b.clone(),
                _ => Vec::new(),
            };
            let sig = sign(secret.as_bytes(), SystemClock.now().timestamp(), &body);
            req.headers_mut()
                .insert("x-closeflow-signature", sig.parse().map_err(|_| "signature header")?);
        }
        state.webhook_secret = Arc::new(secret.into_bytes());
    }
    let req = closeflow_aws::http::with_claims(req);
    let app = if broker_webhook {
        webhook_router(state)
    } else {
        router(state)
    };
    let resp = app.oneshot(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = to_bytes(resp.into_body(), 1 << 20).await.map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(json!({"statusCode": status, "body": body}))
}

/// Runs `function`'s handler on `event` (the JSON text of a sample event).
pub async fn invoke(function: &str, event: &str) -> Result<Value, String> {
    match function {
        "http-api" | "broker-webhook" => http(function, event, store().await?).await,
        "outbox-relay" => {
            let ev: dynamodb::Event = serde_json::from_str(event).map_err(|e| e.to_string())?;
            let (watch, local_watch) = watch_queue().await;
            match env("QUEUE_URL") {
                Some(url) => {
                    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&shared_config().await), url);
                    Ok(json!({"response": relay_stream_event(&queue, watch.as_ref(), ev).await}))
                }
                None => {
                    let queue = MemoryQueue::new();
                    let resp = relay_stream_event(&queue as &dyn OrderQueue, watch.as_ref(), ev).await;
                    let sent: Vec<_> = queue.take_all();
                    let watches = local_watch.map(|w| w.len()).unwrap_or_default();
                    Ok(json!({"response": resp, "messages": sent, "watches_scheduled": watches}))
                }
            }
        }
        "order-watch" => {
            let ev: SqsEvent = serde_json::from_str(event).map_err(|e| e.to_string())?;
            let (store, broker) = (store().await?, broker()?);
            let (watch, local_watch) = watch_queue().await;
            let resp = watch_sqs_event(store.as_ref(), broker.as_ref(), &SystemClock, watch.as_ref(), ev).await;
            let watches = local_watch.map(|w| w.len()).unwrap_or_default();
            Ok(json!({"response": resp, "watches_scheduled": watches}))
        }
        "event-publisher" => {
            let ev: dynamodb::Event = serde_json::from_str(event).map_err(|e| e.to_string())?;
            let store = store().await?;
            let retention = Policy::from_env()?.jobs.policy.audit_retention;
            match env("EVENT_BUS_NAME") {
                Some(bus) => {
                    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&shared_config().await), bus);
                    Ok(json!({"response": publish_stream_event(&sink, store.as_ref(), retention, ev).await}))
                }
                None => {
                    let sink = RecordingSink::default();
                    let resp = publish_stream_event(&sink as &dyn EventSink, store.as_ref(), retention, ev).await;
                    let events: Vec<_> = sink
                        .events()
                        .iter()
                        .map(|e| json!({"detail-type": e.detail_type, "detail": e.detail()}))
                        .collect();
                    Ok(json!({"response": resp, "events": events}))
                }
            }
        }
        "order-submitter" => {
            let ev: SqsEvent = serde_json::from_str(event).map_err(|e| e.to_string())?;
            let (store, broker) = (store().await?, broker()?);
            // A bulk close step's next step: to the real queue when one is named, else shown.
            match env("QUEUE_URL") {
                Some(url) => {
                    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&shared_config().await), url);
                    let resp =
                        submit_sqs_event(store.as_ref(), broker.as_ref(), &SystemClock, &queue, &LogSink, ev).await;
                    Ok(json!({ "response": resp }))
                }
                None => {
                    let queue = MemoryQueue::new();
                    let resp =
                        submit_sqs_event(store.as_ref(), broker.as_ref(), &SystemClock, &queue, &LogSink, ev).await;
                    Ok(json!({"response": resp, "messages": queue.take_all()}))
                }
            }
        }
        "reconciler" => {
            let cfg = Policy::from_env()?.jobs;
            let (store, broker) = (store().await?, broker()?);
            let r = reconcile_once(store.as_ref(), broker.as_ref(), &SystemClock, &cfg)
                .await
                .map_err(|e| e.to_string())?;
            Ok(
                json!({"items_read": r.items_read, "changed": r.changed, "broker_queries": r.broker_queries,
                       "deferred": r.deferred, "broker_errors": r.broker_errors}),
            )
        }
        "cleanup" => {
            let retention = Policy::from_env()?.jobs.policy.retention;
            let r = cleanup_once(store().await?.as_ref(), &SystemClock, retention, 500)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"items_read": r.items_read, "deleted": r.deleted, "trimmed": r.trimmed}))
        }
        "position-sync" => {
            let cfg = closeflow_pipeline::config::sync_config_from_env()?;
            let (store, broker) = (store().await?, broker()?);
            let sink = RecordingSink::default();
            let r = closeflow_pipeline::sync_once(store.as_ref(), broker.as_ref(), &SystemClock, &sink, &cfg)
                .await
                .map_err(|e| e.to_string())?;
            let alerts: Vec<_> = sink.events().iter().map(|e| e.detail()).collect();
            Ok(json!({"report": r.to_json(), "alerts": alerts}))
        }
        "guard-events" => {
            let (store, broker) = (store().await?, broker()?);
            let max_retries = Policy::from_env()?.api.max_retries;
            let drawdown = closeflow_pipeline::config::drawdown_config_from_env(max_retries)?;
            let sink = RecordingSink::default();
            let raw = event.as_bytes();
            // What the event starts runs on the order queue: the real one when named, else shown.
            let local = MemoryQueue::new();
            let remote = match env("QUEUE_URL") {
                Some(url) => Some(SqsQueue::new(aws_sdk_sqs::Client::new(&shared_config().await), url)),
                None => None,
            };
            let queue: &dyn OrderQueue = match &remote {
                Some(q) => q,
                None => &local,
            };
            let r = guards_invocation(
                store.as_ref(),
                broker.as_ref(),
                queue,
                &SystemClock,
                &sink,
                &drawdown,
                raw,
                max_retries,
            )
            .await?;
            let messages = local.take_all();
            let alerts: Vec<_> = sink.events().iter().map(|e| e.detail()).collect();
            Ok(json!({"response": r, "messages": messages, "alerts": alerts}))
        }
        other => Err(format!("unknown function `{other}`; one of: {}", FUNCTIONS.join(", "))),
    }
}
