//! Closing a whole strategy (all legs of an iron condor, a spread) as one decision.
//!
//! A strategy close is atomic at acceptance: every leg moves to `closing` under one
//! strategy close, or none does. Each leg still gets its own close request (made by
//! [`decide_close`], so a leg closes exactly like a single close: submitter, fills,
//! reconciler, cancel and audit all work per leg), tagged with the strategy close's id and
//! mode. The strategy close itself is never stored apart: its view is derived from the
//! tagged close requests of its legs, so it cannot drift from them.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::close::{decide_close, CloseCommand, CloseDecision, CloseRejection, Fingerprint};
use crate::ids::{CloseRequestId, IdempotencyKey, PositionId, RoutingKey};
use crate::model::{AssetType, PositionAggregate, Side};
use crate::options::{OptionsError, OrderOptions, OrderType};
use crate::quantity::Quantity;
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::{Access, Timestamp};

/// DynamoDB's `TransactWriteItems` takes 100 items; one is kept free so a leg write and
/// an account count change can never push a strategy close over the limit.
pub const MAX_LEGS: usize = 99;

/// A strategy close id: a close request id of the strategy's first leg (by position id)
/// with different random bits, so `GET /strategy-closes/{id}` finds that leg with one
/// strongly consistent read and, from its `strategy_id`, the other legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StrategyCloseId(CloseRequestId);

impl StrategyCloseId {
    pub fn new(first_leg: &PositionId, random: [u8; 16]) -> Self {
        StrategyCloseId(CloseRequestId::new(first_leg, random))
    }

    pub fn parse(s: &str) -> Result<Self, crate::IdError> {
        CloseRequestId::parse(s).map(StrategyCloseId)
    }

    /// The strategy close a multi-leg order's client order id may name (whether one
    /// exists is the store's to say).
    pub fn from_close_request_id(id: CloseRequestId) -> Self {
        StrategyCloseId(id)
    }

    /// The routing key of the leg the id was minted for.
    pub fn routing_key(&self) -> RoutingKey {
        self.0.routing_key()
    }

    /// The id as a close request id: the multi-leg order of attempt `n` is named
    /// `{strategy_close_id}-{n}` (see [`crate::mleg`]), a client order id like any other.
    pub fn as_close_request_id(&self) -> CloseRequestId {
        self.0
    }
}

impl TryFrom<String> for StrategyCloseId {
    type Error = crate::IdError;
    fn try_from(s: String) -> Result<Self, crate::IdError> {
        StrategyCloseId::parse(&s)
    }
}

impl From<StrategyCloseId> for String {
    fn from(id: StrategyCloseId) -> String {
        id.to_string()
    }
}

impl fmt::Display for StrategyCloseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the legs reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyCloseMode {
    /// One multi-leg order per attempt (Alpaca `order_class: "mleg"`).
    Mleg,
    /// One closing order per leg, each retried on its own (seed 002).
    Legs,
}

impl StrategyCloseMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            StrategyCloseMode::Mleg => "mleg",
            StrategyCloseMode::Legs => "legs",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mleg" => Some(StrategyCloseMode::Mleg),
            "legs" => Some(StrategyCloseMode::Legs),
            _ => None,
        }
    }
}

/// What a leg's close request carries when it was made by a strategy close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StrategyCloseTag {
    pub id: StrategyCloseId,
    pub mode: StrategyCloseMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyCloseCommand {
    pub strategy_id: String,
    /// The same key is recorded on every leg: a replay finds it on any of them.
    pub idempotency_key: IdempotencyKey,
    /// Of the body wrapped as `{"strategy_close": body}`, so a single close's key on one leg
    /// never replays as a strategy close.
    pub fingerprint: Fingerprint,
    /// Random bits for the leg close request ids and the strategy close id (each id also
    /// carries its leg's routing key, so one draw gives distinct ids).
    pub random: [u8; 16],
    /// `None`: `mleg` for 2-4 option legs when the broker supports it, else `legs`.
    pub mode: Option<StrategyCloseMode>,
    /// Whether the broker adapter can place multi-leg orders; when it cannot, `mleg` is
    /// carried out as `legs` (and says so: the stored mode is what was done).
    pub broker_supports_mleg: bool,
    pub options: OrderOptions,
    /// In strategy units (see [`strategy_size`]); `None`: the whole strategy.
    pub qty: Option<Quantity>,
    pub reason: Option<String>,
    pub max_retries: u32,
    pub actor: String,
    pub access: Access,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyCloseRejection {
    /// No leg of the caller's accounts carries the strategy id.
    NotFound,
    IdempotencyKeyReused,
    /// A leg that cannot move to `closing` (named with its status): nothing was written.
    NotClosable {
        position_id: PositionId,
        status: PositionStatus,
    },
    InvalidOptions(OptionsError),
    TooManyLegs {
        legs: usize,
    },
    /// `mode: mleg` was asked for and the close cannot be one multi-leg order (why, for
    /// people): a trader who asked for the legs to trade together is never given legs that
    /// trade apart.
    MlegNotAvailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyCloseDecision {
    /// Every leg's aggregate after its close request was created, in the order given.
    Create {
        id: StrategyCloseId,
        mode: StrategyCloseMode,
        legs: Vec<PositionAggregate>,
    },
    Replay(StrategyCloseId),
    Reject(StrategyCloseRejection),
}

/// The mode a strategy close runs in: `mleg` by default when the broker takes multi-leg
/// orders and the strategy is 2 to 4 option legs, else `legs`. An explicit `mleg` that
/// cannot be is refused (why, for people), never run as `legs`.
pub fn resolve_mode(
    requested: Option<StrategyCloseMode>,
    legs: &[PositionAggregate],
    broker_supports_mleg: bool,
) -> Result<StrategyCloseMode, String> {
    let all_options = legs.iter().all(|l| l.position.asset_type == AssetType::Option);
    let mleg_shape = (2..=4).contains(&legs.len()) && all_options;
    match requested {
        Some(StrategyCloseMode::Legs) => Ok(StrategyCloseMode::Legs),
        Some(StrategyCloseMode::Mleg) if !broker_supports_mleg => {
            Err("the broker does not take multi-leg orders; close with mode `legs`".into())
        }
        Some(StrategyCloseMode::Mleg) if !all_options => {
            Err("a multi-leg order takes option legs only; close with mode `legs`".into())
        }
        Some(StrategyCloseMode::Mleg) if !mleg_shape => Err(format!(
            "a multi-leg order takes 2 to 4 legs, this strategy has {}; close with mode `legs`",
            legs.len()
        )),
        Some(StrategyCloseMode::Mleg) => Ok(StrategyCloseMode::Mleg),
        None if broker_supports_mleg && mleg_shape => Ok(StrategyCloseMode::Mleg),
        None => Ok(StrategyCloseMode::Legs),
    }
}

/// A strategy's size in strategy units: the greatest common divisor of its legs'
/// |quantities| (an iron condor of 2/-2/-2/2 is 2 units of 1:1:1:1). `None` when a leg's
/// quantity is not whole (then only the whole strategy can be closed).
pub fn strategy_size(legs: &[PositionAggregate]) -> Option<Decimal> {
    whole_gcd(legs.iter().map(|l| l.position.quantity.value()))
}

/// The greatest common divisor of whole |quantities|; `None` when one is not whole, or
/// all are zero. A multi-leg order's size and its legs' ratios come from it too.
pub fn whole_gcd(quantities: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    let mut g: u128 = 0;
    for q in quantities {
        let q = q.abs();
        if q.fract() != Decimal::ZERO {
            return None;
        }
        let mut a = u128::try_from(q).ok()?;
        let mut b = g;
        while b != 0 {
            (a, b) = (b, a % b);
        }
        g = a;
    }
    (g > 0).then(|| Decimal::from(g))
}

/// Each leg's close quantity for `qty` strategy units, keeping the legs' ratios.
fn leg_quantities(legs: &[PositionAggregate], qty: Option<Quantity>) -> Result<Vec<Option<Quantity>>, OptionsError> {
    let Some(q) = qty else {
        return Ok(vec![None; legs.len()]);
    };
    let size = strategy_size(legs).ok_or(OptionsError::InvalidQty)?;
    let units = q.value();
    if units <= Decimal::ZERO || units > size || units.fract() != Decimal::ZERO {
        return Err(OptionsError::InvalidQty);
    }
    legs.iter()
        .map(|l| {
            let ratio = l.position.quantity.abs().value() / size;
            ratio
                .checked_mul(units)
                .map(|v| Some(Quantity::new(v)))
                .ok_or(OptionsError::InvalidQty)
        })
        .collect()
}

/// Decides a strategy close over the legs' current aggregates (any order; legs of other
/// strategies or of accounts the caller does not hold are ignored). All legs move to
/// `closing` or nothing is decided: the caller writes the answer in one atomic commit.
pub fn decide_strategy_close(legs: &[PositionAggregate], cmd: &StrategyCloseCommand) -> StrategyCloseDecision {
    use StrategyCloseDecision as D;
    use StrategyCloseRejection as R;
    let mut legs: Vec<&PositionAggregate> = legs
        .iter()
        .filter(|l| l.position.strategy_id.as_deref() == Some(cmd.strategy_id.as_str()))
        .filter(|l| cmd.access.allows(&l.position.account_id))
        .collect();
    legs.sort_by(|a, b| a.position.id.cmp(&b.position.id));
    legs.dedup_by(|a, b| a.position.id == b.position.id);
    let Some(first) = legs.first() else {
        return D::Reject(R::NotFound);
    };
    // A replay is recognised before anything else: a strategy close that was accepted has
    // moved its legs to `closing`, and the same request must still answer 200.
    for l in &legs {
        if let Some(seen) = l.idempotency.get(&cmd.idempotency_key) {
            if seen.fingerprint != cmd.fingerprint {
                return D::Reject(R::IdempotencyKeyReused);
            }
            let tag = l
                .close_request(&seen.close_request_id)
                .and_then(|(cr, _)| cr.strategy_close);
            return match tag {
                Some(tag) => D::Replay(tag.id),
                // The key was used by a single close of this leg with the same body
                // fingerprint: impossible with the wrapped fingerprint, so refuse.
                None => D::Reject(R::IdempotencyKeyReused),
            };
        }
    }
    if legs.len() > MAX_LEGS {
        return D::Reject(R::TooManyLegs { legs: legs.len() });
    }
    for l in &legs {
        let p = &l.position;
        if p.status != PositionStatus::Open || p.quantity.is_zero() {
            return D::Reject(R::NotClosable {
                position_id: p.id.clone(),
                status: p.status,
            });
        }
    }
    let owned: Vec<PositionAggregate> = legs.iter().map(|l| (*l).clone()).collect();
    let mode = match resolve_mode(cmd.mode, &owned, cmd.broker_supports_mleg) {
        Ok(m) => m,
        Err(why) => return D::Reject(R::MlegNotAvailable(why)),
    };
    // A limit price of a strategy close is a net price: only a multi-leg order has one.
    if mode == StrategyCloseMode::Legs && cmd.options.order_type == OrderType::Limit {
        return D::Reject(R::InvalidOptions(OptionsError::InvalidLimitPrice));
    }
    let quantities = match leg_quantities(&owned, cmd.qty) {
        Ok(q) => q,
        Err(e) => return D::Reject(R::InvalidOptions(e)),
    };
    let id = StrategyCloseId::new(&first.position.id, strategy_random(cmd.random));
    let tag = StrategyCloseTag { id, mode };
    let mut next = Vec::with_capacity(owned.len());
    for (leg, qty) in owned.iter().zip(quantities) {
        let single = CloseCommand {
            position_id: leg.position.id.clone(),
            idempotency_key: cmd.idempotency_key.clone(),
            fingerprint: cmd.fingerprint.clone(),
            new_id: CloseRequestId::new(&leg.position.id, cmd.random),
            max_retries: cmd.max_retries,
            reason: cmd.reason.clone(),
            cancel_open_orders: false,
            actor: cmd.actor.clone(),
            qty,
            options: cmd.options,
            access: cmd.access.clone(),
            now: cmd.now,
        };
        match decide_close(Some(leg), &single) {
            CloseDecision::Create(mut agg) => {
                if let Some(cr) = agg.latest_close_request.as_mut() {
                    cr.strategy_close = Some(tag);
                }
                next.push(*agg);
            }
            CloseDecision::Reject(CloseRejection::InvalidOptions(e)) => return D::Reject(R::InvalidOptions(e)),
            // Checked above; anything else means the leg cannot close now.
            _ => {
                return D::Reject(R::NotClosable {
                    position_id: leg.position.id.clone(),
                    status: leg.position.status,
                })
            }
        }
    }
    D::Create { id, mode, legs: next }
}

/// The strategy close id's random bits differ from the leg ids' (which share `random`),
/// so the id never equals its first leg's close request id.
fn strategy_random(mut random: [u8; 16]) -> [u8; 16] {
    for b in random[8..].iter_mut() {
        *b = !*b;
    }
    random
}

/// The outcome of a strategy close, derived from its legs (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyCloseStatus {
    /// A leg is still working (pending, submitted, or waiting for an automatic retry).
    Pending,
    Success,
    /// Some legs closed, some failed: a hedge may be missing.
    Partial,
    Error,
}

impl StrategyCloseStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            StrategyCloseStatus::Pending => "pending",
            StrategyCloseStatus::Success => "success",
            StrategyCloseStatus::Partial => "partial",
            StrategyCloseStatus::Error => "error",
        }
    }
}

/// One leg of a strategy close as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyCloseLeg {
    pub position_id: PositionId,
    pub close_request_id: CloseRequestId,
    pub symbol: String,
    pub side: Side,
    pub qty: Quantity,
    pub status: CloseRequestStatus,
    pub filled_qty: Quantity,
    /// The fill-weighted average over the leg's orders; `None` before any fill.
    pub filled_avg_price: Option<crate::Price>,
    pub error_message: Option<String>,
    /// What the leg's close realized so far.
    pub realized_pnl: crate::pnl::Pnl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyCloseView {
    pub id: StrategyCloseId,
    pub strategy_id: String,
    pub mode: StrategyCloseMode,
    pub status: StrategyCloseStatus,
    pub created_at: Timestamp,
    pub legs: Vec<StrategyCloseLeg>,
}

impl StrategyCloseView {
    pub fn closed_legs(&self) -> usize {
        self.legs
            .iter()
            .filter(|l| l.status == CloseRequestStatus::Completed)
            .count()
    }

    /// What all legs realized; unknown when any leg's is.
    pub fn total_realized_pnl(&self) -> crate::pnl::Pnl {
        self.legs
            .iter()
            .try_fold(Decimal::ZERO, |sum, l| crate::pnl::sum(Ok(sum), l.realized_pnl))
    }
}

/// The status of a strategy close whose legs' close requests are in these statuses. It is
/// derived, never stored; as the legs move, it moves only along
/// [`crate::transition::STRATEGY_CLOSE_MOVES`].
pub fn strategy_close_status(legs: &[CloseRequestStatus]) -> StrategyCloseStatus {
    if legs.iter().any(|s| !s.is_terminal()) {
        StrategyCloseStatus::Pending
    } else if legs.iter().all(|s| *s == CloseRequestStatus::Completed) {
        StrategyCloseStatus::Success
    } else if legs.contains(&CloseRequestStatus::Completed) {
        StrategyCloseStatus::Partial
    } else {
        StrategyCloseStatus::Error
    }
}

/// The strategy close `id` as its legs show it (`None`: no leg carries it). Legs may come
/// in any order and include positions the close did not touch.
pub fn strategy_close_view(id: &StrategyCloseId, legs: &[PositionAggregate]) -> Option<StrategyCloseView> {
    let mut found: Vec<(StrategyCloseLeg, StrategyCloseMode, Timestamp, String)> = Vec::new();
    for agg in legs {
        let latest = agg.latest_close_request.iter().map(|c| (c, agg.orders.as_slice()));
        let past = agg.history.iter().map(|p| (&p.close_request, p.orders.as_slice()));
        for (cr, orders) in latest.chain(past) {
            let Some(tag) = cr.strategy_close.filter(|t| t.id == *id) else {
                continue;
            };
            let filled_qty = crate::total_filled(orders).unwrap_or(cr.filled_qty);
            found.push((
                StrategyCloseLeg {
                    position_id: agg.position.id.clone(),
                    close_request_id: cr.id,
                    symbol: agg.position.symbol.clone(),
                    side: agg.position.close_side(),
                    qty: cr.target_qty,
                    status: cr.status,
                    filled_qty,
                    filled_avg_price: average_price(orders),
                    error_message: cr.failure_reason.clone(),
                    realized_pnl: crate::pnl::close_request_pnl(&agg.position, orders),
                },
                tag.mode,
                cr.created_at,
                agg.position.strategy_id.clone().unwrap_or_default(),
            ));
        }
    }
    found.sort_by(|a, b| a.0.position_id.cmp(&b.0.position_id));
    let (_, mode, created_at, strategy_id) = found.first().cloned()?;
    let legs: Vec<StrategyCloseLeg> = found.into_iter().map(|f| f.0).collect();
    let statuses: Vec<CloseRequestStatus> = legs.iter().map(|l| l.status).collect();
    Some(StrategyCloseView {
        id: *id,
        strategy_id,
        mode,
        status: strategy_close_status(&statuses),
        created_at,
        legs,
    })
}

/// The strategy close still working on these legs (a leg's latest close request carries
/// it and its derived status is `pending`), if any.
pub fn active_strategy_close(legs: &[PositionAggregate]) -> Option<StrategyCloseId> {
    legs.iter()
        .filter_map(|l| l.latest_close_request.as_ref().and_then(|c| c.strategy_close))
        .map(|t| t.id)
        .find(|id| strategy_close_view(id, legs).is_some_and(|v| v.status == StrategyCloseStatus::Pending))
}

/// Fill-weighted average price of the orders that filled (exact decimals; `None` when
/// nothing filled or a price is missing).
fn average_price(orders: &[crate::order::Order]) -> Option<crate::Price> {
    let mut qty = Decimal::ZERO;
    let mut notional = Decimal::ZERO;
    for o in orders.iter().filter(|o| !o.filled_qty.is_zero()) {
        let price = o.filled_avg_price?.value();
        notional = notional.checked_add(price.checked_mul(o.filled_qty.value())?)?;
        qty = qty.checked_add(o.filled_qty.value())?;
    }
    if qty.is_zero() {
        return None;
    }
    crate::Price::new(Quantity::new(notional.checked_div(qty)?.normalize()))
}

/// A single close of `closing` leaves a short leg of its strategy naked: it is a long
/// (hedging) leg and another leg of the same strategy is short and still open. `legs` are
/// the strategy's legs (`closing` among them or not).
pub fn leaves_short_leg_naked(closing: &crate::model::Position, legs: &[crate::model::Position]) -> bool {
    let Some(strategy) = closing.strategy_id.as_deref() else {
        return false;
    };
    !closing.quantity.is_negative()
        && legs.iter().any(|o| {
            o.id != closing.id
                && o.strategy_id.as_deref() == Some(strategy)
                && o.quantity.is_negative()
                && o.status == PositionStatus::Open
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{aggregate, qty, t0};
    use crate::AssetType;

    fn leg(id: &str, q: &str, asset: AssetType) -> PositionAggregate {
        let mut a = aggregate(id, q, PositionStatus::Open);
        a.position.strategy_id = Some("ic-1".into());
        a.position.asset_type = asset;
        a.position.symbol = format!("SYM{id}");
        a
    }

    fn condor() -> Vec<PositionAggregate> {
        vec![
            leg("c-long", "2", AssetType::Option),
            leg("c-short", "-2", AssetType::Option),
            leg("p-short", "-2", AssetType::Option),
            leg("p-long", "2", AssetType::Option),
        ]
    }

    fn cmd(key: &str) -> StrategyCloseCommand {
        StrategyCloseCommand {
            strategy_id: "ic-1".into(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({"strategy_close": {}})),
            random: [7; 16],
            mode: None,
            broker_supports_mleg: false,
            options: OrderOptions::MARKET,
            qty: None,
            reason: None,
            max_retries: 3,
            actor: "tester".into(),
            access: Access::All,
            now: t0(),
        }
    }

    fn created(d: StrategyCloseDecision) -> (StrategyCloseId, StrategyCloseMode, Vec<PositionAggregate>) {
        match d {
            StrategyCloseDecision::Create { id, mode, legs } => (id, mode, legs),
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn every_leg_moves_to_closing_under_one_strategy_close() {
        let (id, mode, legs) = created(decide_strategy_close(&condor(), &cmd("k1")));
        assert_eq!(mode, StrategyCloseMode::Legs);
        assert_eq!(legs.len(), 4);
        let mut ids = std::collections::BTreeSet::new();
        for l in &legs {
            let cr = l.latest_close_request.as_ref().unwrap();
            assert_eq!(l.position.status, PositionStatus::Closing);
            assert_eq!(cr.strategy_close, Some(StrategyCloseTag { id, mode }));
            assert_eq!(cr.target_qty, qty("2"));
            assert!(crate::check_invariants(&l.position, Some(cr)).is_empty());
            ids.insert(cr.id);
        }
        assert_eq!(ids.len(), 4, "each leg has its own close request");
        assert!(!ids.contains(&id.0), "the strategy close id is none of the legs'");
        assert_eq!(id.routing_key(), RoutingKey::of(&PositionId::parse("c-long").unwrap()));
        let view = strategy_close_view(&id, &legs).unwrap();
        assert_eq!(view.status, StrategyCloseStatus::Pending);
        assert_eq!(active_strategy_close(&legs), Some(id));
        assert_eq!(active_strategy_close(&condor()), None);
        assert_eq!((view.legs.len(), view.closed_legs()), (4, 0));
    }

    #[test]
    fn one_leg_not_open_refuses_the_whole_close_naming_it() {
        let mut legs = condor();
        legs[2].position.status = PositionStatus::Closed;
        assert_eq!(
            decide_strategy_close(&legs, &cmd("k1")),
            StrategyCloseDecision::Reject(StrategyCloseRejection::NotClosable {
                position_id: PositionId::parse("p-short").unwrap(),
                status: PositionStatus::Closed,
            })
        );
    }

    #[test]
    fn unknown_other_accounts_and_too_many_legs_are_refused() {
        assert_eq!(
            decide_strategy_close(&[], &cmd("k")),
            StrategyCloseDecision::Reject(StrategyCloseRejection::NotFound)
        );
        let mut c = cmd("k");
        c.access = Access::Accounts([crate::AccountId::parse("acct-2").unwrap()].into());
        assert_eq!(
            decide_strategy_close(&condor(), &c),
            StrategyCloseDecision::Reject(StrategyCloseRejection::NotFound)
        );
        let many: Vec<_> = (0..100)
            .map(|i| leg(&format!("l{i}"), "1", AssetType::Equity))
            .collect();
        assert_eq!(
            decide_strategy_close(&many, &cmd("k")),
            StrategyCloseDecision::Reject(StrategyCloseRejection::TooManyLegs { legs: 100 })
        );
        let ok: Vec<_> = many.into_iter().take(MAX_LEGS).collect();
        assert_eq!(created(decide_strategy_close(&ok, &cmd("k"))).2.len(), MAX_LEGS);
    }

    #[test]
    fn the_same_key_replays_and_a_different_body_is_refused() {
        let (id, _, legs) = created(decide_strategy_close(&condor(), &cmd("k1")));
        assert_eq!(
            decide_strategy_close(&legs, &cmd("k1")),
            StrategyCloseDecision::Replay(id)
        );
        let mut other = cmd("k1");
        other.fingerprint = Fingerprint::of_body(&serde_json::json!({"strategy_close": {"qty": "1"}}));
        assert_eq!(
            decide_strategy_close(&legs, &other),
            StrategyCloseDecision::Reject(StrategyCloseRejection::IdempotencyKeyReused)
        );
        // A racing second key finds the legs closing: refused, nothing decided.
        assert!(matches!(
            decide_strategy_close(&legs, &cmd("k2")),
            StrategyCloseDecision::Reject(StrategyCloseRejection::NotClosable {
                status: PositionStatus::Closing,
                ..
            })
        ));
    }

    #[test]
    fn qty_in_strategy_units_keeps_the_legs_ratios() {
        let mut legs = condor();
        legs[0].position.quantity = qty("4");
        legs[3].position.quantity = qty("4");
        assert_eq!(strategy_size(&legs), Some(Decimal::from(2)));
        let mut c = cmd("k");
        c.qty = Some(qty("1"));
        let (_, _, next) = created(decide_strategy_close(&legs, &c));
        let targets: Vec<_> = next
            .iter()
            .map(|l| {
                (
                    l.position.id.to_string(),
                    l.latest_close_request.as_ref().unwrap().target_qty,
                )
            })
            .collect();
        assert!(targets.contains(&("c-long".into(), qty("2"))));
        assert!(targets.contains(&("c-short".into(), qty("1"))));
        for bad in ["0", "3", "1.5", "-1"] {
            c.qty = Some(qty(bad));
            assert_eq!(
                decide_strategy_close(&legs, &c),
                StrategyCloseDecision::Reject(StrategyCloseRejection::InvalidOptions(OptionsError::InvalidQty)),
                "{bad}"
            );
        }
    }

    #[test]
    fn mleg_is_the_default_for_two_to_four_option_legs_when_the_broker_supports_it() {
        let legs = condor();
        let (mleg, legs_mode) = (Ok(StrategyCloseMode::Mleg), Ok(StrategyCloseMode::Legs));
        assert_eq!(resolve_mode(None, &legs, true), mleg);
        assert_eq!(resolve_mode(None, &legs, false), legs_mode);
        assert_eq!(resolve_mode(Some(StrategyCloseMode::Legs), &legs, true), legs_mode);
        assert_eq!(resolve_mode(None, &legs[..1], true), legs_mode);
        let mut equity = legs.clone();
        equity[0].position.asset_type = AssetType::Equity;
        assert_eq!(resolve_mode(None, &equity, true), legs_mode);
        // Asked for by name and impossible: refused, saying why, never run as `legs`.
        let why =
            |legs: &[PositionAggregate], broker| resolve_mode(Some(StrategyCloseMode::Mleg), legs, broker).unwrap_err();
        assert!(why(&legs, false).contains("broker does not take"));
        assert!(why(&equity, true).contains("option legs only"));
        assert!(why(&legs[..1], true).contains("2 to 4 legs, this strategy has 1"));
        let mut c = cmd("k");
        c.mode = Some(StrategyCloseMode::Mleg);
        c.broker_supports_mleg = false;
        assert!(matches!(
            decide_strategy_close(&legs, &c),
            StrategyCloseDecision::Reject(StrategyCloseRejection::MlegNotAvailable(_))
        ));
    }

    #[test]
    fn a_net_limit_price_needs_a_multi_leg_order() {
        let mut c = cmd("k");
        c.options = OrderOptions::limit(crate::Price::new(qty("1.2")).unwrap());
        assert_eq!(
            decide_strategy_close(&condor(), &c),
            StrategyCloseDecision::Reject(StrategyCloseRejection::InvalidOptions(OptionsError::InvalidLimitPrice))
        );
    }

    #[test]
    fn a_strategy_closes_status_follows_seed_002() {
        use CloseRequestStatus as C;
        use StrategyCloseStatus as S;
        let cases: [(&[C], S); 5] = [
            (&[C::Completed, C::Pending], S::Pending),
            (&[C::Completed, C::Retryable], S::Pending),
            (&[C::Completed, C::Completed], S::Success),
            (&[C::Completed, C::Failed], S::Partial),
            (&[C::Failed, C::Failed], S::Error),
        ];
        for (legs, want) in cases {
            assert_eq!(strategy_close_status(legs), want, "{legs:?}");
        }
    }

    #[test]
    fn closing_a_long_leg_alone_warns_when_a_short_leg_stays_open() {
        let mut legs: Vec<_> = condor().into_iter().map(|l| l.position).collect();
        assert!(leaves_short_leg_naked(&legs[0], &legs));
        assert!(
            !leaves_short_leg_naked(&legs[1], &legs),
            "closing a short leg leaves no short naked"
        );
        legs[1].status = PositionStatus::Closed;
        legs[2].status = PositionStatus::Closed;
        assert!(!leaves_short_leg_naked(&legs[0], &legs));
    }
}
