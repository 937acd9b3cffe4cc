//! Multi-leg orders over the engine, shared by the simulated and the paper broker: one
//! order of `qty` strategy units whose legs are engine orders of `ratio × qty` each, placed
//! all or none; the order's status and filled units are read from its legs (a unit is
//! filled when every leg filled its ratio of it).

use std::collections::HashMap;
use std::sync::Mutex;

use closeflow_domain::{OrderStatus, Quantity, Side, Timestamp};

use super::engine::{Engine, NewOrder, SimOrder, SubmitError};
use super::SimBehaviour;

/// One leg as asked for.
#[derive(Debug, Clone)]
pub struct LegRequest {
    pub symbol: String,
    pub ratio: Quantity,
    pub side: Side,
    pub position_intent: Option<String>,
    /// The engine order's client order id.
    pub client_order_id: String,
}

#[derive(Debug, Clone)]
pub struct MlegRequest {
    pub account: String,
    pub client_order_id: String,
    /// Which attempt of a close this is (`reject_first` refuses the first).
    pub attempt: u32,
    pub qty: Quantity,
    /// A limit order's net price; its legs rest where the scenario says `rest`.
    pub limit_price: Option<Quantity>,
    pub time_in_force: String,
    pub legs: Vec<LegRequest>,
}

/// A placed multi-leg order: its legs are the engine's orders.
#[derive(Debug, Clone)]
pub struct MlegOrder {
    pub id: String,
    pub client_order_id: String,
    pub qty: Quantity,
    pub limit_price: Option<Quantity>,
    pub time_in_force: String,
    /// Each leg's symbol, ratio and engine client order id.
    pub legs: Vec<(String, Quantity, String)>,
    pub created_at: Timestamp,
}

/// How a multi-leg order stands, read from its legs.
#[derive(Debug, Clone)]
pub struct MlegState {
    pub status: OrderStatus,
    /// Strategy units every leg has filled.
    pub filled_units: Quantity,
    pub legs: Vec<SimOrder>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlegError {
    #[error("client_order_id must be unique")]
    Duplicate,
    #[error("{0}")]
    Rejected(String),
}

/// The multi-leg orders a broker has taken, by client order id.
pub struct MlegBook {
    prefix: &'static str,
    orders: Mutex<HashMap<String, MlegOrder>>,
}

impl MlegBook {
    /// `prefix` starts the ids it names (`sim-mleg-1`, ...).
    pub fn new(prefix: &'static str) -> MlegBook {
        MlegBook {
            prefix,
            orders: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, client_order_id: &str) -> Option<MlegOrder> {
        self.lock().get(client_order_id).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<MlegOrder> {
        self.lock().values().find(|m| m.id == id).cloned()
    }

    /// Whether `client_order_id` names one of its orders' legs: the parent's.
    pub fn parent_of(&self, leg_client_order_id: &str) -> Option<MlegOrder> {
        self.lock()
            .values()
            .find(|m| m.legs.iter().any(|(_, _, cid)| cid == leg_client_order_id))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MlegOrder>> {
        self.orders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places every leg or none: a scenario refusing a leg refuses the whole order, and a
    /// leg the engine refuses withdraws the ones placed before it.
    pub fn place(&self, engine: &Engine, req: &MlegRequest) -> Result<MlegOrder, MlegError> {
        // Held across the placement: a second submission of the same name waits, then
        // finds it taken.
        let mut orders = self.lock();
        if orders.contains_key(&req.client_order_id) {
            return Err(MlegError::Duplicate);
        }
        let scenarios = engine.scenarios();
        for l in &req.legs {
            let refuses = match scenarios.behaviour(&l.symbol) {
                SimBehaviour::Reject => true,
                SimBehaviour::RejectFirst => req.attempt <= 1,
                _ => false,
            };
            if refuses {
                return Err(MlegError::Rejected(format!(
                    "insufficient qty available for leg {} of order {}",
                    l.symbol, req.client_order_id
                )));
            }
        }
        // A limit order fills only at its net limit or better, at the symbols' prices
        // (which the simulation holds still): otherwise every leg rests until canceled.
        let net_too_far = req
            .limit_price
            .is_some_and(|limit| net_price(scenarios, &req.legs).is_none_or(|net| net > limit));
        let mut placed: Vec<(String, Quantity, String)> = Vec::with_capacity(req.legs.len());
        for l in &req.legs {
            let qty = l
                .ratio
                .value()
                .checked_mul(req.qty.value())
                .map(Quantity::new)
                .ok_or_else(|| MlegError::Rejected("qty out of range".into()))?;
            let rests =
                req.limit_price.is_some() && (net_too_far || scenarios.behaviour(&l.symbol) == SimBehaviour::Rest);
            // The limit is the whole order's net price, not a leg's: legs carry none.
            let order = NewOrder {
                position_intent: l.position_intent.clone(),
                order_type: if req.limit_price.is_some() { "limit" } else { "market" }.into(),
                rests,
                time_in_force: req.time_in_force.clone(),
                ..NewOrder::market(&req.account, &l.client_order_id, &l.symbol, l.side, qty)
            };
            if let Err(e) = engine.submit(order) {
                for (_, _, placed_cid) in &placed {
                    if let Some(o) = engine.by_client_order_id(placed_cid) {
                        let _ = engine.cancel(&o.id);
                    }
                }
                return Err(match e {
                    SubmitError::DuplicateClientOrderId => MlegError::Duplicate,
                    e => MlegError::Rejected(e.to_string()),
                });
            }
            placed.push((l.symbol.clone(), l.ratio, l.client_order_id.clone()));
        }
        let m = MlegOrder {
            id: format!("{}mleg-{}", self.prefix, orders.len() + 1),
            client_order_id: req.client_order_id.clone(),
            qty: req.qty,
            limit_price: req.limit_price,
            time_in_force: req.time_in_force.clone(),
            legs: placed,
            created_at: engine.now(),
        };
        orders.insert(req.client_order_id.clone(), m.clone());
        Ok(m)
    }

    /// Cancels every leg still working; false when none was.
    pub fn cancel(&self, engine: &Engine, m: &MlegOrder) -> bool {
        let mut any = false;
        for (_, _, cid) in &m.legs {
            if let Some(o) = engine.by_client_order_id(cid) {
                any |= engine.cancel(&o.id).is_ok();
            }
        }
        any
    }
}

/// The net price of one unit of the legs at the symbols' prices: what buying costs less
/// what selling brings (positive a debit, negative a credit). `None` past the decimal range.
pub fn net_price(scenarios: &super::SimScenarios, legs: &[LegRequest]) -> Option<Quantity> {
    let mut net = rust_decimal::Decimal::ZERO;
    for l in legs {
        let leg = scenarios.price(&l.symbol).value().checked_mul(l.ratio.value())?;
        net = match l.side {
            Side::Buy => net.checked_add(leg)?,
            Side::Sell => net.checked_sub(leg)?,
        };
    }
    Some(Quantity::new(net.normalize()))
}

/// The order's status and filled units from its legs: filled when every leg filled;
/// ended (rejected if any leg was, else canceled) when every leg ended; partially filled
/// once any leg filled something; accepted otherwise.
pub fn state(engine: &Engine, m: &MlegOrder) -> Option<MlegState> {
    let mut legs = Vec::with_capacity(m.legs.len());
    let mut units: Option<Quantity> = None;
    let mut statuses = Vec::with_capacity(m.legs.len());
    let mut updated_at = m.created_at;
    for (_, ratio, cid) in &m.legs {
        let o = engine.by_client_order_id(cid)?;
        let status = o.status.to_closeflow(o.filled_qty);
        let done = Quantity::new((o.filled_qty.value() / ratio.value()).trunc());
        units = Some(units.map_or(done, |u| u.min(done)));
        statuses.push(status);
        updated_at = updated_at.max(o.updated_at);
        legs.push(o);
    }
    let status = if statuses.iter().all(|s| *s == OrderStatus::Filled) {
        OrderStatus::Filled
    } else if statuses.iter().all(|s| s.is_terminal()) {
        if statuses.contains(&OrderStatus::Rejected) {
            OrderStatus::Rejected
        } else {
            OrderStatus::Canceled
        }
    } else if statuses
        .iter()
        .any(|s| *s == OrderStatus::PartiallyFilled || *s == OrderStatus::Filled)
    {
        OrderStatus::PartiallyFilled
    } else {
        OrderStatus::Accepted
    };
    Some(MlegState {
        status,
        filled_units: units.unwrap_or(Quantity::ZERO).min(m.qty),
        legs,
        updated_at,
    })
}
