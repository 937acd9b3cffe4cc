//! The built-in drawdown guard (scheduled, per account): reads each account's equity from
//! the broker, keeps its high-water mark in the store, alerts once when the drawdown
//! reaches `DRAWDOWN_WARN_PCT` and liquidates the account once when it reaches
//! `DRAWDOWN_LIQUIDATE_PCT` (both off unless set). `closeflow_domain::drawdown` decides.

use closeflow_domain::drawdown::{decide, DrawdownDecision, DrawdownPolicy};
use closeflow_domain::{
    AccountId, BulkClose, BulkCloseCommand, BulkFilter, DomainEvent, Fingerprint, IdempotencyKey, TimeInForce,
    LIQUIDATION_ATTEMPTS,
};
use closeflow_store::CloseStore;

use crate::broker::Broker;
use crate::bulk::{start_bulk, JobError};
use crate::clock::Clock;
use crate::events::EventSink;
use crate::queue::OrderQueue;

/// The actor of the liquidations it starts.
pub const DRAWDOWN_ACTOR: &str = "guard:drawdown";

#[derive(Debug, Clone, Default)]
pub struct DrawdownConfig {
    /// The accounts it watches (`DRAWDOWN_ACCOUNTS`, else `SYNC_ACCOUNTS`).
    pub accounts: Vec<AccountId>,
    pub policy: DrawdownPolicy,
    /// Automatic retries of each close a liquidation opens.
    pub max_retries: u32,
}

impl DrawdownConfig {
    /// Whether there is anything to watch for.
    pub fn is_on(&self) -> bool {
        (self.policy.warn_pct.is_some() || self.policy.liquidate_pct.is_some()) && !self.accounts.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrawdownReport {
    pub accounts: usize,
    pub broker_errors: usize,
    pub warnings: usize,
    pub liquidations: usize,
    /// Account states written (a new high-water mark or level).
    pub written: usize,
}

impl DrawdownReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accounts": self.accounts, "broker_errors": self.broker_errors, "warnings": self.warnings,
            "liquidations": self.liquidations, "written": self.written,
        })
    }
}

/// One run over every watched account.
pub async fn drawdown_once(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    queue: &dyn OrderQueue,
    clock: &dyn Clock,
    events: &dyn EventSink,
    cfg: &DrawdownConfig,
) -> Result<DrawdownReport, JobError> {
    let mut report = DrawdownReport::default();
    if !cfg.is_on() {
        return Ok(report);
    }
    for account in &cfg.accounts {
        let equity = match broker.account_equity(account).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, %account, "equity unknown; drawdown checked next run");
                report.broker_errors += 1;
                continue;
            }
        };
        report.accounts += 1;
        let prev = store.drawdown_state(account).await?;
        let (next, decision) = decide(prev.as_ref().map(|(s, _)| s), equity, &cfg.policy);
        let version = prev.as_ref().map_or(0, |(_, v)| *v) + 1;
        let words = |pct, threshold: Option<rust_decimal::Decimal>| {
            format!(
                "drawdown guard: equity {equity} is {pct}% below its high-water mark {} (threshold {}%)",
                next.high_water,
                threshold.unwrap_or_default()
            )
        };
        match decision {
            DrawdownDecision::None => {}
            DrawdownDecision::Warn { drawdown_pct } => {
                report.warnings += 1;
                let event = DomainEvent {
                    detail_type: "Alert",
                    position_id: String::new(),
                    account_id: account.to_string(),
                    close_request_id: None,
                    status: "open",
                    reason: Some(format!(
                        "drawdown_warning: {}",
                        words(drawdown_pct, cfg.policy.warn_pct)
                    )),
                    at: clock.now(),
                };
                if let Err(e) = events.publish(&[event]).await {
                    tracing::error!(error = %e, %account, "drawdown warning not published");
                }
            }
            DrawdownDecision::Liquidate { drawdown_pct } => {
                // Started before the new level is written, under a key naming the state it
                // moves from: a run that dies in between starts the same liquidation again,
                // which finds the first.
                let key = IdempotencyKey::parse(&format!("drawdown:{account}:v{version}"))
                    .map_err(|e| JobError::Wait(format!("no key for {account}: {e}")))?;
                let reason = words(drawdown_pct, cfg.policy.liquidate_pct);
                let cmd = BulkCloseCommand {
                    account_id: account.clone(),
                    idempotency_key: key,
                    fingerprint: Fingerprint::of_body(&serde_json::json!({ "drawdown": version })),
                    actor: DRAWDOWN_ACTOR.into(),
                    reason: Some(reason.chars().take(256).collect()),
                    filter: BulkFilter::default(),
                    cancel_open_orders: true,
                    time_in_force: TimeInForce::Day,
                    max_retries: cfg.max_retries,
                    now: clock.now(),
                };
                start_bulk(store, queue, clock, BulkClose::liquidation(cmd, LIQUIDATION_ATTEMPTS)).await?;
                report.liquidations += 1;
                tracing::error!(%account, %equity, %drawdown_pct, "drawdown guard liquidates the account");
            }
        }
        if prev.as_ref().map(|(s, _)| s) != Some(&next) {
            // Lost to a concurrent run: its reading stands, this one's is taken next time.
            report.written += store.put_drawdown_state(account, &next, version).await? as usize;
        }
    }
    Ok(report)
}
