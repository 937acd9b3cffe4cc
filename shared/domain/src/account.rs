//! Per-account bookkeeping: how many live (not yet closed) positions an account holds,
//! so one caller cannot grow the store without bound (the per-account quota). A position
//! counts from its registration until it closes; closed positions leave the store after
//! retention on their own (TTL, cleanup), so the count never waits on deletion.

use crate::ids::AccountId;
use crate::model::PositionAggregate;
use crate::status::PositionStatus;

/// A change of one account's live-position count, carried out atomically with the
/// position write that causes it. `ceiling`: refuse the write if the count would exceed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountChange {
    pub account: AccountId,
    pub delta: i64,
    pub ceiling: Option<u64>,
}

fn live(agg: Option<&PositionAggregate>) -> Option<&AccountId> {
    agg.filter(|a| a.position.status != PositionStatus::Closed)
        .map(|a| &a.position.account_id)
}

/// What a position write does to the counts: +1 for a position that becomes live on an
/// account (capped at `limit`), -1 for one that stops being live there (closed, deleted,
/// or moved to another account).
pub fn count_changes(
    before: Option<&PositionAggregate>,
    after: Option<&PositionAggregate>,
    limit: u64,
) -> Vec<CountChange> {
    match (live(before), live(after)) {
        (Some(a), Some(b)) if a == b => Vec::new(),
        (was, now) => was
            .map(|a| CountChange {
                account: a.clone(),
                delta: -1,
                ceiling: None,
            })
            .into_iter()
            .chain(now.map(|b| CountChange {
                account: b.clone(),
                delta: 1,
                ceiling: Some(limit),
            }))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(account: &str, status: PositionStatus) -> PositionAggregate {
        let mut a = crate::testing::aggregate("p", "1", status);
        a.position.account_id = AccountId::parse(account).unwrap();
        a
    }

    #[test]
    fn a_position_counts_from_registration_until_it_closes() {
        let open = agg("a", PositionStatus::Open);
        let closing = agg("a", PositionStatus::Closing);
        let closed = agg("a", PositionStatus::Closed);
        let plus = count_changes(None, Some(&open), 7);
        assert_eq!(plus.len(), 1);
        assert_eq!((plus[0].delta, plus[0].ceiling), (1, Some(7)));
        assert!(count_changes(Some(&open), Some(&closing), 7).is_empty());
        let minus = count_changes(Some(&closing), Some(&closed), 7);
        assert_eq!((minus.len(), minus[0].delta, minus[0].ceiling), (1, -1, None));
        assert!(
            count_changes(Some(&closed), None, 7).is_empty(),
            "closed positions were released already"
        );
        assert_eq!(count_changes(Some(&open), None, 7)[0].delta, -1);
    }

    #[test]
    fn moving_a_position_to_another_account_moves_its_count() {
        let c = count_changes(
            Some(&agg("a", PositionStatus::Open)),
            Some(&agg("b", PositionStatus::Open)),
            3,
        );
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].account.as_str(), c[0].delta), ("a", -1));
        assert_eq!((c[1].account.as_str(), c[1].delta, c[1].ceiling), ("b", 1, Some(3)));
    }
}
