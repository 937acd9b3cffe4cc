//! The simulated broker: a real, configurable broker for `make run` and tests. Its fills
//! reach closeflow the way a real broker's do: as signed webhook calls.
//!
//! Configured per symbol with `SIM_BROKER_SCENARIOS`, e.g.
//! `AAPL=fill,TSLA=reject,MSFT=partial:3,NVDA=hold,AMD=not_found` (others: `fill`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use closeflow_domain::{format_timestamp, ClientOrderId, OrderIntent, OrderStatus, Quantity, Side};
use tokio::task::JoinHandle;

use crate::broker::{Broker, BrokerError, BrokerOrder, BrokerPosition};
use crate::clock::Clock;
use crate::webhook::sign;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimBehaviour {
    /// Fills the whole order.
    Fill,
    /// Fills this many units, then cancels the rest.
    Partial(Quantity),
    /// Refuses the order (as for insufficient quantity).
    Reject,
    /// Accepts and never fills; fills can then only arrive through the webhook.
    Hold,
    /// Accepts, but every later lookup says the order does not exist.
    NotFound,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimScenarios(HashMap<String, SimBehaviour>);

impl SimScenarios {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (symbol, behaviour) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected SYMBOL=behaviour"))?;
            let b = match behaviour.trim() {
                "fill" => SimBehaviour::Fill,
                "reject" => SimBehaviour::Reject,
                "hold" => SimBehaviour::Hold,
                "not_found" => SimBehaviour::NotFound,
                other => match other.strip_prefix("partial:").map(Quantity::parse) {
                    Some(Ok(n)) if !n.is_negative() && !n.is_zero() => SimBehaviour::Partial(n),
                    _ => {
                        return Err(format!(
                            "`{entry}`: behaviour must be fill, reject, hold, not_found or partial:N (N > 0)"
                        ))
                    }
                },
            };
            map.insert(symbol.trim().to_string(), b);
        }
        Ok(SimScenarios(map))
    }

    pub fn behaviour(&self, symbol: &str) -> SimBehaviour {
        self.0.get(symbol).copied().unwrap_or(SimBehaviour::Fill)
    }
}

/// Where the simulated broker sends its signed webhook calls.
#[async_trait]
pub trait WebhookSink: Send + Sync {
    async fn deliver(&self, body: Vec<u8>, signature: String);
}

struct SimOrder {
    order: BrokerOrder,
    symbol: String,
    side: Side,
    qty: Quantity,
    forgotten: bool,
}

pub struct SimulatedBroker {
    scenarios: SimScenarios,
    secret: Vec<u8>,
    clock: Arc<dyn Clock>,
    sink: Mutex<Option<Arc<dyn WebhookSink>>>,
    orders: Mutex<HashMap<String, SimOrder>>,
    holdings: Mutex<HashMap<String, Quantity>>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
}

impl SimulatedBroker {
    pub fn new(scenarios: SimScenarios, secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        SimulatedBroker {
            scenarios,
            secret: secret.to_vec(),
            clock,
            sink: Mutex::new(None),
            orders: Mutex::new(HashMap::new()),
            holdings: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(Vec::new()),
        }
    }

    /// Connects the webhook endpoint (set after construction: the router needs the broker).
    pub fn connect(&self, sink: Arc<dyn WebhookSink>) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Sets what the simulated account holds (for `list_positions`).
    pub fn set_holding(&self, symbol: &str, qty: Quantity) {
        self.holdings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(symbol.to_string(), qty);
    }

    /// How many orders the broker accepted (what "exactly one order" is checked against).
    pub fn orders_placed(&self) -> usize {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sends a webhook call for an order as the broker would (for `hold` orders filled or
    /// canceled "at the broker"), with the given status, cumulative fill and sequence number.
    pub fn report_order(&self, client_order_id: &ClientOrderId, status: OrderStatus, filled: Quantity, seq: u64) {
        self.report(&client_order_id.to_string(), status, filled, seq);
    }

    /// Moves an order at the broker *without* a webhook call: the broker's notification was
    /// lost, and only a lookup (the reconciler) can learn the outcome.
    pub fn settle_silently(&self, client_order_id: &ClientOrderId, status: OrderStatus, filled: Quantity) {
        let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = orders.get_mut(&client_order_id.to_string()) {
            o.order.status = status;
            o.order.filled_qty = filled;
            o.order.updated_at = self.clock.now();
        }
    }

    /// Waits until every webhook call sent so far has been delivered.
    pub async fn idle(&self) {
        loop {
            let pending: Vec<_> = std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|p| p.into_inner()));
            if pending.is_empty() {
                return;
            }
            for h in pending {
                let _ = h.await;
            }
        }
    }

    /// Moves an order and sends the matching signed webhook call (in the background, as a
    /// broker would: the call may arrive before or after the submitter's write).
    fn report(&self, client_order_id: &str, status: OrderStatus, filled: Quantity, seq: u64) {
        let now = self.clock.now();
        let body = {
            let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
            let Some(o) = orders.get_mut(client_order_id) else {
                return;
            };
            o.order.status = status;
            o.order.filled_qty = filled;
            o.order.filled_avg_price = (!filled.is_zero()).then(|| Quantity::parse("100").expect("literal"));
            o.order.updated_at = now;
            let signed = match o.side {
                Side::Sell => Quantity::new(-filled.value()),
                Side::Buy => filled,
            };
            let mut h = self.holdings.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = h.get_mut(&o.symbol) {
                // A simulated holding beyond the decimal range stays where it was.
                *held = held.checked_add(signed).unwrap_or(*held);
            }
            serde_json::json!({
                "client_order_id": client_order_id,
                "broker_order_id": o.order.broker_order_id,
                "status": status.as_str(),
                "filled_qty": filled,
                "filled_avg_price": o.order.filled_avg_price,
                "seq": seq,
                "execution_id": format!("{}-x{seq}", o.order.broker_order_id),
                "updated_at": format_timestamp(&now),
            })
            .to_string()
            .into_bytes()
        };
        let Some(sink) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            tracing::warn!("simulated broker has no webhook endpoint connected; fill not reported");
            return;
        };
        let signature = sign(&self.secret, now.timestamp(), &body);
        let handle = tokio::spawn(async move { sink.deliver(body, signature).await });
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }
}

#[async_trait]
impl Broker for SimulatedBroker {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        let key = intent.client_order_id.to_string();
        let behaviour = self.scenarios.behaviour(&intent.symbol);
        let order = {
            let mut orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
            if orders.contains_key(&key) {
                return Err(BrokerError::DuplicateClientOrderId);
            }
            if behaviour == SimBehaviour::Reject {
                return Err(BrokerError::Rejected(format!(
                    "insufficient qty available for order (simulated broker, {})",
                    intent.symbol
                )));
            }
            let order = BrokerOrder {
                broker_order_id: format!("sim-{}", uuid::Uuid::new_v4().simple()),
                client_order_id: intent.client_order_id.clone(),
                status: OrderStatus::Accepted,
                filled_qty: Quantity::ZERO,
                filled_avg_price: None,
                updated_at: self.clock.now(),
            };
            orders.insert(
                key.clone(),
                SimOrder {
                    order: order.clone(),
                    symbol: intent.symbol.clone(),
                    side: intent.side,
                    qty: intent.qty,
                    forgotten: behaviour == SimBehaviour::NotFound,
                },
            );
            order
        };
        match behaviour {
            SimBehaviour::Fill => self.report(&key, OrderStatus::Filled, intent.qty, 1),
            SimBehaviour::Partial(n) if n >= intent.qty => self.report(&key, OrderStatus::Filled, intent.qty, 1),
            SimBehaviour::Partial(n) => {
                self.report(&key, OrderStatus::PartiallyFilled, n, 1);
                self.report(&key, OrderStatus::Canceled, n, 2);
            }
            SimBehaviour::Hold | SimBehaviour::NotFound | SimBehaviour::Reject => {}
        }
        Ok(order)
    }

    async fn get_order_by_client_id(&self, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        let orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        match orders.get(&id.to_string()) {
            Some(o) if !o.forgotten => Ok(o.order.clone()),
            _ => Err(BrokerError::NotFound),
        }
    }

    async fn cancel_order(&self, broker_order_id: &str) -> Result<(), BrokerError> {
        let found = {
            let orders = self.orders.lock().unwrap_or_else(|p| p.into_inner());
            orders
                .iter()
                .find(|(_, o)| o.order.broker_order_id == broker_order_id && !o.forgotten)
                .map(|(k, o)| (k.clone(), o.order.status, o.order.filled_qty, o.qty))
        };
        match found {
            None => Err(BrokerError::NotFound),
            Some((_, status, _, _)) if status.is_terminal() => Ok(()),
            Some((k, _, filled, _)) => {
                self.report(&k, OrderStatus::Canceled, filled, 99);
                Ok(())
            }
        }
    }

    async fn list_positions(&self) -> Result<Vec<BrokerPosition>, BrokerError> {
        let h = self.holdings.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = h
            .iter()
            .filter(|(_, q)| !q.is_zero())
            .map(|(s, q)| BrokerPosition {
                symbol: s.clone(),
                qty: *q,
            })
            .collect();
        out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::webhook::verify_signature;
    use chrono::TimeZone;
    use closeflow_domain::{AccountId, AssetType, CloseRequestId, PositionId};

    fn scenarios(s: &str) -> SimScenarios {
        SimScenarios::parse(s).unwrap()
    }

    #[test]
    fn scenario_specs_parse_and_unknown_symbols_fill() {
        let s = scenarios("AAPL=fill, TSLA=reject,MSFT=partial:3,NVDA=hold,AMD=not_found");
        assert_eq!(s.behaviour("TSLA"), SimBehaviour::Reject);
        assert_eq!(s.behaviour("MSFT"), SimBehaviour::Partial(Quantity::from(3)));
        assert_eq!(s.behaviour("NVDA"), SimBehaviour::Hold);
        assert_eq!(s.behaviour("AMD"), SimBehaviour::NotFound);
        assert_eq!(s.behaviour("GOOG"), SimBehaviour::Fill);
        assert_eq!(scenarios(""), SimScenarios::default());
        for bad in ["AAPL", "AAPL=explode", "MSFT=partial:0", "MSFT=partial:x"] {
            assert!(SimScenarios::parse(bad).is_err(), "{bad}");
        }
    }

    struct Collect(std::sync::Mutex<Vec<(Vec<u8>, String)>>);

    #[async_trait]
    impl WebhookSink for Collect {
        async fn deliver(&self, body: Vec<u8>, signature: String) {
            self.0.lock().unwrap().push((body, signature));
        }
    }

    fn intent(symbol: &str, attempt: u32) -> OrderIntent {
        OrderIntent {
            client_order_id: ClientOrderId::new(
                CloseRequestId::new(&PositionId::parse("p").unwrap(), [1; 16]),
                attempt,
            ),
            account_id: AccountId::parse("a").unwrap(),
            symbol: symbol.into(),
            asset_type: AssetType::Equity,
            side: Side::Sell,
            qty: Quantity::from(10),
        }
    }

    fn broker(spec: &str) -> (SimulatedBroker, Arc<Collect>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ));
        let b = SimulatedBroker::new(scenarios(spec), b"s3cret", clock.clone());
        let sink = Arc::new(Collect(std::sync::Mutex::new(Vec::new())));
        b.connect(sink.clone());
        (b, sink, clock)
    }

    #[tokio::test]
    async fn fills_arrive_as_correctly_signed_webhook_calls() {
        let (b, sink, clock) = broker("");
        b.set_holding("AAPL", Quantity::from(10));
        b.submit_order(&intent("AAPL", 1)).await.unwrap();
        b.idle().await;
        let calls = sink.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        let (body, sig) = &calls[0];
        assert_eq!(verify_signature(b"s3cret", Some(sig), body, clock.now()), Ok(()));
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["filled_qty"].as_str()),
            (Some("filled"), Some("10"))
        );
        assert!(b.list_positions().await.unwrap().is_empty(), "the holding was sold");
    }

    #[tokio::test]
    async fn partial_fills_then_cancels_and_duplicates_are_refused() {
        let (b, sink, _) = broker("MSFT=partial:3");
        b.submit_order(&intent("MSFT", 1)).await.unwrap();
        assert_eq!(
            b.submit_order(&intent("MSFT", 1)).await,
            Err(BrokerError::DuplicateClientOrderId)
        );
        b.idle().await;
        let mut statuses: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(body, _)| serde_json::from_slice::<serde_json::Value>(body).unwrap()["status"].to_string())
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["\"canceled\"", "\"partially_filled\""]);
        assert_eq!(b.orders_placed(), 1);
    }

    #[tokio::test]
    async fn reject_hold_and_not_found_behave_as_named() {
        let (b, sink, _) = broker("TSLA=reject,NVDA=hold,AMD=not_found");
        assert!(matches!(
            b.submit_order(&intent("TSLA", 1)).await,
            Err(BrokerError::Rejected(_))
        ));
        let held = b.submit_order(&intent("NVDA", 2)).await.unwrap();
        assert_eq!(
            b.get_order_by_client_id(&held.client_order_id).await.unwrap().status,
            OrderStatus::Accepted
        );
        let lost = b.submit_order(&intent("AMD", 3)).await.unwrap();
        assert_eq!(
            b.get_order_by_client_id(&lost.client_order_id).await,
            Err(BrokerError::NotFound)
        );
        b.idle().await;
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "hold and not_found never fill on their own"
        );
        assert_eq!(b.orders_placed(), 2);
    }
}
