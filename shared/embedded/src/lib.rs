//! The embedded single-process stack: the same router, store semantics and pipeline code
//! as in AWS, wired in-process. The store's change log (SQLite's outbox table) stands in
//! for the DynamoDB stream, a durable FIFO queue in the same file for SQS, and the simulated broker reports fills
//! through the real webhook route with real signatures.

pub mod aws_local;
pub mod cli;
pub mod invoke;
pub mod local;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use closeflow_api::{router_for, Clock, Routes};
use closeflow_pipeline::{
    Driver, LogFeed, LogSink, MemoryQueue, MemoryWatch, OrderQueue, QueueConsumer, SimScenarios, SimulatedBroker,
    WebhookSink,
};
use closeflow_store::{ChangeLog, CloseStore, MemoryStore, SqliteStore, StoreError};
use tower::ServiceExt;

/// Delivers the simulated broker's webhook calls to the router, exactly as HTTP would.
pub struct RouterSink(pub Router);

#[async_trait]
impl WebhookSink for RouterSink {
    async fn deliver(&self, body: Vec<u8>, signature: String) {
        let req = Request::post("/webhooks/broker")
            .header("content-type", "application/json")
            .header("x-closeflow-signature", signature)
            .body(Body::from(body))
            .expect("static request parts");
        match self.0.clone().oneshot(req).await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => tracing::warn!(status = %resp.status(), "webhook delivery refused"),
            Err(never) => match never {},
        }
    }
}

/// Where the embedded stack keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing survives the process (`CLOSEFLOW_DB=:memory:`).
    Memory,
    /// A SQLite database file: positions, close requests, idempotency keys, the outbox and
    /// the order queue survive restarts and crashes.
    Sqlite(String),
}

/// The default database file, under the project root.
pub const DEFAULT_DB: &str = ".closeflow/closeflow.db";

impl Storage {
    /// `CLOSEFLOW_DB`: a file path (default [`DEFAULT_DB`]) or `:memory:`.
    pub fn from_env() -> Storage {
        match std::env::var("CLOSEFLOW_DB") {
            Ok(v) if v == ":memory:" => Storage::Memory,
            Ok(v) if !v.is_empty() => Storage::Sqlite(v),
            _ => Storage::Sqlite(DEFAULT_DB.into()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Storage::Memory => "in-memory store: nothing survives a restart".into(),
            Storage::Sqlite(path) => format!("SQLite store at {path}"),
        }
    }
}

pub struct StackConfig {
    pub storage: Storage,
    pub scenarios: SimScenarios,
    pub webhook_secret: Vec<u8>,
    pub clock: Arc<dyn Clock>,
    pub auth: closeflow_api::auth::Auth,
    pub api: closeflow_api::ApiConfig,
    /// Alpaca instead of the simulated broker (whose webhooks then never come).
    pub alpaca: Option<Arc<closeflow_alpaca::accounts::AccountBrokers>>,
    /// How long audit entries are kept (`AUDIT_RETENTION`).
    pub audit_retention: chrono::TimeDelta,
}

pub struct Stack {
    pub router: Router,
    pub store: Arc<dyn CloseStore>,
    pub broker: Arc<SimulatedBroker>,
    pub driver: Driver,
}

type Wiring = (
    Arc<dyn CloseStore>,
    Arc<dyn ChangeLog>,
    Arc<dyn OrderQueue>,
    Arc<dyn QueueConsumer>,
);

/// The store with its change log and order queue: in memory, or all three in one SQLite
/// file so a restart resumes exactly where the process stopped.
fn wiring(storage: &Storage) -> Result<Wiring, StoreError> {
    Ok(match storage {
        Storage::Memory => {
            let store = Arc::new(MemoryStore::new());
            let queue = Arc::new(MemoryQueue::new());
            (store.clone(), store, queue.clone(), queue)
        }
        Storage::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(path)?);
            (store.clone(), store.clone(), store.clone(), store)
        }
    })
}

impl Stack {
    pub fn new(cfg: StackConfig) -> Result<Stack, String> {
        let (store, log, producer, consumer) = wiring(&cfg.storage).map_err(|e| e.to_string())?;
        let feed = Arc::new(LogFeed::new(log));
        let sim = Arc::new(SimulatedBroker::new(
            cfg.scenarios,
            &cfg.webhook_secret,
            cfg.clock.clone(),
        ));
        let (broker, driven_sim): (Arc<dyn closeflow_pipeline::Broker>, _) = match cfg.alpaca {
            Some(brokers) => (brokers, None),
            None => (sim.clone(), Some(sim.clone())),
        };
        let mut state = closeflow_root::api_state(store.clone(), broker.clone(), producer.clone(), &cfg.api);
        state.clock = cfg.clock.clone();
        state.webhook_secret = Arc::new(cfg.webhook_secret);
        state.auth = cfg.auth;
        let router = router_for(state, Routes::ALL);
        sim.connect(Arc::new(RouterSink(router.clone())));
        let driver = Driver {
            store: store.clone(),
            broker,
            sim: driven_sim,
            watch: Arc::new(MemoryWatch::new(cfg.clock.clone())),
            clock: cfg.clock,
            feed,
            producer,
            consumer,
            events: Arc::new(LogSink),
            audit_retention: cfg.audit_retention,
        };
        Ok(Stack {
            router,
            store,
            broker: sim,
            driver,
        })
    }
}
