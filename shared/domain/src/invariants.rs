//! Position / close request invariants of seed 000 §9, as a checkable function.

use crate::ids::CloseRequestId;
use crate::model::{CloseRequest, Position};
use crate::status::{CloseRequestStatus as C, PositionStatus as P};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The position's status and its latest close request's status are not a legal pair.
    StatusMismatch {
        position: P,
        close_request: Option<C>,
    },
    /// `closing` must point at exactly its in-flight close request.
    ClosingWithoutActiveRequest,
    ActiveRequestMismatch {
        active: Option<CloseRequestId>,
        latest: Option<CloseRequestId>,
    },
    /// `open` must not point at a close request.
    OpenWithActiveRequest(CloseRequestId),
    ClosedWithoutTimestamp,
    CloseRequestOfAnotherPosition,
    NonPositiveTarget,
    NegativeFill,
    FilledExceedsTarget,
    RetriesExceeded,
    /// A close for more than the position held when it began.
    TargetExceedsPosition,
}

/// Returns every violated invariant (empty when consistent).
pub fn check_invariants(position: &Position, latest: Option<&CloseRequest>) -> Vec<Violation> {
    let mut out = Vec::new();
    let cr_status = latest.map(|c| c.status);
    let partial = latest.is_some_and(CloseRequest::is_partial);
    // A legal pair is one the close's table leads to; on top of it, a completed close left
    // the position open exactly when it was a partial one.
    let pair_ok = crate::transition::reachable((position.status, cr_status))
        && match (position.status, cr_status) {
            (P::Open, Some(C::Completed)) => partial,
            (P::Closed, _) => !partial,
            _ => true,
        };
    if !pair_ok {
        out.push(Violation::StatusMismatch {
            position: position.status,
            close_request: cr_status,
        });
    }
    match position.status {
        P::Closing | P::CloseRetryable => match position.active_close_request_id {
            None => out.push(Violation::ClosingWithoutActiveRequest),
            Some(active) if Some(active) != latest.map(|c| c.id) => out.push(Violation::ActiveRequestMismatch {
                active: Some(active),
                latest: latest.map(|c| c.id),
            }),
            Some(_) => {}
        },
        P::Open => {
            if let Some(active) = position.active_close_request_id {
                out.push(Violation::OpenWithActiveRequest(active));
            }
        }
        P::Closed => {
            if position.closed_at.is_none() {
                out.push(Violation::ClosedWithoutTimestamp);
            }
        }
        P::CloseFailed => {}
    }
    if let Some(cr) = latest {
        if cr.position_id != position.id {
            out.push(Violation::CloseRequestOfAnotherPosition);
        }
        if cr.target_qty.value().is_sign_negative() || cr.target_qty.is_zero() {
            out.push(Violation::NonPositiveTarget);
        }
        if cr.filled_qty.is_negative() {
            out.push(Violation::NegativeFill);
        }
        if cr.filled_qty > cr.target_qty {
            out.push(Violation::FilledExceedsTarget);
        }
        if cr.retry_count > cr.max_retries {
            out.push(Violation::RetriesExceeded);
        }
        if cr.target_qty > cr.position_qty {
            out.push(Violation::TargetExceedsPosition);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AssetType;
    use crate::{AccountId, IdempotencyKey, PositionId, Quantity};
    use chrono::TimeZone;

    fn t() -> crate::Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn position(status: P, active: Option<CloseRequestId>) -> Position {
        Position {
            id: PositionId::parse("p").unwrap(),
            account_id: AccountId::parse("a").unwrap(),
            symbol: "AAPL".into(),
            asset_type: AssetType::Equity,
            quantity: Quantity::from(10),
            avg_entry_price: None,
            strategy_id: None,
            status,
            active_close_request_id: active,
            closed_at: None,
            created_at: t(),
            updated_at: t(),
            version: 1,
            source: None,
            sync: None,
            multiplier: None,
            realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
        }
    }

    fn request(status: C, filled: i64) -> CloseRequest {
        let p = PositionId::parse("p").unwrap();
        CloseRequest {
            id: CloseRequestId::new(&p, [1; 16]),
            position_id: p,
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            status,
            target_qty: Quantity::from(10),
            filled_qty: Quantity::from(filled),
            retry_count: 0,
            redrives: 0,
            max_retries: 3,
            reason: None,
            cancel_open_orders: false,
            failure_reason: None,
            created_at: t(),
            submitted_at: None,
            completed_at: None,
            updated_at: t(),
            position_qty: Quantity::from(10),
            options: crate::OrderOptions::MARKET,
            cancel_requested_at: None,
            manual_retries: 0,
            strategy_close: None,
        }
    }

    #[test]
    fn every_legal_pair_of_the_seed_table_passes() {
        let cr = request(C::Pending, 0);
        assert!(check_invariants(&position(P::Open, None), None).is_empty());
        assert!(check_invariants(&position(P::Open, None), Some(&request(C::Failed, 0))).is_empty());
        assert!(check_invariants(&position(P::Closing, Some(cr.id)), Some(&cr)).is_empty());
        let sub = request(C::Submitted, 4);
        assert!(check_invariants(&position(P::Closing, Some(sub.id)), Some(&sub)).is_empty());
        let mut closed = position(P::Closed, None);
        closed.closed_at = Some(t());
        assert!(check_invariants(&closed, Some(&request(C::Completed, 10))).is_empty());
        let r = request(C::Retryable, 4);
        assert!(check_invariants(&position(P::CloseRetryable, Some(r.id)), Some(&r)).is_empty());
        assert!(check_invariants(&position(P::CloseFailed, None), Some(&request(C::Failed, 0))).is_empty());
    }

    #[test]
    fn a_completed_partial_close_pairs_with_open_and_a_full_one_with_closed() {
        let mut partial = request(C::Completed, 4);
        partial.target_qty = Quantity::from(4);
        assert!(check_invariants(&position(P::Open, None), Some(&partial)).is_empty());
        let mut closed = position(P::Closed, None);
        closed.closed_at = Some(t());
        assert!(!check_invariants(&closed, Some(&partial)).is_empty());
        assert!(!check_invariants(&position(P::Open, None), Some(&request(C::Completed, 10))).is_empty());
        let mut over = request(C::Pending, 0);
        over.target_qty = Quantity::from(11);
        assert!(check_invariants(&position(P::Closing, Some(over.id)), Some(&over))
            .contains(&Violation::TargetExceedsPosition));
    }

    #[test]
    fn closing_without_an_active_request_is_reported() {
        let v = check_invariants(&position(P::Closing, None), None);
        assert!(v.contains(&Violation::ClosingWithoutActiveRequest));
        assert!(v.contains(&Violation::StatusMismatch {
            position: P::Closing,
            close_request: None
        }));
    }

    #[test]
    fn submitted_request_with_a_position_that_is_not_closing_is_reported() {
        let sub = request(C::Submitted, 0);
        let v = check_invariants(&position(P::Open, Some(sub.id)), Some(&sub));
        assert!(v.contains(&Violation::OpenWithActiveRequest(sub.id)));
        assert!(v.contains(&Violation::StatusMismatch {
            position: P::Open,
            close_request: Some(C::Submitted)
        }));
    }

    #[test]
    fn quantity_and_retry_bounds_are_checked() {
        let mut cr = request(C::Pending, 11);
        cr.retry_count = 4;
        let v = check_invariants(&position(P::Closing, Some(cr.id)), Some(&cr));
        assert_eq!(v, [Violation::FilledExceedsTarget, Violation::RetriesExceeded]);
        let mut closed = position(P::Closed, None);
        closed.closed_at = None;
        assert!(
            check_invariants(&closed, Some(&request(C::Completed, 10))).contains(&Violation::ClosedWithoutTimestamp)
        );
    }
}
