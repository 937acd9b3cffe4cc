//! Broker-pushed order updates (Alpaca's `trade_updates` stream): what closeflow does with
//! each one, and the backfill that closes the gap after every (re)connect. The transport
//! (WebSocket, authentication, reconnects) is the broker adapter's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use closeflow_domain::audit::actor;
use closeflow_domain::{AccountId, ClientOrderId, MlegReport, OrderUpdate};
use closeflow_store::{CloseStore, StoreError, UpdateResult, WorkList};

use crate::broker::Broker;
use crate::clock::Clock;

/// What a stream consumer hands its updates to.
#[async_trait]
pub trait TradeUpdateHandler: Send + Sync {
    /// One update about one of closeflow's orders.
    async fn apply(&self, update: &OrderUpdate) -> Result<UpdateResult, StoreError>;
    /// One update about one of closeflow's multi-leg orders, each leg's part reported.
    async fn apply_mleg(&self, report: &MlegReport) -> Result<UpdateResult, StoreError>;
    /// After a (re)connect: ask the broker about every order still working here, so what
    /// happened while disconnected is not lost.
    async fn backfill(&self) -> Result<usize, StoreError>;
    /// An event about an order closeflow did not make (counted, not logged one by one).
    fn foreign(&self);
}

/// Applies updates to the store through the domain's merge rules, like the webhook.
pub struct StoreUpdates {
    pub store: Arc<dyn CloseStore>,
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
    pub foreign: AtomicU64,
    /// The accounts this consumer's connection (key pair) reports on; `None`: every one.
    pub accounts: Option<AccountFilter>,
}

/// The store a consumer applies to (re-exported so adapters need not name the store crate).
pub type UpdateStore = dyn CloseStore;

/// Which accounts a stream connection's key pair serves.
pub type AccountFilter = Arc<dyn Fn(&AccountId) -> bool + Send + Sync>;

impl StoreUpdates {
    pub fn new(store: Arc<dyn CloseStore>, broker: Arc<dyn Broker>, clock: Arc<dyn Clock>) -> Self {
        StoreUpdates {
            store,
            broker,
            clock,
            foreign: AtomicU64::new(0),
            accounts: None,
        }
    }

    /// Backfills only the orders of the accounts `serves` accepts (one consumer per key
    /// pair: each looks up its own accounts' orders with its own keys).
    pub fn for_accounts(mut self, serves: AccountFilter) -> Self {
        self.accounts = Some(serves);
        self
    }

    pub fn foreign_count(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }
}

/// Aggregates looked at per backfill (the in-flight work list, oldest first).
const BACKFILL_PAGE: usize = 1000;

#[async_trait]
impl TradeUpdateHandler for StoreUpdates {
    async fn apply(&self, update: &OrderUpdate) -> Result<UpdateResult, StoreError> {
        // The broker's own time: a close settled by this update is closed when it filled.
        self.store
            .apply_order_update(update, update.updated_at, actor::TRADE_STREAM)
            .await
    }

    async fn apply_mleg(&self, report: &MlegReport) -> Result<UpdateResult, StoreError> {
        self.store
            .apply_mleg_report(report, report.updated_at, actor::TRADE_STREAM)
            .await
    }

    async fn backfill(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let listed = self
            .store
            .work_list(WorkList::Attention, now + chrono::TimeDelta::days(3650), BACKFILL_PAGE)
            .await?;
        let working: Vec<(&closeflow_domain::PositionAggregate, ClientOrderId)> = listed
            .aggregates
            .iter()
            .filter(|a| self.accounts.as_ref().is_none_or(|s| s(&a.position.account_id)))
            .flat_map(|a| {
                a.orders
                    .iter()
                    .filter(|o| !o.status.is_terminal())
                    .map(move |o| (a, o.client_order_id.clone()))
            })
            .collect();
        let mut applied = 0;
        for (agg, id) in working {
            match crate::mleg::lookup_order(self.broker.as_ref(), agg, &id).await {
                Ok(order) => {
                    self.store
                        .apply_order_update(&order.to_update(), now, actor::TRADE_STREAM)
                        .await?;
                    applied += 1;
                }
                // The broker asks to wait: the rest is left to the order watch and the
                // reconciler (nothing is lost, only later).
                Err(e) if e.is_try_later() => {
                    tracing::warn!(error = %e, "backfill stopped: the broker asks to wait");
                    break;
                }
                // The order watch and the reconciler look again later.
                Err(e) => tracing::warn!(error = %e, client_order_id = %id, "backfill lookup failed"),
            }
        }
        Ok(applied)
    }

    fn foreign(&self) {
        self.foreign.fetch_add(1, Ordering::Relaxed);
    }
}
