//! Bulk close: "close everything of this account (matching these filters)" as one record
//! that a pipeline job fans out page by page. Each position gets its own close request
//! under a key derived from the bulk close (`bulk:{id}`, `bulk:{id}:r{round}` on a retry
//! of the failed rows), so a replayed request or a redelivered job step finds the close
//! it already made instead of making a second one.
//!
//! Rows record only what the fan-out decided (submitted, skipped, failed with a reason);
//! a submitted row's live status and PnL are read from its close request when the bulk
//! close is looked at, so following the closes costs no writes.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::close::{CloseRejection, Fingerprint};
use crate::ids::{AccountId, CloseRequestId, IdempotencyKey, PositionId};
use crate::model::{AssetType, Position, PositionAggregate};
use crate::options::TimeInForce;
use crate::pnl::Pnl;
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::strategy_close::StrategyCloseRejection;
use crate::Timestamp;

/// Positions one fan-out step handles: a bounded amount of work per job message, so a
/// step ends well inside a function's time limit whatever the account's size.
pub const BULK_PAGE_SIZE: usize = 100;

/// A bulk close's id: derived from the account and the caller's Idempotency-Key, so the
/// same request made twice names the same bulk close (and a guard event the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BulkCloseId(Uuid);

impl BulkCloseId {
    pub fn derive(account: &AccountId, key: &IdempotencyKey) -> BulkCloseId {
        let digest = Sha256::digest(format!("bulk\n{account}\n{key}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        BulkCloseId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    pub fn parse(s: &str) -> Result<BulkCloseId, crate::IdError> {
        Uuid::parse_str(s)
            .ok()
            .filter(|u| u.get_version_num() == 8 && s.len() == 36)
            .map(BulkCloseId)
            .ok_or(crate::IdError::InvalidBulkCloseId)
    }

    /// The idempotency key each position's close request is opened with in `round` (0:
    /// the fan-out; n: the n-th retry of the failed rows).
    pub fn close_key(&self, round: u32) -> IdempotencyKey {
        let text = match round {
            0 => format!("bulk:{self}"),
            n => format!("bulk:{self}:r{n}"),
        };
        IdempotencyKey::parse(&text).expect("a uuid-based key is a valid idempotency key")
    }
}

impl BulkCloseId {
    /// Random bits for the ids of what `round` opens on `position`, derived rather than
    /// drawn: a job step done again mints the same ids, and the idempotency key finds
    /// them anyway.
    pub fn random_for(&self, round: u32, position: &PositionId) -> [u8; 16] {
        let digest = Sha256::digest(format!("{self}\n{round}\n{position}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes
    }
}

impl TryFrom<String> for BulkCloseId {
    type Error = crate::IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BulkCloseId::parse(&s)
    }
}

impl From<BulkCloseId> for String {
    fn from(id: BulkCloseId) -> String {
        id.to_string()
    }
}

impl std::fmt::Display for BulkCloseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// Which of the account's positions a bulk close takes; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_type: Option<AssetType>,
    /// Only these positions (a guard event scoped to positions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_ids: Option<Vec<PositionId>>,
}

impl BulkFilter {
    /// Whether a bulk close with this filter takes the position. Closed positions are
    /// never taken: they are history, not rows.
    pub fn takes(&self, p: &Position) -> bool {
        p.status != PositionStatus::Closed
            && self.symbols.as_ref().is_none_or(|s| s.contains(&p.symbol))
            && self
                .strategy_ids
                .as_ref()
                .is_none_or(|s| p.strategy_id.as_ref().is_some_and(|id| s.contains(id)))
            && self.asset_type.is_none_or(|t| t == p.asset_type)
            && self.position_ids.as_ref().is_none_or(|ids| ids.contains(&p.id))
    }
}

/// How far a job (the fan-out, or a retry round) has got: pages are handled in order,
/// each once; `cursor` is where the next page of the account's listing starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub pages_done: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    pub finished: bool,
}

/// The bulk close record (its rows are kept apart, one record per page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkClose {
    pub id: BulkCloseId,
    pub account_id: AccountId,
    pub idempotency_key: IdempotencyKey,
    /// Of the request body: the same key with another body is refused.
    pub fingerprint: String,
    /// Who asked (the caller, or `guard:<id>`): the actor of every close it makes.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub filter: BulkFilter,
    pub cancel_open_orders: bool,
    pub time_in_force: TimeInForce,
    pub max_retries: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Optimistic-concurrency token: bumped on every write of the record.
    pub version: u64,
    pub fan_out: Progress,
    /// Retries of the failed rows asked for so far; the latest one's progress.
    pub retry_rounds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Progress>,
    /// Set on an emergency liquidation: the bulk close then runs the liquidation's loop
    /// instead of one fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liquidation: Option<Liquidation>,
}

/// Attempts a liquidation makes at flattening the account before it gives up and says
/// what is left.
pub const LIQUIDATION_ATTEMPTS: u32 = 3;

/// How long a liquidation waits on the broker in one phase (open orders to go, its closes
/// to end) before it goes on regardless.
pub const LIQUIDATION_PATIENCE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Where an emergency liquidation stands. Every attempt runs the phases in order: cancel
/// every open order of the account and wait until the broker lists none; sync, so what
/// only the broker holds becomes a position and is closed too; close the short positions,
/// then the long ones (a short option leg is never left naked by closing its cover first);
/// wait for every close to end and ask the broker whether the account is flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiquidationPhase {
    CancelOrders,
    Sync,
    CloseShorts,
    CloseLongs,
    Verify,
    Done,
}

impl LiquidationPhase {
    pub fn as_str(&self) -> &'static str {
        match self {
            LiquidationPhase::CancelOrders => "cancel_orders",
            LiquidationPhase::Sync => "sync",
            LiquidationPhase::CloseShorts => "close_shorts",
            LiquidationPhase::CloseLongs => "close_longs",
            LiquidationPhase::Verify => "verify",
            LiquidationPhase::Done => "done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liquidation {
    pub phase: LiquidationPhase,
    /// 0-based.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Job steps done so far: names the next step, so a redelivered step is recognised.
    pub steps: u32,
    /// Row pages written so far, over every attempt (the next page's number).
    pub pages: u32,
    /// The first page of the current attempt: its rows are the ones the attempt waits on.
    pub attempt_first_page: u32,
    /// Where the current close phase's next page of positions starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Open orders of the account it asked the broker to cancel (broker order ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canceled_orders: Vec<String>,
    /// Since when the current phase has been waiting on the broker (cancels to land,
    /// closes to end); after [`LIQUIDATION_PATIENCE`] it moves on regardless, and the next
    /// attempt's cancels take care of what hung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Once done: whether the broker reported the account flat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<bool>,
    /// Once done and not flat: what the broker still holds (`SYMBOL qty`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
}

impl Liquidation {
    pub fn new(max_attempts: u32) -> Liquidation {
        Liquidation {
            phase: LiquidationPhase::CancelOrders,
            attempt: 0,
            max_attempts: max_attempts.max(1),
            steps: 0,
            pages: 0,
            attempt_first_page: 0,
            cursor: None,
            canceled_orders: Vec::new(),
            waiting_since: None,
            flat: None,
            left: Vec::new(),
        }
    }

    /// Whether the close phase it is in takes the position: shorts first, then the rest;
    /// closed and empty positions are nothing to close.
    pub fn takes(&self, p: &Position) -> bool {
        if p.status == PositionStatus::Closed || p.quantity.is_zero() {
            return false;
        }
        match self.phase {
            LiquidationPhase::CloseShorts => p.quantity.is_negative(),
            LiquidationPhase::CloseLongs => !p.quantity.is_negative(),
            _ => false,
        }
    }

    /// The state after the close phase's page ending at `next_cursor`.
    pub fn after_close_page(&self, next_cursor: Option<String>) -> Liquidation {
        let mut next = self.clone();
        next.steps += 1;
        next.pages += 1;
        next.waiting_since = None;
        match (next_cursor, self.phase) {
            (Some(c), _) => next.cursor = Some(c),
            (None, LiquidationPhase::CloseShorts) => {
                next.cursor = None;
                next.phase = LiquidationPhase::CloseLongs;
            }
            (None, _) => {
                next.cursor = None;
                next.phase = LiquidationPhase::Verify;
            }
        }
        next
    }

    /// Whether a phase that has waited since `waiting_since` should stop waiting at `now`.
    pub fn patience_spent(&self, now: Timestamp) -> bool {
        self.waiting_since
            .is_some_and(|since| now - since >= LIQUIDATION_PATIENCE)
    }

    /// The state after a phase that ends in one step (cancel, sync).
    pub fn advanced(&self, phase: LiquidationPhase) -> Liquidation {
        Liquidation {
            phase,
            steps: self.steps + 1,
            waiting_since: None,
            ..self.clone()
        }
    }

    /// What the verification decides once no close of the attempt is working: `held` is
    /// what the broker still holds. Flat ends it; otherwise another attempt, or, out of
    /// attempts, the end with what is left named.
    pub fn verified(&self, held: Vec<String>) -> Liquidation {
        let mut next = self.advanced(LiquidationPhase::Done);
        if held.is_empty() {
            next.flat = Some(true);
        } else if self.attempt + 1 < self.max_attempts {
            next.phase = LiquidationPhase::CancelOrders;
            next.attempt += 1;
            next.attempt_first_page = self.pages;
        } else {
            next.flat = Some(false);
            next.left = held;
        }
        next
    }
}

/// What a caller (or a guard) asks for: closes of the account's positions that match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkCloseCommand {
    pub account_id: AccountId,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    pub actor: String,
    pub reason: Option<String>,
    pub filter: BulkFilter,
    pub cancel_open_orders: bool,
    pub time_in_force: TimeInForce,
    /// Automatic retries each close it opens may make.
    pub max_retries: u32,
    pub now: Timestamp,
}

impl BulkClose {
    /// The record a command starts: nothing fanned out yet.
    pub fn new(cmd: BulkCloseCommand) -> BulkClose {
        BulkClose {
            id: BulkCloseId::derive(&cmd.account_id, &cmd.idempotency_key),
            account_id: cmd.account_id,
            idempotency_key: cmd.idempotency_key,
            fingerprint: cmd.fingerprint.as_str().to_string(),
            actor: cmd.actor,
            reason: cmd.reason,
            filter: cmd.filter,
            cancel_open_orders: cmd.cancel_open_orders,
            time_in_force: cmd.time_in_force,
            max_retries: cmd.max_retries,
            created_at: cmd.now,
            updated_at: cmd.now,
            version: 1,
            fan_out: Progress::default(),
            retry_rounds: 0,
            retry: None,
            liquidation: None,
        }
    }

    /// An emergency liquidation: every position of the account, in the liquidation's loop.
    pub fn liquidation(cmd: BulkCloseCommand, max_attempts: u32) -> BulkClose {
        BulkClose {
            liquidation: Some(Liquidation::new(max_attempts)),
            ..BulkClose::new(cmd)
        }
    }

    pub fn fingerprint_matches(&self, f: &Fingerprint) -> bool {
        self.fingerprint == f.as_str()
    }

    /// The job still has pages to fan out or a retry round to finish.
    pub fn job_running(&self) -> bool {
        if let Some(l) = &self.liquidation {
            return l.phase != LiquidationPhase::Done;
        }
        !self.fan_out.finished || self.retry.as_ref().is_some_and(|r| !r.finished)
    }
}

/// What the fan-out (or a retry) did with one position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RowOutcome {
    /// A close request was opened (or found, on a replay); its status is read live.
    Submitted { close_request_id: CloseRequestId },
    /// Nothing to do: another close already drives the position.
    Skipped { reason: String },
    /// The close was refused; `error` is the API's stable code for the refusal.
    Failed { error: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkRow {
    pub position_id: PositionId,
    pub symbol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_id: Option<String>,
    #[serde(flatten)]
    pub outcome: RowOutcome,
}

/// The rows of one fan-out page, stored under the page's number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkPage {
    pub number: u32,
    pub rows: Vec<BulkRow>,
}

impl RowOutcome {
    /// A refused single close as a row: the code is the one the API answers with.
    pub fn from_close_rejection(r: &CloseRejection) -> RowOutcome {
        let failed = |error: &str, message: String| RowOutcome::Failed {
            error: error.into(),
            message,
        };
        match r {
            CloseRejection::AlreadyClosing { .. } => RowOutcome::Skipped {
                reason: "already_closing".into(),
            },
            CloseRejection::PositionNotFound | CloseRejection::Forbidden => {
                failed("position_not_found", "the position is gone".into())
            }
            CloseRejection::IdempotencyKeyReused => failed(
                "idempotency_key_reused",
                "the bulk close's key was used on this position with another body".into(),
            ),
            CloseRejection::ZeroQuantity => failed("zero_quantity", "the position has zero quantity".into()),
            CloseRejection::InvalidState(s) => {
                failed("invalid_state", format!("cannot close a position in state `{s}`"))
            }
            CloseRejection::InvalidOptions(e) => failed(e.code(), e.to_string()),
        }
    }

    /// A refused strategy close as the row of each of its legs.
    pub fn from_strategy_rejection(r: &StrategyCloseRejection) -> RowOutcome {
        let failed = |error: &str, message: String| RowOutcome::Failed {
            error: error.into(),
            message,
        };
        match r {
            StrategyCloseRejection::NotFound => failed("strategy_not_found", "the strategy is gone".into()),
            StrategyCloseRejection::IdempotencyKeyReused => failed(
                "idempotency_key_reused",
                "the bulk close's key was used on this strategy with another body".into(),
            ),
            StrategyCloseRejection::NotClosable { position_id, status } => failed(
                "strategy_not_closable",
                format!("leg {position_id} is `{status}`: the strategy closes only as a whole"),
            ),
            StrategyCloseRejection::InvalidOptions(e) => failed(e.code(), e.to_string()),
            StrategyCloseRejection::TooManyLegs { legs } => failed(
                "strategy_not_closable",
                format!("{legs} legs are more than one close takes"),
            ),
            StrategyCloseRejection::MlegNotAvailable(why) => failed("mleg_not_available", why.clone()),
        }
    }
}

/// A row's status as the caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// The close is working (or the fan-out has not reached it).
    Pending,
    Succeeded,
    Failed,
    Skipped,
}

impl RowStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RowStatus::Pending => "pending",
            RowStatus::Succeeded => "succeeded",
            RowStatus::Failed => "failed",
            RowStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowView {
    pub position_id: PositionId,
    pub symbol: String,
    pub strategy_id: Option<String>,
    pub status: RowStatus,
    pub close_request_id: Option<CloseRequestId>,
    /// The stable code of a refusal, or the close's failure reason.
    pub error: Option<String>,
    pub message: Option<String>,
    pub realized_pnl: Option<Pnl>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStatus {
    Running,
    Completed,
    CompletedWithErrors,
}

impl BulkStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            BulkStatus::Running => "running",
            BulkStatus::Completed => "completed",
            BulkStatus::CompletedWithErrors => "completed_with_errors",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkView {
    pub status: BulkStatus,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub pending: usize,
    /// What the succeeded and working closes realized; unknown when any one's is.
    pub total_realized_pnl: Pnl,
    pub rows: Vec<RowView>,
}

/// A row with the live state of its close request (`agg`: the position's aggregate, when
/// it still exists).
pub fn row_view(row: &BulkRow, agg: Option<&PositionAggregate>) -> RowView {
    let mut view = RowView {
        position_id: row.position_id.clone(),
        symbol: row.symbol.clone(),
        strategy_id: row.strategy_id.clone(),
        status: RowStatus::Pending,
        close_request_id: None,
        error: None,
        message: None,
        realized_pnl: None,
    };
    match &row.outcome {
        RowOutcome::Skipped { reason } => {
            view.status = RowStatus::Skipped;
            view.message = Some(reason.clone());
        }
        RowOutcome::Failed { error, message } => {
            view.status = RowStatus::Failed;
            view.error = Some(error.clone());
            view.message = Some(message.clone());
        }
        RowOutcome::Submitted { close_request_id } => {
            view.close_request_id = Some(*close_request_id);
            match agg.and_then(|a| a.close_request(close_request_id).map(|(cr, orders)| (a, cr, orders))) {
                None => {
                    // Cleanup dropped it: a close is only cleaned up long after it ended,
                    // and what it realized went with it.
                    view.status = RowStatus::Succeeded;
                }
                Some((agg, cr, orders)) => {
                    view.realized_pnl = Some(crate::pnl::close_request_pnl(&agg.position, orders));
                    view.status = match cr.status {
                        CloseRequestStatus::Completed => RowStatus::Succeeded,
                        CloseRequestStatus::Failed => RowStatus::Failed,
                        _ => RowStatus::Pending,
                    };
                    if cr.status == CloseRequestStatus::Failed {
                        view.error = Some("close_failed".into());
                        view.message = cr.failure_reason.clone();
                    }
                }
            }
        }
    }
    view
}

/// The bulk close as the caller sees it: totals over the rows, running while the job
/// has pages left or any close is working.
pub fn bulk_view(bulk: &BulkClose, rows: Vec<RowView>) -> BulkView {
    let count = |s: RowStatus| rows.iter().filter(|r| r.status == s).count();
    let (succeeded, failed, skipped, pending) = (
        count(RowStatus::Succeeded),
        count(RowStatus::Failed),
        count(RowStatus::Skipped),
        count(RowStatus::Pending),
    );
    let status = if bulk.job_running() || pending > 0 {
        BulkStatus::Running
    } else if failed > 0 {
        BulkStatus::CompletedWithErrors
    } else {
        BulkStatus::Completed
    };
    let total_realized_pnl = rows
        .iter()
        .filter_map(|r| r.realized_pnl)
        .try_fold(Decimal::ZERO, |sum, p| crate::pnl::sum(Ok(sum), p));
    BulkView {
        status,
        total: rows.len(),
        succeeded,
        failed,
        skipped,
        pending,
        total_realized_pnl,
        rows,
    }
}

/// The rows to show and count: a position closed again by a later attempt (a liquidation's)
/// shows its latest row, in the place of its first.
pub fn latest_rows(pages: Vec<BulkPage>) -> Vec<BulkRow> {
    let mut at: std::collections::HashMap<PositionId, usize> = std::collections::HashMap::new();
    let mut rows: Vec<BulkRow> = Vec::new();
    for row in pages.into_iter().flat_map(|p| p.rows) {
        match at.get(&row.position_id) {
            Some(&i) => rows[i] = row,
            None => {
                at.insert(row.position_id.clone(), rows.len());
                rows.push(row);
            }
        }
    }
    rows
}

/// Whether a row is one a retry of the failed rows re-drives.
pub fn retries(view: &RowView) -> bool {
    view.status == RowStatus::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::position;

    #[test]
    fn the_same_account_and_key_name_the_same_bulk_close_and_nothing_else_does() {
        let a = AccountId::parse("ACC1").unwrap();
        let b = AccountId::parse("ACC2").unwrap();
        let k = IdempotencyKey::parse("k-1").unwrap();
        let k2 = IdempotencyKey::parse("k-2").unwrap();
        let id = BulkCloseId::derive(&a, &k);
        assert_eq!(id, BulkCloseId::derive(&a, &k));
        assert_ne!(id, BulkCloseId::derive(&b, &k));
        assert_ne!(id, BulkCloseId::derive(&a, &k2));
        assert_eq!(BulkCloseId::parse(&id.to_string()).unwrap(), id);
        assert!(BulkCloseId::parse("0b6a3f3e-9a7c-4d5e-8f00-1234567890ab").is_err());
        assert_eq!(id.close_key(0).as_str(), format!("bulk:{id}"));
        assert_eq!(id.close_key(2).as_str(), format!("bulk:{id}:r2"));
    }

    #[test]
    fn filters_all_must_match_and_closed_positions_are_never_taken() {
        let mut p = position("p1", "10", PositionStatus::Open);
        p.strategy_id = Some("ic-1".into());
        let all = BulkFilter::default();
        assert!(all.takes(&p));
        let sym = BulkFilter {
            symbols: Some(vec!["AAPL".into()]),
            ..Default::default()
        };
        assert!(sym.takes(&p));
        let other = BulkFilter {
            symbols: Some(vec!["IBM".into()]),
            ..Default::default()
        };
        assert!(!other.takes(&p));
        let strat = BulkFilter {
            strategy_ids: Some(vec!["ic-2".into()]),
            symbols: Some(vec!["AAPL".into()]),
            ..Default::default()
        };
        assert!(!strat.takes(&p), "every filter must match");
        let opt = BulkFilter {
            asset_type: Some(AssetType::Option),
            ..Default::default()
        };
        assert!(!opt.takes(&p));
        p.status = PositionStatus::Closed;
        assert!(!all.takes(&p));
    }

    #[test]
    fn totals_count_rows_by_live_status_and_the_status_waits_for_the_job() {
        let mut bulk = crate::testing::bulk_close("k", crate::testing::t0());
        let row = |id: &str, outcome: RowOutcome| BulkRow {
            position_id: PositionId::parse(id).unwrap(),
            symbol: "X".into(),
            strategy_id: None,
            outcome,
        };
        let rows = vec![
            row_view(
                &row(
                    "a",
                    RowOutcome::Skipped {
                        reason: "already_closing".into(),
                    },
                ),
                None,
            ),
            row_view(
                &row(
                    "b",
                    RowOutcome::Failed {
                        error: "invalid_state".into(),
                        message: "m".into(),
                    },
                ),
                None,
            ),
        ];
        assert_eq!(bulk_view(&bulk, rows.clone()).status, BulkStatus::Running);
        bulk.fan_out.finished = true;
        let v = bulk_view(&bulk, rows.clone());
        assert_eq!(v.status, BulkStatus::CompletedWithErrors);
        assert_eq!((v.total, v.failed, v.skipped, v.pending, v.succeeded), (2, 1, 1, 0, 0));
        assert_eq!(v.total_realized_pnl, Ok(Decimal::ZERO));
        let v = bulk_view(&bulk, vec![rows[0].clone()]);
        assert_eq!(v.status, BulkStatus::Completed);
        bulk.retry = Some(Progress::default());
        assert_eq!(bulk_view(&bulk, vec![rows[0].clone()]).status, BulkStatus::Running);
    }

    #[test]
    fn a_liquidation_closes_shorts_then_longs_page_by_page_then_verifies() {
        let mut l = Liquidation::new(2);
        assert_eq!(l.phase, LiquidationPhase::CancelOrders);
        let short = position("s", "-5", PositionStatus::Open);
        let long = position("l", "5", PositionStatus::CloseFailed);
        let empty = position("z", "0", PositionStatus::Open);
        let closed = position("c", "-5", PositionStatus::Closed);
        assert!(!l.takes(&short), "nothing is closed before the cancels and the sync");
        l = l
            .advanced(LiquidationPhase::Sync)
            .advanced(LiquidationPhase::CloseShorts);
        assert_eq!(l.steps, 2);
        assert!(l.takes(&short) && !l.takes(&long) && !l.takes(&empty) && !l.takes(&closed));
        l = l.after_close_page(Some("c1".into()));
        assert_eq!(
            (l.phase, l.cursor.as_deref(), l.pages),
            (LiquidationPhase::CloseShorts, Some("c1"), 1)
        );
        l = l.after_close_page(None);
        assert_eq!(
            (l.phase, l.cursor.as_deref(), l.pages),
            (LiquidationPhase::CloseLongs, None, 2)
        );
        assert!(l.takes(&long) && !l.takes(&short));
        l = l.after_close_page(None);
        assert_eq!((l.phase, l.steps), (LiquidationPhase::Verify, 5));
        let again = l.verified(vec!["IBM 7".into()]);
        assert_eq!(
            (again.phase, again.attempt, again.attempt_first_page, again.flat),
            (LiquidationPhase::CancelOrders, 1, 3, None)
        );
        let flat = again.verified(vec![]);
        assert_eq!((flat.phase, flat.flat), (LiquidationPhase::Done, Some(true)));
        let left = again.verified(vec!["IBM 7".into()]);
        assert_eq!(
            (left.phase, left.flat, left.left.clone()),
            (LiquidationPhase::Done, Some(false), vec!["IBM 7".to_string()])
        );
        let mut bulk = crate::testing::bulk_close("k", crate::testing::t0());
        bulk.fan_out.finished = true;
        bulk.liquidation = Some(again);
        assert!(bulk.job_running(), "a liquidation runs until it is done");
        bulk.liquidation = Some(left);
        assert!(!bulk.job_running());
    }

    #[test]
    fn a_position_closed_again_shows_its_latest_row_in_its_first_place() {
        let row = |id: &str, reason: &str| BulkRow {
            position_id: PositionId::parse(id).unwrap(),
            symbol: "X".into(),
            strategy_id: None,
            outcome: RowOutcome::Skipped { reason: reason.into() },
        };
        let pages = vec![
            BulkPage {
                number: 0,
                rows: vec![row("a", "1"), row("b", "1")],
            },
            BulkPage {
                number: 1,
                rows: vec![row("c", "1"), row("a", "2")],
            },
        ];
        assert_eq!(latest_rows(pages), vec![row("a", "2"), row("b", "1"), row("c", "1")]);
    }
}
