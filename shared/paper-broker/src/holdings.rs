//! `/paper/positions`: the paper account's holdings changed behind closeflow's back, as a
//! trade made elsewhere (another app, a corporate action, an assignment) would change them
//! at Alpaca. Position sync then finds the difference through `GET /v2/positions`.
//!
//! - `GET /paper/positions`: the holdings (account, symbol, qty, side, avg_entry_price).
//! - `POST /paper/positions` `{"symbol", "qty"}` sets a holding outright (0 removes it);
//!   `{"symbol", "adjust_by"}` moves it as an execution of that many units would (a
//!   reduction keeps the entry price). `avg_entry_price` (> 0) is the price of either; else
//!   the holding keeps its own, or takes the symbol's simulated price. `account`, when
//!   given, must be the key pair's.
//! - `DELETE /paper/positions/{symbol}`: removes a holding (404 when there is none).
//!
//! Authenticated and rate limited like the Alpaca routes. Errors are closeflow's, not
//! Alpaca's (these routes are not Alpaca's): `{"error": <stable code>, "message": …}`, and a
//! refused request changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use closeflow_domain::Quantity;
use closeflow_pipeline::sim_broker::holdings::Holding;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{rest, PaperBroker};

type Broker = State<Arc<PaperBroker>>;

pub fn routes(broker: Arc<PaperBroker>) -> Router<Arc<PaperBroker>> {
    Router::new()
        .route("/paper/positions", get(list).post(change))
        .route("/paper/positions/{symbol}", delete(remove))
        .route_layer(middleware::from_fn_with_state(broker, rest::guard))
}

pub(crate) fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": code, "message": message.into()}))).into_response()
}

fn view(account: &str, symbol: &str, holding: Option<&Holding>) -> Value {
    match holding {
        Some(h) => json!({
            "account": account,
            "symbol": symbol,
            "qty": h.qty.to_string(),
            "side": if h.qty.is_negative() { "short" } else { "long" },
            "avg_entry_price": h.avg_entry_price.to_string(),
        }),
        None => json!({"account": account, "symbol": symbol, "qty": "0", "side": null, "avg_entry_price": null}),
    }
}

async fn list(State(b): Broker) -> Response {
    let list: Vec<Value> = b
        .engine
        .positions(&b.account)
        .iter()
        .map(|(s, h)| view(&b.account, s, Some(h)))
        .collect();
    Json(list).into_response()
}

/// `POST /paper/positions`. Decimals as JSON strings or numbers, read exactly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    account: Option<String>,
    symbol: String,
    qty: Option<Quantity>,
    adjust_by: Option<Quantity>,
    avg_entry_price: Option<Quantity>,
}

enum Move {
    Set(Quantity),
    Adjust(Quantity),
}

/// A readable change: the symbol, how it moves, and the price asked for.
struct Asked {
    symbol: String,
    change: Move,
    price: Option<Quantity>,
}

/// A refused change: status, stable code, message.
type Refusal = (StatusCode, &'static str, String);

/// The change as asked, or its refusal.
fn parse_change(b: &PaperBroker, body: &[u8]) -> Result<Asked, Refusal> {
    let bad = |code, message: String| (StatusCode::BAD_REQUEST, code, message);
    let c: Change = serde_json::from_slice(body).map_err(|e| bad("invalid_body", e.to_string()))?;
    if let Some(a) = c.account.as_deref().filter(|a| *a != b.account) {
        return Err((
            StatusCode::NOT_FOUND,
            "unknown_account",
            format!("account `{a}` is not this key pair's (`{}`)", b.account),
        ));
    }
    let symbol = c.symbol.trim();
    if symbol.is_empty() || symbol.len() != c.symbol.len() || symbol.contains(char::is_whitespace) {
        return Err(bad("invalid_symbol", "symbol must be non-empty, without spaces".into()));
    }
    let change = match (c.qty, c.adjust_by) {
        (Some(q), None) => Move::Set(q),
        (None, Some(d)) if !d.is_zero() => Move::Adjust(d),
        (None, Some(_)) => return Err(bad("invalid_qty", "adjust_by must not be 0".into())),
        _ => {
            return Err(bad(
                "invalid_body",
                "give exactly one of qty (set) and adjust_by (add, signed)".into(),
            ))
        }
    };
    if c.avg_entry_price.is_some_and(|p| p.is_zero() || p.is_negative()) {
        return Err(bad("invalid_price", "avg_entry_price must be > 0".into()));
    }
    Ok(Asked {
        symbol: symbol.to_string(),
        change,
        price: c.avg_entry_price,
    })
}

async fn change(State(b): Broker, body: Bytes) -> Response {
    let Asked { symbol, change, price } = match parse_change(&b, &body) {
        Ok(c) => c,
        Err((status, code, message)) => return refuse(status, code, message),
    };
    let account = b.account.as_str();
    match change {
        Move::Set(qty) => b.engine.set_position(account, &symbol, qty, price),
        Move::Adjust(by) => {
            let at = price.unwrap_or_else(|| b.engine.scenarios().price(&symbol));
            if b.engine.adjust_position(account, &symbol, by, at).is_none() {
                return refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "out_of_range",
                    "the holding would leave the decimal range",
                );
            }
        }
    }
    let after = b.engine.positions(account).into_iter().find(|(s, _)| *s == symbol);
    tracing::info!(account, symbol, qty = %after.as_ref().map_or(Quantity::ZERO, |(_, h)| h.qty), "holding changed outside closeflow");
    Json(view(account, &symbol, after.as_ref().map(|(_, h)| h))).into_response()
}

async fn remove(State(b): Broker, Path(symbol): Path<String>) -> Response {
    if b.engine.remove_position(&b.account, &symbol) {
        tracing::info!(account = b.account, symbol, "holding removed outside closeflow");
        StatusCode::NO_CONTENT.into_response()
    } else {
        refuse(
            StatusCode::NOT_FOUND,
            "holding_not_found",
            format!("account `{}` holds no {symbol}", b.account),
        )
    }
}
