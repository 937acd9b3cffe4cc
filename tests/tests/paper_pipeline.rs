//! Broker errors as Alpaca really answers them, end to end on the Alpaca-compatible paper
//! broker (issue 9 item 4): the real adapter, submitter, order watch, reconciler and
//! trade_updates consumer. Rate limits delay closes and never fail them; refused keys and
//! an unreachable broker leave closes in flight with an alert; shares held by open orders
//! fail a close as `blocked_by_open_orders` unless it may cancel them; a replaced order is
//! followed, never counted as canceled; an order that never reached the broker is sent
//! again, then handed to a human.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use closeflow_alpaca::accounts::{AccountBrokers, Credentials};
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig, Limits};
use closeflow_domain::testing::{close, pid, register};
use closeflow_domain::trouble;
use closeflow_domain::{
    AccountId, ClientOrderId, CloseRequestStatus, OrderIntent, PositionAggregate, PositionStatus, Quantity,
    SubmitRequest,
};
use closeflow_paper_broker::{router, PaperBroker, PaperConfig, RateLimit, DEV_KEY_ID, DEV_SECRET_KEY};
use closeflow_pipeline::broker::{BrokerPosition, OpenOrder};
use closeflow_pipeline::{
    reconcile_once, submit, Broker, BrokerError, BrokerOrder, Clock, ManualClock, ReconcileConfig, SimScenarios,
    SubmitError, SubmitOutcome, SystemClock,
};
use closeflow_store::{AggregateKey, CloseOutcome, CloseStore, MemoryStore};
use closeflow_tests::paper::{burst_of_closes, liquidation_of, PaperRig, Watch};

fn paper_config(scenarios: &str, rate_limit: Option<&str>) -> PaperConfig {
    let mut cfg = PaperConfig::new(SimScenarios::parse(scenarios).unwrap());
    cfg.rate_limit = rate_limit.map(|r| RateLimit::parse(r).unwrap());
    cfg
}

async fn aggregate(store: &dyn CloseStore, id: &str) -> PositionAggregate {
    store
        .aggregate(&AggregateKey::Position(pid(id)))
        .await
        .unwrap()
        .unwrap()
}

/// Registers `id` (3 of `symbol`) and opens its close; returns the first attempt's request.
async fn open_close(store: &dyn CloseStore, id: &str, symbol: &str, cancel_open_orders: bool) -> SubmitRequest {
    let now = SystemClock.now();
    let mut reg = register(id, "3", now);
    reg.symbol = symbol.into();
    store.register_position(&reg).await.unwrap().unwrap();
    let mut cmd = close(id, "k", now);
    cmd.cancel_open_orders = cancel_open_orders;
    let CloseOutcome::Created { close_request, .. } = store.open_close_request(&cmd).await.unwrap() else {
        panic!("close created")
    };
    SubmitRequest {
        position_id: pid(id),
        close_request_id: close_request.id,
        attempt: 1,
    }
}

/// The number: a burst of 300 closes on an account limited to 200 requests a
/// minute all close, none fails for the 429s, and the broker receives exactly 300 orders:
/// 200 in the first window, the rest after its reset, inside the 90 s the limit allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_closes_under_200_a_minute_all_close_with_no_failure_and_no_duplicate() {
    let r = burst_of_closes(300, "200/min", Limits::default(), Duration::from_secs(150)).await;
    println!("{r:?}");
    assert_eq!((r.closed, r.failed), (300, 0), "{r:?}");
    assert_eq!(r.orders_at_broker, 300, "exactly one order per close");
    assert!(r.took < Duration::from_secs(90), "{r:?}");
}

/// An emergency liquidation through the Alpaca adapter against the paper broker, its rate
/// limit small enough to be hit (30 holdings, 20 requests per 2 s): the cancels, the sync
/// and the closes pace themselves; every holding closes with exactly one order and the
/// broker reports the account flat on the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liquidation_under_a_rate_limit_flattens_the_account_with_one_order_per_holding() {
    let limits = Limits {
        window: Duration::from_secs(2),
        ..Default::default()
    };
    let r = liquidation_of(30, "20/2s", limits, Duration::from_secs(60)).await;
    println!("{r:?}");
    assert_eq!((r.flat, r.attempts, r.closed), (Some(true), 1, 30), "{r:?}");
    assert_eq!(r.orders_at_broker, 30, "exactly one order per holding");
}

/// A strategy close in `mleg` mode through the Alpaca adapter against the paper broker:
/// one multi-leg order (`order_class: "mleg"`), an engine order per leg, and every leg
/// closed from the order's per-leg fills (read by the order watch's lookups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mleg_strategy_close_is_one_order_at_the_paper_broker_and_closes_every_leg() {
    let rig = PaperRig::start("", Watch::Live).await;
    let now = SystemClock.now();
    let legs = [
        ("pm-long", "SPY260116C00600000", "1"),
        ("pm-short", "SPY260116C00610000", "-1"),
        ("pm-put-short", "SPY260116P00540000", "-1"),
        ("pm-put-long", "SPY260116P00530000", "1"),
    ];
    for (id, symbol, qty) in legs {
        let mut cmd = closeflow_domain::testing::register(id, qty, now);
        cmd.symbol = symbol.into();
        cmd.asset_type = closeflow_domain::AssetType::Option;
        cmd.strategy_id = Some("pm-ic".into());
        rig.store.register_position(&cmd).await.unwrap().unwrap();
    }
    let mut cmd = closeflow_tests::contract::strategy_close("pm-ic", "k", 7);
    cmd.broker_supports_mleg = true;
    let out = rig.store.close_strategy(&cmd).await.unwrap();
    assert!(
        matches!(out, closeflow_store::StrategyCloseOutcome::Created(_)),
        "{out:?}"
    );
    let started = std::time::Instant::now();
    rig.with_consumer(async {
        loop {
            rig.driver.pump().await;
            let mut closed = 0;
            for (id, _, _) in legs {
                closed += (rig.status(id).await == PositionStatus::Closed) as usize;
            }
            if closed == legs.len() || started.elapsed() > Duration::from_secs(30) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (id, _, _) in legs {
        assert_eq!(rig.status(id).await, PositionStatus::Closed, "{id}");
    }
    assert_eq!(rig.paper_broker.mleg_orders_placed(), 1, "one multi-leg order");
    assert_eq!(rig.paper_broker.engine.orders_placed(), 4, "one engine order per leg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_shares_fail_a_close_as_blocked_unless_it_may_cancel_the_open_orders() {
    let rig = PaperRig::start("NFLX=held", Watch::Live).await;
    let store = rig.store.as_ref();
    let broker = rig.driver.broker.as_ref();
    let held = open_close(store, "held-1", "NFLX", false).await;
    let out = submit(store, broker, &SystemClock, &held).await.unwrap();
    assert!(matches!(out, SubmitOutcome::Rejected(_)), "{out:?}");
    let agg = aggregate(store, "held-1").await;
    assert_eq!(agg.position.status, PositionStatus::CloseFailed);
    let reason = agg.latest_close_request.unwrap().failure_reason.unwrap();
    assert!(reason.starts_with("blocked_by_open_orders: held_qty "), "{reason}");
    assert_eq!(agg.last_alert.unwrap().kind, trouble::BLOCKED_BY_OPEN_ORDERS);
    assert_eq!(rig.paper_broker.engine.orders_placed(), 0);

    // Asked with cancel_open_orders: the holding order is canceled, confirmed, and the
    // close goes through.
    let freed = open_close(store, "held-2", "NFLX", true).await;
    let out = submit(store, broker, &SystemClock, &freed).await.unwrap();
    assert_eq!(out, SubmitOutcome::Placed);
    // The relay schedules the order watch (its queued message finds nothing to do).
    rig.driver.pump().await;
    rig.wait_closed("held-2").await;
    assert_eq!(rig.paper_broker.engine.orders_placed(), 1);
    let account = AccountId::parse("acct-1").unwrap();
    assert!(
        broker.open_orders(&account, "NFLX").await.unwrap().is_empty(),
        "the holder is canceled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_order_is_followed_to_its_fill_and_never_closes_twice() {
    let rig = PaperRig::start("AMZN=replace", Watch::Live).await;
    rig.open_and_close_symbol("repl-1", "AMZN").await;
    rig.wait_closed("repl-1").await;
    let agg = aggregate(rig.store.as_ref(), "repl-1").await;
    assert_eq!(agg.orders.len(), 1, "no retry: replaced is not canceled");
    let order = &agg.orders[0];
    assert_eq!(order.filled_qty, Quantity::from(3));
    let replaced = rig
        .paper_broker
        .engine
        .by_client_order_id(&order.client_order_id.to_string())
        .unwrap();
    assert_eq!(
        order.broker_order_id, replaced.replaced_by,
        "the replacement is the attempt's order"
    );
    assert_eq!(rig.paper_broker.engine.orders_placed(), 1);
    assert_eq!(
        rig.paper_broker
            .engine
            .positions("acct-1")
            .into_iter()
            .map(|(s, h)| (s, h.qty))
            .collect::<Vec<_>>(),
        vec![("AMZN".to_string(), Quantity::from(-3))],
        "closed once, not twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_alert_and_fail_nothing() {
    let mut cfg = paper_config("", None);
    cfg.key_id = "another-key".into();
    let rig = PaperRig::start_with(cfg, Limits::default(), Watch::Live).await;
    let store = rig.store.as_ref();
    let req = open_close(store, "keys-1", "AAPL", false).await;
    let out = submit(store, rig.driver.broker.as_ref(), &SystemClock, &req).await;
    assert!(matches!(out, Err(SubmitError::TryLater { .. })), "{out:?}");
    let agg = aggregate(store, "keys-1").await;
    assert_eq!(agg.position.status, PositionStatus::Closing, "nothing failed");
    assert_eq!(
        trouble::waiting_on_broker(&agg).map(|a| a.kind),
        Some(trouble::CREDENTIALS_REJECTED)
    );
    // Long after: the reconciler's zombie rule sends it again but fails nothing.
    let clock = ManualClock::new(SystemClock.now() + chrono::TimeDelta::minutes(3));
    for _ in 0..5 {
        reconcile_once(store, rig.driver.broker.as_ref(), &clock, &ReconcileConfig::default())
            .await
            .unwrap();
        clock.advance(chrono::TimeDelta::minutes(3));
    }
    assert_eq!(
        aggregate(store, "keys-1").await.position.status,
        PositionStatus::Closing
    );
}

/// Places nothing: every submission is lost before it reaches the broker (timeouts on the
/// way there), while lookups reach the real paper broker.
struct LostOnTheWay(Arc<dyn Broker>);

#[async_trait]
impl Broker for LostOnTheWay {
    async fn submit_order(&self, _: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        Err(BrokerError::Ambiguous("timeout".into()))
    }
    async fn get_order_by_client_id(&self, a: &AccountId, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        self.0.get_order_by_client_id(a, id).await
    }
    async fn cancel_order(&self, a: &AccountId, id: &str) -> Result<(), BrokerError> {
        self.0.cancel_order(a, id).await
    }
    async fn list_positions(&self, a: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        self.0.list_positions(a).await
    }
    async fn open_orders(&self, a: &AccountId, s: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        self.0.open_orders(a, s).await
    }
    async fn account_equity(&self, a: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        self.0.account_equity(a).await
    }
    async fn account_open_orders(&self, a: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        self.0.account_open_orders(a).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_is_re_driven_with_its_client_order_id_then_fails_with_an_alert_never_reopened() {
    let rig = PaperRig::start("", Watch::Parked).await;
    let store = rig.store.as_ref();
    let broker = LostOnTheWay(rig.driver.broker.clone());
    let req = open_close(store, "zombie-1", "AAPL", false).await;
    let policy = ReconcileConfig::default();
    let clock = ManualClock::new(SystemClock.now());
    let mut sends = 0;
    loop {
        let out = submit(store, &broker, &clock, &req).await;
        assert!(matches!(out, Err(SubmitError::Ambiguous(_))), "{out:?}");
        sends += 1;
        clock.advance(chrono::TimeDelta::minutes(3));
        reconcile_once(store, &broker, &clock, &policy).await.unwrap();
        let agg = aggregate(store, "zombie-1").await;
        assert_ne!(agg.position.status, PositionStatus::Open, "never silently reopened");
        if agg.position.status == PositionStatus::CloseFailed {
            let cr = agg.latest_close_request.unwrap();
            assert_eq!(cr.status, CloseRequestStatus::Failed);
            assert_eq!(cr.current_attempt(), 1, "the same attempt, the same client order id");
            assert_eq!(agg.last_alert.unwrap().kind.as_str(), "order_never_placed");
            break;
        }
        assert!(sends <= 10, "bounded re-drives");
    }
    assert_eq!(sends, policy.policy.redrive_limit as usize + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_opens_the_breaker_closes_wait_in_flight_then_go_through() {
    // A port nobody answers on yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let adapter = AlpacaBroker::with_limits(
        AlpacaConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            timeout: Duration::from_secs(2),
        },
        Limits {
            breaker_failures: 2,
            cool_down: Duration::from_millis(400),
            ..Limits::default()
        },
    )
    .unwrap();
    let store = MemoryStore::new();
    let req = open_close(&store, "down-1", "AAPL", false).await;
    for _ in 0..2 {
        let out = submit(&store, &adapter, &SystemClock, &req).await;
        assert!(matches!(out, Err(SubmitError::Ambiguous(_))), "{out:?}");
    }
    assert!(adapter.breaker_open());
    let out = submit(&store, &adapter, &SystemClock, &req).await;
    assert!(matches!(out, Err(SubmitError::TryLater { .. })), "{out:?}");
    let agg = aggregate(&store, "down-1").await;
    assert_eq!(
        agg.position.status,
        PositionStatus::Closing,
        "in flight, visible as such"
    );
    assert_eq!(
        trouble::waiting_on_broker(&agg).map(|a| a.kind),
        Some(trouble::UNREACHABLE)
    );
    // The broker comes back; after the cool-down the close goes through.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let paper = PaperBroker::new(paper_config("", None));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(paper)).await;
    });
    tokio::time::sleep(Duration::from_millis(450)).await;
    let out = submit(&store, &adapter, &SystemClock, &req).await.unwrap();
    assert_eq!(out, SubmitOutcome::Placed);
    assert!(!adapter.breaker_open());
    let agg = aggregate(&store, "down-1").await;
    assert!(trouble::waiting_on_broker(&agg).is_none(), "no longer waiting");
}

#[tokio::test]
async fn an_account_without_credentials_fails_at_once_with_a_clear_reason() {
    let brokers = AccountBrokers::new(
        &Credentials::default(),
        "http://127.0.0.1:9",
        Duration::from_secs(1),
        Limits::default(),
    )
    .unwrap();
    let store = MemoryStore::new();
    let req = open_close(&store, "nokeys-1", "AAPL", false).await;
    let out = submit(&store, &brokers, &SystemClock, &req).await.unwrap();
    assert!(matches!(out, SubmitOutcome::Rejected(_)), "{out:?}");
    let agg = aggregate(&store, "nokeys-1").await;
    assert_eq!(agg.position.status, PositionStatus::CloseFailed);
    assert_eq!(
        agg.latest_close_request.unwrap().failure_reason.as_deref(),
        Some("no_broker_credentials: no broker credentials for account acct-1")
    );
    assert_eq!(agg.last_alert.unwrap().kind, trouble::NO_CREDENTIALS);
}

/// A change to the paper broker's holdings made behind closeflow's back (`/paper/positions`),
/// with the paper broker's default keys; the answer's status and body.
async fn paper_change(rig: &PaperRig, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> u16 {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}{path}", rig.paper))
        .header("APCA-API-KEY-ID", DEV_KEY_ID)
        .header("APCA-API-SECRET-KEY", DEV_SECRET_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

fn sync_status(p: &closeflow_domain::Position) -> Option<&'static str> {
    p.sync.as_ref().map(|m| m.status.as_str())
}

/// Position sync against the paper broker through the real Alpaca adapter: the seeded
/// holdings agree with closeflow; a close through the pipeline empties its holding and sync
/// confirms it; then holdings changed behind closeflow's back are found: a reduced holding
/// is a conflict whose quantity closeflow takes, a removed one is `missing_at_broker`, a
/// new one is adopted as the broker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_finds_what_changed_behind_closeflows_back_at_the_paper_broker() {
    let seed = SimScenarios::default()
        .with_positions("acct-1:IBM=7@100,acct-1:MSFT=4@100,acct-1:AAPL=3@100")
        .unwrap();
    let rig = PaperRig::start_with(PaperConfig::new(seed), Limits::default(), Watch::Live).await;
    let store = rig.store.as_ref();
    let now = SystemClock.now();
    for (id, symbol, qty) in [("hold-ibm", "IBM", "7"), ("hold-msft", "MSFT", "4")] {
        let mut reg = register(id, qty, now);
        reg.symbol = symbol.into();
        store.register_position(&reg).await.unwrap().unwrap();
    }
    rig.open_and_close_symbol("hold-aapl", "AAPL").await;
    rig.wait_closed("hold-aapl").await;

    let cfg = closeflow_pipeline::SyncConfig {
        accounts: vec![AccountId::parse("acct-1").unwrap()],
        ..Default::default()
    };
    let alerts = closeflow_pipeline::RecordingSink::default();
    let broker = rig.driver.broker.as_ref();
    let r = closeflow_pipeline::sync_once(store, broker, &SystemClock, &alerts, &cfg)
        .await
        .unwrap();
    assert_eq!(
        (r.broker_calls, r.conflicts, r.missing_at_broker, r.unknown),
        (1, 0, 0, 0),
        "the seeded holdings agree, the closed AAPL is gone at the broker too: {r:?}"
    );
    for id in ["hold-ibm", "hold-msft"] {
        assert_eq!(
            sync_status(&aggregate(store, id).await.position),
            Some("in_sync"),
            "{id}"
        );
    }
    let closed = aggregate(store, "hold-aapl").await.position;
    assert_eq!(
        (closed.status, sync_status(&closed)),
        (PositionStatus::Closed, None),
        "a completed close the broker confirms is left as it is"
    );

    // Behind closeflow's back: 2 IBM sold elsewhere, MSFT gone, a TSLA short opened.
    let post = reqwest::Method::POST;
    let ibm = serde_json::json!({"account": "acct-1", "symbol": "IBM", "adjust_by": "-2"});
    assert_eq!(
        paper_change(&rig, post.clone(), "/paper/positions", Some(ibm)).await,
        200
    );
    assert_eq!(
        paper_change(&rig, reqwest::Method::DELETE, "/paper/positions/MSFT", None).await,
        204
    );
    let tsla = serde_json::json!({"symbol": "TSLA", "qty": -2, "avg_entry_price": "250"});
    assert_eq!(paper_change(&rig, post, "/paper/positions", Some(tsla)).await, 200);

    let r = closeflow_pipeline::sync_once(store, broker, &SystemClock, &alerts, &cfg)
        .await
        .unwrap();
    assert_eq!(
        (r.conflicts, r.taken, r.missing_at_broker, r.unknown, r.adopted),
        (1, 1, 1, 1, 1),
        "{r:?}"
    );
    let ibm = aggregate(store, "hold-ibm").await.position;
    assert_eq!(
        (
            sync_status(&ibm),
            ibm.quantity,
            ibm.sync.as_ref().and_then(|m| m.our_qty)
        ),
        (Some("conflict"), Quantity::from(5), Some(Quantity::from(7))),
        "open with nothing in flight: takes the broker's 5, keeps the 7 it had"
    );
    let msft = aggregate(store, "hold-msft").await.position;
    assert_eq!(
        (sync_status(&msft), msft.status),
        (Some("missing_at_broker"), PositionStatus::Open)
    );
    let adopted = aggregate(store, "sync:acct-1:TSLA").await.position;
    assert_eq!(
        (adopted.source.as_deref(), adopted.quantity, adopted.avg_entry_price),
        (
            Some("broker"),
            Quantity::from(-2),
            closeflow_domain::Price::new(Quantity::from(250))
        )
    );
    assert_eq!(
        aggregate(store, "hold-aapl").await.position.status,
        PositionStatus::Closed
    );
}
