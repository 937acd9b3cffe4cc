//! The embedded single-process stack: the same router, store semantics and pipeline code
//! as in AWS, wired in-process. The memory store's change feed stands in for the DynamoDB
//! stream, an in-process FIFO queue for SQS, and the simulated broker reports fills
//! through the real webhook route with real signatures.

pub mod invoke;

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use closeflow_api::{router_for, AppState, Clock, Routes};
use closeflow_pipeline::{Driver, LogSink, MemoryFeed, MemoryQueue, SimScenarios, SimulatedBroker, WebhookSink};
use closeflow_store::MemoryStore;
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

pub struct StackConfig {
    pub scenarios: SimScenarios,
    pub webhook_secret: Vec<u8>,
    pub clock: Arc<dyn Clock>,
    pub auth: closeflow_api::auth::Auth,
}

pub struct Stack {
    pub router: Router,
    pub store: Arc<MemoryStore>,
    pub broker: Arc<SimulatedBroker>,
    pub queue: Arc<MemoryQueue>,
    pub driver: Driver,
}

impl Stack {
    pub fn new(cfg: StackConfig) -> Stack {
        let store = Arc::new(MemoryStore::new());
        let feed = Arc::new(MemoryFeed::new(store.changes()));
        let sim = Arc::new(SimulatedBroker::new(
            cfg.scenarios,
            &cfg.webhook_secret,
            cfg.clock.clone(),
        ));
        let mut state = AppState::new(store.clone());
        state.clock = cfg.clock.clone();
        state.webhook_secret = Arc::new(cfg.webhook_secret);
        state.auth = cfg.auth;
        let router = router_for(state, Routes::ALL);
        sim.connect(Arc::new(RouterSink(router.clone())));
        let queue = Arc::new(MemoryQueue::new());
        let driver = Driver {
            store: store.clone(),
            broker: sim.clone(),
            sim: Some(sim.clone()),
            clock: cfg.clock,
            feed,
            producer: queue.clone(),
            consumer: queue.clone(),
            events: Arc::new(LogSink),
        };
        Stack {
            router,
            store,
            broker: sim,
            queue,
            driver,
        }
    }
}
