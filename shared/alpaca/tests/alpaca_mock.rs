//! The Alpaca adapter against a local HTTP mock that answers the way Alpaca's Trading API
//! v2 documents: 200 order, 422 duplicate client_order_id, 403 insufficient qty, 429,
//! 5xx, and a timeout.

use std::time::Duration;

use closeflow_alpaca::{map_status, AlpacaBroker, AlpacaConfig};
use closeflow_domain::{
    AccountId, AssetType, ClientOrderId, CloseRequestId, OrderIntent, OrderStatus, PositionId, Quantity, Side,
};
use closeflow_pipeline::{Broker, BrokerError};
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn acct() -> AccountId {
    AccountId::parse("acct").unwrap()
}

fn coid() -> ClientOrderId {
    ClientOrderId::new(CloseRequestId::new(&PositionId::parse("pos-1").unwrap(), [4; 16]), 1)
}

fn intent(asset_type: AssetType, side: Side) -> OrderIntent {
    OrderIntent {
        client_order_id: coid(),
        account_id: AccountId::parse("acct").unwrap(),
        symbol: if asset_type == AssetType::Option {
            "AAPL240119C00150000"
        } else {
            "AAPL"
        }
        .into(),
        asset_type,
        side,
        qty: Quantity::from(10),
        options: closeflow_domain::OrderOptions::MARKET,
    }
}

fn order_json(status: &str, filled: &str) -> Value {
    json!({
        "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
        "client_order_id": coid().to_string(),
        "created_at": "2026-03-16T18:38:01.942282Z",
        "updated_at": "2026-03-16T18:38:02.000000Z",
        "submitted_at": "2026-03-16T18:38:01.937734Z",
        "filled_at": null,
        "asset_class": "us_equity",
        "symbol": "AAPL",
        "qty": "10",
        "filled_qty": filled,
        "filled_avg_price": if filled == "0" { Value::Null } else { json!("187.42") },
        "order_type": "market",
        "type": "market",
        "side": "sell",
        "time_in_force": "day",
        "status": status,
        "extended_hours": false
    })
}

fn config(server: &MockServer, timeout: Duration) -> AlpacaConfig {
    AlpacaConfig {
        base_url: server.uri(),
        key_id: "key-id".into(),
        secret_key: "secret".into(),
        timeout,
    }
}

async fn broker(server: &MockServer, timeout: Duration) -> AlpacaBroker {
    AlpacaBroker::new(config(server, timeout)).unwrap()
}

#[tokio::test]
async fn a_closing_sell_is_sent_with_keys_and_client_order_id_and_read_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(header("APCA-API-KEY-ID", "key-id"))
        .and(header("APCA-API-SECRET-KEY", "secret"))
        .and(body_partial_json(json!({
            "symbol": "AAPL", "qty": "10", "side": "sell", "type": "market",
            "time_in_force": "day", "client_order_id": coid().to_string()
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("accepted", "0")))
        .expect(1)
        .mount(&server)
        .await;
    let o = broker(&server, Duration::from_secs(2))
        .await
        .submit_order(&intent(AssetType::Equity, Side::Sell))
        .await
        .unwrap();
    assert_eq!(o.status, OrderStatus::Accepted);
    assert_eq!(o.client_order_id, coid());
    assert_eq!(o.broker_order_id, "61e69015-8549-4bfd-b9c3-01e75843f47d");
}

#[tokio::test]
async fn a_limit_close_sends_its_type_price_time_in_force_and_extended_hours() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(body_partial_json(json!({
            "type": "limit", "limit_price": "187.25", "time_in_force": "gtc", "extended_hours": true
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
        .expect(1)
        .mount(&server)
        .await;
    let mut limit = intent(AssetType::Equity, Side::Sell);
    limit.options = closeflow_domain::OrderOptions {
        time_in_force: closeflow_domain::TimeInForce::Gtc,
        extended_hours: true,
        ..closeflow_domain::OrderOptions::limit(
            closeflow_domain::Price::new(Quantity::parse("187.25").unwrap()).unwrap(),
        )
    };
    broker(&server, Duration::from_secs(2))
        .await
        .submit_order(&limit)
        .await
        .unwrap();
}

#[tokio::test]
async fn option_closes_carry_a_closing_position_intent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(body_partial_json(
            json!({"side": "buy", "position_intent": "buy_to_close"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
        .expect(1)
        .mount(&server)
        .await;
    broker(&server, Duration::from_secs(2))
        .await
        .submit_order(&intent(AssetType::Option, Side::Buy))
        .await
        .unwrap();
}

async fn submit_answer(status: u16, body: Value) -> Result<(), BrokerError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    broker(&server, Duration::from_secs(2))
        .await
        .submit_order(&intent(AssetType::Equity, Side::Sell))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_duplicate_client_order_id_is_reported_as_such_not_as_a_rejection() {
    let r = submit_answer(
        422,
        json!({"code": 40010001, "message": "client_order_id must be unique"}),
    )
    .await;
    assert_eq!(r, Err(BrokerError::DuplicateClientOrderId));
}

#[tokio::test]
async fn insufficient_qty_without_holding_orders_and_invalid_orders_are_definitive_rejections() {
    let r = submit_answer(
        403,
        json!({"code": 40310000, "message": "insufficient qty available for order (requested: 10, available: 0)"}),
    )
    .await;
    assert_eq!(
        r,
        Err(BrokerError::Rejected(
            "insufficient qty available for order (requested: 10, available: 0)".into()
        ))
    );
    let r = submit_answer(422, json!({"code": 40010001, "message": "qty must be > 0"})).await;
    assert_eq!(r, Err(BrokerError::Rejected("qty must be > 0".into())));
}

#[tokio::test]
async fn server_errors_are_ambiguous_and_429_and_bad_credentials_say_try_later() {
    for (status, body) in [
        (500, json!({"message": "internal server error"})),
        (503, json!({"message": "service unavailable"})),
    ] {
        let r = submit_answer(status, body).await;
        assert!(matches!(r, Err(BrokerError::Ambiguous(_))), "{status}: {r:?}");
    }
    let r = submit_answer(429, json!({"message": "rate limit exceeded"})).await;
    assert!(matches!(r, Err(BrokerError::RateLimited { .. })), "{r:?}");
    for (status, body) in [
        (401, json!({"code": 40110000, "message": "request is not authorized"})),
        (403, json!({"message": "forbidden."})),
    ] {
        let r = submit_answer(status, body).await;
        assert!(
            matches!(&r, Err(e @ BrokerError::CredentialsRejected(_)) if e.is_try_later()),
            "{status}: {r:?}"
        );
    }
}

/// A 429 carries the window's reset; the adapter pauses the key pair until then (here
/// past its wait bound, so the next request is delayed without being sent at all).
#[tokio::test]
async fn a_429_pauses_the_key_pair_until_the_reset_and_sends_nothing_meanwhile() {
    let server = MockServer::start().await;
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Limit", "200")
                .insert_header("X-RateLimit-Remaining", "0")
                .insert_header("X-RateLimit-Reset", reset.to_string().as_str())
                .set_body_json(json!({"code": 42910000, "message": "rate limit exceeded"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    let Err(BrokerError::RateLimited { retry_after }) = b.submit_order(&intent(AssetType::Equity, Side::Sell)).await
    else {
        panic!("rate limited")
    };
    assert!(retry_after > Duration::from_secs(25), "{retry_after:?}");
    // Paused: answered at once, nothing sent (the mock expects exactly one request).
    let again = b.submit_order(&intent(AssetType::Equity, Side::Sell)).await;
    assert!(matches!(again, Err(BrokerError::RateLimited { .. })), "{again:?}");
    let lookup = b.get_order_by_client_id(&acct(), &coid()).await;
    assert!(matches!(lookup, Err(e) if e.is_try_later()));
}

/// `X-RateLimit-Remaining: 0` on a successful answer: the next request waits for the
/// reset (short here, so it waits rather than failing) and then goes through.
#[tokio::test]
async fn remaining_zero_makes_the_next_request_wait_for_the_reset() {
    let server = MockServer::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-RateLimit-Remaining", "0")
                .insert_header("X-RateLimit-Reset", now.as_secs().to_string().as_str())
                .set_body_json(order_json("new", "0")),
        )
        .expect(2)
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    b.get_order_by_client_id(&acct(), &coid()).await.unwrap();
    let started = std::time::Instant::now();
    b.get_order_by_client_id(&acct(), &coid()).await.unwrap();
    // The reset is "this second": the pause ends with it, at most a second and a bit on.
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_millis(1) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
}

/// Our own pacing: 2 requests a minute, and a wait bound of 100 ms; the third is not sent.
#[tokio::test]
async fn the_key_pairs_budget_is_spent_evenly_and_past_it_the_work_is_delayed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
        .expect(2)
        .mount(&server)
        .await;
    let b = AlpacaBroker::with_limits(
        config(&server, Duration::from_secs(2)),
        closeflow_alpaca::Limits {
            requests: 2,
            max_wait: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..2 {
        b.get_order_by_client_id(&acct(), &coid()).await.unwrap();
    }
    let third = b.get_order_by_client_id(&acct(), &coid()).await;
    assert!(matches!(third, Err(BrokerError::RateLimited { .. })), "{third:?}");
}

#[tokio::test]
async fn the_circuit_breaker_opens_after_repeated_failures_and_closes_after_the_cool_down() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "unavailable"})))
        .up_to_n_times(3)
        .expect(3)
        .mount(&server)
        .await;
    let b = AlpacaBroker::with_limits(
        config(&server, Duration::from_secs(2)),
        closeflow_alpaca::Limits {
            breaker_failures: 3,
            cool_down: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        let r = b.get_order_by_client_id(&acct(), &coid()).await;
        assert!(matches!(r, Err(BrokerError::Ambiguous(_))), "{r:?}");
    }
    assert!(b.breaker_open());
    // Open: the broker is left alone (nothing sent: the mock counts), the work waits.
    let r = b.get_order_by_client_id(&acct(), &coid()).await;
    assert!(
        matches!(&r, Err(e @ BrokerError::Unavailable { .. }) if e.is_try_later()),
        "{r:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("filled", "10")))
        .mount(&server)
        .await;
    let o = b.get_order_by_client_id(&acct(), &coid()).await.unwrap();
    assert_eq!(o.status, OrderStatus::Filled);
    assert!(!b.breaker_open(), "closed again");
}

#[tokio::test]
async fn shares_held_by_open_orders_are_blocked_with_the_held_quantity() {
    let r = submit_answer(
        403,
        json!({"code": 40310000, "message": "insufficient qty available for order (requested: 10, available: 0)",
               "symbol": "AAPL", "available": "0", "existing_qty": "10", "held_for_orders": "10",
               "related_orders": ["b1e6b0a4-0000-4000-8000-000000000001"]}),
    )
    .await;
    assert_eq!(
        r,
        Err(BrokerError::BlockedByOpenOrders {
            held_qty: Quantity::from(10),
            message: "insufficient qty available for order (requested: 10, available: 0)".into()
        })
    );
}

#[tokio::test]
async fn a_replaced_order_is_followed_to_its_replacement_never_read_as_canceled() {
    let server = MockServer::start().await;
    let mut replaced = order_json("replaced", "0");
    replaced["replaced_by"] = json!("repl-1");
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(replaced))
        .mount(&server)
        .await;
    let mut replacement = order_json("filled", "10");
    replacement["id"] = json!("repl-1");
    replacement["client_order_id"] = json!("a-uuid-the-broker-chose");
    replacement["replaces"] = json!("61e69015-8549-4bfd-b9c3-01e75843f47d");
    Mock::given(method("GET"))
        .and(path("/v2/orders/repl-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(replacement))
        .expect(1)
        .mount(&server)
        .await;
    let o = broker(&server, Duration::from_secs(2))
        .await
        .get_order_by_client_id(&acct(), &coid())
        .await
        .unwrap();
    assert_eq!(o.client_order_id, coid(), "the attempt keeps its client order id");
    assert_eq!(o.broker_order_id, "repl-1", "the replacement is the attempt's order");
    assert_eq!((o.status, o.filled_qty), (OrderStatus::Filled, Quantity::from(10)));
}

#[tokio::test]
async fn open_orders_of_a_symbol_are_listed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/orders"))
        .and(query_param("status", "open"))
        .and(query_param("symbols", "AAPL"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"id": "o-9", "client_order_id": "manual", "symbol": "AAPL", "qty": "10", "filled_qty": "0", "status": "new"}
        ])))
        .mount(&server)
        .await;
    let open = broker(&server, Duration::from_secs(2))
        .await
        .open_orders(&acct(), "AAPL")
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].broker_order_id.as_str(), open[0].qty),
        ("o-9", Quantity::from(10))
    );
}

#[tokio::test]
async fn account_equity_is_read_exactly_from_the_account() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/account"))
        .and(header("APCA-API-KEY-ID", "key-id"))
        .and(header("APCA-API-SECRET-KEY", "secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "e6fe16f3-64a4-4921-8928-cadf02f92f98",
            "status": "ACTIVE",
            "cash": "4000.32",
            "equity": "103820.56000000000000001",
            "last_equity": "103529.24",
            "portfolio_value": "103820.56",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let equity = broker(&server, Duration::from_secs(2))
        .await
        .account_equity(&acct())
        .await
        .unwrap();
    assert_eq!(equity.to_string(), "103820.56000000000000001", "never through a float");
}

#[tokio::test]
async fn an_account_without_readable_equity_or_a_failed_call_is_an_unknown_answer() {
    for (status, body) in [
        (200, r#"{"equity": 98000.5}"#),
        (200, r#"{"cash": "1"}"#),
        (200, r#"{"equity": null}"#),
        (200, r#"{"equity": "lots"}"#),
        (200, "not json"),
        (503, r#"{"message": "down"}"#),
        (401, r#"{"message": "request is not authorized"}"#),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v2/account"))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .mount(&server)
            .await;
        let r = broker(&server, Duration::from_secs(2))
            .await
            .account_equity(&acct())
            .await;
        match (status, body) {
            (200, b) if b.contains("98000.5") => {
                assert_eq!(r, Ok("98000.5".parse().unwrap()), "a JSON number is read from its text")
            }
            (401, _) => assert!(matches!(r, Err(BrokerError::CredentialsRejected(_))), "{r:?}"),
            _ => assert!(matches!(r, Err(BrokerError::Ambiguous(_))), "{status} {body}: {r:?}"),
        }
    }
}

fn open_order_json(id: &str, symbol: Value, submitted_at: &str) -> Value {
    json!({
        "id": id, "client_order_id": format!("c-{id}"), "symbol": symbol, "qty": "10", "filled_qty": "2.5",
        "status": "new", "submitted_at": submitted_at,
    })
}

#[tokio::test]
async fn every_open_order_of_the_account_is_listed_in_any_symbol() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/orders"))
        .and(query_param("status", "open"))
        .and(query_param("limit", "500"))
        .and(query_param("nested", "false"))
        .and(query_param_is_missing("symbols"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            open_order_json("o-1", json!("AAPL"), "2026-03-16T18:38:01.937734Z"),
            open_order_json("o-2", json!("TSLA"), "2026-03-16T18:38:02.5Z"),
            // A multi-leg order names no symbol of its own.
            open_order_json("o-3", Value::Null, "2026-03-16T18:38:03Z"),
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let open = broker(&server, Duration::from_secs(2))
        .await
        .account_open_orders(&acct())
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = open
        .iter()
        .map(|o| {
            (
                o.broker_order_id.as_str(),
                o.client_order_id.as_str(),
                o.symbol.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("o-1", "c-o-1", "AAPL"), ("o-2", "c-o-2", "TSLA"), ("o-3", "c-o-3", "")]
    );
    assert_eq!(
        (open[0].qty, open[0].filled_qty),
        (Quantity::from(10), Quantity::parse("2.5").unwrap())
    );
}

#[tokio::test]
async fn more_than_a_page_of_open_orders_is_read_to_the_end_without_skipping_a_shared_instant() {
    let server = MockServer::start().await;
    // 500 orders, the last two submitted at the same instant.
    let first: Vec<Value> = (0..500)
        .map(|i| {
            let at = format!("2026-03-16T18:{:02}:{:02}.000000001Z", i.min(498) / 60, i.min(498) % 60);
            open_order_json(&format!("o-{i}"), json!("AAPL"), &at)
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/v2/orders"))
        .and(query_param_is_missing("after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(Value::Array(first)))
        .expect(1)
        .mount(&server)
        .await;
    // The next page starts 1 ns before the last one seen: the two at that instant again,
    // then one more.
    Mock::given(method("GET"))
        .and(path("/v2/orders"))
        .and(query_param("after", "2026-03-16T18:08:18.000000000Z"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            open_order_json("o-498", json!("AAPL"), "2026-03-16T18:08:18.000000001Z"),
            open_order_json("o-499", json!("AAPL"), "2026-03-16T18:08:18.000000001Z"),
            open_order_json("o-500", json!("MSFT"), "2026-03-16T18:09:00Z"),
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let open = broker(&server, Duration::from_secs(2))
        .await
        .account_open_orders(&acct())
        .await
        .unwrap();
    assert_eq!(open.len(), 501, "each order once");
    assert_eq!(open[500].symbol, "MSFT");
}

#[tokio::test]
async fn an_open_order_listing_that_cannot_be_completed_is_an_error_not_a_short_list() {
    let server = MockServer::start().await;
    // A broker that ignores `after`: the same full page again and again.
    let page: Vec<Value> = (0..500)
        .map(|i| open_order_json(&format!("o-{i}"), json!("AAPL"), "2026-03-16T18:38:01Z"))
        .collect();
    Mock::given(method("GET"))
        .and(path("/v2/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(Value::Array(page)))
        .mount(&server)
        .await;
    let r = broker(&server, Duration::from_secs(2))
        .await
        .account_open_orders(&acct())
        .await;
    assert!(matches!(r, Err(BrokerError::Ambiguous(_))), "{r:?}");
}

#[tokio::test]
async fn a_timeout_is_ambiguous_never_a_rejection() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(order_json("accepted", "0"))
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&server)
        .await;
    let r = broker(&server, Duration::from_millis(100))
        .await
        .submit_order(&intent(AssetType::Equity, Side::Sell))
        .await;
    assert_eq!(r, Err(BrokerError::Ambiguous("timeout".into())));
}

#[tokio::test]
async fn orders_are_found_by_client_order_id_and_404_means_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .and(query_param("client_order_id", coid().to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("partially_filled", "4")))
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    let o = b.get_order_by_client_id(&acct(), &coid()).await.unwrap();
    assert_eq!(
        (o.status, o.filled_qty),
        (OrderStatus::PartiallyFilled, Quantity::from(4))
    );
    assert_eq!(o.filled_avg_price, closeflow_domain::Price::parse("187.42").unwrap());

    let other = ClientOrderId::new(coid().close_request_id, 2);
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .and(query_param("client_order_id", other.to_string()))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"code": 40410000, "message": "order not found"})))
        .mount(&server)
        .await;
    assert_eq!(
        b.get_order_by_client_id(&acct(), &other).await,
        Err(BrokerError::NotFound)
    );
}

#[tokio::test]
async fn cancel_and_positions() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v2/orders/o-1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/orders/o-done"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "order is not cancelable"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/positions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"symbol": "AAPL", "qty": "10", "side": "long", "asset_class": "us_equity"},
            {"symbol": "TSLA", "qty": "5", "side": "short", "asset_class": "us_equity"}
        ])))
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    assert_eq!(b.cancel_order(&acct(), "o-1").await, Ok(()));
    assert_eq!(b.cancel_order(&acct(), "o-done").await, Ok(()));
    assert_eq!(b.cancel_order(&acct(), "o-missing").await, Err(BrokerError::NotFound));
    let p = b.list_positions(&acct()).await.unwrap();
    assert_eq!(p[0].qty, Quantity::from(10));
    assert_eq!(p[1].qty, Quantity::from(-5));
}

#[test]
fn every_alpaca_order_status_is_mapped() {
    let zero = Quantity::ZERO;
    let some = Quantity::from(3);
    let working = [
        "new",
        "pending_new",
        "pending_review",
        "accepted",
        "accepted_for_bidding",
        "held",
        "suspended",
        "stopped",
        "partially_filled",
        "done_for_day",
        "pending_cancel",
        "pending_replace",
        "calculated",
        // Lives on as its replacement: never canceled (see the replaced test).
        "replaced",
    ];
    for s in working {
        assert_eq!(map_status(s, zero), Some(OrderStatus::Accepted), "{s}");
        assert_eq!(map_status(s, some), Some(OrderStatus::PartiallyFilled), "{s}");
    }
    assert_eq!(map_status("filled", some), Some(OrderStatus::Filled));
    assert_eq!(map_status("canceled", some), Some(OrderStatus::Canceled));
    assert_eq!(map_status("expired", zero), Some(OrderStatus::Expired));
    assert_eq!(map_status("rejected", zero), Some(OrderStatus::Rejected));
    assert_eq!(map_status("something_new", zero), None);
}

#[tokio::test]
async fn quantities_go_out_with_at_most_9_decimals_rounded_down_and_option_symbols_unpadded() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(body_partial_json(
            json!({"symbol": "AAPL240119C00150000", "qty": "1.123456789"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
        .expect(1)
        .mount(&server)
        .await;
    let mut padded = intent(AssetType::Option, Side::Sell);
    padded.symbol = "AAPL  240119C00150000".into();
    padded.qty = Quantity::parse("1.1234567899").unwrap();
    broker(&server, Duration::from_secs(2))
        .await
        .submit_order(&padded)
        .await
        .unwrap();
    assert_eq!(
        closeflow_alpaca::order_qty(Quantity::parse("10.500").unwrap()).unwrap(),
        "10.5"
    );
    assert_eq!(closeflow_alpaca::order_symbol("AAPL", AssetType::Equity), "AAPL");
}

#[tokio::test]
async fn a_quantity_below_alpacas_unit_is_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
        .expect(0)
        .mount(&server)
        .await;
    let mut tiny = intent(AssetType::Equity, Side::Sell);
    tiny.qty = Quantity::parse("0.0000000001").unwrap();
    let r = broker(&server, Duration::from_secs(2)).await.submit_order(&tiny).await;
    assert!(matches!(r, Err(BrokerError::Rejected(_))), "{r:?}");
}

/// Each account trades with its own key pair; the single pair serves every other account.
#[tokio::test]
async fn each_account_uses_its_own_key_pair_and_the_default_serves_the_rest() {
    use closeflow_alpaca::accounts::{AccountBrokers, Credentials, KeyPair};
    let server = MockServer::start().await;
    for key in ["key-acc1", "key-default"] {
        Mock::given(method("POST"))
            .and(path("/v2/orders"))
            .and(header("APCA-API-KEY-ID", key))
            .respond_with(ResponseTemplate::new(200).set_body_json(order_json("new", "0")))
            .expect(1)
            .mount(&server)
            .await;
    }
    let creds = Credentials {
        accounts: Credentials::parse_accounts("ACC1=key-acc1:secret-1").unwrap(),
        default: Some(KeyPair {
            key_id: "key-default".into(),
            secret_key: "secret-d".into(),
        }),
    };
    let brokers = AccountBrokers::new(&creds, &server.uri(), Duration::from_secs(2), Default::default()).unwrap();
    let mut mine = intent(AssetType::Equity, Side::Sell);
    mine.account_id = AccountId::parse("ACC1").unwrap();
    brokers.submit_order(&mine).await.unwrap();
    let mut other = intent(AssetType::Equity, Side::Sell);
    other.account_id = AccountId::parse("ACC2").unwrap();
    brokers.submit_order(&other).await.unwrap();

    let none = AccountBrokers::new(
        &Credentials::default(),
        &server.uri(),
        Duration::from_secs(2),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        none.submit_order(&other).await,
        Err(BrokerError::NoCredentials(AccountId::parse("ACC2").unwrap())),
        "refused before any request"
    );
}

/// A put credit spread closed as one multi-leg order: 2 units of 1:1.
fn mleg_intent() -> closeflow_domain::MlegIntent {
    use closeflow_domain::{MlegLeg, PositionIntent};
    let sc = CloseRequestId::new(&PositionId::parse("ps-long").unwrap(), [9; 16]);
    let leg = |pos: &str, symbol: &str, side: Side| MlegLeg {
        position_id: PositionId::parse(pos).unwrap(),
        client_order_id: ClientOrderId::new(CloseRequestId::new(&PositionId::parse(pos).unwrap(), [4; 16]), 1),
        symbol: symbol.into(),
        asset_type: AssetType::Option,
        side,
        position_intent: PositionIntent::closing(side),
        ratio_qty: Quantity::from(1),
        qty: Quantity::from(2),
    };
    closeflow_domain::MlegIntent {
        client_order_id: ClientOrderId::new(sc, 1),
        account_id: acct(),
        qty: Quantity::from(2),
        legs: vec![
            leg("ps-long", "SPY  260116P00530000", Side::Sell),
            leg("ps-short", "SPY260116P00540000", Side::Buy),
        ],
        options: closeflow_domain::OrderOptions::limit(
            closeflow_domain::Price::new(Quantity::parse("1.35").unwrap()).unwrap(),
        ),
    }
}

fn mleg_json(status: &str, filled: &str, legs: Value) -> Value {
    json!({
        "id": "a5c2b1e0-0d5c-4c52-9a8b-1f6f1d0e2a11",
        "client_order_id": mleg_intent().client_order_id.to_string(),
        "created_at": "2026-03-16T18:38:01.942282Z",
        "updated_at": "2026-03-16T18:38:02.000000Z",
        "asset_class": "",
        "symbol": "",
        "qty": "2",
        "filled_qty": filled,
        "filled_avg_price": null,
        "order_class": "mleg",
        "order_type": "limit",
        "type": "limit",
        "limit_price": "1.35",
        "time_in_force": "day",
        "status": status,
        "legs": legs
    })
}

fn leg_json(id: &str, symbol: &str, side: &str, status: &str, filled: &str, price: Value) -> Value {
    json!({
        "id": id, "client_order_id": format!("alpaca-{id}"), "symbol": symbol, "asset_class": "us_option",
        "order_class": "mleg", "side": side, "ratio_qty": "1", "qty": "2", "status": status,
        "filled_qty": filled, "filled_avg_price": price,
        "position_intent": if side == "sell" { "sell_to_close" } else { "buy_to_close" }
    })
}

#[tokio::test]
async fn a_multi_leg_close_is_one_mleg_order_and_each_leg_reports_its_own_fill() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(wiremock::matchers::body_json(json!({
            "order_class": "mleg",
            "qty": "2",
            "type": "limit",
            "limit_price": "1.35",
            "time_in_force": "day",
            "client_order_id": mleg_intent().client_order_id.to_string(),
            "legs": [
                {"symbol": "SPY260116P00530000", "ratio_qty": "1", "side": "sell", "position_intent": "sell_to_close"},
                {"symbol": "SPY260116P00540000", "ratio_qty": "1", "side": "buy", "position_intent": "buy_to_close"}
            ]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(mleg_json(
            "partially_filled",
            "1",
            json!([
                leg_json(
                    "leg-1",
                    "SPY260116P00530000",
                    "sell",
                    "partially_filled",
                    "1",
                    json!("0.80")
                ),
                leg_json(
                    "leg-2",
                    "SPY260116P00540000",
                    "buy",
                    "partially_filled",
                    "1",
                    json!("2.15")
                ),
            ]),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    assert!(b.supports_mleg());
    let o = b.submit_mleg_order(&mleg_intent()).await.unwrap();
    assert_eq!(o.order.client_order_id, mleg_intent().client_order_id);
    assert_eq!(
        (o.order.status, o.order.filled_qty),
        (OrderStatus::PartiallyFilled, Quantity::from(1))
    );
    let legs: Vec<_> = o
        .legs
        .iter()
        .map(|l| {
            (
                l.symbol.as_str(),
                l.broker_order_id.as_deref(),
                l.status,
                l.filled_qty,
                l.filled_avg_price,
            )
        })
        .collect();
    assert_eq!(
        legs,
        vec![
            (
                "SPY260116P00530000",
                Some("leg-1"),
                Some(OrderStatus::PartiallyFilled),
                Quantity::from(1),
                closeflow_domain::Price::parse("0.80").unwrap()
            ),
            (
                "SPY260116P00540000",
                Some("leg-2"),
                Some(OrderStatus::PartiallyFilled),
                Quantity::from(1),
                closeflow_domain::Price::parse("2.15").unwrap()
            ),
        ]
    );
}

#[tokio::test]
async fn a_multi_leg_order_is_found_by_its_client_order_id_and_refusals_read_as_for_one_leg() {
    let server = MockServer::start().await;
    let id = mleg_intent().client_order_id;
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .and(query_param("client_order_id", id.to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_json(mleg_json(
            "filled",
            "2",
            json!([
                leg_json("leg-1", "SPY260116P00530000", "sell", "filled", "2", json!("0.80")),
                leg_json("leg-2", "SPY260116P00540000", "buy", "filled", "2", json!("2.15")),
            ]),
        )))
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    let o = b.get_mleg_order_by_client_id(&acct(), &id).await.unwrap();
    assert_eq!(o.order.status, OrderStatus::Filled);
    assert!(o
        .legs
        .iter()
        .all(|l| l.filled_qty == Quantity::from(2) && l.status == Some(OrderStatus::Filled)));

    for (status, body, want) in [
        (
            422,
            json!({"code": 40010001, "message": "client_order_id must be unique"}),
            BrokerError::DuplicateClientOrderId,
        ),
        (
            422,
            json!({"code": 42210000, "message": "invalid legs"}),
            BrokerError::Rejected("invalid legs".into()),
        ),
        (
            500,
            json!({"message": "internal"}),
            BrokerError::Ambiguous("HTTP 500 Internal Server Error: internal".into()),
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v2/orders"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
        let got = broker(&server, Duration::from_secs(2))
            .await
            .submit_mleg_order(&mleg_intent())
            .await;
        assert_eq!(got, Err(want));
    }

    // A leg the answer cannot name leaves the outcome unknown: a fill is never guessed.
    let server = MockServer::start().await;
    let mut nameless = leg_json("leg-1", "x", "sell", "filled", "2", json!("0.80"));
    nameless.as_object_mut().unwrap().remove("symbol");
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(mleg_json("filled", "2", json!([nameless]))))
        .mount(&server)
        .await;
    let got = broker(&server, Duration::from_secs(2))
        .await
        .submit_mleg_order(&mleg_intent())
        .await;
    assert!(matches!(got, Err(BrokerError::Ambiguous(_))), "{got:?}");
}

/// A net credit goes to Alpaca as a negative `limit_price` on the multi-leg order.
#[tokio::test]
async fn a_net_credit_is_sent_as_a_negative_limit_price() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/orders"))
        .and(wiremock::matchers::body_partial_json(
            json!({"order_class": "mleg", "limit_price": "-1.35"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(mleg_json(
            "accepted",
            "0",
            json!([
                leg_json("leg-1", "SPY260116P00530000", "sell", "accepted", "0", json!(null)),
                leg_json("leg-2", "SPY260116P00540000", "buy", "accepted", "0", json!(null)),
            ]),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let b = broker(&server, Duration::from_secs(2)).await;
    let mut intent = mleg_intent();
    intent.options.credit = true;
    let o = b.submit_mleg_order(&intent).await.unwrap();
    assert_eq!(o.legs.len(), 2);
}
