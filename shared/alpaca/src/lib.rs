//! Alpaca Trading API v2 as a [`Broker`]. Paper trading by default; keys from the
//! environment (`ALPACA_API_KEY_ID`, `ALPACA_API_SECRET_KEY`), never logged.
//!
//! Error classification is the safety-critical part: only answers that prove the order
//! does not exist are `Rejected`; anything unknown (timeout, 5xx, 429, auth) is
//! `Ambiguous`, so the same client order id is tried again and never assumed rejected.

pub mod stream;

use std::time::Duration;

use async_trait::async_trait;
use closeflow_domain::{AssetType, ClientOrderId, OrderIntent, OrderStatus, Quantity, Side};
use closeflow_pipeline::broker::BrokerPosition;
use closeflow_pipeline::{Broker, BrokerError, BrokerOrder};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

pub const PAPER_URL: &str = "https://paper-api.alpaca.markets";
pub const LIVE_URL: &str = "https://api.alpaca.markets";

#[derive(Clone)]
pub struct AlpacaConfig {
    pub base_url: String,
    pub key_id: String,
    pub secret_key: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for AlpacaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpacaConfig")
            .field("base_url", &self.base_url)
            .field("key_id", &"<redacted>")
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl AlpacaConfig {
    /// From `ALPACA_API_KEY_ID`, `ALPACA_API_SECRET_KEY`, `ALPACA_LIVE` (`true` for live
    /// trading; paper otherwise) and optional `ALPACA_BASE_URL`.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} must be set"));
        let live = std::env::var("ALPACA_LIVE").is_ok_and(|v| v == "true");
        Ok(AlpacaConfig {
            base_url: std::env::var("ALPACA_BASE_URL")
                .unwrap_or_else(|_| if live { LIVE_URL } else { PAPER_URL }.to_string()),
            key_id: var("ALPACA_API_KEY_ID")?,
            secret_key: var("ALPACA_API_SECRET_KEY")?,
            timeout: Duration::from_secs(5),
        })
    }
}

pub struct AlpacaBroker {
    http: reqwest::Client,
    cfg: AlpacaConfig,
}

/// The part of Alpaca's order object closeflow reads.
#[derive(Debug, Deserialize)]
struct AlpacaOrder {
    id: String,
    client_order_id: String,
    status: String,
    #[serde(default)]
    filled_qty: Option<String>,
    #[serde(default)]
    filled_avg_price: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AlpacaPosition {
    symbol: String,
    qty: String,
    side: String,
}

#[derive(Debug, Deserialize, Default)]
struct AlpacaErrorBody {
    #[serde(default)]
    message: String,
}

/// Maps every Alpaca order status onto closeflow's seven. Working states become
/// `accepted` or `partially_filled` by what has filled; only final states are terminal.
/// `replaced` ends this order (closeflow never replaces its orders; the remainder is no
/// longer ours), so the close request is settled by what filled and stays visible.
pub fn map_status(alpaca: &str, filled: Quantity) -> Option<OrderStatus> {
    let working = if filled.is_zero() {
        OrderStatus::Accepted
    } else {
        OrderStatus::PartiallyFilled
    };
    Some(match alpaca {
        "new"
        | "pending_new"
        | "pending_review"
        | "accepted"
        | "accepted_for_bidding"
        | "held"
        | "suspended"
        | "stopped"
        | "partially_filled"
        | "done_for_day"
        | "pending_cancel"
        | "pending_replace"
        | "calculated" => working,
        "filled" => OrderStatus::Filled,
        "canceled" | "replaced" => OrderStatus::Canceled,
        "expired" => OrderStatus::Expired,
        "rejected" => OrderStatus::Rejected,
        _ => return None,
    })
}

fn to_broker_order(o: AlpacaOrder) -> Result<BrokerOrder, BrokerError> {
    let filled = match o.filled_qty.as_deref() {
        None | Some("") => Quantity::ZERO,
        Some(q) => Quantity::parse(q).map_err(|e| BrokerError::Ambiguous(format!("bad filled_qty: {e}")))?,
    };
    let status = map_status(&o.status, filled)
        .ok_or_else(|| BrokerError::Ambiguous(format!("unknown Alpaca order status `{}`", o.status)))?;
    let client_order_id = ClientOrderId::parse(&o.client_order_id)
        .map_err(|_| BrokerError::Ambiguous(format!("order {} is not closeflow's", o.id)))?;
    Ok(BrokerOrder {
        broker_order_id: o.id,
        client_order_id,
        status,
        filled_qty: filled,
        filled_avg_price: o.filled_avg_price.as_deref().and_then(|p| Quantity::parse(p).ok()),
        updated_at: o
            .updated_at
            .as_deref()
            .and_then(closeflow_domain::parse_timestamp)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
    })
}

impl AlpacaBroker {
    pub fn new(cfg: AlpacaConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(AlpacaBroker { http, cfg })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.cfg.base_url.trim_end_matches('/')))
            .header("APCA-API-KEY-ID", &self.cfg.key_id)
            .header("APCA-API-SECRET-KEY", &self.cfg.secret_key)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<(StatusCode, String), BrokerError> {
        let resp = rb.send().await.map_err(|e| {
            // Timeouts and connection errors: the order may or may not exist.
            BrokerError::Ambiguous(if e.is_timeout() {
                "timeout".to_string()
            } else {
                format!("transport: {e}")
            })
        })?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| BrokerError::Ambiguous(format!("reading body: {e}")))?;
        Ok((status, body))
    }
}

/// Alpaca takes at most 9 decimal places. A close is rounded toward zero, never up: an
/// order for more than the position holds would open the opposite one. A quantity that
/// rounds to nothing cannot be sent at all (a definitive refusal, for a human).
pub fn order_qty(qty: Quantity) -> Result<String, BrokerError> {
    let rounded = qty
        .value()
        .round_dp_with_strategy(9, rust_decimal::RoundingStrategy::ToZero)
        .normalize();
    if rounded.is_zero() {
        return Err(BrokerError::Rejected(format!(
            "quantity {qty} is below Alpaca's smallest tradable unit (9 decimal places)"
        )));
    }
    Ok(rounded.to_string())
}

/// OCC option symbols arrive padded with spaces ("AAPL  240119C00150000"); Alpaca's are
/// not. Equity symbols pass as they are.
pub fn order_symbol(symbol: &str, asset_type: AssetType) -> String {
    match asset_type {
        AssetType::Option => symbol.chars().filter(|c| !c.is_whitespace()).collect(),
        AssetType::Equity => symbol.to_string(),
    }
}

fn message(body: &str) -> String {
    serde_json::from_str::<AlpacaErrorBody>(body)
        .map(|b| b.message)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn unknown(status: StatusCode, body: &str) -> BrokerError {
    BrokerError::Ambiguous(format!("HTTP {status}: {}", message(body)))
}

fn parse_order(body: &str) -> Result<BrokerOrder, BrokerError> {
    let o: AlpacaOrder =
        serde_json::from_str(body).map_err(|e| BrokerError::Ambiguous(format!("unreadable order: {e}")))?;
    to_broker_order(o)
}

#[async_trait]
impl Broker for AlpacaBroker {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        let side = match intent.side {
            Side::Sell => "sell",
            Side::Buy => "buy",
        };
        let mut body = json!({
            "symbol": order_symbol(&intent.symbol, intent.asset_type),
            "qty": order_qty(intent.qty)?,
            "side": side,
            "type": intent.options.order_type.as_str(),
            "time_in_force": intent.options.time_in_force.as_str(),
            "client_order_id": intent.client_order_id.to_string(),
        });
        if let Some(price) = intent.options.limit_price {
            // Alpaca reads prices as strings too; exact, never a float.
            body["limit_price"] = json!(price.to_string());
        }
        if intent.options.extended_hours {
            body["extended_hours"] = json!(true);
        }
        if intent.asset_type == AssetType::Option {
            // Closing intent, so the broker never opens the opposite position.
            body["position_intent"] = json!(match intent.side {
                Side::Sell => "sell_to_close",
                Side::Buy => "buy_to_close",
            });
        }
        let (status, text) = self
            .send(self.req(reqwest::Method::POST, "/v2/orders").json(&body))
            .await?;
        match status {
            s if s.is_success() => parse_order(&text),
            StatusCode::UNPROCESSABLE_ENTITY if message(&text).contains("client_order_id") => {
                Err(BrokerError::DuplicateClientOrderId)
            }
            // 403: insufficient qty / buying power; 422: invalid order. Both are final.
            StatusCode::FORBIDDEN | StatusCode::UNPROCESSABLE_ENTITY => Err(BrokerError::Rejected(message(&text))),
            s => Err(unknown(s, &text)),
        }
    }

    async fn get_order_by_client_id(&self, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        let rb = self
            .req(reqwest::Method::GET, "/v2/orders:by_client_order_id")
            .query(&[("client_order_id", id.to_string())]);
        let (status, text) = self.send(rb).await?;
        match status {
            s if s.is_success() => parse_order(&text),
            StatusCode::NOT_FOUND => Err(BrokerError::NotFound),
            s => Err(unknown(s, &text)),
        }
    }

    async fn cancel_order(&self, broker_order_id: &str) -> Result<(), BrokerError> {
        let (status, text) = self
            .send(self.req(reqwest::Method::DELETE, &format!("/v2/orders/{broker_order_id}")))
            .await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(BrokerError::NotFound),
            // 422: no longer cancelable (already filled or canceled): nothing left to cancel.
            StatusCode::UNPROCESSABLE_ENTITY => Ok(()),
            s => Err(unknown(s, &text)),
        }
    }

    async fn list_positions(&self) -> Result<Vec<BrokerPosition>, BrokerError> {
        let (status, text) = self.send(self.req(reqwest::Method::GET, "/v2/positions")).await?;
        if !status.is_success() {
            return Err(unknown(status, &text));
        }
        let list: Vec<AlpacaPosition> =
            serde_json::from_str(&text).map_err(|e| BrokerError::Ambiguous(format!("unreadable positions: {e}")))?;
        list.into_iter()
            .map(|p| {
                let q = Quantity::parse(&p.qty)
                    .map_err(|e| BrokerError::Ambiguous(e.to_string()))?
                    .abs();
                let qty = if p.side == "short" {
                    Quantity::new(-q.value())
                } else {
                    q
                };
                Ok(BrokerPosition { symbol: p.symbol, qty })
            })
            .collect()
    }
}
