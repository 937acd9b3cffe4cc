//! Fills through Alpaca's `trade_updates` stream, end to end against the paper broker on
//! loopback: the real Alpaca adapter places the order, the stream consumer applies the
//! broker's events. The order watch is parked on a clock that never moves, so only the
//! stream can close these positions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use closeflow_alpaca::stream::{run, StreamConfig};
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_domain::testing::{close, pid, register, t0};
use closeflow_domain::PositionStatus;
use closeflow_paper_broker::{router, PaperBroker, PaperConfig, DEV_KEY_ID, DEV_SECRET_KEY};
use closeflow_pipeline::{
    Broker, Driver, LogFeed, LogSink, ManualClock, MemoryQueue, MemoryWatch, SimScenarios, StoreUpdates, SystemClock,
};
use closeflow_store::{CloseStore, MemoryStore};

struct Rig {
    paper: String,
    store: Arc<MemoryStore>,
    driver: Driver,
}

/// Binds a port for the paper broker; `serve` starts answering on it (later, to test the
/// consumer's reconnects).
async fn rig(scenarios: &str) -> (Rig, impl std::future::Future<Output = ()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paper = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let broker = PaperBroker::new(PaperConfig::new(SimScenarios::parse(scenarios).unwrap()));
    let serve = async move {
        let _ = axum::serve(listener, router(broker)).await;
    };
    let alpaca: Arc<dyn Broker> = Arc::new(
        AlpacaBroker::new(AlpacaConfig {
            base_url: format!("http://{paper}"),
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let parked = Arc::new(ManualClock::new(t0()));
    let driver = Driver {
        store: store.clone(),
        broker: alpaca,
        sim: None,
        clock: Arc::new(SystemClock),
        feed: Arc::new(LogFeed::new(store.clone())),
        producer: queue.clone(),
        consumer: queue,
        events: Arc::new(LogSink),
        watch: Arc::new(MemoryWatch::new(parked)),
    };
    (Rig { paper, store, driver }, serve)
}

impl Rig {
    /// Runs `scenario` while a stream consumer listens; stops the consumer after it.
    async fn with_consumer(&self, scenario: impl std::future::Future<Output = ()>) {
        let handler = StoreUpdates::new(self.store.clone(), self.driver.broker.clone(), Arc::new(SystemClock));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let consumer = run(self.stream(), &handler, async {
            let _ = stopped.await;
        });
        let scenario = async {
            scenario.await;
            let _ = stop.send(());
        };
        tokio::join!(consumer, scenario);
    }

    fn stream(&self) -> StreamConfig {
        StreamConfig {
            url: format!("ws://{}/stream", self.paper),
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        }
    }

    async fn open_and_close(&self, id: &str) {
        let now = closeflow_pipeline::Clock::now(&SystemClock);
        self.store
            .register_position(&register(id, "3", now))
            .await
            .unwrap()
            .unwrap();
        self.store.open_close_request(&close(id, "k", now)).await.unwrap();
        self.driver.pump().await;
    }

    async fn status(&self, id: &str) -> PositionStatus {
        self.store.position(&pid(id)).await.unwrap().unwrap().status
    }

    async fn wait_closed(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id).await != PositionStatus::Closed {
            assert!(
                Instant::now() < deadline,
                "{id} not closed: {:?}",
                self.status(id).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_the_stream_closes_the_position_at_the_brokers_fill_time() {
    let (rig, serve) = rig("AAPL=fill_after:300ms").await;
    tokio::spawn(serve);
    rig.with_consumer(async {
        rig.open_and_close("st-1").await;
        let status = rig.status("st-1").await;
        assert_eq!(status, PositionStatus::Closing, "the broker fills later");
        rig.wait_closed("st-1").await;
    })
    .await;
    let agg = rig
        .store
        .aggregate(&closeflow_store::AggregateKey::Position(pid("st-1")))
        .await
        .unwrap()
        .unwrap();
    let order = &agg.orders[0];
    assert_eq!(order.filled_qty, closeflow_domain::testing::qty("3"));
    let at_broker: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v2/orders:by_client_order_id", rig.paper))
        .query(&[("client_order_id", order.client_order_id.to_string())])
        .header("APCA-API-KEY-ID", DEV_KEY_ID)
        .header("APCA-API-SECRET-KEY", DEV_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let filled_at = at_broker["filled_at"]
        .as_str()
        .and_then(closeflow_domain::parse_timestamp);
    assert_eq!(agg.position.closed_at, filled_at, "closed when the broker filled it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_filled_while_the_consumer_was_away_is_backfilled_on_connect() {
    let (rig, serve) = rig("AAPL=fill_after:50ms").await;
    tokio::spawn(serve);
    rig.open_and_close("late-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.status("late-1").await,
        PositionStatus::Closing,
        "filled at the broker, unheard"
    );
    rig.with_consumer(rig.wait_closed("late-1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_retries_until_the_broker_answers_then_hears_the_fill() {
    let (rig, serve) = rig("AAPL=fill_after:300ms").await;
    // Listening while the broker is down: connection refused, backoff, again.
    rig.with_consumer(async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tokio::spawn(serve);
        rig.open_and_close("retry-1").await;
        assert_eq!(rig.status("retry-1").await, PositionStatus::Closing);
        rig.wait_closed("retry-1").await;
    })
    .await;
}
