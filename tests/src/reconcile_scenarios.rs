//! Scheduled-job scenarios (seed 000 §12: 8, 10, 11, 12, 13, 14) with an injected clock: no
//! sleeping. Each runs on every backend via `reconcile_tests!`.

use chrono::TimeDelta;
use closeflow_domain::{ClientOrderId, CloseRequestId, OrderStatus, PositionStatus, Quantity};
use closeflow_pipeline::ReconcileConfig;

use crate::pipeline::PipelineApp;

fn coid(cr: &str, attempt: u32) -> ClientOrderId {
    ClientOrderId::new(CloseRequestId::parse(cr).unwrap(), attempt)
}

async fn status(app: &PipelineApp, id: &str) -> String {
    app.position(id).await.body["status"]
        .as_str()
        .unwrap_or("missing")
        .to_string()
}

async fn detail_types(app: &PipelineApp, position: &str) -> Vec<String> {
    app.published()
        .await
        .into_iter()
        .filter(|(_, d)| d["position_id"] == position)
        .map(|(t, _)| t)
        .collect()
}

/// A crash after CLOSING, before any order (seed 000 §12.8): the broker has nothing, so the
/// reconciler sends the same attempt again (a close intent is never dropped back to `open`);
/// the original and the re-driven message together place exactly one order.
pub async fn a_zombie_close_request_is_re_driven_into_exactly_one_order(app: &PipelineApp) {
    app.open_and_close("p-zombie", "AAPL", "5").await;
    let cfg = ReconcileConfig::default();
    app.clock.advance(TimeDelta::seconds(119));
    let early = app.reconcile(&cfg).await;
    assert_eq!((early.changed, early.broker_queries), (0, 0), "not a zombie yet");
    app.clock.advance(TimeDelta::seconds(1));
    let r = app.reconcile(&cfg).await;
    assert_eq!((r.changed, r.broker_queries), (1, 1), "{r:?}");
    assert_eq!(status(app, "p-zombie").await, "closing", "still closing, sent again");
    app.driver.pump().await; // the delayed message and the re-drive arrive now
    assert_eq!(app.sim.orders_placed(), 1, "one order for the attempt");
    assert_eq!(status(app, "p-zombie").await, "closed");
    assert_eq!(
        detail_types(app, "p-zombie").await,
        ["PositionClosing", "PositionClosed"]
    );
}

/// Seed 000 §12.10: a stuck order is asked about at the broker and the answer applied.
pub async fn a_stuck_order_is_looked_up_and_its_fill_applied(app: &PipelineApp) {
    let cr = app.open_and_close("p-stuck", "NVDA", "4").await;
    app.driver.pump().await;
    app.sim
        .settle_silently(&coid(&cr, 1), OrderStatus::Filled, Quantity::from(4));
    let cfg = ReconcileConfig::default();
    app.clock.advance(TimeDelta::minutes(9));
    assert_eq!(app.reconcile(&cfg).await.broker_queries, 0, "not stuck yet");
    app.clock.advance(TimeDelta::minutes(1));
    let r = app.reconcile(&cfg).await;
    assert_eq!((r.broker_queries, r.changed), (1, 1), "{r:?}");
    assert_eq!(status(app, "p-stuck").await, "closed");
    assert_eq!(app.close_request(&cr).await.body["filled_qty"], "4");
    app.driver.pump().await;
    assert_eq!(
        detail_types(app, "p-stuck").await,
        ["PositionClosing", "PositionClosed"]
    );
}

/// Seed 000 §12.11: not found at the broker on 3 runs -> close_failed and an alert.
pub async fn an_order_missing_at_the_broker_three_times_needs_a_human(app: &PipelineApp) {
    let cr = app.open_and_close("p-lost", "AMD", "3").await;
    app.driver.pump().await;
    let cfg = ReconcileConfig::default();
    for run in 1..=3 {
        app.clock.advance(TimeDelta::minutes(10));
        let r = app.reconcile(&cfg).await;
        assert_eq!(r.broker_queries, 1, "run {run}: {r:?}");
        let expected = if run < 3 { "closing" } else { "close_failed" };
        assert_eq!(status(app, "p-lost").await, expected, "run {run}");
    }
    let c = app.close_request(&cr).await;
    assert!(c.body["failure_reason"]
        .as_str()
        .unwrap()
        .contains("not found at the broker"));
    app.driver.pump().await;
    let events = detail_types(app, "p-lost").await;
    assert_eq!(events, ["PositionClosing", "PositionCloseFailed", "Alert"]);
}

/// Seed 000 §12.12: an inconsistent pair is detected, repaired where safe, and alerted.
pub async fn an_invariant_violation_is_repaired_and_alerted(app: &PipelineApp) {
    app.open_and_close("p-broken", "NVDA", "2").await;
    let mut agg = app.aggregate("p-broken").await;
    agg.position.status = PositionStatus::Open; // a pending request, but the position forgot
    app.seed(agg).await;
    app.driver.pump().await;
    app.clock.advance(TimeDelta::minutes(1));
    let r = app.reconcile(&ReconcileConfig::default()).await;
    assert_eq!(r.changed, 1, "{r:?}");
    assert_eq!(status(app, "p-broken").await, "closing");
    app.driver.pump().await;
    let events = detail_types(app, "p-broken").await;
    assert!(
        events.ends_with(&["PositionClosing".to_string(), "Alert".to_string()]),
        "{events:?}"
    );
    let agg = app.aggregate("p-broken").await;
    assert_eq!(agg.last_alert.unwrap().kind.as_str(), "invariant_violation");
}

/// Seed 000 §12.6 + 13: partial fills retry automatically with backoff, until closed.
pub async fn partial_fills_are_retried_until_closed(app: &PipelineApp) {
    let cr = app.open_and_close("p-retry", "MSFT", "10").await;
    let cfg = ReconcileConfig::default();
    app.driver.pump().await;
    for _ in 0..10 {
        if status(app, "p-retry").await == "closed" {
            break;
        }
        assert_eq!(status(app, "p-retry").await, "close_retryable");
        app.clock.advance(TimeDelta::minutes(5));
        app.reconcile(&cfg).await;
        app.driver.pump().await;
    }
    assert_eq!(status(app, "p-retry").await, "closed");
    let c = app.close_request(&cr).await;
    assert_eq!(
        (c.body["filled_qty"].as_str(), c.body["retry_count"].as_u64()),
        (Some("10"), Some(3))
    );
    let attempts: Vec<_> = c.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["qty"].clone())
        .collect();
    assert_eq!(attempts, ["10", "7", "4", "1"], "each retry asks for the remainder");
    assert_eq!(app.sim.orders_placed(), 4);
}

/// Seed 000 §12.13: after max_retries the close stops retrying and needs a human.
pub async fn retries_stop_at_the_limit(app: &PipelineApp) {
    let cr = app.open_and_close("p-limit", "MSFT", "10").await;
    let cfg = ReconcileConfig::default();
    app.driver.pump().await;
    for _ in 0..6 {
        app.clock.advance(TimeDelta::minutes(5));
        app.reconcile(&cfg).await;
        app.driver.pump().await;
    }
    assert_eq!(status(app, "p-limit").await, "close_failed");
    let c = app.close_request(&cr).await;
    assert_eq!(
        (c.body["retry_count"].as_u64(), c.body["filled_qty"].as_str()),
        (Some(3), Some("4"))
    );
    assert_eq!(app.sim.orders_placed(), 4, "1 attempt + 3 retries, no more");
    assert!(c.body["failure_reason"].as_str().unwrap().contains("after 3 retries"));
    let events = detail_types(app, "p-limit").await;
    assert_eq!(events.last().map(String::as_str), Some("Alert"));
}

/// Seed 000 §12.14: cleanup removes only what is finished and past retention.
pub async fn cleanup_removes_only_finished_records_past_retention(app: &PipelineApp) {
    app.open_and_close("p-done", "AAPL", "1").await;
    let reopened = app.open_and_close("p-reopened", "NVDA", "1").await;
    app.open_and_close("p-busy", "NVDA", "1").await;
    app.driver.pump().await;
    app.sim
        .report_order(&coid(&reopened, 1), OrderStatus::Canceled, Quantity::ZERO, 2);
    app.driver.pump().await;
    assert_eq!(status(app, "p-done").await, "closed");
    assert_eq!(status(app, "p-reopened").await, "open");
    let retention = TimeDelta::days(3);
    app.clock.advance(retention - TimeDelta::seconds(1));
    let early = app.cleanup(retention).await;
    assert_eq!((early.deleted, early.trimmed), (0, 0), "{early:?}");
    app.clock.advance(TimeDelta::seconds(1));
    let r = app.cleanup(retention).await;
    assert_eq!((r.deleted, r.trimmed), (1, 1), "{r:?}");
    assert_eq!(status(app, "p-done").await, "missing", "closed and expired: removed");
    assert_eq!(
        status(app, "p-reopened").await,
        "open",
        "the position stays; its old close request goes"
    );
    assert_eq!(app.close_request(&reopened).await.status, 404);
    assert!(app.aggregate("p-reopened").await.idempotency.is_empty());
    assert_eq!(
        status(app, "p-busy").await,
        "closing",
        "nothing in flight is ever removed"
    );
    let again = app.cleanup(retention).await;
    assert_eq!((again.deleted, again.trimmed), (0, 0));
}

#[macro_export]
macro_rules! reconcile_tests {
    ($backend:expr) => {
        $crate::reconcile_tests!(@each $backend;
            a_zombie_close_request_is_re_driven_into_exactly_one_order: "",
            a_stuck_order_is_looked_up_and_its_fill_applied: "NVDA=hold",
            an_order_missing_at_the_broker_three_times_needs_a_human: "AMD=not_found",
            an_invariant_violation_is_repaired_and_alerted: "NVDA=hold",
            partial_fills_are_retried_until_closed: "MSFT=partial:3",
            retries_stop_at_the_limit: "MSFT=partial:1",
            cleanup_removes_only_finished_records_past_retention: "NVDA=hold",
        );
    };
    (@each $backend:expr; $($name:ident: $scenarios:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::pipeline::PipelineApp::new($backend, $scenarios).await;
                $crate::reconcile_scenarios::$name(&app).await;
            }
        )*
    };
}
