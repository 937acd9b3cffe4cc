//! Scenario bodies, each run against every backend (see `scenario_tests!`). Seed 000 §12
//! scenarios 1-4 as far as the close API reaches, plus the API's error contract.

use axum::http::Method;
use closeflow_domain::{
    check_invariants, AccountId, AssetType, CloseRequest, CloseRequestId, CloseRequestStatus, IdempotencyKey, Position,
    PositionAggregate, PositionId, PositionStatus, Quantity,
};
use serde_json::{json, Value};

use crate::{call, start_time, Reply, TestApp};

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}, got {}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {}",
        r.body
    );
}

async fn snapshot(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/positions/{id}")).await.body
}

/// Seed 000 §12.1 (the part this API reaches): OPEN -> close request -> CLOSING.
pub async fn open_position_closes_into_a_pending_request(app: &TestApp) {
    app.open_position("pos-1", "10").await;
    let r = app.close("pos-1", "key-1").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("close_request_id");
    assert_eq!(
        r.body,
        json!({
            "close_request_id": id,
            "position_id": "pos-1",
            "position_status": "closing",
            "close_request_status": "pending",
            "target_qty": "10",
            "filled_qty": "0",
            "orders": [],
            "partial": false,
            "poll_url": format!("/close-requests/{id}"),
            "poll_interval_ms": 1000,
        })
    );

    let p = app.get("/positions/pos-1").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.body["status"], "closing");
    assert_eq!(p.body["active_close_request_id"], id.as_str());
    assert_eq!(p.body["closed_at"], Value::Null);
    assert_eq!(p.body["quantity"], "10");

    let cr = app.get(&r.str("poll_url")).await;
    assert_eq!(cr.status, 200, "{}", cr.body);
    assert_eq!(
        cr.body,
        json!({
            "close_request_id": id,
            "position_id": "pos-1",
            "status": "pending",
            "target_qty": "10",
            "filled_qty": "0",
            "remaining_qty": "10",
            "retry_count": 0,
            "max_retries": 3,
            "reason": null,
            "created_at": "2026-01-02T14:30:00.000Z",
            "submitted_at": null,
            "completed_at": null,
            "failure_reason": null,
            "orders": [],
            "waiting_on_broker": null,
            "position_qty": "10",
            "partial": false,
            "order_type": "market",
            "limit_price": null,
            "time_in_force": "day",
            "extended_hours": false,
            "cancel_requested_at": null,
            "manual_retries": 0,
            "realized_pnl": "0",
            "realized_pnl_unknown": null,
        })
    );
}

/// Seed 000 §12.2: the same key returns the same close request and writes nothing.
pub async fn same_key_replays_the_same_close_request(app: &TestApp) {
    app.open_position("pos-r", "3").await;
    let first = app.close("pos-r", "key-r").await;
    assert_eq!(first.status, 201);
    let before = snapshot(app, "pos-r").await;
    app.clock.advance(chrono::TimeDelta::seconds(5));

    let replay = app.close("pos-r", "key-r").await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body, first.body, "a replay answers with the same close request");
    // An explicit `{}` is the same request as an empty body.
    let replay2 = app.close_with("pos-r", "key-r", Some(" { } ")).await;
    assert_eq!(replay2.status, 200, "{}", replay2.body);
    assert_eq!(replay2.str("close_request_id"), first.str("close_request_id"));

    assert_eq!(snapshot(app, "pos-r").await, before, "a replay must not write");
    assert_eq!(app.stored_idempotency_keys("pos-r").await, ["key-r"]);
}

/// Seed 000 §12.3: a different key while CLOSING -> 409 naming the active request.
pub async fn different_key_while_closing_is_rejected_with_409(app: &TestApp) {
    app.open_position("pos-c", "4").await;
    let first = app.close("pos-c", "key-a").await;
    assert_eq!(first.status, 201);
    let before = snapshot(app, "pos-c").await;

    let second = app.close("pos-c", "key-b").await;
    assert_error(&second, 409, "position_already_closing");
    assert_eq!(second.body["active_close_request_id"], first.body["close_request_id"]);
    assert_eq!(snapshot(app, "pos-c").await, before);
    assert_eq!(app.stored_idempotency_keys("pos-c").await, ["key-a"]);
}

/// Seed 000 §12.4: a busy position -> 409 with a retry hint; the key is not consumed.
pub async fn busy_position_answers_409_with_a_retry_hint_and_changes_nothing(app: &TestApp) {
    app.open_position("pos-busy", "2").await;
    let before = snapshot(app, "pos-busy").await;
    app.inject_contention(1);

    let r = app.close("pos-busy", "key-busy").await;
    assert_error(&r, 409, "position_locked");
    assert_eq!(r.body["retry_after_ms"], 1000);
    assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    assert_eq!(snapshot(app, "pos-busy").await, before);
    assert!(app.stored_idempotency_keys("pos-busy").await.is_empty());

    let retry = app.close("pos-busy", "key-busy").await;
    assert_eq!(
        retry.status, 201,
        "the retry after the hint goes through: {}",
        retry.body
    );
}

pub async fn unknown_ids_answer_404(app: &TestApp) {
    assert_error(&app.close("ghost", "k").await, 404, "position_not_found");
    assert_error(&app.get("/positions/ghost").await, 404, "position_not_found");
    let well_formed = CloseRequestId::new(&PositionId::parse("ghost").unwrap(), [3; 16]);
    assert_error(
        &app.get(&format!("/close-requests/{well_formed}")).await,
        404,
        "close_request_not_found",
    );
    assert_error(
        &app.get("/close-requests/not-a-uuid").await,
        400,
        "invalid_close_request_id",
    );
    assert_error(&app.get("/no/such/route").await, 404, "route_not_found");
    assert_error(
        &app.call(Method::DELETE, "/positions/ghost", &[], None).await,
        405,
        "method_not_allowed",
    );
    // Nothing was created along the way.
    assert_error(&app.get("/positions/ghost").await, 404, "position_not_found");
}

pub async fn zero_quantity_position_is_refused(app: &TestApp) {
    app.open_position("pos-zero", "0").await;
    let before = snapshot(app, "pos-zero").await;
    assert_error(&app.close("pos-zero", "k").await, 400, "zero_quantity");
    assert_eq!(snapshot(app, "pos-zero").await, before);
    assert!(app.stored_idempotency_keys("pos-zero").await.is_empty());
}

fn fixture(id: &str, status: PositionStatus, cr_status: CloseRequestStatus) -> PositionAggregate {
    let pid = PositionId::parse(id).unwrap();
    let cr = CloseRequest {
        id: CloseRequestId::new(&pid, [5; 16]),
        position_id: pid.clone(),
        idempotency_key: IdempotencyKey::parse("earlier-key").unwrap(),
        status: cr_status,
        target_qty: Quantity::from(5),
        filled_qty: if cr_status == CloseRequestStatus::Completed {
            Quantity::from(5)
        } else if cr_status == CloseRequestStatus::Retryable {
            Quantity::from(2)
        } else {
            Quantity::ZERO
        },
        retry_count: 0,
        max_retries: 3,
        reason: None,
        cancel_open_orders: false,
        failure_reason: None,
        redrives: 0,
        created_at: start_time(),
        submitted_at: Some(start_time()),
        completed_at: cr_status.is_terminal().then(start_time),
        updated_at: start_time(),
        position_qty: Quantity::from(5),
        options: closeflow_domain::OrderOptions::MARKET,
        cancel_requested_at: None,
        manual_retries: 0,
        strategy_close: None,
    };
    let position = Position {
        id: pid,
        account_id: AccountId::parse("acct-1").unwrap(),
        symbol: "MSFT".into(),
        asset_type: AssetType::Equity,
        quantity: Quantity::from(5),
        avg_entry_price: None,
        strategy_id: None,
        status,
        active_close_request_id: (status == PositionStatus::CloseRetryable).then_some(cr.id),
        closed_at: (status == PositionStatus::Closed).then(start_time),
        created_at: start_time(),
        updated_at: start_time(),
        version: 4,
        source: None,
        sync: None,
        multiplier: None,
        realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
    };
    let mut agg = PositionAggregate::new(position);
    agg.idempotency.insert(
        cr.idempotency_key.clone(),
        closeflow_domain::IdempotencyRecord {
            close_request_id: cr.id,
            fingerprint: closeflow_domain::Fingerprint::of_body(&json!({})),
            created_at: start_time(),
        },
    );
    agg.latest_close_request = Some(cr);
    assert!(
        check_invariants(&agg.position, agg.latest_close_request.as_ref()).is_empty(),
        "fixtures must be consistent states"
    );
    agg
}

pub async fn closed_and_failed_positions_are_refused_as_invalid_state(app: &TestApp) {
    let cases = [
        ("pos-closed", PositionStatus::Closed, CloseRequestStatus::Completed),
        ("pos-failed", PositionStatus::CloseFailed, CloseRequestStatus::Failed),
        (
            "pos-retry",
            PositionStatus::CloseRetryable,
            CloseRequestStatus::Retryable,
        ),
    ];
    for (id, status, cr_status) in cases {
        app.seed(fixture(id, status, cr_status)).await;
        let before = snapshot(app, id).await;
        assert_eq!(before["status"], status.as_str());
        let r = app.close(id, "new-key").await;
        assert_error(&r, 400, "invalid_state");
        assert_eq!(r.body["position_status"], status.as_str());
        assert_eq!(snapshot(app, id).await, before);
        assert_eq!(app.stored_idempotency_keys(id).await, ["earlier-key"]);
        // The earlier key still replays its (finished) close request.
        let replay = app.close(id, "earlier-key").await;
        assert_eq!(replay.status, 200, "{}", replay.body);
        assert_eq!(replay.body["close_request_status"], cr_status.as_str());
        assert_eq!(replay.body["position_status"], status.as_str());
    }
}

pub async fn bad_idempotency_keys_are_refused_before_any_write(app: &TestApp) {
    app.open_position("pos-keys", "1").await;
    let before = snapshot(app, "pos-keys").await;
    let missing = app.call(Method::POST, "/positions/pos-keys/close", &[], None).await;
    assert_error(&missing, 400, "missing_idempotency_key");
    let too_long = "k".repeat(256);
    for bad in ["", too_long.as_str(), "caf\u{e9}", "tab\there"] {
        let r = app.close("pos-keys", bad).await;
        assert_error(&r, 400, "invalid_idempotency_key");
    }
    assert_eq!(snapshot(app, "pos-keys").await, before);
    let longest = "k".repeat(255);
    assert_eq!(app.close("pos-keys", &longest).await.status, 201);
}

pub async fn malformed_or_unsupported_close_bodies_are_refused(app: &TestApp) {
    app.open_position("pos-body", "1").await;
    let before = snapshot(app, "pos-body").await;
    for body in [
        "{not json",
        "[]",
        "\"x\"",
        r#"{"quantity":"1"}"#,
        r#"{"qty":"one"}"#,
        r#"{"order_type":"stop"}"#,
        r#"{"reason":5}"#,
        r#"{"reason":""}"#,
    ] {
        let r = app.close_with("pos-body", "key-body", Some(body)).await;
        assert_error(&r, 400, "invalid_body");
    }
    assert_eq!(snapshot(app, "pos-body").await, before);
    assert!(app.stored_idempotency_keys("pos-body").await.is_empty());
    // The key was never consumed by the refused attempts.
    assert_eq!(app.close("pos-body", "key-body").await.status, 201);
}

pub async fn same_key_with_a_different_body_is_refused_with_422(app: &TestApp) {
    app.open_position("pos-422", "6").await;
    let first = app
        .close_with("pos-422", "key-422", Some(r#"{"reason":"manual"}"#))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let before = snapshot(app, "pos-422").await;

    let other = app
        .close_with("pos-422", "key-422", Some(r#"{"reason":"drawdown_guard"}"#))
        .await;
    assert_error(&other, 422, "idempotency_key_reused");
    let empty = app.close("pos-422", "key-422").await;
    assert_error(&empty, 422, "idempotency_key_reused");
    assert_eq!(snapshot(app, "pos-422").await, before);

    let same = app
        .close_with("pos-422", "key-422", Some(r#"{ "reason" : "manual" }"#))
        .await;
    assert_eq!(same.status, 200, "{}", same.body);
    let cr = app.get(&first.str("poll_url")).await;
    assert_eq!(cr.body["reason"], "manual");
}

pub async fn position_registration_creates_updates_and_guards_closing_positions(app: &TestApp) {
    let body = |qty: &str| {
        format!(
            r#"{{"account_id":"acct-9","symbol":"SPY","asset_type":"equity","quantity":{qty},"avg_entry_price":"512.25","strategy_id":"s-1"}}"#
        )
    };
    let created = app.put_position("pos-reg", &body("10")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body,
        json!({
            "position_id": "pos-reg",
            "account_id": "acct-9",
            "symbol": "SPY",
            "asset_type": "equity",
            "quantity": "10",
            "closed_quantity": null,
            "avg_entry_price": "512.25",
            "strategy_id": "s-1",
            "status": "open",
            "active_close_request_id": null,
            "closed_at": null,
            "created_at": "2026-01-02T14:30:00.000Z",
            "updated_at": "2026-01-02T14:30:00.000Z",
            "source": "api",
            "sync_status": "unchecked",
            "last_synced_at": null,
            "sync_our_quantity": null,
            "sync_broker_quantity": null,
            "sync_broker_avg_entry_price": null,
            "multiplier": "1",
            "realized_pnl": "0",
            "realized_pnl_unknown": null,
        })
    );
    app.clock.advance(chrono::TimeDelta::seconds(1));
    let same = app.put_position("pos-reg", &body("10")).await;
    assert_eq!(same.status, 200);
    assert_eq!(same.body, created.body, "an identical PUT changes nothing");

    let updated = app.put_position("pos-reg", &body("\"12.5\"")).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["quantity"], "12.5");
    assert_eq!(updated.body["updated_at"], "2026-01-02T14:30:01.000Z");
    assert_eq!(updated.body["created_at"], "2026-01-02T14:30:00.000Z");

    let close = app.close("pos-reg", "k").await;
    assert_eq!(close.body["target_qty"], "12.5");
    let before = snapshot(app, "pos-reg").await;
    let refused = app.put_position("pos-reg", &body("5")).await;
    assert_error(&refused, 409, "position_not_open");
    assert_eq!(refused.body["position_status"], "closing");
    assert_eq!(snapshot(app, "pos-reg").await, before);
    let resend = app.put_position("pos-reg", &body("12.5")).await;
    assert_eq!(
        resend.status, 200,
        "re-sending the stored data is harmless: {}",
        resend.body
    );
    assert_eq!(resend.body, before);
}

pub async fn invalid_position_bodies_are_refused_and_change_nothing(app: &TestApp) {
    let bad_bodies = [
        "",
        "{oops",
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity"}"#,
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"crypto","quantity":1}"#,
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity","quantity":"ten"}"#,
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity","quantity":true}"#,
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity","quantity":1,"qty":1}"#,
        r#"{"account_id":"","symbol":"AAPL","asset_type":"equity","quantity":1}"#,
        r#"{"account_id":"a","symbol":"","asset_type":"equity","quantity":1}"#,
        r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity","quantity":1,"avg_entry_price":"-1"}"#,
    ];
    for body in bad_bodies {
        let r = app.put_position("pos-bad", body).await;
        assert_error(&r, 400, "invalid_body");
    }
    assert_error(&app.get("/positions/pos-bad").await, 404, "position_not_found");
    let r = app
        .put_position(
            "bad%20id",
            r#"{"account_id":"a","symbol":"AAPL","asset_type":"equity","quantity":1}"#,
        )
        .await;
    assert_error(&r, 400, "invalid_position_id");

    app.open_position("pos-bad", "3").await;
    let before = snapshot(app, "pos-bad").await;
    for body in bad_bodies {
        assert_error(&app.put_position("pos-bad", body).await, 400, "invalid_body");
    }
    assert_eq!(snapshot(app, "pos-bad").await, before);
}

pub async fn short_fractional_positions_close_for_their_exact_absolute_quantity(app: &TestApp) {
    let r = app
        .put_position(
            "pos-short",
            r#"{"account_id":"acct-1","symbol":"AAPL240119C00150000","asset_type":"option","quantity":"-2.5"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["quantity"], "-2.5");
    let close = app.close("pos-short", "k").await;
    assert_eq!(close.body["target_qty"], "2.5");
    let cr = app.get(&close.str("poll_url")).await;
    assert_eq!(cr.body["remaining_qty"], "2.5");

    // A JSON number keeps its exact decimal text (no trip through f64).
    let r = app.open_position("pos-tenth", "0.1").await;
    assert_eq!(r.body["quantity"], "0.1");
    let r = app.open_position("pos-long-decimal", "1234567890.123456789").await;
    assert_eq!(r.body["quantity"], "1234567890.123456789");
}

async fn concurrent_closes(app: &TestApp, id: &str, key_of: impl Fn(usize) -> String) -> Vec<Reply> {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let router = app.router.clone();
            let path = format!("/positions/{id}/close");
            let key = key_of(i);
            tokio::spawn(async move { call(&router, Method::POST, &path, &[("idempotency-key", &key)], None).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

pub async fn thirty_two_concurrent_closes_with_distinct_keys_create_exactly_one(app: &TestApp) {
    app.open_position("pos-race", "100").await;
    let replies = concurrent_closes(app, "pos-race", |i| format!("key-{i}")).await;
    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one close wins: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let winner = created[0].str("close_request_id");
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_error(r, 409, "position_already_closing");
        assert_eq!(r.str("active_close_request_id"), winner);
    }
    assert_eq!(
        app.stored_idempotency_keys("pos-race").await.len(),
        1,
        "one close request stored"
    );
    let p = app.get("/positions/pos-race").await;
    assert_eq!(p.str("active_close_request_id"), winner);
}

pub async fn thirty_two_concurrent_closes_with_one_key_share_one_close_request(app: &TestApp) {
    app.open_position("pos-same", "100").await;
    let replies = concurrent_closes(app, "pos-same", |_| "the-key".to_string()).await;
    let ids: std::collections::BTreeSet<_> = replies.iter().map(|r| r.str("close_request_id")).collect();
    assert_eq!(ids.len(), 1, "every answer names the same close request");
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1);
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 31);
    assert_eq!(app.stored_idempotency_keys("pos-same").await, ["the-key"]);
}

pub async fn close_request_ids_route_to_their_own_position_only(app: &TestApp) {
    app.open_position("pos-a", "1").await;
    app.open_position("pos-b", "2").await;
    let a = app.close("pos-a", "same-key").await;
    let b = app.close("pos-b", "same-key").await;
    assert_eq!((a.status, b.status), (201, 201), "keys are scoped to their position");
    assert_ne!(a.str("close_request_id"), b.str("close_request_id"));
    assert_eq!(app.get(&a.str("poll_url")).await.body["position_id"], "pos-a");
    assert_eq!(app.get(&b.str("poll_url")).await.body["target_qty"], "2");
    let sibling = CloseRequestId::new(&PositionId::parse("pos-a").unwrap(), [0xab; 16]);
    assert_error(
        &app.get(&format!("/close-requests/{sibling}")).await,
        404,
        "close_request_not_found",
    );
}

/// Every route but the broker webhook needs a caller; refused requests change nothing.
pub async fn callers_without_credentials_are_refused_with_401(app: &TestApp) {
    app.open_position("pos-auth", "3").await;
    let before = snapshot(app, "pos-auth").await;
    let body = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":7}"#;
    for auth in ["", "Bearer not-a-token", "Basic abc"] {
        let h = [("authorization", auth), ("idempotency-key", "k-auth")];
        let calls = [
            app.call(Method::GET, "/positions/pos-auth", &h, None).await,
            app.call(Method::PUT, "/positions/pos-auth", &h, Some(body)).await,
            app.call(Method::POST, "/positions/pos-auth/close", &h, None).await,
        ];
        for r in calls {
            assert_error(&r, 401, "unauthorized");
        }
    }
    assert_eq!(snapshot(app, "pos-auth").await, before);
    assert!(app.stored_idempotency_keys("pos-auth").await.is_empty());
}

/// A caller may act only on its own accounts (API_TOKENS / the JWT `accounts` claim), and
/// another account's ids answer exactly like unknown ones, so they cannot be probed.
pub async fn callers_may_act_only_on_their_accounts(app: &TestApp) {
    // acct-1's position, closed by its owner.
    app.open_position("pos-owner", "4").await;
    let owner_close = app.close("pos-owner", "owner-key").await;
    let before = snapshot(app, "pos-owner").await;

    let as_acct2 = |method: Method, path: String, key: &'static str| async move {
        app.call_as(crate::TOKEN_ACCT2, method, &path, key, None).await
    };
    let foreign = as_acct2(Method::GET, "/positions/pos-owner".into(), "k").await;
    let unknown = as_acct2(Method::GET, "/positions/pos-nobody".into(), "k").await;
    assert_error(&foreign, 404, "position_not_found");
    assert_eq!(foreign.body, unknown.body, "another account's position looks missing");
    assert_error(
        &as_acct2(Method::POST, "/positions/pos-owner/close".into(), "k2").await,
        404,
        "position_not_found",
    );
    // Not even a replay of the owner's key reveals the owner's close request.
    assert_error(
        &as_acct2(Method::POST, "/positions/pos-owner/close".into(), "owner-key").await,
        404,
        "position_not_found",
    );
    let foreign_cr = as_acct2(Method::GET, owner_close.str("poll_url"), "k").await;
    assert_error(&foreign_cr, 404, "close_request_not_found");
    let sibling = CloseRequestId::new(&PositionId::parse("pos-owner").unwrap(), [0xcd; 16]);
    let unknown_cr = as_acct2(Method::GET, format!("/close-requests/{sibling}"), "k").await;
    assert_eq!(
        foreign_cr.body, unknown_cr.body,
        "another account's close request looks missing"
    );
    // A write to an id another account holds cannot pretend the id is free: 409, naming
    // no account.
    let takeover = r#"{"account_id":"acct-2","symbol":"AAPL","asset_type":"equity","quantity":4}"#;
    let taken = app
        .call_as(
            crate::TOKEN_ACCT2,
            Method::PUT,
            "/positions/pos-owner",
            "k",
            Some(takeover),
        )
        .await;
    assert_error(&taken, 409, "position_id_unavailable");
    assert!(!taken.body.to_string().contains("acct-1"), "{}", taken.body);
    // Asking for an account the caller does not hold is the caller's own business: 403.
    let foreign = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":4}"#;
    assert_error(
        &app.call_as(
            crate::TOKEN_ACCT2,
            Method::PUT,
            "/positions/pos-new",
            "k",
            Some(foreign),
        )
        .await,
        403,
        "forbidden",
    );
    assert_eq!(snapshot(app, "pos-owner").await, before);
    assert_eq!(app.stored_idempotency_keys("pos-owner").await, ["owner-key"]);
    assert_error(&app.get("/positions/pos-new").await, 404, "position_not_found");

    // Its own account works end to end.
    let mine = r#"{"account_id":"acct-2","symbol":"TSLA","asset_type":"equity","quantity":2}"#;
    assert_eq!(
        app.call_as(crate::TOKEN_ACCT2, Method::PUT, "/positions/pos-mine", "k", Some(mine))
            .await
            .status,
        201
    );
    let close = app
        .call_as(
            crate::TOKEN_ACCT2,
            Method::POST,
            "/positions/pos-mine/close",
            "k3",
            None,
        )
        .await;
    assert_eq!(close.status, 201, "{}", close.body);
    assert_eq!(
        app.call_as(crate::TOKEN_ACCT2, Method::GET, &close.str("poll_url"), "k", None)
            .await
            .status,
        200
    );
}

/// The account's trading state through the API: while it liquidates or is halted, a
/// registration that adds exposure is 409 `account_halted` (nothing written) and one that
/// reduces it goes through; closes go on; resume is refused mid-liquidation, then works.
pub async fn a_halted_account_refuses_new_exposure_and_resumes(app: &TestApp) {
    use closeflow_domain::TradingStateEvent as E;
    let body =
        |qty: &str| format!(r#"{{"account_id":"acct-1","symbol":"SPY","asset_type":"equity","quantity":{qty}}}"#);
    assert_eq!(app.put_position("h-1", &body("10")).await.status, 201);
    let a = app.get("/accounts/acct-1").await;
    assert_eq!(
        (
            a.status,
            a.body["trading_state"].as_str(),
            a.body["live_positions"].as_i64()
        ),
        (200, Some("active"), Some(1)),
        "{}",
        a.body
    );
    app.set_trading_state("acct-1", E::LiquidationStarted).await;
    let refused = app.put_position("h-2", &body("1")).await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (409, Some("account_halted")),
        "{}",
        refused.body
    );
    assert_eq!(refused.body["trading_state"], "liquidating");
    assert_eq!(app.get("/positions/h-2").await.status, 404, "nothing written");
    assert_eq!(
        app.put_position("h-1", &body("11")).await.body["error"],
        "account_halted"
    );
    assert_eq!(
        app.put_position("h-1", &body("8")).await.status,
        200,
        "reducing is allowed"
    );
    assert_eq!(app.close("h-1", "k-1").await.status, 201, "closes go on");
    let early = app.call(Method::POST, "/accounts/acct-1/resume", &[], None).await;
    assert_eq!(
        (early.status, early.body["error"].as_str()),
        (409, Some("liquidation_in_progress")),
        "{}",
        early.body
    );
    app.set_trading_state("acct-1", E::LiquidationEnded).await;
    let a = app.get("/accounts/acct-1").await;
    assert_eq!(
        (
            a.body["trading_state"].as_str(),
            a.body["trading_state_changed_by"].as_str()
        ),
        (Some("halted"), Some("tester"))
    );
    let resumed = app.call(Method::POST, "/accounts/acct-1/resume", &[], None).await;
    assert_eq!(
        (resumed.status, resumed.body["trading_state"].as_str()),
        (200, Some("active")),
        "{}",
        resumed.body
    );
    assert_eq!(
        resumed.body["trading_state_changed_by"], "ops",
        "the token holder resumed it"
    );
    assert_eq!(app.put_position("h-2", &body("1")).await.status, 201);
    let bearer = format!("Bearer {}", crate::TOKEN_ACCT2);
    let other = app
        .call(Method::GET, "/accounts/acct-1", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (403, Some("forbidden")),
        "{}",
        other.body
    );
    let other = app
        .call(
            Method::POST,
            "/accounts/acct-1/resume",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(other.status, 403, "{}", other.body);
}
