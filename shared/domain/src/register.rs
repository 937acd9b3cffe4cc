//! Registering or updating a position (PUT /positions/{id}).

use crate::ids::{AccountId, PositionId};
use crate::model::{AssetType, Position, PositionAggregate};
use crate::quantity::Quantity;
use crate::status::PositionStatus;
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterPosition {
    pub position_id: PositionId,
    pub account_id: AccountId,
    pub symbol: String,
    pub asset_type: AssetType,
    pub quantity: Quantity,
    pub avg_entry_price: Option<crate::Price>,
    pub strategy_id: Option<String>,
    /// Overrides the asset type's default multiplier (100 per option contract, 1 per share).
    pub multiplier: Option<rust_decimal::Decimal>,
    /// Where it comes from: `None` through the API, `Some("broker")` adopted by sync. Kept
    /// as first registered: a later PUT does not change it.
    pub source: Option<String>,
    /// Who registers it (the signed-in caller, or `sync`), for the audit trail.
    pub actor: String,
    /// The caller's accounts: both the new and any stored account must be among them.
    pub access: crate::Access,
    /// The account's quota of live positions (a new position beyond it is refused).
    pub max_live_positions: u64,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterDecision {
    Created(Position),
    Updated(Position),
    /// Same data as stored: nothing to write (PUT is idempotent).
    Unchanged(Position),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterRejection {
    /// A position that is closing (or closed, failed, ...) cannot change what is being closed.
    PositionNotOpen(PositionStatus),
    /// Another position id already holds this id's routing key (about 1 in 2^60 per pair).
    RoutingKeyTaken(PositionId),
    /// The caller may not act on this account (the requested one, or the stored one).
    Forbidden,
    /// The account already holds its quota of live positions.
    QuotaExceeded { limit: u64 },
    /// The account liquidates or is halted: nothing may add exposure.
    AccountHalted(crate::TradingState),
}

/// Decides a registration against the stored aggregate.
pub fn decide_register(
    current: Option<&PositionAggregate>,
    cmd: &RegisterPosition,
) -> Result<RegisterDecision, RegisterRejection> {
    if !cmd.access.allows(&cmd.account_id) {
        return Err(RegisterRejection::Forbidden);
    }
    let Some(agg) = current else {
        return Ok(RegisterDecision::Created(Position {
            id: cmd.position_id.clone(),
            account_id: cmd.account_id.clone(),
            symbol: cmd.symbol.clone(),
            asset_type: cmd.asset_type,
            quantity: cmd.quantity,
            avg_entry_price: cmd.avg_entry_price,
            strategy_id: cmd.strategy_id.clone(),
            status: PositionStatus::Open,
            active_close_request_id: None,
            closed_at: None,
            created_at: cmd.now,
            updated_at: cmd.now,
            version: 1,
            source: cmd.source.clone(),
            sync: None,
            multiplier: cmd.multiplier,
            realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
        }));
    };
    let old = &agg.position;
    if old.id != cmd.position_id {
        return Err(RegisterRejection::RoutingKeyTaken(old.id.clone()));
    }
    if !cmd.access.allows(&old.account_id) {
        return Err(RegisterRejection::Forbidden);
    }
    let same = old.account_id == cmd.account_id
        && old.symbol == cmd.symbol
        && old.asset_type == cmd.asset_type
        && old.quantity == cmd.quantity
        && old.avg_entry_price == cmd.avg_entry_price
        && old.strategy_id == cmd.strategy_id
        && old.multiplier == cmd.multiplier;
    if same {
        return Ok(RegisterDecision::Unchanged(old.clone()));
    }
    if old.status != PositionStatus::Open {
        return Err(RegisterRejection::PositionNotOpen(old.status));
    }
    let mut next = old.clone();
    next.account_id = cmd.account_id.clone();
    next.symbol = cmd.symbol.clone();
    next.asset_type = cmd.asset_type;
    next.quantity = cmd.quantity;
    next.avg_entry_price = cmd.avg_entry_price;
    next.strategy_id = cmd.strategy_id.clone();
    next.multiplier = cmd.multiplier;
    next.updated_at = cmd.now;
    next.version += 1;
    Ok(RegisterDecision::Updated(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cmd(qty: i64) -> RegisterPosition {
        RegisterPosition {
            source: None,
            actor: "tester".into(),
            position_id: PositionId::parse("p").unwrap(),
            account_id: AccountId::parse("a").unwrap(),
            symbol: "AAPL".into(),
            asset_type: AssetType::Equity,
            quantity: Quantity::from(qty),
            avg_entry_price: None,
            strategy_id: None,
            multiplier: None,
            access: crate::Access::All,
            max_live_positions: 100,
            now: chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn new_positions_start_open_at_version_1() {
        let Ok(RegisterDecision::Created(p)) = decide_register(None, &cmd(5)) else {
            panic!("expected Created")
        };
        assert_eq!((p.status, p.version), (PositionStatus::Open, 1));
    }

    #[test]
    fn an_open_position_takes_a_new_quantity_and_a_closing_one_refuses() {
        let Ok(RegisterDecision::Created(p)) = decide_register(None, &cmd(5)) else {
            panic!()
        };
        let mut agg = PositionAggregate::new(p);
        let Ok(RegisterDecision::Updated(u)) = decide_register(Some(&agg), &cmd(8)) else {
            panic!()
        };
        assert_eq!((u.quantity, u.version), (Quantity::from(8), 2));
        assert!(matches!(
            decide_register(Some(&agg), &cmd(5)),
            Ok(RegisterDecision::Unchanged(_))
        ));
        agg.position.status = PositionStatus::Closing;
        assert_eq!(
            decide_register(Some(&agg), &cmd(8)),
            Err(RegisterRejection::PositionNotOpen(PositionStatus::Closing))
        );
        // Re-sending the identical registration is harmless in any state.
        assert!(matches!(
            decide_register(Some(&agg), &cmd(5)),
            Ok(RegisterDecision::Unchanged(_))
        ));
    }

    #[test]
    fn a_stored_position_with_another_id_is_a_routing_collision_not_an_update() {
        let Ok(RegisterDecision::Created(p)) = decide_register(None, &cmd(5)) else {
            panic!()
        };
        let agg = PositionAggregate::new(p);
        let mut other = cmd(5);
        other.position_id = PositionId::parse("q").unwrap();
        assert_eq!(
            decide_register(Some(&agg), &other),
            Err(RegisterRejection::RoutingKeyTaken(PositionId::parse("p").unwrap()))
        );
    }
}
