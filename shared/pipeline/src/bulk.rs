//! The bulk close job: fans a bulk close out into one close per position (a strategy's
//! legs through one strategy close), a page of the account's positions per step, and
//! re-drives the failed rows when asked. Each step is one queue message; a step done
//! twice (a redelivery, a crash before the acknowledgement) opens nothing new, because
//! every close is opened under a key derived from the bulk close and the round.

use std::collections::HashMap;

use closeflow_domain::{
    Access, BulkClose, BulkCloseId, BulkPage, BulkRow, CloseCommand, CloseRequestId, CloseRequestStatus, Fingerprint,
    OrderOptions, PositionAggregate, PositionId, RetryCommand, RowOutcome, StrategyCloseCommand, BULK_PAGE_SIZE,
};
use closeflow_store::{CloseOutcome, CloseStore, IndexQuery, ListIndex, StoreError, StrategyCloseOutcome};
use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::clock::Clock;
use crate::events::EventSink;
use crate::queue::{OrderQueue, QueueError, QueueMessage};

/// One step of a bulk close's job: `round` 0 fans out, round n re-drives the failed rows
/// the n-th time; `page` is the page of rows the step handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    pub bulk_close_id: BulkCloseId,
    pub round: u32,
    pub page: u32,
}

impl JobStep {
    pub fn first(bulk: &BulkClose) -> JobStep {
        JobStep {
            bulk_close_id: bulk.id,
            round: 0,
            page: 0,
        }
    }
}

/// The step a bulk close's job is at: the fan-out's next page, else the latest retry
/// round's; `None` once both are finished. Asking for it again is always safe: a step
/// already done only asks for the one after it.
pub fn pending_step(bulk: &BulkClose) -> Option<JobStep> {
    if let Some(l) = &bulk.liquidation {
        // A liquidation's steps are numbered on over all its attempts.
        return bulk.job_running().then_some(JobStep {
            bulk_close_id: bulk.id,
            round: l.attempt,
            page: l.steps,
        });
    }
    let (round, progress) = match &bulk.retry {
        Some(r) if bulk.fan_out.finished => (bulk.retry_rounds, r),
        _ => (0, &bulk.fan_out),
    };
    (!progress.finished).then_some(JobStep {
        bulk_close_id: bulk.id,
        round,
        page: progress.pages_done,
    })
}

/// What starting a bulk close (or a liquidation) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Recorded now, its first step queued.
    Created(BulkClose),
    /// The same request was made before: that one, its pending step asked for again.
    Existing(BulkClose),
    /// The key was used on this account for another request; nothing was done.
    KeyReused,
}

/// Records a bulk close (or a liquidation) and queues its first step; under a key already
/// used, finds the one it made. A new liquidation stops the account taking exposure before
/// its job starts (the job's first step makes the same move, should this die in between).
/// The queue failing leaves the record for the same request to start again.
pub async fn start_bulk(
    store: &dyn CloseStore,
    queue: &dyn OrderQueue,
    clock: &dyn Clock,
    fresh: BulkClose,
) -> Result<Started, JobError> {
    let started = match store.create_bulk_close(&fresh).await? {
        None => {
            if fresh.liquidation.is_some() {
                let moved = store
                    .set_trading_state(
                        &fresh.account_id,
                        closeflow_domain::TradingStateEvent::LiquidationStarted,
                        &fresh.actor,
                        fresh.reason.as_deref(),
                        clock.now(),
                    )
                    .await?;
                // Already liquidating (another liquidation): both run, and closes the
                // other has working are skipped by this one.
                tracing::warn!(bulk_close_id = %fresh.id, already = moved.is_err(), "liquidation started");
            }
            Started::Created(fresh)
        }
        Some(existing) if existing.fingerprint == fresh.fingerprint => Started::Existing(existing),
        Some(_) => return Ok(Started::KeyReused),
    };
    if let Started::Created(b) | Started::Existing(b) = &started {
        if let Some(step) = pending_step(b) {
            queue.send(&QueueMessage::for_job(&step)).await?;
        }
    }
    Ok(started)
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("broker: {0}")]
    Broker(crate::broker::BrokerError),
    /// Not an error: the step waits on the broker and is to be delivered again later.
    #[error("waiting: {0}")]
    Wait(String),
}

/// What the job needs besides the store: the order queue (for its next step), the broker
/// (whether it takes multi-leg orders; a liquidation's cancels, sync and verification) and
/// where a liquidation's events go.
pub struct BulkJob<'a> {
    pub store: &'a dyn CloseStore,
    pub queue: &'a dyn OrderQueue,
    pub clock: &'a dyn Clock,
    pub broker: &'a dyn Broker,
    pub events: &'a dyn EventSink,
}

/// Attempts at writing the record's progress against concurrent writers (a retry
/// request bumping the version) before the step is left to be redelivered.
const PROGRESS_ATTEMPTS: usize = 5;

impl BulkJob<'_> {
    /// Runs one step. `Ok` means "done with this message" (including a step already done
    /// or of a bulk close that is gone); an error means "deliver it again".
    pub async fn run(&self, step: &JobStep) -> Result<(), JobError> {
        let Some(bulk) = self.store.bulk_close(&step.bulk_close_id).await? else {
            tracing::error!(bulk_close_id = %step.bulk_close_id, "job step of an unknown bulk close dropped");
            return Ok(());
        };
        if bulk.liquidation.is_some() {
            self.liquidate(bulk, step).await
        } else if step.round == 0 {
            self.fan_out(bulk, step).await
        } else {
            self.retry(bulk, step).await
        }
    }

    async fn fan_out(&self, bulk: BulkClose, step: &JobStep) -> Result<(), JobError> {
        if bulk.fan_out.pages_done != step.page || bulk.fan_out.finished {
            // Done before (a redelivery): make sure the step after it was asked for.
            return self.continue_after(&bulk).await;
        }
        let page = self
            .store
            .list_index(&IndexQuery {
                index: ListIndex::Account(bulk.account_id.clone()),
                before: bulk.fan_out.cursor.clone(),
                limit: BULK_PAGE_SIZE,
                status: None,
                accounts: None,
            })
            .await?;
        let mut strategies = HashMap::new();
        let mut rows = Vec::new();
        for agg in page.positions.iter().filter(|a| bulk.filter.takes(&a.position)) {
            let outcome = self.close_one(&bulk, 0, agg, &mut strategies).await?;
            rows.push(row(agg, outcome));
        }
        let rows_page = BulkPage {
            number: step.page,
            rows,
        };
        self.store.put_bulk_page(&bulk.id, &rows_page).await?;
        let next = page.next.clone();
        let saved = self
            .save_progress(bulk, |b| {
                if b.fan_out.pages_done == step.page && !b.fan_out.finished {
                    b.fan_out.pages_done += 1;
                    b.fan_out.cursor = next.clone();
                    b.fan_out.finished = next.is_none();
                }
            })
            .await?;
        self.continue_after(&saved).await
    }

    async fn retry(&self, bulk: BulkClose, step: &JobStep) -> Result<(), JobError> {
        let current = bulk.retry.clone().unwrap_or_default();
        if bulk.retry_rounds != step.round || current.pages_done != step.page || current.finished {
            return self.continue_after(&bulk).await;
        }
        let pages = self.store.bulk_pages(&bulk.id).await?;
        if let Some(stored) = pages.into_iter().find(|p| p.number == step.page) {
            let ids: Vec<&PositionId> = stored.rows.iter().map(|r| &r.position_id).collect();
            let loaded = self.store.aggregates_by_id(&ids).await?;
            let mut strategies = HashMap::new();
            let mut rows = Vec::with_capacity(stored.rows.len());
            for r in stored.rows {
                let agg = loaded.get(&r.position_id);
                let outcome = match (&r.outcome, agg) {
                    (RowOutcome::Failed { .. }, Some(agg)) => {
                        self.close_one(&bulk, step.round, agg, &mut strategies).await?
                    }
                    (RowOutcome::Submitted { close_request_id }, Some(agg)) if close_failed(agg, close_request_id) => {
                        self.retry_close(&bulk, step.round, close_request_id).await?
                    }
                    _ => r.outcome.clone(),
                };
                rows.push(BulkRow { outcome, ..r });
            }
            self.store
                .put_bulk_page(
                    &bulk.id,
                    &BulkPage {
                        number: step.page,
                        rows,
                    },
                )
                .await?;
        }
        let saved = self
            .save_progress(bulk, |b| {
                let pages = b.fan_out.pages_done;
                if let Some(r) = b.retry.as_mut().filter(|r| r.pages_done == step.page && !r.finished) {
                    r.pages_done += 1;
                    r.finished = r.pages_done >= pages;
                }
            })
            .await?;
        self.continue_after(&saved).await
    }

    /// Asks for the step the record says comes next, if the job goes on (the queue drops
    /// a step asked for twice).
    pub(crate) async fn continue_after(&self, bulk: &BulkClose) -> Result<(), JobError> {
        if let Some(next) = pending_step(bulk) {
            self.queue.send(&QueueMessage::for_job(&next)).await?;
        }
        Ok(())
    }

    pub(crate) async fn save_progress(
        &self,
        mut bulk: BulkClose,
        advance: impl Fn(&mut BulkClose),
    ) -> Result<BulkClose, JobError> {
        for _ in 0..PROGRESS_ATTEMPTS {
            let mut next = bulk.clone();
            advance(&mut next);
            if next == bulk {
                return Ok(bulk);
            }
            next.version += 1;
            next.updated_at = self.clock.now();
            if self.store.update_bulk_close(&next).await? {
                return Ok(next);
            }
            bulk = self
                .store
                .bulk_close(&bulk.id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("bulk close {} vanished", bulk.id)))?;
        }
        Err(StoreError::Contention.into())
    }

    /// Opens the close of one position under the round's key: its strategy's close when
    /// it is a leg (once per strategy per step), its own otherwise.
    async fn close_one(
        &self,
        bulk: &BulkClose,
        round: u32,
        agg: &PositionAggregate,
        strategies: &mut HashMap<String, Result<HashMap<PositionId, CloseRequestId>, RowOutcome>>,
    ) -> Result<RowOutcome, StoreError> {
        let p = &agg.position;
        let now = self.clock.now();
        let access = Access::Accounts([bulk.account_id.clone()].into());
        let options = OrderOptions {
            time_in_force: bulk.time_in_force,
            ..OrderOptions::MARKET
        };
        if let Some(strategy_id) = &p.strategy_id {
            if !strategies.contains_key(strategy_id) {
                let cmd = StrategyCloseCommand {
                    strategy_id: strategy_id.clone(),
                    idempotency_key: bulk.id.close_key(round),
                    fingerprint: fingerprint(bulk, "strategy_close"),
                    random: bulk.id.random_for(round, &p.id),
                    mode: None,
                    broker_supports_mleg: self.broker.supports_mleg(),
                    options,
                    qty: None,
                    reason: bulk.reason.clone(),
                    max_retries: bulk.max_retries,
                    actor: bulk.actor.clone(),
                    access,
                    now,
                };
                let decided = match self.store.close_strategy(&cmd).await? {
                    StrategyCloseOutcome::Created(v) | StrategyCloseOutcome::Replayed(v) => Ok(v
                        .legs
                        .iter()
                        .map(|l| (l.position_id.clone(), l.close_request_id))
                        .collect()),
                    StrategyCloseOutcome::Rejected(r) => Err(RowOutcome::from_strategy_rejection(&r)),
                };
                strategies.insert(strategy_id.clone(), decided);
            }
            return Ok(match &strategies[strategy_id] {
                Ok(legs) => match legs.get(&p.id) {
                    Some(id) => RowOutcome::Submitted { close_request_id: *id },
                    None => RowOutcome::Skipped {
                        reason: "not_in_strategy_close".into(),
                    },
                },
                Err(refused) => refused.clone(),
            });
        }
        let cmd = CloseCommand {
            position_id: p.id.clone(),
            idempotency_key: bulk.id.close_key(round),
            fingerprint: fingerprint(bulk, "close"),
            new_id: CloseRequestId::new(&p.id, bulk.id.random_for(round, &p.id)),
            max_retries: bulk.max_retries,
            reason: bulk.reason.clone(),
            cancel_open_orders: bulk.cancel_open_orders,
            actor: bulk.actor.clone(),
            qty: None,
            options,
            access,
            now,
        };
        Ok(match self.store.open_close_request(&cmd).await? {
            CloseOutcome::Created { close_request, .. } | CloseOutcome::Replayed { close_request, .. } => {
                RowOutcome::Submitted {
                    close_request_id: close_request.id,
                }
            }
            CloseOutcome::Rejected(r) => RowOutcome::from_close_rejection(&r),
        })
    }

    /// A new attempt of a close that failed, for what it has left.
    pub(crate) async fn retry_close(
        &self,
        bulk: &BulkClose,
        round: u32,
        id: &CloseRequestId,
    ) -> Result<RowOutcome, StoreError> {
        let cmd = RetryCommand {
            close_request_id: *id,
            idempotency_key: bulk.id.close_key(round),
            fingerprint: fingerprint(bulk, "retry"),
            options: None,
            actor: bulk.actor.clone(),
            access: Access::Accounts([bulk.account_id.clone()].into()),
            now: self.clock.now(),
        };
        Ok(match self.store.retry_close(&cmd).await? {
            Ok(_) => RowOutcome::Submitted { close_request_id: *id },
            Err(r) => RowOutcome::Failed {
                error: r.code().into(),
                message: format!("the retry was refused: {r:?}"),
            },
        })
    }
}

fn close_failed(agg: &PositionAggregate, id: &CloseRequestId) -> bool {
    agg.close_request(id)
        .is_some_and(|(cr, _)| cr.status == CloseRequestStatus::Failed)
}

pub(crate) fn row(agg: &PositionAggregate, outcome: RowOutcome) -> BulkRow {
    BulkRow {
        position_id: agg.position.id.clone(),
        symbol: agg.position.symbol.clone(),
        strategy_id: agg.position.strategy_id.clone(),
        outcome,
    }
}

/// The fingerprint of what a bulk close asks of one close: the same for every step of
/// it, distinct per kind of close so one kind's key never replays as another.
pub(crate) fn fingerprint(bulk: &BulkClose, kind: &str) -> Fingerprint {
    Fingerprint::of_body(
        &serde_json::json!({ "bulk_close": bulk.id.to_string(), "kind": kind, "fingerprint": bulk.fingerprint }),
    )
}
