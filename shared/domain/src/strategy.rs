//! A strategy (an iron condor, a spread) is the positions sharing a `strategy_id`: its legs.
//! Its status is derived from theirs, never stored, so it cannot drift from them.

use crate::model::Position;
use crate::status::PositionStatus as P;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyStatus {
    Open,
    Closing,
    Closed,
    /// Some legs closed, the others open: a hedge may be missing.
    PartiallyClosed,
    /// A leg's close failed: a human must look before the legs drift further apart.
    CloseFailed,
}

impl StrategyStatus {
    pub const ALL: [StrategyStatus; 5] = [
        StrategyStatus::Open,
        StrategyStatus::Closing,
        StrategyStatus::Closed,
        StrategyStatus::PartiallyClosed,
        StrategyStatus::CloseFailed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StrategyStatus::Open => "open",
            StrategyStatus::Closing => "closing",
            StrategyStatus::Closed => "closed",
            StrategyStatus::PartiallyClosed => "partially_closed",
            StrategyStatus::CloseFailed => "close_failed",
        }
    }
}

/// The status of a strategy with these legs. Most urgent first: a failed leg, then any leg
/// still closing (or waiting for a retry), then how many are closed.
pub fn strategy_status(legs: &[Position]) -> StrategyStatus {
    let any = |s: P| legs.iter().any(|l| l.status == s);
    if any(P::CloseFailed) {
        StrategyStatus::CloseFailed
    } else if any(P::Closing) || any(P::CloseRetryable) {
        StrategyStatus::Closing
    } else if !legs.is_empty() && legs.iter().all(|l| l.status == P::Closed) {
        StrategyStatus::Closed
    } else if any(P::Closed) {
        StrategyStatus::PartiallyClosed
    } else {
        StrategyStatus::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::position;

    fn legs(statuses: &[P]) -> Vec<Position> {
        statuses
            .iter()
            .enumerate()
            .map(|(i, s)| position(&format!("leg-{i}"), "1", *s))
            .collect()
    }

    #[test]
    fn a_strategys_status_follows_its_most_urgent_leg() {
        use StrategyStatus as S;
        let cases: [(&[P], S); 7] = [
            (&[P::Open, P::Open], S::Open),
            (&[P::Open, P::Closing], S::Closing),
            (&[P::Closed, P::CloseRetryable], S::Closing),
            (&[P::Closed, P::Closed], S::Closed),
            (&[P::Closed, P::Open], S::PartiallyClosed),
            (&[P::Closing, P::CloseFailed], S::CloseFailed),
            (&[P::Closed, P::CloseFailed], S::CloseFailed),
        ];
        for (statuses, want) in cases {
            assert_eq!(strategy_status(&legs(statuses)), want, "{statuses:?}");
        }
        let names: Vec<_> = S::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["open", "closing", "closed", "partially_closed", "close_failed"]);
    }
}
