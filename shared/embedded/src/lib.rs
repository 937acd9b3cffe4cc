//! The embedded single-process stack: the same router, store semantics and pipeline code
//! as in AWS, wired in-process. The memory store's change feed stands in for the DynamoDB
//! stream, an in-process FIFO queue for SQS, and the simulated broker reports fills
//! through the real webhook route with real signatures.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use closeflow_api::{router, AppState, Clock};
use closeflow_pipeline::queue::{MemoryQueue, QueueMessage};
use closeflow_pipeline::relay::relay;
use closeflow_pipeline::{submit, SimScenarios, SimulatedBroker, SubmitError, WebhookSink};
use closeflow_store::{Change, CloseStore, MemoryStore};
use tokio::sync::{mpsc, Mutex};
use tower::ServiceExt;

/// Delivers the simulated broker's webhook calls to the router, exactly as HTTP would.
struct RouterSink(Router);

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
}

/// How long an ambiguous submission waits before its message is delivered again (the
/// SQS visibility timeout of the embedded queue).
const REDELIVERY_DELAY: Duration = Duration::from_millis(500);

pub struct Stack {
    pub router: Router,
    pub store: Arc<MemoryStore>,
    pub broker: Arc<SimulatedBroker>,
    clock: Arc<dyn Clock>,
    queue: MemoryQueue,
    changes: Mutex<mpsc::UnboundedReceiver<Change>>,
    messages: Mutex<mpsc::UnboundedReceiver<QueueMessage>>,
    /// Messages whose submission had an unknown outcome, due for redelivery.
    parked: Mutex<Vec<QueueMessage>>,
}

impl Stack {
    pub fn new(cfg: StackConfig) -> Arc<Stack> {
        let store = Arc::new(MemoryStore::new());
        let changes = store.changes();
        let broker = Arc::new(SimulatedBroker::new(
            cfg.scenarios,
            &cfg.webhook_secret,
            cfg.clock.clone(),
        ));
        let mut state = AppState::new(store.clone());
        state.clock = cfg.clock.clone();
        state.webhook_secret = Arc::new(cfg.webhook_secret);
        let router = router(state);
        broker.connect(Arc::new(RouterSink(router.clone())));
        let (queue, messages) = MemoryQueue::new();
        Arc::new(Stack {
            router,
            store,
            broker,
            clock: cfg.clock,
            queue,
            changes: Mutex::new(changes),
            messages: Mutex::new(messages),
            parked: Mutex::new(Vec::new()),
        })
    }

    async fn relay_change(&self, change: Change) {
        if let Err(e) = relay(&self.queue, change.before.as_ref(), &change.after).await {
            // The in-process queue only fails when its consumer is gone (shutdown).
            tracing::error!(error = %e, "outbox relay failed");
        }
    }

    async fn submit_message(&self, msg: QueueMessage) {
        let req = match msg.request() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "dropping malformed queue message");
                return;
            }
        };
        match submit(
            self.store.as_ref() as &dyn CloseStore,
            self.broker.as_ref(),
            self.clock.as_ref(),
            &req,
        )
        .await
        {
            Ok(outcome) => {
                tracing::debug!(?outcome, dedup_id = %msg.dedup_id, "submission handled")
            }
            Err(SubmitError::Ambiguous(e)) => {
                tracing::warn!(error = %e, dedup_id = %msg.dedup_id, "submission outcome unknown; will redeliver");
                self.parked.lock().await.push(msg);
            }
            Err(SubmitError::Store(e)) => {
                tracing::warn!(error = %e, dedup_id = %msg.dedup_id, "store busy; will redeliver");
                self.parked.lock().await.push(msg);
            }
        }
    }

    /// Runs the pipeline until nothing is left to do: relays every change, submits every
    /// queued message, waits for the broker's webhook calls, and repeats. Parked
    /// (ambiguous) messages are redelivered once per call. Deterministic: tests use this.
    pub async fn pump(&self) {
        for msg in std::mem::take(&mut *self.parked.lock().await) {
            let _ = self.queue.redeliver(msg);
        }
        loop {
            let mut worked = false;
            while let Ok(change) = self.changes.lock().await.try_recv() {
                self.relay_change(change).await;
                worked = true;
            }
            while let Ok(msg) = self.messages.lock().await.try_recv() {
                self.submit_message(msg).await;
                worked = true;
            }
            self.broker.idle().await;
            let more =
                !self.changes.lock().await.is_empty() || !self.messages.lock().await.is_empty();
            if !worked && !more {
                return;
            }
        }
    }

    /// Runs the pipeline live (`make run`): reacts to every change and message as it comes.
    pub async fn run(self: Arc<Self>) {
        let redeliver = {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REDELIVERY_DELAY).await;
                    for msg in std::mem::take(&mut *me.parked.lock().await) {
                        let _ = me.queue.redeliver(msg);
                    }
                }
            })
        };
        let relay_task = {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let next = me.changes.lock().await.recv().await;
                    match next {
                        Some(change) => me.relay_change(change).await,
                        None => return,
                    }
                }
            })
        };
        loop {
            let next = self.messages.lock().await.recv().await;
            match next {
                Some(msg) => self.submit_message(msg).await,
                None => break,
            }
        }
        relay_task.abort();
        redeliver.abort();
    }
}
