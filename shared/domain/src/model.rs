//! Positions, close requests and the idempotency records that tie them together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::close::Fingerprint;
use crate::ids::{AccountId, CloseRequestId, IdempotencyKey, PositionId};
use crate::options::OrderOptions;
use crate::quantity::Quantity;
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetType {
    Equity,
    Option,
}

impl AssetType {
    pub fn as_str(&self) -> &'static str {
        match self {
            AssetType::Equity => "equity",
            AssetType::Option => "option",
        }
    }

    pub fn parse(s: &str) -> Option<AssetType> {
        match s {
            "equity" => Some(AssetType::Equity),
            "option" => Some(AssetType::Option),
            _ => None,
        }
    }
}

/// The side of the order that closes a position: sell a long, buy back a short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub id: PositionId,
    pub account_id: AccountId,
    pub symbol: String,
    pub asset_type: AssetType,
    /// Signed: > 0 long, < 0 short. Frozen while the position is not `open`.
    pub quantity: Quantity,
    pub avg_entry_price: Option<crate::Price>,
    pub strategy_id: Option<String>,
    pub status: PositionStatus,
    pub active_close_request_id: Option<CloseRequestId>,
    pub closed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Bumped on every write; the optimistic-concurrency token of the stores.
    pub version: u64,
    /// Where the position came from: `None` registered through the API, `Some("broker")`
    /// adopted by position sync from the broker's holdings.
    pub source: Option<String>,
    /// Position sync's latest verdict; `None` until sync has looked at the position.
    pub sync: Option<crate::sync::SyncMark>,
    /// Units of the underlying per unit of quantity, when not the asset type's default
    /// (100 per option contract, 1 per share): what realized PnL multiplies by.
    pub multiplier: Option<rust_decimal::Decimal>,
    /// What the position's earlier close requests realized, settled when each was
    /// superseded (see [`PositionAggregate::retire_latest_close`]); the latest close
    /// request's share is derived from its orders.
    pub realized_pnl_settled: crate::pnl::Pnl,
}

impl Position {
    pub fn close_side(&self) -> Side {
        if self.quantity.is_negative() {
            Side::Buy
        } else {
            Side::Sell
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub id: CloseRequestId,
    pub position_id: PositionId,
    pub idempotency_key: IdempotencyKey,
    pub status: CloseRequestStatus,
    pub target_qty: Quantity,
    pub filled_qty: Quantity,
    pub retry_count: u32,
    pub max_retries: u32,
    /// How often the current attempt was sent again because the broker never got it.
    pub redrives: u32,
    /// Why the close was asked for ("manual", "drawdown_guard", ...), for the audit trail.
    pub reason: Option<String>,
    /// Asked with `cancel_open_orders`: the symbol's open orders may be canceled when they
    /// hold the quantity to close.
    pub cancel_open_orders: bool,
    /// The broker's words when it refused the close, or why a human must look.
    pub failure_reason: Option<String>,
    pub created_at: Timestamp,
    pub submitted_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    /// Last change of the close request or its orders: what the reconciler's deadlines
    /// (zombie, stuck, retry backoff) count from.
    pub updated_at: Timestamp,
    /// |quantity| of the position when the close began: a `target_qty` below it is a
    /// partial close, which leaves the position `open` with the rest.
    pub position_qty: Quantity,
    /// The order every attempt places (a limit close's retries keep its price).
    pub options: OrderOptions,
    /// When a trader asked to cancel the working order(s). The cancel counts only once the
    /// broker confirms it; meanwhile this stops automatic retries of what is left.
    pub cancel_requested_at: Option<Timestamp>,
    /// Attempts a human started after the close failed (`POST /close-requests/{id}/retry`),
    /// counted apart from the reconciler's automatic `retry_count`.
    pub manual_retries: u32,
    /// Set when a strategy close made this close request (one per leg).
    pub strategy_close: Option<crate::strategy_close::StrategyCloseTag>,
}

impl CloseRequest {
    pub fn remaining_qty(&self) -> Quantity {
        self.target_qty.minus(self.filled_qty)
    }

    /// The attempt now expected at the broker: 1 for the first order, +1 per retry
    /// (automatic or manual).
    pub fn current_attempt(&self) -> u32 {
        self.retry_count + self.manual_retries + 1
    }

    /// Closes only part of the position.
    pub fn is_partial(&self) -> bool {
        self.target_qty < self.position_qty
    }
}

/// What an idempotency key was first used for, with the fingerprint of that request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub close_request_id: CloseRequestId,
    pub fingerprint: Fingerprint,
    pub created_at: Timestamp,
}

/// Everything one atomic write may look at or change: the position, the idempotency keys
/// used on it, and its latest close request. Stores keep the aggregate in one record so
/// that opening a close is a single conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionAggregate {
    pub position: Position,
    pub idempotency: BTreeMap<IdempotencyKey, IdempotencyRecord>,
    pub latest_close_request: Option<CloseRequest>,
    /// Broker orders of the latest close request, one per attempt.
    pub orders: Vec<crate::order::Order>,
    /// The last thing a human should know about (published once, from the stream).
    pub last_alert: Option<crate::reconcile::Alert>,
    /// Earlier close requests of this position (each ended before the next began), with
    /// their orders: a replay of an old Idempotency-Key and a poll of an old close request
    /// must still find what happened. Cleanup drops them after retention.
    pub history: Vec<PastClose>,
    /// Who made the last write (a signed-in caller, or a pipeline worker such as
    /// `reconciler`): the audit trail's actor for the change.
    pub changed_by: Option<String>,
}

/// A superseded close request and the orders it placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastClose {
    pub close_request: CloseRequest,
    pub orders: Vec<crate::order::Order>,
}

impl PositionAggregate {
    pub fn new(position: Position) -> Self {
        PositionAggregate {
            position,
            idempotency: BTreeMap::new(),
            latest_close_request: None,
            orders: Vec::new(),
            last_alert: None,
            history: Vec::new(),
            changed_by: None,
        }
    }

    /// Moves the latest close request and its orders into history, settling what it
    /// realized into the position first: history may be dropped by cleanup, the position's
    /// cumulative PnL must not drop with it.
    pub fn retire_latest_close(&mut self) {
        let orders = std::mem::take(&mut self.orders);
        if let Some(previous) = self.latest_close_request.take() {
            let realized = crate::pnl::close_request_pnl(&self.position, &orders);
            self.position.realized_pnl_settled = crate::pnl::sum(self.position.realized_pnl_settled, realized);
            self.history.push(PastClose {
                close_request: previous,
                orders,
            });
        }
    }

    /// A close request of this position, latest or past, with its orders.
    pub fn close_request(&self, id: &CloseRequestId) -> Option<(&CloseRequest, &[crate::order::Order])> {
        if let Some(cr) = self.latest_close_request.as_ref().filter(|c| c.id == *id) {
            return Some((cr, &self.orders));
        }
        self.history
            .iter()
            .find(|p| p.close_request.id == *id)
            .map(|p| (&p.close_request, p.orders.as_slice()))
    }
}
