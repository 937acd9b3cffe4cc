//! Order options, partial closes, listings, strategies, cancel and manual retry through the
//! real router, each on every backend by `options_tests!`: the API scenarios on the plain
//! harness, the broker ones on the pipeline harness (simulated broker, webhooks, driver).

use axum::http::Method;
use serde_json::Value;

use crate::pipeline::PipelineApp;
use crate::{Reply, TestApp, TOKEN_ACCT2};

fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.body["error"].as_str()), (status, Some(code)), "{}", r.body);
}

async fn snapshot(app: &TestApp, id: &str) -> closeflow_domain::PositionAggregate {
    app.aggregate(id).await
}

/// Every refused option is a stable 400 code, and none writes anything.
pub async fn close_options_are_refused_with_stable_codes_and_change_nothing(app: &TestApp) {
    app.open_position("opt-1", "-5").await;
    let before = snapshot(app, "opt-1").await;
    for (body, code) in [
        (r#"{"qty":"0"}"#, "invalid_qty"),
        (r#"{"qty":"-1"}"#, "invalid_qty"),
        (r#"{"qty":"5.0001"}"#, "invalid_qty"),
        (r#"{"order_type":"limit"}"#, "invalid_limit_price"),
        (r#"{"order_type":"market","limit_price":"10"}"#, "invalid_limit_price"),
        (r#"{"order_type":"limit","limit_price":"0"}"#, "invalid_limit_price"),
        (r#"{"time_in_force":"ioc"}"#, "invalid_time_in_force"),
        (r#"{"extended_hours":true}"#, "invalid_extended_hours"),
        (
            r#"{"order_type":"limit","limit_price":"10","time_in_force":"gtc","extended_hours":true}"#,
            "invalid_extended_hours",
        ),
        (r#"{"limit_price":"x"}"#, "invalid_body"),
        (r#"{"extended_hours":"yes"}"#, "invalid_body"),
        (r#"{"qty":"1","stop_price":"2"}"#, "invalid_body"),
    ] {
        let r = app.close_with("opt-1", "k-opt", Some(body)).await;
        assert_error(&r, 400, code);
    }
    // Options only trade day orders.
    let r = app
        .put_position(
            "opt-2",
            r#"{"account_id":"acct-1","symbol":"AAPL260116C00200000","asset_type":"option","quantity":2}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    let gtc = r#"{"order_type":"limit","limit_price":"1.5","time_in_force":"gtc"}"#;
    assert_error(
        &app.close_with("opt-2", "k-gtc", Some(gtc)).await,
        400,
        "invalid_time_in_force",
    );
    assert_eq!(snapshot(app, "opt-1").await, before);
    assert!(app.stored_idempotency_keys("opt-1").await.is_empty());
    assert!(app.stored_idempotency_keys("opt-2").await.is_empty());
    // The key was never consumed.
    let ok = app
        .close_with(
            "opt-1",
            "k-opt",
            Some(r#"{"qty":2,"order_type":"limit","limit_price":"101.5","time_in_force":"day","extended_hours":true}"#),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

/// A partial limit close says what it is; the fingerprint covers every option.
pub async fn a_partial_limit_close_says_so_and_its_key_covers_the_options(app: &TestApp) {
    app.open_position("part-1", "-10").await;
    let body = r#"{"qty":"2.5","order_type":"limit","limit_price":"187.25","reason":"trim"}"#;
    let r = app.close_with("part-1", "k-part", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["target_qty"].as_str(), r.body["partial"].as_bool()),
        (Some("2.5"), Some(true))
    );
    let cr = app.get(&format!("/close-requests/{}", r.str("close_request_id"))).await;
    assert_eq!(
        (
            cr.body["position_qty"].as_str(),
            cr.body["order_type"].as_str(),
            cr.body["limit_price"].as_str(),
            cr.body["time_in_force"].as_str(),
            cr.body["extended_hours"].as_bool()
        ),
        (Some("10"), Some("limit"), Some("187.25"), Some("day"), Some(false))
    );
    // Replayed with the same body; another price under the same key is another request.
    assert_eq!(app.close_with("part-1", "k-part", Some(body)).await.status, 200);
    let other = r#"{"qty":"2.5","order_type":"limit","limit_price":"187.30","reason":"trim"}"#;
    assert_error(
        &app.close_with("part-1", "k-part", Some(other)).await,
        422,
        "idempotency_key_reused",
    );
}

async fn register(app: &TestApp, id: &str, account: &str, strategy: Option<&str>) {
    let strategy = strategy.map_or(String::new(), |s| format!(r#","strategy_id":"{s}""#));
    let r = app
        .put_position(
            id,
            &format!(r#"{{"account_id":"{account}","symbol":"SPY","asset_type":"equity","quantity":3{strategy}}}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

fn listed(r: &Reply) -> Vec<String> {
    r.body["positions"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .map(|p| p["position_id"].as_str().unwrap().to_string())
        .collect()
}

/// `GET /positions`: the caller's accounts only, newest first, paged by cursor.
pub async fn positions_are_listed_newest_first_in_pages_for_the_callers_accounts(app: &TestApp) {
    for (i, id) in ["ls-1", "ls-2", "ls-3"].iter().enumerate() {
        app.clock.advance(chrono::TimeDelta::seconds(1));
        register(app, id, "acct-2", (i != 1).then_some("ic-9")).await;
    }
    register(app, "ls-other", "acct-3", Some("ic-9")).await;
    let as_acct2 = |path: String| async move {
        app.call(
            Method::GET,
            &path,
            &[("authorization", &format!("Bearer {TOKEN_ACCT2}"))],
            None,
        )
        .await
    };
    let first = as_acct2("/positions?limit=2".into()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(listed(&first), ["ls-3", "ls-2"]);
    let cursor = first.str("next_cursor");
    let second = as_acct2(format!("/positions?limit=2&cursor={cursor}")).await;
    assert_eq!(listed(&second), ["ls-1"]);
    assert_eq!(second.body["next_cursor"], Value::Null);
    // Filters.
    let legs = as_acct2("/positions?strategy_id=ic-9".into()).await;
    assert_eq!(listed(&legs), ["ls-3", "ls-1"], "another account's leg is not shown");
    let open = as_acct2("/positions?account_id=acct-2&status=open".into()).await;
    assert_eq!(listed(&open).len(), 3);
    let closing = as_acct2("/positions?account_id=acct-2&status=closing".into()).await;
    assert!(listed(&closing).is_empty());
    // Another account named outright: 403; the all-accounts caller must name one.
    assert_error(&as_acct2("/positions?account_id=acct-3".into()).await, 403, "forbidden");
    assert_error(&app.get("/positions").await, 400, "account_id_required");
    assert_eq!(listed(&app.get("/positions?account_id=acct-3").await), ["ls-other"]);
    for bad in ["limit=0", "limit=101", "status=gone", "colour=red", "limit=1&limit=2"] {
        assert_error(
            &app.get(&format!("/positions?account_id=acct-2&{bad}")).await,
            400,
            "invalid_query",
        );
    }
    for bad in ["zz", "00", &hex::encode("no-hash-here")] {
        assert_error(
            &app.get(&format!("/positions?account_id=acct-2&cursor={bad}")).await,
            400,
            "invalid_cursor",
        );
    }
}

/// `GET /strategies/{id}`: its legs and the status they add up to; 404 otherwise.
pub async fn a_strategy_answers_its_legs_and_status(app: &TestApp) {
    register(app, "st-1", "acct-1", Some("ic-1")).await;
    register(app, "st-2", "acct-1", Some("ic-1")).await;
    let s = app.get("/strategies/ic-1").await;
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(
        (s.body["strategy_id"].as_str(), s.body["status"].as_str()),
        (Some("ic-1"), Some("open"))
    );
    assert_eq!(s.body["legs"].as_array().unwrap().len(), 2);
    assert_eq!(app.close("st-1", "k").await.status, 201);
    assert_eq!(app.get("/strategies/ic-1").await.body["status"], "closing");
    assert_error(&app.get("/strategies/no-such").await, 404, "strategy_not_found");
    // Another account's strategy answers like a missing one.
    let r = app
        .call(
            Method::GET,
            "/strategies/ic-1",
            &[("authorization", &format!("Bearer {TOKEN_ACCT2}"))],
            None,
        )
        .await;
    assert_error(&r, 404, "strategy_not_found");
}

/// Cancel and retry refusals: unknown ids, nothing working, nothing to retry; no writes.
pub async fn cancel_and_retry_refuse_what_they_cannot_do(app: &TestApp) {
    app.open_position("m-1", "4").await;
    let cr = app.close("m-1", "k").await.str("close_request_id");
    let before = snapshot(app, "m-1").await;
    let post = |path: String, key: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = key.map(|k| vec![("idempotency-key", k)]).unwrap_or_default();
        app.call(Method::POST, &path, &headers, None).await
    };
    assert_error(
        &post(format!("/close-requests/{cr}/cancel"), None).await,
        409,
        "not_cancelable",
    );
    assert_error(
        &post(format!("/close-requests/{cr}/retry"), Some("r")).await,
        409,
        "not_retryable",
    );
    assert_error(
        &post(format!("/close-requests/{cr}/retry"), None).await,
        400,
        "missing_idempotency_key",
    );
    let unknown = "0b9d5d8a-9c33-8e61-8000-000000000000";
    assert_error(
        &post(format!("/close-requests/{unknown}/cancel"), None).await,
        404,
        "close_request_not_found",
    );
    assert_error(
        &post("/close-requests/nope/retry".into(), Some("r")).await,
        400,
        "invalid_close_request_id",
    );
    // Another account's close request answers like a missing one.
    let r = app
        .call(
            Method::POST,
            &format!("/close-requests/{cr}/cancel"),
            &[("authorization", &format!("Bearer {TOKEN_ACCT2}"))],
            None,
        )
        .await;
    assert_error(&r, 404, "close_request_not_found");
    assert_eq!(snapshot(app, "m-1").await, before);
}

// ---- With the broker (pipeline harness) ----

async fn register_symbol(app: &PipelineApp, id: &str, symbol: &str, qty: &str) {
    let r = app
        .call(
            Method::PUT,
            &format!("/positions/{id}"),
            &[],
            Some(&format!(
                r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":{qty}}}"#
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn close_with(app: &PipelineApp, id: &str, key: &str, body: &str) -> String {
    let r = app
        .call(
            Method::POST,
            &format!("/positions/{id}/close"),
            &[("idempotency-key", key)],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.str("close_request_id")
}

async fn consistent(app: &PipelineApp, id: &str) {
    let agg = app.aggregate(id).await;
    assert_eq!(
        closeflow_domain::check_invariants(&agg.position, agg.latest_close_request.as_ref()),
        vec![]
    );
}

/// A limit order resting at the broker is canceled: nothing is assumed until the broker
/// confirms, then the position is open again and exactly one order was placed.
pub async fn a_resting_limit_close_is_canceled_and_the_position_reopens(app: &PipelineApp) {
    register_symbol(app, "c-1", "AAPL", "10").await;
    let cr = close_with(app, "c-1", "k", r#"{"order_type":"limit","limit_price":"250"}"#).await;
    app.driver.pump().await;
    assert_eq!(
        app.close_request(&cr).await.body["status"],
        "submitted",
        "resting at the broker"
    );
    let r = app
        .call(Method::POST, &format!("/close-requests/{cr}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body["cancel_requested_at"].is_string());
    app.driver.pump().await;
    assert_eq!(app.position("c-1").await.body["status"], "open");
    let done = app.close_request(&cr).await;
    assert_eq!(
        (done.body["status"].as_str(), done.body["filled_qty"].as_str()),
        (Some("failed"), Some("0"))
    );
    assert_eq!(app.sim.orders_placed(), 1);
    // Nothing is working any more.
    let again = app
        .call(Method::POST, &format!("/close-requests/{cr}/cancel"), &[], None)
        .await;
    assert_eq!(again.status, 409);
    consistent(app, "c-1").await;
}

/// The broker refuses attempt 1; a human retries: attempt 2 (same close request, new client
/// order id) closes the position. The retry key replays.
pub async fn a_failed_close_is_retried_by_hand_and_closes(app: &PipelineApp) {
    register_symbol(app, "r-1", "GOOG", "10").await;
    let cr = close_with(app, "r-1", "k", "{}").await;
    app.driver.pump().await;
    assert_eq!(app.position("r-1").await.body["status"], "close_failed");
    let retry = |key: &'static str, body: &'static str| {
        let path = format!("/close-requests/{cr}/retry");
        async move {
            app.call(Method::POST, &path, &[("idempotency-key", key)], Some(body))
                .await
        }
    };
    let r = retry("r-key", r#"{"order_type":"limit","limit_price":"90"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (r.body["manual_retries"].as_u64(), r.body["status"].as_str()),
        (Some(1), Some("pending"))
    );
    let replay = retry("r-key", r#"{"order_type":"limit","limit_price":"90"}"#).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(retry("r-key", "{}").await.status, 422);
    app.driver.pump().await;
    assert_eq!(app.position("r-1").await.body["status"], "closed");
    let done = app.close_request(&cr).await;
    let attempts: Vec<_> = done.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [2], "the refused attempt placed nothing; the retry one order");
    assert_eq!(done.body["limit_price"], "90", "the retry's own price");
    assert_eq!(app.sim.orders_placed(), 1);
    assert_eq!(retry("r-other", "{}").await.status, 409, "closed: not retryable");
    consistent(app, "r-1").await;
}

/// A partial close fills: the position stays open with the rest and can be closed again.
pub async fn a_partial_close_leaves_the_rest_open_and_a_second_close_ends_it(app: &PipelineApp) {
    register_symbol(app, "p-1", "MSFT", "-10").await;
    let cr = close_with(app, "p-1", "k1", r#"{"qty":"4"}"#).await;
    app.driver.pump().await;
    let p = app.position("p-1").await;
    assert_eq!(
        (p.body["status"].as_str(), p.body["quantity"].as_str()),
        (Some("open"), Some("-6"))
    );
    let c = app.close_request(&cr).await;
    assert_eq!(
        (
            c.body["status"].as_str(),
            c.body["filled_qty"].as_str(),
            c.body["partial"].as_bool()
        ),
        (Some("completed"), Some("4"), Some(true))
    );
    consistent(app, "p-1").await;
    close_with(app, "p-1", "k2", "{}").await;
    app.driver.pump().await;
    let p = app.position("p-1").await;
    assert_eq!(
        (
            p.body["status"].as_str(),
            p.body["quantity"].as_str(),
            p.body["closed_quantity"].as_str()
        ),
        (Some("closed"), Some("0"), Some("-6")),
        "a closed position holds nothing; what it held last is closed_quantity"
    );
    consistent(app, "p-1").await;
}

/// A canceled partial fill is not retried automatically: the reconciler hands it to a
/// human (close_failed, `close_canceled` alert), who may retry the rest.
pub async fn a_canceled_part_fill_waits_for_a_human(app: &PipelineApp) {
    register_symbol(app, "cp-1", "NVDA", "10").await;
    let cr = close_with(app, "cp-1", "k", r#"{"order_type":"limit","limit_price":"50"}"#).await;
    app.driver.pump().await;
    // The broker fills 3, then the trader cancels the rest.
    let coid = closeflow_domain::ClientOrderId::new(closeflow_domain::CloseRequestId::parse(&cr).unwrap(), 1);
    app.sim.engine().force(
        &coid.to_string(),
        closeflow_pipeline::sim_broker::engine::SimStatus::PartiallyFilled,
        closeflow_domain::Quantity::from(3),
        2,
        true,
    );
    app.sim.idle().await;
    let r = app
        .call(Method::POST, &format!("/close-requests/{cr}/cancel"), &[], None)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    app.driver.pump().await;
    assert_eq!(app.position("cp-1").await.body["status"], "close_retryable");
    app.clock.advance(chrono::TimeDelta::minutes(5));
    app.reconcile(&Default::default()).await;
    let p = app.position("cp-1").await;
    assert_eq!(p.body["status"], "close_failed");
    assert_eq!(app.sim.orders_placed(), 1, "no automatic retry after a cancel");
    let r = app
        .call(
            Method::POST,
            &format!("/close-requests/{cr}/retry"),
            &[("idempotency-key", "again")],
            Some(r#"{"order_type":"market"}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    app.driver.pump().await;
    assert_eq!(app.position("cp-1").await.body["status"], "closed");
    assert_eq!(app.close_request(&cr).await.body["filled_qty"], "10");
    consistent(app, "cp-1").await;
}

/// One `#[tokio::test]` per scenario for a backend.
#[macro_export]
macro_rules! options_tests {
    ($backend:expr) => {
        $crate::options_tests!(@api $backend;
            close_options_are_refused_with_stable_codes_and_change_nothing,
            a_partial_limit_close_says_so_and_its_key_covers_the_options,
            positions_are_listed_newest_first_in_pages_for_the_callers_accounts,
            a_strategy_answers_its_legs_and_status,
            cancel_and_retry_refuse_what_they_cannot_do,
        );
        $crate::options_tests!(@pipeline $backend;
            a_resting_limit_close_is_canceled_and_the_position_reopens: "AAPL=rest",
            a_failed_close_is_retried_by_hand_and_closes: "GOOG=reject_first",
            a_partial_close_leaves_the_rest_open_and_a_second_close_ends_it: "",
            a_canceled_part_fill_waits_for_a_human: "NVDA=rest",
        );
    };
    (@api $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let app = $crate::TestApp::new($backend).await;
                $crate::options_scenarios::$name(&app).await;
            }
        )*
    };
    (@pipeline $backend:expr; $($name:ident: $scenarios:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::pipeline::PipelineApp::new($backend, $scenarios).await;
                $crate::options_scenarios::$name(&app).await;
            }
        )*
    };
}
