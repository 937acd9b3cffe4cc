//! The state machines of seed 000 §1 as explicit transition tables: every legal move is
//! one line of a `match`, and everything else is a typed [`IllegalTransition`].

use crate::status::{CloseRequestStatus, PositionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PositionEvent {
    /// A close request was accepted for this position.
    CloseAccepted,
    /// Every order ended and the whole target quantity filled.
    FullyFilled,
    /// A partial close filled its whole target: the rest of the position stays open.
    PartialCloseFilled,
    /// Orders ended with part of the quantity filled: the reconciler may retry the rest.
    PartiallyFilledAndEnded,
    /// Orders ended with nothing filled (canceled, expired, rejected after acceptance).
    EndedUnfilled,
    /// The broker definitively refused the close order (insufficient qty, invalid order).
    BrokerRejected,
    /// The reconciler starts a new attempt for the remaining quantity.
    RetryStarted,
    /// No attempts left, the broker cannot account for the order, or the order never
    /// reached the broker after its re-drives: a human must look.
    NeedsAttention,
    /// A human starts a new attempt of a failed close for what remains.
    ManualRetry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseRequestEvent {
    OrderSubmitted,
    FullyFilled,
    PartiallyFilledAndEnded,
    EndedUnfilled,
    BrokerRejected,
    RetryStarted,
    NeedsAttention,
    ManualRetry,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {entity} transition: {from} --{event}-->")]
pub struct IllegalTransition {
    pub entity: &'static str,
    pub from: &'static str,
    pub event: String,
}

impl PositionStatus {
    pub fn apply(self, event: PositionEvent) -> Result<PositionStatus, IllegalTransition> {
        use PositionEvent as E;
        use PositionStatus as S;
        match (self, event) {
            (S::Open, E::CloseAccepted) => Ok(S::Closing),
            (S::Closing, E::FullyFilled) => Ok(S::Closed),
            // Real world: a trader closes 3 of 10; the other 7 stay open to trade or close.
            (S::Closing, E::PartialCloseFilled) => Ok(S::Open),
            (S::Closing, E::PartiallyFilledAndEnded) => Ok(S::CloseRetryable),
            (S::Closing, E::EndedUnfilled) => Ok(S::Open),
            (S::Closing, E::BrokerRejected) => Ok(S::CloseFailed),
            (S::Closing, E::NeedsAttention) => Ok(S::CloseFailed),
            (S::CloseRetryable, E::RetryStarted) => Ok(S::Closing),
            (S::CloseRetryable, E::NeedsAttention) => Ok(S::CloseFailed),
            // Real world: the broker refused (or lost) the order, the trader fixed the cause
            // (freed the shares, changed the limit) and tries again for what remains.
            (S::CloseFailed, E::ManualRetry) => Ok(S::Closing),
            (from, event) => Err(IllegalTransition {
                entity: "position",
                from: from.as_str(),
                event: format!("{event:?}"),
            }),
        }
    }
}

impl CloseRequestStatus {
    pub fn apply(self, event: CloseRequestEvent) -> Result<CloseRequestStatus, IllegalTransition> {
        use CloseRequestEvent as E;
        use CloseRequestStatus as S;
        match (self, event) {
            (S::Pending, E::OrderSubmitted) => Ok(S::Submitted),
            (S::Pending, E::BrokerRejected) => Ok(S::Failed),
            // An order that never reached the broker, re-driven until the limit.
            (S::Pending, E::NeedsAttention) => Ok(S::Failed),
            // A broker may report the outcome before the submitter has recorded the
            // submission (fast fill, slow write): outcomes are legal from both.
            (S::Pending | S::Submitted, E::FullyFilled) => Ok(S::Completed),
            (S::Pending | S::Submitted, E::PartiallyFilledAndEnded) => Ok(S::Retryable),
            (S::Pending | S::Submitted, E::EndedUnfilled) => Ok(S::Failed),
            (S::Submitted, E::NeedsAttention) => Ok(S::Failed),
            (S::Retryable, E::RetryStarted) => Ok(S::Pending),
            (S::Retryable, E::NeedsAttention) => Ok(S::Failed),
            (S::Failed, E::ManualRetry) => Ok(S::Pending),
            (from, event) => Err(IllegalTransition {
                entity: "close request",
                from: from.as_str(),
                event: format!("{event:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CloseRequestStatus as C;
    use PositionStatus as P;

    const POSITION_EVENTS: [PositionEvent; 9] = [
        PositionEvent::CloseAccepted,
        PositionEvent::FullyFilled,
        PositionEvent::PartialCloseFilled,
        PositionEvent::ManualRetry,
        PositionEvent::PartiallyFilledAndEnded,
        PositionEvent::EndedUnfilled,
        PositionEvent::BrokerRejected,
        PositionEvent::RetryStarted,
        PositionEvent::NeedsAttention,
    ];

    #[test]
    fn seed_000_position_paths_are_legal() {
        use PositionEvent as E;
        assert_eq!(P::Open.apply(E::CloseAccepted), Ok(P::Closing));
        assert_eq!(P::Closing.apply(E::FullyFilled), Ok(P::Closed));
        assert_eq!(P::Closing.apply(E::PartiallyFilledAndEnded), Ok(P::CloseRetryable));
        assert_eq!(P::Closing.apply(E::EndedUnfilled), Ok(P::Open));
        assert_eq!(P::Closing.apply(E::BrokerRejected), Ok(P::CloseFailed));
        assert_eq!(P::CloseRetryable.apply(E::RetryStarted), Ok(P::Closing));
        assert_eq!(P::CloseRetryable.apply(E::NeedsAttention), Ok(P::CloseFailed));
    }

    #[test]
    fn closed_accepts_no_event_and_close_failed_only_a_manual_retry() {
        assert_eq!(P::CloseFailed.apply(PositionEvent::ManualRetry), Ok(P::Closing));
        assert_eq!(P::Closing.apply(PositionEvent::PartialCloseFilled), Ok(P::Open));
        for from in [P::Closed, P::CloseFailed] {
            for e in POSITION_EVENTS.into_iter().filter(|e| *e != PositionEvent::ManualRetry) {
                let err = from.apply(e).unwrap_err();
                assert_eq!(err.from, from.as_str());
                assert_eq!(err.entity, "position");
            }
        }
    }

    #[test]
    fn open_only_accepts_a_close() {
        let legal: Vec<_> = POSITION_EVENTS.iter().filter(|e| P::Open.apply(**e).is_ok()).collect();
        assert_eq!(legal, [&PositionEvent::CloseAccepted]);
    }

    #[test]
    fn the_table_has_exactly_the_documented_number_of_moves() {
        let position_moves = P::ALL
            .iter()
            .flat_map(|s| POSITION_EVENTS.iter().map(move |e| s.apply(*e)))
            .filter(Result::is_ok)
            .count();
        assert_eq!(position_moves, 10);
        let cr_events = [
            CloseRequestEvent::OrderSubmitted,
            CloseRequestEvent::FullyFilled,
            CloseRequestEvent::PartiallyFilledAndEnded,
            CloseRequestEvent::EndedUnfilled,
            CloseRequestEvent::BrokerRejected,
            CloseRequestEvent::RetryStarted,
            CloseRequestEvent::NeedsAttention,
            CloseRequestEvent::ManualRetry,
        ];
        let cr_moves = C::ALL
            .iter()
            .flat_map(|s| cr_events.iter().map(move |e| s.apply(*e)))
            .filter(Result::is_ok)
            .count();
        assert_eq!(cr_moves, 13);
    }

    #[test]
    fn completed_close_requests_never_move() {
        assert!(C::Completed.apply(CloseRequestEvent::EndedUnfilled).is_err());
        assert!(C::Completed.apply(CloseRequestEvent::RetryStarted).is_err());
        assert!(C::Failed.apply(CloseRequestEvent::FullyFilled).is_err());
        assert_eq!(C::Retryable.apply(CloseRequestEvent::RetryStarted), Ok(C::Pending));
    }
}
