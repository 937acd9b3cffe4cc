//! Trading API v2 over the engine, answering as Alpaca does: the same paths, status codes
//! and `{"code":…,"message":…}` bodies the Alpaca adapter reads.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use closeflow_domain::{Quantity, Side};
use closeflow_pipeline::sim_broker::engine::{CancelError, ListQuery, NewOrder, StatusFilter, SubmitError};
use closeflow_pipeline::sim_broker::mleg::{self, LegRequest, MlegError, MlegOrder, MlegRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{views, PaperBroker};

type Broker = State<Arc<PaperBroker>>;

/// Alpaca's error answer.
pub fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (status, Json(json!({"code": code, "message": message.into()}))).into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, 40010001, message)
}

fn order_not_found() -> Response {
    error(StatusCode::NOT_FOUND, 40410000, "order not found")
}

pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, 40410000, "endpoint not found")
}

pub fn routes(broker: Arc<PaperBroker>) -> Router<Arc<PaperBroker>> {
    Router::new()
        .route("/v2/orders", get(list_orders).post(submit))
        .route("/v2/orders:by_client_order_id", get(by_client_order_id))
        .route("/v2/orders/{id}", get(by_id).delete(cancel))
        .route("/v2/positions", get(positions))
        .route("/v2/account", get(account))
        .route_layer(middleware::from_fn_with_state(broker, guard))
}

/// Keys first (401 as Alpaca, never counted), then the account's rate limit; every
/// counted answer carries the `X-RateLimit-*` headers.
pub(crate) async fn guard(State(broker): Broker, req: Request, next: Next) -> Response {
    let authorized = {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        broker.authorized(header("APCA-API-KEY-ID"), header("APCA-API-SECRET-KEY"))
    };
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, 40110000, "request is not authorized");
    }
    let Some(limiter) = &broker.limiter else {
        return next.run(req).await;
    };
    let d = limiter.check(broker.clock.now());
    let mut resp = if d.allowed {
        next.run(req).await
    } else {
        error(StatusCode::TOO_MANY_REQUESTS, 42910000, "rate limit exceeded")
    };
    let h = resp.headers_mut();
    h.insert("X-RateLimit-Limit", HeaderValue::from(d.limit));
    h.insert("X-RateLimit-Remaining", HeaderValue::from(d.remaining));
    h.insert("X-RateLimit-Reset", HeaderValue::from(d.reset));
    resp
}

/// `POST /v2/orders`. Quantities may be JSON strings or numbers, read exactly.
#[derive(Debug, Deserialize)]
struct OrderRequest {
    symbol: Option<String>,
    qty: Option<Quantity>,
    notional: Option<Quantity>,
    side: Option<String>,
    #[serde(rename = "type")]
    order_type: Option<String>,
    time_in_force: Option<String>,
    limit_price: Option<Quantity>,
    client_order_id: Option<String>,
    position_intent: Option<String>,
    /// `mleg`: a multi-leg order of `legs` (`qty` in strategy units).
    order_class: Option<String>,
    legs: Option<Vec<LegRequestJson>>,
}

/// One leg of a multi-leg order.
#[derive(Debug, Deserialize)]
struct LegRequestJson {
    symbol: Option<String>,
    ratio_qty: Option<Quantity>,
    side: Option<String>,
    position_intent: Option<String>,
}

const TIMES_IN_FORCE: [&str; 6] = ["day", "gtc", "opg", "cls", "ioc", "fok"];
const POSITION_INTENTS: [&str; 4] = ["buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"];

/// The order, or the message of Alpaca's 422.
fn validate(account: &str, r: OrderRequest) -> Result<NewOrder, String> {
    let symbol = r
        .symbol
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| "symbol is required".to_string())?;
    if r.notional.is_some() {
        return Err("notional orders are not supported by the paper broker; use qty".to_string());
    }
    let qty = r.qty.ok_or_else(|| "qty is required".to_string())?;
    if qty.is_zero() || qty.is_negative() {
        return Err("qty must be > 0".to_string());
    }
    let side = match r.side.as_deref() {
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        _ => return Err("side must be buy or sell".to_string()),
    };
    let order_type = r.order_type.unwrap_or_else(|| "market".into());
    match (order_type.as_str(), r.limit_price) {
        ("market", None) => {}
        ("market", Some(_)) => return Err("limit_price must not be given for market orders".to_string()),
        ("limit", Some(p)) if !p.is_zero() && !p.is_negative() => {}
        ("limit", _) => return Err("limit_price is required for limit orders and must be > 0".to_string()),
        (other, _) => {
            return Err(format!(
                "order type {other} is not supported by the paper broker (market, limit)"
            ))
        }
    }
    let time_in_force = r.time_in_force.ok_or_else(|| "time_in_force is required".to_string())?;
    if !TIMES_IN_FORCE.contains(&time_in_force.as_str()) {
        return Err(format!("invalid time_in_force: {time_in_force}"));
    }
    if let Some(p) = &r.position_intent {
        if !POSITION_INTENTS.contains(&p.as_str()) {
            return Err(format!("invalid position_intent: {p}"));
        }
    }
    if let Some(c) = &r.client_order_id {
        if c.len() > 128 {
            return Err("client_order_id must be no more than 128 characters".to_string());
        }
    }
    Ok(NewOrder {
        account: account.to_string(),
        client_order_id: r.client_order_id.filter(|c| !c.is_empty()),
        symbol,
        side,
        qty,
        order_type,
        time_in_force,
        limit_price: r.limit_price,
        position_intent: r.position_intent,
        rests: false,
    })
}

/// A multi-leg order, or the message of Alpaca's 422. Alpaca names the legs itself; here
/// each leg's client order id is the order's with `/leg<n>`.
fn validate_mleg(account: &str, r: OrderRequest) -> Result<MlegRequest, String> {
    if r.symbol.is_some() || r.side.is_some() {
        return Err("a multi-leg order names its symbols and sides in its legs".to_string());
    }
    let qty = r.qty.ok_or_else(|| "qty is required".to_string())?;
    if qty.is_zero() || qty.is_negative() || !qty.value().fract().is_zero() {
        return Err("qty must be a whole number > 0 for multi-leg orders".to_string());
    }
    let limit_price = match (r.order_type.as_deref().unwrap_or("market"), r.limit_price) {
        ("market", None) => None,
        ("market", Some(_)) => return Err("limit_price must not be given for market orders".to_string()),
        // A net price: positive a debit, negative a credit.
        ("limit", Some(p)) if !p.is_zero() => Some(p),
        ("limit", _) => return Err("limit_price is required for limit orders".to_string()),
        (other, _) => return Err(format!("order type {other} is not supported for multi-leg orders")),
    };
    let time_in_force = r.time_in_force.ok_or_else(|| "time_in_force is required".to_string())?;
    if time_in_force != "day" {
        return Err("multi-leg orders take time_in_force day".to_string());
    }
    let legs = r.legs.unwrap_or_default();
    if !(2..=4).contains(&legs.len()) {
        return Err("a multi-leg order has 2 to 4 legs".to_string());
    }
    let client_order_id = r
        .client_order_id
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if client_order_id.len() > 128 {
        return Err("client_order_id must be no more than 128 characters".to_string());
    }
    let legs = legs
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let symbol = l
                .symbol
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| format!("legs[{i}].symbol is required"))?;
            let ratio = l
                .ratio_qty
                .filter(|q| !q.is_zero() && !q.is_negative() && q.value().fract().is_zero())
                .ok_or_else(|| format!("legs[{i}].ratio_qty must be a whole number > 0"))?;
            let side = match l.side.as_deref() {
                Some("buy") => Side::Buy,
                Some("sell") => Side::Sell,
                _ => return Err(format!("legs[{i}].side must be buy or sell")),
            };
            if let Some(p) = l.position_intent.as_deref().filter(|p| !POSITION_INTENTS.contains(p)) {
                return Err(format!("invalid position_intent: {p}"));
            }
            Ok(LegRequest {
                symbol,
                ratio,
                side,
                position_intent: l.position_intent,
                client_order_id: format!("{client_order_id}/leg{}", i + 1),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(MlegRequest {
        account: account.to_string(),
        attempt: closeflow_domain::ClientOrderId::parse(&client_order_id).map_or(1, |c| c.attempt),
        client_order_id,
        qty,
        limit_price,
        time_in_force,
        legs,
    })
}

fn mleg_answer(b: &PaperBroker, m: &MlegOrder) -> Response {
    match mleg::state(&b.engine, m) {
        Some(st) => Json(views::mleg_order(m, &st)).into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "a leg of the order is missing",
        ),
    }
}

async fn submit(State(b): Broker, body: Bytes) -> Response {
    let req: OrderRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return error(StatusCode::BAD_REQUEST, 40010000, "request body format is invalid"),
    };
    if req.order_class.as_deref() == Some("mleg") {
        let m = match validate_mleg(&b.account, req) {
            Ok(m) => m,
            Err(message) => return invalid(message),
        };
        return match b.mlegs.place(&b.engine, &m) {
            Ok(placed) => mleg_answer(&b, &placed),
            Err(MlegError::Duplicate) => invalid("client_order_id must be unique"),
            Err(MlegError::Rejected(why)) => error(StatusCode::FORBIDDEN, 40310000, why),
        };
    }
    if req.legs.is_some()
        || req
            .order_class
            .as_deref()
            .is_some_and(|c| !c.is_empty() && c != "simple")
    {
        return invalid("order_class must be simple or mleg (legs only with mleg)");
    }
    let new = match validate(&b.account, req) {
        Ok(n) => n,
        Err(message) => return invalid(message),
    };
    match b.engine.submit(new) {
        Ok(o) => Json(views::order(&o)).into_response(),
        Err(SubmitError::DuplicateClientOrderId) => invalid("client_order_id must be unique"),
        Err(e) => {
            let message = e.to_string();
            let SubmitError::InsufficientQty {
                symbol,
                available,
                related_orders,
                ..
            } = e
            else {
                return invalid(message);
            };
            let held: Quantity = related_orders
                .iter()
                .filter_map(|id| b.engine.by_id(id))
                .fold(Quantity::ZERO, |acc, o| {
                    acc.checked_add(o.qty.minus(o.filled_qty)).unwrap_or(acc)
                });
            let existing = b
                .engine
                .positions(&b.account)
                .into_iter()
                .find(|(s, _)| *s == symbol)
                .map_or(Quantity::ZERO, |(_, h)| h.qty.abs());
            (
                StatusCode::FORBIDDEN,
                Json(json!({
                    "code": 40310000,
                    "message": message,
                    "symbol": symbol,
                    "available": available.to_string(),
                    "existing_qty": existing.to_string(),
                    "held_for_orders": held.to_string(),
                    "related_orders": related_orders,
                })),
            )
                .into_response()
        }
    }
}

async fn list_orders(State(b): Broker, Query(q): Query<HashMap<String, String>>) -> Response {
    let status = match q.get("status").map(String::as_str) {
        None | Some("open") => StatusFilter::Open,
        Some("closed") => StatusFilter::Closed,
        Some("all") => StatusFilter::All,
        Some(other) => return invalid(format!("invalid status: {other} (open, closed or all)")),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=500).contains(&n) => n,
        Some(_) => return invalid("limit must be between 1 and 500"),
    };
    let newest_first = match q.get("direction").map(String::as_str) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => return invalid(format!("invalid direction: {other} (asc or desc)")),
    };
    let symbols = q.get("symbols").map(|s| {
        s.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let orders = b.engine.list(&ListQuery {
        status,
        symbols,
        limit,
        newest_first,
    });
    Json(orders.iter().map(views::order).collect::<Vec<_>>()).into_response()
}

async fn by_client_order_id(State(b): Broker, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(id) = q.get("client_order_id") else {
        return invalid("client_order_id is required");
    };
    if let Some(m) = b.mlegs.get(id) {
        return mleg_answer(&b, &m);
    }
    match b.engine.by_client_order_id(id) {
        Some(o) => Json(views::order(&o)).into_response(),
        None => order_not_found(),
    }
}

async fn by_id(State(b): Broker, Path(id): Path<String>) -> Response {
    if let Some(m) = b.mlegs.by_id(&id) {
        return mleg_answer(&b, &m);
    }
    match b.engine.by_id(&id) {
        Some(o) => Json(views::order(&o)).into_response(),
        None => order_not_found(),
    }
}

async fn cancel(State(b): Broker, Path(id): Path<String>) -> Response {
    if let Some(m) = b.mlegs.by_id(&id) {
        // A multi-leg order is canceled as a whole: every leg still working.
        return match b.mlegs.cancel(&b.engine, &m) {
            true => StatusCode::NO_CONTENT.into_response(),
            false => error(StatusCode::UNPROCESSABLE_ENTITY, 42210000, "order is not cancelable"),
        };
    }
    match b.engine.cancel(&id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(CancelError::NotFound) => order_not_found(),
        Err(CancelError::NotCancelable(s)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42210000,
            format!("order is not cancelable (status {})", s.as_str()),
        ),
    }
}

/// The key pair's account's holdings: seeded, moved by fills and by `/paper/positions`.
async fn positions(State(b): Broker) -> Response {
    let list: Vec<Value> = b
        .engine
        .positions(&b.account)
        .into_iter()
        .map(|(s, h)| views::position(&s, &h, b.engine.scenarios().price(&s)))
        .collect();
    Json(list).into_response()
}

async fn account(State(b): Broker) -> Response {
    let (mut long, mut short) = (Quantity::ZERO, Quantity::ZERO);
    for (s, h) in b.engine.positions(&b.account) {
        let v = views::market_value(h.qty, b.engine.scenarios().price(&s));
        let side = if h.qty.is_negative() { &mut short } else { &mut long };
        match v.and_then(|v| side.checked_add(v)) {
            Some(total) => *side = total,
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    50010000,
                    "account value out of range",
                )
            }
        }
    }
    let cash = b
        .engine
        .net_cash()
        .and_then(|c| c.checked_add(crate::STARTING_CASH.into()));
    let Some(cash) = cash else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            50010000,
            "account value out of range",
        );
    };
    let equity = *b.equity.lock().unwrap_or_else(|p| p.into_inner());
    Json(views::account(&b.account_id, &b.started_at, cash, long, short, equity)).into_response()
}
