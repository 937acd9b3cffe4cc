//! The emergency liquidation job: a bulk close that loops until the broker reports the
//! account flat. Each step is one queue message, like a bulk close's pages; a step that must
//! wait on the broker (cancels to land, closes to end) fails so that the message is
//! delivered again later, and the record's step counter makes a repeated step a no-op.
//! `closeflow_domain::Liquidation` decides the order of things; this does the I/O.

use closeflow_domain::sync::SyncPolicy;
use closeflow_domain::{
    row_view, Access, BulkClose, BulkPage, CloseCommand, CloseRequestId, DomainEvent, Liquidation, LiquidationPhase,
    OrderOptions, PositionAggregate, PositionId, PositionStatus, RowOutcome, RowStatus, TradingStateEvent,
    BULK_PAGE_SIZE,
};
use closeflow_store::{CloseOutcome, IndexQuery, ListIndex, StoreError};

use crate::broker::BrokerError;
use crate::bulk::{fingerprint, row, BulkJob, JobError, JobStep};
use crate::sync::{sync_once, SyncConfig};

/// The actor of the account's trading-state moves the job makes.
pub const LIQUIDATION_ACTOR: &str = "liquidation";

impl BulkJob<'_> {
    pub(crate) async fn liquidate(&self, bulk: BulkClose, step: &JobStep) -> Result<(), JobError> {
        let Some(l) = bulk.liquidation.clone() else {
            return Ok(());
        };
        if l.phase == LiquidationPhase::Done || l.steps != step.page {
            return self.continue_after(&bulk).await;
        }
        let now = self.clock.now();
        let next = match l.phase {
            LiquidationPhase::CancelOrders => {
                if l.steps == 0 {
                    self.started(&bulk).await?;
                }
                let open = self
                    .broker
                    .account_open_orders(&bulk.account_id)
                    .await
                    .map_err(JobError::Broker)?;
                if open.is_empty() || l.patience_spent(now) {
                    if !open.is_empty() {
                        tracing::warn!(bulk_close_id = %bulk.id, open = open.len(), "open orders would not go; liquidating regardless");
                    }
                    l.advanced(LiquidationPhase::Sync)
                } else {
                    for o in &open {
                        match self.broker.cancel_order(&bulk.account_id, &o.broker_order_id).await {
                            Ok(()) | Err(BrokerError::NotFound) => {}
                            Err(e) => return Err(JobError::Broker(e)),
                        }
                    }
                    let ids: Vec<String> = open.iter().map(|o| o.broker_order_id.clone()).collect();
                    return self
                        .wait(
                            bulk,
                            l.steps,
                            format!("{} open orders being canceled", ids.len()),
                            |l| {
                                for id in &ids {
                                    if !l.canceled_orders.contains(id) {
                                        l.canceled_orders.push(id.clone());
                                    }
                                }
                            },
                        )
                        .await;
                }
            }
            LiquidationPhase::Sync => {
                // What only the broker holds becomes a position here, so it is closed too.
                let cfg = SyncConfig {
                    accounts: vec![bulk.account_id.clone()],
                    policy: SyncPolicy {
                        adopt: true,
                        ..SyncPolicy::default()
                    },
                    max_broker_calls: 1,
                };
                let report = sync_once(self.store, self.broker, self.clock, self.events, &cfg).await?;
                if report.accounts == 0 {
                    return Err(JobError::Wait("the broker's positions could not be read".into()));
                }
                l.advanced(LiquidationPhase::CloseShorts)
            }
            LiquidationPhase::CloseShorts | LiquidationPhase::CloseLongs => {
                let page = self
                    .store
                    .list_index(&IndexQuery {
                        index: ListIndex::Account(bulk.account_id.clone()),
                        before: l.cursor.clone(),
                        limit: BULK_PAGE_SIZE,
                        status: None,
                        accounts: None,
                    })
                    .await?;
                let mut rows = Vec::new();
                for agg in page.positions.iter().filter(|a| l.takes(&a.position)) {
                    rows.push(row(agg, self.close_for_liquidation(&bulk, l.attempt, agg).await?));
                }
                self.store
                    .put_bulk_page(&bulk.id, &BulkPage { number: l.pages, rows })
                    .await?;
                l.after_close_page(page.next.clone())
            }
            LiquidationPhase::Verify => {
                let working = self.working_closes(&bulk, &l).await?;
                if working > 0 && !l.patience_spent(now) {
                    return self
                        .wait(bulk, l.steps, format!("{working} closes still working"), |_| {})
                        .await;
                }
                let held: Vec<String> = self
                    .broker
                    .list_positions(&bulk.account_id)
                    .await
                    .map_err(JobError::Broker)?
                    .into_iter()
                    .filter(|h| !h.qty.is_zero())
                    .map(|h| format!("{} {}", h.symbol, h.qty))
                    .collect();
                let next = l.verified(held);
                if next.phase == LiquidationPhase::Done {
                    self.ended(&bulk, &next).await?;
                }
                next
            }
            LiquidationPhase::Done => unreachable!("handled above"),
        };
        let saved = self
            .save_progress(bulk, |b| {
                if b.liquidation.as_ref().is_some_and(|x| x.steps == l.steps) {
                    b.liquidation = Some(next.clone());
                }
            })
            .await?;
        self.continue_after(&saved).await
    }

    /// Records that the step is waiting (since when, and what `note` adds), and leaves the
    /// message to come back.
    async fn wait(
        &self,
        bulk: BulkClose,
        steps: u32,
        why: String,
        note: impl Fn(&mut Liquidation),
    ) -> Result<(), JobError> {
        let now = self.clock.now();
        self.save_progress(bulk, |b| {
            if let Some(l) = b.liquidation.as_mut().filter(|l| l.steps == steps) {
                l.waiting_since.get_or_insert(now);
                note(l);
            }
        })
        .await?;
        Err(JobError::Wait(why))
    }

    /// How many of the current attempt's closes are still working.
    async fn working_closes(&self, bulk: &BulkClose, l: &Liquidation) -> Result<usize, StoreError> {
        let rows: Vec<_> = self
            .store
            .bulk_pages(&bulk.id)
            .await?
            .into_iter()
            .filter(|p| p.number >= l.attempt_first_page)
            .flat_map(|p| p.rows)
            .collect();
        let submitted: Vec<&PositionId> = rows
            .iter()
            .filter(|r| matches!(r.outcome, RowOutcome::Submitted { .. }))
            .map(|r| &r.position_id)
            .collect();
        let loaded = self.store.aggregates_by_id(&submitted).await?;
        Ok(rows
            .iter()
            .filter(|r| row_view(r, loaded.get(&r.position_id)).status == RowStatus::Pending)
            .count())
    }

    /// One position's close in attempt `attempt`: a market close of all of it, or a new
    /// attempt of its close that failed. Legs close one by one (shorts first), not as a
    /// strategy: a multi-leg order the broker refuses would hold up the whole account.
    async fn close_for_liquidation(
        &self,
        bulk: &BulkClose,
        attempt: u32,
        agg: &PositionAggregate,
    ) -> Result<RowOutcome, StoreError> {
        let p = &agg.position;
        if p.status == PositionStatus::CloseFailed {
            if let Some(id) = p.active_close_request_id {
                return self.retry_close(bulk, attempt, &id).await;
            }
        }
        let cmd = CloseCommand {
            position_id: p.id.clone(),
            idempotency_key: bulk.id.close_key(attempt),
            fingerprint: fingerprint(bulk, "liquidate"),
            new_id: CloseRequestId::new(&p.id, bulk.id.random_for(attempt, &p.id)),
            max_retries: bulk.max_retries,
            reason: bulk.reason.clone(),
            cancel_open_orders: false,
            actor: bulk.actor.clone(),
            qty: None,
            options: OrderOptions::MARKET,
            access: Access::Accounts([bulk.account_id.clone()].into()),
            now: self.clock.now(),
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

    /// The first step: the account is liquidating (the request already moved it; a record
    /// whose request crashed before that is moved here) and the world hears of it.
    async fn started(&self, bulk: &BulkClose) -> Result<(), JobError> {
        let moved = self
            .store
            .set_trading_state(
                &bulk.account_id,
                TradingStateEvent::LiquidationStarted,
                &bulk.actor,
                bulk.reason.as_deref(),
                self.clock.now(),
            )
            .await?;
        if let Err(e) = &moved {
            tracing::debug!(%e, bulk_close_id = %bulk.id, "account already liquidating");
        }
        self.publish(vec![
            self.event(bulk, "LiquidationStarted", "liquidating", bulk.reason.clone()),
            self.event(bulk, "TradingStateChanged", "liquidating", bulk.reason.clone()),
        ])
        .await;
        Ok(())
    }

    /// The last step: the account is halted (a human resumes it) and the outcome is told;
    /// anything left at the broker is an alert naming it.
    async fn ended(&self, bulk: &BulkClose, l: &Liquidation) -> Result<(), JobError> {
        let outcome = match l.flat {
            Some(true) => "flat".to_string(),
            _ => format!(
                "not flat after {} attempts; still held: {}",
                l.attempt + 1,
                l.left.join(", ")
            ),
        };
        let moved = self
            .store
            .set_trading_state(
                &bulk.account_id,
                TradingStateEvent::LiquidationEnded,
                LIQUIDATION_ACTOR,
                Some(&outcome),
                self.clock.now(),
            )
            .await?;
        let mut events = vec![self.event(bulk, "LiquidationCompleted", "halted", Some(outcome.clone()))];
        if moved.is_ok() {
            events.push(self.event(bulk, "TradingStateChanged", "halted", Some(outcome.clone())));
        }
        if l.flat != Some(true) {
            events.push(self.event(
                bulk,
                "Alert",
                "halted",
                Some(format!("liquidation_incomplete: {outcome}")),
            ));
        }
        self.publish(events).await;
        Ok(())
    }

    fn event(
        &self,
        bulk: &BulkClose,
        detail_type: &'static str,
        state: &'static str,
        reason: Option<String>,
    ) -> DomainEvent {
        DomainEvent {
            detail_type,
            position_id: String::new(),
            account_id: bulk.account_id.to_string(),
            close_request_id: None,
            status: state,
            reason: Some(match reason {
                Some(r) => format!("liquidation {}: {r}", bulk.id),
                None => format!("liquidation {}", bulk.id),
            }),
            at: self.clock.now(),
        }
    }

    async fn publish(&self, events: Vec<DomainEvent>) {
        // Events are told at least once; a lost one is logged, never a reason to stop the
        // liquidation.
        if let Err(e) = self.events.publish(&events).await {
            tracing::error!(error = %e, "liquidation events not published");
        }
    }
}
