//! The paper broker over loopback, driven by closeflow's real Alpaca adapter (what closeflow
//! will run against it) and by raw HTTP and WebSocket clients for what the adapter does
//! not read (error bodies, headers, listings, the stream).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_domain::{
    AccountId, AssetType, ClientOrderId, CloseRequestId, OrderIntent, OrderStatus, PositionId, Price, Quantity, Side,
};
use closeflow_paper_broker::{router, PaperBroker, PaperConfig, RateLimit};
use closeflow_pipeline::sim_broker::engine::ManualScheduler;
use closeflow_pipeline::{Broker, BrokerError, Clock, ManualClock, SimScenarios};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "test-key";
const SECRET: &str = "test-secret";

struct Paper {
    url: String,
    broker: Arc<PaperBroker>,
    clock: Arc<ManualClock>,
    timer: Arc<ManualScheduler>,
    http: reqwest::Client,
}

async fn paper(scenarios: &str, prices: &str, rate_limit: Option<&str>) -> Paper {
    paper_holding(scenarios, prices, "", rate_limit).await
}

/// A paper broker whose account starts with `positions` (`SIM_BROKER_POSITIONS`).
async fn paper_holding(scenarios: &str, prices: &str, positions: &str, rate_limit: Option<&str>) -> Paper {
    let clock = Arc::new(ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2026, 3, 16, 14, 30, 0).unwrap(),
    ));
    let timer = Arc::new(ManualScheduler::new());
    let mut cfg = PaperConfig::new(
        SimScenarios::parse(scenarios)
            .unwrap()
            .with_prices(prices)
            .unwrap()
            .with_positions(positions)
            .unwrap(),
    );
    cfg.key_id = KEY.into();
    cfg.secret_key = SECRET.into();
    cfg.clock = clock.clone();
    cfg.scheduler = timer.clone();
    cfg.rate_limit = rate_limit.map(|r| RateLimit::parse(r).unwrap());
    let broker = PaperBroker::new(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(broker.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Paper {
        url,
        broker,
        clock,
        timer,
        http: reqwest::Client::new(),
    }
}

impl Paper {
    fn adapter(&self) -> AlpacaBroker {
        self.adapter_with(KEY, SECRET)
    }

    fn adapter_with(&self, key: &str, secret: &str) -> AlpacaBroker {
        AlpacaBroker::new(AlpacaConfig {
            base_url: self.url.clone(),
            key_id: key.into(),
            secret_key: secret.into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// A raw request with the keys: status, headers and JSON body (`Null` when empty).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("APCA-API-KEY-ID", KEY)
            .header("APCA-API-SECRET-KEY", SECRET);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.call(reqwest::Method::GET, path, None).await;
        (s, b)
    }

    async fn order_by_client_id(&self, coid: &ClientOrderId) -> Value {
        let (s, b) = self
            .get(&format!("/v2/orders:by_client_order_id?client_order_id={coid}"))
            .await;
        assert_eq!(s, 200, "{b}");
        b
    }
}

fn acct() -> AccountId {
    AccountId::parse("acct").unwrap()
}

fn coid(position: &str, attempt: u32) -> ClientOrderId {
    ClientOrderId::new(
        CloseRequestId::new(&PositionId::parse(position).unwrap(), [7; 16]),
        attempt,
    )
}

fn sell(symbol: &str, qty: i64, attempt: u32) -> OrderIntent {
    OrderIntent {
        client_order_id: coid(&format!("pos-{symbol}"), attempt),
        account_id: AccountId::parse("acct").unwrap(),
        symbol: symbol.into(),
        asset_type: AssetType::Equity,
        side: Side::Sell,
        qty: Quantity::from(qty),
        options: closeflow_domain::OrderOptions::MARKET,
    }
}

#[tokio::test]
async fn a_close_is_accepted_then_filled_at_the_configured_price_and_read_back() {
    let p = paper("", "AAPL=187.5", None).await;
    let a = p.adapter();
    let intent = sell("AAPL", 10, 1);
    let placed = a.submit_order(&intent).await.unwrap();
    assert_eq!(
        placed.status,
        OrderStatus::Accepted,
        "the answer is the order as accepted"
    );
    assert_eq!(placed.client_order_id, intent.client_order_id);

    let o = a
        .get_order_by_client_id(&acct(), &intent.client_order_id)
        .await
        .unwrap();
    assert_eq!(o.broker_order_id, placed.broker_order_id);
    assert_eq!(
        (o.status, o.filled_qty, o.filled_avg_price),
        (OrderStatus::Filled, Quantity::from(10), Price::parse("187.5").unwrap())
    );

    let (s, raw) = p.get(&format!("/v2/orders/{}", placed.broker_order_id)).await;
    assert_eq!(s, 200);
    assert_eq!(raw["client_order_id"], intent.client_order_id.to_string());
    assert_eq!(
        (&raw["qty"], &raw["filled_qty"], &raw["filled_avg_price"]),
        (&json!("10"), &json!("10"), &json!("187.5"))
    );
    assert_eq!(
        (&raw["side"], &raw["type"], &raw["time_in_force"], &raw["status"]),
        (&json!("sell"), &json!("market"), &json!("day"), &json!("filled"))
    );
    assert_eq!(raw["asset_class"], "us_equity");
    assert!(raw["filled_at"].is_string() && raw["submitted_at"].is_string());
    assert_eq!(raw["canceled_at"], Value::Null);
    assert_eq!(p.broker.engine.orders_placed(), 1);
}

#[tokio::test]
async fn option_closes_keep_their_position_intent() {
    let p = paper("", "", None).await;
    let mut intent = sell("AAPL240119C00150000", 2, 1);
    intent.asset_type = AssetType::Option;
    intent.side = Side::Buy;
    p.adapter().submit_order(&intent).await.unwrap();
    let raw = p.order_by_client_id(&intent.client_order_id).await;
    assert_eq!(
        (&raw["position_intent"], &raw["asset_class"], &raw["side"]),
        (&json!("buy_to_close"), &json!("us_option"), &json!("buy"))
    );
}

#[tokio::test]
async fn a_client_order_id_is_unique_and_a_repeat_is_a_duplicate_not_a_rejection() {
    let p = paper("", "", None).await;
    let a = p.adapter();
    a.submit_order(&sell("AAPL", 10, 1)).await.unwrap();
    assert_eq!(
        a.submit_order(&sell("AAPL", 10, 1)).await,
        Err(BrokerError::DuplicateClientOrderId)
    );
    let (s, _, body) = p
        .call(
            reqwest::Method::POST,
            "/v2/orders",
            Some(json!({"symbol": "AAPL", "qty": "10", "side": "sell", "type": "market",
                         "time_in_force": "day", "client_order_id": coid("pos-AAPL", 1).to_string()})),
        )
        .await;
    assert_eq!(
        (s, body),
        (
            422,
            json!({"code": 40010001, "message": "client_order_id must be unique"})
        )
    );
    assert_eq!(p.broker.engine.orders_placed(), 1);
}

#[tokio::test]
async fn unknown_orders_are_404_with_alpacas_body() {
    let p = paper("", "", None).await;
    let a = p.adapter();
    assert_eq!(
        a.get_order_by_client_id(&acct(), &coid("nobody", 1)).await,
        Err(BrokerError::NotFound)
    );
    assert_eq!(
        a.cancel_order(&acct(), "no-such-order").await,
        Err(BrokerError::NotFound)
    );
    assert_eq!(
        p.get("/v2/orders/no-such-order").await,
        (404, json!({"code": 40410000, "message": "order not found"}))
    );
    assert_eq!(p.get("/v2/nothing-here").await.0, 404);
}

#[tokio::test]
async fn an_open_order_cancels_once_and_a_second_cancel_is_422() {
    let p = paper("NVDA=hold", "", None).await;
    let a = p.adapter();
    let placed = a.submit_order(&sell("NVDA", 4, 1)).await.unwrap();
    assert_eq!(a.cancel_order(&acct(), &placed.broker_order_id).await, Ok(()));
    let o = a
        .get_order_by_client_id(&acct(), &placed.client_order_id)
        .await
        .unwrap();
    assert_eq!((o.status, o.filled_qty), (OrderStatus::Canceled, Quantity::ZERO));
    let (s, _, body) = p
        .call(
            reqwest::Method::DELETE,
            &format!("/v2/orders/{}", placed.broker_order_id),
            None,
        )
        .await;
    assert_eq!((s, body["code"].clone()), (422, json!(42210000)));
    assert_eq!(
        a.cancel_order(&acct(), &placed.broker_order_id).await,
        Ok(()),
        "the adapter reads 422 as nothing left to cancel"
    );
    assert!(p.order_by_client_id(&placed.client_order_id).await["canceled_at"].is_string());
}

#[tokio::test]
async fn positions_and_the_account_follow_the_fills() {
    let p = paper("", "AAPL=187.5,TSLA=250", None).await;
    let a = p.adapter();
    a.submit_order(&sell("AAPL", 10, 1)).await.unwrap();
    let mut buy = sell("TSLA", 4, 1);
    buy.side = Side::Buy;
    a.submit_order(&buy).await.unwrap();
    let positions = a.list_positions(&acct()).await.unwrap();
    assert_eq!(
        positions.iter().map(|p| (p.symbol.as_str(), p.qty)).collect::<Vec<_>>(),
        [("AAPL", Quantity::from(-10)), ("TSLA", Quantity::from(4))]
    );
    let (_, raw) = p.get("/v2/positions").await;
    assert_eq!(
        (&raw[0]["side"], &raw[0]["market_value"], &raw[0]["avg_entry_price"]),
        (&json!("short"), &json!("-1875"), &json!("187.5"))
    );
    let (s, acct) = p.get("/v2/account").await;
    assert_eq!(s, 200);
    // 100000 + 10 × 187.5 sold − 4 × 250 bought.
    assert_eq!(acct["cash"], "100875");
    assert_eq!(
        (&acct["long_market_value"], &acct["short_market_value"], &acct["equity"]),
        (&json!("1000"), &json!("-1875"), &json!("100000"))
    );
    assert_eq!(acct["status"], "ACTIVE");
}

/// A raw request with the keys and a JSON body.
async fn paper_call(p: &Paper, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = p.call(method, path, Some(body)).await;
    (s, b)
}

#[tokio::test]
async fn seeded_holdings_are_listed_in_alpacas_shape_and_move_with_fills() {
    let p = paper_holding("", "IBM=130", "ACC1:IBM=7@120,ACC1:AAPL=-3", None).await;
    let (s, raw) = p.get("/v2/positions").await;
    assert_eq!(s, 200);
    assert_eq!(
        raw,
        json!([
            {"symbol": "AAPL", "exchange": "NASDAQ", "asset_class": "us_equity", "qty": "-3",
             "qty_available": "-3", "side": "short", "avg_entry_price": "100", "current_price": "100",
             "lastday_price": "100", "market_value": "-300", "cost_basis": "-300", "unrealized_pl": "0",
             "unrealized_plpc": "0", "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0",
             "change_today": "0"},
            {"symbol": "IBM", "exchange": "NASDAQ", "asset_class": "us_equity", "qty": "7",
             "qty_available": "7", "side": "long", "avg_entry_price": "120", "current_price": "130",
             "lastday_price": "130", "market_value": "910", "cost_basis": "840", "unrealized_pl": "70",
             "unrealized_plpc": "0.083333333", "unrealized_intraday_pl": "70",
             "unrealized_intraday_plpc": "0.083333333", "change_today": "0"},
        ])
    );
    // Closing 4 IBM through the real adapter leaves 3 at the entry price; buying the short
    // back removes it.
    let a = p.adapter();
    a.submit_order(&sell("IBM", 4, 1)).await.unwrap();
    let mut cover = sell("AAPL", 3, 1);
    cover.side = Side::Buy;
    a.submit_order(&cover).await.unwrap();
    let held = a.list_positions(&acct()).await.unwrap();
    assert_eq!(
        held.iter()
            .map(|h| (h.symbol.as_str(), h.qty, h.avg_entry_price))
            .collect::<Vec<_>>(),
        [("IBM", Quantity::from(3), Price::new(Quantity::from(120)))]
    );
}

#[tokio::test]
async fn holdings_change_behind_closeflows_back_through_the_paper_endpoint() {
    let p = paper_holding("", "", "ACC1:IBM=7@120", None).await;
    let post = reqwest::Method::POST;
    // Set outright (the entry price kept), adjust as an execution, open a new short.
    let (s, b) = paper_call(
        &p,
        post.clone(),
        "/paper/positions",
        json!({"account": "ACC1", "symbol": "IBM", "qty": "5"}),
    )
    .await;
    assert_eq!(
        (s, &b),
        (
            200,
            &json!({"account": "ACC1", "symbol": "IBM", "qty": "5", "side": "long", "avg_entry_price": "120"})
        )
    );
    let (s, b) = paper_call(
        &p,
        post.clone(),
        "/paper/positions",
        json!({"symbol": "IBM", "adjust_by": -2}),
    )
    .await;
    assert_eq!((s, &b["qty"], &b["avg_entry_price"]), (200, &json!("3"), &json!("120")));
    let (s, _) = paper_call(
        &p,
        post.clone(),
        "/paper/positions",
        json!({"symbol": "TSLA", "qty": "-2", "avg_entry_price": "250.5"}),
    )
    .await;
    assert_eq!(s, 200);
    let held = p.adapter().list_positions(&acct()).await.unwrap();
    assert_eq!(
        held.iter()
            .map(|h| (h.symbol.as_str(), h.qty, h.avg_entry_price))
            .collect::<Vec<_>>(),
        [
            ("IBM", Quantity::from(3), Price::new(Quantity::from(120))),
            ("TSLA", Quantity::from(-2), Price::parse("250.5").unwrap())
        ]
    );

    // Refusals carry a stable code and change nothing.
    for (body, status, code) in [
        (
            json!({"symbol": "IBM", "qty": "1", "adjust_by": "1"}),
            400,
            "invalid_body",
        ),
        (json!({"symbol": "IBM"}), 400, "invalid_body"),
        (json!({"symbol": "IBM", "qty": "1e400"}), 400, "invalid_body"),
        (json!({"symbol": "IBM", "qty": "1", "extra": true}), 400, "invalid_body"),
        (json!({"symbol": "IBM", "adjust_by": "0"}), 400, "invalid_qty"),
        (json!({"symbol": " IBM", "qty": "1"}), 400, "invalid_symbol"),
        (
            json!({"symbol": "IBM", "qty": "1", "avg_entry_price": "0"}),
            400,
            "invalid_price",
        ),
        (
            json!({"account": "ACC2", "symbol": "IBM", "qty": "1"}),
            404,
            "unknown_account",
        ),
    ] {
        let (s, b) = paper_call(&p, post.clone(), "/paper/positions", body.clone()).await;
        assert_eq!((s, b["error"].as_str()), (status, Some(code)), "{body}: {b}");
        assert!(b["message"].is_string());
    }
    let (_, listed) = p.get("/paper/positions").await;
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["symbol"].as_str().unwrap(), h["qty"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("IBM", "3"), ("TSLA", "-2")],
        "nothing changed"
    );

    // qty 0 and DELETE remove; a second DELETE finds nothing.
    let (s, b) = paper_call(&p, post, "/paper/positions", json!({"symbol": "IBM", "qty": 0})).await;
    assert_eq!((s, &b["qty"], &b["side"]), (200, &json!("0"), &Value::Null));
    let (s, _, _) = p.call(reqwest::Method::DELETE, "/paper/positions/TSLA", None).await;
    assert_eq!(s, 204);
    let (s, _, b) = p.call(reqwest::Method::DELETE, "/paper/positions/TSLA", None).await;
    assert_eq!((s, b["error"].as_str()), (404, Some("holding_not_found")));
    assert_eq!(p.get("/v2/positions").await, (200, json!([])));

    // The endpoint takes the key pair like every other route.
    let resp = p.http.get(format!("{}/paper/positions", p.url)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn a_seed_of_another_account_than_the_key_pairs_is_refused_at_start() {
    let mut cfg = PaperConfig::new(SimScenarios::default().with_positions("ACC1:IBM=7,ACC2:IBM=1").unwrap());
    assert_eq!(cfg.account, "ACC1", "the seeded account is the key pair's");
    let err = cfg.check_seeded_accounts().unwrap_err();
    assert!(err.contains("`ACC2:IBM`"), "{err}");
    cfg.scenarios = SimScenarios::default();
    assert_eq!(cfg.check_seeded_accounts(), Ok(()));
    assert_eq!(
        PaperConfig::new(SimScenarios::default()).account,
        closeflow_paper_broker::DEV_ACCOUNT
    );
}

#[tokio::test]
async fn reject_is_a_403_insufficient_qty_and_a_definitive_rejection() {
    let p = paper("TSLA=reject", "", None).await;
    assert_eq!(
        p.adapter().submit_order(&sell("TSLA", 10, 1)).await,
        Err(BrokerError::Rejected(
            "insufficient qty available for order (requested: 10, available: 0)".into()
        ))
    );
    let (s, _, body) = p
        .call(
            reqwest::Method::POST,
            "/v2/orders",
            Some(json!({"symbol": "TSLA", "qty": 3, "side": "sell", "type": "market", "time_in_force": "day"})),
        )
        .await;
    assert_eq!((s, &body["code"]), (403, &json!(40310000)), "{body}");
    assert_eq!(p.broker.engine.orders_placed(), 0);
}

#[tokio::test]
async fn partial_fills_some_then_cancels_the_rest() {
    let p = paper("MSFT=partial:3", "", None).await;
    let placed = p.adapter().submit_order(&sell("MSFT", 10, 1)).await.unwrap();
    let o = p
        .adapter()
        .get_order_by_client_id(&acct(), &placed.client_order_id)
        .await
        .unwrap();
    assert_eq!((o.status, o.filled_qty), (OrderStatus::Canceled, Quantity::from(3)));
    assert_eq!(
        p.order_by_client_id(&placed.client_order_id).await["status"],
        "canceled"
    );
}

#[tokio::test]
async fn not_found_accepts_and_then_denies_the_order() {
    let p = paper("AMD=not_found", "", None).await;
    let a = p.adapter();
    let placed = a.submit_order(&sell("AMD", 1, 1)).await.unwrap();
    assert_eq!(
        a.get_order_by_client_id(&acct(), &placed.client_order_id).await,
        Err(BrokerError::NotFound)
    );
    assert_eq!(p.get(&format!("/v2/orders/{}", placed.broker_order_id)).await.0, 404);
    assert_eq!(p.broker.engine.orders_placed(), 1, "the broker has it all the same");
}

#[tokio::test]
async fn fill_after_fills_once_its_time_has_come() {
    let p = paper("META=fill_after:2s", "", None).await;
    let a = p.adapter();
    let placed = a.submit_order(&sell("META", 5, 1)).await.unwrap();
    p.timer.advance(Duration::from_millis(1500));
    let o = a
        .get_order_by_client_id(&acct(), &placed.client_order_id)
        .await
        .unwrap();
    assert_eq!(o.status, OrderStatus::Accepted);
    assert_eq!(p.order_by_client_id(&placed.client_order_id).await["status"], "new");
    p.timer.advance(Duration::from_millis(500));
    let o = a
        .get_order_by_client_id(&acct(), &placed.client_order_id)
        .await
        .unwrap();
    assert_eq!((o.status, o.filled_qty), (OrderStatus::Filled, Quantity::from(5)));
}

#[tokio::test]
async fn reject_first_refuses_attempt_one_and_fills_attempt_two() {
    let p = paper("GOOG=reject_first", "", None).await;
    let a = p.adapter();
    assert!(matches!(
        a.submit_order(&sell("GOOG", 10, 1)).await,
        Err(BrokerError::Rejected(_))
    ));
    let retry = sell("GOOG", 10, 2);
    a.submit_order(&retry).await.unwrap();
    let o = a.get_order_by_client_id(&acct(), &retry.client_order_id).await.unwrap();
    assert_eq!(o.status, OrderStatus::Filled);
    assert_eq!(
        a.get_order_by_client_id(&acct(), &coid("pos-GOOG", 1)).await,
        Err(BrokerError::NotFound),
        "the refused attempt left no order"
    );
}

#[tokio::test]
async fn replace_ends_the_order_replaced_and_names_the_replacement_which_fills() {
    let p = paper("AMZN=replace", "AMZN=201.25", None).await;
    let a = p.adapter();
    let placed = a.submit_order(&sell("AMZN", 10, 1)).await.unwrap();
    let o = a
        .get_order_by_client_id(&acct(), &placed.client_order_id)
        .await
        .unwrap();
    // The adapter follows `replaced_by`: the replacement is the attempt's order.
    assert_eq!(
        (o.status, o.filled_qty, o.client_order_id.clone()),
        (OrderStatus::Filled, Quantity::from(10), placed.client_order_id.clone()),
        "replaced is followed, never canceled"
    );
    assert_ne!(o.broker_order_id, placed.broker_order_id);
    let raw = p.order_by_client_id(&placed.client_order_id).await;
    assert_eq!(raw["status"], "replaced");
    assert!(raw["replaced_at"].is_string());
    let by = raw["replaced_by"].as_str().unwrap();
    let (s, replacement) = p.get(&format!("/v2/orders/{by}")).await;
    assert_eq!(s, 200);
    assert_eq!(replacement["replaces"], placed.broker_order_id);
    assert_eq!(
        (
            &replacement["status"],
            &replacement["filled_qty"],
            &replacement["filled_avg_price"]
        ),
        (&json!("filled"), &json!("10"), &json!("201.25"))
    );
    assert_ne!(replacement["client_order_id"], raw["client_order_id"]);
}

#[tokio::test]
async fn held_refuses_with_the_holding_orders_until_they_are_canceled() {
    let p = paper("NFLX=held", "", None).await;
    let a = p.adapter();
    let intent = sell("NFLX", 10, 1);
    assert_eq!(
        a.submit_order(&intent).await,
        Err(BrokerError::BlockedByOpenOrders {
            held_qty: Quantity::from(1),
            message: "insufficient qty available for order (requested: 10, available: 0)".into()
        })
    );
    let listed = a.open_orders(&acct(), "NFLX").await.unwrap();
    assert_eq!(listed.len(), 1, "the holding order, as the adapter lists it");
    let (s, _, body) = p
        .call(
            reqwest::Method::POST,
            "/v2/orders",
            Some(json!({"symbol": "NFLX", "qty": "10", "side": "sell", "type": "market",
                         "time_in_force": "day", "client_order_id": "manual-1"})),
        )
        .await;
    assert_eq!(
        (s, &body["code"], &body["symbol"]),
        (403, &json!(40310000), &json!("NFLX"))
    );
    let (_, open) = p.get("/v2/orders?status=open&symbols=NFLX").await;
    let open = open.as_array().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(body["related_orders"], json!([open[0]["id"]]));
    assert_eq!(body["held_for_orders"], open[0]["qty"]);

    a.cancel_order(&acct(), open[0]["id"].as_str().unwrap()).await.unwrap();
    a.submit_order(&intent).await.unwrap();
    let o = a
        .get_order_by_client_id(&acct(), &intent.client_order_id)
        .await
        .unwrap();
    assert_eq!(o.status, OrderStatus::Filled);
}

#[tokio::test]
async fn listings_filter_by_status_and_symbol_newest_first() {
    let p = paper("NVDA=hold", "", None).await;
    let a = p.adapter();
    a.submit_order(&sell("AAPL", 1, 1)).await.unwrap();
    a.submit_order(&sell("NVDA", 2, 1)).await.unwrap();
    a.submit_order(&sell("AAPL", 3, 2)).await.unwrap();
    let symbols_qty = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{}:{}", o["symbol"].as_str().unwrap(), o["qty"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(symbols_qty(&p.get("/v2/orders").await.1), ["NVDA:2"], "open by default");
    assert_eq!(
        symbols_qty(&p.get("/v2/orders?status=all").await.1),
        ["AAPL:3", "NVDA:2", "AAPL:1"]
    );
    assert_eq!(
        symbols_qty(&p.get("/v2/orders?status=closed&direction=asc").await.1),
        ["AAPL:1", "AAPL:3"]
    );
    assert_eq!(
        symbols_qty(&p.get("/v2/orders?status=all&symbols=AAPL&limit=1").await.1),
        ["AAPL:3"]
    );
    assert_eq!(p.get("/v2/orders?status=sometimes").await.0, 422);
    assert_eq!(p.get("/v2/orders?limit=501").await.0, 422);
}

#[tokio::test]
async fn invalid_orders_are_422_and_unreadable_bodies_400() {
    let p = paper("", "", None).await;
    let post = |body: Value| p.call(reqwest::Method::POST, "/v2/orders", Some(body));
    let base = json!({"symbol": "AAPL", "qty": "1", "side": "sell", "type": "market", "time_in_force": "day"});
    for (field, value, message) in [
        ("qty", json!("0"), "qty must be > 0"),
        ("side", json!("short"), "side must be buy or sell"),
        ("time_in_force", json!("forever"), "invalid time_in_force: forever"),
        (
            "type",
            json!("stop"),
            "order type stop is not supported by the paper broker (market, limit)",
        ),
    ] {
        let mut b = base.clone();
        b[field] = value;
        let (s, _, body) = post(b).await;
        assert_eq!((s, body["message"].as_str()), (422, Some(message)), "{field}");
    }
    let mut limit = base.clone();
    limit["type"] = json!("limit");
    assert_eq!(post(limit.clone()).await.0, 422, "a limit order needs its price");
    limit["limit_price"] = json!("180.5");
    let (s, _, o) = post(limit).await;
    assert_eq!(
        (s, &o["limit_price"], &o["type"]),
        (200, &json!("180.5"), &json!("limit"))
    );
    assert!(
        o["client_order_id"].as_str().is_some_and(|c| c.len() == 36),
        "named by the broker"
    );
    let resp = p
        .http
        .post(format!("{}/v2/orders", p.url))
        .header("APCA-API-KEY-ID", KEY)
        .header("APCA-API-SECRET-KEY", SECRET)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn wrong_or_missing_keys_are_401_and_refused_credentials_to_the_adapter() {
    let p = paper("", "", None).await;
    let r = p.adapter_with(KEY, "wrong").submit_order(&sell("AAPL", 1, 1)).await;
    assert!(
        matches!(r, Err(BrokerError::CredentialsRejected(ref m)) if m.contains("401")),
        "{r:?}"
    );
    let resp = p.http.get(format!("{}/v2/account", p.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"code": 40110000, "message": "request is not authorized"})
    );
    assert_eq!(p.broker.engine.orders_placed(), 0);
}

#[tokio::test]
async fn past_the_rate_limit_answers_429_with_rate_limit_headers_until_the_window_resets() {
    let p = paper("", "", Some("3/min")).await;
    let reset = (p.clock.now() + chrono::TimeDelta::seconds(60)).timestamp().to_string();
    for remaining in ["2", "1", "0"] {
        let (s, h, _) = p.call(reqwest::Method::GET, "/v2/account", None).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], remaining);
        assert_eq!(h["x-ratelimit-reset"], reset.as_str());
    }
    let (s, h, body) = p.call(reqwest::Method::GET, "/v2/positions", None).await;
    assert_eq!((s, &body["code"]), (429, &json!(42910000)));
    assert_eq!(
        (&h["x-ratelimit-remaining"], &h["x-ratelimit-reset"]),
        (&"0".parse().unwrap(), &reset.parse().unwrap())
    );
    let r = p.adapter().submit_order(&sell("AAPL", 1, 1)).await;
    assert!(matches!(r, Err(BrokerError::RateLimited { .. })), "{r:?}");
    assert_eq!(p.broker.engine.orders_placed(), 0, "a refused request places nothing");

    p.clock.advance(chrono::TimeDelta::seconds(60));
    p.adapter().submit_order(&sell("AAPL", 1, 1)).await.unwrap();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(p: &Paper) -> Ws {
    let url = format!("{}/stream", p.url.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next JSON message, which must come in a binary frame (as from Alpaca's paper stream).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .unwrap();
        match msg {
            Message::Binary(b) => return serde_json::from_slice(&b).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary JSON frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn listening(p: &Paper) -> Ws {
    let mut ws = connect(p).await;
    send(&mut ws, json!({"action": "auth", "key": KEY, "secret": SECRET})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}})
    );
    send(
        &mut ws,
        json!({"action": "listen", "data": {"streams": ["trade_updates"]}}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"stream": "listening", "data": {"streams": ["trade_updates"]}})
    );
    ws
}

#[tokio::test]
async fn the_stream_refuses_wrong_keys_and_closes() {
    let p = paper("", "", None).await;
    let mut ws = connect(&p).await;
    send(&mut ws, json!({"action": "auth", "key": KEY, "secret": "nope"})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"stream": "authorization", "data": {"status": "unauthorized", "action": "authenticate"}})
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(
        matches!(end, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{end:?}"
    );
}

#[tokio::test]
async fn the_stream_accepts_the_older_authenticate_form_and_an_empty_listen() {
    let p = paper("", "", None).await;
    let mut ws = connect(&p).await;
    send(
        &mut ws,
        json!({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["data"]["status"], "authorized");
    send(&mut ws, json!({"action": "listen", "data": {"streams": []}})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"stream": "listening", "data": {"streams": []}})
    );
}

#[tokio::test]
async fn trade_updates_carry_new_and_fill_with_execution_and_cumulative_fill() {
    let p = paper("", "AAPL=187.5", None).await;
    let mut ws = listening(&p).await;
    let intent = sell("AAPL", 10, 1);
    let placed = p.adapter().submit_order(&intent).await.unwrap();

    let new = next_json(&mut ws).await;
    assert_eq!(new["stream"], "trade_updates");
    assert_eq!(new["data"]["event"], "new");
    assert_eq!(new["data"]["order"]["id"], placed.broker_order_id);
    assert_eq!(
        new["data"]["order"]["client_order_id"],
        intent.client_order_id.to_string()
    );
    assert_eq!(new["data"]["order"]["status"], "new");

    let fill = next_json(&mut ws).await["data"].clone();
    assert_eq!(fill["event"], "fill");
    assert!(fill["execution_id"].as_str().is_some_and(|x| !x.is_empty()));
    assert_eq!(
        (&fill["price"], &fill["qty"], &fill["position_qty"]),
        (&json!("187.5"), &json!("10"), &json!("-10"))
    );
    assert_eq!(
        (
            &fill["order"]["status"],
            &fill["order"]["filled_qty"],
            &fill["order"]["filled_avg_price"]
        ),
        (&json!("filled"), &json!("10"), &json!("187.5"))
    );
    assert!(fill["timestamp"].is_string());
}

#[tokio::test]
async fn trade_updates_carry_partial_fills_cancels_and_replacements() {
    let p = paper("MSFT=partial:3,AMZN=replace,NVDA=hold", "", None).await;
    let mut ws = listening(&p).await;
    let a = p.adapter();
    a.submit_order(&sell("MSFT", 10, 1)).await.unwrap();
    let events: Vec<Value> = [
        next_json(&mut ws).await,
        next_json(&mut ws).await,
        next_json(&mut ws).await,
    ]
    .into_iter()
    .map(|m| m["data"].clone())
    .collect();
    assert_eq!(
        events
            .iter()
            .map(|e| (e["event"].as_str().unwrap(), e["order"]["filled_qty"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("new", "0"), ("partial_fill", "3"), ("canceled", "3")],
        "filled_qty is cumulative"
    );
    assert_eq!(events[1]["qty"], "3");

    let held = a.submit_order(&sell("NVDA", 2, 1)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["data"]["event"], "new");
    a.cancel_order(&acct(), &held.broker_order_id).await.unwrap();
    let canceled = next_json(&mut ws).await["data"].clone();
    assert_eq!(
        (canceled["event"].as_str(), canceled["order"]["status"].as_str()),
        (Some("canceled"), Some("canceled"))
    );

    let original = a.submit_order(&sell("AMZN", 5, 1)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = next_json(&mut ws).await["data"].clone();
        seen.push((
            e["event"].as_str().unwrap().to_string(),
            e["order"]["id"].as_str().unwrap().to_string(),
            e,
        ));
    }
    assert_eq!(seen[0].0, "new");
    assert_eq!(seen[0].1, original.broker_order_id);
    let replaced = &seen.iter().find(|s| s.0 == "replaced").unwrap().2;
    assert_eq!(replaced["order"]["id"], original.broker_order_id);
    let by = replaced["order"]["replaced_by"].as_str().unwrap();
    let fill = &seen.iter().find(|s| s.0 == "fill").unwrap().2;
    assert_eq!(
        (fill["order"]["id"].as_str(), fill["order"]["replaces"].as_str()),
        (Some(by), Some(original.broker_order_id.as_str()))
    );
}

/// Limit orders and `rest` through the real Alpaca adapter agree with the in-process
/// simulated broker: the same engine behind both faces.
#[tokio::test]
async fn limit_orders_and_rest_behave_alike_in_the_paper_and_the_simulated_broker() {
    let spec = "AAPL=rest";
    let prices = "MSFT=100";
    let p = paper(spec, prices, None).await;
    let paper_broker: Arc<dyn Broker> = Arc::new(p.adapter());
    let clock = Arc::new(ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
    ));
    let sim: Arc<dyn Broker> = Arc::new(closeflow_pipeline::SimulatedBroker::new(
        SimScenarios::parse(spec).unwrap().with_prices(prices).unwrap(),
        b"s",
        clock,
    ));
    let limit = |symbol: &str, attempt: u32, price: &str| {
        let mut i = sell(symbol, 5, attempt);
        i.options = closeflow_domain::OrderOptions::limit(
            closeflow_domain::Price::new(Quantity::parse(price).unwrap()).unwrap(),
        );
        i
    };
    let mut seen = Vec::new();
    for broker in [paper_broker, sim] {
        let mut outcome = Vec::new();
        // Reached (a sell limit at or below the price): filled at the price.
        let reached = limit("MSFT", 1, "90");
        broker.submit_order(&reached).await.unwrap();
        let o = broker
            .get_order_by_client_id(&acct(), &reached.client_order_id)
            .await
            .unwrap();
        outcome.push((o.status, o.filled_qty, o.filled_avg_price));
        // Not reached: working until canceled.
        let above = limit("MSFT", 2, "120");
        let placed = broker.submit_order(&above).await.unwrap();
        let o = broker
            .get_order_by_client_id(&acct(), &above.client_order_id)
            .await
            .unwrap();
        outcome.push((o.status, o.filled_qty, o.filled_avg_price));
        broker.cancel_order(&acct(), &placed.broker_order_id).await.unwrap();
        let o = broker
            .get_order_by_client_id(&acct(), &above.client_order_id)
            .await
            .unwrap();
        outcome.push((o.status, o.filled_qty, o.filled_avg_price));
        // `rest`: working whatever the price, until canceled.
        let resting = limit("AAPL", 1, "1");
        let placed = broker.submit_order(&resting).await.unwrap();
        let o = broker
            .get_order_by_client_id(&acct(), &resting.client_order_id)
            .await
            .unwrap();
        outcome.push((o.status, o.filled_qty, o.filled_avg_price));
        broker.cancel_order(&acct(), &placed.broker_order_id).await.unwrap();
        let o = broker
            .get_order_by_client_id(&acct(), &resting.client_order_id)
            .await
            .unwrap();
        outcome.push((o.status, o.filled_qty, o.filled_avg_price));
        seen.push(outcome);
    }
    let hundred = Price::new(Quantity::from(100));
    assert_eq!(
        seen[0],
        vec![
            (OrderStatus::Filled, Quantity::from(5), hundred),
            (OrderStatus::Accepted, Quantity::ZERO, None),
            (OrderStatus::Canceled, Quantity::ZERO, None),
            (OrderStatus::Accepted, Quantity::ZERO, None),
            (OrderStatus::Canceled, Quantity::ZERO, None),
        ]
    );
    assert_eq!(seen[0], seen[1], "paper and simulated broker agree");
}

#[tokio::test]
async fn equity_changed_behind_closeflows_back_is_what_the_adapter_reads() {
    let p = paper("", "", None).await;
    let a = p.adapter();
    assert_eq!(
        a.account_equity(&acct()).await,
        Ok(rust_decimal::Decimal::from(100_000)),
        "cash plus positions"
    );
    let (s, b) = paper_call(
        &p,
        reqwest::Method::POST,
        "/paper/account",
        json!({"account_id": "acct-1", "equity": "87500.25"}),
    )
    .await;
    assert_eq!((s, b), (200, json!({"account_id": "acct-1", "equity": "87500.25"})));
    assert_eq!(a.account_equity(&acct()).await, Ok("87500.25".parse().unwrap()));
    let (_, raw) = p.get("/v2/account").await;
    assert_eq!(
        (&raw["equity"], &raw["portfolio_value"]),
        (&json!("87500.25"), &json!("87500.25"))
    );
    assert_eq!(raw["cash"], "100000", "cash is what the fills moved");

    // A JSON number is read exactly; the account may be left out.
    let (s, _) = paper_call(&p, reqwest::Method::POST, "/paper/account", json!({"equity": -12.5})).await;
    assert_eq!(s, 200);
    assert_eq!(a.account_equity(&acct()).await, Ok("-12.5".parse().unwrap()));
    // null goes back to cash plus positions.
    let (s, b) = paper_call(&p, reqwest::Method::POST, "/paper/account", json!({"equity": null})).await;
    assert_eq!((s, &b["equity"]), (200, &Value::Null));
    assert_eq!(
        a.account_equity(&acct()).await,
        Ok(rust_decimal::Decimal::from(100_000))
    );
}

#[tokio::test]
async fn a_refused_equity_change_changes_nothing() {
    let p = paper("", "", None).await;
    for (body, status, code) in [
        (json!({"account_id": "ACC2", "equity": "1"}), 404, "unknown_account"),
        (json!({"account_id": "acct-1"}), 400, "invalid_body"),
        (json!({"equity": "lots"}), 400, "invalid_body"),
        (json!({"equity": "1", "cash": "2"}), 400, "invalid_body"),
    ] {
        let (s, b) = paper_call(&p, reqwest::Method::POST, "/paper/account", body.clone()).await;
        assert_eq!((s, b["error"].as_str()), (status, Some(code)), "{body}");
    }
    let unauthorized = p
        .http
        .post(format!("{}/paper/account", p.url))
        .json(&json!({"equity": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    assert_eq!(p.get("/v2/account").await.1["equity"], "100000");
}

#[tokio::test]
async fn sim_broker_equity_sets_the_paper_accounts_equity_from_the_start() {
    let broker = PaperBroker::new(PaperConfig::new(SimScenarios::default().with_equity("5000.5").unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cfg = AlpacaConfig {
        base_url: url,
        key_id: closeflow_paper_broker::DEV_KEY_ID.into(),
        secret_key: closeflow_paper_broker::DEV_SECRET_KEY.into(),
        timeout: Duration::from_secs(5),
    };
    tokio::spawn(async move { axum::serve(listener, router(broker)).await.unwrap() });
    let a = AlpacaBroker::new(cfg).unwrap();
    assert_eq!(a.account_equity(&acct()).await, Ok("5000.5".parse().unwrap()));
}

#[tokio::test]
async fn every_open_order_of_the_account_is_listed_through_the_adapter() {
    let p = paper("AAPL=rest,MSFT=rest", "", None).await;
    let a = p.adapter();
    let limit = |symbol: &str, attempt| {
        let mut i = sell(symbol, 5, attempt);
        i.options = closeflow_domain::OrderOptions::limit(
            closeflow_domain::Price::new(Quantity::parse("1000").unwrap()).unwrap(),
        );
        i
    };
    let aapl = a.submit_order(&limit("AAPL", 1)).await.unwrap();
    let msft = a.submit_order(&limit("MSFT", 1)).await.unwrap();
    // A market order fills at once and is not open.
    a.submit_order(&sell("IBM", 3, 1)).await.unwrap();
    let open = a.account_open_orders(&acct()).await.unwrap();
    assert_eq!(
        open.iter()
            .map(|o| (o.broker_order_id.as_str(), o.symbol.as_str(), o.qty))
            .collect::<Vec<_>>(),
        [
            (aapl.broker_order_id.as_str(), "AAPL", Quantity::from(5)),
            (msft.broker_order_id.as_str(), "MSFT", Quantity::from(5))
        ],
        "oldest first"
    );
    assert_eq!(open[0].client_order_id, aapl.client_order_id.to_string());
    a.cancel_order(&acct(), &aapl.broker_order_id).await.unwrap();
    let open = a.account_open_orders(&acct()).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].symbol, "MSFT");
}

/// Multi-leg orders: validated whole (2 to 4 legs, whole units, day only), answered with
/// their legs (each with its ratio and fills), unique by client order id, refused whole
/// when a leg is refused, read back by client order id and by id, and canceled as a whole.
#[tokio::test]
async fn a_multi_leg_order_is_placed_whole_answered_with_its_legs_and_canceled_whole() {
    let p = paper(
        "SPY260116P00540000=reject,QQQ260116C00500000=rest",
        "QQQ260116C00500000=3,QQQ260116C00510000=1.5",
        None,
    )
    .await;
    let leg = |symbol: &str, side: &str, intent: &str| json!({"symbol": symbol, "ratio_qty": "1", "side": side, "position_intent": intent});
    let condor = json!([
        leg("SPY260116C00600000", "sell", "sell_to_close"),
        leg("SPY260116C00610000", "buy", "buy_to_close"),
    ]);
    let order = |cid: &str, legs: Value, extra: Value| {
        let mut o = json!({"order_class": "mleg", "qty": "2", "type": "market", "time_in_force": "day",
                           "client_order_id": cid, "legs": legs});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    for (body, why) in [
        (order("m-0", json!([condor[0]]), json!({})), "2 to 4 legs"),
        (order("m-0", condor.clone(), json!({"qty": "1.5"})), "whole number"),
        (order("m-0", condor.clone(), json!({"time_in_force": "gtc"})), "day"),
        (order("m-0", condor.clone(), json!({"symbol": "SPY"})), "in its legs"),
    ] {
        let (s, b) = paper_call(&p, reqwest::Method::POST, "/v2/orders", body).await;
        assert_eq!(s, 422, "{b}");
        assert!(b["message"].as_str().unwrap().contains(why), "{b}");
    }
    let (s, b) = paper_call(
        &p,
        reqwest::Method::POST,
        "/v2/orders",
        order("m-1", condor.clone(), json!({})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["order_class"].as_str(), b["status"].as_str()),
        (Some("mleg"), Some("filled"))
    );
    assert_eq!((b["qty"].as_str(), b["filled_qty"].as_str()), (Some("2"), Some("2")));
    let legs = b["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2);
    assert_eq!(
        (legs[0]["side"].as_str(), legs[0]["filled_qty"].as_str()),
        (Some("sell"), Some("2"))
    );
    assert_eq!(legs[1]["ratio_qty"], "1");
    let (s, again) = paper_call(
        &p,
        reqwest::Method::POST,
        "/v2/orders",
        order("m-1", condor.clone(), json!({})),
    )
    .await;
    assert_eq!(s, 422, "{again}");
    assert!(again["message"].as_str().unwrap().contains("client_order_id"));
    let (_, by_cid) = p.get("/v2/orders:by_client_order_id?client_order_id=m-1").await;
    assert_eq!(by_cid["id"], b["id"]);
    let (_, by_id) = p.get(&format!("/v2/orders/{}", b["id"].as_str().unwrap())).await;
    assert_eq!(by_id["legs"].as_array().unwrap().len(), 2);

    // A refused leg refuses the whole order: nothing of it is placed.
    let placed = p.broker.engine.orders_placed();
    let refused = json!([
        leg("SPY260116P00540000", "buy", "buy_to_close"),
        leg("SPY260116P00530000", "sell", "sell_to_close"),
    ]);
    let (s, b) = paper_call(
        &p,
        reqwest::Method::POST,
        "/v2/orders",
        order("m-2", refused, json!({})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(p.broker.engine.orders_placed(), placed);

    // A resting limit order (a net credit) is canceled as a whole.
    let resting = json!([
        leg("QQQ260116C00500000", "sell", "sell_to_close"),
        leg("QQQ260116C00510000", "buy", "buy_to_close"),
    ]);
    let body = order("m-3", resting, json!({"type": "limit", "limit_price": "-1.25"}));
    let (s, b) = paper_call(&p, reqwest::Method::POST, "/v2/orders", body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["status"], "partially_filled",
        "the QQQ 500 call rests, the 510 fills: {b}"
    );
    let id = b["id"].as_str().unwrap().to_string();
    let (s, _) = paper_call(&p, reqwest::Method::DELETE, &format!("/v2/orders/{id}"), json!(null)).await;
    assert_eq!(s, 204);
    let (_, after) = p.get(&format!("/v2/orders/{id}")).await;
    assert_eq!(after["status"], "canceled", "{after}");
    let (s, _) = paper_call(&p, reqwest::Method::DELETE, &format!("/v2/orders/{id}"), json!(null)).await;
    assert_eq!(s, 422, "nothing left to cancel");

    // A net limit the prices do not reach: selling the 500 call (3) and buying the 510
    // (1.5) brings a credit of 1.5, short of the 2 asked. Nothing fills; every leg rests.
    let spread = json!([
        leg("QQQ260116C00500000", "sell", "sell_to_close"),
        leg("QQQ260116C00510000", "buy", "buy_to_close"),
    ]);
    let placed = p.broker.engine.orders_placed();
    let body = order("m-4", spread.clone(), json!({"type": "limit", "limit_price": "-2"}));
    let (s, b) = paper_call(&p, reqwest::Method::POST, "/v2/orders", body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["status"], &b["filled_qty"]),
        (&json!("accepted"), &json!("0")),
        "{b}"
    );
    assert!(
        b["legs"].as_array().unwrap().iter().all(|l| l["filled_qty"] == "0"),
        "{b}"
    );
    assert_eq!(p.broker.engine.orders_placed(), placed + 2, "both legs placed, resting");
    // A debit spread at its limit or better fills (buying the 500 call, selling the 510:
    // a debit of 1.5, within the 1.6 asked).
    let debit = json!([
        leg("QQQ260116C00500000", "buy", "buy_to_close"),
        leg("QQQ260116C00510000", "sell", "sell_to_close"),
    ]);
    let p2 = paper("", "QQQ260116C00500000=3,QQQ260116C00510000=1.5", None).await;
    let body = order("m-5", debit.clone(), json!({"type": "limit", "limit_price": "1.6"}));
    let (_, b) = paper_call(&p2, reqwest::Method::POST, "/v2/orders", body).await;
    assert_eq!(b["status"], "filled", "{b}");
    let body = order("m-6", debit, json!({"type": "limit", "limit_price": "1.4"}));
    let (_, b) = paper_call(&p2, reqwest::Method::POST, "/v2/orders", body).await;
    assert_eq!(b["status"], "accepted", "a debit of 1.5 is more than 1.4: {b}");
}

/// A multi-leg order's `trade_updates` are the order's own, as Alpaca's: `new` once, a
/// `fill` (or `partial_fill`) carrying the whole order with its legs nested and the leg's
/// execution beside it, its end once every leg ended; never a message about a leg alone.
#[tokio::test]
async fn a_multi_leg_orders_trade_updates_are_the_orders_own_with_its_legs_nested() {
    let p = paper(
        "QQQ260116C00500000=rest",
        "SPY260116C00600000=2.15,SPY260116C00610000=0.8,QQQ260116C00500000=3,QQQ260116C00510000=1.5",
        None,
    )
    .await;
    let mut ws = listening(&p).await;
    let leg = |symbol: &str, side: &str| json!({"symbol": symbol, "ratio_qty": "1", "side": side});
    let order = |cid: &str, legs: Value, extra: Value| {
        let mut o = json!({"order_class": "mleg", "qty": "2", "type": "market", "time_in_force": "day",
                           "client_order_id": cid, "legs": legs});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    let spread = json!([leg("SPY260116C00600000", "sell"), leg("SPY260116C00610000", "buy")]);
    let (s, placed) = paper_call(&p, reqwest::Method::POST, "/v2/orders", order("s-1", spread, json!({}))).await;
    assert_eq!(s, 200, "{placed}");
    let mut seen = vec![];
    // Each message carries the order as it stands when sent (it may already be further on
    // than the event), so the fills are counted, not their order's status.
    while seen.iter().filter(|m: &&Value| m["data"]["event"] != "new").count() < 2 {
        seen.push(next_json(&mut ws).await);
    }
    let events: Vec<&str> = seen.iter().map(|m| m["data"]["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"new"), "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "new").count(), 1, "{events:?}");
    assert_eq!(events.last(), Some(&"fill"), "{events:?}");
    let filled: Vec<u32> = seen
        .iter()
        .map(|m| m["data"]["order"]["filled_qty"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(filled.windows(2).all(|w| w[0] <= w[1]), "never goes back: {filled:?}");
    for m in &seen {
        let o = &m["data"]["order"];
        assert_eq!((&o["client_order_id"], &o["id"]), (&json!("s-1"), &placed["id"]), "{m}");
        assert_eq!(o["order_class"], "mleg");
        assert_eq!(o["legs"].as_array().map(Vec::len), Some(2), "{m}");
    }
    let fills: Vec<&Value> = seen.iter().filter(|m| m["data"]["event"] != "new").collect();
    assert_eq!(fills.len(), 2, "one per leg's execution: {events:?}");
    let executions: Vec<(String, String, String)> = fills
        .iter()
        .map(|m| {
            let x = &m["data"]["legs"][0];
            assert!(x["execution_id"].as_str().is_some_and(|x| !x.is_empty()), "{m}");
            let leg_ids: Vec<&Value> = m["data"]["order"]["legs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| &l["id"])
                .collect();
            assert!(
                leg_ids.contains(&&x["order_id"]),
                "the execution names one of the order's legs: {m}"
            );
            (
                x["symbol"].as_str().unwrap().to_string(),
                x["price"].as_str().unwrap().to_string(),
                x["qty"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut executions = executions;
    executions.sort();
    assert_eq!(
        executions,
        [
            ("SPY260116C00600000".to_string(), "2.15".to_string(), "2".to_string()),
            ("SPY260116C00610000".to_string(), "0.8".to_string(), "2".to_string()),
        ]
    );
    let last = &seen.last().unwrap()["data"]["order"];
    assert_eq!((&last["filled_qty"], &last["status"]), (&json!("2"), &json!("filled")));

    // A resting order canceled whole: one `canceled` about the order, none about a leg.
    let resting = json!([leg("QQQ260116C00500000", "sell"), leg("QQQ260116C00510000", "buy")]);
    let body = order("s-2", resting, json!({"type": "limit", "limit_price": "-1.25"}));
    let (_, placed) = paper_call(&p, reqwest::Method::POST, "/v2/orders", body).await;
    let id = placed["id"].as_str().unwrap().to_string();
    let (s, _) = paper_call(&p, reqwest::Method::DELETE, &format!("/v2/orders/{id}"), json!(null)).await;
    assert_eq!(s, 204);
    let mut ended = vec![];
    while ended.last().is_none_or(|m: &Value| m["data"]["event"] != "canceled") {
        let m = next_json(&mut ws).await;
        assert_eq!(m["data"]["order"]["client_order_id"], "s-2", "{m}");
        ended.push(m);
    }
    let events: Vec<&str> = ended.iter().map(|m| m["data"]["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["new", "partial_fill", "canceled"],
        "the 510 call filled, the 500 rested"
    );
    assert_eq!(ended[2]["data"]["order"]["status"], "canceled");
    let no_more = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(no_more.is_err(), "nothing after the order's end: {no_more:?}");
}
