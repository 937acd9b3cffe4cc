//! Bulk close through the whole pipeline (API, job steps on the order queue, submitter,
//! simulated broker), on every backend: per-position isolation, totals, a replay that
//! closes nothing twice, and a retry of only the failed rows.

use axum::http::Method;
use closeflow_domain::PositionStatus;

use crate::pipeline::PipelineApp;
use crate::TOKEN_ACCT2;

/// Sim scenarios of [`a_bulk_close_isolates_failures_totals_them_and_retries_only_those`].
pub const BULK_SCENARIOS: &str = "TSLA=reject_first,NVDA=hold";

async fn put(app: &PipelineApp, id: &str, body: String) {
    let r = app
        .call(Method::PUT, &format!("/positions/{id}"), &[], Some(&body))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

fn equity(symbol: &str, qty: &str) -> String {
    format!(
        r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":"{qty}","avg_entry_price":"90"}}"#
    )
}

/// 50 positions of one account: 42 that fill, a 2-leg strategy (closed as one strategy
/// close), 3 the broker refuses once, 2 already closing under their own requests and 1
/// that failed before. The bulk close opens one close per closable position, reports
/// every other one as a row with its reason, and totals them; a replay of the same
/// request places no order; a retry re-drives only the failed rows.
pub async fn a_bulk_close_isolates_failures_totals_them_and_retries_only_those(app: &PipelineApp) {
    for i in 0..42 {
        put(app, &format!("b-{i:02}"), equity(&format!("S{i:02}"), "1")).await;
    }
    for (id, symbol, qty) in [
        ("b-ic-long", "AMD260116C00100000", "1"),
        ("b-ic-short", "AMD260116C00110000", "-1"),
    ] {
        put(
            app,
            id,
            format!(
                r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"option","quantity":"{qty}","avg_entry_price":"90","strategy_id":"ic-b"}}"#
            ),
        )
        .await;
    }
    for i in 0..3 {
        put(app, &format!("b-tsla-{i}"), equity("TSLA", "1")).await;
    }
    for i in 0..2 {
        let id = format!("b-busy-{i}");
        put(app, &id, equity("NVDA", "1")).await;
        let r = app
            .call(
                Method::POST,
                &format!("/positions/{id}/close"),
                &[("idempotency-key", "own")],
                None,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    app.seed(crate::builders::aggregate("b-failed", "1", PositionStatus::CloseFailed))
        .await;
    app.driver.pump().await;
    let (orders_before, mleg_before) = (app.sim.orders_placed(), app.sim.mleg_orders_placed());

    let key = [("idempotency-key", "eod-1")];
    let body = r#"{"reason":"end of day"}"#;
    let r = app
        .call(Method::POST, "/accounts/acct-1/close-all", &key, Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.str("bulk_close_id");
    assert_eq!(
        r.body["status"], "running",
        "the fan-out runs in the pipeline: {}",
        r.body
    );
    assert_eq!(r.str("poll_url"), format!("/bulk-closes/{id}"));
    app.driver.pump().await;

    let b = app.call(Method::GET, &format!("/bulk-closes/{id}"), &[], None).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let counts = |b: &crate::Reply| {
        (
            b.body["status"].as_str().unwrap().to_string(),
            b.body["total"].as_u64().unwrap(),
            b.body["succeeded"].as_u64().unwrap(),
            b.body["failed"].as_u64().unwrap(),
            b.body["skipped"].as_u64().unwrap(),
            b.body["pending"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        counts(&b),
        ("completed_with_errors".into(), 50, 44, 4, 2, 0),
        "{}",
        b.body
    );
    // 42 shares at +10 each; the strategy's long and short legs cancel out (±1,000).
    assert_eq!(b.body["total_realized_pnl"], "420", "{}", b.body);
    let rows = b.body["rows"].as_array().unwrap();
    let row = |pid: &str| rows.iter().find(|r| r["position_id"] == pid).unwrap().clone();
    assert_eq!(row("b-busy-0")["status"], "skipped");
    assert_eq!(row("b-busy-0")["message"], "already_closing");
    assert_eq!(
        (row("b-failed")["status"].as_str(), row("b-failed")["error"].as_str()),
        (Some("failed"), Some("invalid_state"))
    );
    let tsla = row("b-tsla-1");
    assert_eq!(
        (tsla["status"].as_str(), tsla["error"].as_str()),
        (Some("failed"), Some("close_failed"))
    );
    assert!(tsla["close_request_id"].is_string());
    let leg = row("b-ic-short");
    assert_eq!(
        (leg["status"].as_str(), leg["strategy_id"].as_str()),
        (Some("succeeded"), Some("ic-b"))
    );
    assert_eq!(leg["realized_pnl"], "-1000");
    assert_eq!(row("b-07")["realized_pnl"], "10");
    // Every closable position got exactly one order: 42 shares and the two legs of one
    // multi-leg order (the broker refused the 3 TSLA orders: not placed).
    assert_eq!(app.sim.orders_placed() - orders_before, 44);
    assert_eq!(app.sim.mleg_orders_placed() - mleg_before, 1);
    for pid in ["b-00", "b-41", "b-ic-long"] {
        assert_eq!(app.position(pid).await.body["status"], "closed", "{pid}");
    }

    // The same request again: the same bulk close, nothing placed twice.
    let again = app
        .call(Method::POST, "/accounts/acct-1/close-all", &key, Some(body))
        .await;
    assert_eq!(
        (again.status, again.str("bulk_close_id")),
        (200, id.clone()),
        "{}",
        again.body
    );
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed() - orders_before, 44);
    let other = app
        .call(
            Method::POST,
            "/accounts/acct-1/close-all",
            &key,
            Some(r#"{"reason":"other"}"#),
        )
        .await;
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    // Retry the failed rows: the refused closes get a new attempt (which fills), the
    // position that was never closable stays failed, nothing else is touched.
    let r = app
        .call(Method::POST, &format!("/bulk-closes/{id}/retry-failed"), &[], None)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    app.driver.pump().await;
    let b = app.call(Method::GET, &format!("/bulk-closes/{id}"), &[], None).await;
    assert_eq!(
        counts(&b),
        ("completed_with_errors".into(), 50, 47, 1, 2, 0),
        "{}",
        b.body
    );
    assert_eq!(b.body["total_realized_pnl"], "450");
    assert_eq!(b.body["retry_rounds"], 1);
    assert_eq!(app.sim.orders_placed() - orders_before, 47);
    assert_eq!(app.position("b-tsla-2").await.body["status"], "closed");
    let again = app
        .call(Method::POST, &format!("/bulk-closes/{id}/retry-failed"), &[], None)
        .await;
    assert_eq!(
        again.status, 202,
        "the invalid-state row is still failed: {}",
        again.body
    );
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed() - orders_before, 47);
    assert_eq!(app.sim.mleg_orders_placed() - mleg_before, 1);
}

/// Bad requests change nothing and answer stable codes; another account's bulk close is
/// not found; a filter takes only what it names.
pub async fn bulk_close_requests_are_validated_scoped_and_filtered(app: &PipelineApp) {
    put(app, "f-1", equity("AAPL", "2")).await;
    put(app, "f-2", equity("MSFT", "3")).await;
    let key = [("idempotency-key", "f")];
    for (body, code) in [
        (r#"{"symbols":[]}"#, "invalid_body"),
        (r#"{"symbols":["AAPL"],"limit_price":"1"}"#, "invalid_body"),
        (r#"{"asset_type":"crypto"}"#, "invalid_body"),
        (r#"{"time_in_force":"ioc"}"#, "invalid_time_in_force"),
        (r#"[1]"#, "invalid_body"),
    ] {
        let r = app
            .call(Method::POST, "/accounts/acct-1/close-all", &key, Some(body))
            .await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (400, Some(code)),
            "{body}: {}",
            r.body
        );
    }
    let r = app.call(Method::POST, "/accounts/acct-1/close-all", &[], None).await;
    assert_eq!(r.body["error"], "missing_idempotency_key");
    let auth = format!("Bearer {TOKEN_ACCT2}");
    let r = app
        .call(
            Method::POST,
            "/accounts/acct-1/close-all",
            &[("idempotency-key", "f"), ("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!((r.status, r.body["error"].as_str()), (403, Some("forbidden")));
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 0, "nothing was closed");

    let r = app
        .call(
            Method::POST,
            "/accounts/acct-1/close-all",
            &key,
            Some(r#"{"symbols":["MSFT"]}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.str("bulk_close_id");
    app.driver.pump().await;
    let b = app.call(Method::GET, &format!("/bulk-closes/{id}"), &[], None).await;
    assert_eq!(
        (b.body["status"].as_str(), b.body["total"].as_u64()),
        (Some("completed"), Some(1))
    );
    assert_eq!(b.body["rows"][0]["position_id"], "f-2");
    assert_eq!(app.position("f-1").await.body["status"], "open");
    let r = app
        .call(
            Method::GET,
            &format!("/bulk-closes/{id}"),
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (404, Some("bulk_close_not_found"))
    );
    let r = app.call(Method::GET, "/bulk-closes/not-a-uuid", &[], None).await;
    assert_eq!(r.body["error"], "invalid_bulk_close_id");
    let r = app
        .call(Method::POST, &format!("/bulk-closes/{id}/retry-failed"), &[], None)
        .await;
    assert_eq!((r.status, r.body["error"].as_str()), (409, Some("nothing_to_retry")));
}

/// Sim scenarios of [`an_emergency_liquidation_flattens_the_account_and_halts_it`]: AAPL's
/// limit orders rest until canceled (the open order the liquidation must cancel).
pub const LIQUIDATION_SCENARIOS: &str = "AAPL=rest";

/// Pumps the pipeline until the bulk close stops running (a liquidation's waiting steps
/// come back on the next pump); the last view.
async fn until_done(app: &PipelineApp, id: &str) -> crate::Reply {
    for _ in 0..20 {
        app.driver.pump().await;
        let b = app.call(Method::GET, &format!("/bulk-closes/{id}"), &[], None).await;
        assert_eq!(b.status, 200, "{}", b.body);
        if b.body["status"] != "running" {
            return b;
        }
    }
    panic!("the bulk close {id} never finished");
}

/// An account with a long, a short, a close working at the broker as a resting limit order,
/// and a holding only the broker knows. The liquidation refuses to start unconfirmed; once
/// confirmed the account takes no new exposure; the resting order is canceled; sync adopts
/// the unknown holding; the short closes before the longs; every holding is closed and the
/// account is flat and halted until resumed. A replay starts nothing new.
pub async fn an_emergency_liquidation_flattens_the_account_and_halts_it(app: &PipelineApp) {
    let acct = closeflow_domain::AccountId::parse("acct-1").unwrap();
    let q = |s: &str| closeflow_domain::Quantity::parse(s).unwrap();
    for (id, symbol, qty) in [
        ("l-msft", "MSFT", "3"),
        ("l-tsla", "TSLA", "-2"),
        ("l-aapl", "AAPL", "5"),
    ] {
        put(app, id, equity(symbol, qty)).await;
        app.sim.set_holding(&acct, symbol, q(qty));
    }
    app.sim.set_holding(&acct, "IBM", q("7"));
    let r = app
        .call(
            Method::POST,
            "/positions/l-aapl/close",
            &[("idempotency-key", "limit")],
            Some(r#"{"order_type":"limit","limit_price":"500"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.driver.pump().await;
    assert_eq!(app.position("l-aapl").await.body["status"], "closing");
    let placed_before = app.sim.orders_placed();

    let key = [("idempotency-key", "panic-1")];
    for body in [
        None,
        Some(r#"{"confirm":"LIQUIDATE acct-2"}"#),
        Some(r#"{"confirm":"yes"}"#),
    ] {
        let r = app.call(Method::POST, "/accounts/acct-1/liquidate", &key, body).await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (400, Some("confirmation_required")),
            "{}",
            r.body
        );
    }
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "active", "a refusal changes nothing");

    let body = r#"{"confirm":"LIQUIDATE acct-1","reason":"margin call"}"#;
    let r = app
        .call(Method::POST, "/accounts/acct-1/liquidate", &key, Some(body))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["kind"], "liquidation");
    let id = r.str("bulk_close_id");
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "liquidating");
    let refused = app
        .call(Method::PUT, "/positions/l-new", &[], Some(&equity("NFLX", "1")))
        .await;
    assert_eq!(
        (refused.status, refused.body["error"].as_str()),
        (409, Some("account_halted")),
        "{}",
        refused.body
    );

    let b = until_done(app, &id).await;
    assert_eq!(
        (
            b.body["status"].as_str(),
            b.body["total"].as_u64(),
            b.body["succeeded"].as_u64()
        ),
        (Some("completed"), Some(4), Some(4)),
        "{}",
        b.body
    );
    let l = &b.body["liquidation"];
    assert_eq!(
        (
            l["phase"].as_str(),
            l["flat"].as_bool(),
            l["attempt"].as_u64(),
            l["orders_canceled"].as_u64()
        ),
        (Some("done"), Some(true), Some(1), Some(1)),
        "{}",
        b.body
    );
    assert!(
        app.sim.engine().positions("acct-1").is_empty(),
        "the broker holds nothing"
    );
    let symbols: Vec<String> = b.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["symbol"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(symbols[0], "TSLA", "the short closes first: {symbols:?}");
    assert!(
        symbols.contains(&"IBM".to_string()),
        "the broker-only holding was adopted and closed"
    );
    // One market order per holding: the canceled limit order was the only other one.
    assert_eq!(app.sim.orders_placed() - placed_before, 4);
    for pid in ["l-msft", "l-tsla", "l-aapl"] {
        assert_eq!(app.position(pid).await.body["status"], "closed", "{pid}");
    }
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "halted");
    let published: Vec<String> = app.published().await.into_iter().map(|(t, _)| t).collect();
    for t in ["LiquidationStarted", "LiquidationCompleted", "TradingStateChanged"] {
        assert!(published.contains(&t.to_string()), "{t} in {published:?}");
    }

    // The same request again: the same liquidation, nothing placed.
    let again = app
        .call(Method::POST, "/accounts/acct-1/liquidate", &key, Some(body))
        .await;
    assert_eq!((again.status, again.str("bulk_close_id")), (200, id.clone()));
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed() - placed_before, 4);
    let r = app
        .call(Method::POST, &format!("/bulk-closes/{id}/retry-failed"), &[], None)
        .await;
    assert_eq!(r.body["error"], "liquidation_not_retryable");
    let still = app
        .call(Method::PUT, "/positions/l-new", &[], Some(&equity("NFLX", "1")))
        .await;
    assert_eq!(still.body["error"], "account_halted", "halted until a human resumes");
    let resumed = app.call(Method::POST, "/accounts/acct-1/resume", &[], None).await;
    assert_eq!(resumed.body["trading_state"], "active", "{}", resumed.body);
    let r = app
        .call(Method::PUT, "/positions/l-new", &[], Some(&equity("NFLX", "1")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Every trading-state move is in the account's audit trail: who, why, from and to.
    app.driver.pump().await;
    let trail = app
        .call(Method::GET, "/accounts/acct-1/audit?limit=500", &[], None)
        .await;
    let moves: Vec<(String, String, String, String)> = trail.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "trading_state_changed")
        .map(|e| {
            let t = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (t("actor"), t("status_before"), t("status_after"), t("reason"))
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (
                "ops".into(),
                "active".into(),
                "liquidating".into(),
                "margin call".into()
            ),
            (
                "liquidation".into(),
                "liquidating".into(),
                "halted".into(),
                "flat".into()
            ),
            ("ops".into(), "halted".into(), "active".into(), "resumed".into()),
        ],
        "{}",
        trail.body
    );
}

/// A guard's event through `POST /guards/events`: refused whole when invalid or for another
/// account; a `close` closes only what it scopes, once however often the event comes, as
/// `guard:<guard_id>` with the observed value in the reason; a `liquidate` liquidates.
pub async fn a_guard_event_closes_what_it_scopes_once(app: &PipelineApp) {
    let acct = closeflow_domain::AccountId::parse("acct-1").unwrap();
    let q = |s: &str| closeflow_domain::Quantity::parse(s).unwrap();
    for (id, symbol, qty) in [("g-1", "AAPL", "2"), ("g-2", "AAPL", "3"), ("g-3", "MSFT", "4")] {
        put(app, id, equity(symbol, qty)).await;
        app.sim
            .set_holding(&acct, symbol, q(if id == "g-1" { "5" } else { qty }));
    }
    let event = |id: &str, extra: &str| {
        format!(
            r#"{{"event_id":"{id}","guard_id":"gap-1","guard":"market_gap","account_id":"acct-1",
                 "action":"close","observed":"7.5","threshold":"5"{extra}}}"#
        )
    };
    for (body, field) in [
        (
            event("e-0", r#","symbols":["AAPL"],"position_ids":["g-1"]"#),
            "position_ids",
        ),
        (event("e-0", r#","symbol":["AAPL"]"#), "symbol"),
        (event("e-0", "").replace(r#""close""#, r#""sell""#), "action"),
    ] {
        let r = app.call(Method::POST, "/guards/events", &[], Some(&body)).await;
        assert_eq!(
            (r.status, r.body["error"].as_str(), r.body["field"].as_str()),
            (400, Some("invalid_guard_event"), Some(field)),
            "{body}: {}",
            r.body
        );
    }
    let auth = format!("Bearer {TOKEN_ACCT2}");
    let body = event("e-1", r#","symbols":["AAPL"]"#);
    let r = app
        .call(Method::POST, "/guards/events", &[("authorization", &auth)], Some(&body))
        .await;
    assert_eq!((r.status, r.body["error"].as_str()), (403, Some("forbidden")));
    app.driver.pump().await;
    assert_eq!(app.sim.orders_placed(), 0, "nothing was closed");

    let r = app.call(Method::POST, "/guards/events", &[], Some(&body)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.str("bulk_close_id");
    assert_eq!(r.str("actor"), "guard:gap-1");
    let again = app.call(Method::POST, "/guards/events", &[], Some(&body)).await;
    assert_eq!((again.status, again.str("bulk_close_id")), (200, id.clone()));
    let b = until_done(app, &id).await;
    assert_eq!(
        (
            b.body["status"].as_str(),
            b.body["total"].as_u64(),
            b.body["succeeded"].as_u64()
        ),
        (Some("completed"), Some(2), Some(2)),
        "{}",
        b.body
    );
    assert_eq!(
        app.sim.orders_placed(),
        2,
        "one order per scoped position, the event's repeat placed none"
    );
    assert_eq!(app.position("g-3").await.body["status"], "open");
    let cr = b.body["rows"][0]["close_request_id"].as_str().unwrap().to_string();
    let c = app.close_request(&cr).await;
    assert!(
        c.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("market_gap guard gap-1: observed 7.5 >= threshold 5"),
        "{}",
        c.body
    );
    let other = app
        .call(
            Method::POST,
            "/guards/events",
            &[],
            Some(&event("e-1", r#","symbols":["MSFT"]"#)),
        )
        .await;
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (422, Some("idempotency_key_reused")),
        "the same event id with other contents"
    );

    let liquidate = r#"{"event_id":"e-2","guard_id":"dd-1","guard":"drawdown","account_id":"acct-1",
                        "action":"liquidate","observed":"12","threshold":"10"}"#;
    let r = app.call(Method::POST, "/guards/events", &[], Some(liquidate)).await;
    assert_eq!(
        (r.status, r.body["kind"].as_str()),
        (202, Some("liquidation")),
        "{}",
        r.body
    );
    let b = until_done(app, &r.str("bulk_close_id")).await;
    assert_eq!(b.body["liquidation"]["flat"], true, "{}", b.body);
    assert_eq!(app.position("g-3").await.body["status"], "closed");
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "halted");
}

/// The drawdown guard over the broker's equity: the first reading sets the high-water
/// mark; a fall past the warning threshold alerts once (not again while it holds); a fall
/// past the liquidation threshold liquidates the account once, however many runs see it.
pub async fn the_drawdown_guard_warns_once_and_liquidates_once(app: &PipelineApp) {
    use closeflow_pipeline::{drawdown_once, DrawdownConfig};
    use rust_decimal::Decimal;
    let acct = closeflow_domain::AccountId::parse("acct-1").unwrap();
    put(app, "dd-1", equity("MSFT", "4")).await;
    app.sim
        .set_holding(&acct, "MSFT", closeflow_domain::Quantity::parse("4").unwrap());
    let cfg = DrawdownConfig {
        accounts: vec![acct.clone()],
        policy: closeflow_domain::DrawdownPolicy {
            warn_pct: Some(Decimal::from(5)),
            liquidate_pct: Some(Decimal::from(10)),
        },
        max_retries: 3,
    };
    let run = || async {
        drawdown_once(
            app.store.as_ref(),
            app.driver.broker.as_ref(),
            app.driver.producer.as_ref(),
            app.clock.as_ref(),
            app.driver.events.as_ref(),
            &cfg,
        )
        .await
        .unwrap()
    };
    let off = drawdown_once(
        app.store.as_ref(),
        app.driver.broker.as_ref(),
        app.driver.producer.as_ref(),
        app.clock.as_ref(),
        app.driver.events.as_ref(),
        &DrawdownConfig {
            policy: Default::default(),
            ..cfg.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(off.accounts, 0, "off unless a threshold is set");

    app.sim.set_equity(&acct, Decimal::from(100_000));
    let r = run().await;
    assert_eq!((r.accounts, r.warnings, r.liquidations, r.written), (1, 0, 0, 1));
    app.sim.set_equity(&acct, Decimal::from(94_000));
    assert_eq!(run().await.warnings, 1);
    assert_eq!(run().await.warnings, 0, "one warning while the level holds");
    let alerts: Vec<String> = app
        .published()
        .await
        .into_iter()
        .filter(|(t, _)| t == "Alert")
        .filter_map(|(_, d)| d["reason"].as_str().map(str::to_string))
        .filter(|r| r.starts_with("drawdown_warning"))
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("6% below its high-water mark 100000"), "{alerts:?}");

    app.sim.set_equity(&acct, Decimal::from(89_000));
    assert_eq!(run().await.liquidations, 1);
    assert_eq!(run().await.liquidations, 0, "once while the level holds");
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "liquidating");
    for _ in 0..20 {
        app.driver.pump().await;
        if app.position("dd-1").await.body["status"] == "closed"
            && app.call(Method::GET, "/accounts/acct-1", &[], None).await.body["trading_state"] == "halted"
        {
            break;
        }
    }
    assert_eq!(app.position("dd-1").await.body["status"], "closed");
    let acct_view = app.call(Method::GET, "/accounts/acct-1", &[], None).await;
    assert_eq!(acct_view.body["trading_state"], "halted", "{}", acct_view.body);
    assert_eq!(app.sim.orders_placed(), 1, "one liquidation, one order");
}
