//! What happens to a close request after phase 1: the outbox message that asks for an
//! order, recording the broker's answer to a submission, applying broker order updates,
//! and settling the close request and position when every order has ended (seed 000 §5-§6).
//!
//! Every function takes the current aggregate and returns the next one (or says why
//! nothing changes); stores persist the result with one conditional write.

use crate::ids::{CloseRequestId, PositionId};
use crate::model::{AssetType, PositionAggregate, Side};
use crate::order::{merge_order_update, ClientOrderId, Ignored, Merge, Order, OrderUpdate};
use crate::quantity::Quantity;
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::transition::{step, CloseEvent, IllegalTransition};
use crate::Timestamp;

/// The outbox message: "place the order for this attempt".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRequest {
    pub position_id: PositionId,
    pub close_request_id: CloseRequestId,
    pub attempt: u32,
}

impl SubmitRequest {
    pub fn client_order_id(&self) -> ClientOrderId {
        ClientOrderId::new(self.close_request_id, self.attempt)
    }
}

/// Derives the outbox message from a change of one aggregate (the stream record's old and
/// new image): a close request that became `pending` for a new attempt.
pub fn outbox_message(before: Option<&PositionAggregate>, after: &PositionAggregate) -> Option<SubmitRequest> {
    let cr = after.latest_close_request.as_ref()?;
    if cr.status != CloseRequestStatus::Pending {
        return None;
    }
    let was_waiting = before.and_then(|b| b.latest_close_request.as_ref()).is_some_and(|old| {
        old.id == cr.id
            && old.status == CloseRequestStatus::Pending
            && old.retry_count == cr.retry_count
            && old.manual_retries == cr.manual_retries
            && old.redrives == cr.redrives
    });
    (!was_waiting).then(|| SubmitRequest {
        position_id: after.position.id.clone(),
        close_request_id: cr.id,
        attempt: cr.current_attempt(),
    })
}

/// The order to watch at the broker until it ends: the one this change recorded for the
/// current attempt, still working. A broker that calls no webhook (Alpaca) then still
/// reports its outcome within seconds, through lookups at growing delays.
pub fn watch_for(before: Option<&PositionAggregate>, after: &PositionAggregate) -> Option<ClientOrderId> {
    let cr = after.latest_close_request.as_ref()?;
    let order = after
        .orders
        .iter()
        .find(|o| o.attempt() == cr.current_attempt() && !o.status.is_terminal())?;
    let seen = before.is_some_and(|b| b.orders.iter().any(|o| o.client_order_id == order.client_order_id));
    (!seen).then(|| order.client_order_id.clone())
}

/// Delays before each check of a watched order (1 s, 3 s, 10 s, 30 s, 2 min); after the
/// last one the reconciler's "stuck" rule takes over at its own cadence.
pub const WATCH_DELAYS_SECS: [i64; 5] = [1, 3, 10, 30, 120];

pub fn watch_delay(step: u32) -> Option<chrono::TimeDelta> {
    WATCH_DELAYS_SECS
        .get(step as usize)
        .map(|s| chrono::TimeDelta::seconds(*s))
}

/// Everything the submitter sends to the broker for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderIntent {
    pub client_order_id: ClientOrderId,
    pub account_id: crate::AccountId,
    pub symbol: String,
    pub asset_type: AssetType,
    pub side: Side,
    pub qty: Quantity,
    /// Market or limit (with its price), time in force, extended hours: the close's own.
    pub options: crate::OrderOptions,
}

/// The order to place if the close request still waits for this attempt; `None` when a
/// redelivered or outdated message must do nothing.
pub fn intent_for(agg: &PositionAggregate, req: &SubmitRequest) -> Option<OrderIntent> {
    let cr = agg.latest_close_request.as_ref()?;
    let waits = cr.id == req.close_request_id
        && cr.status == CloseRequestStatus::Pending
        && cr.current_attempt() == req.attempt
        && !agg.orders.iter().any(|o| o.attempt() == req.attempt)
        && agg.position.status == PositionStatus::Closing;
    waits.then(|| OrderIntent {
        client_order_id: req.client_order_id(),
        account_id: agg.position.account_id.clone(),
        symbol: agg.position.symbol.clone(),
        asset_type: agg.position.asset_type,
        side: agg.position.close_side(),
        qty: cr.remaining_qty(),
        options: cr.options,
    })
}

/// The broker's definitive answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitAnswer {
    /// The broker holds the order (new, or found by client order id after a duplicate).
    Accepted(OrderUpdate),
    /// The broker refused it for good (insufficient quantity, invalid order, ...).
    Rejected { reason: String },
    /// Nothing was placed and nothing will be without a human: the close fails with a
    /// stable `code` (`blocked_by_open_orders`, `no_broker_credentials`) in its
    /// `failure_reason`, and an alert of that kind.
    Refused {
        code: crate::reconcile::AlertKind,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The aggregate to store.
    Changed(Box<PositionAggregate>),
    Ignored(Ignored),
    /// No order of this client order id belongs to the close request in flight.
    UnknownOrder,
}

/// Moves the position and its latest close request together, by the one table.
pub(crate) fn transition(agg: &mut PositionAggregate, event: CloseEvent) -> Result<(), IllegalTransition> {
    let from = (agg.position.status, agg.latest_close_request.as_ref().map(|c| c.status));
    let (position, close_request) = step(from, event)?;
    let cr = agg.latest_close_request.as_mut().ok_or_else(|| IllegalTransition {
        from: from.0.as_str(),
        close_request: None,
        event: format!("{event:?}"),
    })?;
    cr.status = close_request;
    agg.position.status = position;
    Ok(())
}

/// Records the broker's answer for an attempt the close request still waits for.
pub fn record_submission(
    agg: &PositionAggregate,
    req: &SubmitRequest,
    answer: &SubmitAnswer,
    now: Timestamp,
) -> Result<Applied, IllegalTransition> {
    let Some(intent) = intent_for(agg, req) else {
        // Already recorded (or overtaken by a webhook): the answer is merged as an update.
        return match answer {
            SubmitAnswer::Accepted(u) => apply_order_update(agg, u, now),
            SubmitAnswer::Rejected { .. } | SubmitAnswer::Refused { .. } => Ok(Applied::Ignored(Ignored::NoChange)),
        };
    };
    let mut next = agg.clone();
    match answer {
        SubmitAnswer::Rejected { reason } => {
            transition(&mut next, CloseEvent::BrokerRejected)?;
            let cr = next.latest_close_request.as_mut().expect("checked by intent_for");
            cr.failure_reason = Some(reason.clone());
            cr.completed_at = Some(now);
            next.position.active_close_request_id = None;
        }
        SubmitAnswer::Refused { code, reason } => {
            transition(&mut next, CloseEvent::BrokerRejected)?;
            let cr = next.latest_close_request.as_mut().expect("checked by intent_for");
            let reason = format!("{code}: {reason}");
            cr.failure_reason = Some(reason.clone());
            cr.completed_at = Some(now);
            next.position.active_close_request_id = None;
            next.last_alert = Some(crate::reconcile::Alert {
                kind: *code,
                message: format!("position {}: {reason}", next.position.id),
                at: now,
            });
        }
        SubmitAnswer::Accepted(u) => {
            let order = Order::new(intent.client_order_id.clone(), intent.qty);
            let order = match merge_order_update(&order, u) {
                Merge::Changed(o) => o,
                Merge::Ignored(_) => order,
            };
            next.orders.push(order);
            let Some(filled) = total_filled(&next.orders) else {
                return Ok(Applied::Ignored(Ignored::OverFill));
            };
            transition(&mut next, CloseEvent::OrderSubmitted)?;
            let cr = next.latest_close_request.as_mut().expect("checked by intent_for");
            cr.submitted_at = Some(now);
            let ended_at = broker_time(&next, u, now);
            settle(&mut next, filled, ended_at)?;
        }
    }
    touch(&mut next, now);
    Ok(Applied::Changed(Box::new(next)))
}

/// Applies one broker order update (webhook or broker lookup) to the aggregate.
pub fn apply_order_update(
    agg: &PositionAggregate,
    u: &OrderUpdate,
    now: Timestamp,
) -> Result<Applied, IllegalTransition> {
    let Some(cr) = agg.latest_close_request.as_ref() else {
        return Ok(Applied::UnknownOrder);
    };
    if cr.id != u.client_order_id.close_request_id {
        return Ok(Applied::UnknownOrder);
    }
    let mut next = agg.clone();
    match next.orders.iter().position(|o| o.client_order_id == u.client_order_id) {
        Some(i) => match merge_order_update(&next.orders[i], u) {
            Merge::Changed(o) => next.orders[i] = o,
            Merge::Ignored(why) => return Ok(Applied::Ignored(why)),
        },
        None => {
            // The broker reported before the submitter recorded the order (fast fill,
            // slow write). Only the attempt in flight can be adopted this way.
            if !cr.status.is_in_flight() || u.client_order_id.attempt != cr.current_attempt() {
                return Ok(Applied::UnknownOrder);
            }
            let blank = Order::new(u.client_order_id.clone(), cr.remaining_qty());
            match merge_order_update(&blank, u) {
                Merge::Changed(o) => next.orders.push(o),
                Merge::Ignored(why) => return Ok(Applied::Ignored(why)),
            }
            if next.latest_close_request.as_ref().map(|c| c.status) == Some(CloseRequestStatus::Pending) {
                transition(&mut next, CloseEvent::OrderSubmitted)?;
                let cr = next.latest_close_request.as_mut().expect("checked above");
                cr.submitted_at = Some(now);
            }
        }
    }
    let Some(filled) = total_filled(&next.orders) else {
        return Ok(Applied::Ignored(Ignored::OverFill));
    };
    let ended_at = broker_time(&next, u, now);
    settle(&mut next, filled, ended_at)?;
    touch(&mut next, now);
    Ok(Applied::Changed(Box::new(next)))
}

/// When the broker says `u` happened. A close ends when the broker filled it, not when we
/// heard: a lookup seconds later or a backfill after a reconnect still dates it by the
/// broker. A time before the close began or after now (a missing field, skewed clocks) is
/// not believed.
fn broker_time(agg: &PositionAggregate, u: &OrderUpdate, now: Timestamp) -> Timestamp {
    let began = agg.latest_close_request.as_ref().map_or(now, |c| c.created_at);
    if (began..=now).contains(&u.updated_at) {
        u.updated_at
    } else {
        now
    }
}

/// Stamps a change: the position's and the close request's `updated_at`, and the version.
pub fn touch(agg: &mut PositionAggregate, now: Timestamp) {
    agg.position.updated_at = now;
    agg.position.version += 1;
    if let Some(cr) = agg.latest_close_request.as_mut() {
        cr.updated_at = now;
    }
}

/// What the orders of a close request filled together, or `None` when the sum leaves the
/// exact decimal range (then the update that caused it is refused as an over-fill).
pub fn total_filled(orders: &[Order]) -> Option<Quantity> {
    Quantity::checked_sum(orders.iter().map(|o| o.filled_qty))
}

/// Records `filled` (see [`total_filled`]) on the close request and, once every order has
/// ended, moves the close request and position to their outcome, ended at `ended_at`. A
/// retry that fills the rest completes the close even though an earlier order was canceled.
fn settle(agg: &mut PositionAggregate, filled: Quantity, ended_at: Timestamp) -> Result<(), IllegalTransition> {
    let Some(cr) = agg.latest_close_request.as_mut() else {
        return Ok(());
    };
    cr.filled_qty = filled;
    let attempt_placed = agg.orders.iter().any(|o| o.attempt() == cr.current_attempt());
    let all_ended = agg.orders.iter().all(|o| o.status.is_terminal());
    if cr.status != CloseRequestStatus::Submitted || !attempt_placed || !all_ended {
        return Ok(());
    }
    let remaining = cr.remaining_qty();
    let partial_done = cr.is_partial() && (remaining.is_zero() || remaining.is_negative());
    let event = if partial_done {
        CloseEvent::PartialCloseFilled
    } else if remaining.is_zero() || remaining.is_negative() {
        CloseEvent::FullyFilled
    } else if filled.is_zero() {
        CloseEvent::EndedUnfilled
    } else {
        CloseEvent::PartiallyFilledAndEnded
    };
    transition(agg, event)?;
    let cr = agg.latest_close_request.as_mut().expect("checked above");
    match agg.position.status {
        PositionStatus::Closed => {
            cr.completed_at = Some(ended_at);
            agg.position.closed_at = Some(ended_at);
            agg.position.active_close_request_id = None;
        }
        PositionStatus::Open => {
            cr.completed_at = Some(ended_at);
            agg.position.active_close_request_id = None;
            if partial_done {
                // What filled leaves the position; the rest stays open, same direction.
                let rest = cr.position_qty.minus(cr.filled_qty);
                agg.position.quantity = if agg.position.quantity.is_negative() {
                    Quantity::ZERO.minus(rest)
                } else {
                    rest
                };
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::{decide_close, CloseCommand, CloseDecision, Fingerprint};
    use crate::invariants::check_invariants;
    use crate::model::Position;
    use crate::order::OrderStatus;
    use crate::{AccountId, IdempotencyKey};
    use chrono::TimeZone;

    fn t(s: u32) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 2, 3, 10, 0, s).unwrap()
    }

    /// A 10-unit long position with a fresh pending close request.
    fn closing() -> (PositionAggregate, SubmitRequest) {
        let id = PositionId::parse("p").unwrap();
        let agg = PositionAggregate::new(Position {
            id: id.clone(),
            account_id: AccountId::parse("a").unwrap(),
            symbol: "AAPL".into(),
            asset_type: AssetType::Equity,
            quantity: Quantity::from(10),
            avg_entry_price: None,
            strategy_id: None,
            status: PositionStatus::Open,
            active_close_request_id: None,
            closed_at: None,
            created_at: t(0),
            updated_at: t(0),
            version: 1,
            source: None,
            sync: None,
            multiplier: None,
            realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
        });
        let cmd = CloseCommand {
            actor: "tester".into(),
            position_id: id,
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({})),
            new_id: CloseRequestId::new(&PositionId::parse("p").unwrap(), [2; 16]),
            max_retries: 3,
            reason: None,
            cancel_open_orders: false,
            qty: None,
            options: crate::OrderOptions::MARKET,
            access: crate::Access::All,
            now: t(0),
        };
        let CloseDecision::Create(next) = decide_close(Some(&agg), &cmd) else {
            panic!()
        };
        let msg = outbox_message(Some(&agg), &next).expect("a new close request asks for an order");
        (*next, msg)
    }

    fn update(req: &SubmitRequest, status: OrderStatus, filled: i64, seq: u64) -> OrderUpdate {
        OrderUpdate {
            client_order_id: req.client_order_id(),
            broker_order_id: Some("brk-1".into()),
            status,
            filled_qty: Quantity::from(filled),
            filled_avg_price: (filled > 0).then(|| crate::testing::price("187.5")),
            seq: Some(seq),
            execution_id: None,
            updated_at: t(seq as u32),
        }
    }

    fn changed(a: Result<Applied, IllegalTransition>) -> PositionAggregate {
        match a.expect("legal") {
            Applied::Changed(n) => *n,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn consistent(agg: &PositionAggregate) {
        assert_eq!(
            check_invariants(&agg.position, agg.latest_close_request.as_ref()),
            vec![]
        );
    }

    fn statuses(agg: &PositionAggregate) -> (PositionStatus, CloseRequestStatus, Quantity) {
        let cr = agg.latest_close_request.as_ref().unwrap();
        (agg.position.status, cr.status, cr.filled_qty)
    }

    #[test]
    fn happy_path_open_closing_filled_closed() {
        let (agg, msg) = closing();
        assert_eq!(msg.attempt, 1);
        let intent = intent_for(&agg, &msg).unwrap();
        assert_eq!((intent.side, intent.qty), (Side::Sell, Quantity::from(10)));
        let agg = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1)),
            t(1),
        ));
        assert_eq!(statuses(&agg).1, CloseRequestStatus::Submitted);
        assert_eq!(outbox_message(None, &agg), None, "submitted asks for nothing");
        consistent(&agg);
        let agg = changed(apply_order_update(
            &agg,
            &update(&msg, OrderStatus::Filled, 10, 2),
            t(2),
        ));
        assert_eq!(
            statuses(&agg),
            (
                PositionStatus::Closed,
                CloseRequestStatus::Completed,
                Quantity::from(10)
            )
        );
        assert_eq!(agg.position.closed_at, Some(t(2)));
        consistent(&agg);
    }

    #[test]
    fn a_partial_close_that_fills_leaves_the_rest_open_and_a_full_one_closes() {
        let (mut agg, msg) = closing();
        // Close 4 of a short 10 with a limit order.
        agg.position.quantity = Quantity::from(-10);
        let cr = agg.latest_close_request.as_mut().unwrap();
        cr.target_qty = Quantity::from(4);
        cr.options = crate::OrderOptions::limit(crate::Price::new(Quantity::from(3)).unwrap());
        let options = cr.options;
        let intent = intent_for(&agg, &msg).unwrap();
        assert_eq!((intent.qty, intent.options), (Quantity::from(4), options));
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1)),
            t(1),
        ));
        let done = changed(apply_order_update(&sub, &update(&msg, OrderStatus::Filled, 4, 2), t(2)));
        let cr = done.latest_close_request.as_ref().unwrap();
        assert_eq!(done.position.status, PositionStatus::Open);
        assert_eq!(done.position.quantity, Quantity::from(-6), "only what filled left");
        assert_eq!(
            (cr.status, cr.filled_qty),
            (CloseRequestStatus::Completed, Quantity::from(4))
        );
        assert_eq!(done.position.closed_at, None);
        assert_eq!(done.position.active_close_request_id, None);
        consistent(&done);
    }

    #[test]
    fn a_close_heard_late_is_dated_by_the_brokers_fill_unless_that_time_is_implausible() {
        let (agg, msg) = closing();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1)),
            t(1),
        ));
        // Filled at t(3), learnt by a lookup at t(40).
        let heard_late = changed(apply_order_update(
            &sub,
            &update(&msg, OrderStatus::Filled, 10, 3),
            t(40),
        ));
        assert_eq!(heard_late.position.closed_at, Some(t(3)));
        assert_eq!(
            heard_late.latest_close_request.as_ref().unwrap().completed_at,
            Some(t(3))
        );
        assert_eq!(heard_late.position.updated_at, t(40), "the change itself is ours");
        // A broker time after ours, or before the close began, is replaced by ours.
        for bogus in [t(50), chrono::DateTime::<chrono::Utc>::UNIX_EPOCH] {
            let mut u = update(&msg, OrderStatus::Filled, 10, 3);
            u.updated_at = bogus;
            let settled = changed(apply_order_update(&sub, &u, t(40)));
            assert_eq!(settled.position.closed_at, Some(t(40)), "{bogus}");
        }
    }

    #[test]
    fn an_over_fill_is_refused_and_changes_nothing() {
        let (agg, msg) = closing();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1)),
            t(1),
        ));
        // 1,000 filled on a 10-unit order: once `completed` with remaining -990.
        assert_eq!(
            apply_order_update(&sub, &update(&msg, OrderStatus::Filled, 1000, 2), t(2)),
            Ok(Applied::Ignored(Ignored::OverFill))
        );
        // The same before the submitter recorded the order (adopted as a blank order).
        assert_eq!(
            apply_order_update(&agg, &update(&msg, OrderStatus::Filled, 11, 2), t(2)),
            Ok(Applied::Ignored(Ignored::OverFill))
        );
    }

    #[test]
    fn fills_that_cannot_be_added_up_exactly_are_refused_not_panicked_on() {
        let (mut agg, msg) = closing();
        // A position too large to sum twice: a late fill of an earlier attempt plus the
        // retry's fill would overflow.
        let huge = Quantity::new(rust_decimal::Decimal::MAX);
        agg.latest_close_request.as_mut().unwrap().target_qty = huge;
        let mut first = Order::new(msg.client_order_id(), huge);
        first.status = OrderStatus::Canceled;
        first.filled_qty = huge;
        let mut second = Order::new(ClientOrderId::new(msg.close_request_id, 2), huge);
        second.status = OrderStatus::Accepted;
        agg.orders = vec![first, second];
        let mut u = update(&msg, OrderStatus::Filled, 0, 9);
        u.client_order_id = ClientOrderId::new(msg.close_request_id, 2);
        u.filled_qty = huge;
        assert_eq!(
            apply_order_update(&agg, &u, t(3)),
            Ok(Applied::Ignored(Ignored::OverFill))
        );
    }

    #[test]
    fn broker_rejection_fails_the_close_for_a_human_with_the_reason() {
        let (agg, msg) = closing();
        let agg = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Rejected {
                reason: "insufficient qty available".into(),
            },
            t(1),
        ));
        assert_eq!(statuses(&agg).0, PositionStatus::CloseFailed);
        let cr = agg.latest_close_request.as_ref().unwrap();
        assert_eq!(
            (cr.status, cr.failure_reason.as_deref()),
            (CloseRequestStatus::Failed, Some("insufficient qty available"))
        );
        consistent(&agg);
    }

    #[test]
    fn partial_fill_then_cancel_is_retryable_and_zero_fill_cancel_reopens() {
        let (agg, msg) = closing();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::New, 0, 1)),
            t(1),
        ));
        let part = changed(apply_order_update(
            &sub,
            &update(&msg, OrderStatus::PartiallyFilled, 3, 2),
            t(2),
        ));
        assert_eq!(
            statuses(&part),
            (
                PositionStatus::Closing,
                CloseRequestStatus::Submitted,
                Quantity::from(3)
            )
        );
        let ended = changed(apply_order_update(
            &part,
            &update(&msg, OrderStatus::Canceled, 3, 3),
            t(3),
        ));
        assert_eq!(
            statuses(&ended),
            (
                PositionStatus::CloseRetryable,
                CloseRequestStatus::Retryable,
                Quantity::from(3)
            )
        );
        assert_eq!(
            ended.latest_close_request.as_ref().unwrap().remaining_qty(),
            Quantity::from(7)
        );
        consistent(&ended);

        let zero = changed(apply_order_update(
            &sub,
            &update(&msg, OrderStatus::Canceled, 0, 2),
            t(2),
        ));
        assert_eq!(
            statuses(&zero),
            (PositionStatus::Open, CloseRequestStatus::Failed, Quantity::ZERO)
        );
        assert_eq!(zero.position.active_close_request_id, None);
        consistent(&zero);
    }

    #[test]
    fn out_of_order_cancel_after_fill_cannot_reopen_a_closed_position() {
        let (agg, msg) = closing();
        let sub = changed(record_submission(
            &agg,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::New, 0, 1)),
            t(1),
        ));
        let closed = changed(apply_order_update(
            &sub,
            &update(&msg, OrderStatus::Filled, 10, 5),
            t(5),
        ));
        // An older cancel (lower seq) arrives late; so does a newer bogus one.
        assert_eq!(
            apply_order_update(&closed, &update(&msg, OrderStatus::Canceled, 0, 4), t(6)),
            Ok(Applied::Ignored(Ignored::StaleSeq))
        );
        let after = apply_order_update(&closed, &update(&msg, OrderStatus::Canceled, 0, 6), t(6)).unwrap();
        if let Applied::Changed(a) = after {
            assert_eq!(
                statuses(&a),
                (
                    PositionStatus::Closed,
                    CloseRequestStatus::Completed,
                    Quantity::from(10)
                )
            );
        }
    }

    #[test]
    fn a_redelivered_submission_places_nothing_and_records_nothing_new() {
        let (agg, msg) = closing();
        let answer = SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1));
        let sub = changed(record_submission(&agg, &msg, &answer, t(1)));
        assert_eq!(intent_for(&sub, &msg), None, "no second order for the same attempt");
        assert_eq!(
            record_submission(&sub, &msg, &answer, t(2)),
            Ok(Applied::Ignored(Ignored::StaleSeq))
        );
        assert_eq!(sub.orders.len(), 1);
    }

    #[test]
    fn a_fill_that_overtakes_the_submitter_is_adopted() {
        let (agg, msg) = closing();
        let filled = changed(apply_order_update(
            &agg,
            &update(&msg, OrderStatus::Filled, 10, 2),
            t(1),
        ));
        assert_eq!(statuses(&filled).0, PositionStatus::Closed);
        consistent(&filled);
        let late = record_submission(
            &filled,
            &msg,
            &SubmitAnswer::Accepted(update(&msg, OrderStatus::Accepted, 0, 1)),
            t(2),
        );
        assert_eq!(late, Ok(Applied::Ignored(Ignored::StaleSeq)));
    }

    #[test]
    fn updates_for_other_close_requests_or_attempts_are_unknown() {
        let (agg, msg) = closing();
        let other = SubmitRequest {
            attempt: 2,
            ..msg.clone()
        };
        assert_eq!(
            apply_order_update(&agg, &update(&other, OrderStatus::Filled, 10, 1), t(1)),
            Ok(Applied::UnknownOrder)
        );
        let stranger = SubmitRequest {
            close_request_id: CloseRequestId::new(&PositionId::parse("p").unwrap(), [9; 16]),
            ..msg
        };
        assert_eq!(
            apply_order_update(&agg, &update(&stranger, OrderStatus::Filled, 10, 1), t(1)),
            Ok(Applied::UnknownOrder)
        );
    }
}
