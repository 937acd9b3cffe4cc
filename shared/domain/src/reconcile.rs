//! The reconciler's and the cleaner's decisions (seed 000 §7-§9), pure: what is due, what a
//! broker lookup means, how a retry starts, what a safe repair is, and what expires.

use chrono::TimeDelta;

use crate::invariants::{check_invariants, Violation};
use crate::lifecycle::{apply_order_update, touch, transition, Applied};
use crate::model::PositionAggregate;
use crate::order::{ClientOrderId, OrderUpdate};
use crate::status::{CloseRequestStatus as C, PositionStatus as P};
use crate::transition::{CloseEvent, IllegalTransition};
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A `pending` close request this old has no submission in flight.
    pub zombie_after: TimeDelta,
    /// A `submitted` close request without news this long is asked about at the broker.
    pub stuck_after: TimeDelta,
    /// Wait before retry n (0-based) is `retry_backoff * 2^n`.
    pub retry_backoff: TimeDelta,
    /// Consecutive "not found" lookups before a human must look.
    pub not_found_limit: u32,
    /// Times an attempt the broker never received is sent again (same client order id)
    /// before a human must look.
    pub redrive_limit: u32,
    /// How long finished close requests and idempotency records are kept.
    pub retention: TimeDelta,
    /// How long audit entries are kept: well beyond the position itself, for disputes.
    pub audit_retention: TimeDelta,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            zombie_after: TimeDelta::minutes(2),
            stuck_after: TimeDelta::minutes(10),
            retry_backoff: TimeDelta::seconds(30),
            not_found_limit: 3,
            redrive_limit: 3,
            retention: TimeDelta::days(3),
            audit_retention: TimeDelta::days(400),
        }
    }
}

impl Policy {
    /// Nothing is due before this much time has passed since a close request's last change.
    pub fn earliest_due(&self) -> TimeDelta {
        self.zombie_after.min(self.stuck_after).min(self.retry_backoff)
    }

    pub fn backoff(&self, retry_count: u32) -> TimeDelta {
        self.retry_backoff * 2i32.saturating_pow(retry_count.min(16))
    }
}

/// What an alert is about. Stable codes: they name the `Alert` event's kind, the
/// close-request view's `waiting_on_broker.kind`, and stored alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// The broker does not know the attempt's order: a human must look (money may be out).
    OrderNotFound,
    /// The attempt's order was never placed and re-sending it was given up.
    OrderNeverPlaced,
    /// Automatic retries are spent; the close is `close_failed`.
    RetriesExhausted,
    /// A canceled close left part of the position; nothing is retried by itself.
    CloseCanceled,
    /// Stored state broke an invariant and was repaired to a safe state.
    InvariantViolation,
    /// The broker reported a fill that cannot be right (over-fill, beyond range).
    InvalidFill,
    /// The symbol's open orders hold the quantity to close.
    BlockedByOpenOrders,
    /// No key pair is configured for the account.
    NoBrokerCredentials,
    /// The account's request budget at the broker is spent: the close waits.
    BrokerRateLimited,
    /// The circuit breaker is open: the close waits.
    BrokerUnreachable,
    /// The broker refused the account's key pair: the close waits for a human to fix it.
    BrokerCredentialsRejected,
    /// Position sync: open here, not held at the broker.
    SyncMissingAtBroker,
    /// Position sync: quantity or entry price differ from the broker's.
    SyncConflict,
}

impl AlertKind {
    pub const ALL: [AlertKind; 13] = [
        AlertKind::OrderNotFound,
        AlertKind::OrderNeverPlaced,
        AlertKind::RetriesExhausted,
        AlertKind::CloseCanceled,
        AlertKind::InvariantViolation,
        AlertKind::InvalidFill,
        AlertKind::BlockedByOpenOrders,
        AlertKind::NoBrokerCredentials,
        AlertKind::BrokerRateLimited,
        AlertKind::BrokerUnreachable,
        AlertKind::BrokerCredentialsRejected,
        AlertKind::SyncMissingAtBroker,
        AlertKind::SyncConflict,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::OrderNotFound => "order_not_found",
            AlertKind::OrderNeverPlaced => "order_never_placed",
            AlertKind::RetriesExhausted => "retries_exhausted",
            AlertKind::CloseCanceled => "close_canceled",
            AlertKind::InvariantViolation => "invariant_violation",
            AlertKind::InvalidFill => "invalid_fill",
            AlertKind::BlockedByOpenOrders => "blocked_by_open_orders",
            AlertKind::NoBrokerCredentials => "no_broker_credentials",
            AlertKind::BrokerRateLimited => "broker_rate_limited",
            AlertKind::BrokerUnreachable => "broker_unreachable",
            AlertKind::BrokerCredentialsRejected => "broker_credentials_rejected",
            AlertKind::SyncMissingAtBroker => "sync_missing_at_broker",
            AlertKind::SyncConflict => "sync_conflict",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a human should know about. Stored on the aggregate so the stream publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub message: String,
    pub at: Timestamp,
}

/// When the aggregate needs the reconciler: the start of its clock, or `None`. Stores index
/// exactly these (a sparse index), so the reconciler never reads a settled position.
pub fn attention_since(agg: &PositionAggregate) -> Option<Timestamp> {
    let cr = agg.latest_close_request.as_ref();
    let busy = matches!(agg.position.status, P::Closing | P::CloseRetryable)
        || cr.is_some_and(|c| matches!(c.status, C::Pending | C::Submitted | C::Retryable))
        || (agg.position.status == P::Open && agg.position.active_close_request_id.is_some());
    busy.then(|| cr.map(|c| c.updated_at).unwrap_or(agg.position.updated_at))
}

/// When cleanup has something to remove from this aggregate, or `None`.
pub fn expiry_at(agg: &PositionAggregate, retention: TimeDelta) -> Option<Timestamp> {
    if attention_since(agg).is_some() || agg.position.status == P::CloseFailed {
        return None; // in flight, or waiting for a human: nothing expires
    }
    if agg.position.status == P::Closed {
        return agg.position.closed_at.map(|t| t + retention);
    }
    let finished = agg
        .latest_close_request
        .as_ref()
        .filter(|c| c.status.is_terminal())
        .and_then(|c| c.completed_at);
    let oldest_key = agg.idempotency.values().map(|r| r.created_at).min();
    let oldest_past = agg.history.iter().filter_map(|p| p.close_request.completed_at).min();
    finished
        .into_iter()
        .chain(oldest_key)
        .chain(oldest_past)
        .min()
        .map(|t| t + retention)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expire {
    Nothing,
    /// A closed position past retention: the whole record goes.
    Delete,
    /// Old idempotency records and a finished close request removed.
    Rewrite(Box<PositionAggregate>),
}

pub fn expire(agg: &PositionAggregate, now: Timestamp, retention: TimeDelta) -> Expire {
    match expiry_at(agg, retention) {
        Some(t) if t <= now => {}
        _ => return Expire::Nothing,
    }
    if agg.position.status == P::Closed {
        return Expire::Delete;
    }
    let mut next = agg.clone();
    let cutoff = now - retention;
    let in_flight = next
        .latest_close_request
        .as_ref()
        .filter(|c| !c.status.is_terminal())
        .map(|c| c.id);
    next.idempotency
        .retain(|_, r| r.created_at > cutoff || Some(r.close_request_id) == in_flight);
    let drop_cr = next
        .latest_close_request
        .as_ref()
        .is_some_and(|c| c.status.is_terminal() && c.completed_at.is_some_and(|t| t <= cutoff));
    if drop_cr {
        next.latest_close_request = None;
        next.orders.clear();
    }
    // A past close without a completion time is kept: it cannot be aged safely.
    next.history
        .retain(|p| p.close_request.completed_at.is_none_or(|t| t > cutoff));
    if next == *agg {
        return Expire::Nothing;
    }
    next.position.version += 1;
    Expire::Rewrite(Box::new(next))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// Ask the broker about this order. `zombie`: the attempt may never have been placed.
    Lookup {
        client_order_id: ClientOrderId,
        zombie: bool,
    },
    /// A decided change: retry start, retries exhausted, invariant repair.
    Change(Box<PositionAggregate>),
}

fn alert(agg: &mut PositionAggregate, kind: AlertKind, message: String, now: Timestamp) {
    agg.last_alert = Some(Alert { kind, message, at: now });
}

fn needs_human(
    agg: &mut PositionAggregate,
    kind: AlertKind,
    reason: String,
    now: Timestamp,
) -> Result<(), IllegalTransition> {
    transition(agg, CloseEvent::NeedsAttention)?;
    let cr = agg.latest_close_request.as_mut().expect("moved above");
    cr.failure_reason = Some(reason.clone());
    cr.completed_at = Some(now);
    agg.position.active_close_request_id = None;
    alert(agg, kind, reason, now);
    Ok(())
}

/// What, if anything, is due for this aggregate now.
pub fn reconcile(agg: &PositionAggregate, now: Timestamp, policy: &Policy) -> Result<Due, IllegalTransition> {
    let violations = check_invariants(&agg.position, agg.latest_close_request.as_ref());
    if !violations.is_empty() {
        return Ok(repair(agg, &violations, now));
    }
    let Some(cr) = agg.latest_close_request.as_ref() else {
        return Ok(Due::Nothing);
    };
    let age = now - cr.updated_at;
    match cr.status {
        C::Pending if age >= policy.zombie_after => Ok(Due::Lookup {
            client_order_id: ClientOrderId::new(cr.id, cr.current_attempt()),
            zombie: true,
        }),
        C::Submitted if age >= policy.stuck_after => Ok(agg
            .orders
            .iter()
            .find(|o| !o.status.is_terminal())
            .map(|o| Due::Lookup {
                client_order_id: o.client_order_id.clone(),
                zombie: false,
            })
            .unwrap_or(Due::Nothing)),
        // The trader asked to cancel: what is left is not retried behind their back. The
        // close waits for a human (who may retry it, with new options) instead.
        C::Retryable if cr.cancel_requested_at.is_some() => {
            let mut next = agg.clone();
            let reason = format!(
                "canceled at the trader's request with {} of {} filled",
                cr.filled_qty, cr.target_qty
            );
            needs_human(&mut next, AlertKind::CloseCanceled, reason, now)?;
            touch(&mut next, now);
            Ok(Due::Change(Box::new(next)))
        }
        C::Retryable if cr.retry_count >= cr.max_retries => {
            let mut next = agg.clone();
            let reason = format!(
                "{} of {} left unfilled after {} retries",
                cr.remaining_qty(),
                cr.target_qty,
                cr.retry_count
            );
            needs_human(&mut next, AlertKind::RetriesExhausted, reason, now)?;
            touch(&mut next, now);
            Ok(Due::Change(Box::new(next)))
        }
        C::Retryable if age >= policy.backoff(cr.retry_count) => {
            let mut next = agg.clone();
            transition(&mut next, CloseEvent::RetryStarted)?;
            let cr = next.latest_close_request.as_mut().expect("checked");
            cr.retry_count += 1;
            touch(&mut next, now);
            Ok(Due::Change(Box::new(next)))
        }
        _ => Ok(Due::Nothing),
    }
}

fn in_flight_mismatch(v: &Violation) -> bool {
    matches!(
        v,
        Violation::StatusMismatch {
            close_request: Some(C::Pending | C::Submitted),
            ..
        }
    )
}

/// Safe repairs of seed 000 §9 violations; every violation is alerted once.
fn repair(agg: &PositionAggregate, violations: &[Violation], now: Timestamp) -> Due {
    let mut next = agg.clone();
    for v in violations {
        match v {
            // CLOSING without an active request: nothing to wait for; a human decides.
            Violation::ClosingWithoutActiveRequest if next.position.status == P::Closing => {
                next.position.status = P::CloseFailed;
            }
            Violation::OpenWithActiveRequest(_) if !violations.iter().any(in_flight_mismatch) => {
                next.position.active_close_request_id = None
            }
            // A close request still in flight while the position says otherwise: the close
            // request is the truth (seed 000 §9).
            Violation::StatusMismatch {
                close_request: Some(C::Pending | C::Submitted),
                ..
            } => {
                next.position.status = P::Closing;
                next.position.active_close_request_id = next.latest_close_request.as_ref().map(|c| c.id);
            }
            _ => {}
        }
    }
    let message = format!("position {}: {violations:?}", agg.position.id);
    if next == *agg && agg.last_alert.as_ref().is_some_and(|a| a.message == message) {
        return Due::Nothing; // already alerted, nothing safe to repair
    }
    alert(&mut next, AlertKind::InvariantViolation, message, now);
    touch(&mut next, now);
    Due::Change(Box::new(next))
}

/// What the broker said about an order the reconciler asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(OrderUpdate),
    NotFound,
}

/// Applies a broker lookup: found orders go through the webhook's merge rules; an order the
/// broker does not have is counted (stuck) or the attempt abandoned (zombie).
pub fn after_lookup(
    agg: &PositionAggregate,
    client_order_id: &ClientOrderId,
    zombie: bool,
    answer: &Lookup,
    now: Timestamp,
    policy: &Policy,
) -> Result<Applied, IllegalTransition> {
    let Some(cr) = agg
        .latest_close_request
        .as_ref()
        .filter(|c| c.id == client_order_id.close_request_id)
    else {
        return Ok(Applied::UnknownOrder);
    };
    match answer {
        Lookup::Found(u) => match apply_order_update(agg, u, now)? {
            Applied::Changed(mut next) => {
                reset_not_found(&mut next, client_order_id);
                Ok(Applied::Changed(next))
            }
            Applied::Ignored(crate::order::Ignored::OverFill) => {
                // Not applied, but a human must know; asked again later, alerted once.
                let mut next = agg.clone();
                reset_not_found(&mut next, client_order_id);
                let message = format!(
                    "the broker reports {} filled on {client_order_id}, more than the order was for; not applied",
                    u.filled_qty
                );
                if agg.last_alert.as_ref().is_none_or(|a| a.message != message) {
                    alert(&mut next, AlertKind::InvalidFill, message, now);
                }
                touch(&mut next, now);
                Ok(Applied::Changed(Box::new(next)))
            }
            _ => {
                // Nothing new: note that we asked, so it is asked again in `stuck_after`.
                let mut next = agg.clone();
                reset_not_found(&mut next, client_order_id);
                touch(&mut next, now);
                Ok(Applied::Changed(Box::new(next)))
            }
        },
        Lookup::NotFound if zombie => {
            if cr.status != C::Pending || cr.current_attempt() != client_order_id.attempt {
                return Ok(Applied::Ignored(crate::order::Ignored::NoChange));
            }
            // The intent to close is never dropped: the attempt is sent again with the
            // same client order id (the broker refuses a duplicate if one did arrive), a
            // few times, and then a human must look.
            let mut next = agg.clone();
            // A submission the broker made wait (rate limit, breaker, refused keys) is held
            // back, not lost: sent again, but not counted against the close.
            let held_back = crate::trouble::waiting_on_broker(agg).is_some();
            if cr.redrives < policy.redrive_limit || held_back {
                let cr = next.latest_close_request.as_mut().expect("checked");
                cr.redrives += 1;
            } else {
                let reason = format!(
                    "the close order {client_order_id} never reached the broker, sent {} times",
                    cr.redrives + 1
                );
                needs_human(&mut next, AlertKind::OrderNeverPlaced, reason, now)?;
            }
            touch(&mut next, now);
            Ok(Applied::Changed(Box::new(next)))
        }
        Lookup::NotFound => {
            let mut next = agg.clone();
            let Some(order) = next.orders.iter_mut().find(|o| o.client_order_id == *client_order_id) else {
                return Ok(Applied::UnknownOrder);
            };
            order.not_found_count += 1;
            if order.not_found_count >= policy.not_found_limit {
                let reason = format!(
                    "order {client_order_id} not found at the broker after {} lookups",
                    order.not_found_count
                );
                needs_human(&mut next, AlertKind::OrderNotFound, reason, now)?;
            }
            touch(&mut next, now);
            Ok(Applied::Changed(Box::new(next)))
        }
    }
}

fn reset_not_found(agg: &mut PositionAggregate, id: &ClientOrderId) {
    if let Some(o) = agg.orders.iter_mut().find(|o| o.client_order_id == *id) {
        o.not_found_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::{decide_close, CloseCommand, CloseDecision, Fingerprint};
    use crate::lifecycle::{outbox_message, record_submission, SubmitAnswer, SubmitRequest};
    use crate::model::{AssetType, Position};
    use crate::order::{Ignored, OrderStatus};
    use crate::{AccountId, CloseRequestId, IdempotencyKey, PositionId, Quantity};
    use chrono::TimeZone;

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn pending() -> (PositionAggregate, SubmitRequest) {
        let id = PositionId::parse("p").unwrap();
        let open = PositionAggregate::new(Position {
            id: id.clone(),
            account_id: AccountId::parse("a").unwrap(),
            symbol: "MSFT".into(),
            asset_type: AssetType::Equity,
            quantity: Quantity::from(10),
            avg_entry_price: None,
            strategy_id: None,
            status: P::Open,
            active_close_request_id: None,
            closed_at: None,
            created_at: t0(),
            updated_at: t0(),
            version: 1,
            source: None,
            sync: None,
            multiplier: None,
            realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
        });
        let cmd = CloseCommand {
            actor: "tester".into(),
            position_id: id.clone(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({})),
            new_id: CloseRequestId::new(&id, [3; 16]),
            max_retries: 2,
            reason: None,
            cancel_open_orders: false,
            qty: None,
            options: crate::OrderOptions::MARKET,
            access: crate::Access::All,
            now: t0(),
        };
        let CloseDecision::Create(agg) = decide_close(Some(&open), &cmd) else {
            panic!()
        };
        let msg = outbox_message(None, &agg).unwrap();
        (*agg, msg)
    }

    fn changed(a: Result<Applied, IllegalTransition>) -> PositionAggregate {
        match a.unwrap() {
            Applied::Changed(n) => *n,
            other => panic!("{other:?}"),
        }
    }

    fn upd(req: &SubmitRequest, status: OrderStatus, filled: i64, at: Timestamp) -> OrderUpdate {
        OrderUpdate {
            client_order_id: req.client_order_id(),
            broker_order_id: Some("b".into()),
            status,
            filled_qty: Quantity::from(filled),
            filled_avg_price: None,
            seq: None,
            execution_id: None,
            updated_at: at,
        }
    }

    fn statuses(a: &PositionAggregate) -> (P, C) {
        (a.position.status, a.latest_close_request.as_ref().unwrap().status)
    }

    #[test]
    fn a_zombie_is_re_driven_then_needs_a_human_and_is_never_silently_reopened() {
        let (agg, msg) = pending();
        let p = Policy::default();
        assert_eq!(reconcile(&agg, t0() + TimeDelta::seconds(119), &p), Ok(Due::Nothing));
        let later = t0() + TimeDelta::minutes(2);
        let Ok(Due::Lookup {
            client_order_id,
            zombie: true,
        }) = reconcile(&agg, later, &p)
        else {
            panic!()
        };
        assert_eq!(client_order_id, msg.client_order_id());
        // The broker has nothing: the same attempt is asked for again, `redrive_limit` times.
        let mut now = later;
        let mut cur = agg.clone();
        for n in 1..=p.redrive_limit {
            let next = changed(after_lookup(&cur, &client_order_id, true, &Lookup::NotFound, now, &p));
            assert_eq!(statuses(&next), (P::Closing, C::Pending), "re-drive {n}");
            assert_eq!(next.latest_close_request.as_ref().unwrap().redrives, n);
            let again = crate::outbox_message(Some(&cur), &next).expect("the attempt is sent again");
            assert_eq!(again.client_order_id(), client_order_id, "same client order id");
            assert_eq!(
                reconcile(&next, now + TimeDelta::seconds(119), &p),
                Ok(Due::Nothing),
                "clock restarted"
            );
            cur = next;
            now += TimeDelta::minutes(2);
        }
        let failed = changed(after_lookup(&cur, &client_order_id, true, &Lookup::NotFound, now, &p));
        assert_eq!(statuses(&failed), (P::CloseFailed, C::Failed), "a human must look");
        assert_eq!(failed.last_alert.as_ref().unwrap().kind, AlertKind::OrderNeverPlaced);
        assert!(check_invariants(&failed.position, failed.latest_close_request.as_ref()).is_empty());
        // The broker did have it: adopted, not abandoned.
        let found = Lookup::Found(upd(&msg, OrderStatus::Accepted, 0, later));
        let adopted = changed(after_lookup(&agg, &client_order_id, true, &found, later, &p));
        assert_eq!(statuses(&adopted), (P::Closing, C::Submitted));
    }

    #[test]
    fn a_zombie_the_broker_held_back_is_sent_again_without_counting_against_the_close() {
        let (agg, msg) = pending();
        let p = Policy::default();
        let id = msg.client_order_id();
        let mut cur = agg.clone();
        cur.latest_close_request.as_mut().unwrap().redrives = p.redrive_limit;
        let later = t0() + TimeDelta::minutes(3);
        let waiting =
            crate::trouble::note_broker_trouble(&cur, crate::trouble::RATE_LIMITED, "429".into(), later).unwrap();
        let next = changed(after_lookup(&waiting, &id, true, &Lookup::NotFound, later, &p));
        assert_eq!(
            statuses(&next),
            (P::Closing, C::Pending),
            "rate limited is never failed"
        );
        assert!(crate::outbox_message(Some(&waiting), &next).is_some(), "sent again");
        // Without the broker's excuse the same lookup ends it for a human.
        let failed = changed(after_lookup(&cur, &id, true, &Lookup::NotFound, later, &p));
        assert_eq!(statuses(&failed), (P::CloseFailed, C::Failed));
    }

    #[test]
    fn a_stuck_order_missing_three_times_needs_a_human() {
        let (agg, msg) = pending();
        let p = Policy::default();
        let mut agg = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
            t0(),
        ));
        let mut now = t0();
        for run in 1..=3 {
            now += TimeDelta::minutes(10);
            let Ok(Due::Lookup {
                client_order_id,
                zombie: false,
            }) = reconcile(&agg, now, &p)
            else {
                panic!("run {run}")
            };
            agg = changed(after_lookup(&agg, &client_order_id, false, &Lookup::NotFound, now, &p));
            assert_eq!(
                reconcile(&agg, now, &p),
                Ok(Due::Nothing),
                "asked again only after stuck_after"
            );
        }
        assert_eq!(statuses(&agg), (P::CloseFailed, C::Failed));
        assert_eq!(agg.last_alert.as_ref().unwrap().kind, AlertKind::OrderNotFound);
        assert!(check_invariants(&agg.position, agg.latest_close_request.as_ref()).is_empty());
    }

    #[test]
    fn a_stuck_order_the_broker_reports_filled_closes_the_position() {
        let (agg, msg) = pending();
        let p = Policy::default();
        let agg = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
            t0(),
        ));
        let now = t0() + TimeDelta::minutes(11);
        let Ok(Due::Lookup { client_order_id, .. }) = reconcile(&agg, now, &p) else {
            panic!()
        };
        let found = Lookup::Found(upd(&msg, OrderStatus::Filled, 10, now));
        let closed = changed(after_lookup(&agg, &client_order_id, false, &found, now, &p));
        assert_eq!(statuses(&closed), (P::Closed, C::Completed));
    }

    #[test]
    fn a_lookup_reporting_more_than_was_ordered_is_not_applied_and_alerted_once() {
        let (agg, msg) = pending();
        let p = Policy::default();
        let agg = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
            t0(),
        ));
        let now = t0() + TimeDelta::minutes(11);
        let found = Lookup::Found(upd(&msg, OrderStatus::Filled, 1000, now));
        let noted = changed(after_lookup(&agg, &msg.client_order_id(), false, &found, now, &p));
        assert_eq!(statuses(&noted), (P::Closing, C::Submitted));
        assert_eq!(noted.orders, agg.orders, "the fill is not applied");
        let alert = noted.last_alert.clone().expect("alerted");
        assert_eq!(alert.kind, AlertKind::InvalidFill);
        let later = now + TimeDelta::minutes(11);
        let again = changed(after_lookup(&noted, &msg.client_order_id(), false, &found, later, &p));
        assert_eq!(again.last_alert, Some(alert), "the same anomaly is alerted once");
    }

    #[test]
    fn a_part_fill_a_trader_canceled_is_not_retried_but_handed_to_a_human() {
        let (agg, msg) = pending();
        let p = Policy::default();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
            t0(),
        ));
        let mut asked = sub.clone();
        asked.latest_close_request.as_mut().unwrap().cancel_requested_at = Some(t0());
        let canceled = changed(crate::lifecycle::apply_order_update(
            &asked,
            &upd(&msg, OrderStatus::Canceled, 3, t0()),
            t0(),
        ));
        assert_eq!(statuses(&canceled), (P::CloseRetryable, C::Retryable));
        let Ok(Due::Change(next)) = reconcile(&canceled, t0() + p.backoff(0), &p) else {
            panic!("due at once")
        };
        assert_eq!(statuses(&next), (P::CloseFailed, C::Failed));
        assert_eq!(
            next.last_alert.as_ref().map(|a| a.kind.as_str()),
            Some("close_canceled")
        );
        assert!(check_invariants(&next.position, next.latest_close_request.as_ref()).is_empty());
    }

    #[test]
    fn retries_wait_their_backoff_ask_for_a_new_attempt_and_stop_at_the_limit() {
        let (mut agg, msg) = pending();
        // A limit close: every retry places its order at the same price.
        let limit = crate::OrderOptions::limit(crate::testing::price("187.25"));
        agg.latest_close_request.as_mut().unwrap().options = limit;
        let p = Policy::default();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
            t0(),
        ));
        let mut agg = changed(crate::lifecycle::apply_order_update(
            &sub,
            &upd(&msg, OrderStatus::Canceled, 3, t0()),
            t0(),
        ));
        assert_eq!(statuses(&agg), (P::CloseRetryable, C::Retryable));
        let mut now = t0();
        for retry in 0..2u32 {
            assert_eq!(
                reconcile(&agg, now + p.backoff(retry) - TimeDelta::seconds(1), &p),
                Ok(Due::Nothing)
            );
            now += p.backoff(retry);
            let Ok(Due::Change(next)) = reconcile(&agg, now, &p) else {
                panic!()
            };
            let before = agg.clone();
            agg = *next;
            assert_eq!(statuses(&agg), (P::Closing, C::Pending));
            let m = outbox_message(Some(&before), &agg).expect("a new attempt asks for an order");
            assert_eq!(m.attempt, retry + 2);
            let intent = crate::lifecycle::intent_for(&agg, &m).expect("the attempt's order");
            assert_eq!(intent.options, limit, "a limit close's retries keep its price");
            // The attempt also ends partially (1 more unit): retryable again.
            let attempt = m.clone();
            agg = changed(record_submission(
                &agg,
                &attempt,
                &SubmitAnswer::Accepted(upd(&attempt, OrderStatus::Canceled, 1, now)),
                now,
            ));
            assert_eq!(statuses(&agg), (P::CloseRetryable, C::Retryable));
        }
        let Ok(Due::Change(done)) = reconcile(&agg, now, &p) else {
            panic!()
        };
        assert_eq!(statuses(&done), (P::CloseFailed, C::Failed));
        assert_eq!(done.latest_close_request.as_ref().unwrap().retry_count, 2);
        assert_eq!(done.last_alert.as_ref().unwrap().kind, AlertKind::RetriesExhausted);
    }

    #[test]
    fn invariant_violations_are_repaired_where_safe_and_alerted_once() {
        let (mut agg, _) = pending();
        agg.position.status = P::Open; // lost the CLOSING mark, request still pending
        let Ok(Due::Change(fixed)) = reconcile(&agg, t0(), &Policy::default()) else {
            panic!()
        };
        assert_eq!(statuses(&fixed), (P::Closing, C::Pending));
        assert_eq!(fixed.last_alert.as_ref().unwrap().kind, AlertKind::InvariantViolation);
        assert!(check_invariants(&fixed.position, fixed.latest_close_request.as_ref()).is_empty());

        let (mut orphan, _) = pending();
        orphan.latest_close_request = None;
        orphan.position.active_close_request_id = None;
        let Ok(Due::Change(fixed)) = reconcile(&orphan, t0(), &Policy::default()) else {
            panic!()
        };
        assert_eq!(fixed.position.status, P::CloseFailed);
        // Unrepairable and already alerted: not alerted again every run.
        let mut odd = fixed.clone();
        odd.position.status = P::Closed;
        let Ok(Due::Change(alerted)) = reconcile(&odd, t0(), &Policy::default()) else {
            panic!()
        };
        assert_eq!(reconcile(&alerted, t0(), &Policy::default()), Ok(Due::Nothing));
    }

    #[test]
    fn only_settled_records_expire_after_retention() {
        let (agg, msg) = pending();
        let p = Policy::default();
        assert_eq!(expiry_at(&agg, p.retention), None, "in flight never expires");
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Filled, 10, t0())),
            t0(),
        ));
        assert_eq!(sub.position.status, P::Closed);
        assert_eq!(expiry_at(&sub, p.retention), Some(t0() + p.retention));
        assert_eq!(
            expire(&sub, t0() + p.retention - TimeDelta::seconds(1), p.retention),
            Expire::Nothing
        );
        assert_eq!(expire(&sub, t0() + p.retention, p.retention), Expire::Delete);

        let reopened = changed(crate::lifecycle::apply_order_update(
            &changed(record_submission(
                &agg,
                &msg,
                &SubmitAnswer::Accepted(upd(&msg, OrderStatus::Accepted, 0, t0())),
                t0(),
            )),
            &upd(&msg, OrderStatus::Canceled, 0, t0()),
            t0(),
        ));
        assert_eq!(reopened.position.status, P::Open);
        let Expire::Rewrite(clean) = expire(&reopened, t0() + p.retention, p.retention) else {
            panic!()
        };
        assert!(clean.idempotency.is_empty() && clean.latest_close_request.is_none());
        assert_eq!(clean.position.status, P::Open, "the position itself stays");
        assert_eq!(expiry_at(&clean, p.retention), None);
        let _ = Ignored::NoChange;
    }
}
