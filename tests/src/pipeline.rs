//! Harness for end-to-end pipeline scenarios: router, store, change feed, order queue,
//! simulated broker and the local driver, on either backend. On DynamoDB the feed is the
//! table's real stream and the queue a real SQS FIFO queue (both on moto).

use std::sync::Arc;

use axum::http::Method;
use axum::Router;
use closeflow_api::{router_for, ManualClock, Routes};
use closeflow_aws::{DynamoStreamFeed, EventBridgeSink, SqsQueue};
use closeflow_domain::{PositionAggregate, PositionId};
use closeflow_embedded::RouterSink;
use closeflow_pipeline::webhook::sign;
use closeflow_pipeline::{
    cleanup_once, reconcile_once, CleanupReport, EventSink, ReconcileConfig, ReconcileReport, RecordingSink,
};
use closeflow_pipeline::{
    Broker, ChangeFeed, Driver, LogFeed, MemoryQueue, OrderQueue, QueueConsumer, SimScenarios, SimulatedBroker,
};
use closeflow_store::{AggregateKey, CloseStore, MemoryStore, RoundTripCounter, SqliteStore};
use serde_json::Value;

use crate::{call, start_time, unique_table_name, Backend, Reply};

pub const SECRET: &[u8] = b"test-webhook-secret";

pub struct PipelineApp {
    pub backend: Backend,
    pub router: Router,
    pub store: Arc<dyn CloseStore>,
    pub sim: Arc<SimulatedBroker>,
    pub clock: Arc<ManualClock>,
    pub driver: Driver,
    pub round_trips: Option<RoundTripCounter>,
    events: Events,
}

/// Where the harness reads published events back: a recorder (embedded), or the SQS queue
/// an EventBridge rule on the test bus delivers to (moto).
enum Events {
    Recorded(Arc<RecordingSink>),
    Bus {
        sqs: aws_sdk_sqs::Client,
        url: String,
        seen: std::sync::Mutex<Vec<(String, Value)>>,
    },
}

/// Store, change feed, queue producer and consumer, round-trip counter.
type Wiring = (
    Arc<dyn CloseStore>,
    Arc<dyn ChangeFeed>,
    Arc<dyn OrderQueue>,
    Arc<dyn QueueConsumer>,
    Option<RoundTripCounter>,
);

pub type BrokerLayer = Box<dyn FnOnce(Arc<SimulatedBroker>) -> Arc<dyn Broker> + Send>;

impl PipelineApp {
    pub async fn new(backend: Backend, scenarios: &str) -> PipelineApp {
        Self::with_broker(backend, scenarios, None).await
    }

    pub async fn with_broker(backend: Backend, scenarios: &str, layer: Option<BrokerLayer>) -> PipelineApp {
        crate::init_test_logging();
        let clock = Arc::new(ManualClock::new(start_time()));
        let sink;
        let (store, feed, producer, consumer, round_trips): Wiring = match backend {
            Backend::Embedded => {
                let store = Arc::new(MemoryStore::new());
                let feed = Arc::new(LogFeed::new(store.clone()));
                let queue = Arc::new(MemoryQueue::new());
                let recorder = Arc::new(RecordingSink::default());
                sink = Some((recorder.clone() as Arc<dyn EventSink>, Events::Recorded(recorder)));
                (store, feed, queue.clone(), queue, None)
            }
            Backend::Sqlite => {
                let store = Arc::new(SqliteStore::open(&crate::temp_db_path()).expect("sqlite"));
                let feed = Arc::new(LogFeed::new(store.clone()));
                let recorder = Arc::new(RecordingSink::default());
                sink = Some((recorder.clone() as Arc<dyn EventSink>, Events::Recorded(recorder)));
                (store.clone(), feed, store.clone(), store, None)
            }
            Backend::DynamoDb => {
                let counter = RoundTripCounter::default();
                let client = crate::dynamo_client(counter.clone()).await;
                let name = unique_table_name();
                let store = crate::dynamo_test_store(client.clone(), &name).await;
                let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let streams = aws_sdk_dynamodbstreams::Client::new(&shared);
                let feed = DynamoStreamFeed::for_table(&client, streams, &name)
                    .await
                    .expect("stream feed");
                let sqs = aws_sdk_sqs::Client::new(&shared);
                let queue = Arc::new(
                    SqsQueue::create_fifo(sqs.clone(), &format!("{name}.fifo"), crate::template::order_queue().1)
                        .await
                        .expect("create queue"),
                );
                // Events: a bus per test, and a rule delivering closeflow's events to a queue.
                let eb = aws_sdk_eventbridge::Client::new(&shared);
                eb.create_event_bus().name(&name).send().await.expect("bus");
                let target = sqs
                    .create_queue()
                    .queue_name(format!("{name}-events"))
                    .send()
                    .await
                    .expect("queue");
                let url = target.queue_url().unwrap().to_string();
                let arn = sqs
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .expect("arn")
                    .attributes()
                    .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
                    .unwrap();
                eb.put_rule()
                    .name("all-closeflow")
                    .event_bus_name(&name)
                    .event_pattern(r#"{"source":["closeflow"]}"#)
                    .send()
                    .await
                    .expect("rule");
                eb.put_targets()
                    .rule("all-closeflow")
                    .event_bus_name(&name)
                    .targets(
                        aws_sdk_eventbridge::types::Target::builder()
                            .id("q")
                            .arn(arn)
                            .build()
                            .unwrap(),
                    )
                    .send()
                    .await
                    .expect("target");
                sink = Some((
                    Arc::new(EventBridgeSink::new(eb, &name)) as Arc<dyn EventSink>,
                    Events::Bus {
                        sqs,
                        url,
                        seen: Default::default(),
                    },
                ));
                (Arc::new(store), Arc::new(feed), queue.clone(), queue, Some(counter))
            }
        };
        let (event_sink, events) = sink.expect("set per backend");
        // `SCENARIOS` or `SCENARIOS|PRICES` (as SIM_BROKER_SCENARIOS and SIM_BROKER_PRICES).
        let (scenarios, prices) = scenarios.split_once('|').unwrap_or((scenarios, ""));
        let sim = Arc::new(SimulatedBroker::new(
            SimScenarios::parse(scenarios)
                .and_then(|s| s.with_prices(prices))
                .expect("scenarios"),
            SECRET,
            clock.clone(),
        ));
        let broker: Arc<dyn Broker> = match layer {
            Some(l) => l(sim.clone()),
            None => sim.clone(),
        };
        let mut state = closeflow_root::api_state(store.clone(), broker.clone(), producer.clone(), &Default::default());
        state.clock = clock.clone();
        state.webhook_secret = Arc::new(SECRET.to_vec());
        state.auth = crate::test_auth();
        let router = router_for(state, Routes::ALL);
        sim.connect(Arc::new(RouterSink(router.clone())));
        let driver = Driver {
            store: store.clone(),
            broker,
            sim: Some(sim.clone()),
            clock: clock.clone(),
            feed,
            producer,
            consumer,
            events: event_sink,
            audit_retention: closeflow_domain::Policy::default().audit_retention,
            watch: Arc::new(closeflow_pipeline::MemoryWatch::new(clock.clone())),
        };
        PipelineApp {
            backend,
            router,
            store,
            sim,
            clock,
            driver,
            round_trips,
            events,
        }
    }

    /// Writes an aggregate directly (states the API cannot produce on purpose).
    pub async fn seed(&self, agg: PositionAggregate) {
        crate::seed(self.store.as_ref(), agg).await
    }

    /// Detail types of every event published so far, in publication order.
    pub async fn published(&self) -> Vec<(String, Value)> {
        match &self.events {
            Events::Recorded(r) => r
                .events()
                .into_iter()
                .map(|e| (e.detail_type.to_string(), e.detail()))
                .collect(),
            Events::Bus { sqs, url, seen } => {
                loop {
                    let out = sqs
                        .receive_message()
                        .queue_url(url)
                        .max_number_of_messages(10)
                        .send()
                        .await
                        .expect("receive events");
                    if out.messages().is_empty() {
                        break;
                    }
                    for m in out.messages() {
                        let v: Value = serde_json::from_str(m.body().unwrap_or("{}")).expect("event json");
                        let dt = v["detail-type"].as_str().unwrap_or_default().to_string();
                        seen.lock().unwrap().push((dt, v["detail"].clone()));
                        sqs.delete_message()
                            .queue_url(url)
                            .receipt_handle(m.receipt_handle().unwrap())
                            .send()
                            .await
                            .expect("delete");
                    }
                }
                seen.lock().unwrap().clone()
            }
        }
    }

    pub async fn reconcile(&self, cfg: &ReconcileConfig) -> ReconcileReport {
        reconcile_once(
            self.store.as_ref(),
            self.driver.broker.as_ref(),
            self.clock.as_ref(),
            cfg,
        )
        .await
        .expect("reconciler run")
    }

    pub async fn cleanup(&self, retention: chrono::TimeDelta) -> CleanupReport {
        cleanup_once(self.store.as_ref(), self.clock.as_ref(), retention, 100)
            .await
            .expect("cleanup run")
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        call(&self.router, method, path, headers, body).await
    }

    /// Registers a long equity position and closes it; returns the close request id.
    pub async fn open_and_close(&self, id: &str, symbol: &str, qty: &str) -> String {
        self.open_and_close_with(id, symbol, qty, None).await
    }

    /// Registers an equity position of acct-1 and closes it with `body` (the close's
    /// options); the close request's id.
    pub async fn open_and_close_with(&self, id: &str, symbol: &str, qty: &str, body: Option<&str>) -> String {
        let r = self
            .call(
                Method::PUT,
                &format!("/positions/{id}"),
                &[],
                Some(&format!(
                    r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":{qty}}}"#
                )),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let r = self
            .call(
                Method::POST,
                &format!("/positions/{id}/close"),
                &[("idempotency-key", "k-1")],
                body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.str("close_request_id")
    }

    pub async fn position(&self, id: &str) -> Reply {
        self.call(Method::GET, &format!("/positions/{id}"), &[], None).await
    }

    pub async fn close_request(&self, id: &str) -> Reply {
        self.call(Method::GET, &format!("/close-requests/{id}"), &[], None)
            .await
    }

    /// Posts a webhook body signed now with the test secret.
    pub async fn webhook(&self, body: &str) -> Reply {
        let sig = sign(SECRET, self.clock.now_ts().timestamp(), body.as_bytes());
        self.call(
            Method::POST,
            "/webhooks/broker",
            &[("x-closeflow-signature", &sig)],
            Some(body),
        )
        .await
    }

    pub async fn aggregate(&self, id: &str) -> PositionAggregate {
        let key = AggregateKey::Position(PositionId::parse(id).unwrap());
        self.store
            .aggregate(&key)
            .await
            .expect("store")
            .expect("position exists")
    }
}

trait Now {
    fn now_ts(&self) -> closeflow_domain::Timestamp;
}

impl Now for ManualClock {
    fn now_ts(&self) -> closeflow_domain::Timestamp {
        closeflow_api::Clock::now(self)
    }
}
