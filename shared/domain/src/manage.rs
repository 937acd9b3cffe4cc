//! What a trader may do to a close once it started: cancel its working order(s), or start
//! a new attempt of a failed close for what remains. Pure decisions; the caller writes the
//! aggregate they return and talks to the broker.
//!
//! A cancel is only asked for here. The close moves when the broker confirms (the usual
//! settlement: nothing filled -> position `open`; part filled -> `close_retryable`), so a
//! cancel that arrives after the fill changes nothing.

use crate::close::Fingerprint;
use crate::ids::{CloseRequestId, IdempotencyKey};
use crate::lifecycle::{touch, transition};
use crate::model::{IdempotencyRecord, PositionAggregate};
use crate::options::{OptionsError, OrderOptions};
use crate::order::ClientOrderId;
use crate::status::{CloseRequestStatus as C, PositionStatus as P};
use crate::transition::{CloseEvent, IllegalTransition};
use crate::{Access, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManageRejection {
    /// No such close request the caller may see.
    NotFound,
    /// Nothing of this close is working at the broker.
    NotCancelable,
    /// Only a failed close (position `close_failed`, nothing working) can be retried.
    NotRetryable(P),
    /// Same Idempotency-Key, different body.
    IdempotencyKeyReused,
    InvalidOptions(OptionsError),
}

impl ManageRejection {
    /// The stable error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            ManageRejection::NotFound => "close_request_not_found",
            ManageRejection::NotCancelable => "not_cancelable",
            ManageRejection::NotRetryable(_) => "not_retryable",
            ManageRejection::IdempotencyKeyReused => "idempotency_key_reused",
            ManageRejection::InvalidOptions(e) => e.code(),
        }
    }
}

/// The orders to cancel at the broker, and the aggregate to store first (with
/// `cancel_requested_at`; `None` when it was already recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelDecision {
    pub write: Option<PositionAggregate>,
    /// (client order id, broker order id) of every order still working.
    pub orders: Vec<(ClientOrderId, String)>,
}

/// Decides a cancel of close request `id`'s working orders.
pub fn decide_cancel(
    agg: &PositionAggregate,
    id: &CloseRequestId,
    access: &Access,
    now: Timestamp,
) -> Result<CancelDecision, ManageRejection> {
    if !access.allows(&agg.position.account_id) || agg.close_request(id).is_none() {
        return Err(ManageRejection::NotFound);
    }
    // Only the latest close request can have orders working; earlier ones ended first.
    let Some(cr) = agg.latest_close_request.as_ref().filter(|c| c.id == *id) else {
        return Err(ManageRejection::NotCancelable);
    };
    // An order the broker has not acknowledged yet has no broker id to cancel by.
    let orders: Vec<_> = agg
        .orders
        .iter()
        .filter(|o| !o.status.is_terminal())
        .filter_map(|o| Some((o.client_order_id.clone(), o.broker_order_id.clone()?)))
        .collect();
    if orders.is_empty() {
        return Err(ManageRejection::NotCancelable);
    }
    let write = cr.cancel_requested_at.is_none().then(|| {
        let mut next = agg.clone();
        if let Some(c) = next.latest_close_request.as_mut() {
            c.cancel_requested_at = Some(now);
        }
        touch(&mut next, now);
        next
    });
    Ok(CancelDecision { write, orders })
}

/// A manual retry of a failed close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCommand {
    pub close_request_id: CloseRequestId,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// New order options for this and later attempts; `None` keeps the close's own.
    pub options: Option<OrderOptions>,
    /// Who retries, for the audit trail.
    pub actor: String,
    pub access: Access,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// The aggregate with the new attempt pending (same close request, next client order id).
    Retry(Box<PositionAggregate>),
    /// This key already started a retry of this close with the same body.
    Replay,
}

/// Decides a manual retry: a new attempt for the remaining quantity of a `close_failed`
/// close, once nothing of it is working at the broker.
pub fn decide_retry(agg: &PositionAggregate, cmd: &RetryCommand) -> Result<RetryDecision, ManageRejection> {
    if !cmd.access.allows(&agg.position.account_id) || agg.close_request(&cmd.close_request_id).is_none() {
        return Err(ManageRejection::NotFound);
    }
    if let Some(seen) = agg.idempotency.get(&cmd.idempotency_key) {
        return if seen.fingerprint == cmd.fingerprint && seen.close_request_id == cmd.close_request_id {
            Ok(RetryDecision::Replay)
        } else {
            Err(ManageRejection::IdempotencyKeyReused)
        };
    }
    let not_retryable = || ManageRejection::NotRetryable(agg.position.status);
    let cr = agg
        .latest_close_request
        .as_ref()
        .filter(|c| c.id == cmd.close_request_id)
        .ok_or_else(not_retryable)?;
    let working = agg.orders.iter().any(|o| !o.status.is_terminal());
    let remaining = cr.remaining_qty();
    if agg.position.status != P::CloseFailed
        || cr.status != C::Failed
        || working
        || remaining.is_zero()
        || remaining.is_negative()
    {
        return Err(not_retryable());
    }
    let options = cmd.options.unwrap_or(cr.options);
    options
        .validate_for(agg.position.asset_type)
        .map_err(ManageRejection::InvalidOptions)?;
    // A net credit is a multi-leg order's price; a single order's limit is a plain price.
    let mleg = cr
        .strategy_close
        .is_some_and(|t| t.mode == crate::StrategyCloseMode::Mleg);
    if options.credit && !mleg {
        return Err(ManageRejection::InvalidOptions(OptionsError::InvalidLimitPrice));
    }
    let mut next = agg.clone();
    transition(&mut next, CloseEvent::ManualRetry).map_err(|_: IllegalTransition| not_retryable())?;
    let cr = next.latest_close_request.as_mut().expect("checked above");
    cr.manual_retries += 1;
    cr.options = options;
    cr.failure_reason = None;
    cr.completed_at = None;
    cr.redrives = 0;
    cr.cancel_requested_at = None;
    let id = cr.id;
    next.position.active_close_request_id = Some(id);
    next.idempotency.insert(
        cmd.idempotency_key.clone(),
        IdempotencyRecord {
            close_request_id: id,
            fingerprint: cmd.fingerprint.clone(),
            created_at: cmd.now,
        },
    );
    touch(&mut next, cmd.now);
    Ok(RetryDecision::Retry(Box::new(next)))
}

/// A manual retry of one leg's close in `mleg` mode is every failed leg's: the attempt's
/// one multi-leg order needs every leg at that attempt, with the same order options.
/// `legs` are the strategy close's legs as loaded (`requested` among them). Legs whose
/// close ended otherwise (filled, canceled unfilled) are left as they are.
pub fn decide_mleg_retry(
    requested: &PositionAggregate,
    legs: &[PositionAggregate],
    cmd: &RetryCommand,
) -> Result<LegsRetryDecision, ManageRejection> {
    let next = match decide_retry(requested, cmd)? {
        RetryDecision::Replay => return Ok(LegsRetryDecision::Replay),
        RetryDecision::Retry(next) => *next,
    };
    let tag = requested
        .latest_close_request
        .as_ref()
        .and_then(|c| c.strategy_close)
        .filter(|t| t.mode == crate::StrategyCloseMode::Mleg);
    let mut out = vec![next];
    let Some(tag) = tag else {
        return Ok(LegsRetryDecision::Retry(out));
    };
    for leg in legs.iter().filter(|l| l.position.id != requested.position.id) {
        let Some(cr) = leg.latest_close_request.as_ref() else {
            continue;
        };
        let failed = cr.strategy_close == Some(tag) && leg.position.status == P::CloseFailed && cr.status == C::Failed;
        if !failed {
            continue;
        }
        let sibling = RetryCommand {
            close_request_id: cr.id,
            ..cmd.clone()
        };
        match decide_retry(leg, &sibling)? {
            RetryDecision::Retry(n) => out.push(*n),
            // The key already started another leg's retry: it names another request.
            RetryDecision::Replay => return Err(ManageRejection::IdempotencyKeyReused),
        }
    }
    Ok(LegsRetryDecision::Retry(out))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegsRetryDecision {
    /// The aggregates to write, all or none (the requested leg first).
    Retry(Vec<PositionAggregate>),
    Replay,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::{decide_close, CloseDecision};
    use crate::invariants::check_invariants;
    use crate::lifecycle::{apply_order_update, intent_for, outbox_message, record_submission, Applied, SubmitAnswer};
    use crate::order::OrderStatus;
    use crate::testing::{aggregate, close, t0, update};
    use crate::{Price, Quantity};

    fn changed(a: Result<Applied, IllegalTransition>) -> PositionAggregate {
        match a.unwrap() {
            Applied::Changed(n) => *n,
            other => panic!("{other:?}"),
        }
    }

    /// A 10-unit close submitted at the broker (order acknowledged, nothing filled).
    fn submitted() -> PositionAggregate {
        let open = aggregate("p", "10", P::Open);
        let CloseDecision::Create(agg) = decide_close(Some(&open), &close("p", "k", t0())) else {
            panic!()
        };
        let msg = outbox_message(Some(&open), &agg).unwrap();
        let id = msg.close_request_id;
        changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(id, 1, OrderStatus::Accepted, "0", 1, t0())),
            t0(),
        ))
    }

    fn retry_cmd(agg: &PositionAggregate, key: &str) -> RetryCommand {
        RetryCommand {
            close_request_id: agg.latest_close_request.as_ref().unwrap().id,
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({"retry": {}})),
            options: None,
            actor: "tester".into(),
            access: Access::All,
            now: t0(),
        }
    }

    #[test]
    fn a_cancel_names_the_working_orders_and_settles_only_when_the_broker_confirms() {
        let agg = submitted();
        let id = agg.latest_close_request.as_ref().unwrap().id;
        let d = decide_cancel(&agg, &id, &Access::All, t0()).unwrap();
        assert_eq!(d.orders.len(), 1);
        let asked = d.write.expect("the request is recorded");
        assert_eq!(
            asked.position.status,
            P::Closing,
            "nothing assumed before the broker says so"
        );
        assert!(decide_cancel(&asked, &id, &Access::All, t0()).unwrap().write.is_none());
        // The broker confirms with nothing filled: the position is open again.
        let reopened = changed(apply_order_update(
            &asked,
            &update(id, 1, OrderStatus::Canceled, "0", 2, t0()),
            t0(),
        ));
        assert_eq!(reopened.position.status, P::Open);
        assert_eq!(
            decide_cancel(&reopened, &id, &Access::All, t0()),
            Err(ManageRejection::NotCancelable)
        );
        // Part filled: close_retryable, as any partial fill that ended.
        let part = changed(apply_order_update(
            &asked,
            &update(id, 1, OrderStatus::Canceled, "3", 2, t0()),
            t0(),
        ));
        assert_eq!(part.position.status, P::CloseRetryable);
        assert!(check_invariants(&part.position, part.latest_close_request.as_ref()).is_empty());
    }

    #[test]
    fn another_accounts_close_is_not_found_and_a_pending_one_has_nothing_to_cancel() {
        let agg = submitted();
        let id = agg.latest_close_request.as_ref().unwrap().id;
        let other = Access::parse("acct-9").unwrap();
        assert_eq!(decide_cancel(&agg, &id, &other, t0()), Err(ManageRejection::NotFound));
        let open = aggregate("p", "10", P::Open);
        let CloseDecision::Create(pending) = decide_close(Some(&open), &close("p", "k", t0())) else {
            panic!()
        };
        let id = pending.latest_close_request.as_ref().unwrap().id;
        assert_eq!(
            decide_cancel(&pending, &id, &Access::All, t0()),
            Err(ManageRejection::NotCancelable)
        );
    }

    #[test]
    fn a_failed_close_is_retried_for_what_remains_with_a_new_client_order_id() {
        let agg = submitted();
        let id = agg.latest_close_request.as_ref().unwrap().id;
        let part = changed(apply_order_update(
            &agg,
            &update(id, 1, OrderStatus::Canceled, "3", 2, t0()),
            t0(),
        ));
        // Not failed yet: a retryable close belongs to the reconciler.
        assert_eq!(
            decide_retry(&part, &retry_cmd(&part, "r1")),
            Err(ManageRejection::NotRetryable(P::CloseRetryable))
        );
        let mut failed = part.clone();
        failed.position.status = P::CloseFailed;
        failed.position.active_close_request_id = None;
        failed.latest_close_request.as_mut().unwrap().status = C::Failed;
        failed.latest_close_request.as_mut().unwrap().failure_reason = Some("retries exhausted".into());
        let mut cmd = retry_cmd(&failed, "r1");
        cmd.options = Some(OrderOptions::limit(Price::new(Quantity::from(99)).unwrap()));
        let RetryDecision::Retry(next) = decide_retry(&failed, &cmd).unwrap() else {
            panic!("retry")
        };
        let cr = next.latest_close_request.as_ref().unwrap();
        assert_eq!((next.position.status, cr.status), (P::Closing, C::Pending));
        assert_eq!((cr.id, cr.current_attempt(), cr.failure_reason.clone()), (id, 2, None));
        assert!(check_invariants(&next.position, Some(cr)).is_empty());
        let msg = outbox_message(Some(&failed), &next).expect("the new attempt is queued");
        let intent = intent_for(&next, &msg).unwrap();
        assert_eq!((intent.qty, intent.options), (Quantity::from(7), cmd.options.unwrap()));
        assert_eq!(intent.client_order_id, ClientOrderId::new(id, 2));
        // The same key again replays; another body under it is refused.
        assert_eq!(decide_retry(&next, &cmd), Ok(RetryDecision::Replay));
        let mut other = cmd.clone();
        other.fingerprint = Fingerprint::of_body(&serde_json::json!({"retry": {"order_type": "market"}}));
        assert_eq!(decide_retry(&next, &other), Err(ManageRejection::IdempotencyKeyReused));
        // A second key while the retry is in flight: not retryable.
        assert_eq!(
            decide_retry(&next, &retry_cmd(&next, "r2")),
            Err(ManageRejection::NotRetryable(P::Closing))
        );
    }

    #[test]
    fn a_retry_with_options_that_do_not_fit_is_refused() {
        let mut failed = submitted();
        failed.orders[0].status = OrderStatus::Rejected;
        failed.position.status = P::CloseFailed;
        failed.position.active_close_request_id = None;
        failed.latest_close_request.as_mut().unwrap().status = C::Failed;
        let mut cmd = retry_cmd(&failed, "r1");
        cmd.options = Some(OrderOptions {
            extended_hours: true,
            ..OrderOptions::MARKET
        });
        assert_eq!(
            decide_retry(&failed, &cmd),
            Err(ManageRejection::InvalidOptions(OptionsError::InvalidExtendedHours))
        );
    }
}
