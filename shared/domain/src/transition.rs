//! The close's state machine. A position and its latest close request always move
//! together, so they are one table of legal moves over the pair (position status, close
//! request status): every row says what a real-world event does to both, anything else is
//! a typed [`IllegalTransition`]. The invariant checker's "legal pair" is derived from the
//! same table ([`reachable`]), so the two can never disagree.

use crate::status::{CloseRequestStatus, PositionStatus};

/// What happens to a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseEvent {
    /// A close request was accepted for this position (a new close request).
    CloseAccepted,
    /// The broker took the attempt's order.
    OrderSubmitted,
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

impl CloseEvent {
    pub const ALL: [CloseEvent; 10] = [
        CloseEvent::CloseAccepted,
        CloseEvent::OrderSubmitted,
        CloseEvent::FullyFilled,
        CloseEvent::PartialCloseFilled,
        CloseEvent::PartiallyFilledAndEnded,
        CloseEvent::EndedUnfilled,
        CloseEvent::BrokerRejected,
        CloseEvent::RetryStarted,
        CloseEvent::NeedsAttention,
        CloseEvent::ManualRetry,
    ];
}

/// A position's status with its latest close request's (`None`: it never had one).
pub type Pair = (PositionStatus, Option<CloseRequestStatus>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: position `{from}`, close request `{}` --{event}-->", .close_request.unwrap_or("none"))]
pub struct IllegalTransition {
    /// The position's status.
    pub from: &'static str,
    pub close_request: Option<&'static str>,
    pub event: String,
}

use CloseEvent as E;
use CloseRequestStatus as C;
use PositionStatus as P;

/// Every legal move: (from, event, to). The only table of them.
const MOVES: &[(Pair, CloseEvent, (PositionStatus, CloseRequestStatus))] = &[
    // A trader clicks Close on an open position: never closed before, its last close
    // failed and was given up, or its last close was a partial one that completed.
    ((P::Open, None), E::CloseAccepted, (P::Closing, C::Pending)),
    ((P::Open, Some(C::Failed)), E::CloseAccepted, (P::Closing, C::Pending)),
    (
        (P::Open, Some(C::Completed)),
        E::CloseAccepted,
        (P::Closing, C::Pending),
    ),
    // The submitter placed the order and the broker took it.
    (
        (P::Closing, Some(C::Pending)),
        E::OrderSubmitted,
        (P::Closing, C::Submitted),
    ),
    // Outcomes are legal before the submission is recorded too: a broker may report a
    // fast fill before the submitter's write lands.
    (
        (P::Closing, Some(C::Pending)),
        E::FullyFilled,
        (P::Closed, C::Completed),
    ),
    (
        (P::Closing, Some(C::Submitted)),
        E::FullyFilled,
        (P::Closed, C::Completed),
    ),
    // A trader closes 3 of 10: the other 7 stay open to trade or close.
    (
        (P::Closing, Some(C::Pending)),
        E::PartialCloseFilled,
        (P::Open, C::Completed),
    ),
    (
        (P::Closing, Some(C::Submitted)),
        E::PartialCloseFilled,
        (P::Open, C::Completed),
    ),
    // Thin liquidity: 4 of 10 filled before the day order expired; the rest is retried.
    (
        (P::Closing, Some(C::Pending)),
        E::PartiallyFilledAndEnded,
        (P::CloseRetryable, C::Retryable),
    ),
    (
        (P::Closing, Some(C::Submitted)),
        E::PartiallyFilledAndEnded,
        (P::CloseRetryable, C::Retryable),
    ),
    // Canceled (by the trader, or a limit never reached) with nothing filled: still open.
    ((P::Closing, Some(C::Pending)), E::EndedUnfilled, (P::Open, C::Failed)),
    ((P::Closing, Some(C::Submitted)), E::EndedUnfilled, (P::Open, C::Failed)),
    // The broker refuses the order (shares held by another order, invalid symbol).
    (
        (P::Closing, Some(C::Pending)),
        E::BrokerRejected,
        (P::CloseFailed, C::Failed),
    ),
    // The order never reached the broker after its re-drives, or the broker lost it.
    (
        (P::Closing, Some(C::Pending)),
        E::NeedsAttention,
        (P::CloseFailed, C::Failed),
    ),
    (
        (P::Closing, Some(C::Submitted)),
        E::NeedsAttention,
        (P::CloseFailed, C::Failed),
    ),
    // The reconciler retries what is left, until the attempts run out.
    (
        (P::CloseRetryable, Some(C::Retryable)),
        E::RetryStarted,
        (P::Closing, C::Pending),
    ),
    (
        (P::CloseRetryable, Some(C::Retryable)),
        E::NeedsAttention,
        (P::CloseFailed, C::Failed),
    ),
    // The trader fixed the cause (freed the shares, changed the limit) and tries again
    // for what remains, under the same close request.
    (
        (P::CloseFailed, Some(C::Failed)),
        E::ManualRetry,
        (P::Closing, C::Pending),
    ),
];

/// Where `event` takes the pair, or why it cannot happen.
pub fn step(from: Pair, event: CloseEvent) -> Result<(PositionStatus, CloseRequestStatus), IllegalTransition> {
    MOVES
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(IllegalTransition {
            from: from.0.as_str(),
            close_request: from.1.map(|c| c.as_str()),
            event: format!("{event:?}"),
        })
}

/// Whether a position and its latest close request can stand together: a new position, or
/// where some move leads.
pub fn reachable(pair: Pair) -> bool {
    pair == (P::Open, None) || MOVES.iter().any(|(_, _, to)| (to.0, Some(to.1)) == pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<Pair> {
        let mut out = vec![];
        for p in P::ALL.iter().copied() {
            out.push((p, None));
            for c in C::ALL.iter().copied() {
                out.push((p, Some(c)));
            }
        }
        out
    }

    #[test]
    fn seed_000_paths_are_legal() {
        let open = (P::Open, None);
        let closing = step(open, E::CloseAccepted).unwrap();
        assert_eq!(closing, (P::Closing, C::Pending));
        let submitted = step((closing.0, Some(closing.1)), E::OrderSubmitted).unwrap();
        assert_eq!(submitted, (P::Closing, C::Submitted));
        let s = (submitted.0, Some(submitted.1));
        assert_eq!(step(s, E::FullyFilled), Ok((P::Closed, C::Completed)));
        assert_eq!(
            step(s, E::PartiallyFilledAndEnded),
            Ok((P::CloseRetryable, C::Retryable))
        );
        assert_eq!(step(s, E::EndedUnfilled), Ok((P::Open, C::Failed)));
        assert_eq!(step(s, E::PartialCloseFilled), Ok((P::Open, C::Completed)));
        let retryable = (P::CloseRetryable, Some(C::Retryable));
        assert_eq!(step(retryable, E::RetryStarted), Ok((P::Closing, C::Pending)));
        assert_eq!(step(retryable, E::NeedsAttention), Ok((P::CloseFailed, C::Failed)));
        assert_eq!(
            step((P::CloseFailed, Some(C::Failed)), E::ManualRetry),
            Ok((P::Closing, C::Pending))
        );
    }

    #[test]
    fn closed_accepts_nothing_and_close_failed_only_a_manual_retry() {
        for e in CloseEvent::ALL {
            let err = step((P::Closed, Some(C::Completed)), e).unwrap_err();
            assert_eq!((err.from, err.close_request), ("closed", Some("completed")));
            if e != E::ManualRetry {
                assert!(step((P::CloseFailed, Some(C::Failed)), e).is_err(), "{e:?}");
            }
        }
    }

    #[test]
    fn an_open_position_only_accepts_a_close() {
        for from in [
            (P::Open, None),
            (P::Open, Some(C::Failed)),
            (P::Open, Some(C::Completed)),
        ] {
            let legal: Vec<_> = CloseEvent::ALL.into_iter().filter(|e| step(from, *e).is_ok()).collect();
            assert_eq!(legal, [E::CloseAccepted], "{from:?}");
        }
    }

    #[test]
    fn the_table_is_deterministic_and_every_move_lands_on_a_reachable_pair() {
        for (i, (from, e, to)) in MOVES.iter().enumerate() {
            assert!(
                MOVES[i + 1..].iter().all(|(f, e2, _)| (f, e2) != (from, e)),
                "{from:?} {e:?} twice"
            );
            assert!(reachable(*from), "{from:?} can never happen");
            assert!(reachable((to.0, Some(to.1))));
        }
        assert_eq!(MOVES.len(), 18);
    }

    #[test]
    fn the_reachable_pairs_are_exactly_the_seeds_legal_pairs() {
        let legal: Vec<Pair> = pairs().into_iter().filter(|p| reachable(*p)).collect();
        assert_eq!(
            legal,
            vec![
                (P::Open, None),
                (P::Open, Some(C::Completed)),
                (P::Open, Some(C::Failed)),
                (P::Closing, Some(C::Pending)),
                (P::Closing, Some(C::Submitted)),
                (P::Closed, Some(C::Completed)),
                (P::CloseRetryable, Some(C::Retryable)),
                (P::CloseFailed, Some(C::Failed)),
            ]
        );
    }

    #[test]
    fn completed_close_requests_never_move() {
        for e in CloseEvent::ALL {
            assert!(step((P::Closed, Some(C::Completed)), e).is_err());
        }
        assert!(step((P::Open, Some(C::Failed)), E::FullyFilled).is_err());
    }
}
