//! Fills through Alpaca's `trade_updates` stream, end to end against the paper broker on
//! loopback: the real Alpaca adapter places the order, the stream consumer applies the
//! broker's events. Unless a test says otherwise the order watch is parked on a clock that
//! never moves, so only the stream can close these positions.

use std::time::{Duration, Instant};

use closeflow_domain::testing::pid;
use closeflow_domain::PositionStatus;
use closeflow_store::CloseStore;
use closeflow_tests::paper::{PaperRig, Watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_the_stream_closes_the_position_at_the_brokers_fill_time() {
    let rig = PaperRig::start("AAPL=fill_after:300ms", Watch::Parked).await;
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
    let filled_at = rig.filled_at(&order.client_order_id.to_string()).await;
    assert!(filled_at.is_some());
    assert_eq!(agg.position.closed_at, filled_at, "closed when the broker filled it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_filled_while_the_consumer_was_away_is_backfilled_on_connect() {
    let rig = PaperRig::start("AAPL=fill_after:50ms", Watch::Parked).await;
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
    let (rig, serve) = PaperRig::bind("AAPL=fill_after:300ms", Watch::Parked).await;
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

/// No stream at all (Alpaca down for WebSockets, or no stream service deployed): the order
/// watch's first check, a second after submission, finds the fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_stream_down_the_order_watch_closes_a_fill_within_seconds() {
    let rig = PaperRig::start("AAPL=fill_after:200ms", Watch::Live).await;
    let submitted = Instant::now();
    rig.open_and_close("watch-1").await;
    assert_eq!(rig.status("watch-1").await, PositionStatus::Closing);
    let closed = rig.wait_closed_within("watch-1", Duration::from_secs(5)).await;
    // The first check is due 1 s after the order was recorded: not before.
    assert!(
        closed - submitted >= Duration::from_millis(900),
        "closed after {:?}, before any check was due",
        closed - submitted
    );
    let agg = rig
        .store
        .aggregate(&closeflow_store::AggregateKey::Position(pid("watch-1")))
        .await
        .unwrap()
        .unwrap();
    let filled_at = rig.filled_at(&agg.orders[0].client_order_id.to_string()).await;
    assert_eq!(
        agg.position.closed_at, filled_at,
        "dated by the broker's fill, not the check"
    );
}

/// A strategy close in `mleg` mode whose multi-leg order fills later: the order's events
/// on the stream (its legs nested, as Alpaca sends them) close every leg, each at its own
/// leg's fill price. The order watch is parked, so nothing else can have closed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_leg_orders_fills_on_the_stream_close_every_leg_at_its_own_price() {
    use closeflow_pipeline::SimScenarios;
    let (call, put) = ("SPY260116C00600000", "SPY260116P00540000");
    let scenarios = SimScenarios::parse(&format!("{call}=fill_after:300ms,{put}=fill_after:300ms"))
        .unwrap()
        .with_prices(&format!("{call}=2.15,{put}=0.8"))
        .unwrap();
    let rig = PaperRig::start_with(
        closeflow_paper_broker::PaperConfig::new(scenarios),
        closeflow_alpaca::Limits::default(),
        Watch::Parked,
    )
    .await;
    let now = closeflow_pipeline::Clock::now(&closeflow_pipeline::SystemClock);
    for (id, symbol, qty) in [("ms-call", call, "-1"), ("ms-put", put, "2")] {
        let mut cmd = closeflow_domain::testing::register(id, qty, now);
        cmd.symbol = symbol.into();
        cmd.asset_type = closeflow_domain::AssetType::Option;
        cmd.strategy_id = Some("ms-strangle".into());
        rig.store.register_position(&cmd).await.unwrap().unwrap();
    }
    rig.with_consumer(async {
        let mut cmd = closeflow_tests::contract::strategy_close("ms-strangle", "k", 9);
        cmd.broker_supports_mleg = true;
        let out = rig.store.close_strategy(&cmd).await.unwrap();
        assert!(
            matches!(out, closeflow_store::StrategyCloseOutcome::Created(_)),
            "{out:?}"
        );
        rig.driver.pump().await;
        assert_eq!(
            rig.status("ms-call").await,
            PositionStatus::Closing,
            "the broker fills later"
        );
        rig.wait_closed("ms-call").await;
        rig.wait_closed("ms-put").await;
    })
    .await;
    assert_eq!(rig.paper_broker.mleg_orders_placed(), 1);
    for (id, price, filled) in [("ms-call", "2.15", "1"), ("ms-put", "0.8", "2")] {
        let agg = rig
            .store
            .aggregate(&closeflow_store::AggregateKey::Position(pid(id)))
            .await
            .unwrap()
            .unwrap();
        let order = &agg.orders[0];
        assert_eq!(
            order.filled_avg_price.map(|p| p.to_string()).as_deref(),
            Some(price),
            "{id}: its own leg's price"
        );
        assert_eq!(order.filled_qty, closeflow_domain::testing::qty(filled), "{id}");
    }
}
