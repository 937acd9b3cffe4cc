//! Alpaca's `trade_updates` WebSocket: the way Alpaca reports order events (it calls no
//! webhook). The consumer connects, authenticates, listens, backfills what it may have
//! missed, and hands every event about one of closeflow's orders to a
//! [`TradeUpdateHandler`], which applies it through the same merge rules as a webhook.
//! On any error it reconnects with exponential backoff; each reconnect backfills again,
//! so a dropped connection loses nothing.

use std::sync::Arc;
use std::time::Duration;

use closeflow_domain::{ClientOrderId, MlegReport, OrderUpdate, Price, Quantity};
use closeflow_pipeline::TradeUpdateHandler;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::map_status;

pub const PAPER_STREAM_URL: &str = "wss://paper-api.alpaca.markets/stream";
pub const LIVE_STREAM_URL: &str = "wss://api.alpaca.markets/stream";

#[derive(Clone)]
pub struct StreamConfig {
    pub url: String,
    pub key_id: String,
    pub secret_key: String,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key pair is never printed.
        f.debug_struct("StreamConfig")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl StreamConfig {
    /// The stream of the account `cfg` trades: `ALPACA_STREAM_URL`, or paper/live by the
    /// adapter's base URL.
    pub fn for_account(cfg: &crate::AlpacaConfig) -> StreamConfig {
        let url = std::env::var("ALPACA_STREAM_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                if cfg.base_url == crate::LIVE_URL {
                    LIVE_STREAM_URL.to_string()
                } else {
                    PAPER_STREAM_URL.to_string()
                }
            });
        StreamConfig {
            url,
            key_id: cfg.key_id.clone(),
            secret_key: cfg.secret_key.clone(),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    stream: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct TradeEvent {
    event: String,
    #[serde(default)]
    execution_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    order: StreamOrder,
}

#[derive(Debug, Deserialize)]
struct StreamOrder {
    id: String,
    client_order_id: String,
    status: String,
    #[serde(default)]
    filled_qty: Option<String>,
    #[serde(default)]
    filled_avg_price: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    filled_at: Option<String>,
    #[serde(default)]
    replaced_by: Option<String>,
}

/// Replacement order id -> the attempt it carries (client order id, what the replaced
/// orders filled before it). Learnt from `replaced` events; bounded (a miss only leaves
/// the replacement's fill to the order watch's lookup, which follows `replaced_by`).
#[derive(Debug, Default)]
pub struct Replacements(std::collections::HashMap<String, (ClientOrderId, Quantity)>);

const REPLACEMENTS_KEPT: usize = 10_000;

impl Replacements {
    fn note(&mut self, replacement: String, carries: ClientOrderId, filled: Quantity) {
        if self.0.len() >= REPLACEMENTS_KEPT {
            self.0.clear();
        }
        self.0.insert(replacement, (carries, filled));
    }
}

/// What one stream message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An event about one of closeflow's orders, as an order update.
    Update(OrderUpdate),
    /// An event about one of closeflow's multi-leg orders: the order with each leg's own
    /// fills and price.
    Mleg(MlegReport),
    /// An event about an order closeflow did not make.
    Foreign,
    /// `authorization`, `listening` and other control messages.
    Control { stream: String, status: Option<String> },
}

/// Reads one message. The update carries the cumulative `order.filled_qty` and
/// `filled_avg_price`, the event's `execution_id`, and the broker's time: `filled_at` for a
/// fill, the event's `timestamp` otherwise.
pub fn parse_message(text: &str) -> Result<Parsed, String> {
    parse_message_with(text, &mut Replacements::default())
}

/// [`parse_message`], following replacements: a `replaced` event of closeflow's order
/// notes its replacement, whose events then update the same attempt (a replaced order is
/// never canceled; the replacement is the attempt's order).
pub fn parse_message_with(text: &str, replacements: &mut Replacements) -> Result<Parsed, String> {
    let env: Envelope = serde_json::from_str(text).map_err(|e| format!("not a stream message: {e}"))?;
    if env.stream != "trade_updates" {
        let status = env.data["status"].as_str().map(str::to_string);
        return Ok(Parsed::Control {
            stream: env.stream,
            status,
        });
    }
    // A multi-leg order's events are the order's own, its legs nested in it (each with its
    // own fills and price); the legs send none of their own.
    // (Bracket and OCO orders nest legs too: only `order_class` says multi-leg.)
    if env.data["order"]["order_class"] == "mleg" && env.data["order"]["legs"].is_array() {
        return parse_mleg(env.data);
    }
    let ev: TradeEvent = serde_json::from_value(env.data).map_err(|e| format!("bad trade update: {e}"))?;
    let own = match ClientOrderId::parse(&ev.order.client_order_id) {
        Ok(id) => Some((id, Quantity::ZERO)),
        Err(_) => replacements.0.get(&ev.order.id).cloned(),
    };
    let Some((client_order_id, filled_before)) = own else {
        return Ok(Parsed::Foreign);
    };
    let filled = match ev.order.filled_qty.as_deref() {
        None | Some("") => Quantity::ZERO,
        Some(q) => Quantity::parse(q).map_err(|e| format!("bad filled_qty: {e}"))?,
    };
    let filled = filled_before
        .checked_add(filled)
        .ok_or_else(|| "filled_qty out of range".to_string())?;
    if ev.order.status == "replaced" {
        if let Some(next) = ev.order.replaced_by.clone() {
            replacements.note(next, client_order_id.clone(), filled);
        }
    }
    let status = map_status(&ev.order.status, filled)
        .ok_or_else(|| format!("unknown order status `{}` on `{}`", ev.order.status, ev.event))?;
    // A fill is dated by the order's `filled_at` (the close's `closed_at`); anything else
    // by the event's own time.
    let filled_at = ev.order.filled_at.as_deref().filter(|_| ev.event == "fill");
    let at = filled_at
        .or(ev.timestamp.as_deref())
        .or(ev.order.updated_at.as_deref())
        .and_then(closeflow_domain::parse_timestamp)
        .ok_or_else(|| format!("`{}` event without a readable timestamp", ev.event))?;
    // A replaced order's attempt now lives in its replacement: that is the order to name.
    let broker_order_id = match ev.order.replaced_by.clone() {
        Some(next) if ev.order.status == "replaced" => next,
        _ => ev.order.id.clone(),
    };
    Ok(Parsed::Update(OrderUpdate {
        client_order_id,
        broker_order_id: Some(broker_order_id),
        status,
        filled_qty: filled,
        // A multi-leg order's net price may be negative (a credit): no per-unit price.
        filled_avg_price: ev
            .order
            .filled_avg_price
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(Quantity::parse)
            .transpose()
            .map_err(|e| format!("bad filled_avg_price: {e}"))?
            .and_then(Price::new),
        seq: None,
        execution_id: ev.execution_id,
        updated_at: at,
    }))
}

#[derive(Debug, Deserialize)]
struct MlegEvent {
    event: String,
    #[serde(default)]
    timestamp: Option<String>,
    order: crate::AlpacaOrder,
}

/// A multi-leg order's event: read like a lookup of the order (the same object), dated by
/// the event.
fn parse_mleg(data: serde_json::Value) -> Result<Parsed, String> {
    let ev: MlegEvent = serde_json::from_value(data).map_err(|e| format!("bad trade update: {e}"))?;
    if ClientOrderId::parse(&ev.order.client_order_id).is_err() {
        return Ok(Parsed::Foreign);
    }
    let mut report = crate::to_mleg_order(&ev.order)
        .map_err(|e| format!("bad multi-leg `{}` event: {e}", ev.event))?
        .to_report();
    report.updated_at = ev
        .timestamp
        .as_deref()
        .or(ev.order.updated_at.as_deref())
        .and_then(closeflow_domain::parse_timestamp)
        .ok_or_else(|| format!("`{}` event without a readable timestamp", ev.event))?;
    Ok(Parsed::Mleg(report))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Explicit TLS settings: the process links more than one rustls crypto provider (the AWS
/// SDK's and this one), so none is picked implicitly.
fn tls() -> Result<tokio_tungstenite::Connector, String> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(cfg)))
}

async fn next_text(ws: &mut Socket) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            // Alpaca's paper stream sends its JSON in binary frames.
            Some(Ok(Message::Binary(b))) => return String::from_utf8(b.to_vec()).map_err(|e| e.to_string()),
            Some(Ok(Message::Close(_))) | None => return Err("stream closed".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Connects, authenticates and subscribes; errors name the step that failed.
async fn open(cfg: &StreamConfig) -> Result<Socket, String> {
    let connector = cfg.url.starts_with("wss:").then(tls).transpose()?;
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(&cfg.url, None, false, connector)
        .await
        .map_err(|e| format!("connect to {}: {e}", cfg.url))?;
    let auth = json!({"action": "auth", "key": cfg.key_id, "secret": cfg.secret_key});
    ws.send(Message::text(auth.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match parse_message(&next_text(&mut ws).await?)? {
            Parsed::Control { stream, status } if stream == "authorization" => match status.as_deref() {
                Some("authorized") => break,
                other => return Err(format!("authentication refused ({other:?}): check the key pair")),
            },
            _ => continue,
        }
    }
    let listen = json!({"action": "listen", "data": {"streams": ["trade_updates"]}});
    ws.send(Message::text(listen.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        if let Parsed::Control { stream, .. } = parse_message(&next_text(&mut ws).await?)? {
            if stream == "listening" {
                return Ok(ws);
            }
        }
    }
}

/// Reads events until the connection fails; returns why.
async fn consume(ws: &mut Socket, handler: &dyn TradeUpdateHandler) -> String {
    let mut replacements = Replacements::default();
    loop {
        let text = match next_text(ws).await {
            Ok(t) => t,
            Err(e) => return e,
        };
        match parse_message_with(&text, &mut replacements) {
            Ok(Parsed::Update(u)) => {
                if let Err(e) = handler.apply(&u).await {
                    // The backfill after the reconnect asks the broker again.
                    return format!("store unavailable: {e}");
                }
            }
            Ok(Parsed::Mleg(r)) => {
                if let Err(e) = handler.apply_mleg(&r).await {
                    return format!("store unavailable: {e}");
                }
            }
            Ok(Parsed::Foreign) => handler.foreign(),
            Ok(Parsed::Control { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable trade update skipped"),
        }
    }
}

/// Runs one consumer per key pair (each with its own connection, keys and handler) until
/// `stop` resolves. A key pair's connection failing leaves the others listening.
pub async fn run_each_key_pair(
    pairs: Vec<(StreamConfig, Arc<dyn TradeUpdateHandler>)>,
    stop: impl std::future::Future<Output = ()>,
) {
    let all = futures_util::future::join_all(
        pairs
            .iter()
            .map(|(cfg, handler)| run(cfg.clone(), handler.as_ref(), std::future::pending())),
    );
    tokio::select! {
        _ = all => {}
        _ = stop => {}
    }
}

/// One connection per key pair of `brokers`: each backfills only its own accounts' orders.
pub fn consumers(
    brokers: &crate::accounts::AccountBrokers,
    store: Arc<closeflow_pipeline::trade_updates::UpdateStore>,
    broker: Arc<dyn closeflow_pipeline::Broker>,
    clock: Arc<dyn closeflow_pipeline::Clock>,
) -> Vec<(StreamConfig, Arc<dyn TradeUpdateHandler>)> {
    brokers
        .key_pairs()
        .into_iter()
        .map(|(cfg, serves)| {
            let handler = closeflow_pipeline::StoreUpdates::new(store.clone(), broker.clone(), clock.clone())
                .for_accounts(serves);
            (
                StreamConfig::for_account(&cfg),
                Arc::new(handler) as Arc<dyn TradeUpdateHandler>,
            )
        })
        .collect()
}

/// Runs the consumer until `stop` resolves: connect, backfill, consume; on any failure
/// wait (1 s, 2 s, 4 s, … up to `max_backoff`) and start again.
pub async fn run(cfg: StreamConfig, handler: &dyn TradeUpdateHandler, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut delay = cfg.backoff;
    loop {
        // Every session ends in an error; `true` when it had connected.
        let attempt = async {
            let mut ws = open(&cfg).await.map_err(|e| (false, e))?;
            tracing::info!(url = %cfg.url, "trade_updates stream connected");
            match handler.backfill().await {
                Ok(n) => tracing::info!(orders = n, "trade_updates backfill done"),
                Err(e) => return Err((true, format!("backfill: {e}"))),
            }
            Err::<(), _>((true, consume(&mut ws, handler).await))
        };
        let (connected, error) = tokio::select! {
            r = attempt => r.err().unwrap_or((true, String::new())),
            _ = &mut stop => return,
        };
        if connected {
            delay = cfg.backoff;
        }
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "trade_updates stream down");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut stop => return,
        }
        delay = (delay * 2).min(cfg.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeflow_domain::OrderStatus;

    fn event(event: &str, client_order_id: &str, status: &str, filled: &str) -> String {
        json!({"stream": "trade_updates", "data": {
            "event": event,
            "execution_id": "x-1",
            "timestamp": "2026-01-02T14:30:05.250Z",
            "order": {
                "id": "b-1", "client_order_id": client_order_id, "status": status,
                "filled_qty": filled, "filled_avg_price": "187.5",
                "updated_at": "2026-01-02T14:30:05.100Z", "filled_at": "2026-01-02T14:30:05.000Z"
            }
        }})
        .to_string()
    }

    const OURS: &str = "7c3e1a2b-9d4f-8a6b-8c1d-2e3f4a5b6c7d-1";

    #[test]
    fn a_fill_becomes_an_update_dated_by_the_brokers_fill_time() {
        let Ok(Parsed::Update(u)) = parse_message(&event("fill", OURS, "filled", "3")) else {
            panic!("an update")
        };
        assert_eq!(u.status, OrderStatus::Filled);
        assert_eq!(u.filled_qty, Quantity::parse("3").unwrap());
        assert_eq!(u.filled_avg_price, Price::parse("187.5").unwrap());
        assert_eq!(u.execution_id.as_deref(), Some("x-1"));
        assert_eq!(
            closeflow_domain::format_timestamp(&u.updated_at),
            "2026-01-02T14:30:05.000Z"
        );
    }

    #[test]
    fn other_events_take_the_event_time_and_map_every_status() {
        let Ok(Parsed::Update(u)) = parse_message(&event("partial_fill", OURS, "partially_filled", "1")) else {
            panic!()
        };
        assert_eq!(u.status, OrderStatus::PartiallyFilled);
        assert_eq!(
            closeflow_domain::format_timestamp(&u.updated_at),
            "2026-01-02T14:30:05.250Z"
        );
        for (ev, status, want) in [
            ("new", "new", OrderStatus::Accepted),
            ("pending_new", "pending_new", OrderStatus::Accepted),
            ("canceled", "canceled", OrderStatus::Canceled),
            ("expired", "expired", OrderStatus::Expired),
            ("rejected", "rejected", OrderStatus::Rejected),
            ("done_for_day", "done_for_day", OrderStatus::Accepted),
        ] {
            let Ok(Parsed::Update(u)) = parse_message(&event(ev, OURS, status, "0")) else {
                panic!("{ev}")
            };
            assert_eq!(u.status, want, "{ev}");
        }
    }

    #[test]
    fn a_replaced_order_hands_its_attempt_to_the_replacement_never_canceled() {
        let mut r = Replacements::default();
        let replaced = json!({"stream": "trade_updates", "data": {
            "event": "replaced", "timestamp": "2026-01-02T14:30:05.250Z",
            "order": {"id": "b-1", "client_order_id": OURS, "status": "replaced", "filled_qty": "0",
                      "replaced_by": "b-2", "updated_at": "2026-01-02T14:30:05.100Z"}
        }})
        .to_string();
        let Ok(Parsed::Update(u)) = parse_message_with(&replaced, &mut r) else {
            panic!()
        };
        assert_eq!(u.status, OrderStatus::Accepted, "working, not canceled");
        assert_eq!(
            u.broker_order_id.as_deref(),
            Some("b-2"),
            "the replacement is the attempt's order"
        );
        let fill = event("fill", "uuid-of-the-replacement", "filled", "3").replace("\"b-1\"", "\"b-2\"");
        assert_eq!(
            parse_message(&fill),
            Ok(Parsed::Foreign),
            "unknown without the replaced event"
        );
        let Ok(Parsed::Update(u)) = parse_message_with(&fill, &mut r) else {
            panic!()
        };
        assert_eq!(u.client_order_id.to_string(), OURS);
        assert_eq!(u.broker_order_id.as_deref(), Some("b-2"));
        assert_eq!(
            (u.status, u.filled_qty),
            (OrderStatus::Filled, Quantity::parse("3").unwrap())
        );
    }

    #[test]
    fn orders_closeflow_did_not_make_and_control_messages_are_told_apart() {
        assert_eq!(
            parse_message(&event("fill", "my-manual-order", "filled", "1")),
            Ok(Parsed::Foreign)
        );
        let auth = r#"{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}"#;
        assert_eq!(
            parse_message(auth),
            Ok(Parsed::Control {
                stream: "authorization".into(),
                status: Some("authorized".into())
            })
        );
        assert!(parse_message("not json").is_err());
        assert!(parse_message(&event("fill", OURS, "teleported", "1")).is_err());
    }

    /// A multi-leg order's fill as Alpaca documents it: one event about the order, its legs
    /// nested with their own fills and prices, and the executions listed beside it.
    fn mleg_fill(client_order_id: &str) -> String {
        let leg = |id: &str, symbol: &str, price: &str| {
            json!({"id": id, "client_order_id": format!("alpaca-named-{id}"), "symbol": symbol,
                "asset_class": "us_option", "qty": "1", "filled_qty": "1", "filled_avg_price": price,
                "order_class": "mleg", "order_type": "", "type": "", "side": "buy", "status": "filled",
                "position_intent": "", "legs": null, "ratio_qty": "1",
                "updated_at": "2025-01-21T07:32:40.697474882Z"})
        };
        json!({"stream": "trade_updates", "data": {
        "event": "fill", "timestamp": "2025-01-21T07:32:40.695569506Z",
        "order": {"id": "31cd620f", "client_order_id": client_order_id, "symbol": "", "asset_class": "",
            "qty": "1", "filled_qty": "1", "filled_avg_price": "1.62", "order_class": "mleg",
            "order_type": "limit", "side": "buy", "limit_price": "2", "status": "filled",
            "position_intent": "", "updated_at": "2025-01-21T07:32:40.699359002Z",
            "legs": [leg("3cbe69ef", "AAPL250321P00200000", "1.6"), leg("ec694de5", "AAPL250321C00380000", "0.02")]},
        "price": "1.62", "qty": "1",
        "position_qtys": {"AAPL250321P00200000": "1", "AAPL250321C00380000": "1"},
        "legs": [
            {"execution_id": "69a70e98", "qty": "1", "price": "1.6", "order_id": "3cbe69ef",
                "symbol": "AAPL250321P00200000", "timestamp": "2025-01-21T07:32:40.695564076Z"},
            {"execution_id": "fb878d87", "qty": "1", "price": "0.02", "order_id": "ec694de5",
                "symbol": "AAPL250321C00380000", "timestamp": "2025-01-21T07:32:40.695569506Z"}
        ]}})
        .to_string()
    }

    #[test]
    fn a_multi_leg_event_reports_each_legs_fill_and_price() {
        let Ok(Parsed::Mleg(r)) = parse_message(&mleg_fill(OURS)) else {
            panic!("not a multi-leg report")
        };
        assert_eq!(r.client_order_id, ClientOrderId::parse(OURS).unwrap());
        assert_eq!(r.broker_order_id.as_deref(), Some("31cd620f"));
        assert_eq!((r.status, r.filled_qty), (OrderStatus::Filled, Quantity::from(1)));
        assert_eq!(
            r.updated_at,
            closeflow_domain::parse_timestamp("2025-01-21T07:32:40.695569506Z").unwrap()
        );
        let legs: Vec<_> = r
            .legs
            .iter()
            .map(|l| {
                (
                    l.symbol.as_str(),
                    l.broker_order_id.as_deref(),
                    l.status,
                    l.filled_qty,
                    l.filled_avg_price.map(|p| p.to_string()),
                )
            })
            .collect();
        assert_eq!(
            legs,
            [
                (
                    "AAPL250321P00200000",
                    Some("3cbe69ef"),
                    Some(OrderStatus::Filled),
                    Quantity::from(1),
                    Some("1.6".to_string())
                ),
                (
                    "AAPL250321C00380000",
                    Some("ec694de5"),
                    Some(OrderStatus::Filled),
                    Quantity::from(1),
                    Some("0.02".to_string())
                ),
            ]
        );
        // Someone else's multi-leg order is counted, not applied.
        assert_eq!(parse_message(&mleg_fill("their-order")), Ok(Parsed::Foreign));
        // A bracket order nests legs too: an ordinary order's update, not a multi-leg one.
        let bracket = mleg_fill(OURS).replace(
            r#""order_class":"mleg","order_type":"limit""#,
            r#""order_class":"bracket","order_type":"limit""#,
        );
        assert!(bracket.contains("bracket"));
        assert!(matches!(parse_message(&bracket), Ok(Parsed::Update(_))), "{bracket}");
    }
}
