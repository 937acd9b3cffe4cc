//! The simulated broker's order-lifecycle engine, shared by its two faces: the in-process
//! [`SimulatedBroker`](super::SimulatedBroker) (fills as signed webhook calls) and the
//! Alpaca-compatible paper broker (REST and `trade_updates`). One engine keeps both faces
//! answering the same scenarios the same way.
//!
//! Orders are kept by id and by `client_order_id` (unique, as at Alpaca). Every change is
//! an event ([`TradeEvent`], Alpaca's `trade_updates` vocabulary) handed to the listeners
//! while the engine's lock is held, so each listener sees one order's events in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use closeflow_domain::{ClientOrderId, OrderStatus, Price, Quantity, Side, Timestamp};

use super::holdings::{Holding, Holdings};
use super::{SimBehaviour, SimScenarios};
use crate::broker::BrokerOrder;
use crate::clock::Clock;

/// Replacements followed at most (a longer chain is reported where it stops).
pub const MAX_REPLACEMENTS: usize = 8;

/// Alpaca's order statuses, as far as the simulation produces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Replaced,
    Rejected,
    Expired,
}

impl SimStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SimStatus::New => "new",
            SimStatus::PartiallyFilled => "partially_filled",
            SimStatus::Filled => "filled",
            SimStatus::Canceled => "canceled",
            SimStatus::Replaced => "replaced",
            SimStatus::Rejected => "rejected",
            SimStatus::Expired => "expired",
        }
    }

    /// Still working: can fill, be canceled, and holds quantity against other orders.
    pub fn is_open(&self) -> bool {
        matches!(self, SimStatus::New | SimStatus::PartiallyFilled)
    }

    /// closeflow's view (the same mapping as the Alpaca adapter's).
    pub fn to_closeflow(&self, filled: Quantity) -> OrderStatus {
        match self {
            SimStatus::New | SimStatus::PartiallyFilled if filled.is_zero() => OrderStatus::Accepted,
            SimStatus::New | SimStatus::PartiallyFilled => OrderStatus::PartiallyFilled,
            SimStatus::Filled => OrderStatus::Filled,
            // The order lives on as its replacement (`replaced_by`): never counted as
            // canceled, so a retry cannot close twice.
            SimStatus::Replaced if filled.is_zero() => OrderStatus::Accepted,
            SimStatus::Replaced => OrderStatus::PartiallyFilled,
            SimStatus::Canceled => OrderStatus::Canceled,
            SimStatus::Rejected => OrderStatus::Rejected,
            SimStatus::Expired => OrderStatus::Expired,
        }
    }

    pub fn from_closeflow(s: OrderStatus) -> SimStatus {
        match s {
            OrderStatus::New | OrderStatus::Accepted => SimStatus::New,
            OrderStatus::PartiallyFilled => SimStatus::PartiallyFilled,
            OrderStatus::Filled => SimStatus::Filled,
            OrderStatus::Canceled => SimStatus::Canceled,
            OrderStatus::Rejected => SimStatus::Rejected,
            OrderStatus::Expired => SimStatus::Expired,
        }
    }
}

/// One order as the broker keeps it (Alpaca's order object, less what the simulation
/// never varies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOrder {
    pub id: String,
    /// The account whose holdings its fills move.
    pub account: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: Quantity,
    pub order_type: String,
    pub time_in_force: String,
    pub limit_price: Option<Quantity>,
    pub position_intent: Option<String>,
    pub status: SimStatus,
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<Quantity>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub submitted_at: Timestamp,
    pub filled_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub replaced_at: Option<Timestamp>,
    pub replaced_by: Option<String>,
    pub replaces: Option<String>,
    /// `not_found`: the order exists but every lookup denies it.
    pub forgotten: bool,
    /// Events so far (the sequence number of the last one).
    pub seq: u64,
    /// Creation order, for listings.
    pub created_seq: u64,
}

impl SimOrder {
    /// The broker port's view (`None` for orders that are not closeflow's).
    pub fn to_broker_order(&self) -> Option<BrokerOrder> {
        Some(BrokerOrder {
            broker_order_id: self.id.clone(),
            client_order_id: ClientOrderId::parse(&self.client_order_id).ok()?,
            status: self.status.to_closeflow(self.filled_qty),
            filled_qty: self.filled_qty,
            filled_avg_price: self.filled_avg_price.and_then(Price::new),
            updated_at: self.updated_at,
        })
    }
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The account whose holdings its fills move.
    pub account: String,
    /// `None`: the broker names it (a UUID, as Alpaca does).
    pub client_order_id: Option<String>,
    pub symbol: String,
    pub side: Side,
    pub qty: Quantity,
    pub order_type: String,
    pub time_in_force: String,
    pub limit_price: Option<Quantity>,
    pub position_intent: Option<String>,
    /// Works until canceled, whatever the price: a leg of a multi-leg limit order whose
    /// net price the symbols' prices do not reach (the legs fill together or not at all).
    pub rests: bool,
}

impl NewOrder {
    /// The order closeflow places for an attempt: its side, quantity and order options.
    pub fn for_intent(intent: &closeflow_domain::OrderIntent) -> NewOrder {
        let o = intent.options;
        NewOrder {
            order_type: o.order_type.as_str().into(),
            time_in_force: o.time_in_force.as_str().into(),
            limit_price: o.limit_price.map(|p| p.as_quantity()),
            ..NewOrder::market(
                intent.account_id.as_str(),
                &intent.client_order_id.to_string(),
                &intent.symbol,
                intent.side,
                intent.qty,
            )
        }
    }

    /// A market day order.
    pub fn market(account: &str, client_order_id: &str, symbol: &str, side: Side, qty: Quantity) -> NewOrder {
        NewOrder {
            account: account.to_string(),
            client_order_id: Some(client_order_id.to_string()),
            symbol: symbol.to_string(),
            side,
            qty,
            order_type: "market".into(),
            time_in_force: "day".into(),
            limit_price: None,
            position_intent: None,
            rests: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("client_order_id must be unique")]
    DuplicateClientOrderId,
    /// Alpaca's 403: the account cannot sell that much now. `related_orders` are the open
    /// orders holding the quantity (empty for a plain refusal).
    #[error("insufficient qty available for order (requested: {requested}, available: {available})")]
    InsufficientQty {
        symbol: String,
        requested: Quantity,
        available: Quantity,
        related_orders: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("order not found")]
    NotFound,
    /// Already final (Alpaca's 422).
    #[error("order is not cancelable")]
    NotCancelable(SimStatus),
}

/// One `trade_updates` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeEvent {
    /// `new`, `partial_fill`, `fill`, `canceled`, `replaced`, `rejected`, `expired`.
    pub event: &'static str,
    /// The order after the event; `order.seq` numbers the order's events.
    pub order: SimOrder,
    pub timestamp: Timestamp,
    /// Fills only: this execution's id, price and quantity, and the position after it.
    pub execution_id: Option<String>,
    pub price: Option<Quantity>,
    pub qty: Option<Quantity>,
    pub position_qty: Option<Quantity>,
}

pub type Listener = Arc<dyn Fn(&TradeEvent) + Send + Sync>;

/// Runs the engine's delayed work (`fill_after`): a port, so tests move time by hand.
pub trait Scheduler: Send + Sync {
    fn schedule(&self, after: Duration, task: Box<dyn FnOnce() + Send>);
}

/// Real time, on the tokio runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioScheduler;

impl Scheduler for TokioScheduler {
    fn schedule(&self, after: Duration, task: Box<dyn FnOnce() + Send>) {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            task();
        });
    }
}

type Pending = (Duration, Box<dyn FnOnce() + Send>);

/// Time that moves only on [`ManualScheduler::advance`], which runs what fell due, in
/// order.
#[derive(Default)]
pub struct ManualScheduler {
    now: Mutex<Duration>,
    pending: Mutex<Vec<Pending>>,
}

impl ManualScheduler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let now = {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
            *now
        };
        let mut due: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (due, later) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            *pending = later;
            due
        };
        due.sort_by_key(|(at, _)| *at);
        // Run outside the lock: a task may schedule more.
        for (_, task) in due {
            task();
        }
    }
}

impl Scheduler for ManualScheduler {
    fn schedule(&self, after: Duration, task: Box<dyn FnOnce() + Send>) {
        let at = *self.now.lock().unwrap_or_else(|p| p.into_inner()) + after;
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((at, task));
    }
}

/// Which orders a listing returns (Alpaca's `status` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Open,
    Closed,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub status: StatusFilter,
    pub symbols: Option<Vec<String>>,
    pub limit: usize,
    /// Newest first (Alpaca's default `direction=desc`).
    pub newest_first: bool,
}

#[derive(Default)]
struct State {
    orders: HashMap<String, SimOrder>,
    by_client: HashMap<String, String>,
    holdings: Holdings,
    /// Submissions per symbol, for `reject_first` on ids that carry no attempt number.
    submissions: HashMap<String, u32>,
    placed: usize,
    next_seq: u64,
}

pub struct Engine {
    me: Weak<Engine>,
    scenarios: SimScenarios,
    clock: Arc<dyn Clock>,
    scheduler: Arc<dyn Scheduler>,
    id_prefix: Option<&'static str>,
    state: Mutex<State>,
    listeners: Mutex<Vec<Listener>>,
}

impl Engine {
    /// `id_prefix`: broker order ids are `<prefix><uuid, no dashes>`, or plain UUIDs as at
    /// Alpaca when `None`. Each `held` symbol starts with an open order holding its qty;
    /// the accounts start with the scenarios' seeded holdings (at the symbol's price where
    /// the seed names none).
    pub fn new(
        scenarios: SimScenarios,
        clock: Arc<dyn Clock>,
        scheduler: Arc<dyn Scheduler>,
        id_prefix: Option<&'static str>,
    ) -> Arc<Engine> {
        let engine = Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            scenarios,
            clock,
            scheduler,
            id_prefix,
            state: Mutex::new(State::default()),
            listeners: Mutex::new(Vec::new()),
        });
        let mut held: Vec<&String> = engine.scenarios.held_symbols().collect();
        held.sort();
        {
            let mut st = engine.lock();
            for symbol in held {
                // It belongs to no account: it never fills, so it moves no holding.
                let mut blocking =
                    NewOrder::market("", &format!("held-{symbol}"), symbol, Side::Sell, Quantity::from(1));
                // A resting limit order placed outside closeflow: it never fills by itself.
                blocking.order_type = "limit".into();
                blocking.time_in_force = "gtc".into();
                blocking.limit_price = Some(engine.scenarios.price(symbol));
                engine.insert(&mut st, blocking, None);
            }
            for seed in engine.scenarios.seeded_positions() {
                let price = seed
                    .avg_entry_price
                    .unwrap_or_else(|| engine.scenarios.price(&seed.symbol));
                st.holdings.set(&seed.account, &seed.symbol, seed.qty, price);
            }
        }
        engine
    }

    pub fn scenarios(&self) -> &SimScenarios {
        &self.scenarios
    }

    /// The engine's clock's time.
    pub fn now(&self) -> closeflow_domain::Timestamp {
        self.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a listener for every later event (called under the engine's lock: it must not
    /// block or call back into the engine).
    pub fn subscribe(&self, listener: Listener) {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(listener);
    }

    fn emit(&self, e: TradeEvent) {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for l in listeners {
            l(&e);
        }
    }

    fn new_id(&self) -> String {
        let u = uuid::Uuid::new_v4();
        match self.id_prefix {
            Some(p) => format!("{p}{}", u.simple()),
            None => u.to_string(),
        }
    }

    fn insert(&self, st: &mut State, req: NewOrder, replaces: Option<String>) -> SimOrder {
        let now = self.clock.now();
        st.next_seq += 1;
        let order = SimOrder {
            id: self.new_id(),
            account: req.account,
            client_order_id: req.client_order_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            symbol: req.symbol,
            side: req.side,
            qty: req.qty,
            order_type: req.order_type,
            time_in_force: req.time_in_force,
            limit_price: req.limit_price,
            position_intent: req.position_intent,
            status: SimStatus::New,
            filled_qty: Quantity::ZERO,
            filled_avg_price: None,
            created_at: now,
            updated_at: now,
            submitted_at: now,
            filled_at: None,
            canceled_at: None,
            replaced_at: None,
            replaced_by: None,
            replaces,
            forgotten: false,
            seq: 1,
            created_seq: st.next_seq,
        };
        st.by_client.insert(order.client_order_id.clone(), order.id.clone());
        st.orders.insert(order.id.clone(), order.clone());
        self.emit(TradeEvent {
            event: "new",
            order: order.clone(),
            timestamp: now,
            execution_id: None,
            price: None,
            qty: None,
            position_qty: None,
        });
        order
    }

    /// Places an order as the symbol's scenario says. The answer is the order as accepted;
    /// what the scenario does next (fills, cancels, a replacement) follows as events.
    pub fn submit(&self, req: NewOrder) -> Result<SimOrder, SubmitError> {
        let behaviour = self.scenarios.behaviour(&req.symbol);
        let mut st = self.lock();
        if let Some(c) = &req.client_order_id {
            if st.by_client.contains_key(c) {
                return Err(SubmitError::DuplicateClientOrderId);
            }
        }
        let attempt = {
            let n = st.submissions.entry(req.symbol.clone()).or_insert(0);
            *n += 1;
            // closeflow's ids carry their attempt; any other id counts per symbol.
            req.client_order_id
                .as_deref()
                .and_then(|c| ClientOrderId::parse(c).ok())
                .map_or(*n, |c| c.attempt)
        };
        let refuse = |related_orders: Vec<String>| SubmitError::InsufficientQty {
            symbol: req.symbol.clone(),
            requested: req.qty,
            available: Quantity::ZERO,
            related_orders,
        };
        match behaviour {
            SimBehaviour::Reject => return Err(refuse(Vec::new())),
            SimBehaviour::RejectFirst if attempt <= 1 => return Err(refuse(Vec::new())),
            SimBehaviour::Held => {
                let mut holding: Vec<&SimOrder> = st
                    .orders
                    .values()
                    .filter(|o| o.symbol == req.symbol && o.status.is_open())
                    .collect();
                holding.sort_by_key(|o| o.created_seq);
                if !holding.is_empty() {
                    return Err(refuse(holding.iter().map(|o| o.id.clone()).collect()));
                }
            }
            _ => {}
        }
        let qty = req.qty;
        let behaviour = if req.rests { SimBehaviour::Hold } else { behaviour };
        let mut order = self.insert(&mut st, req, None);
        st.placed += 1;
        if behaviour == SimBehaviour::NotFound {
            if let Some(o) = st.orders.get_mut(&order.id) {
                o.forgotten = true;
            }
            order.forgotten = true;
        }
        match behaviour {
            SimBehaviour::Fill | SimBehaviour::RejectFirst | SimBehaviour::Held => {
                self.fill(&mut st, &order.id, qty);
            }
            SimBehaviour::Partial(n) if n >= qty => self.fill(&mut st, &order.id, qty),
            SimBehaviour::Partial(n) => {
                self.fill(&mut st, &order.id, n);
                self.finish(&mut st, &order.id, SimStatus::Canceled);
            }
            SimBehaviour::FillAfter(after) => {
                let (me, id) = (self.me.clone(), order.id.clone());
                self.scheduler.schedule(
                    after,
                    Box::new(move || {
                        if let Some(engine) = me.upgrade() {
                            let mut st = engine.lock();
                            // Canceled meanwhile: nothing to fill.
                            let rest = st.orders.get(&id).filter(|o| o.status.is_open()).map(|o| o.qty);
                            if let Some(qty) = rest {
                                engine.fill(&mut st, &id, qty);
                            }
                        }
                    }),
                );
            }
            SimBehaviour::Replace => self.replace(&mut st, &order.id),
            // A limit order rests until canceled; anything else fills.
            SimBehaviour::Rest if order.order_type == "limit" => {}
            SimBehaviour::Rest => self.fill(&mut st, &order.id, qty),
            SimBehaviour::Reject | SimBehaviour::Hold | SimBehaviour::NotFound => {}
        }
        Ok(order)
    }

    /// Fills an open order up to cumulative `filled` at the symbol's price.
    fn fill(&self, st: &mut State, id: &str, filled: Quantity) {
        let now = self.clock.now();
        let Some(o) = st.orders.get_mut(id) else { return };
        let delta = filled.minus(o.filled_qty);
        if !o.status.is_open() || delta.is_zero() || delta.is_negative() {
            return;
        }
        let price = self.scenarios.price(&o.symbol);
        // A limit order fills at its limit or better, at the symbol's price; one the price
        // does not reach keeps working until it is canceled.
        if let Some(limit) = o.limit_price {
            let reached = match o.side {
                Side::Sell => price >= limit,
                Side::Buy => price <= limit,
            };
            if !reached {
                return;
            }
        }
        o.filled_qty = filled;
        o.filled_avg_price = Some(price);
        o.status = if filled >= o.qty {
            o.filled_at = Some(now);
            SimStatus::Filled
        } else {
            SimStatus::PartiallyFilled
        };
        o.updated_at = now;
        o.seq += 1;
        let order = o.clone();
        let signed = match order.side {
            Side::Sell => Quantity::new(-delta.value()),
            Side::Buy => delta,
        };
        let position_qty = st.move_holding(&order.account, &order.symbol, signed, price);
        self.emit(TradeEvent {
            event: if order.status == SimStatus::Filled {
                "fill"
            } else {
                "partial_fill"
            },
            execution_id: Some(format!("{}-x{}", order.id, order.seq)),
            price: Some(price),
            qty: Some(delta),
            position_qty: Some(position_qty),
            timestamp: now,
            order,
        });
    }

    /// Ends an open order as canceled or expired.
    fn finish(&self, st: &mut State, id: &str, status: SimStatus) {
        let now = self.clock.now();
        let Some(o) = st.orders.get_mut(id) else { return };
        if !o.status.is_open() {
            return;
        }
        o.status = status;
        o.updated_at = now;
        if status == SimStatus::Canceled {
            o.canceled_at = Some(now);
        }
        o.seq += 1;
        self.emit(TradeEvent {
            event: status.as_str(),
            order: o.clone(),
            timestamp: now,
            execution_id: None,
            price: None,
            qty: None,
            position_qty: None,
        });
    }

    /// The broker replaces the order with one for the rest (as after a replace request):
    /// the original ends `replaced`, naming its replacement, which fills.
    fn replace(&self, st: &mut State, id: &str) {
        let now = self.clock.now();
        let Some(old) = st.orders.get(id).filter(|o| o.status.is_open()).cloned() else {
            return;
        };
        let replacement = self.insert(
            st,
            NewOrder {
                account: old.account.clone(),
                client_order_id: None,
                symbol: old.symbol.clone(),
                side: old.side,
                qty: old.qty.minus(old.filled_qty),
                order_type: old.order_type.clone(),
                time_in_force: old.time_in_force.clone(),
                limit_price: old.limit_price,
                position_intent: old.position_intent.clone(),
                rests: false,
            },
            Some(old.id.clone()),
        );
        if let Some(o) = st.orders.get_mut(id) {
            o.status = SimStatus::Replaced;
            o.replaced_at = Some(now);
            o.replaced_by = Some(replacement.id.clone());
            o.updated_at = now;
            o.seq += 1;
            let order = o.clone();
            self.emit(TradeEvent {
                event: "replaced",
                order,
                timestamp: now,
                execution_id: None,
                price: None,
                qty: None,
                position_qty: None,
            });
        }
        self.fill(st, &replacement.id, replacement.qty);
    }

    pub fn cancel(&self, id: &str) -> Result<SimOrder, CancelError> {
        let mut st = self.lock();
        match st.orders.get(id) {
            None => return Err(CancelError::NotFound),
            Some(o) if o.forgotten => return Err(CancelError::NotFound),
            Some(o) if !o.status.is_open() => return Err(CancelError::NotCancelable(o.status)),
            Some(_) => {}
        }
        self.finish(&mut st, id, SimStatus::Canceled);
        st.orders.get(id).cloned().ok_or(CancelError::NotFound)
    }

    /// Moves an order to any state with a given sequence number, as a test standing in for
    /// the broker does; `notify: false` moves it without an event (a lost notification).
    pub fn force(&self, client_order_id: &str, status: SimStatus, filled: Quantity, seq: u64, notify: bool) {
        let now = self.clock.now();
        let mut st = self.lock();
        let Some(id) = st.by_client.get(client_order_id).cloned() else {
            return;
        };
        let Some(o) = st.orders.get_mut(&id) else { return };
        let delta = filled.minus(o.filled_qty);
        o.status = status;
        o.filled_qty = filled;
        o.updated_at = now;
        let signed = match o.side {
            Side::Sell => Quantity::new(-delta.value()),
            Side::Buy => delta,
        };
        let (account, symbol) = (o.account.clone(), o.symbol.clone());
        // The fill happened at the broker whether or not its notification is lost: the
        // holding moves either way, so sync sees what the broker really holds.
        let price = self.scenarios.price(&symbol);
        st.move_holding(&account, &symbol, signed, price);
        if !notify {
            return;
        }
        let Some(o) = st.orders.get_mut(&id) else { return };
        o.filled_avg_price = (!filled.is_zero()).then_some(price);
        o.seq = o.seq.max(seq);
        let mut order = o.clone();
        order.seq = seq;
        let event = match status {
            SimStatus::Filled => "fill",
            SimStatus::PartiallyFilled => "partial_fill",
            other => other.as_str(),
        };
        self.emit(TradeEvent {
            event,
            execution_id: Some(format!("{}-x{seq}", order.id)),
            timestamp: now,
            order,
            price: None,
            qty: None,
            position_qty: None,
        });
    }

    /// The order by `client_order_id`, unless the broker denies it (`not_found`).
    pub fn by_client_order_id(&self, client_order_id: &str) -> Option<SimOrder> {
        let st = self.lock();
        let id = st.by_client.get(client_order_id)?;
        st.orders.get(id).filter(|o| !o.forgotten).cloned()
    }

    /// The attempt's order as closeflow sees it: a `replaced` order is followed along
    /// `replaced_by` to the order that now carries it, under the original client order id,
    /// with what the chain filled together (as the Alpaca adapter reports it).
    pub fn attempt_order(&self, client_order_id: &str) -> Option<BrokerOrder> {
        let first = self.by_client_order_id(client_order_id)?;
        let mut order = first.to_broker_order()?;
        let mut current = first;
        let mut filled_before = Quantity::ZERO;
        for _ in 0..MAX_REPLACEMENTS {
            if current.status != SimStatus::Replaced {
                break;
            }
            let Some(next) = current.replaced_by.as_deref().and_then(|id| self.by_id(id)) else {
                break;
            };
            filled_before = filled_before.checked_add(current.filled_qty)?;
            current = next;
        }
        if current.id != order.broker_order_id {
            let filled = filled_before.checked_add(current.filled_qty)?;
            order.broker_order_id = current.id.clone();
            order.status = current.status.to_closeflow(filled);
            order.filled_qty = filled;
            order.filled_avg_price = current.filled_avg_price.and_then(Price::new).or(order.filled_avg_price);
            order.updated_at = current.updated_at;
        }
        Some(order)
    }

    /// What the open orders `ids` still hold (ordered and not yet filled).
    pub fn held_by(&self, ids: &[String]) -> Quantity {
        let st = self.lock();
        ids.iter()
            .filter_map(|id| st.orders.get(id))
            .filter(|o| o.status.is_open())
            .fold(Quantity::ZERO, |acc, o| {
                acc.checked_add(o.qty.minus(o.filled_qty)).unwrap_or(acc)
            })
    }

    pub fn by_id(&self, id: &str) -> Option<SimOrder> {
        self.lock().orders.get(id).filter(|o| !o.forgotten).cloned()
    }

    pub fn list(&self, q: &ListQuery) -> Vec<SimOrder> {
        let st = self.lock();
        let mut out: Vec<SimOrder> = st
            .orders
            .values()
            .filter(|o| !o.forgotten)
            .filter(|o| match q.status {
                StatusFilter::Open => o.status.is_open(),
                StatusFilter::Closed => !o.status.is_open(),
                StatusFilter::All => true,
            })
            .filter(|o| q.symbols.as_ref().is_none_or(|s| s.contains(&o.symbol)))
            .cloned()
            .collect();
        out.sort_by_key(|o| o.created_seq);
        if q.newest_first {
            out.reverse();
        }
        out.truncate(q.limit);
        out
    }

    /// Orders accepted from clients (not seeded `held` orders or broker replacements).
    pub fn orders_placed(&self) -> usize {
        self.lock().placed
    }

    /// What `account` holds, by symbol: its seeded holdings moved by every fill since.
    pub fn positions(&self, account: &str) -> Vec<(String, Holding)> {
        self.lock().holdings.of(account)
    }

    /// Every account's holdings as `(account, symbol, holding)`.
    pub fn all_positions(&self) -> Vec<(String, String, Holding)> {
        self.lock().holdings.all()
    }

    /// Cash the fills moved: sells bring in qty × price, buys pay it (`None` past the
    /// decimal range).
    pub fn net_cash(&self) -> Option<Quantity> {
        let st = self.lock();
        st.orders.values().try_fold(Quantity::ZERO, |acc, o| {
            let price = o.filled_avg_price.unwrap_or(Quantity::ZERO);
            let amount = Quantity::new(o.filled_qty.value().checked_mul(price.value())?);
            match o.side {
                Side::Sell => acc.checked_add(amount),
                Side::Buy => acc.checked_sub(amount),
            }
        })
    }

    /// Sets a holding outright, as a trade made outside closeflow would leave it; a
    /// quantity of zero removes it. Without an entry price the holding keeps its own, or
    /// takes the symbol's price when it is new (read and written under one lock, so a fill
    /// in between cannot be lost).
    pub fn set_position(&self, account: &str, symbol: &str, qty: Quantity, avg_entry_price: Option<Quantity>) {
        let mut st = self.lock();
        let price = avg_entry_price
            .or_else(|| st.holdings.get(account, symbol).map(|h| h.avg_entry_price))
            .unwrap_or_else(|| self.scenarios.price(symbol));
        st.holdings.set(account, symbol, qty, price);
    }

    /// Moves a holding by an execution made outside closeflow (`signed` > 0 bought) at
    /// `price`, by the same rules as a fill; the quantity held after it, `None` (nothing
    /// changed) past the decimal range.
    pub fn adjust_position(&self, account: &str, symbol: &str, signed: Quantity, price: Quantity) -> Option<Quantity> {
        self.lock().holdings.apply_fill(account, symbol, signed, price)
    }

    /// Removes a holding; whether there was one.
    pub fn remove_position(&self, account: &str, symbol: &str) -> bool {
        self.lock().holdings.remove(account, symbol)
    }
}

impl State {
    /// Applies an execution to the order's account; the quantity held after it. A holding
    /// that would leave the decimal range stays where it was (a test's typo, not a trade).
    fn move_holding(&mut self, account: &str, symbol: &str, signed: Quantity, price: Quantity) -> Quantity {
        self.holdings
            .apply_fill(account, symbol, signed, price)
            .unwrap_or_else(|| self.holdings.get(account, symbol).map_or(Quantity::ZERO, |h| h.qty))
    }
}
