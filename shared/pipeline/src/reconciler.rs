//! The scheduled jobs: the reconciler (seed 000 §7, §9) and the cleaner (§8). Each run reads
//! only its work list (a sparse index), does bounded work, and leaves the rest for the next.

use closeflow_domain::audit::actor;
use closeflow_domain::{after_lookup, expire, reconcile, Due, Expire, Lookup, Policy};
use closeflow_store::{modify, AggregateKey, CloseStore, Step, StoreError, WorkList};

use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;

#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub policy: Policy,
    /// Broker lookups per run; the rest waits for the next run.
    pub max_broker_queries: usize,
    /// Work-list items read per run.
    pub page: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            policy: Policy::default(),
            max_broker_queries: 25,
            page: 200,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub items_read: usize,
    pub changed: usize,
    pub broker_queries: usize,
    /// Lookups left for the next run (cap reached).
    pub deferred: usize,
    /// Broker lookups whose answer was unknown (retried next run).
    pub broker_errors: usize,
}

pub async fn reconcile_once(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    cfg: &ReconcileConfig,
) -> Result<ReconcileReport, StoreError> {
    let now = clock.now();
    let policy = &cfg.policy;
    let listed = store
        .work_list(WorkList::Attention, now - policy.earliest_due(), cfg.page)
        .await?;
    let mut report = ReconcileReport {
        items_read: listed.items_read,
        ..Default::default()
    };
    let mut broker_waits = false;
    for agg in listed.aggregates {
        let span = tracing::info_span!(
            "reconcile",
            position_id = %agg.position.id,
            close_request_id = tracing::field::Empty
        );
        if let Some(cr) = &agg.latest_close_request {
            span.record("close_request_id", tracing::field::display(cr.id));
        }
        let _entered = span.enter();
        let key = AggregateKey::Position(agg.position.id.clone());
        let due = match reconcile(&agg, now, policy) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, position_id = %agg.position.id, "reconciler met an illegal state");
                continue;
            }
        };
        match due {
            Due::Nothing => {}
            Due::Change(_) => {
                // Re-decided on the freshly loaded aggregate inside the conditional write.
                let m = modify(store, &key, actor::RECONCILER, |cur| Step {
                    write: match reconcile(cur, now, policy) {
                        Ok(Due::Change(next)) => Some(*next),
                        _ => None,
                    },
                    decision: (),
                })
                .await?;
                report.changed += usize::from(m.is_some_and(|m| m.after.is_some()));
            }
            Due::Lookup {
                client_order_id,
                zombie,
            } => {
                if broker_waits || report.broker_queries >= cfg.max_broker_queries {
                    report.deferred += 1;
                    continue;
                }
                report.broker_queries += 1;
                let answer = match crate::mleg::lookup_order(broker, &agg, &client_order_id).await {
                    Ok(order) => Lookup::Found(order.to_update()),
                    Err(BrokerError::NotFound) => Lookup::NotFound,
                    // Rate limit, open breaker, refused keys: nothing learnt, nothing
                    // counted; this run leaves the broker alone from here on.
                    Err(e) if e.is_try_later() => {
                        tracing::warn!(error = %e, %client_order_id, "broker asks to wait; lookups deferred to the next run");
                        report.broker_errors += 1;
                        report.deferred += 1;
                        broker_waits = true;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %client_order_id, "broker lookup failed; next run");
                        report.broker_errors += 1;
                        continue;
                    }
                };
                let m = modify(store, &key, actor::RECONCILER, |cur| {
                    Step::applied(after_lookup(cur, &client_order_id, zombie, &answer, now, policy))
                })
                .await?;
                report.changed += usize::from(m.is_some_and(|m| m.after.is_some()));
            }
        }
    }
    if report.changed + report.broker_queries + report.deferred > 0 {
        tracing::info!(?report, "reconciler run");
    } else {
        tracing::debug!(?report, "reconciler run");
    }
    Ok(report)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub items_read: usize,
    /// Closed positions removed (TTL had not yet deleted them).
    pub deleted: usize,
    /// Positions whose expired idempotency records / finished close request were removed.
    pub trimmed: usize,
    /// Audit entries past their own retention removed (DynamoDB's TTL does it there).
    pub audit_expired: usize,
}

pub async fn cleanup_once(
    store: &dyn CloseStore,
    clock: &dyn Clock,
    retention: chrono::TimeDelta,
    page: usize,
) -> Result<CleanupReport, StoreError> {
    let now = clock.now();
    let listed = store.work_list(WorkList::Expiry, now - retention, page).await?;
    let mut report = CleanupReport {
        items_read: listed.items_read,
        ..Default::default()
    };
    for agg in listed.aggregates {
        match expire(&agg, now, retention) {
            Expire::Nothing => {}
            Expire::Delete => {
                if store.delete_if_unchanged(&agg).await? {
                    report.deleted += 1;
                }
            }
            Expire::Rewrite(_) => {
                let key = AggregateKey::Position(agg.position.id.clone());
                let m = modify(store, &key, actor::CLEANUP, |cur| Step {
                    write: match expire(cur, now, retention) {
                        Expire::Rewrite(next) => Some(*next),
                        _ => None,
                    },
                    decision: (),
                })
                .await?;
                report.trimmed += usize::from(m.is_some_and(|m| m.after.is_some()));
            }
        }
    }
    report.audit_expired = store.expire_audit(now).await?;
    if report.deleted + report.trimmed + report.audit_expired > 0 {
        tracing::info!(?report, "cleanup run");
    } else {
        tracing::debug!(?report, "cleanup run");
    }
    Ok(report)
}
