//! The position-sync job (scheduled like the reconciler): per account, the broker's holdings
//! against closeflow's positions. `closeflow_domain::sync` decides; this reads both sides,
//! writes what changed through the store protocol (actor `sync`) and reports.

use closeflow_domain::audit::actor;
use closeflow_domain::sync::{adopted_id, adoption, apply_finding, decide_sync, Holding, SyncFinding, SyncPolicy};
use closeflow_domain::{
    AccountId, DomainEvent, Position, PositionAggregate, PositionStatus, RegisterDecision, RegisterRejection,
};
use closeflow_store::listing::MAX_PAGE;
use closeflow_store::{modify, AggregateKey, CloseStore, ListRequest, Scope, Step, StoreError};

use crate::broker::Broker;
use crate::clock::Clock;
use crate::events::EventSink;

#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The accounts to sync (`SYNC_ACCOUNTS`).
    pub accounts: Vec<AccountId>,
    pub policy: SyncPolicy,
    /// Broker calls per run (one position list per account); the other accounts wait for
    /// the next run, which starts where this one stopped.
    pub max_broker_calls: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            accounts: Vec::new(),
            policy: SyncPolicy::default(),
            max_broker_calls: 25,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub accounts: usize,
    pub broker_calls: usize,
    /// Accounts left for the next run (cap reached, or the broker asked to wait).
    pub deferred: usize,
    pub broker_errors: usize,
    pub positions_read: usize,
    /// Position items written (verdict changes, quantities taken, adoptions).
    pub written: usize,
    pub adopted: usize,
    /// Open positions that took the broker's quantity.
    pub taken: usize,
    pub missing_at_broker: usize,
    pub conflicts: usize,
    /// Holdings at the broker closeflow does not know (adopted or not).
    pub unknown: usize,
}

impl SyncReport {
    /// The run's numbers, as the Lambda function answers them.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accounts": self.accounts, "broker_calls": self.broker_calls, "deferred": self.deferred,
            "broker_errors": self.broker_errors, "positions_read": self.positions_read,
            "written": self.written, "adopted": self.adopted, "taken": self.taken,
            "missing_at_broker": self.missing_at_broker, "conflicts": self.conflicts,
            "unknown": self.unknown,
        })
    }
}

/// Every position of `account`, any status, page by page.
async fn positions_of(store: &dyn CloseStore, account: &AccountId) -> Result<Vec<Position>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_positions(&ListRequest {
                scope: Scope::Accounts(vec![account.clone()]),
                status: None,
                after,
                limit: MAX_PAGE,
            })
            .await?;
        out.extend(page.positions.into_iter().map(|a| a.position));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// One bounded sync run. `alerts` hears of holdings closeflow does not know (they have no
/// position whose change feed could carry the alert); the others are alerted through the
/// position's own change.
pub async fn sync_once(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    alerts: &dyn EventSink,
    cfg: &SyncConfig,
) -> Result<SyncReport, StoreError> {
    let now = clock.now();
    let mut report = SyncReport::default();
    let n = cfg.accounts.len();
    // Rotate the starting account by the minute, so a cap below the number of accounts
    // still reaches every account over successive runs.
    let start = if n == 0 {
        0
    } else {
        (now.timestamp().div_euclid(60) as usize) % n
    };
    for i in 0..n {
        let account = &cfg.accounts[(start + i) % n];
        if report.broker_calls >= cfg.max_broker_calls {
            report.deferred += n - i;
            break;
        }
        report.broker_calls += 1;
        let held = match broker.list_positions(account).await {
            Ok(h) => h,
            Err(e) if e.is_try_later() => {
                tracing::warn!(error = %e, %account, "broker asks to wait; sync of the other accounts deferred");
                report.broker_errors += 1;
                report.deferred += n - i;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, %account, "broker positions unknown; account synced next run");
                report.broker_errors += 1;
                continue;
            }
        };
        report.accounts += 1;
        sync_account(store, account, &held, clock, alerts, cfg, &mut report).await?;
    }
    if report.written + report.unknown + report.broker_errors + report.deferred > 0 {
        tracing::info!(?report, "sync run");
    } else {
        tracing::debug!(?report, "sync run");
    }
    Ok(report)
}

async fn sync_account(
    store: &dyn CloseStore,
    account: &AccountId,
    held: &[crate::broker::BrokerPosition],
    clock: &dyn Clock,
    alerts: &dyn EventSink,
    cfg: &SyncConfig,
    report: &mut SyncReport,
) -> Result<(), StoreError> {
    let now = clock.now();
    let ours = positions_of(store, account).await?;
    report.positions_read += ours.len();
    let holdings: Vec<Holding> = held
        .iter()
        .map(|h| Holding {
            symbol: h.symbol.clone(),
            qty: h.qty,
            avg_entry_price: h.avg_entry_price,
        })
        .collect();
    let listed: std::collections::HashMap<&closeflow_domain::PositionId, &Position> =
        ours.iter().map(|p| (&p.id, p)).collect();
    // Decided first on the listed position: a verdict it already carries costs no read and
    // no write (sync's verdict reads only the position, which the listing returns whole).
    let needs_write = |id: &closeflow_domain::PositionId, finding: &SyncFinding| {
        listed
            .get(id)
            .is_none_or(|p| apply_finding(&PositionAggregate::new((*p).clone()), finding, now).is_some())
    };
    for finding in decide_sync(&ours, &holdings, &cfg.policy) {
        match &finding {
            SyncFinding::Unknown { holding, adopt } => {
                report.unknown += 1;
                let adopted = if *adopt {
                    adopt_holding(store, account, holding, now).await?
                } else {
                    None
                };
                if adopted.is_some() {
                    report.adopted += 1;
                    report.written += 1;
                }
                let what = match &adopted {
                    Some(id) => format!("registered as {id} (source broker)"),
                    None if *adopt => "could not be registered".into(),
                    None => "not registered (SYNC_ADOPT=false)".into(),
                };
                let event = DomainEvent {
                    detail_type: "Alert",
                    position_id: adopted.map(|id| id.to_string()).unwrap_or_default(),
                    account_id: account.to_string(),
                    close_request_id: None,
                    status: "open",
                    reason: Some(format!(
                        "sync_unknown_holding: {} {} held at the broker, unknown to closeflow; {what}",
                        holding.qty, holding.symbol
                    )),
                    at: now,
                };
                if let Err(e) = alerts.publish(&[event]).await {
                    tracing::warn!(error = %e, "sync alert not published");
                }
            }
            SyncFinding::InSync { position_ids } => {
                for id in position_ids.iter().filter(|id| needs_write(id, &finding)) {
                    report.written += write_verdict(store, id, &finding, now).await? as usize;
                }
            }
            SyncFinding::MissingAtBroker { position_id } => {
                report.missing_at_broker += 1;
                if needs_write(position_id, &finding) {
                    report.written += write_verdict(store, position_id, &finding, now).await? as usize;
                }
            }
            SyncFinding::Conflict {
                position_id,
                take_broker_qty,
                ..
            } => {
                report.conflicts += 1;
                let wrote =
                    needs_write(position_id, &finding) && write_verdict(store, position_id, &finding, now).await?;
                report.written += wrote as usize;
                report.taken += (wrote && *take_broker_qty) as usize;
            }
        }
    }
    Ok(())
}

/// Writes sync's verdict on one position if it changes anything (re-decided on the aggregate
/// as loaded for the write); whether it wrote.
async fn write_verdict(
    store: &dyn CloseStore,
    id: &closeflow_domain::PositionId,
    finding: &SyncFinding,
    now: closeflow_domain::Timestamp,
) -> Result<bool, StoreError> {
    let m = modify(store, &AggregateKey::Position(id.clone()), actor::SYNC, |cur| Step {
        write: apply_finding(cur, finding, now),
        decision: (),
    })
    .await?;
    Ok(m.is_some_and(|m| m.after.is_some()))
}

/// Registers a holding closeflow does not know; its id, or `None` when it could not be.
async fn adopt_holding(
    store: &dyn CloseStore,
    account: &AccountId,
    holding: &Holding,
    now: closeflow_domain::Timestamp,
) -> Result<Option<closeflow_domain::PositionId>, StoreError> {
    // The deterministic id first; a closed earlier adoption of the symbol holds it, so the
    // next numbers are tried (a few: more is a human's question).
    for attempt in 0..5 {
        let Some(id) = adopted_id(account, &holding.symbol, attempt) else {
            break;
        };
        let cmd = adoption(account, holding, id.clone(), actor::SYNC, now);
        match store.register_position(&cmd).await? {
            Ok(RegisterDecision::Created(_)) => return Ok(Some(id)),
            // A closed earlier adoption with the same numbers: the next id.
            Ok(RegisterDecision::Unchanged(p)) if p.status != PositionStatus::Open => continue,
            // A concurrent run adopted it meanwhile: one position, not two.
            Ok(RegisterDecision::Unchanged(_)) => return Ok(None),
            Ok(RegisterDecision::Updated(_)) => return Ok(Some(id)),
            Err(RegisterRejection::PositionNotOpen(_)) | Err(RegisterRejection::RoutingKeyTaken(_)) => continue,
            Err(e) => {
                tracing::warn!(?e, %account, symbol = %holding.symbol, "holding not adopted");
                break;
            }
        }
    }
    Ok(None)
}
