//! Harness for end-to-end pipeline scenarios: router, store, change feed, order queue,
//! simulated broker and the local driver, on either backend. On DynamoDB the feed is the
//! table's real stream and the queue a real SQS FIFO queue (both on moto).

use std::sync::Arc;

use axum::http::Method;
use axum::Router;
use closeflow_api::{router, AppState, ManualClock};
use closeflow_aws::{DynamoStreamFeed, SqsQueue};
use closeflow_domain::{PositionAggregate, PositionId};
use closeflow_embedded::RouterSink;
use closeflow_pipeline::webhook::sign;
use closeflow_pipeline::{
    Broker, ChangeFeed, Driver, MemoryFeed, MemoryQueue, OrderQueue, QueueConsumer, SimScenarios, SimulatedBroker,
};
use closeflow_store::dynamo::table;
use closeflow_store::{AggregateKey, CloseStore, DynamoStore, MemoryStore, RoundTripCounter};

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
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let clock = Arc::new(ManualClock::new(start_time()));
        let (store, feed, producer, consumer, round_trips): Wiring = match backend {
            Backend::Embedded => {
                let store = Arc::new(MemoryStore::new());
                let feed = Arc::new(MemoryFeed::new(store.changes()));
                let queue = Arc::new(MemoryQueue::new());
                (store, feed, queue.clone(), queue, None)
            }
            Backend::DynamoDb => {
                let counter = RoundTripCounter::default();
                let client = crate::dynamo_client(counter.clone()).await;
                let name = unique_table_name();
                table::create_table(&client, &name).await.expect("create table");
                let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let streams = aws_sdk_dynamodbstreams::Client::new(&shared);
                let feed = DynamoStreamFeed::for_table(&client, streams, &name)
                    .await
                    .expect("stream feed");
                let sqs = aws_sdk_sqs::Client::new(&shared);
                let queue = Arc::new(
                    SqsQueue::create_fifo(sqs, &format!("{name}.fifo"), 30)
                        .await
                        .expect("create queue"),
                );
                (
                    Arc::new(DynamoStore::new(client, name)),
                    Arc::new(feed),
                    queue.clone(),
                    queue,
                    Some(counter),
                )
            }
        };
        let sim = Arc::new(SimulatedBroker::new(
            SimScenarios::parse(scenarios).expect("scenarios"),
            SECRET,
            clock.clone(),
        ));
        let mut state = AppState::new(store.clone());
        state.clock = clock.clone();
        state.webhook_secret = Arc::new(SECRET.to_vec());
        let router = router(state);
        sim.connect(Arc::new(RouterSink(router.clone())));
        let broker: Arc<dyn Broker> = match layer {
            Some(l) => l(sim.clone()),
            None => sim.clone(),
        };
        let driver = Driver {
            store: store.clone(),
            broker,
            sim: Some(sim.clone()),
            clock: clock.clone(),
            feed,
            producer,
            consumer,
        };
        PipelineApp {
            backend,
            router,
            store,
            sim,
            clock,
            driver,
            round_trips,
        }
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        call(&self.router, method, path, headers, body).await
    }

    /// Registers a long equity position and closes it; returns the close request id.
    pub async fn open_and_close(&self, id: &str, symbol: &str, qty: &str) -> String {
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
                None,
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
            .modify(&key, &|_| None)
            .await
            .expect("store")
            .expect("position exists")
            .before
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
