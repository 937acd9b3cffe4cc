//! The multi-leg order of an `mleg` strategy close: one broker order per attempt that
//! closes every leg together (Alpaca `order_class: "mleg"`).
//!
//! **Identity.** The order of attempt `n` is named `{strategy_close_id}-{n}`: derived from
//! the strategy close, not drawn, so a redelivered message or a restarted submitter asks
//! the broker for the same id and the broker refuses a second order for the attempt. The
//! name parses as a [`ClientOrderId`] whose close request id routes to the strategy's
//! first leg, like every other order id.
//!
//! **Fills per leg.** Each leg's close request keeps its own order record for the attempt,
//! named `{leg close request id}-{n}` exactly as in `legs` mode and sized to the leg's
//! share. A broker report of the multi-leg order (its child `legs` orders carry their own
//! cumulative `filled_qty` and `filled_avg_price`) is split by [`leg_updates`] into one
//! ordinary [`OrderUpdate`] per leg, so the existing merge rules (status only moves up,
//! cumulative fills only grow, over-fills refused) make duplicated and out-of-order
//! reports converge, and a leg's close settles exactly as a single close does.

use std::fmt;

use rust_decimal::Decimal;

use crate::ids::{AccountId, PositionId};
use crate::model::{AssetType, PositionAggregate, Side};
use crate::options::OrderOptions;
use crate::order::{ClientOrderId, OrderStatus, OrderUpdate};
use crate::quantity::Quantity;
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::strategy_close::{whole_gcd, StrategyCloseId, StrategyCloseMode};
use crate::Timestamp;

/// What a leg does to its position. A closing intent keeps the broker from ever opening
/// the opposite position with a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PositionIntent {
    BuyToClose,
    SellToClose,
}

impl PositionIntent {
    /// The intent of the order that closes with `side`.
    pub fn closing(side: Side) -> Self {
        match side {
            Side::Buy => PositionIntent::BuyToClose,
            Side::Sell => PositionIntent::SellToClose,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PositionIntent::BuyToClose => "buy_to_close",
            PositionIntent::SellToClose => "sell_to_close",
        }
    }
}

/// One leg of a multi-leg order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlegLeg {
    pub position_id: PositionId,
    /// The leg's own order record for the attempt (never sent to the broker by itself).
    pub client_order_id: ClientOrderId,
    pub symbol: String,
    pub asset_type: AssetType,
    pub side: Side,
    pub position_intent: PositionIntent,
    /// Contracts of this leg per unit of the order's `qty` (a whole number).
    pub ratio_qty: Quantity,
    /// `ratio_qty × qty`: the leg's share of the order.
    pub qty: Quantity,
}

/// The multi-leg order to place for one attempt of a strategy close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlegIntent {
    /// `{strategy_close_id}-{attempt}` (see the module notes).
    pub client_order_id: ClientOrderId,
    pub account_id: AccountId,
    /// In strategy units: every leg trades `ratio_qty × qty`.
    pub qty: Quantity,
    /// Ordered by position id, as the strategy close lists them.
    pub legs: Vec<MlegLeg>,
    /// Market or limit; a limit price is the net price of the whole order.
    pub options: OrderOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlegError {
    /// Alpaca takes 2 to 4 legs in one multi-leg order.
    #[error("a multi-leg order takes 2 to 4 legs, this one has {0}")]
    LegCount(usize),
    #[error("the legs belong to more than one account")]
    MixedAccounts,
    #[error("the legs' quantities are not whole contracts")]
    NotWhole,
    /// Some legs wait for the attempt and others do not, or their options differ: the
    /// legs no longer move together, which needs a human rather than a guess.
    #[error("the legs are out of step: {0}")]
    OutOfStep(String),
    /// A leg is still at an earlier attempt that ended in a retry (`close_retryable`): the
    /// reconciler moves it on shortly, so the order waits for it rather than failing
    /// every leg.
    #[error("leg {0} has not reached this attempt yet")]
    LegBehind(String),
    /// The broker reported a leg the order does not have.
    #[error("the broker reported leg {0}, which the order does not have")]
    UnknownLeg(String),
}

/// The multi-leg order name of attempt `attempt` of strategy close `id`.
pub fn mleg_client_order_id(id: &StrategyCloseId, attempt: u32) -> ClientOrderId {
    ClientOrderId::new(id.as_close_request_id(), attempt)
}

/// The legs of attempt `attempt` of `id`: the tagged ones (see [`tagged`]) but a leg whose
/// close completed before this attempt (it has nothing left to close and no order in it).
fn attempt_legs<'a>(id: &StrategyCloseId, attempt: u32, legs: &'a [PositionAggregate]) -> Vec<&'a PositionAggregate> {
    tagged(id, legs)
        .into_iter()
        .filter(|l| {
            let done = l
                .latest_close_request
                .as_ref()
                .is_some_and(|cr| cr.status == CloseRequestStatus::Completed);
            !done || l.orders.iter().any(|o| o.attempt() == attempt)
        })
        .collect()
}

/// The legs of `id` among `legs` (latest close request tagged with it, in `mleg` mode),
/// ordered by position id.
fn tagged<'a>(id: &StrategyCloseId, legs: &'a [PositionAggregate]) -> Vec<&'a PositionAggregate> {
    let mut found: Vec<&PositionAggregate> = legs
        .iter()
        .filter(|l| {
            l.latest_close_request
                .as_ref()
                .and_then(|c| c.strategy_close)
                .is_some_and(|t| t.id == *id && t.mode == StrategyCloseMode::Mleg)
        })
        .collect();
    found.sort_by(|a, b| a.position.id.cmp(&b.position.id));
    found.dedup_by(|a, b| a.position.id == b.position.id);
    found
}

/// Builds the legs from each leg's share (`share_of`), with the order's size in strategy
/// units: the greatest common divisor of the shares, which keeps the legs' ratios.
fn with_ratios(
    legs: &[&PositionAggregate],
    attempt: u32,
    share_of: impl Fn(&PositionAggregate) -> Quantity,
) -> Result<(Quantity, Vec<MlegLeg>), MlegError> {
    if !(2..=4).contains(&legs.len()) {
        return Err(MlegError::LegCount(legs.len()));
    }
    let shares: Vec<Quantity> = legs.iter().map(|l| share_of(l)).collect();
    let units = whole_gcd(shares.iter().map(|q| q.value())).ok_or(MlegError::NotWhole)?;
    let out = legs
        .iter()
        .zip(&shares)
        .map(|(l, share)| {
            let cr = l
                .latest_close_request
                .as_ref()
                .expect("tagged legs have a close request");
            let side = l.position.close_side();
            MlegLeg {
                position_id: l.position.id.clone(),
                client_order_id: ClientOrderId::new(cr.id, attempt),
                symbol: l.position.symbol.clone(),
                asset_type: l.position.asset_type,
                side,
                position_intent: PositionIntent::closing(side),
                ratio_qty: Quantity::new((share.value() / units).normalize()),
                qty: *share,
            }
        })
        .collect();
    Ok((Quantity::new(units), out))
}

/// A leg's share of the attempt's order: its order record's quantity once recorded, else
/// what its close request still has to close.
fn share(l: &PositionAggregate, attempt: u32) -> Quantity {
    let Some(cr) = l.latest_close_request.as_ref() else {
        return Quantity::ZERO;
    };
    let cid = ClientOrderId::new(cr.id, attempt);
    l.orders
        .iter()
        .find(|o| o.client_order_id == cid)
        .map_or(cr.remaining_qty(), |o| o.qty)
}

/// The multi-leg order to place for `attempt` of strategy close `id`, given its legs'
/// current aggregates (others are ignored). `Ok(None)`: no leg waits for this attempt any
/// more (a redelivered or outdated message does nothing). A leg that already recorded the
/// attempt's order (a submitter stopped half way through recording) is in step: the same
/// order is named again, which the broker refuses as a duplicate and answers by lookup.
/// Each leg trades its share (see [`share`]).
pub fn mleg_intent(
    id: &StrategyCloseId,
    attempt: u32,
    legs: &[PositionAggregate],
) -> Result<Option<MlegIntent>, MlegError> {
    let legs = attempt_legs(id, attempt, legs);
    let waits = |l: &PositionAggregate| {
        l.latest_close_request.as_ref().is_some_and(|cr| {
            cr.status == CloseRequestStatus::Pending
                && cr.current_attempt() == attempt
                && !l.orders.iter().any(|o| o.attempt() == attempt)
                && l.position.status == PositionStatus::Closing
        })
    };
    let recorded = |l: &PositionAggregate| l.orders.iter().any(|o| o.attempt() == attempt);
    if !legs.iter().any(|l| waits(l)) {
        return Ok(None);
    }
    // Legs retried one after another (their orders ended at different times): one still
    // to be retried is waited for, not failed.
    // (Also one whose earlier attempt's end has not reached closeflow yet.)
    let behind = |l: &PositionAggregate| {
        matches!(
            l.position.status,
            PositionStatus::CloseRetryable | PositionStatus::Closing
        ) && l.latest_close_request.as_ref().is_some_and(|cr| {
            matches!(
                cr.status,
                CloseRequestStatus::Retryable | CloseRequestStatus::Pending | CloseRequestStatus::Submitted
            ) && cr.current_attempt() < attempt
        })
    };
    if let Some(l) = legs.iter().find(|l| behind(l)) {
        return Err(MlegError::LegBehind(l.position.id.to_string()));
    }
    if let Some(l) = legs.iter().find(|l| !waits(l) && !recorded(l)) {
        return Err(MlegError::OutOfStep(format!(
            "leg {} does not wait for attempt {attempt}",
            l.position.id
        )));
    }
    let first = legs[0];
    if legs.iter().any(|l| l.position.account_id != first.position.account_id) {
        return Err(MlegError::MixedAccounts);
    }
    let options_of = |l: &PositionAggregate| l.latest_close_request.as_ref().map(|c| c.options);
    let options = options_of(first).expect("tagged legs have a close request");
    if legs.iter().any(|l| options_of(l) != Some(options)) {
        return Err(MlegError::OutOfStep("the legs' order options differ".into()));
    }
    let (qty, legs) = with_ratios(&legs, attempt, |l| share(l, attempt))?;
    Ok(Some(MlegIntent {
        client_order_id: mleg_client_order_id(id, attempt),
        account_id: first.position.account_id.clone(),
        qty,
        legs,
        options,
    }))
}

/// The broker's report of one leg of a multi-leg order (Alpaca's child `legs` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlegLegReport {
    pub symbol: String,
    pub broker_order_id: Option<String>,
    /// `None`: the leg's own status was not reported (the order's status then stands).
    pub status: Option<OrderStatus>,
    /// Cumulative, in contracts of this leg.
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<crate::Price>,
}

/// One broker report of a multi-leg order (submit answer, lookup or trade update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlegReport {
    /// `{strategy_close_id}-{attempt}`.
    pub client_order_id: ClientOrderId,
    pub broker_order_id: Option<String>,
    pub status: OrderStatus,
    /// Cumulative, in strategy units.
    pub filled_qty: Quantity,
    /// As reported; a leg the report leaves out is read from `filled_qty` and its ratio.
    pub legs: Vec<MlegLegReport>,
    pub seq: Option<u64>,
    pub execution_id: Option<String>,
    pub updated_at: Timestamp,
}

/// OCC option symbols may be padded with spaces ("AAPL  240119C00150000"); the broker's
/// are not.
fn same_symbol(a: &str, b: &str) -> bool {
    a.chars()
        .filter(|c| !c.is_whitespace())
        .eq(b.chars().filter(|c| !c.is_whitespace()))
}

/// Splits a report of the multi-leg order of strategy close `id` into one order update per
/// leg, for that leg's own order record (see the module notes). Each leg's share is taken
/// as [`mleg_intent`] takes it, so the split agrees with the order placed.
pub fn leg_updates(
    id: &StrategyCloseId,
    legs: &[PositionAggregate],
    report: &MlegReport,
) -> Result<Vec<(PositionId, OrderUpdate)>, MlegError> {
    let attempt = report.client_order_id.attempt;
    let tagged = attempt_legs(id, attempt, legs);
    let (_, legs) = with_ratios(&tagged, attempt, |l| share(l, attempt))?;
    if let Some(stray) = report
        .legs
        .iter()
        .find(|r| !legs.iter().any(|l| same_symbol(&l.symbol, &r.symbol)))
    {
        return Err(MlegError::UnknownLeg(stray.symbol.clone()));
    }
    legs.iter()
        .map(|leg| {
            let reported = report.legs.iter().find(|r| same_symbol(&leg.symbol, &r.symbol));
            let (status, filled_qty, filled_avg_price, broker_order_id) = match reported {
                Some(r) => (
                    r.status.unwrap_or(report.status),
                    r.filled_qty,
                    r.filled_avg_price,
                    r.broker_order_id.clone().or_else(|| report.broker_order_id.clone()),
                ),
                None => (
                    report.status,
                    units_to_leg(report.filled_qty, leg.ratio_qty)?,
                    None,
                    report.broker_order_id.clone(),
                ),
            };
            Ok((
                leg.position_id.clone(),
                OrderUpdate {
                    client_order_id: leg.client_order_id.clone(),
                    broker_order_id,
                    status,
                    filled_qty,
                    filled_avg_price,
                    seq: report.seq,
                    // Execution ids name one execution of one leg; suffixed by the leg so
                    // the same execution is recognised per leg and never across legs.
                    execution_id: report.execution_id.as_ref().map(|e| format!("{e}/{}", leg.symbol)),
                    updated_at: report.updated_at,
                },
            ))
        })
        .collect()
}

fn units_to_leg(units: Quantity, ratio: Quantity) -> Result<Quantity, MlegError> {
    units
        .value()
        .checked_mul(ratio.value())
        .map(|v: Decimal| Quantity::new(v.normalize()))
        .ok_or(MlegError::NotWhole)
}

impl fmt::Display for MlegIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mleg {} x{}:", self.client_order_id, self.qty)?;
        for l in &self.legs {
            write!(f, " {} {}x{}", l.position_intent.as_str(), l.ratio_qty, l.symbol)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::Fingerprint;
    use crate::ids::IdempotencyKey;
    use crate::lifecycle::{apply_order_update, Applied};
    use crate::strategy_close::{decide_strategy_close, StrategyCloseCommand, StrategyCloseDecision};
    use crate::testing::{aggregate, qty, t0};
    use crate::{check_invariants, Access, OrderType, Price};

    fn leg(id: &str, q: &str, symbol: &str) -> PositionAggregate {
        let mut a = aggregate(id, q, PositionStatus::Open);
        a.position.strategy_id = Some("ic-1".into());
        a.position.asset_type = AssetType::Option;
        a.position.symbol = symbol.into();
        a
    }

    /// A 4/-2/-2/4 condor: 2 units of 2:1:1:2.
    fn condor() -> Vec<PositionAggregate> {
        vec![
            leg("c-long", "4", "SPY260116C00600000"),
            leg("c-short", "-2", "SPY260116C00590000"),
            leg("p-long", "4", "SPY260116P00530000"),
            leg("p-short", "-2", "SPY260116P00540000"),
        ]
    }

    fn accepted(legs: &[PositionAggregate], options: OrderOptions) -> (StrategyCloseId, Vec<PositionAggregate>) {
        let cmd = StrategyCloseCommand {
            strategy_id: "ic-1".into(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({"strategy_close": {}})),
            random: [3; 16],
            mode: Some(StrategyCloseMode::Mleg),
            broker_supports_mleg: true,
            options,
            qty: None,
            reason: None,
            max_retries: 3,
            actor: "tester".into(),
            access: Access::All,
            now: t0(),
        };
        match decide_strategy_close(legs, &cmd) {
            StrategyCloseDecision::Create { id, mode, legs } => {
                assert_eq!(mode, StrategyCloseMode::Mleg);
                (id, legs)
            }
            other => panic!("expected Create, got {other:?}"),
        }
    }

    fn intent(id: &StrategyCloseId, legs: &[PositionAggregate]) -> MlegIntent {
        intent_at(id, legs, 1)
    }

    fn intent_at(id: &StrategyCloseId, legs: &[PositionAggregate], attempt: u32) -> MlegIntent {
        mleg_intent(id, attempt, legs).unwrap().expect("every leg waits")
    }

    #[test]
    fn one_order_names_the_attempt_and_keeps_the_legs_ratios() {
        let (id, legs) = accepted(&condor(), OrderOptions::MARKET);
        let i = intent(&id, &legs);
        assert_eq!(i.client_order_id.to_string(), format!("{id}-1"));
        assert_eq!(
            ClientOrderId::parse(&i.client_order_id.to_string()).unwrap(),
            i.client_order_id
        );
        assert!(i.client_order_id.to_string().len() <= 48, "Alpaca takes 48 characters");
        assert_eq!(i, intent(&id, &legs), "the same attempt always names the same order");
        assert_eq!(mleg_intent(&id, 2, &legs).unwrap(), None, "attempt 2 is not due");
        assert_eq!(i.qty, qty("2"));
        let got: Vec<_> = i
            .legs
            .iter()
            .map(|l| {
                (
                    l.symbol.as_str(),
                    l.ratio_qty,
                    l.side,
                    l.position_intent.as_str(),
                    l.qty,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("SPY260116C00600000", qty("2"), Side::Sell, "sell_to_close", qty("4")),
                ("SPY260116C00590000", qty("1"), Side::Buy, "buy_to_close", qty("2")),
                ("SPY260116P00530000", qty("2"), Side::Sell, "sell_to_close", qty("4")),
                ("SPY260116P00540000", qty("1"), Side::Buy, "buy_to_close", qty("2")),
            ]
        );
        for (l, agg) in i.legs.iter().zip(tagged(&id, &legs)) {
            let cr = agg.latest_close_request.as_ref().unwrap();
            assert_eq!(
                l.client_order_id,
                ClientOrderId::new(cr.id, 1),
                "each leg keeps its own record"
            );
        }
    }

    #[test]
    fn a_net_limit_price_travels_with_the_order() {
        let limit = OrderOptions::limit(Price::new(qty("1.35")).unwrap());
        let (id, legs) = accepted(&condor(), limit);
        let i = intent(&id, &legs);
        assert_eq!(i.options.order_type, OrderType::Limit);
        assert_eq!(i.options.limit_price, Some(crate::testing::price("1.35")));
    }

    #[test]
    fn an_attempt_waits_for_a_leg_still_to_be_retried_into_it() {
        let (id, mut legs) = accepted(&condor(), OrderOptions::MARKET);
        // Attempt 1 ended partly filled; the reconciler has retried every leg but one.
        for (i, l) in legs.iter_mut().enumerate() {
            let cr = l.latest_close_request.as_mut().unwrap();
            if i == 1 {
                cr.status = CloseRequestStatus::Retryable;
                l.position.status = PositionStatus::CloseRetryable;
            } else {
                cr.retry_count = 1;
            }
        }
        let behind = legs[1].position.id.to_string();
        assert_eq!(mleg_intent(&id, 2, &legs), Err(MlegError::LegBehind(behind)));
        // Retried too: the attempt's order takes every leg.
        legs[1].latest_close_request.as_mut().unwrap().status = CloseRequestStatus::Pending;
        legs[1].latest_close_request.as_mut().unwrap().retry_count = 1;
        legs[1].position.status = PositionStatus::Closing;
        let i = intent_at(&id, &legs, 2);
        assert_eq!(i.legs.len(), 4);
        assert_eq!(i.client_order_id, mleg_client_order_id(&id, 2));
        // Given up on instead (a human must look): the legs are out of step for good.
        legs[1].latest_close_request.as_mut().unwrap().status = CloseRequestStatus::Failed;
        legs[1].latest_close_request.as_mut().unwrap().retry_count = 0;
        legs[1].position.status = PositionStatus::CloseFailed;
        assert!(matches!(mleg_intent(&id, 2, &legs), Err(MlegError::OutOfStep(_))));
    }

    /// The broker refused attempt 1's multi-leg order: every leg `close_failed`.
    fn refused(legs: Vec<PositionAggregate>) -> Vec<PositionAggregate> {
        legs.into_iter()
            .map(|l| {
                let cr = l.latest_close_request.as_ref().unwrap().id;
                let req = crate::SubmitRequest {
                    position_id: l.position.id.clone(),
                    close_request_id: cr,
                    attempt: 1,
                };
                let answer = crate::SubmitAnswer::Rejected {
                    reason: "insufficient qty".into(),
                };
                match crate::record_submission(&l, &req, &answer, t0()).unwrap() {
                    Applied::Changed(next) => *next,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn a_manual_retry_of_one_leg_retries_every_failed_leg_into_one_order() {
        use crate::manage::{decide_mleg_retry, LegsRetryDecision, RetryCommand};
        let (id, legs) = accepted(&condor(), OrderOptions::MARKET);
        let mut legs = refused(legs);
        assert!(legs.iter().all(|l| l.position.status == PositionStatus::CloseFailed));
        // One leg filled before (it is done): it is left as it is.
        let done = legs[3].position.id.clone();
        let cmd = RetryCommand {
            close_request_id: legs[0].latest_close_request.as_ref().unwrap().id,
            idempotency_key: IdempotencyKey::parse("r").unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({"retry": {}})),
            options: Some(OrderOptions::limit(Price::new(qty("1.35")).unwrap())),
            actor: "trader".into(),
            access: Access::All,
            now: t0(),
        };
        legs[3].position.status = PositionStatus::Closed;
        legs[3].latest_close_request.as_mut().unwrap().status = CloseRequestStatus::Completed;
        let LegsRetryDecision::Retry(next) = decide_mleg_retry(&legs[0], &legs, &cmd).unwrap() else {
            panic!("not a retry")
        };
        let retried: Vec<_> = next.iter().map(|a| a.position.id.clone()).collect();
        assert_eq!(retried.len(), 3, "{retried:?}");
        assert_eq!(retried[0], legs[0].position.id, "the requested leg first");
        assert!(!retried.contains(&done));
        for a in &next {
            let cr = a.latest_close_request.as_ref().unwrap();
            assert_eq!(
                (a.position.status, cr.status, cr.current_attempt()),
                (PositionStatus::Closing, CloseRequestStatus::Pending, 2)
            );
            assert_eq!(
                cr.options.limit_price,
                Price::new(qty("1.35")),
                "every leg the new price"
            );
            assert!(check_invariants(&a.position, Some(cr)).is_empty());
        }
        // The same request again, on the legs as written: a replay.
        let mut written = legs.clone();
        for a in next {
            let i = written.iter().position(|l| l.position.id == a.position.id).unwrap();
            written[i] = a;
        }
        assert_eq!(
            decide_mleg_retry(&written[0], &written, &cmd),
            Ok(LegsRetryDecision::Replay)
        );
        // The next attempt's one order takes the three retried legs, not the one done.
        let i = intent_at(&id, &written, 2);
        assert_eq!(i.legs.len(), 3);
        assert!(i.legs.iter().all(|l| l.position_id != done));
        // A net credit stays a credit on every leg; on a single order it is refused.
        let credit = OrderOptions::limit(Price::new(qty("1.25")).unwrap()).with_signed_limit_price(Some(qty("-1.25")));
        let credit_cmd = RetryCommand {
            idempotency_key: IdempotencyKey::parse("r-credit").unwrap(),
            options: Some(credit),
            ..cmd.clone()
        };
        let LegsRetryDecision::Retry(next) = decide_mleg_retry(&legs[0], &legs, &credit_cmd).unwrap() else {
            panic!("not a retry")
        };
        for a in &next {
            let o = a.latest_close_request.as_ref().unwrap().options;
            assert_eq!(o.signed_limit_price(), Some(qty("-1.25")), "a credit, not a debit");
        }
        // A leg not in `mleg` mode retries alone.
        let (_, single) = accepted(&condor(), OrderOptions::MARKET);
        let mut single = refused(single);
        for l in &mut single {
            l.latest_close_request
                .as_mut()
                .unwrap()
                .strategy_close
                .as_mut()
                .unwrap()
                .mode = StrategyCloseMode::Legs;
        }
        let cmd = RetryCommand {
            close_request_id: single[1].latest_close_request.as_ref().unwrap().id,
            options: None,
            ..cmd
        };
        let LegsRetryDecision::Retry(next) = decide_mleg_retry(&single[1], &single, &cmd).unwrap() else {
            panic!("not a retry")
        };
        assert_eq!(next.len(), 1);
        let credit_alone = RetryCommand {
            options: Some(credit),
            ..cmd.clone()
        };
        assert_eq!(
            decide_mleg_retry(&single[1], &single, &credit_alone),
            Err(crate::ManageRejection::InvalidOptions(
                crate::OptionsError::InvalidLimitPrice
            ))
        );
    }

    #[test]
    fn legs_that_no_longer_move_together_are_refused() {
        let (id, mut legs) = accepted(&condor(), OrderOptions::MARKET);
        let cr = legs[1].latest_close_request.as_mut().unwrap();
        cr.retry_count = 1;
        assert!(matches!(mleg_intent(&id, 1, &legs), Err(MlegError::OutOfStep(_))));
        // A leg that recorded the attempt while the others did not is in step: the same
        // order is named again.
        let (id, mut legs) = accepted(&condor(), OrderOptions::MARKET);
        let whole = intent(&id, &legs);
        let cr = legs[0].latest_close_request.as_ref().unwrap().id;
        legs[0]
            .orders
            .push(crate::Order::new(ClientOrderId::new(cr, 1), qty("4")));
        assert_eq!(mleg_intent(&id, 1, &legs), Ok(Some(whole)));
        let (id, mut legs) = accepted(&condor(), OrderOptions::MARKET);
        legs[2].position.account_id = AccountId::parse("acct-2").unwrap();
        assert_eq!(mleg_intent(&id, 1, &legs), Err(MlegError::MixedAccounts));
        let (id, legs) = accepted(&condor(), OrderOptions::MARKET);
        assert_eq!(mleg_intent(&id, 1, &legs[..1]), Err(MlegError::LegCount(1)));
    }

    fn report(id: &StrategyCloseId, status: OrderStatus, units: &str, legs: Vec<(&str, &str)>) -> MlegReport {
        MlegReport {
            client_order_id: mleg_client_order_id(id, 1),
            broker_order_id: Some("b-parent".into()),
            status,
            filled_qty: qty(units),
            legs: legs
                .into_iter()
                .map(|(symbol, filled)| MlegLegReport {
                    symbol: symbol.into(),
                    broker_order_id: Some(format!("b-{symbol}")),
                    status: None,
                    filled_qty: qty(filled),
                    filled_avg_price: Some(crate::testing::price("1.10")),
                })
                .collect(),
            seq: None,
            execution_id: None,
            updated_at: t0(),
        }
    }

    /// Applies every leg update of `r` to its leg.
    fn apply(id: &StrategyCloseId, legs: &mut [PositionAggregate], r: &MlegReport) {
        for (pid, u) in leg_updates(id, legs, r).unwrap() {
            let agg = legs.iter_mut().find(|l| l.position.id == pid).unwrap();
            if let Applied::Changed(next) = apply_order_update(agg, &u, t0()).unwrap() {
                *agg = *next;
            }
        }
    }

    fn filled(legs: &[PositionAggregate]) -> Vec<(String, Quantity, PositionStatus)> {
        legs.iter()
            .map(|l| {
                (
                    l.position.symbol.clone(),
                    l.latest_close_request.as_ref().unwrap().filled_qty,
                    l.position.status,
                )
            })
            .collect()
    }

    #[test]
    fn a_partial_fill_of_the_order_fills_each_leg_its_share_then_the_rest_closes_them() {
        let (id, mut legs) = accepted(&condor(), OrderOptions::MARKET);
        let partial = report(
            &id,
            OrderStatus::PartiallyFilled,
            "1",
            vec![
                ("SPY260116C00600000", "2"),
                ("SPY260116C00590000", "1"),
                ("SPY260116P00530000", "2"),
                ("SPY260116P00540000", "1"),
            ],
        );
        apply(&id, &mut legs, &partial);
        let closing = PositionStatus::Closing;
        assert_eq!(
            filled(&legs),
            vec![
                ("SPY260116C00600000".to_string(), qty("2"), closing),
                ("SPY260116C00590000".to_string(), qty("1"), closing),
                ("SPY260116P00530000".to_string(), qty("2"), closing),
                ("SPY260116P00540000".to_string(), qty("1"), closing),
            ]
        );
        // The final report leaves the legs out: each leg's fill follows from the units.
        apply(&id, &mut legs, &report(&id, OrderStatus::Filled, "2", vec![]));
        for l in &legs {
            assert_eq!(l.position.status, PositionStatus::Closed, "{}", l.position.id);
            assert!(check_invariants(&l.position, l.latest_close_request.as_ref()).is_empty());
        }
    }

    #[test]
    fn duplicated_and_out_of_order_reports_converge_on_the_same_legs() {
        let (id, legs) = accepted(&condor(), OrderOptions::MARKET);
        let reports = [
            report(&id, OrderStatus::Accepted, "0", vec![]),
            report(
                &id,
                OrderStatus::PartiallyFilled,
                "1",
                vec![("SPY260116C00590000", "1")],
            ),
            report(&id, OrderStatus::Filled, "2", vec![]),
        ];
        let mut in_order = legs.clone();
        for r in &reports {
            apply(&id, &mut in_order, r);
        }
        let mut shuffled = legs.clone();
        for i in [2, 0, 2, 1, 1, 0] {
            apply(&id, &mut shuffled, &reports[i]);
        }
        assert_eq!(filled(&in_order), filled(&shuffled));
        assert!(in_order.iter().all(|l| l.position.status == PositionStatus::Closed));
    }

    #[test]
    fn a_leg_the_order_does_not_have_is_refused() {
        let (id, legs) = accepted(&condor(), OrderOptions::MARKET);
        let stray = report(&id, OrderStatus::Filled, "2", vec![("QQQ260116C00400000", "2")]);
        assert_eq!(
            leg_updates(&id, &legs, &stray),
            Err(MlegError::UnknownLeg("QQQ260116C00400000".into()))
        );
    }
}
