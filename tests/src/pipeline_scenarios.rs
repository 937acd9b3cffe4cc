//! End-to-end pipeline scenarios (seed 000 §12: 1, 5, 6, 7, 9, and delivery duplicates),
//! each run on every backend by `pipeline_tests!`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use closeflow_domain::{
    check_invariants, AccountId, ClientOrderId, CloseRequestId, OrderIntent, OrderStatus, Quantity,
};
use closeflow_pipeline::broker::BrokerPosition;
use closeflow_pipeline::relay::relay;
use closeflow_pipeline::webhook::sign;
use closeflow_pipeline::{Broker, BrokerError, BrokerOrder, Delivery, QueueMessage, SimulatedBroker};
use serde_json::json;

use crate::pipeline::{PipelineApp, SECRET};
use crate::Backend;

async fn assert_consistent(app: &PipelineApp, id: &str) {
    let agg = app.aggregate(id).await;
    assert_eq!(
        check_invariants(&agg.position, agg.latest_close_request.as_ref()),
        vec![],
        "seed 000 §9 invariants"
    );
}

fn coid(cr: &str, attempt: u32) -> String {
    ClientOrderId::new(CloseRequestId::parse(cr).unwrap(), attempt).to_string()
}

fn update(cr: &str, status: &str, filled: &str, seq: Option<u64>, exec: Option<&str>) -> String {
    json!({
        "client_order_id": coid(cr, 1),
        "broker_order_id": "brk-ext-1",
        "status": status,
        "filled_qty": filled,
        "filled_avg_price": "101.25",
        "seq": seq,
        "execution_id": exec,
        "updated_at": "2026-01-02T14:30:05Z",
    })
    .to_string()
}

fn client_order_id(cr: &str, attempt: u32) -> ClientOrderId {
    ClientOrderId::new(CloseRequestId::parse(cr).unwrap(), attempt)
}

/// The audit trail of a close, from the change feed: who (the token's name, then the
/// pipeline's workers), what and why, each change once however often the feed is
/// handled, readable per position and per account, only by the account's holders.
pub async fn every_change_of_a_close_is_audited_once_with_who_and_why(app: &PipelineApp) {
    use axum::http::Method;
    let cr = app.open_and_close("p-aud", "AAPL", "10").await;
    app.driver.pump().await;
    assert_eq!(app.position("p-aud").await.body["status"], "closed");
    let trail = app.call(Method::GET, "/positions/p-aud/audit", &[], None).await;
    assert_eq!(trail.status, 200, "{}", trail.body);
    let rows: Vec<(String, String, String)> = trail.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
            (s("actor"), s("action"), s("status_after"))
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        rows[..3],
        [
            row("ops", "position_registered", "open"),
            row("ops", "position_changed", "closing"),
            row("ops", "close_requested", "pending"),
        ],
        "{}",
        trail.body
    );
    // The fill may overtake the submitter's record of the order (the broker answers
    // before the submission is written): either way the order appears once, and the fill
    // is the broker's.
    assert_eq!(rows.iter().filter(|r| r.1 == "order_placed").count(), 1, "{rows:?}");
    assert!(
        rows.contains(&row("broker-webhook", "position_changed", "closed")),
        "{rows:?}"
    );
    assert!(
        rows.contains(&row("broker-webhook", "close_request_changed", "completed")),
        "{rows:?}"
    );
    let entries = trail.body["entries"].as_array().unwrap();
    let fill = entries
        .iter()
        .find(|e| e["subject"] == "order" && e["status_after"] == "filled")
        .expect("the fill is audited");
    assert_eq!(fill["actor"], "broker-webhook");
    assert_eq!(fill["details"]["filled_qty"], "10");
    assert_eq!(fill["details"]["client_order_id"], coid(&cr, 1));
    assert_eq!(
        fill["details"]["realized_pnl_unknown"], "entry_price_unknown",
        "no entry price given"
    );
    let close = &trail.body["entries"][2];
    assert_eq!(close["details"]["idempotency_key"], "k-1");

    // Handling the feed again (a redelivered batch) writes nothing new.
    app.driver.pump().await;
    let again = app.call(Method::GET, "/positions/p-aud/audit", &[], None).await;
    assert_eq!(again.body, trail.body);

    // The account's trail, page by page, is the same entries.
    let mut walked = Vec::new();
    let mut path = "/accounts/acct-1/audit?limit=2".to_string();
    loop {
        let page = app.call(Method::GET, &path, &[], None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        walked.extend(page.body["entries"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/accounts/acct-1/audit?limit=2&cursor={}", urlencode(c)),
            None => break,
        }
    }
    assert_eq!(&walked, trail.body["entries"].as_array().unwrap());

    // Only holders of the account read it; bad paging input is a 400 with a stable code.
    let other = format!("Bearer {}", crate::TOKEN_ACCT2);
    let auth = [("authorization", other.as_str())];
    assert_eq!(
        app.call(Method::GET, "/positions/p-aud/audit", &auth, None)
            .await
            .status,
        404
    );
    let denied = app.call(Method::GET, "/accounts/acct-1/audit", &auth, None).await;
    assert_eq!((denied.status, denied.str("error")), (403, "forbidden".to_string()));
    for (path, code) in [
        ("/accounts/acct-1/audit?limit=0", "invalid_limit"),
        ("/accounts/acct-1/audit?cursor=nonsense", "invalid_cursor"),
        ("/accounts/acct-1/audit?since=yesterday", "invalid_since"),
        ("/positions/p-aud/audit?since=2026-01-01T00:00:00Z", "invalid_query"),
        ("/positions/p-aud/audit?limit=1&limit=2", "invalid_query"),
    ] {
        let r = app.call(Method::GET, path, &[], None).await;
        assert_eq!(
            (r.status, r.str("error")),
            (400, code.to_string()),
            "{path}: {}",
            r.body
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A broker that calls no webhook (Alpaca): the order fills silently, and the order
/// watch's first check, one second after the order was recorded, closes the position.
pub async fn a_fill_the_broker_never_reports_is_found_by_the_order_watch_in_seconds(app: &PipelineApp) {
    let cr = app.open_and_close("w-1", "NVDA", "10").await;
    app.driver.pump().await;
    app.sim
        .settle_silently(&client_order_id(&cr, 1), OrderStatus::Filled, Quantity::from(10));
    app.driver.pump().await;
    assert_eq!(app.position("w-1").await.body["status"], "closing", "nothing due yet");
    app.clock.advance(chrono::TimeDelta::seconds(1));
    app.driver.pump().await;
    assert_eq!(app.position("w-1").await.body["status"], "closed");
    assert_eq!(app.close_request(&cr).await.body["filled_qty"], "10");
    assert!(app.driver.watch.is_empty(), "an ended order is not watched again");
    assert_consistent(app, "w-1").await;
}

/// A working order is checked at 1 s, 3 s, 10 s, 30 s and 2 min after the previous check,
/// then left to the reconciler; each check changes nothing while the broker holds it.
pub async fn the_order_watch_backs_off_then_hands_over_to_the_reconciler(app: &PipelineApp) {
    app.open_and_close("w-2", "NVDA", "10").await;
    app.driver.pump().await;
    let mut checks = 0;
    for delay in closeflow_domain::lifecycle::WATCH_DELAYS_SECS {
        app.clock.advance(chrono::TimeDelta::seconds(delay - 1));
        assert_eq!(app.driver.watch_due().await, 0, "not due before {delay} s");
        app.clock.advance(chrono::TimeDelta::seconds(1));
        checks += app.driver.watch_due().await;
    }
    assert_eq!(checks, 5);
    assert!(app.driver.watch.is_empty(), "handed over to the reconciler");
    assert_eq!(app.position("w-2").await.body["status"], "closing");
    assert_eq!(app.sim.orders_placed(), 1);
}

/// Seed 000 §12.1: OPEN -> close -> CLOSING -> FILLED -> CLOSED, with one order at the broker.
pub async fn a_close_travels_to_the_broker_and_back_to_closed(app: &PipelineApp) {
    let cr = app.open_and_close("p-aapl", "AAPL", "10").await;
    app.driver.pump().await;
    let p = app.position("p-aapl").await;
    assert_eq!(p.body["status"], "closed", "{}", p.body);
    assert_eq!(p.body["active_close_request_id"], serde_json::Value::Null);
    assert!(p.body["closed_at"].is_string());
    let c = app.close_request(&cr).await;
    assert_eq!(c.body["status"], "completed", "{}", c.body);
    assert_eq!(
        (c.body["filled_qty"].as_str(), c.body["remaining_qty"].as_str()),
        (Some("10"), Some("0"))
    );
    let orders = c.body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0]["client_order_id"], coid(&cr, 1));
    assert_eq!(orders[0]["attempt"], 1);
    assert_eq!(orders[0]["status"], "filled");
    assert_eq!(orders[0]["qty"], "10");
    assert!(orders[0]["broker_order_id"].as_str().unwrap().starts_with("sim-"));
    assert_eq!(app.sim.orders_placed(), 1);
    assert_consistent(app, "p-aapl").await;
}

/// Seed 000 §12.5: a definitive broker rejection -> CLOSE_FAILED with the broker's reason.
pub async fn a_broker_rejection_fails_the_close_with_the_reason(app: &PipelineApp) {
    let cr = app.open_and_close("p-tsla", "TSLA", "5").await;
    app.driver.pump().await;
    assert_eq!(app.position("p-tsla").await.body["status"], "close_failed");
    let c = app.close_request(&cr).await;
    assert_eq!(c.body["status"], "failed");
    assert!(
        c.body["failure_reason"].as_str().unwrap().contains("insufficient qty"),
        "{}",
        c.body
    );
    assert_eq!(c.body["orders"], json!([]));
    assert_eq!(app.sim.orders_placed(), 0);
    assert_consistent(app, "p-tsla").await;
}

/// Seed 000 §12.6: partial fill then cancel -> CLOSE_RETRYABLE with the remainder.
pub async fn a_partial_fill_then_cancel_is_retryable(app: &PipelineApp) {
    let cr = app.open_and_close("p-msft", "MSFT", "10").await;
    app.driver.pump().await;
    assert_eq!(app.position("p-msft").await.body["status"], "close_retryable");
    let c = app.close_request(&cr).await;
    assert_eq!(c.body["status"], "retryable");
    assert_eq!(
        (c.body["filled_qty"].as_str(), c.body["remaining_qty"].as_str()),
        (Some("3"), Some("7"))
    );
    assert_eq!(c.body["orders"][0]["status"], "canceled");
    assert_consistent(app, "p-msft").await;
}

/// Seed 000 §12.7: zero fill + cancel -> back to OPEN, and the position can be closed again.
pub async fn a_zero_fill_cancel_reopens_the_position(app: &PipelineApp) {
    let cr = app.open_and_close("p-nvda", "NVDA", "4").await;
    app.driver.pump().await;
    assert_eq!(app.close_request(&cr).await.body["status"], "submitted");
    app.sim.report_order(
        &ClientOrderId::parse(&coid(&cr, 1)).unwrap(),
        OrderStatus::Canceled,
        Quantity::ZERO,
        2,
    );
    app.driver.pump().await;
    let p = app.position("p-nvda").await;
    assert_eq!(p.body["status"], "open", "{}", p.body);
    assert_eq!(p.body["active_close_request_id"], serde_json::Value::Null);
    assert_eq!(app.close_request(&cr).await.body["status"], "failed");
    assert_consistent(app, "p-nvda").await;

    let again = app
        .call(
            axum::http::Method::POST,
            "/positions/p-nvda/close",
            &[("idempotency-key", "k-2")],
            None,
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 2, "a new close request places its own order");
    assert_eq!(
        app.close_request(&again.str("close_request_id")).await.body["status"],
        "submitted"
    );
}

/// Seed 000 §12.9: out-of-order updates cannot move FILLED back to CANCELED.
pub async fn out_of_order_updates_never_regress_a_filled_close(app: &PipelineApp) {
    let cr = app.open_and_close("p-ooo", "NVDA", "2").await;
    app.driver.pump().await;
    let r = app.webhook(&update(&cr, "filled", "2", Some(5), None)).await;
    assert_eq!(
        (r.status, r.body["result"].as_str()),
        (200, Some("applied")),
        "{}",
        r.body
    );
    let stale = app.webhook(&update(&cr, "canceled", "0", Some(4), None)).await;
    assert_eq!(
        (stale.status, stale.body["result"].as_str()),
        (200, Some("ignored")),
        "{}",
        stale.body
    );
    let later = app.webhook(&update(&cr, "canceled", "0", Some(6), None)).await;
    assert_eq!(later.status, 200, "{}", later.body);
    assert_eq!(app.position("p-ooo").await.body["status"], "closed");
    let c = app.close_request(&cr).await;
    assert_eq!(
        (c.body["status"].as_str(), c.body["filled_qty"].as_str()),
        (Some("completed"), Some("2"))
    );
    assert_eq!(c.body["orders"][0]["status"], "filled");
    assert_consistent(app, "p-ooo").await;
}

pub async fn repeated_execution_ids_are_applied_once(app: &PipelineApp) {
    let cr = app.open_and_close("p-exec", "NVDA", "10").await;
    app.driver.pump().await;
    let first = app
        .webhook(&update(&cr, "partially_filled", "4", None, Some("x-1")))
        .await;
    assert_eq!(first.body["result"], "applied", "{}", first.body);
    let again = app
        .webhook(&update(&cr, "partially_filled", "4", None, Some("x-1")))
        .await;
    assert_eq!(again.body["result"], "ignored");
    assert_eq!(again.body["reason"], "DuplicateExecution");
    assert_eq!(app.close_request(&cr).await.body["filled_qty"], "4");
}

fn fill(cr: &str, status: &str, filled: &str, price: &str) -> String {
    json!({
        "client_order_id": coid(cr, 1),
        "broker_order_id": format!("brk-{cr}"),
        "status": status,
        "filled_qty": filled,
        "filled_avg_price": price,
        "updated_at": "2026-01-02T14:30:05Z",
    })
    .to_string()
}

/// Realized PnL from the entry price and the broker's fill prices, exact: per close
/// request, cumulative on the position over partial closes, with the option multiplier
/// (or the position's own), and `null` with a reason when the entry price is unknown.
pub async fn realized_pnl_is_exact_per_close_and_cumulative_over_partial_closes(app: &PipelineApp) {
    use axum::http::Method;
    let put = |id: &'static str, body: &'static str| async move {
        let r = app
            .call(Method::PUT, &format!("/positions/{id}"), &[], Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r
    };
    let close = |id: &'static str, key: &'static str, body: Option<&'static str>| async move {
        let r = app
            .call(
                Method::POST,
                &format!("/positions/{id}/close"),
                &[("idempotency-key", key)],
                body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        app.driver.pump().await;
        r.str("close_request_id")
    };
    let applied = |body: String| async move {
        let r = app.webhook(&body).await;
        assert_eq!(r.body["result"], "applied", "{}", r.body);
        app.driver.pump().await;
    };

    // Long 10 at 100: sell 4 at 101.25 (+5), then the other 6 at 99.9 (-0.6).
    let p = put(
        "p-pnl",
        r#"{"account_id":"acct-1","symbol":"NVDA","asset_type":"equity","quantity":"10","avg_entry_price":"100"}"#,
    )
    .await;
    assert_eq!(
        (p.body["realized_pnl"].as_str(), p.body["multiplier"].as_str()),
        (Some("0"), Some("1"))
    );
    let first = close("p-pnl", "k-1", Some(r#"{"qty":"4"}"#)).await;
    applied(fill(&first, "partially_filled", "1", "101")).await;
    let c = app.close_request(&first).await;
    assert_eq!(
        c.body["realized_pnl"], "1",
        "a partial fill realizes its share at once: {}",
        c.body
    );
    applied(fill(&first, "filled", "4", "101.25")).await;
    let c = app.close_request(&first).await;
    assert_eq!(
        (c.body["status"].as_str(), c.body["realized_pnl"].as_str()),
        (Some("completed"), Some("5")),
        "{}",
        c.body
    );
    let p = app.position("p-pnl").await;
    assert_eq!(
        (
            p.body["status"].as_str(),
            p.body["quantity"].as_str(),
            p.body["realized_pnl"].as_str()
        ),
        (Some("open"), Some("6"), Some("5")),
        "{}",
        p.body
    );
    let second = close("p-pnl", "k-2", None).await;
    applied(fill(&second, "filled", "6", "99.9")).await;
    assert_eq!(app.close_request(&second).await.body["realized_pnl"], "-0.6");
    let p = app.position("p-pnl").await;
    assert_eq!(
        (p.body["status"].as_str(), p.body["realized_pnl"].as_str()),
        (Some("closed"), Some("4.4")),
        "{}",
        p.body
    );
    // The first close keeps its own figure after the second began.
    assert_eq!(app.close_request(&first).await.body["realized_pnl"], "5");
    // The listing shows the same cumulative figure.
    let list = app.call(Method::GET, "/positions?account_id=acct-1", &[], None).await;
    let listed = list.body["positions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["position_id"] == "p-pnl")
        .cloned()
        .unwrap();
    assert_eq!(listed["realized_pnl"], "4.4");
    // The completed close's audit entry carries what it realized.
    let trail = app.call(Method::GET, "/positions/p-pnl/audit", &[], None).await;
    let done: Vec<_> = trail.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "close_request_changed" && e["status_after"] == "completed")
        .map(|e| e["details"]["realized_pnl"].clone())
        .collect();
    assert_eq!(done, [json!("5"), json!("-0.6")], "{}", trail.body);

    // Short 2 option contracts sold at 3.20, bought back at 1.05: (3.20 - 1.05) x 2 x 100.
    put("p-opt", r#"{"account_id":"acct-1","symbol":"AMD260116P00100000","asset_type":"option","quantity":"-2","avg_entry_price":"3.20"}"#).await;
    let cr = close("p-opt", "k-1", None).await;
    applied(fill(&cr, "filled", "2", "1.05")).await;
    let p = app.position("p-opt").await;
    assert_eq!(
        (p.body["multiplier"].as_str(), p.body["realized_pnl"].as_str()),
        (Some("100"), Some("430")),
        "{}",
        p.body
    );

    // A mini contract (multiplier 10) registered without an entry price: unknown, not 0.
    put("p-mini", r#"{"account_id":"acct-1","symbol":"AMD260116C00100000","asset_type":"option","quantity":"3","multiplier":"10"}"#).await;
    let cr = close("p-mini", "k-1", None).await;
    applied(fill(&cr, "filled", "3", "2")).await;
    let c = app.close_request(&cr).await;
    assert_eq!(
        (c.body["realized_pnl"].clone(), c.body["realized_pnl_unknown"].as_str()),
        (json!(null), Some("entry_price_unknown")),
        "{}",
        c.body
    );
    let p = app.position("p-mini").await;
    assert_eq!(
        (p.body["multiplier"].as_str(), p.body["realized_pnl_unknown"].as_str()),
        (Some("10"), Some("entry_price_unknown"))
    );
    // A multiplier must be above 0; the refusal changes nothing.
    let bad = app
        .call(
            Method::PUT,
            "/positions/p-zero",
            &[],
            Some(r#"{"account_id":"acct-1","symbol":"X","asset_type":"equity","quantity":"1","multiplier":"0"}"#),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"].as_str()),
        (400, Some("invalid_body")),
        "{}",
        bad.body
    );
    assert_eq!(app.position("p-zero").await.status, 404);
}

/// An SQS message delivered twice places one order.
pub async fn a_redelivered_queue_message_places_no_second_order(app: &PipelineApp) {
    let cr = app.open_and_close("p-redeliver", "NVDA", "3").await;
    app.driver.pump().await;
    let msg = QueueMessage::for_request(&closeflow_domain::SubmitRequest {
        position_id: closeflow_domain::PositionId::parse("p-redeliver").unwrap(),
        close_request_id: CloseRequestId::parse(&cr).unwrap(),
        attempt: 1,
    });
    let delivery = Delivery {
        message: msg,
        receipt: "redelivered".into(),
    };
    assert!(
        app.driver.handle(&delivery).await,
        "a redelivery is handled (as nothing to do)"
    );
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 1);
    assert_eq!(app.aggregate("p-redeliver").await.orders.len(), 1);
}

/// A stream record replayed (Lambda retry, relay crash) places one order.
pub async fn a_replayed_stream_record_places_no_second_order(app: &PipelineApp) {
    app.open_and_close("p-replay", "NVDA", "3").await;
    let created = app.aggregate("p-replay").await;
    app.driver.pump().await;
    relay(app.driver.producer.as_ref(), None, &created)
        .await
        .expect("relay");
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 1);
    assert_eq!(app.aggregate("p-replay").await.orders.len(), 1);
}

/// A broker that fails once where asked: the answer to the first order is lost (a timeout
/// after the broker took it: closeflow must not assume anything, must retry with the same
/// client order id, and must end with one order), or the first cancel does not get through.
pub struct LostAnswerOnce {
    inner: Arc<SimulatedBroker>,
    /// Whether the submit answer was lost already (`true`: it never will be).
    lost: AtomicBool,
    /// Whether the cancel failed already (`true`: it never will).
    cancel_failed: AtomicBool,
}

impl LostAnswerOnce {
    pub fn layer(inner: Arc<SimulatedBroker>) -> Arc<dyn Broker> {
        Arc::new(LostAnswerOnce {
            inner,
            lost: AtomicBool::new(false),
            cancel_failed: AtomicBool::new(true),
        })
    }

    /// The first cancel does not reach the broker (a connection reset).
    pub fn cancel_unreachable_once(inner: Arc<SimulatedBroker>) -> Arc<dyn Broker> {
        Arc::new(LostAnswerOnce {
            inner,
            lost: AtomicBool::new(true),
            cancel_failed: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Broker for LostAnswerOnce {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        let placed = self.inner.submit_order(intent).await;
        if !self.lost.swap(true, Ordering::SeqCst) {
            placed?;
            return Err(BrokerError::Ambiguous("timed out waiting for the broker".into()));
        }
        placed
    }
    async fn get_order_by_client_id(&self, a: &AccountId, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        self.inner.get_order_by_client_id(a, id).await
    }
    async fn cancel_order(&self, a: &AccountId, id: &str) -> Result<(), BrokerError> {
        if !self.cancel_failed.swap(true, Ordering::SeqCst) {
            return Err(BrokerError::Ambiguous("connection reset by the broker".into()));
        }
        self.inner.cancel_order(a, id).await
    }
    async fn list_positions(&self, a: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        self.inner.list_positions(a).await
    }
    async fn open_orders(
        &self,
        a: &AccountId,
        symbol: &str,
    ) -> Result<Vec<closeflow_pipeline::broker::OpenOrder>, BrokerError> {
        self.inner.open_orders(a, symbol).await
    }
    async fn account_equity(&self, a: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        self.inner.account_equity(a).await
    }
    async fn account_open_orders(
        &self,
        a: &AccountId,
    ) -> Result<Vec<closeflow_pipeline::broker::OpenOrder>, BrokerError> {
        self.inner.account_open_orders(a).await
    }
}

pub async fn an_unknown_submit_outcome_is_retried_into_exactly_one_order(backend: Backend) {
    let app = PipelineApp::with_broker(backend, "NVDA=hold", Some(Box::new(LostAnswerOnce::layer))).await;
    let cr = app.open_and_close("p-lost", "NVDA", "6").await;
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 1, "the broker has the order");
    let c = app.close_request(&cr).await;
    assert_eq!(
        c.body["status"], "pending",
        "an unknown outcome is not assumed: {}",
        c.body
    );
    assert_eq!(app.position("p-lost").await.body["status"], "closing");

    app.driver.pump().await;
    assert_eq!(
        app.sim.orders_placed(),
        1,
        "the retry found the order instead of placing another"
    );
    let c = app.close_request(&cr).await;
    assert_eq!(c.body["status"], "submitted", "{}", c.body);
    assert_eq!(c.body["orders"].as_array().unwrap().len(), 1);
    assert_consistent(&app, "p-lost").await;
}

/// A cancel that does not reach the broker answers 502 `broker_unavailable` and assumes
/// nothing: the close still works (its order rests at the broker), and the trader's
/// second cancel goes through and reopens the position.
pub async fn a_cancel_the_broker_never_heard_answers_502_and_can_be_asked_again(backend: Backend) {
    let app = PipelineApp::with_broker(
        backend,
        "AAPL=rest",
        Some(Box::new(LostAnswerOnce::cancel_unreachable_once)),
    )
    .await;
    let cr = app
        .open_and_close_with(
            "p-c502",
            "AAPL",
            "5",
            Some(r#"{"order_type":"limit","limit_price":"500"}"#),
        )
        .await;
    app.driver.pump().await;
    assert_eq!(app.close_request(&cr).await.body["status"], "submitted");
    let path = format!("/close-requests/{cr}/cancel");
    let cancel = || app.call(axum::http::Method::POST, &path, &[], Some("{}"));
    let first = cancel().await;
    assert_eq!(
        (first.status, first.str("error")),
        (502, "broker_unavailable".to_string()),
        "{}",
        first.body
    );
    app.driver.pump().await;
    assert_eq!(
        app.position("p-c502").await.body["status"],
        "closing",
        "nothing assumed"
    );
    assert_eq!(app.close_request(&cr).await.body["status"], "submitted");
    let second = cancel().await;
    assert_eq!(second.status, 202, "{}", second.body);
    app.driver.pump().await;
    assert_eq!(app.position("p-c502").await.body["status"], "open");
    assert_consistent(&app, "p-c502").await;
}

pub async fn webhooks_with_bad_signatures_or_bodies_change_nothing(app: &PipelineApp) {
    let cr = app.open_and_close("p-sig", "NVDA", "2").await;
    app.driver.pump().await;
    let before = app.position("p-sig").await.body;
    let body = update(&cr, "filled", "2", Some(9), None);
    let now = closeflow_api::Clock::now(app.clock.as_ref()).timestamp();
    let post = |headers: Vec<(String, String)>, body: String| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        app.call(axum::http::Method::POST, "/webhooks/broker", &h, Some(&body))
            .await
    };
    let sig = |secret: &[u8], t: i64| vec![("x-closeflow-signature".to_string(), sign(secret, t, body.as_bytes()))];
    for (headers, why) in [
        (vec![], "missing"),
        (sig(b"wrong-secret", now), "wrong secret"),
        (sig(SECRET, now - 301), "older than 300 s"),
        (
            vec![("x-closeflow-signature".to_string(), "t=1,v1=zz".to_string())],
            "malformed",
        ),
    ] {
        let r = post(headers, body.clone()).await;
        assert_eq!(r.status, 401, "{why}: {}", r.body);
        assert_eq!(r.body["error"], "invalid_signature");
    }
    let tampered = post(sig(SECRET, now), body.replace("\"2\"", "\"1\"")).await;
    assert_eq!(tampered.status, 401, "a body that is not the signed one is refused");
    assert_eq!(
        app.position("p-sig").await.body,
        before,
        "refused webhooks change nothing"
    );

    let malformed = app.webhook(r#"{"client_order_id": 5}"#).await;
    assert_eq!(
        (malformed.status, malformed.body["error"].as_str()),
        (400, Some("invalid_body"))
    );
    let unknown_cr = CloseRequestId::new(&closeflow_domain::PositionId::parse("p-sig").unwrap(), [7; 16]);
    let unknown = app
        .webhook(&update(&unknown_cr.to_string(), "filled", "2", None, None))
        .await;
    assert_eq!(
        (unknown.status, unknown.body["result"].as_str()),
        (202, Some("unknown_order"))
    );
    let foreign = app
        .webhook(&update(&cr, "filled", "2", None, None).replace(&coid(&cr, 1), "not-ours-1"))
        .await;
    assert_eq!(foreign.status, 202);
    assert_eq!(app.position("p-sig").await.body, before);
}

/// Generates one test per pipeline scenario for a backend; the list lives here once.
#[macro_export]
macro_rules! pipeline_tests {
    ($backend:expr) => {
        $crate::pipeline_tests!(@each $backend;
            a_close_travels_to_the_broker_and_back_to_closed: "",
            a_broker_rejection_fails_the_close_with_the_reason: "TSLA=reject",
            a_partial_fill_then_cancel_is_retryable: "MSFT=partial:3",
            a_zero_fill_cancel_reopens_the_position: "NVDA=hold",
            out_of_order_updates_never_regress_a_filled_close: "NVDA=hold",
            repeated_execution_ids_are_applied_once: "NVDA=hold",
            a_redelivered_queue_message_places_no_second_order: "NVDA=hold",
            a_replayed_stream_record_places_no_second_order: "NVDA=hold",
            webhooks_with_bad_signatures_or_bodies_change_nothing: "NVDA=hold",
            a_fill_the_broker_never_reports_is_found_by_the_order_watch_in_seconds: "NVDA=hold",
            the_order_watch_backs_off_then_hands_over_to_the_reconciler: "NVDA=hold",
            every_change_of_a_close_is_audited_once_with_who_and_why: "",
            realized_pnl_is_exact_per_close_and_cumulative_over_partial_closes: "NVDA=hold,AMD260116P00100000=hold,AMD260116C00100000=hold",
        );
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bulk_close_isolates_failures_totals_them_and_retries_only_those() {
            let app = $crate::pipeline::PipelineApp::new($backend, $crate::bulk_scenarios::BULK_SCENARIOS).await;
            $crate::bulk_scenarios::a_bulk_close_isolates_failures_totals_them_and_retries_only_those(&app).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_emergency_liquidation_flattens_the_account_and_halts_it() {
            let app = $crate::pipeline::PipelineApp::new($backend, $crate::bulk_scenarios::LIQUIDATION_SCENARIOS).await;
            $crate::bulk_scenarios::an_emergency_liquidation_flattens_the_account_and_halts_it(&app).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_guard_event_closes_what_it_scopes_once() {
            let app = $crate::pipeline::PipelineApp::new($backend, "").await;
            $crate::bulk_scenarios::a_guard_event_closes_what_it_scopes_once(&app).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_drawdown_guard_warns_once_and_liquidates_once() {
            let app = $crate::pipeline::PipelineApp::new($backend, "").await;
            $crate::bulk_scenarios::the_drawdown_guard_warns_once_and_liquidates_once(&app).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bulk_close_requests_are_validated_scoped_and_filtered() {
            let app = $crate::pipeline::PipelineApp::new($backend, "").await;
            $crate::bulk_scenarios::bulk_close_requests_are_validated_scoped_and_filtered(&app).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_unknown_submit_outcome_is_retried_into_exactly_one_order() {
            $crate::pipeline_scenarios::an_unknown_submit_outcome_is_retried_into_exactly_one_order($backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_cancel_the_broker_never_heard_answers_502_and_can_be_asked_again() {
            $crate::pipeline_scenarios::a_cancel_the_broker_never_heard_answers_502_and_can_be_asked_again($backend).await;
        }
    };
    (@each $backend:expr; $($name:ident: $scenarios:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::pipeline::PipelineApp::new($backend, $scenarios).await;
                $crate::pipeline_scenarios::$name(&app).await;
            }
        )*
    };
}
