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
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

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

async fn broker(server: &MockServer, timeout: Duration) -> AlpacaBroker {
    AlpacaBroker::new(AlpacaConfig {
        base_url: server.uri(),
        key_id: "key-id".into(),
        secret_key: "secret".into(),
        timeout,
    })
    .unwrap()
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
async fn insufficient_qty_and_invalid_orders_are_definitive_rejections() {
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
async fn rate_limits_server_errors_and_bad_credentials_are_ambiguous() {
    for (status, body) in [
        (429, json!({"message": "rate limit exceeded"})),
        (500, json!({"message": "internal server error"})),
        (503, json!({"message": "service unavailable"})),
        (401, json!({"message": "request is not authorized"})),
    ] {
        let r = submit_answer(status, body).await;
        assert!(matches!(r, Err(BrokerError::Ambiguous(_))), "{status}: {r:?}");
    }
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
    let o = b.get_order_by_client_id(&coid()).await.unwrap();
    assert_eq!(
        (o.status, o.filled_qty),
        (OrderStatus::PartiallyFilled, Quantity::from(4))
    );
    assert_eq!(o.filled_avg_price, Some(Quantity::parse("187.42").unwrap()));

    let other = ClientOrderId::new(coid().close_request_id, 2);
    Mock::given(method("GET"))
        .and(path("/v2/orders:by_client_order_id"))
        .and(query_param("client_order_id", other.to_string()))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"code": 40410000, "message": "order not found"})))
        .mount(&server)
        .await;
    assert_eq!(b.get_order_by_client_id(&other).await, Err(BrokerError::NotFound));
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
    assert_eq!(b.cancel_order("o-1").await, Ok(()));
    assert_eq!(b.cancel_order("o-done").await, Ok(()));
    assert_eq!(b.cancel_order("o-missing").await, Err(BrokerError::NotFound));
    let p = b.list_positions().await.unwrap();
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
    ];
    for s in working {
        assert_eq!(map_status(s, zero), Some(OrderStatus::Accepted), "{s}");
        assert_eq!(map_status(s, some), Some(OrderStatus::PartiallyFilled), "{s}");
    }
    assert_eq!(map_status("filled", some), Some(OrderStatus::Filled));
    assert_eq!(map_status("canceled", some), Some(OrderStatus::Canceled));
    assert_eq!(map_status("replaced", zero), Some(OrderStatus::Canceled));
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
