//! Broker-pushed order updates (Alpaca's `trade_updates` stream): what closeflow does with
//! each one, and the backfill that closes the gap after every (re)connect. The transport
//! (WebSocket, authentication, reconnects) is the broker adapter's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use closeflow_domain::audit::actor;
use closeflow_domain::{ClientOrderId, OrderUpdate};
use closeflow_store::{CloseStore, StoreError, UpdateResult, WorkList};

use crate::broker::Broker;
use crate::clock::Clock;

/// What a stream consumer hands its updates to.
#[async_trait]
pub trait TradeUpdateHandler: Send + Sync {
    /// One update about one of closeflow's orders.
    async fn apply(&self, update: &OrderUpdate) -> Result<UpdateResult, StoreError>;
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
}

impl StoreUpdates {
    pub fn new(store: Arc<dyn CloseStore>, broker: Arc<dyn Broker>, clock: Arc<dyn Clock>) -> Self {
        StoreUpdates {
            store,
            broker,
            clock,
            foreign: AtomicU64::new(0),
        }
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

    async fn backfill(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let listed = self
            .store
            .work_list(WorkList::Attention, now + chrono::TimeDelta::days(3650), BACKFILL_PAGE)
            .await?;
        let working: Vec<ClientOrderId> = listed
            .aggregates
            .iter()
            .flat_map(|a| a.orders.iter())
            .filter(|o| !o.status.is_terminal())
            .map(|o| o.client_order_id.clone())
            .collect();
        let mut applied = 0;
        for id in working {
            match self.broker.get_order_by_client_id(&id).await {
                Ok(order) => {
                    self.store
                        .apply_order_update(&order.to_update(), now, actor::TRADE_STREAM)
                        .await?;
                    applied += 1;
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
