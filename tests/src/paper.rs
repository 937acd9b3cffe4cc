//! A closeflow pipeline wired to the Alpaca-compatible paper broker on loopback: the real
//! Alpaca adapter places orders, the real trade_updates consumer (when listening) applies
//! the broker's events, the order watch runs on the wall clock or is parked. Shared by the
//! stream tests and the bench's fill-latency rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use closeflow_alpaca::stream::{run, StreamConfig};
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig, Limits};
use closeflow_domain::testing::{close, pid, register, t0};
use closeflow_domain::PositionStatus;
use closeflow_paper_broker::{router, PaperBroker, PaperConfig, DEV_KEY_ID, DEV_SECRET_KEY};
use closeflow_pipeline::{
    Broker, Clock, Driver, LogFeed, LogSink, ManualClock, MemoryQueue, MemoryWatch, SimScenarios, StoreUpdates,
    SystemClock,
};
use closeflow_store::{CloseStore, MemoryStore};

/// Whether the order watch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// On a clock that never moves: only the stream (or a backfill) can close a position.
    Parked,
    /// On the wall clock, at its real delays (1 s, 3 s, 10 s, ...).
    Live,
}

pub struct PaperRig {
    /// `127.0.0.1:port` of the paper broker.
    pub paper: String,
    pub store: Arc<MemoryStore>,
    pub driver: Driver,
    /// REST requests the paper broker has answered (the stream's WebSocket not counted).
    pub broker_calls: Arc<AtomicUsize>,
    /// The paper broker itself (its engine counts the orders it really received).
    pub paper_broker: Arc<PaperBroker>,
}

impl PaperRig {
    /// A rig whose paper broker answers at once.
    pub async fn start(scenarios: &str, watch: Watch) -> PaperRig {
        let (rig, serve) = Self::bind(scenarios, watch).await;
        tokio::spawn(serve);
        rig
    }

    /// Binds a port for the paper broker; the returned future starts answering on it
    /// (later, to test the consumer's reconnects).
    pub async fn bind(scenarios: &str, watch: Watch) -> (PaperRig, impl std::future::Future<Output = ()>) {
        let cfg = PaperConfig::new(SimScenarios::parse(scenarios).unwrap());
        Self::bind_with(cfg, Limits::default(), watch).await
    }

    /// A rig on a paper broker configured by `cfg` (rate limit, keys), the adapter with
    /// `limits` (its pacing and circuit breaker).
    pub async fn start_with(cfg: PaperConfig, limits: Limits, watch: Watch) -> PaperRig {
        let (rig, serve) = Self::bind_with(cfg, limits, watch).await;
        tokio::spawn(serve);
        rig
    }

    pub async fn bind_with(
        cfg: PaperConfig,
        limits: Limits,
        watch: Watch,
    ) -> (PaperRig, impl std::future::Future<Output = ()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let paper = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let broker = PaperBroker::new(cfg);
        let paper_broker = broker.clone();
        let broker_calls = Arc::new(AtomicUsize::new(0));
        let counter = broker_calls.clone();
        let app = router(broker).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    if req.uri().path().starts_with("/v2/") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(req).await
                }
            },
        ));
        let serve = async move {
            let _ = axum::serve(listener, app).await;
        };
        let alpaca: Arc<dyn Broker> = Arc::new(
            AlpacaBroker::with_limits(
                AlpacaConfig {
                    base_url: format!("http://{paper}"),
                    key_id: DEV_KEY_ID.into(),
                    secret_key: DEV_SECRET_KEY.into(),
                    timeout: Duration::from_secs(5),
                },
                limits,
            )
            .unwrap(),
        );
        let store = Arc::new(MemoryStore::new());
        let queue = Arc::new(MemoryQueue::new());
        let watch_clock: Arc<dyn Clock> = match watch {
            Watch::Parked => Arc::new(ManualClock::new(t0())),
            Watch::Live => Arc::new(SystemClock),
        };
        let driver = Driver {
            store: store.clone(),
            broker: alpaca,
            sim: None,
            clock: Arc::new(SystemClock),
            feed: Arc::new(LogFeed::new(store.clone())),
            producer: queue.clone(),
            consumer: queue,
            events: Arc::new(LogSink),
            audit_retention: closeflow_domain::Policy::default().audit_retention,
            watch: Arc::new(MemoryWatch::new(watch_clock)),
        };
        let rig = PaperRig {
            paper,
            store,
            driver,
            broker_calls,
            paper_broker,
        };
        (rig, serve)
    }

    /// Runs `scenario` while a stream consumer listens; stops the consumer after it.
    pub async fn with_consumer<T>(&self, scenario: impl std::future::Future<Output = T>) -> T {
        let handler = StoreUpdates::new(self.store.clone(), self.driver.broker.clone(), Arc::new(SystemClock));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let consumer = run(self.stream(), &handler, async {
            let _ = stopped.await;
        });
        let scenario = async {
            let out = scenario.await;
            let _ = stop.send(());
            out
        };
        tokio::join!(consumer, scenario).1
    }

    pub fn stream(&self) -> StreamConfig {
        StreamConfig {
            url: format!("ws://{}/stream", self.paper),
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        }
    }

    /// Registers `id` (3 AAPL, or `symbol`) and closes it: the order is at the broker when
    /// this returns.
    pub async fn open_and_close_symbol(&self, id: &str, symbol: &str) {
        let now = SystemClock.now();
        let mut reg = register(id, "3", now);
        reg.symbol = symbol.into();
        self.store.register_position(&reg).await.unwrap().unwrap();
        self.store.open_close_request(&close(id, "k", now)).await.unwrap();
        self.driver.pump().await;
    }

    pub async fn open_and_close(&self, id: &str) {
        self.open_and_close_symbol(id, "AAPL").await
    }

    pub async fn status(&self, id: &str) -> PositionStatus {
        self.store.position(&pid(id)).await.unwrap().unwrap().status
    }

    /// Waits (running due order-watch checks) until `id` is closed; panics after `within`.
    pub async fn wait_closed_within(&self, id: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if self.status(id).await == PositionStatus::Closed {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{id} not closed: {:?}",
                self.status(id).await
            );
            self.driver.watch_due().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_closed(&self, id: &str) {
        self.wait_closed_within(id, Duration::from_secs(10)).await;
    }

    /// The broker's fill time of the order `client_order_id`, as it reports it.
    pub async fn filled_at(&self, client_order_id: &str) -> Option<closeflow_domain::Timestamp> {
        let at_broker: serde_json::Value = reqwest::Client::new()
            .get(format!("http://{}/v2/orders:by_client_order_id", self.paper))
            .query(&[("client_order_id", client_order_id)])
            .header("APCA-API-KEY-ID", DEV_KEY_ID)
            .header("APCA-API-SECRET-KEY", DEV_SECRET_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        at_broker["filled_at"]
            .as_str()
            .and_then(closeflow_domain::parse_timestamp)
    }
}

/// What a burst of closes under a rate limit did.
#[derive(Debug, Clone, Copy)]
pub struct BurstReport {
    /// From the first submission to the last close.
    pub took: Duration,
    pub closed: usize,
    /// Closes that ended `close_failed` (a rate limit must cause none).
    pub failed: usize,
    /// Orders the paper broker received (exactly one per close: no duplicate).
    pub orders_at_broker: usize,
    /// REST requests it answered, 429s included.
    pub broker_calls: usize,
}

/// `n` closes at once against a paper broker limited to `paper_rate` (`PAPER_RATE_LIMIT`),
/// the adapter pacing itself with `limits`; the stream consumer listens and the order watch
/// runs. Waits up to `within` for every close to end.
pub async fn burst_of_closes(n: usize, paper_rate: &str, limits: Limits, within: Duration) -> BurstReport {
    let mut cfg = PaperConfig::new(SimScenarios::default());
    cfg.rate_limit = Some(closeflow_paper_broker::RateLimit::parse(paper_rate).unwrap());
    let rig = PaperRig::start_with(cfg, limits, Watch::Live).await;
    let now = SystemClock.now();
    for i in 0..n {
        let id = format!("burst-{i}");
        rig.store
            .register_position(&register(&id, "3", now))
            .await
            .unwrap()
            .unwrap();
        rig.store.open_close_request(&close(&id, "k", now)).await.unwrap();
    }
    let started = Instant::now();
    let (closed, failed) = rig
        .with_consumer(async {
            loop {
                rig.driver.pump().await;
                let (mut closed, mut failed) = (0, 0);
                for i in 0..n {
                    match rig.status(&format!("burst-{i}")).await {
                        PositionStatus::Closed => closed += 1,
                        PositionStatus::CloseFailed => failed += 1,
                        _ => {}
                    }
                }
                if closed + failed == n || started.elapsed() > within {
                    return (closed, failed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    BurstReport {
        took: started.elapsed(),
        closed,
        failed,
        orders_at_broker: rig.paper_broker.engine.orders_placed(),
        broker_calls: rig.broker_calls.load(Ordering::SeqCst),
    }
}

/// What [`liquidation_of`] measured.
#[derive(Debug)]
pub struct LiquidationReport {
    /// From the liquidation's start to its end (flat, or out of attempts).
    pub took: Duration,
    /// Whether the paper broker reported the account flat at the end.
    pub flat: Option<bool>,
    pub attempts: u32,
    /// Positions closeflow shows closed.
    pub closed: usize,
    /// Orders the paper broker received (one per holding: no duplicate).
    pub orders_at_broker: usize,
    pub broker_calls: usize,
}

/// An emergency liquidation of `n` positions (each also held at the paper broker, so it
/// has something true to flatten) against a paper broker limited to `paper_rate`, the
/// adapter pacing itself with `limits`. Waits up to `within` for the liquidation to end.
pub async fn liquidation_of(n: usize, paper_rate: &str, limits: Limits, within: Duration) -> LiquidationReport {
    let spec: Vec<String> = (0..n).map(|i| format!("acct-1:S{i}=3")).collect();
    let scenarios = SimScenarios::default().with_positions(&spec.join(",")).unwrap();
    let mut cfg = PaperConfig::new(scenarios);
    cfg.rate_limit = Some(closeflow_paper_broker::RateLimit::parse(paper_rate).unwrap());
    let rig = PaperRig::start_with(cfg, limits, Watch::Live).await;
    let now = SystemClock.now();
    for i in 0..n {
        let mut cmd = register(&format!("liq-{i}"), "3", now);
        cmd.symbol = format!("S{i}");
        rig.store.register_position(&cmd).await.unwrap().unwrap();
    }
    let mut bulk = crate::builders::bulk_close("liquidate-bench", now);
    bulk.liquidation = Some(closeflow_domain::Liquidation::new(
        closeflow_domain::LIQUIDATION_ATTEMPTS,
    ));
    let id = bulk.id;
    let started = Instant::now();
    closeflow_pipeline::start_bulk(rig.store.as_ref(), rig.driver.producer.as_ref(), &SystemClock, bulk)
        .await
        .unwrap();
    let done = rig
        .with_consumer(async {
            loop {
                rig.driver.pump().await;
                let b = closeflow_store::BulkLog::bulk_close(rig.store.as_ref(), &id)
                    .await
                    .unwrap()
                    .unwrap();
                if !b.job_running() || started.elapsed() > within {
                    return b;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    let mut closed = 0;
    for i in 0..n {
        closed += (rig.status(&format!("liq-{i}")).await == PositionStatus::Closed) as usize;
    }
    let l = done.liquidation.expect("a liquidation");
    LiquidationReport {
        took: started.elapsed(),
        flat: l.flat,
        attempts: l.attempt + 1,
        closed,
        orders_at_broker: rig.paper_broker.engine.orders_placed(),
        broker_calls: rig.broker_calls.load(Ordering::SeqCst),
    }
}
