//! The simulated broker: a real, configurable broker for `make run` and tests. Its fills
//! reach closeflow the way a real broker's do: as signed webhook calls. The order
//! lifecycle lives in [`engine`], shared with the Alpaca-compatible paper broker.
//!
//! Configured per symbol with `SIM_BROKER_SCENARIOS`, e.g.
//! `AAPL=fill,TSLA=reject,MSFT=partial:3,NVDA=hold,AMD=not_found,META=fill_after:2s,
//! GOOG=reject_first,AMZN=replace,NFLX=held` (others: `fill`), and fill prices with
//! `SIM_BROKER_PRICES="AAPL=187.5,TSLA=250"` (others: 100), and what the accounts hold
//! at the start with `SIM_BROKER_POSITIONS="ACC1:IBM=7,ACC1:AAPL=-3@187.5"` (see
//! [`holdings`]; others: nothing), and every account's equity with `SIM_BROKER_EQUITY`
//! (default 100000; [`SimulatedBroker::set_equity`] moves one account's).
//!
//! A multi-leg order is placed as one order per leg in the engine, each named by its
//! leg's own order record (`{leg close request id}-{n}`), so each leg's fills reach
//! closeflow as that leg's webhook calls, as Alpaca reports a multi-leg order's legs. The
//! order is all or nothing at placement: a leg whose scenario refuses (`reject`, or
//! `reject_first` on attempt 1) refuses the whole order before any leg is placed. The
//! simulated broker prices a multi-leg limit order by its legs' symbol prices: at its net
//! limit or better its legs fill, otherwise every leg rests until canceled (a leg whose
//! scenario is `rest` rests in any case).

pub mod engine;
pub mod holdings;
pub mod mleg;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use closeflow_domain::{
    format_timestamp, AccountId, ClientOrderId, MlegIntent, MlegLegReport, OrderIntent, OrderStatus, Price, Quantity,
};
use tokio::task::JoinHandle;

use self::engine::{
    CancelError, Engine, ListQuery, NewOrder, Scheduler, SimStatus, StatusFilter, SubmitError, TokioScheduler,
    TradeEvent,
};
use crate::broker::{Broker, BrokerError, BrokerMlegOrder, BrokerOrder, BrokerPosition, OpenOrder};
use crate::clock::Clock;
use crate::webhook::sign;
use holdings::{parse_seed, SeedHolding};

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
    /// Accepts, and fills the whole order after this long (unless canceled first).
    FillAfter(Duration),
    /// Refuses attempt 1 (as `reject`), fills later attempts. The attempt is the one in
    /// closeflow's client order id, or else the symbol's submission count.
    RejectFirst,
    /// Accepts, then the broker replaces the order: it ends `replaced`, naming its
    /// replacement (`replaced_by`), which fills.
    Replace,
    /// An open order for the symbol holds its quantity from the start: every order is
    /// refused as insufficient qty while any other open order for the symbol exists, and
    /// fills once they are canceled.
    Held,
    /// A limit order is accepted and keeps working until it is canceled (market orders
    /// fill): what a cancel is tried on.
    Rest,
}

/// The price every fill of a symbol gets unless `SIM_BROKER_PRICES` names one.
pub const DEFAULT_PRICE: i64 = 100;

/// Every account's equity unless `SIM_BROKER_EQUITY` names another.
pub const DEFAULT_EQUITY: i64 = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimScenarios {
    behaviours: HashMap<String, SimBehaviour>,
    prices: HashMap<String, Quantity>,
    positions: Vec<SeedHolding>,
    equity: Option<Quantity>,
}

/// `500ms`, `2s`, `1m` (or `1min`), `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" | "sec" => Some(Duration::from_secs(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

fn entries(spec: &str) -> impl Iterator<Item = Result<(&str, &str), String>> {
    spec.split(',').map(str::trim).filter(|e| !e.is_empty()).map(|entry| {
        entry
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("`{entry}`: expected SYMBOL=value"))
    })
}

impl SimScenarios {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut behaviours = HashMap::new();
        for entry in entries(spec) {
            let (symbol, behaviour) = entry?;
            let b = match behaviour {
                "fill" => SimBehaviour::Fill,
                "reject" => SimBehaviour::Reject,
                "hold" => SimBehaviour::Hold,
                "not_found" => SimBehaviour::NotFound,
                "reject_first" => SimBehaviour::RejectFirst,
                "replace" => SimBehaviour::Replace,
                "held" => SimBehaviour::Held,
                "rest" => SimBehaviour::Rest,
                other => match (
                    other.strip_prefix("partial:").map(Quantity::parse),
                    other.strip_prefix("fill_after:").map(parse_duration),
                ) {
                    (Some(Ok(n)), _) if !n.is_negative() && !n.is_zero() => SimBehaviour::Partial(n),
                    (_, Some(Some(d))) => SimBehaviour::FillAfter(d),
                    _ => {
                        return Err(format!(
                            "`{symbol}={behaviour}`: behaviour must be fill, reject, hold, not_found, \
                             partial:N (N > 0), fill_after:DURATION (500ms, 2s, 1m), reject_first, replace, held or rest"
                        ))
                    }
                },
            };
            behaviours.insert(symbol.to_string(), b);
        }
        Ok(SimScenarios {
            behaviours,
            prices: HashMap::new(),
            positions: Vec::new(),
            equity: None,
        })
    }

    /// Adds fill prices from a `SIM_BROKER_PRICES` spec (`AAPL=187.5,TSLA=250`).
    pub fn with_prices(mut self, spec: &str) -> Result<Self, String> {
        for entry in entries(spec) {
            let (symbol, price) = entry?;
            match Quantity::parse(price) {
                Ok(p) if !p.is_negative() && !p.is_zero() => {
                    self.prices.insert(symbol.to_string(), p);
                }
                _ => return Err(format!("`{symbol}={price}`: a price must be a decimal > 0")),
            }
        }
        Ok(self)
    }

    /// Adds the accounts' starting holdings from a `SIM_BROKER_POSITIONS` spec
    /// (`ACC1:IBM=7,ACC1:AAPL=-3@187.5`).
    pub fn with_positions(mut self, spec: &str) -> Result<Self, String> {
        self.positions = parse_seed(spec)?;
        Ok(self)
    }

    /// Sets every account's starting equity from a `SIM_BROKER_EQUITY` value (an exact
    /// decimal; empty leaves the default). Zero and below are allowed: a wiped-out account
    /// is a case the drawdown guard must handle.
    pub fn with_equity(mut self, spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(self);
        }
        let equity = Quantity::parse(spec).map_err(|e| format!("`{spec}`: {e}"))?;
        self.equity = Some(equity);
        Ok(self)
    }

    /// Every account's equity until one is set otherwise (`SIM_BROKER_EQUITY`, else
    /// [`DEFAULT_EQUITY`]).
    pub fn starting_equity(&self) -> rust_decimal::Decimal {
        self.equity.unwrap_or(Quantity::from(DEFAULT_EQUITY)).value()
    }

    /// Whether `SIM_BROKER_EQUITY` named the equity.
    pub fn equity_set(&self) -> bool {
        self.equity.is_some()
    }

    /// The starting holdings, as the spec gave them.
    pub fn seeded_positions(&self) -> &[SeedHolding] {
        &self.positions
    }

    pub fn behaviour(&self, symbol: &str) -> SimBehaviour {
        self.behaviours.get(symbol).copied().unwrap_or(SimBehaviour::Fill)
    }

    pub fn price(&self, symbol: &str) -> Quantity {
        self.prices
            .get(symbol)
            .copied()
            .unwrap_or(Quantity::from(DEFAULT_PRICE))
    }

    pub fn held_symbols(&self) -> impl Iterator<Item = &String> {
        self.behaviours
            .iter()
            .filter(|(_, b)| **b == SimBehaviour::Held)
            .map(|(s, _)| s)
    }
}

/// Where the simulated broker sends its signed webhook calls.
#[async_trait]
pub trait WebhookSink: Send + Sync {
    async fn deliver(&self, body: Vec<u8>, signature: String);
}

/// The webhook face: turns the engine's events for closeflow's orders into signed calls.
struct Webhooks {
    secret: Vec<u8>,
    clock: Arc<dyn Clock>,
    sink: Mutex<Option<Arc<dyn WebhookSink>>>,
    deliveries: Mutex<Vec<JoinHandle<()>>>,
    /// Replacement order id -> the client order id it carries and what was filled before.
    carries: Mutex<HashMap<String, (String, Quantity, u64)>>,
}

impl Webhooks {
    fn on_event(&self, e: &TradeEvent) {
        let o = &e.order;
        let mut carries = self.carries.lock().unwrap_or_else(|p| p.into_inner());
        // A replacement carries the attempt of the order it replaces: reported under that
        // client order id, with what the chain filled together.
        // Its sequence numbers continue the replaced order's.
        let (client_order_id, filled, seq) = match o.replaces.as_ref().and(carries.get(&o.id)).cloned() {
            Some((cid, before, seq)) => (
                cid,
                before.checked_add(o.filled_qty).unwrap_or(o.filled_qty),
                seq + o.seq,
            ),
            None => (o.client_order_id.clone(), o.filled_qty, o.seq),
        };
        if o.status == SimStatus::Replaced {
            if let Some(next) = &o.replaced_by {
                carries.insert(next.clone(), (client_order_id.clone(), filled, seq));
            }
        }
        drop(carries);
        // `new` is the submit answer's news; orders not named by closeflow (`held`
        // orders, manual ones) are none of its business.
        if e.event == "new" || ClientOrderId::parse(&client_order_id).is_err() {
            return;
        }
        let body = serde_json::json!({
            "client_order_id": client_order_id,
            "broker_order_id": o.id,
            "status": o.status.to_closeflow(filled).as_str(),
            "filled_qty": filled,
            "filled_avg_price": o.filled_avg_price,
            "seq": seq,
            "execution_id": format!("{}-x{}", o.id, o.seq),
            "updated_at": format_timestamp(&o.updated_at),
        })
        .to_string()
        .into_bytes();
        let Some(sink) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            tracing::warn!("simulated broker has no webhook endpoint connected; fill not reported");
            return;
        };
        let signature = sign(&self.secret, self.clock.now().timestamp(), &body);
        // In the background, as a broker would: the call may arrive before or after the
        // submitter's write.
        let handle = tokio::spawn(async move { sink.deliver(body, signature).await });
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }
}

pub struct SimulatedBroker {
    engine: Arc<Engine>,
    webhooks: Arc<Webhooks>,
    /// Multi-leg orders by client order id, their legs the engine's orders.
    mlegs: mleg::MlegBook,
    /// Accounts whose equity was set by hand ([`SimulatedBroker::set_equity`]); the rest
    /// have the scenarios' starting equity. Fills never move it: prices are constant, so
    /// a close only turns position value into cash.
    equity: Mutex<HashMap<AccountId, rust_decimal::Decimal>>,
}

impl SimulatedBroker {
    pub fn new(scenarios: SimScenarios, secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        Self::with_scheduler(scenarios, secret, clock, Arc::new(TokioScheduler))
    }

    /// With delayed work (`fill_after`) run by `scheduler` instead of tokio's timers.
    pub fn with_scheduler(
        scenarios: SimScenarios,
        secret: &[u8],
        clock: Arc<dyn Clock>,
        scheduler: Arc<dyn Scheduler>,
    ) -> Self {
        let engine = Engine::new(scenarios, clock.clone(), scheduler, Some("sim-"));
        let webhooks = Arc::new(Webhooks {
            secret: secret.to_vec(),
            clock,
            sink: Mutex::new(None),
            deliveries: Mutex::new(Vec::new()),
            carries: Mutex::new(HashMap::new()),
        });
        let w = webhooks.clone();
        engine.subscribe(Arc::new(move |e| w.on_event(e)));
        SimulatedBroker {
            engine,
            webhooks,
            mlegs: mleg::MlegBook::new("sim-"),
            equity: Mutex::new(HashMap::new()),
        }
    }

    /// How many multi-leg orders the broker accepted (each also counts its legs in
    /// [`SimulatedBroker::orders_placed`]).
    pub fn mleg_orders_placed(&self) -> usize {
        self.mlegs.len()
    }

    /// A multi-leg order as the broker reports it: its legs' orders, and the order's own
    /// status and filled units derived from them.
    fn mleg_view(&self, m: &mleg::MlegOrder) -> Option<BrokerMlegOrder> {
        let st = mleg::state(&self.engine, m)?;
        let legs = m
            .legs
            .iter()
            .zip(&st.legs)
            .map(|((symbol, _, _), o)| MlegLegReport {
                symbol: symbol.clone(),
                broker_order_id: Some(o.id.clone()),
                status: Some(o.status.to_closeflow(o.filled_qty)),
                filled_qty: o.filled_qty,
                filled_avg_price: o.filled_avg_price.and_then(Price::new),
            })
            .collect();
        Some(BrokerMlegOrder {
            order: BrokerOrder {
                broker_order_id: m.id.clone(),
                client_order_id: ClientOrderId::parse(&m.client_order_id).ok()?,
                status: st.status,
                filled_qty: st.filled_units,
                filled_avg_price: None,
                updated_at: st.updated_at,
            },
            legs,
        })
    }

    /// The engine behind this broker (open orders, positions, events).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Connects the webhook endpoint (set after construction: the router needs the broker).
    pub fn connect(&self, sink: Arc<dyn WebhookSink>) {
        *self.webhooks.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Sets what a simulated account holds of `symbol`, as a trade outside closeflow
    /// would (a new holding at the symbol's price, an existing one keeping its own); zero
    /// removes the holding.
    pub fn set_holding(&self, account: &AccountId, symbol: &str, qty: Quantity) {
        self.engine.set_position(account.as_str(), symbol, qty, None);
    }

    /// Sets an account's equity, as the market moving would (what the drawdown guard
    /// reads through [`Broker::account_equity`]).
    pub fn set_equity(&self, account: &AccountId, equity: rust_decimal::Decimal) {
        self.equity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.clone(), equity);
    }

    /// How many orders the broker accepted (what "exactly one order" is checked against).
    pub fn orders_placed(&self) -> usize {
        self.engine.orders_placed()
    }

    /// Sends a webhook call for an order as the broker would (for `hold` orders filled or
    /// canceled "at the broker"), with the given status, cumulative fill and sequence number.
    pub fn report_order(&self, client_order_id: &ClientOrderId, status: OrderStatus, filled: Quantity, seq: u64) {
        self.engine.force(
            &client_order_id.to_string(),
            SimStatus::from_closeflow(status),
            filled,
            seq,
            true,
        );
    }

    /// Moves an order at the broker *without* a webhook call: the broker's notification was
    /// lost, and only a lookup (the reconciler) can learn the outcome.
    pub fn settle_silently(&self, client_order_id: &ClientOrderId, status: OrderStatus, filled: Quantity) {
        self.engine.force(
            &client_order_id.to_string(),
            SimStatus::from_closeflow(status),
            filled,
            0,
            false,
        );
    }

    /// Waits until every webhook call sent so far has been delivered.
    pub async fn idle(&self) {
        loop {
            let pending: Vec<_> =
                std::mem::take(&mut *self.webhooks.deliveries.lock().unwrap_or_else(|p| p.into_inner()));
            if pending.is_empty() {
                return;
            }
            for h in pending {
                let _ = h.await;
            }
        }
    }
}

#[async_trait]
impl Broker for SimulatedBroker {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        let order = self.engine.submit(NewOrder::for_intent(intent)).map_err(|e| match e {
            SubmitError::DuplicateClientOrderId => BrokerError::DuplicateClientOrderId,
            // Held by the symbol's open orders: as the Alpaca adapter reads the 403.
            SubmitError::InsufficientQty { ref related_orders, .. } if !related_orders.is_empty() => {
                BrokerError::BlockedByOpenOrders {
                    held_qty: self.engine.held_by(related_orders),
                    message: e.to_string(),
                }
            }
            e @ SubmitError::InsufficientQty { .. } => BrokerError::Rejected(e.to_string()),
        })?;
        order
            .to_broker_order()
            .ok_or_else(|| BrokerError::Ambiguous("the simulated order lost its client order id".into()))
    }

    async fn get_order_by_client_id(&self, _: &AccountId, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        self.engine.attempt_order(&id.to_string()).ok_or(BrokerError::NotFound)
    }

    fn supports_mleg(&self) -> bool {
        true
    }

    async fn submit_mleg_order(&self, intent: &MlegIntent) -> Result<BrokerMlegOrder, BrokerError> {
        let limit = intent.options.order_type == closeflow_domain::OrderType::Limit;
        let req = mleg::MlegRequest {
            account: intent.account_id.to_string(),
            client_order_id: intent.client_order_id.to_string(),
            attempt: intent.client_order_id.attempt,
            qty: intent.qty,
            // Signed, as Alpaca takes it: a net credit is negative.
            limit_price: intent.options.signed_limit_price().filter(|_| limit),
            time_in_force: intent.options.time_in_force.as_str().into(),
            legs: intent
                .legs
                .iter()
                .map(|l| mleg::LegRequest {
                    symbol: l.symbol.clone(),
                    ratio: l.ratio_qty,
                    side: l.side,
                    position_intent: Some(l.position_intent.as_str().into()),
                    client_order_id: l.client_order_id.to_string(),
                })
                .collect(),
        };
        let m = self.mlegs.place(&self.engine, &req).map_err(|e| match e {
            mleg::MlegError::Duplicate => BrokerError::DuplicateClientOrderId,
            mleg::MlegError::Rejected(why) => BrokerError::Rejected(why),
        })?;
        self.mleg_view(&m)
            .ok_or_else(|| BrokerError::Ambiguous("a leg of the simulated multi-leg order is not visible".into()))
    }

    async fn get_mleg_order_by_client_id(
        &self,
        _: &AccountId,
        id: &ClientOrderId,
    ) -> Result<BrokerMlegOrder, BrokerError> {
        self.mlegs
            .get(&id.to_string())
            .and_then(|m| self.mleg_view(&m))
            .ok_or(BrokerError::NotFound)
    }

    async fn cancel_order(&self, _: &AccountId, broker_order_id: &str) -> Result<(), BrokerError> {
        // A multi-leg order is canceled as a whole: every leg still working.
        if let Some(m) = self.mlegs.by_id(broker_order_id) {
            self.mlegs.cancel(&self.engine, &m);
            return Ok(());
        }
        // As Alpaca: one leg of a multi-leg order is not canceled on its own.
        let leg_of = self
            .engine
            .by_id(broker_order_id)
            .and_then(|o| self.mlegs.parent_of(&o.client_order_id));
        if let Some(m) = leg_of {
            return Err(BrokerError::Rejected(format!(
                "order {broker_order_id} is a leg of multi-leg order {}: cancel that order",
                m.id
            )));
        }
        match self.engine.cancel(broker_order_id) {
            Ok(_) | Err(CancelError::NotCancelable(_)) => Ok(()),
            Err(CancelError::NotFound) => Err(BrokerError::NotFound),
        }
    }

    async fn list_positions(&self, account: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        Ok(self
            .engine
            .positions(account.as_str())
            .into_iter()
            .map(|(symbol, h)| BrokerPosition {
                symbol,
                qty: h.qty,
                avg_entry_price: Price::new(h.avg_entry_price),
            })
            .collect())
    }

    async fn open_orders(&self, _: &AccountId, symbol: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        Ok(self
            .engine
            .list(&ListQuery {
                status: StatusFilter::Open,
                symbols: Some(vec![symbol.to_string()]),
                limit: 500,
                newest_first: false,
            })
            .into_iter()
            .map(open_order)
            .collect())
    }

    async fn account_equity(&self, account: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        let set = self
            .equity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied();
        Ok(set.unwrap_or_else(|| self.engine.scenarios().starting_equity()))
    }

    async fn account_open_orders(&self, account: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        Ok(self
            .engine
            .list(&ListQuery {
                status: StatusFilter::Open,
                symbols: None,
                limit: usize::MAX,
                newest_first: false,
            })
            .into_iter()
            // A `held` symbol's blocking order belongs to no account: it stands for an
            // order in every account, as `open_orders` shows it to each.
            .filter(|o| o.account == account.as_str() || o.account.is_empty())
            .map(open_order)
            .collect())
    }
}

fn open_order(o: engine::SimOrder) -> OpenOrder {
    OpenOrder {
        broker_order_id: o.id,
        client_order_id: o.client_order_id,
        symbol: o.symbol,
        qty: o.qty,
        filled_qty: o.filled_qty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::webhook::verify_signature;
    use chrono::TimeZone;
    use closeflow_domain::{AccountId, AssetType, CloseRequestId, PositionId, Side};
    use engine::ManualScheduler;

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
        let s =
            scenarios("META=fill_after:2s,X=fill_after:250ms,Y=fill_after:1m,GOOG=reject_first,AMZN=replace,NFLX=held");
        assert_eq!(s.behaviour("META"), SimBehaviour::FillAfter(Duration::from_secs(2)));
        assert_eq!(s.behaviour("X"), SimBehaviour::FillAfter(Duration::from_millis(250)));
        assert_eq!(s.behaviour("Y"), SimBehaviour::FillAfter(Duration::from_secs(60)));
        assert_eq!(s.behaviour("GOOG"), SimBehaviour::RejectFirst);
        assert_eq!(s.behaviour("AMZN"), SimBehaviour::Replace);
        assert_eq!(s.behaviour("NFLX"), SimBehaviour::Held);
        for bad in [
            "A=fill_after:",
            "A=fill_after:2",
            "A=fill_after:2days",
            "A=fill_after:-1s",
        ] {
            assert!(SimScenarios::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prices_parse_and_default_to_100() {
        let s = SimScenarios::default().with_prices("AAPL=187.5, TSLA=250").unwrap();
        assert_eq!(s.price("AAPL"), Quantity::parse("187.5").unwrap());
        assert_eq!(s.price("TSLA"), Quantity::from(250));
        assert_eq!(s.price("GOOG"), Quantity::from(100));
        for bad in ["AAPL", "AAPL=0", "AAPL=-1", "AAPL=x", "AAPL=1e400"] {
            assert!(SimScenarios::default().with_prices(bad).is_err(), "{bad}");
        }
    }

    struct Collect(std::sync::Mutex<Vec<(Vec<u8>, String)>>);

    #[async_trait]
    impl WebhookSink for Collect {
        async fn deliver(&self, body: Vec<u8>, signature: String) {
            self.0.lock().unwrap().push((body, signature));
        }
    }

    fn acct() -> AccountId {
        AccountId::parse("a").unwrap()
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
            options: closeflow_domain::OrderOptions::MARKET,
        }
    }

    fn broker(spec: &str) -> (SimulatedBroker, Arc<Collect>, Arc<ManualClock>) {
        let (b, sink, clock, _) = timed_broker(spec, "");
        (b, sink, clock)
    }

    fn timed_broker(
        spec: &str,
        prices: &str,
    ) -> (SimulatedBroker, Arc<Collect>, Arc<ManualClock>, Arc<ManualScheduler>) {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ));
        let timer = Arc::new(ManualScheduler::new());
        let b = SimulatedBroker::with_scheduler(
            scenarios(spec).with_prices(prices).unwrap(),
            b"s3cret",
            clock.clone(),
            timer.clone(),
        );
        let sink = Arc::new(Collect(std::sync::Mutex::new(Vec::new())));
        b.connect(sink.clone());
        (b, sink, clock, timer)
    }

    /// The webhook bodies sent so far, in order of sequence number.
    async fn calls(b: &SimulatedBroker, sink: &Collect) -> Vec<serde_json::Value> {
        b.idle().await;
        let mut v: Vec<serde_json::Value> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(body, _)| serde_json::from_slice(body).unwrap())
            .collect();
        v.sort_by_key(|c| (c["client_order_id"].to_string(), c["seq"].as_u64()));
        v
    }

    #[tokio::test]
    async fn fills_arrive_as_correctly_signed_webhook_calls() {
        let (b, sink, clock) = broker("");
        b.set_holding(&acct(), "AAPL", Quantity::from(10));
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
        assert!(
            b.list_positions(&acct()).await.unwrap().is_empty(),
            "the holding was sold"
        );
    }

    fn close(account: &str, symbol: &str, side: Side, qty: &str, attempt: u32) -> OrderIntent {
        OrderIntent {
            account_id: AccountId::parse(account).unwrap(),
            side,
            qty: Quantity::parse(qty).unwrap(),
            ..intent(symbol, attempt)
        }
    }

    fn held(symbol: &str, qty: &str, price: &str) -> BrokerPosition {
        BrokerPosition {
            symbol: symbol.into(),
            qty: Quantity::parse(qty).unwrap(),
            avg_entry_price: Price::parse(price).unwrap(),
        }
    }

    #[tokio::test]
    async fn seeded_holdings_are_listed_per_account_and_closing_fills_move_them() {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ));
        let scenarios = SimScenarios::default()
            .with_prices("IBM=130")
            .unwrap()
            .with_positions("a:IBM=7@120,a:AAPL=-3@187.5,b:IBM=1")
            .unwrap();
        let b = SimulatedBroker::new(scenarios, b"s", clock);
        let (a, other) = (acct(), AccountId::parse("b").unwrap());
        assert_eq!(
            b.list_positions(&a).await.unwrap(),
            vec![held("AAPL", "-3", "187.5"), held("IBM", "7", "120")]
        );
        assert_eq!(
            b.list_positions(&other).await.unwrap(),
            vec![held("IBM", "1", "130")],
            "a seed without a price is at the symbol's price"
        );

        // Selling part of the long keeps its entry price; buying the short back removes it.
        b.submit_order(&close("a", "IBM", Side::Sell, "4", 1)).await.unwrap();
        b.submit_order(&close("a", "AAPL", Side::Buy, "3", 2)).await.unwrap();
        assert_eq!(b.list_positions(&a).await.unwrap(), vec![held("IBM", "3", "120")]);
        b.submit_order(&close("a", "IBM", Side::Sell, "3", 3)).await.unwrap();
        assert!(b.list_positions(&a).await.unwrap().is_empty(), "sold out: gone");
        assert_eq!(
            b.list_positions(&other).await.unwrap(),
            vec![held("IBM", "1", "130")],
            "another account's holding is its own"
        );
    }

    #[tokio::test]
    async fn a_fill_whose_notification_is_lost_still_moves_the_holding() {
        let (b, sink, _) = broker("NVDA=hold");
        b.set_holding(&acct(), "NVDA", Quantity::from(10));
        let o = b.submit_order(&intent("NVDA", 1)).await.unwrap();
        b.settle_silently(&o.client_order_id, OrderStatus::Filled, Quantity::from(10));
        assert!(calls(&b, &sink).await.is_empty(), "no webhook call");
        assert!(
            b.list_positions(&acct()).await.unwrap().is_empty(),
            "sold at the broker all the same"
        );
    }

    #[test]
    fn a_bad_positions_spec_names_its_entry() {
        let err = SimScenarios::default()
            .with_positions("a:IBM=7,a:AAPL=three")
            .unwrap_err();
        assert!(err.starts_with("`a:AAPL=three`"), "{err}");
    }

    fn limit(symbol: &str, attempt: u32, price: &str) -> OrderIntent {
        let mut i = intent(symbol, attempt);
        i.options = closeflow_domain::OrderOptions::limit(
            closeflow_domain::Price::new(Quantity::parse(price).unwrap()).unwrap(),
        );
        i
    }

    #[tokio::test]
    async fn a_limit_sell_fills_at_the_price_when_it_reaches_the_limit_and_rests_otherwise() {
        let (b, _, _, _) = timed_broker("", "AAPL=187.5");
        let placed = b.submit_order(&limit("AAPL", 1, "180")).await.unwrap();
        let better = b
            .get_order_by_client_id(&acct(), &placed.client_order_id)
            .await
            .unwrap();
        assert_eq!(
            (better.status, better.filled_avg_price),
            (OrderStatus::Filled, Price::parse("187.5").unwrap()),
            "at the limit or better"
        );
        let above = b.submit_order(&limit("AAPL", 2, "190")).await.unwrap();
        assert_eq!(
            above.status,
            OrderStatus::Accepted,
            "the price does not reach it: it works"
        );
        b.cancel_order(&acct(), &above.broker_order_id).await.unwrap();
        let ended = b.get_order_by_client_id(&acct(), &above.client_order_id).await.unwrap();
        assert_eq!(
            (ended.status, ended.filled_qty),
            (OrderStatus::Canceled, Quantity::ZERO)
        );
    }

    #[tokio::test]
    async fn rest_keeps_a_limit_order_working_until_canceled_and_fills_market_orders() {
        let (b, sink, _) = broker("AAPL=rest");
        let resting = b.submit_order(&limit("AAPL", 1, "1")).await.unwrap();
        assert_eq!(resting.status, OrderStatus::Accepted);
        let market = b.submit_order(&intent("AAPL", 2)).await.unwrap();
        let market = b
            .get_order_by_client_id(&acct(), &market.client_order_id)
            .await
            .unwrap();
        assert_eq!(market.status, OrderStatus::Filled);
        b.cancel_order(&acct(), &resting.broker_order_id).await.unwrap();
        let calls = calls(&b, &sink).await;
        assert!(calls
            .iter()
            .any(|c| c["client_order_id"] == resting.client_order_id.to_string() && c["status"] == "canceled"));
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
            b.get_order_by_client_id(&acct(), &held.client_order_id)
                .await
                .unwrap()
                .status,
            OrderStatus::Accepted
        );
        let lost = b.submit_order(&intent("AMD", 3)).await.unwrap();
        assert_eq!(
            b.get_order_by_client_id(&acct(), &lost.client_order_id).await,
            Err(BrokerError::NotFound)
        );
        b.idle().await;
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "hold and not_found never fill on their own"
        );
        assert_eq!(b.orders_placed(), 2);
    }

    #[tokio::test]
    async fn fill_after_fills_when_its_time_comes_unless_canceled_first() {
        let (b, sink, _, timer) = timed_broker("META=fill_after:2s", "META=612.25");
        let o = b.submit_order(&intent("META", 1)).await.unwrap();
        assert_eq!(o.status, OrderStatus::Accepted);
        timer.advance(Duration::from_millis(1999));
        assert!(calls(&b, &sink).await.is_empty(), "not yet");
        timer.advance(Duration::from_millis(1));
        let c = calls(&b, &sink).await;
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                c[0]["status"].as_str(),
                c[0]["filled_qty"].as_str(),
                c[0]["filled_avg_price"].as_str()
            ),
            (Some("filled"), Some("10"), Some("612.25"))
        );
        assert_eq!(
            b.get_order_by_client_id(&acct(), &o.client_order_id)
                .await
                .unwrap()
                .status,
            OrderStatus::Filled
        );

        let canceled = b.submit_order(&intent("META", 2)).await.unwrap();
        b.cancel_order(&acct(), &canceled.broker_order_id).await.unwrap();
        timer.advance(Duration::from_secs(5));
        let c = calls(&b, &sink).await;
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[1]["status"], "canceled");
        assert_eq!(
            b.get_order_by_client_id(&acct(), &canceled.client_order_id)
                .await
                .unwrap()
                .status,
            OrderStatus::Canceled
        );
    }

    #[tokio::test]
    async fn reject_first_refuses_attempt_one_and_fills_the_retry() {
        let (b, sink, _) = broker("GOOG=reject_first");
        assert_eq!(
            b.submit_order(&intent("GOOG", 1)).await,
            Err(BrokerError::Rejected(
                "insufficient qty available for order (requested: 10, available: 0)".into()
            ))
        );
        let o = b.submit_order(&intent("GOOG", 2)).await.unwrap();
        let c = calls(&b, &sink).await;
        assert_eq!((c.len(), c[0]["status"].as_str()), (1, Some("filled")));
        assert_eq!(c[0]["client_order_id"], o.client_order_id.to_string());
        assert_eq!(b.orders_placed(), 1, "the refused attempt placed nothing");
    }

    #[tokio::test]
    async fn replace_ends_the_order_replaced_and_its_replacement_fills() {
        let (b, sink, _) = broker("AMZN=replace");
        let o = b.submit_order(&intent("AMZN", 1)).await.unwrap();
        assert_eq!(o.status, OrderStatus::Accepted);
        let original = b.engine().by_client_order_id(&o.client_order_id.to_string()).unwrap();
        assert_eq!(original.status, SimStatus::Replaced);
        let replacement = b.engine().by_id(original.replaced_by.as_deref().unwrap()).unwrap();
        assert_eq!(replacement.replaces.as_deref(), Some(o.broker_order_id.as_str()));
        assert_eq!(
            (replacement.status, replacement.filled_qty),
            (SimStatus::Filled, Quantity::from(10))
        );
        // `replaced` is never canceled: the replacement carries the attempt, reported under
        // closeflow's client order id, later in sequence, with its own broker id.
        let c = calls(&b, &sink).await;
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(
            (c[0]["status"].as_str(), c[0]["seq"].as_u64()),
            (Some("accepted"), Some(2))
        );
        assert_eq!(
            (c[1]["status"].as_str(), c[1]["seq"].as_u64()),
            (Some("filled"), Some(4))
        );
        assert_eq!(c[1]["client_order_id"], o.client_order_id.to_string());
        assert_eq!(c[1]["broker_order_id"], replacement.id);
        let seen = b.get_order_by_client_id(&acct(), &o.client_order_id).await.unwrap();
        assert_eq!(
            (seen.status, seen.filled_qty, seen.broker_order_id.as_str()),
            (OrderStatus::Filled, Quantity::from(10), replacement.id.as_str())
        );
        assert_eq!(
            b.list_positions(&acct()).await.unwrap(),
            vec![BrokerPosition {
                symbol: "AMZN".into(),
                qty: Quantity::from(-10),
                avg_entry_price: Price::new(Quantity::from(DEFAULT_PRICE)),
            }]
        );
    }

    #[tokio::test]
    async fn held_refuses_until_the_symbols_other_open_orders_are_canceled() {
        let (b, sink, _) = broker("NFLX=held");
        let open = b.engine().list(&engine::ListQuery {
            status: engine::StatusFilter::Open,
            symbols: Some(vec!["NFLX".into()]),
            limit: 50,
            newest_first: true,
        });
        assert_eq!(open.len(), 1, "the held symbol starts with an open order");
        assert!(matches!(
            b.submit_order(&intent("NFLX", 1)).await,
            Err(BrokerError::BlockedByOpenOrders { held_qty, message })
                if message.starts_with("insufficient qty available") && held_qty == open[0].qty
        ));
        let listed = b.open_orders(&acct(), "NFLX").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].broker_order_id, open[0].id);
        assert!(b.open_orders(&acct(), "AAPL").await.unwrap().is_empty());
        b.cancel_order(&acct(), &open[0].id).await.unwrap();
        let o = b.submit_order(&intent("NFLX", 1)).await.unwrap();
        let c = calls(&b, &sink).await;
        assert_eq!(c.len(), 1, "only closeflow's order is reported");
        assert_eq!(
            (c[0]["status"].as_str(), c[0]["client_order_id"].as_str()),
            (Some("filled"), Some(o.client_order_id.to_string().as_str()))
        );
    }

    #[test]
    fn sim_broker_equity_parses_as_an_exact_decimal() {
        assert_eq!(
            SimScenarios::default().starting_equity(),
            rust_decimal::Decimal::from(100_000)
        );
        assert!(!SimScenarios::default().equity_set());
        let s = SimScenarios::default().with_equity(" 2500.75 ").unwrap();
        assert_eq!(s.starting_equity(), "2500.75".parse().unwrap());
        assert!(s.equity_set());
        assert_eq!(
            SimScenarios::default().with_equity("").unwrap(),
            SimScenarios::default()
        );
        assert_eq!(
            SimScenarios::default().with_equity("-10").unwrap().starting_equity(),
            rust_decimal::Decimal::from(-10),
            "a wiped-out account is a case to simulate"
        );
        for bad in ["lots", "1_000", "+5", "1e-29"] {
            assert!(SimScenarios::default().with_equity(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn equity_is_the_starting_equity_until_set_per_account() {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        ));
        let b = SimulatedBroker::new(SimScenarios::default().with_equity("250000.5").unwrap(), b"s", clock);
        let other = AccountId::parse("b").unwrap();
        assert_eq!(b.account_equity(&acct()).await, Ok("250000.5".parse().unwrap()));
        b.set_equity(&acct(), "87500.25".parse().unwrap());
        assert_eq!(b.account_equity(&acct()).await, Ok("87500.25".parse().unwrap()));
        assert_eq!(
            b.account_equity(&other).await,
            Ok("250000.5".parse().unwrap()),
            "other accounts keep theirs"
        );
        // Fills turn holdings into cash at constant prices: equity does not move.
        b.set_holding(&acct(), "AAPL", Quantity::from(10));
        b.submit_order(&intent("AAPL", 1)).await.unwrap();
        assert_eq!(b.account_equity(&acct()).await, Ok("87500.25".parse().unwrap()));
        assert_eq!(
            broker("").0.account_equity(&acct()).await,
            Ok(rust_decimal::Decimal::from(100_000))
        );
    }

    #[tokio::test]
    async fn account_open_orders_lists_the_accounts_working_orders_in_every_symbol_oldest_first() {
        let (b, _, _) = broker("AAPL=rest,MSFT=rest,TSLA=rest,NFLX=held");
        let aapl = b.submit_order(&limit("AAPL", 1, "1")).await.unwrap();
        let msft = b.submit_order(&limit("MSFT", 2, "1")).await.unwrap();
        // A market order fills at once; another account's resting order is not ours.
        b.submit_order(&intent("IBM", 3)).await.unwrap();
        let mut theirs = limit("TSLA", 4, "1");
        theirs.account_id = AccountId::parse("b").unwrap();
        let tsla = b.submit_order(&theirs).await.unwrap();

        let listed = b.account_open_orders(&acct()).await.unwrap();
        let symbols: Vec<&str> = listed.iter().map(|o| o.symbol.as_str()).collect();
        assert_eq!(
            symbols,
            ["NFLX", "AAPL", "MSFT"],
            "the held order stands in every account"
        );
        assert_eq!(listed[1].broker_order_id, aapl.broker_order_id);
        assert_eq!(listed[1].client_order_id, aapl.client_order_id.to_string());
        assert_eq!(
            (listed[1].qty, listed[1].filled_qty),
            (Quantity::from(10), Quantity::ZERO)
        );
        assert_eq!(listed[2].broker_order_id, msft.broker_order_id);

        let other = b.account_open_orders(&theirs.account_id).await.unwrap();
        assert_eq!(
            other.iter().map(|o| o.broker_order_id.as_str()).collect::<Vec<_>>(),
            [listed[0].broker_order_id.as_str(), tsla.broker_order_id.as_str()]
        );

        b.cancel_order(&acct(), &aapl.broker_order_id).await.unwrap();
        let after = b.account_open_orders(&acct()).await.unwrap();
        assert_eq!(
            after.iter().map(|o| o.symbol.as_str()).collect::<Vec<_>>(),
            ["NFLX", "MSFT"]
        );
    }
}
