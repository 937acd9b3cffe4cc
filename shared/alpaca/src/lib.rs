//! Alpaca Trading API v2 as a [`Broker`]. Paper trading by default; keys from the
//! environment (`ALPACA_API_KEY_ID`, `ALPACA_API_SECRET_KEY`, or one pair per account in
//! [`accounts`]), never logged.
//!
//! Error classification is the safety-critical part: only answers that prove the order
//! does not exist are `Rejected`; anything unknown (timeout, 5xx, network) is `Ambiguous`,
//! so the same client order id is tried again and never assumed rejected. A 429, an open
//! circuit breaker and refused keys say "try later" (see [`BrokerError::is_try_later`]);
//! a 403 for shares held by open orders is `BlockedByOpenOrders`.
//!
//! Each key pair has its own request budget ([`Limits`]): a `governor` limiter paces the
//! requests (200 a minute by default, `BROKER_RATE_LIMIT`), the broker's
//! `X-RateLimit-Remaining`/`X-RateLimit-Reset` pause them until the window resets, and a
//! circuit breaker leaves the broker alone for a cool-down after repeated ambiguous
//! failures.

pub mod accounts;
pub mod limits;
pub mod stream;

use std::time::Duration;

use async_trait::async_trait;
use closeflow_domain::{
    AccountId, AssetType, ClientOrderId, MlegIntent, MlegLegReport, OrderIntent, OrderStatus, Price, Quantity, Side,
};
use closeflow_pipeline::broker::{BrokerMlegOrder, BrokerPosition, OpenOrder};
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

pub use limits::Limits;

pub struct AlpacaBroker {
    http: reqwest::Client,
    cfg: AlpacaConfig,
    /// This key pair's request budget and circuit breaker.
    guard: limits::Guard,
}

/// The part of Alpaca's order object closeflow reads.
#[derive(Debug, Deserialize)]
struct AlpacaOrder {
    id: String,
    /// Alpaca names a multi-leg order's legs itself; only the order carries closeflow's id.
    #[serde(default)]
    client_order_id: String,
    status: String,
    #[serde(default)]
    symbol: Option<String>,
    /// A multi-leg order's legs, each an order of its own with its own fills.
    #[serde(default)]
    legs: Option<Vec<AlpacaOrder>>,
    #[serde(default)]
    filled_qty: Option<String>,
    #[serde(default)]
    filled_avg_price: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    /// Set when the order ended `replaced`: the order that now carries it.
    #[serde(default)]
    replaced_by: Option<String>,
}

/// An open order as `GET /v2/orders?status=open` lists it.
#[derive(Debug, Deserialize)]
struct AlpacaOpenOrder {
    id: String,
    #[serde(default)]
    client_order_id: String,
    /// A multi-leg order itself names no symbol (its legs do).
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    qty: Option<String>,
    #[serde(default)]
    filled_qty: Option<String>,
    /// What the account-wide listing pages by.
    #[serde(default)]
    submitted_at: Option<String>,
}

impl AlpacaOpenOrder {
    fn into_open_order(self) -> Result<OpenOrder, BrokerError> {
        let q = |v: Option<&str>| match v {
            None | Some("") => Ok(Quantity::ZERO),
            Some(v) => Quantity::parse(v).map_err(|e| BrokerError::Ambiguous(e.to_string())),
        };
        Ok(OpenOrder {
            qty: q(self.qty.as_deref())?,
            filled_qty: q(self.filled_qty.as_deref())?,
            broker_order_id: self.id,
            client_order_id: self.client_order_id,
            symbol: self.symbol.unwrap_or_default(),
        })
    }
}

/// The part of Alpaca's account object closeflow reads.
#[derive(Debug, Deserialize)]
struct AlpacaAccount {
    /// A decimal string; a JSON number is read from its text all the same.
    #[serde(default)]
    equity: Option<Box<serde_json::value::RawValue>>,
}

/// Alpaca's page size for order listings (its maximum).
const ORDER_PAGE: usize = 500;
/// Pages of open orders read at most (10 000 orders) before the answer is called unknown.
const MAX_ORDER_PAGES: usize = 20;

/// Alpaca's 403 body for an order the account cannot cover now.
#[derive(Debug, Deserialize, Default)]
struct InsufficientBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    held_for_orders: Option<String>,
    #[serde(default)]
    related_orders: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AlpacaPosition {
    symbol: String,
    qty: String,
    side: String,
    #[serde(default)]
    avg_entry_price: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct AlpacaErrorBody {
    #[serde(default)]
    message: String,
}

/// Maps every Alpaca order status onto closeflow's seven. Working states become
/// `accepted` or `partially_filled` by what has filled; only final states are terminal.
/// `replaced` is working too: the order lives on as its replacement (`replaced_by`), which
/// the adapter follows; it is never read as canceled, so a retry cannot close twice.
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
        | "replaced"
        | "calculated" => working,
        "filled" => OrderStatus::Filled,
        "canceled" => OrderStatus::Canceled,
        "expired" => OrderStatus::Expired,
        "rejected" => OrderStatus::Rejected,
        _ => return None,
    })
}

fn to_broker_order(o: &AlpacaOrder) -> Result<BrokerOrder, BrokerError> {
    let filled = filled_of(o)?;
    let status = map_status(&o.status, filled)
        .ok_or_else(|| BrokerError::Ambiguous(format!("unknown Alpaca order status `{}`", o.status)))?;
    let client_order_id = ClientOrderId::parse(&o.client_order_id)
        .map_err(|_| BrokerError::Ambiguous(format!("order {} is not closeflow's", o.id)))?;
    Ok(BrokerOrder {
        broker_order_id: o.id.clone(),
        client_order_id,
        status,
        filled_qty: filled,
        filled_avg_price: price_of(o),
        updated_at: o
            .updated_at
            .as_deref()
            .and_then(closeflow_domain::parse_timestamp)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
    })
}

/// A multi-leg order and each leg's report. A leg whose symbol or status cannot be read
/// makes the whole answer unknown: a leg's fill is never guessed.
fn to_mleg_order(o: &AlpacaOrder) -> Result<BrokerMlegOrder, BrokerError> {
    let order = to_broker_order(o)?;
    let legs =
        o.legs
            .iter()
            .flatten()
            .map(|l| {
                let filled = filled_of(l)?;
                let status = map_status(&l.status, filled)
                    .ok_or_else(|| BrokerError::Ambiguous(format!("unknown Alpaca order status `{}`", l.status)))?;
                Ok(MlegLegReport {
                    symbol: l.symbol.clone().ok_or_else(|| {
                        BrokerError::Ambiguous(format!("leg {} of order {} has no symbol", l.id, o.id))
                    })?,
                    broker_order_id: Some(l.id.clone()),
                    status: Some(status),
                    filled_qty: filled,
                    filled_avg_price: price_of(l),
                })
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
    Ok(BrokerMlegOrder { order, legs })
}

/// The answer to an order submission (single or multi-leg), read the same way for both.
fn submission<T>(
    status: StatusCode,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, BrokerError>,
) -> Result<T, BrokerError> {
    match status {
        s if s.is_success() => parse(text),
        StatusCode::UNPROCESSABLE_ENTITY if message(text).contains("client_order_id") => {
            Err(BrokerError::DuplicateClientOrderId)
        }
        // 403: held by open orders, or insufficient qty / buying power; 422: invalid
        // order. Final, unless open orders can be canceled.
        StatusCode::FORBIDDEN => Err(forbidden_order(text)),
        StatusCode::UNPROCESSABLE_ENTITY => Err(BrokerError::Rejected(message(text))),
        s => Err(unknown(s, text)),
    }
}

fn side_str(side: Side) -> &'static str {
    match side {
        Side::Sell => "sell",
        Side::Buy => "buy",
    }
}

impl AlpacaBroker {
    /// With the default limits (200 requests a minute, breaker after 5 failures).
    pub fn new(cfg: AlpacaConfig) -> Result<Self, String> {
        Self::with_limits(cfg, Limits::default())
    }

    pub fn with_limits(cfg: AlpacaConfig, limits: Limits) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(AlpacaBroker {
            http,
            guard: limits::Guard::new(limits),
            cfg,
        })
    }

    pub fn config(&self) -> &AlpacaConfig {
        &self.cfg
    }

    /// Whether the circuit breaker leaves the broker alone now.
    pub fn breaker_open(&self) -> bool {
        self.guard.breaker_open()
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.cfg.base_url.trim_end_matches('/')))
            .header("APCA-API-KEY-ID", &self.cfg.key_id)
            .header("APCA-API-SECRET-KEY", &self.cfg.secret_key)
    }

    /// One request through this key pair's guard: the breaker and the request budget
    /// first, then the answer's rate-limit headers, 429, 5xx and refused keys read here;
    /// every other answer goes back to the caller.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<(StatusCode, String), BrokerError> {
        self.guard.before().await?;
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                // Timeouts and connection errors: the order may or may not exist.
                self.guard.failed();
                return Err(BrokerError::Ambiguous(if e.is_timeout() {
                    "timeout".to_string()
                } else {
                    format!("transport: {e}")
                }));
            }
        };
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let pause = self.guard.read_headers(
            header("X-RateLimit-Remaining"),
            header("X-RateLimit-Reset"),
            header("Retry-After"),
            status == StatusCode::TOO_MANY_REQUESTS,
        );
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                self.guard.failed();
                return Err(BrokerError::Ambiguous(format!("reading body: {e}")));
            }
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Nothing was done; the budget is back after the pause.
            return Err(BrokerError::RateLimited { retry_after: pause });
        }
        if status.is_server_error() {
            self.guard.failed();
            return Err(unknown(status, &body));
        }
        self.guard.answered();
        if status == StatusCode::UNAUTHORIZED || (status == StatusCode::FORBIDDEN && credentials_refused(&body)) {
            tracing::error!(alert = closeflow_domain::trouble::CREDENTIALS_REJECTED.as_str(), key_id = %redact(&self.cfg.key_id), "broker refused the key pair");
            return Err(BrokerError::CredentialsRejected(format!(
                "HTTP {status}: {}",
                message(&body)
            )));
        }
        Ok((status, body))
    }

    /// Follows `replaced` along `replaced_by`: the order that now carries the attempt,
    /// reported under the original client order id with what the chain filled together.
    async fn follow_replacements(&self, first: AlpacaOrder) -> Result<BrokerOrder, BrokerError> {
        let mut order = to_broker_order(&first)?;
        let mut current = first;
        let mut filled_before = Quantity::ZERO;
        for _ in 0..MAX_REPLACEMENTS {
            let Some(next_id) = current.replaced_by.clone().filter(|_| current.status == "replaced") else {
                break;
            };
            let (status, text) = self
                .send(self.req(reqwest::Method::GET, &format!("/v2/orders/{next_id}")))
                .await?;
            if !status.is_success() {
                // The replacement is not visible yet: the order still works.
                break;
            }
            let next: AlpacaOrder = serde_json::from_str(&text)
                .map_err(|e| BrokerError::Ambiguous(format!("unreadable replacement order: {e}")))?;
            filled_before = filled_before
                .checked_add(filled_of(&current)?)
                .ok_or_else(|| BrokerError::Ambiguous("filled quantity out of range".into()))?;
            current = next;
        }
        if current.id != order.broker_order_id {
            let filled = filled_before
                .checked_add(filled_of(&current)?)
                .ok_or_else(|| BrokerError::Ambiguous("filled quantity out of range".into()))?;
            order.status = map_status(&current.status, filled)
                .ok_or_else(|| BrokerError::Ambiguous(format!("unknown Alpaca order status `{}`", current.status)))?;
            order.broker_order_id = current.id.clone();
            order.filled_qty = filled;
            order.filled_avg_price = price_of(&current).or(order.filled_avg_price);
            if let Some(t) = current
                .updated_at
                .as_deref()
                .and_then(closeflow_domain::parse_timestamp)
            {
                order.updated_at = t;
            }
        }
        Ok(order)
    }
}

/// Replacements followed at most per lookup.
const MAX_REPLACEMENTS: usize = 8;

fn redact(key_id: &str) -> String {
    key_id.chars().take(4).chain("…".chars()).collect()
}

/// Alpaca's answer to keys it does not accept: `{"message": "forbidden."}` (403) or 401.
fn credentials_refused(body: &str) -> bool {
    let m = message(body).trim().trim_end_matches('.').to_ascii_lowercase();
    m == "forbidden" || m.contains("not authorized") || m.contains("unauthorized")
}

fn filled_of(o: &AlpacaOrder) -> Result<Quantity, BrokerError> {
    match o.filled_qty.as_deref() {
        None | Some("") => Ok(Quantity::ZERO),
        Some(q) => Quantity::parse(q).map_err(|e| BrokerError::Ambiguous(format!("bad filled_qty: {e}"))),
    }
}

/// The order's average fill price. A multi-leg order's own price is a net one and may be
/// negative (a credit): that is no per-unit price, so it reads as none; its legs carry theirs.
fn price_of(o: &AlpacaOrder) -> Option<Price> {
    o.filled_avg_price
        .as_deref()
        .and_then(|p| Quantity::parse(p).ok())
        .and_then(Price::new)
}

/// A 403 on submission: held by open orders (with the held quantity), or a plain refusal.
fn forbidden_order(body: &str) -> BrokerError {
    let b: InsufficientBody = serde_json::from_str(body).unwrap_or_default();
    let held = b
        .held_for_orders
        .as_deref()
        .and_then(|h| Quantity::parse(h).ok())
        .filter(|h| !h.is_zero());
    let message = if b.message.is_empty() { message(body) } else { b.message };
    if message.contains("insufficient qty") && (held.is_some() || !b.related_orders.is_empty()) {
        return BrokerError::BlockedByOpenOrders {
            held_qty: held.unwrap_or(Quantity::ZERO),
            message,
        };
    }
    BrokerError::Rejected(message)
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

fn read_order(body: &str) -> Result<AlpacaOrder, BrokerError> {
    serde_json::from_str(body).map_err(|e| BrokerError::Ambiguous(format!("unreadable order: {e}")))
}

fn parse_order(body: &str) -> Result<BrokerOrder, BrokerError> {
    to_broker_order(&read_order(body)?)
}

#[async_trait]
impl Broker for AlpacaBroker {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        let mut body = json!({
            "symbol": order_symbol(&intent.symbol, intent.asset_type),
            "qty": order_qty(intent.qty)?,
            "side": side_str(intent.side),
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
        submission(status, &text, parse_order)
    }

    fn supports_mleg(&self) -> bool {
        true
    }

    /// `POST /v2/orders` with `order_class: "mleg"`: `qty` in strategy units, each leg its
    /// `ratio_qty`, `side` and closing `position_intent`; a limit price is the net price
    /// of the whole order (positive: a debit, negative: a credit).
    async fn submit_mleg_order(&self, intent: &MlegIntent) -> Result<BrokerMlegOrder, BrokerError> {
        let legs: Vec<serde_json::Value> = intent
            .legs
            .iter()
            .map(|l| {
                Ok(json!({
                    "symbol": order_symbol(&l.symbol, l.asset_type),
                    "ratio_qty": order_qty(l.ratio_qty)?,
                    "side": side_str(l.side),
                    "position_intent": l.position_intent.as_str(),
                }))
            })
            .collect::<Result<_, BrokerError>>()?;
        let mut body = json!({
            "order_class": "mleg",
            "qty": order_qty(intent.qty)?,
            "type": intent.options.order_type.as_str(),
            "time_in_force": intent.options.time_in_force.as_str(),
            "client_order_id": intent.client_order_id.to_string(),
            "legs": legs,
        });
        // A net price: a credit goes out negative.
        if let Some(price) = intent.options.signed_limit_price() {
            body["limit_price"] = json!(price.to_string());
        }
        let (status, text) = self
            .send(self.req(reqwest::Method::POST, "/v2/orders").json(&body))
            .await?;
        submission(status, &text, |t| to_mleg_order(&read_order(t)?))
    }

    async fn get_mleg_order_by_client_id(
        &self,
        _: &AccountId,
        id: &ClientOrderId,
    ) -> Result<BrokerMlegOrder, BrokerError> {
        // A multi-leg order comes back with its `legs`, each an order with its own fills.
        let rb = self
            .req(reqwest::Method::GET, "/v2/orders:by_client_order_id")
            .query(&[("client_order_id", id.to_string())]);
        let (status, text) = self.send(rb).await?;
        match status {
            s if s.is_success() => to_mleg_order(&read_order(&text)?),
            StatusCode::NOT_FOUND => Err(BrokerError::NotFound),
            s => Err(unknown(s, &text)),
        }
    }

    async fn get_order_by_client_id(&self, _: &AccountId, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        let rb = self
            .req(reqwest::Method::GET, "/v2/orders:by_client_order_id")
            .query(&[("client_order_id", id.to_string())]);
        let (status, text) = self.send(rb).await?;
        match status {
            s if s.is_success() => self.follow_replacements(read_order(&text)?).await,
            StatusCode::NOT_FOUND => Err(BrokerError::NotFound),
            s => Err(unknown(s, &text)),
        }
    }

    async fn cancel_order(&self, _: &AccountId, broker_order_id: &str) -> Result<(), BrokerError> {
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

    async fn open_orders(&self, _: &AccountId, symbol: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        let rb = self.req(reqwest::Method::GET, "/v2/orders").query(&[
            ("status", "open"),
            ("symbols", symbol),
            ("limit", "500"),
            ("direction", "asc"),
        ]);
        let (status, text) = self.send(rb).await?;
        if !status.is_success() {
            return Err(unknown(status, &text));
        }
        let list: Vec<AlpacaOpenOrder> =
            serde_json::from_str(&text).map_err(|e| BrokerError::Ambiguous(format!("unreadable orders: {e}")))?;
        list.into_iter()
            .filter(|o| o.symbol.as_deref() == Some(symbol))
            .map(AlpacaOpenOrder::into_open_order)
            .collect()
    }

    /// `GET /v2/account`'s `equity`.
    async fn account_equity(&self, _: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        let (status, text) = self.send(self.req(reqwest::Method::GET, "/v2/account")).await?;
        if !status.is_success() {
            return Err(unknown(status, &text));
        }
        let account: AlpacaAccount =
            serde_json::from_str(&text).map_err(|e| BrokerError::Ambiguous(format!("unreadable account: {e}")))?;
        let raw = account
            .equity
            .filter(|r| r.get() != "null")
            .ok_or_else(|| BrokerError::Ambiguous("the account has no equity".into()))?;
        closeflow_domain::quantity::parse_json_decimal(raw.get())
            .map_err(|e| BrokerError::Ambiguous(format!("bad equity: {e}")))
    }

    /// `GET /v2/orders?status=open&limit=500&nested=false`, oldest first. A full page may
    /// not be all: the next page starts just before the last order's `submitted_at` (an
    /// order sharing that instant is not skipped; repeats are dropped by id). A listing
    /// that cannot be completed is an error, never a silently shortened list: a
    /// liquidation would leave the missing orders working.
    async fn account_open_orders(&self, _: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_ORDER_PAGES {
            let mut rb = self.req(reqwest::Method::GET, "/v2/orders").query(&[
                ("status", "open"),
                ("limit", "500"),
                ("nested", "false"),
                ("direction", "asc"),
            ]);
            if let Some(a) = &after {
                rb = rb.query(&[("after", a)]);
            }
            let (status, text) = self.send(rb).await?;
            if !status.is_success() {
                return Err(unknown(status, &text));
            }
            let page: Vec<AlpacaOpenOrder> =
                serde_json::from_str(&text).map_err(|e| BrokerError::Ambiguous(format!("unreadable orders: {e}")))?;
            let full = page.len() >= ORDER_PAGE;
            let last = page.last().and_then(|o| o.submitted_at.clone());
            let before = out.len();
            for o in page {
                if seen.insert(o.id.clone()) {
                    out.push(o.into_open_order()?);
                }
            }
            if !full {
                return Ok(out);
            }
            if out.len() == before {
                return Err(BrokerError::Ambiguous(
                    "listing open orders made no progress (a full page of orders already seen)".into(),
                ));
            }
            let Some(t) = last.as_deref().and_then(closeflow_domain::parse_timestamp) else {
                return Err(BrokerError::Ambiguous(
                    "a full page of open orders without a readable submitted_at to page on".into(),
                ));
            };
            let just_before = t - chrono::TimeDelta::nanoseconds(1);
            after = Some(just_before.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        }
        Err(BrokerError::Ambiguous(format!(
            "more than {} open orders; the list is incomplete",
            ORDER_PAGE * MAX_ORDER_PAGES
        )))
    }

    async fn list_positions(&self, _: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
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
                // An unreadable entry price is no reason to lose the holding: sync then
                // compares quantities only.
                let avg_entry_price = p
                    .avg_entry_price
                    .as_deref()
                    .and_then(|t| Quantity::parse(t).ok())
                    .and_then(Price::new);
                Ok(BrokerPosition {
                    symbol: p.symbol,
                    qty,
                    avg_entry_price,
                })
            })
            .collect()
    }
}
