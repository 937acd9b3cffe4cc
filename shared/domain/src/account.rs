//! Per-account bookkeeping: how many live (not yet closed) positions an account holds,
//! so one caller cannot grow the store without bound (the per-account quota). A position
//! counts from its registration until it closes; closed positions leave the store after
//! retention on their own (TTL, cleanup), so the count never waits on deletion.

use crate::ids::AccountId;
use crate::model::PositionAggregate;
use crate::status::PositionStatus;

/// What an account may do (Nautilus' ACTIVE/REDUCING/HALTED): while `Liquidating` or
/// `Halted`, nothing that adds exposure is accepted; closes, cancels and sync go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradingState {
    Active,
    Liquidating,
    Halted,
}

impl TradingState {
    pub const ALL: [TradingState; 3] = [TradingState::Active, TradingState::Liquidating, TradingState::Halted];

    pub fn as_str(&self) -> &'static str {
        match self {
            TradingState::Active => "active",
            TradingState::Liquidating => "liquidating",
            TradingState::Halted => "halted",
        }
    }

    pub fn parse(s: &str) -> Option<TradingState> {
        TradingState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether new exposure (a new position, a larger one) may be taken on.
    pub fn accepts_exposure(&self) -> bool {
        *self == TradingState::Active
    }
}

/// An account's trading state and who set it last. Version 0: never written (active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub account_id: AccountId,
    pub trading_state: TradingState,
    /// Bumped on every write; the optimistic-concurrency token of the stores.
    pub version: u64,
    pub changed_at: Option<crate::Timestamp>,
    pub changed_by: Option<String>,
    pub reason: Option<String>,
}

impl AccountState {
    pub fn new(account_id: AccountId) -> Self {
        AccountState {
            account_id,
            trading_state: TradingState::Active,
            version: 0,
            changed_at: None,
            changed_by: None,
            reason: None,
        }
    }
}

/// What moves an account between trading states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradingStateEvent {
    /// An emergency liquidation begins (again, if one left something behind).
    LiquidationStarted,
    /// The liquidation is over (flat, or out of attempts): the account stays paused.
    LiquidationEnded,
    /// A human resumes trading.
    Resumed,
}

/// The legal moves, one row each. Anything else is refused.
const TRADING_MOVES: &[(TradingState, TradingStateEvent, TradingState)] = &[
    // An operator (or a guard) pulls the plug on a normal account.
    (
        TradingState::Active,
        TradingStateEvent::LiquidationStarted,
        TradingState::Liquidating,
    ),
    // A paused account whose last liquidation left positions behind is liquidated again.
    (
        TradingState::Halted,
        TradingStateEvent::LiquidationStarted,
        TradingState::Liquidating,
    ),
    // Liquidation never hands control back by itself: a human must look first.
    (
        TradingState::Liquidating,
        TradingStateEvent::LiquidationEnded,
        TradingState::Halted,
    ),
    (TradingState::Halted, TradingStateEvent::Resumed, TradingState::Active),
    // Resuming an active account is a harmless repeat (a retried click).
    (TradingState::Active, TradingStateEvent::Resumed, TradingState::Active),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("`{event:?}` is not a legal move from `{from}`")]
pub struct IllegalTradingMove {
    pub from: &'static str,
    pub event: TradingStateEvent,
}

/// The account after `event`: `Ok(None)` when it is already where the event leads (nothing
/// to write), `Err` when the move is not in the table.
pub fn decide_trading_state(
    current: &AccountState,
    event: TradingStateEvent,
    actor: &str,
    reason: Option<&str>,
    now: crate::Timestamp,
) -> Result<Option<AccountState>, IllegalTradingMove> {
    let to = TRADING_MOVES
        .iter()
        .find(|(from, e, _)| *from == current.trading_state && *e == event)
        .map(|(_, _, to)| *to)
        .ok_or(IllegalTradingMove {
            from: current.trading_state.as_str(),
            event,
        })?;
    if to == current.trading_state {
        return Ok(None);
    }
    Ok(Some(AccountState {
        account_id: current.account_id.clone(),
        trading_state: to,
        version: current.version + 1,
        changed_at: Some(now),
        changed_by: Some(actor.to_string()),
        reason: reason.map(str::to_string),
    }))
}

/// Whether writing `after` over `before` adds exposure: a new position, a larger absolute
/// quantity, or a quantity that turns from long to short (or back).
pub fn adds_exposure(before: Option<&crate::Position>, after: &crate::Position) -> bool {
    match before {
        None => !after.quantity.is_zero(),
        Some(b) => {
            after.quantity.abs() > b.quantity.abs()
                || (!after.quantity.is_zero() && after.quantity.is_negative() != b.quantity.is_negative())
        }
    }
}

/// A change of one account's live-position count, carried out atomically with the
/// position write that causes it. `ceiling`: refuse the write if the count would exceed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountChange {
    pub account: AccountId,
    pub delta: i64,
    pub ceiling: Option<u64>,
    /// Only while the account accepts new exposure (its trading state is `active`).
    pub require_active: bool,
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
                require_active: false,
            })
            .into_iter()
            .chain(now.map(|b| CountChange {
                account: b.clone(),
                delta: 1,
                ceiling: Some(limit),
                require_active: false,
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
    fn trading_states_move_only_along_the_table() {
        use TradingStateEvent::*;
        let t = crate::testing::t0();
        let active = AccountState::new(AccountId::parse("a").unwrap());
        let liq = decide_trading_state(&active, LiquidationStarted, "ops", Some("margin"), t)
            .unwrap()
            .unwrap();
        assert_eq!((liq.trading_state, liq.version), (TradingState::Liquidating, 1));
        assert_eq!(
            (liq.changed_by.as_deref(), liq.reason.as_deref()),
            (Some("ops"), Some("margin"))
        );
        assert!(
            decide_trading_state(&liq, Resumed, "ops", None, t).is_err(),
            "not mid-liquidation"
        );
        assert!(decide_trading_state(&liq, LiquidationStarted, "ops", None, t).is_err());
        let halted = decide_trading_state(&liq, LiquidationEnded, "liquidation", None, t)
            .unwrap()
            .unwrap();
        assert_eq!(halted.trading_state, TradingState::Halted);
        let again = decide_trading_state(&halted, LiquidationStarted, "ops", None, t)
            .unwrap()
            .unwrap();
        assert_eq!(again.trading_state, TradingState::Liquidating);
        let resumed = decide_trading_state(&halted, Resumed, "ops", None, t).unwrap().unwrap();
        assert_eq!((resumed.trading_state, resumed.version), (TradingState::Active, 3));
        assert_eq!(
            decide_trading_state(&resumed, Resumed, "ops", None, t),
            Ok(None),
            "a repeat writes nothing"
        );
        assert!(decide_trading_state(&active, LiquidationEnded, "x", None, t).is_err());
        for s in TradingState::ALL {
            assert_eq!(TradingState::parse(s.as_str()), Some(s));
            assert_eq!(s.accepts_exposure(), s == TradingState::Active);
        }
    }

    #[test]
    fn exposure_grows_with_new_larger_or_flipped_positions_only() {
        let p = |q: &str| crate::testing::position("p", q, PositionStatus::Open);
        assert!(adds_exposure(None, &p("1")));
        assert!(adds_exposure(Some(&p("5")), &p("6")));
        assert!(adds_exposure(Some(&p("-5")), &p("-6")));
        assert!(adds_exposure(Some(&p("5")), &p("-2")), "long to short is new exposure");
        assert!(!adds_exposure(Some(&p("5")), &p("4")));
        assert!(!adds_exposure(Some(&p("-5")), &p("-5")));
        assert!(!adds_exposure(Some(&p("5")), &p("0")));
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
