//! The close's state machine. A position and its latest close request always move
//! together, so they are one table of legal moves over the pair (position status, close
//! request status): every row says what a real-world event does to both, anything else is
//! a typed [`IllegalTransition`]. The invariant checker's "legal pair" is derived from the
//! same table ([`reachable`]), so the two can never disagree.
//!
//! A strategy close's status is derived from its legs' close requests, each moving by that
//! table; the moves its status can make are the second table here
//! ([`STRATEGY_CLOSE_MOVES`]), and the tests prove the two tables agree.

use crate::status::{CloseRequestStatus, PositionStatus};
use crate::strategy_close::StrategyCloseStatus;

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

use StrategyCloseStatus as S;

/// Every move of a strategy close's status: (from, to). The status is derived from the legs'
/// close requests ([`crate::strategy_close::strategy_close_status`]) and each leg moves by
/// [`MOVES`], one leg at a time; these are exactly the changes of the derived status such a
/// move can make. A completed close request never moves, so `success` has no row out.
pub const STRATEGY_CLOSE_MOVES: &[(StrategyCloseStatus, StrategyCloseStatus)] = &[
    // Every leg filled: the last working leg's order filled (a multi-leg order fills all
    // legs at once).
    (S::Pending, S::Success),
    // The last working leg ended and some leg filled but not all: the call leg filled, the
    // put leg's order was rejected. A hedge may be missing.
    (S::Pending, S::Partial),
    // Every leg failed: the broker refused the multi-leg order, the trader canceled before
    // anything filled, or the orders never reached the broker.
    (S::Pending, S::Error),
    // A human retries a failed leg: the manual retry reopens that leg's close request. Only
    // a leg the broker refused or lost (`close_failed`) can be retried; a leg canceled
    // unfilled is `open` again, and closing it is a new close, not this strategy close.
    (S::Partial, S::Pending),
    (S::Error, S::Pending),
];

/// Whether one leg's move may take a strategy close from `from` to `to`. Staying put is no
/// move and always legal: most leg moves (an order submitted, the reconciler retrying a
/// leg while another still works) leave the derived status as it was.
pub fn strategy_close_step_legal(from: StrategyCloseStatus, to: StrategyCloseStatus) -> bool {
    from == to || STRATEGY_CLOSE_MOVES.contains(&(from, to))
}

/// Whether a strategy close seen at `from` may later be seen at `to`: by any number of
/// moves of [`STRATEGY_CLOSE_MOVES`] (an observer between leg moves can miss some).
pub fn strategy_close_may_become(from: StrategyCloseStatus, to: StrategyCloseStatus) -> bool {
    let mut seen = vec![from];
    let mut i = 0;
    while let Some(at) = seen.get(i).copied() {
        for (f, t) in STRATEGY_CLOSE_MOVES {
            if *f == at && !seen.contains(t) {
                seen.push(*t);
            }
        }
        i += 1;
    }
    seen.contains(&to)
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

    #[test]
    fn a_strategy_close_may_become_anything_through_pending_but_success_is_final() {
        use crate::strategy_close::StrategyCloseStatus as S;
        let all = [S::Pending, S::Success, S::Partial, S::Error];
        for to in all {
            assert_eq!(strategy_close_may_become(S::Success, to), to == S::Success, "{to:?}");
            assert!(strategy_close_may_become(S::Pending, to));
            assert!(strategy_close_may_become(S::Partial, to));
        }
    }

    mod strategy_close {
        use std::collections::{HashSet, VecDeque};

        use proptest::prelude::*;

        use super::super::*;
        use crate::strategy_close::strategy_close_status;

        /// A leg as its strategy close sees it: the position with its latest close request,
        /// and the status of the close request the strategy close made. A new close of the
        /// position leaves that one in the history as it ended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        struct Leg {
            latest: (P, C),
            tagged: C,
            superseded: bool,
        }

        impl Leg {
            /// What a strategy close writes for every leg.
            const START: Leg = Leg {
                latest: (P::Closing, C::Pending),
                tagged: C::Pending,
                superseded: false,
            };

            /// The leg after `event`, or `None` when the leg table has no such move.
            fn apply(self, event: CloseEvent) -> Option<Leg> {
                let latest = step((self.latest.0, Some(self.latest.1)), event).ok()?;
                let superseded = self.superseded || event == E::CloseAccepted;
                let tagged = if superseded { self.tagged } else { latest.1 };
                Some(Leg {
                    latest,
                    tagged,
                    superseded,
                })
            }

            fn key(&self) -> (u8, u8, u8, bool) {
                (
                    self.latest.0 as u8,
                    self.latest.1 as u8,
                    self.tagged as u8,
                    self.superseded,
                )
            }
        }

        fn status(legs: &[Leg]) -> S {
            let statuses: Vec<C> = legs.iter().map(|l| l.tagged).collect();
            strategy_close_status(&statuses)
        }

        /// Events, each on the leg at its index.
        type LegMoves = Vec<(usize, CloseEvent)>;

        /// Where `legs` legs driven through `moves` end, and every change of the derived
        /// status on the way; each move must be legal.
        fn drive(legs: usize, moves: &[(usize, CloseEvent)]) -> (S, Vec<(S, S)>) {
            let mut legs = vec![Leg::START; legs];
            let mut seen = vec![];
            for (i, e) in moves {
                let before = status(&legs);
                legs[*i] = legs[*i]
                    .apply(*e)
                    .unwrap_or_else(|| panic!("leg {i}: {e:?} from {:?}", legs[*i]));
                let after = status(&legs);
                if after != before {
                    seen.push((before, after));
                }
            }
            (status(&legs), seen)
        }

        #[test]
        fn every_strategy_close_move_happens_in_a_real_close() {
            use CloseEvent::*;
            let (call, put) = (0, 1);
            let cases: [(&str, LegMoves, S); 6] = [
                (
                    "every leg filled",
                    vec![
                        (call, OrderSubmitted),
                        (put, OrderSubmitted),
                        (call, FullyFilled),
                        (put, FullyFilled),
                    ],
                    S::Success,
                ),
                (
                    "the call leg filled, the put leg's order was rejected",
                    vec![(call, OrderSubmitted), (call, FullyFilled), (put, BrokerRejected)],
                    S::Partial,
                ),
                (
                    "the broker refused the multi-leg order",
                    vec![(call, BrokerRejected), (put, BrokerRejected)],
                    S::Error,
                ),
                (
                    "the trader canceled before anything filled",
                    vec![
                        (call, OrderSubmitted),
                        (put, OrderSubmitted),
                        (call, EndedUnfilled),
                        (put, EndedUnfilled),
                    ],
                    S::Error,
                ),
                (
                    "the rejected put leg is retried by hand and fills",
                    vec![
                        (call, FullyFilled),
                        (put, BrokerRejected),
                        (put, ManualRetry),
                        (put, OrderSubmitted),
                        (put, FullyFilled),
                    ],
                    S::Success,
                ),
                (
                    "a refused multi-leg order is retried leg by leg by hand",
                    vec![
                        (call, BrokerRejected),
                        (put, BrokerRejected),
                        (call, ManualRetry),
                        (put, ManualRetry),
                    ],
                    S::Pending,
                ),
            ];
            let mut exercised = HashSet::new();
            for (case, moves, want) in cases {
                let (end, seen) = drive(2, &moves);
                assert_eq!(end, want, "{case}");
                for m in seen {
                    assert!(STRATEGY_CLOSE_MOVES.contains(&m), "{case}: {m:?}");
                    exercised.insert(m);
                }
            }
            for row in STRATEGY_CLOSE_MOVES {
                assert!(exercised.contains(row), "no real close makes {row:?}");
            }
        }

        #[test]
        fn the_strategy_close_table_is_exactly_what_the_leg_table_allows() {
            // Every state 1 to 4 legs can reach from what a strategy close writes, every
            // event on every leg: the changes of the derived status are the table's rows,
            // no more (an illegal move) and no fewer (a dead row).
            let mut moves = HashSet::new();
            for n in 1..=4 {
                let start = vec![Leg::START; n];
                let mut seen = HashSet::from([start.clone()]);
                let mut queue = VecDeque::from([start]);
                while let Some(legs) = queue.pop_front() {
                    for i in 0..n {
                        for e in CloseEvent::ALL {
                            let Some(leg) = legs[i].apply(e) else { continue };
                            let mut next = legs.clone();
                            next[i] = leg;
                            let (from, to) = (status(&legs), status(&next));
                            if from != to {
                                moves.insert((from, to));
                            }
                            // Legs are interchangeable: one state per multiset.
                            next.sort_by_key(Leg::key);
                            if seen.insert(next.clone()) {
                                queue.push_back(next);
                            }
                        }
                    }
                }
            }
            let table: HashSet<_> = STRATEGY_CLOSE_MOVES.iter().copied().collect();
            assert_eq!(table.len(), STRATEGY_CLOSE_MOVES.len(), "a row twice");
            assert_eq!(moves, table);
        }

        #[test]
        fn success_is_final() {
            assert!(STRATEGY_CLOSE_MOVES.iter().all(|(from, _)| *from != S::Success));
            for to in [S::Pending, S::Partial, S::Error] {
                assert!(!strategy_close_step_legal(S::Success, to), "{to:?}");
            }
            // Whole legs closed, or a partial close of the strategy filled (the rest of each
            // leg stays open, and a new close of it is not this strategy close).
            for filled in [(P::Closed, C::Completed), (P::Open, C::Completed)] {
                let legs = [
                    Leg {
                        latest: filled,
                        tagged: C::Completed,
                        superseded: false,
                    },
                    Leg {
                        latest: (P::Closed, C::Completed),
                        tagged: C::Completed,
                        superseded: false,
                    },
                ];
                assert_eq!(status(&legs), S::Success);
                for i in 0..legs.len() {
                    for e in CloseEvent::ALL {
                        let mut next = legs;
                        if let Some(leg) = legs[i].apply(e) {
                            next[i] = leg;
                            assert_eq!(status(&next), S::Success, "leg {i}: {e:?}");
                        }
                    }
                }
            }
        }

        #[test]
        fn a_strategy_close_canceled_unfilled_stays_an_error() {
            // Canceled legs are `open` again, not `close_failed`: no manual retry reopens
            // them, and a new close of a leg leaves this strategy close as it ended.
            let (end, _) = drive(2, &[(0, E::EndedUnfilled), (1, E::EndedUnfilled)]);
            assert_eq!(end, S::Error);
            let canceled = Leg::START.apply(E::EndedUnfilled).unwrap();
            assert_eq!(canceled.apply(E::ManualRetry), None);
            let closed_again = canceled.apply(E::CloseAccepted).unwrap();
            assert_eq!(status(&[canceled, closed_again]), S::Error);
        }

        proptest! {
            #[test]
            fn random_leg_moves_change_a_strategy_close_only_along_its_table(
                n in 2usize..=4,
                moves in proptest::collection::vec(
                    (any::<proptest::sample::Index>(), proptest::sample::select(CloseEvent::ALL.to_vec())),
                    0..60,
                ),
            ) {
                let mut legs = vec![Leg::START; n];
                for (pick, e) in moves {
                    let i = pick.index(n);
                    let Some(leg) = legs[i].apply(e) else { continue };
                    let before = status(&legs);
                    legs[i] = leg;
                    let after = status(&legs);
                    prop_assert!(
                        strategy_close_step_legal(before, after),
                        "{:?} -> {:?} by {:?} on leg {}: {:?}", before, after, e, i, legs
                    );
                }
            }
        }
    }
}
