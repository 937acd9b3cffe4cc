//! Order watch, the floor under every broker: after an order is recorded, closeflow looks
//! it up at growing delays (`closeflow_domain::watch_delay`) until it has ended, applying
//! what it finds through the same merge rules as a webhook. With no webhook and no stream
//! at all, a filled market close is `closed` within seconds; after the last delay the
//! reconciler's "stuck" rule takes over.
//!
//! Scheduling is a port: in AWS an SQS queue with per-message delays feeds a small Lambda;
//! locally [`MemoryWatch`] holds the due times and the driver runs what is due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::TimeDelta;
use closeflow_domain::{watch_delay, ClientOrderId, PositionAggregate, Timestamp};
use closeflow_store::{AggregateKey, CloseStore, StoreError};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;
use crate::queue::QueueError;

/// "Check this order now": the `step`-th check (0 = the first, after `watch_delay(0)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WatchRequest {
    pub client_order_id: String,
    pub step: u32,
}

impl WatchRequest {
    pub fn first(id: &ClientOrderId) -> Self {
        WatchRequest {
            client_order_id: id.to_string(),
            step: 0,
        }
    }
}

#[async_trait]
pub trait WatchQueue: Send + Sync {
    /// Delivers `req` to the watcher after `delay`.
    async fn schedule(&self, req: &WatchRequest, delay: TimeDelta) -> Result<(), QueueError>;
}

/// Schedules the first check of the order a change recorded, if it recorded one.
pub async fn watch_change(
    queue: &dyn WatchQueue,
    before: Option<&PositionAggregate>,
    after: &PositionAggregate,
) -> Result<bool, QueueError> {
    let Some(id) = closeflow_domain::watch_for(before, after) else {
        return Ok(false);
    };
    let delay = watch_delay(0).unwrap_or_default();
    queue.schedule(&WatchRequest::first(&id), delay).await?;
    Ok(true)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The order has ended (or the close moved on): no more checks.
    Done,
    /// Still working, or the broker did not answer: checked again after this delay.
    Again(TimeDelta),
    /// Out of delays: the reconciler takes over.
    HandedOver,
}

/// One check: look the order up and apply what the broker says; schedule the next check
/// while the order works. A malformed request is dropped (nothing to watch).
pub async fn watch_order(
    store: &dyn CloseStore,
    broker: &dyn Broker,
    clock: &dyn Clock,
    queue: &dyn WatchQueue,
    req: &WatchRequest,
) -> Result<WatchOutcome, StoreError> {
    let Ok(id) = ClientOrderId::parse(&req.client_order_id) else {
        tracing::warn!(client_order_id = %req.client_order_id, "malformed order watch dropped");
        return Ok(WatchOutcome::Done);
    };
    // Nothing to ask the broker when the order has already ended here (a webhook or the
    // stream was faster): the watch only fills the silence.
    let key = AggregateKey::CloseRequest(id.close_request_id);
    let Some(agg) = store.aggregate(&key).await? else {
        return Ok(WatchOutcome::Done);
    };
    let ended = agg
        .orders
        .iter()
        .find(|o| o.client_order_id == id)
        .map(|o| o.status.is_terminal());
    if ended != Some(false) {
        return Ok(WatchOutcome::Done);
    }
    match crate::mleg::lookup_order(broker, &agg, &id).await {
        Ok(order) => {
            store
                .apply_order_update(
                    &order.to_update(),
                    clock.now(),
                    closeflow_domain::audit::actor::ORDER_WATCH,
                )
                .await?;
            if order.status.is_terminal() {
                return Ok(WatchOutcome::Done);
            }
        }
        // The broker asks to wait: the same check again once it may be asked, not counted
        // as a step (the watch does not run out while the broker makes it wait).
        Err(e) if e.is_try_later() => {
            let wait = e
                .retry_after()
                .and_then(|d| TimeDelta::from_std(d).ok())
                .unwrap_or(TimeDelta::seconds(1))
                .max(TimeDelta::seconds(1));
            if let Err(e) = queue.schedule(req, wait).await {
                tracing::warn!(error = %e, client_order_id = %id, "order watch not rescheduled");
            }
            return Ok(WatchOutcome::Again(wait));
        }
        // Not visible yet, or no answer: both mean "look again later".
        Err(BrokerError::NotFound) | Err(BrokerError::Ambiguous(_)) => {}
        Err(e) => tracing::warn!(error = %e, client_order_id = %id, "order watch lookup refused"),
    }
    let next = WatchRequest {
        client_order_id: req.client_order_id.clone(),
        step: req.step + 1,
    };
    match watch_delay(next.step) {
        Some(delay) => {
            if let Err(e) = queue.schedule(&next, delay).await {
                // The reconciler's stuck rule still covers this order.
                tracing::warn!(error = %e, client_order_id = %id, "next order watch not scheduled");
            }
            Ok(WatchOutcome::Again(delay))
        }
        None => Ok(WatchOutcome::HandedOver),
    }
}

/// In-process watch schedule for the local stacks: due times on the injected clock, so
/// tests advance time instead of sleeping. Not durable: after a restart the reconciler's
/// stuck rule covers the orders it held.
pub struct MemoryWatch {
    due: Mutex<BinaryHeap<Reverse<(Timestamp, WatchRequest)>>>,
    clock: std::sync::Arc<dyn Clock>,
}

impl MemoryWatch {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        MemoryWatch {
            due: Mutex::new(BinaryHeap::new()),
            clock,
        }
    }

    /// Removes and returns every request whose time has come, earliest first.
    pub fn take_due(&self) -> Vec<WatchRequest> {
        let now = self.clock.now();
        let mut heap = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while heap.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            if let Some(Reverse((_, r))) = heap.pop() {
                out.push(r);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.due.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl WatchQueue for MemoryWatch {
    async fn schedule(&self, req: &WatchRequest, delay: TimeDelta) -> Result<(), QueueError> {
        let at = self.clock.now() + delay;
        self.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse((at, req.clone())));
        Ok(())
    }
}
