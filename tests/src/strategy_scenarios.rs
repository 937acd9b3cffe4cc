//! Strategy closes through the real router (seed 002: "Close Strategy"), each on every
//! backend by `strategy_tests!`: the API's answers on the plain harness, the legs' fates on
//! the pipeline harness (simulated broker, its `reject` scenario for a failing leg).

use axum::http::Method;

use crate::pipeline::PipelineApp;
use crate::{Reply, TestApp, TOKEN_ACCT2};

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.body["error"].as_str()), (status, Some(code)), "{}", r.body);
}

/// An iron condor's four legs: long call, short call, short put, long put.
const CONDOR: [(&str, &str, &str); 4] = [
    ("ic-cl", "SPY260116C00600000", "1"),
    ("ic-cs", "SPY260116C00590000", "-1"),
    ("ic-ps", "SPY260116P00540000", "-1"),
    ("ic-pl", "SPY260116P00530000", "1"),
];

fn leg_body(symbol: &str, qty: &str, strategy: &str) -> String {
    format!(
        r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"option","quantity":{qty},"strategy_id":"{strategy}"}}"#
    )
}

async fn condor(app: &TestApp, strategy: &str) {
    for (id, symbol, qty) in CONDOR {
        let r = app
            .put_position(&format!("{strategy}-{id}"), &leg_body(symbol, qty, strategy))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

async fn close_strategy(app: &TestApp, strategy: &str, key: &str, body: Option<&str>) -> Reply {
    app.call(
        Method::POST,
        &format!("/strategies/{strategy}/close"),
        &[("idempotency-key", key)],
        body,
    )
    .await
}

/// The API: 404 for an unknown strategy, 201 with every leg `closing`, replay 200, another
/// body 422, another key 409; a leg not open refuses the whole close and writes nothing.
pub async fn a_strategy_close_is_atomic_and_idempotent(app: &TestApp) {
    assert_error(
        &close_strategy(app, "no-such", "k", None).await,
        404,
        "strategy_not_found",
    );
    condor(app, "ic-a").await;
    // Asked for one multi-leg order where there can be none (no broker here takes them):
    // refused, nothing written, the key not used up.
    let r = close_strategy(app, "ic-a", "k1", Some(r#"{"mode":"mleg"}"#)).await;
    assert_error(&r, 409, "mleg_not_available");
    assert!(
        r.body["message"].as_str().unwrap().contains("mode `legs`"),
        "{}",
        r.body
    );
    for (leg, _, _) in CONDOR {
        let p = app.get(&format!("/positions/ic-a-{leg}")).await;
        assert_eq!(p.body["status"], "open", "{leg}: nothing written");
    }
    let r = close_strategy(app, "ic-a", "k1", Some(r#"{"reason":"take profit"}"#)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["mode"].as_str(), r.body["status"].as_str()),
        (Some("legs"), Some("pending"))
    );
    assert_eq!(
        (r.body["total_legs"].as_u64(), r.body["closed_legs"].as_u64()),
        (Some(4), Some(0))
    );
    let id = r.str("strategy_close_id");
    let strategy = app.get("/strategies/ic-a").await;
    assert_eq!(
        (
            strategy.body["status"].as_str(),
            strategy.body["active_strategy_close_id"].as_str()
        ),
        (Some("closing"), Some(id.as_str()))
    );
    for (leg, _, _) in CONDOR {
        let p = app.get(&format!("/positions/ic-a-{leg}")).await;
        assert_eq!(p.body["status"], "closing", "{leg}");
    }
    let again = close_strategy(app, "ic-a", "k1", Some(r#"{"reason":"take profit"}"#)).await;
    assert_eq!((again.status, again.str("strategy_close_id")), (200, id.clone()));
    assert_error(
        &close_strategy(app, "ic-a", "k1", Some(r#"{"reason":"other"}"#)).await,
        422,
        "idempotency_key_reused",
    );
    let busy = close_strategy(app, "ic-a", "k2", None).await;
    assert_error(&busy, 409, "strategy_not_closable");
    assert_eq!(busy.body["position_status"], "closing");
    let polled = app.get(&format!("/strategy-closes/{id}")).await;
    assert_eq!(
        (polled.status, polled.body["strategy_id"].as_str()),
        (200, Some("ic-a"))
    );
    assert_eq!(polled.body["legs"].as_array().unwrap().len(), 4);
    assert_error(
        &app.get("/strategy-closes/nope").await,
        400,
        "invalid_strategy_close_id",
    );
    let other = app
        .call(
            Method::GET,
            &format!("/strategy-closes/{id}"),
            &[("authorization", &format!("Bearer {TOKEN_ACCT2}"))],
            None,
        )
        .await;
    assert_error(&other, 404, "strategy_close_not_found");

    // Atomicity: one leg closing alone refuses the strategy close, naming it; nothing written.
    condor(app, "ic-b").await;
    assert_eq!(app.close("ic-b-ic-ps", "single").await.status, 201);
    let before: Vec<_> = futures_join(app, "ic-b").await;
    let r = close_strategy(app, "ic-b", "k", None).await;
    assert_error(&r, 409, "strategy_not_closable");
    assert_eq!(
        (r.body["position_id"].as_str(), r.body["position_status"].as_str()),
        (Some("ic-b-ic-ps"), Some("closing"))
    );
    assert_eq!(futures_join(app, "ic-b").await, before, "nothing written");
    // Refused input writes nothing and does not use up the key.
    for (body, code) in [
        (r#"{"mode":"both"}"#, "invalid_body"),
        (r#"{"time_in_force":"day"}"#, "invalid_body"),
        (r#"{"qty":"2"}"#, "invalid_qty"),
        (r#"{"order_type":"limit","limit_price":"1.2"}"#, "invalid_limit_price"),
    ] {
        condor_fresh_refusal(app, body, code).await;
    }
}

async fn futures_join(app: &TestApp, strategy: &str) -> Vec<closeflow_domain::PositionAggregate> {
    let mut all = Vec::new();
    for (leg, _, _) in CONDOR {
        all.push(app.aggregate(&format!("{strategy}-{leg}")).await);
    }
    all
}

async fn condor_fresh_refusal(app: &TestApp, body: &str, code: &str) {
    if app.get("/strategies/ic-c").await.status == 404 {
        condor(app, "ic-c").await;
    }
    let before = futures_join(app, "ic-c").await;
    assert_error(&close_strategy(app, "ic-c", "k-c", Some(body)).await, 400, code);
    assert_eq!(futures_join(app, "ic-c").await, before, "{body}");
}

/// Closing one long leg alone answers as before, plus a warning when a short leg of its
/// strategy stays open; a short leg alone has no warning.
pub async fn a_single_leg_closed_alone_warns_when_it_leaves_a_short_leg_naked(app: &TestApp) {
    condor(app, "ic-w").await;
    let r = app.close("ic-w-ic-cl", "k").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["warning"], "leaves_other_legs_open");
    let r = app.close("ic-w-ic-cs", "k").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("warning").is_none(), "{}", r.body);
    app.open_position("plain", "3").await;
    assert!(app.close("plain", "k").await.body.get("warning").is_none());
}

/// Registers a strategy of `legs` legs and closes it; the store operations the accepting
/// request cost (`None` off DynamoDB). Shared with `make bench`.
pub async fn strategy_close_operations(app: &TestApp, strategy: &str, legs: usize) -> Option<Vec<String>> {
    for i in 0..legs {
        let qty = if i % 2 == 0 { "1" } else { "-1" };
        let r = app
            .put_position(
                &format!("{strategy}-{i}"),
                &format!(
                    r#"{{"account_id":"acct-1","symbol":"SPY","asset_type":"equity","quantity":{qty},"strategy_id":"{strategy}"}}"#
                ),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let before = app.round_trips.as_ref().map(|c| c.operations().len());
    let r = close_strategy(app, strategy, "k", None).await;
    assert_eq!(
        (r.status, r.body["total_legs"].as_u64()),
        (201, Some(legs as u64)),
        "{}",
        r.body
    );
    let (counter, before) = (app.round_trips.as_ref()?, before?);
    Some(counter.operations()[before..].to_vec())
}

/// The legs' writes are one atomic commit: on DynamoDB one `TransactWriteItems` for 4 legs
/// and for 50, after one `Query` of the strategy index (whose whole items the write is
/// decided on, its version conditions refusing anything stale): two round trips in all,
/// whatever the number of legs (up to 99).
pub async fn a_strategy_close_writes_all_legs_in_one_round_trip(app: &TestApp) {
    for legs in [4usize, 50] {
        let Some(ops) = strategy_close_operations(app, &format!("rt-{legs}"), legs).await else {
            continue;
        };
        let count = |name: &str| ops.iter().filter(|o| o.as_str() == name).count();
        println!(
            "strategy close of {legs} legs: {} round trips ({} TransactWriteItems, {} Query, {} BatchGetItem)",
            ops.len(),
            count("TransactWriteItems"),
            count("Query"),
            count("BatchGetItem")
        );
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!((count("Query"), count("TransactWriteItems")), (1, 1), "{ops:?}");
        assert_eq!(count("PutItem") + count("UpdateItem"), 0, "{ops:?}");
        assert_eq!(count("Scan"), 0, "{ops:?}");
    }
}

// ---- With the broker (pipeline harness) ----

async fn legs(app: &PipelineApp, strategy: &str, symbols: &[(&str, &str, &str)]) {
    for (id, symbol, qty) in symbols {
        let r = app
            .call(
                Method::PUT,
                &format!("/positions/{strategy}-{id}"),
                &[],
                Some(&format!(
                    r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":{qty},"strategy_id":"{strategy}"}}"#
                )),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

async fn run(app: &PipelineApp, strategy: &str) -> serde_json::Value {
    let r = app
        .call(
            Method::POST,
            &format!("/strategies/{strategy}/close"),
            &[("idempotency-key", "k")],
            Some(r#"{"mode":"legs"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("strategy_close_id");
    for _ in 0..5 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    strategy_close_now(app, &id).await
}

/// Seed 002: every leg fills -> `success`, each leg with its fill.
pub async fn every_leg_fills_and_the_strategy_close_succeeds(app: &PipelineApp) {
    legs(app, "s1", &[("a", "AAPL", "10"), ("b", "MSFT", "-10")]).await;
    // Entry prices (the simulated broker fills at 100): long 10 from 90, short 10 from 95.
    for (id, symbol, qty, entry) in [("s1-a", "AAPL", "10", "90"), ("s1-b", "MSFT", "-10", "95")] {
        let body = format!(
            r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":{qty},"strategy_id":"s1","avg_entry_price":"{entry}"}}"#
        );
        let r = app
            .call(Method::PUT, &format!("/positions/{id}"), &[], Some(&body))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let v = run(app, "s1").await;
    let pnl: Vec<_> = v["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["realized_pnl"].clone())
        .collect();
    assert_eq!(pnl, [serde_json::json!("100"), serde_json::json!("-50")], "{v}");
    assert_eq!(v["total_realized_pnl"], "50", "{v}");
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("success"), Some(2)),
        "{v}"
    );
    for leg in v["legs"].as_array().unwrap() {
        assert_eq!(
            (leg["status"].as_str(), leg["filled_qty"].as_str()),
            (Some("completed"), Some("10")),
            "{leg}"
        );
        assert!(leg["filled_avg_price"].is_string(), "{leg}");
    }
    assert_eq!(app.sim.orders_placed(), 2, "one order per leg");
}

/// Seed 002: one leg refused by the broker in `legs` mode -> `partial`; the failed leg
/// says why, the others closed.
pub async fn one_leg_refused_makes_the_strategy_close_partial(app: &PipelineApp) {
    legs(
        app,
        "s2",
        &[("a", "AAPL", "10"), ("b", "TSLA", "-5"), ("c", "MSFT", "3")],
    )
    .await;
    let v = run(app, "s2").await;
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("partial"), Some(2)),
        "{v}"
    );
    let failed: Vec<_> = v["legs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert_eq!(failed[0]["symbol"], "TSLA");
    // No entry prices were given: the total is unknown and says why, never a guess.
    assert_eq!(
        (v["total_realized_pnl"].clone(), v["realized_pnl_unknown"].as_str()),
        (serde_json::Value::Null, Some("entry_price_unknown")),
        "{v}"
    );
    assert!(failed[0]["error_message"].is_string(), "{v}");
    assert_eq!(app.position("s2-b").await.body["status"], "close_failed");
}

/// Seed 002: every leg refused -> `error`.
pub async fn every_leg_refused_makes_the_strategy_close_an_error(app: &PipelineApp) {
    legs(app, "s3", &[("a", "TSLA", "10"), ("b", "GME", "-10")]).await;
    let v = run(app, "s3").await;
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("error"), Some(0)),
        "{v}"
    );
}

/// `POST /strategy-closes/{id}/cancel`: nothing at the broker yet -> 409 `not_cancelable`;
/// once the legs' orders work, every leg is canceled and, confirmed with nothing filled,
/// each position is `open` again (the strategy close ends `error`).
pub async fn a_strategy_close_is_canceled_leg_by_leg(app: &PipelineApp) {
    legs(app, "s4", &[("a", "NVDA", "10"), ("b", "AMZN", "-10")]).await;
    let r = app
        .call(Method::POST, "/strategies/s4/close", &[("idempotency-key", "k")], None)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.str("strategy_close_id");
    let cancel = format!("/strategy-closes/{id}/cancel");
    let early = app.call(Method::POST, &cancel, &[], None).await;
    assert_eq!(
        (early.status, early.body["error"].as_str()),
        (409, Some("not_cancelable")),
        "{}",
        early.body
    );
    app.driver.pump().await;
    app.sim.idle().await;
    let r = app.call(Method::POST, &cancel, &[], None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    for _ in 0..3 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    for leg in ["s4-a", "s4-b"] {
        assert_eq!(app.position(leg).await.body["status"], "open", "{leg}");
    }
    let v = app
        .call(Method::GET, &format!("/strategy-closes/{id}"), &[], None)
        .await;
    assert_eq!(v.body["status"], "error", "{}", v.body);
    assert_eq!(app.sim.orders_placed(), 2);
}

async fn option_legs(app: &PipelineApp, strategy: &str, symbols: &[(&str, &str, &str)]) {
    for (id, symbol, qty) in symbols {
        let r = app
            .call(
                Method::PUT,
                &format!("/positions/{strategy}-{id}"),
                &[],
                Some(&leg_body(symbol, qty, strategy)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

/// An `mleg` close of an iron condor of 2/-1/-1/2 contracts (1 unit of 2:1:1:2):
async fn mleg_close(app: &PipelineApp, strategy: &str, body: &str) -> (String, serde_json::Value) {
    option_legs(
        app,
        strategy,
        &[
            ("cl", "SPY260116C00600000", "2"),
            ("cs", "SPY260116C00590000", "-1"),
            ("ps", "SPY260116P00540000", "-1"),
            ("pl", "SPY260116P00530000", "2"),
        ],
    )
    .await;
    let r = app
        .call(
            Method::POST,
            &format!("/strategies/{strategy}/close"),
            &[("idempotency-key", "m")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["mode"], "mleg", "{}", r.body);
    let id = r.str("strategy_close_id");
    for _ in 0..5 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    let v = strategy_close_now(app, &id).await;
    (id, v)
}

/// Broker orders one `mleg` close of a 4-leg condor placed (its one attempt fills), for
/// `make bench`; the legs' own submit messages are four.
pub async fn mleg_orders_for_one_close(app: &PipelineApp, strategy: &str) -> usize {
    let (_, v) = mleg_close(app, strategy, "{}").await;
    assert_eq!(v["status"], "success", "{v}");
    app.sim.mleg_orders_placed()
}

/// `mleg` (the default for 2-4 option legs when the broker places multi-leg orders): one
/// broker order for the whole strategy although every leg's close request has its own
/// submit message; each leg then shows its own fill; the same request replays with 200.
pub async fn an_mleg_close_is_one_order_and_each_leg_shows_its_fill(app: &PipelineApp) {
    let (id, v) = mleg_close(app, "m1", "{}").await;
    assert_eq!(
        (v["mode"].as_str(), v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("mleg"), Some("success"), Some(4)),
        "{v}"
    );
    for leg in v["legs"].as_array().unwrap() {
        assert_eq!(leg["status"], "completed", "{leg}");
        assert_eq!(leg["filled_qty"], leg["qty"], "{leg}");
        assert!(leg["filled_avg_price"].is_string(), "{leg}");
    }
    let qtys: Vec<_> = v["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["symbol"].as_str().unwrap(), l["filled_qty"].as_str().unwrap()))
        .collect();
    assert!(qtys.contains(&("SPY260116C00600000", "2")), "{qtys:?}");
    assert!(qtys.contains(&("SPY260116C00590000", "1")), "{qtys:?}");
    assert_eq!(app.sim.mleg_orders_placed(), 1, "one multi-leg order per attempt");
    let again = app
        .call(
            Method::POST,
            "/strategies/m1/close",
            &[("idempotency-key", "m")],
            Some("{}"),
        )
        .await;
    assert_eq!((again.status, again.str("strategy_close_id")), (200, id));
    assert_eq!(app.position("m1-cs").await.body["status"], "closed");
}

/// A leg the broker refuses refuses the whole multi-leg order: nothing is placed, every
/// leg fails with the broker's words, the strategy close is `error` (never a lone hedge).
pub async fn an_mleg_order_the_broker_refuses_fails_every_leg(app: &PipelineApp) {
    let (_, v) = mleg_close(app, "m2", r#"{"mode":"mleg"}"#).await;
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("error"), Some(0)),
        "{v}"
    );
    for leg in v["legs"].as_array().unwrap() {
        assert_eq!(leg["status"], "failed", "{leg}");
        assert!(
            leg["error_message"].as_str().unwrap().contains("SPY260116P00540000"),
            "{leg}"
        );
    }
    assert_eq!(app.sim.mleg_orders_placed(), 0);
    assert_eq!(app.sim.orders_placed(), 0, "no leg reached the broker");
}

/// A net limit price is accepted on an `mleg` close (`legs` mode still refuses it: the
/// domain's `a_net_limit_price_needs_a_multi_leg_order`): one order, resting under `rest`.
pub async fn a_limit_strategy_close_is_an_mleg_order_at_a_net_price(app: &PipelineApp) {
    let (id, v) = mleg_close(app, "m3", r#"{"order_type":"limit","limit_price":"1.35"}"#).await;
    assert_eq!(v["status"], "pending", "{v}");
    assert!(
        v["legs"].as_array().unwrap().iter().all(|l| l["filled_qty"] == "0"),
        "{v}"
    );
    assert_eq!(app.sim.mleg_orders_placed(), 1);

    // Canceled as a whole (the broker cancels a multi-leg order, not one leg of it): every
    // leg ends with nothing filled, its position open again, once the broker confirms.
    let r = app
        .call(Method::POST, &format!("/strategy-closes/{id}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    for _ in 0..3 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    let v = app
        .call(Method::GET, &format!("/strategy-closes/{id}"), &[], None)
        .await;
    assert!(
        v.body["legs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "failed"),
        "{}",
        v.body
    );
    for leg in ["cl", "cs", "ps", "pl"] {
        assert_eq!(app.position(&format!("m3-{leg}")).await.body["status"], "open", "{leg}");
    }
    assert!(
        app.sim
            .engine()
            .list(&closeflow_pipeline::sim_broker::engine::ListQuery {
                status: closeflow_pipeline::sim_broker::engine::StatusFilter::Open,
                symbols: None,
                limit: 500,
                newest_first: false,
            })
            .is_empty(),
        "no leg of it is working"
    );

    // A net credit: a negative net price, kept (and shown) signed on every leg's close.
    let (_, v) = mleg_close(app, "m3c", r#"{"order_type":"limit","limit_price":"-1.25"}"#).await;
    assert_eq!(app.sim.mleg_orders_placed(), 2, "{v}");
    for leg in v["legs"].as_array().unwrap() {
        let cr = app.close_request(leg["close_request_id"].as_str().unwrap()).await;
        assert_eq!(
            (cr.body["order_type"].as_str(), cr.body["limit_price"].as_str()),
            (Some("limit"), Some("-1.25")),
            "{}",
            cr.body
        );
    }
    let zero = app
        .call(
            Method::POST,
            "/strategies/m3/close",
            &[("idempotency-key", "zero")],
            Some(r#"{"order_type":"limit","limit_price":"0"}"#),
        )
        .await;
    assert_error(&zero, 400, "invalid_limit_price");
    let single = app
        .call(
            Method::POST,
            &format!("/positions/{}/close", v["legs"][0]["position_id"].as_str().unwrap()),
            &[("idempotency-key", "credit")],
            Some(r#"{"order_type":"limit","limit_price":"-1"}"#),
        )
        .await;
    assert_error(&single, 400, "invalid_limit_price");
}

/// Crash and redelivery in `mleg` mode: the broker took the attempt's order but the
/// submitter died before recording it; then every leg's message arrives twice, the two
/// deliveries racing. Still one broker order for the attempt, recorded once on every leg, and the
/// strategy close succeeds.
pub async fn an_mleg_order_survives_a_crash_and_redelivered_messages(app: &PipelineApp) {
    use closeflow_domain::{mleg_intent, StrategyCloseId, SubmitRequest};
    use closeflow_pipeline::Broker;
    option_legs(
        app,
        "m4",
        &[("a", "SPY260116C00600000", "1"), ("b", "SPY260116C00590000", "-1")],
    )
    .await;
    let r = app
        .call(Method::POST, "/strategies/m4/close", &[("idempotency-key", "k")], None)
        .await;
    assert_eq!((r.status, r.body["mode"].as_str()), (201, Some("mleg")), "{}", r.body);
    let id = StrategyCloseId::parse(&r.str("strategy_close_id")).unwrap();
    let legs = app.store.strategy_close_legs(&id).await.unwrap();
    let intent = mleg_intent(&id, 1, &legs).unwrap().expect("every leg waits");
    app.sim.submit_mleg_order(&intent).await.unwrap();
    let reqs: Vec<SubmitRequest> = legs
        .iter()
        .map(|l| SubmitRequest {
            position_id: l.position.id.clone(),
            close_request_id: l.latest_close_request.as_ref().unwrap().id,
            attempt: 1,
        })
        .collect();
    // Each message delivered twice, the two deliveries racing.
    for req in &reqs {
        let (store, sim, clock) = (app.store.as_ref(), app.sim.as_ref(), app.clock.as_ref());
        let (a, b) = tokio::join!(
            closeflow_pipeline::submit(store, sim, clock, req),
            closeflow_pipeline::submit(store, sim, clock, req)
        );
        a.unwrap();
        b.unwrap();
    }
    assert_eq!(app.sim.mleg_orders_placed(), 1, "one multi-leg order for the attempt");
    for l in app.store.strategy_close_legs(&id).await.unwrap() {
        assert_eq!(l.orders.len(), 1, "{}: {:?}", l.position.id, l.orders);
        assert_eq!(l.orders[0].attempt(), 1);
    }
    for _ in 0..5 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    let v = app
        .call(Method::GET, &format!("/strategy-closes/{id}"), &[], None)
        .await;
    assert_eq!(v.body["status"], "success", "{}", v.body);
    assert_eq!(app.sim.mleg_orders_placed(), 1);
}

/// Registers `legs` (option legs of `strategy`) and closes the strategy with `body`
/// (key `strategy`); the new strategy close's id, once the pipeline has run.
async fn close_option_strategy(app: &PipelineApp, strategy: &str, legs: &[(&str, &str, &str)], body: &str) -> String {
    option_legs(app, strategy, legs).await;
    let r = app
        .call(
            Method::POST,
            &format!("/strategies/{strategy}/close"),
            &[("idempotency-key", strategy)],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    settle(app).await;
    r.str("strategy_close_id")
}

/// Lets the pipeline and the simulated broker run until both are quiet.
async fn settle(app: &PipelineApp) {
    for _ in 0..2 {
        app.driver.pump().await;
        app.sim.idle().await;
    }
    app.driver.pump().await;
}

async fn strategy_close_now(app: &PipelineApp, id: &str) -> serde_json::Value {
    let v = app
        .call(Method::GET, &format!("/strategy-closes/{id}"), &[], None)
        .await;
    assert_eq!(v.status, 200, "{}", v.body);
    v.body
}

/// An `mleg` order that ends part filled (each leg filled 1 of its 2, the rest canceled) is
/// retried as a whole: the reconciler moves every leg to the next attempt, whose one
/// multi-leg order (same name, next number) closes the rest of every leg; the strategy
/// close ends `success` with every leg filled in full over two orders.
pub async fn a_part_filled_mleg_order_is_retried_as_one_order_for_the_rest(app: &PipelineApp) {
    let legs = [("cs", "QQQ260116C00500000", "-2"), ("cl", "QQQ260116C00510000", "2")];
    let id = close_option_strategy(app, "mr", &legs, r#"{"mode":"mleg"}"#).await;
    assert_eq!(app.position("mr-cs").await.body["status"], "close_retryable");
    assert_eq!(app.sim.mleg_orders_placed(), 1);
    let cfg = closeflow_pipeline::ReconcileConfig::default();
    for _ in 0..10 {
        app.clock.advance(chrono::TimeDelta::minutes(2));
        app.reconcile(&cfg).await;
        settle(app).await;
    }
    let v = strategy_close_now(app, &id).await;
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("success"), Some(2)),
        "{v}"
    );
    for leg in v["legs"].as_array().unwrap() {
        assert_eq!(leg["filled_qty"], "2", "{leg}");
    }
    assert_eq!(app.sim.mleg_orders_placed(), 2, "one multi-leg order per attempt");
    for p in ["mr-cs", "mr-cl"] {
        assert_eq!(app.position(p).await.body["status"], "closed", "{p}");
    }
}

/// The broker refuses attempt 1's multi-leg order (`reject_first`): every leg is
/// `close_failed` and the strategy close `error`. A trader retries one leg's close (with a
/// net limit price): every failed leg is retried with it in one write, and the next
/// attempt is one multi-leg order again, which fills; a replay answers 200 and places
/// nothing more.
pub async fn a_refused_mleg_order_is_retried_by_hand_as_one_order(app: &PipelineApp) {
    let legs = [("cs", "IWM260116C00250000", "-1"), ("cl", "IWM260116C00260000", "1")];
    let id = close_option_strategy(app, "mh", &legs, r#"{"mode":"mleg"}"#).await;
    let v = strategy_close_now(app, &id).await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(app.sim.mleg_orders_placed(), 0, "refused whole");
    let leg_cr = v["legs"][0]["close_request_id"].as_str().unwrap().to_string();
    let retry = |key: &'static str| {
        let path = format!("/close-requests/{leg_cr}/retry");
        async move {
            app.call(
                Method::POST,
                &path,
                &[("idempotency-key", key)],
                Some(r#"{"order_type":"limit","limit_price":"0.5"}"#),
            )
            .await
        }
    };
    let r = retry("again").await;
    assert_eq!(r.status, 202, "{}", r.body);
    for p in ["mh-cs", "mh-cl"] {
        assert_eq!(app.position(p).await.body["status"], "closing", "{p}: retried together");
    }
    settle(app).await;
    let v = strategy_close_now(app, &id).await;
    assert_eq!(
        (v["status"].as_str(), v["closed_legs"].as_u64()),
        (Some("success"), Some(2)),
        "{v}"
    );
    assert_eq!(app.sim.mleg_orders_placed(), 1, "attempt 2 is one multi-leg order");
    let again = retry("again").await;
    assert_eq!(again.status, 200, "a replay: {}", again.body);
    app.driver.pump().await;
    assert_eq!(app.sim.mleg_orders_placed(), 1);
    for p in ["mh-cs", "mh-cl"] {
        assert_eq!(app.position(p).await.body["status"], "closed", "{p}");
    }
}

/// A net limit is the whole multi-leg order's: closing a short call spread (buy back the
/// 500 call at 3, sell the 510 call at 1.5: a debit of 1.5) fills at a net limit of 1.6,
/// and rests, nothing filled, at 1.4 — where a trader then cancels it and both legs are
/// open again. A credit travels signed to the broker.
pub async fn an_mleg_close_fills_only_at_its_net_limit_or_better(app: &PipelineApp) {
    // Closing the long call spread instead (sell the 500 at 3, buy the 510 at 1.5) brings
    // a credit of 1.5: a net credit limit of -1.25 fills, one of -2 rests.
    let (short_spread, long_spread) = (("-1", "1"), ("1", "-1"));
    for (strategy, (q500, q510), limit, fills) in [
        ("nl-a", short_spread, "1.6", true),
        ("nl-b", short_spread, "1.4", false),
        ("nl-c", long_spread, "-1.25", true),
        ("nl-d", long_spread, "-2", false),
    ] {
        let legs = [("s", "QQQ260116C00500000", q500), ("l", "QQQ260116C00510000", q510)];
        let body = format!(r#"{{"mode":"mleg","order_type":"limit","limit_price":"{limit}"}}"#);
        let id = close_option_strategy(app, strategy, &legs, &body).await;
        let v = strategy_close_now(app, &id).await;
        if fills {
            assert_eq!(v["status"], "success", "{v}");
            let prices: Vec<_> = v["legs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["filled_avg_price"].as_str().unwrap().to_string())
                .collect();
            assert!(
                prices.contains(&"3".to_string()) && prices.contains(&"1.5".to_string()),
                "{prices:?}"
            );
            continue;
        }
        assert_eq!(v["status"], "pending", "resting: {v}");
        assert!(
            v["legs"].as_array().unwrap().iter().all(|l| l["filled_qty"] == "0"),
            "{v}"
        );
        let leg_cr = v["legs"][0]["close_request_id"].as_str().unwrap().to_string();
        let c = app
            .call(
                Method::POST,
                &format!("/close-requests/{leg_cr}/cancel"),
                &[],
                Some("{}"),
            )
            .await;
        assert_eq!(c.status, 202, "{}", c.body);
        settle(app).await;
        for leg in ["s", "l"] {
            assert_eq!(
                app.position(&format!("{strategy}-{leg}")).await.body["status"],
                "open",
                "{leg}"
            );
        }
    }
    assert_eq!(app.sim.mleg_orders_placed(), 4);
}

/// `qty` in strategy units: closing 1 unit of a 2-unit spread (-4/2: ratio 2:1) is one
/// multi-leg order for 1 unit, each leg closing its share (2 and 1); the strategy close
/// succeeds and the legs stay open with the rest (-2/1), ready to close again.
pub async fn a_strategy_closes_part_of_itself_in_strategy_units(app: &PipelineApp) {
    let legs = [("cs", "DIA260116C00400000", "-4"), ("cl", "DIA260116C00410000", "2")];
    let id = close_option_strategy(app, "pu", &legs, r#"{"mode":"mleg","qty":"1"}"#).await;
    let v = strategy_close_now(app, &id).await;
    assert_eq!(v["status"], "success", "{v}");
    let mut filled: Vec<(String, String)> = v["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["position_id"].as_str().unwrap().into(),
                l["filled_qty"].as_str().unwrap().into(),
            )
        })
        .collect();
    filled.sort();
    assert_eq!(
        filled,
        [
            ("pu-cl".to_string(), "1".to_string()),
            ("pu-cs".to_string(), "2".to_string())
        ]
    );
    assert_eq!(app.sim.mleg_orders_placed(), 1);
    for (p, left) in [("pu-cs", "-2"), ("pu-cl", "1")] {
        let body = app.position(p).await.body;
        assert_eq!(
            (body["status"].as_str(), body["quantity"].as_str()),
            (Some("open"), Some(left)),
            "{p}"
        );
    }
    let s = app.call(Method::GET, "/strategies/pu", &[], None).await;
    assert_eq!(s.body["status"], "open", "{}", s.body);
}

/// One `#[tokio::test]` per scenario for a backend.
#[macro_export]
macro_rules! strategy_tests {
    ($backend:expr) => {
        $crate::strategy_tests!(@api $backend;
            a_strategy_close_is_atomic_and_idempotent,
            a_single_leg_closed_alone_warns_when_it_leaves_a_short_leg_naked,
            a_strategy_close_writes_all_legs_in_one_round_trip,
        );
        $crate::strategy_tests!(@pipeline $backend;
            every_leg_fills_and_the_strategy_close_succeeds: "",
            one_leg_refused_makes_the_strategy_close_partial: "TSLA=reject",
            every_leg_refused_makes_the_strategy_close_an_error: "TSLA=reject,GME=reject",
            a_strategy_close_is_canceled_leg_by_leg: "NVDA=hold,AMZN=hold",
            an_mleg_close_is_one_order_and_each_leg_shows_its_fill: "",
            an_mleg_order_survives_a_crash_and_redelivered_messages: "",
            an_mleg_order_the_broker_refuses_fails_every_leg: "SPY260116P00540000=reject",
            a_refused_mleg_order_is_retried_by_hand_as_one_order: "IWM260116C00250000=reject_first",
            a_strategy_closes_part_of_itself_in_strategy_units: "",
            an_mleg_close_fills_only_at_its_net_limit_or_better: "|QQQ260116C00500000=3,QQQ260116C00510000=1.5",
            a_part_filled_mleg_order_is_retried_as_one_order_for_the_rest:
                "QQQ260116C00500000=partial:1,QQQ260116C00510000=partial:1",
            a_limit_strategy_close_is_an_mleg_order_at_a_net_price:
                "SPY260116C00600000=rest,SPY260116C00590000=rest,SPY260116P00540000=rest,SPY260116P00530000=rest",
        );
    };
    (@api $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let app = $crate::TestApp::new($backend).await;
                $crate::strategy_scenarios::$name(&app).await;
            }
        )*
    };
    (@pipeline $backend:expr; $($name:ident: $scenarios:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::pipeline::PipelineApp::new($backend, $scenarios).await;
                $crate::strategy_scenarios::$name(&app).await;
            }
        )*
    };
}
