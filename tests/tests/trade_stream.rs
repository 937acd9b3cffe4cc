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
