//! The local pipeline driver. In AWS, Lambda moves records from the table's stream to the
//! relay and from SQS to the submitter. Locally (embedded stack, moto) nothing does, so
//! this driver polls a change feed and a queue and calls the very same relay and submitter.
//! One driver for every local backend: only the feed and queue adapters differ.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use closeflow_store::{Change, ChangeLog, CloseStore, SqliteStore};
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::bulk::{BulkJob, JobError};
use crate::clock::Clock;
use crate::events::EventSink;
use crate::queue::{MemoryQueue, OrderQueue, QueueError, QueueMessage, Work};
use crate::relay::relay;
use crate::sim_broker::SimulatedBroker;
use crate::submitter::{submit, SubmitError};
use crate::watch::{watch_change, watch_order, MemoryWatch, WatchQueue};
use closeflow_domain::{audit_entries, events_for};

#[derive(Debug, thiserror::Error)]
#[error("change feed: {0}")]
pub struct FeedError(pub String);

/// Committed changes of position aggregates (the table's stream), oldest first.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Committed changes not yet handled, oldest first; empty when nothing is new.
    async fn next_batch(&self) -> Result<Vec<Change>, FeedError>;

    /// The first `count` changes of the last batch are handled: they are not read again.
    /// The rest come back in the next batch. (A stream's position moves on read: nothing
    /// to record.)
    async fn handled(&self, _count: usize) -> Result<(), FeedError> {
        Ok(())
    }
}

/// A received queue message and the handle needed to delete or release it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: QueueMessage,
    pub receipt: String,
}

#[async_trait]
pub trait QueueConsumer: Send + Sync {
    async fn receive(&self) -> Result<Vec<Delivery>, QueueError>;
    /// Handled: delete it.
    async fn ack(&self, d: &Delivery) -> Result<(), QueueError>;
    /// Not handled: deliver it again later.
    async fn release(&self, d: &Delivery) -> Result<(), QueueError>;
}

/// A store's change log (outbox) as a [`ChangeFeed`]: a change is acknowledged only once
/// it is handled, so after a crash the driver resumes at the first unhandled change.
pub struct LogFeed {
    log: Arc<dyn ChangeLog>,
    /// Sequence numbers of the last batch, in order.
    last: Mutex<Vec<u64>>,
}

/// Changes read per batch.
const FEED_BATCH: usize = 500;

impl LogFeed {
    pub fn new(log: Arc<dyn ChangeLog>) -> Self {
        LogFeed {
            log,
            last: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl ChangeFeed for LogFeed {
    async fn next_batch(&self) -> Result<Vec<Change>, FeedError> {
        let batch = self
            .log
            .unacknowledged(FEED_BATCH)
            .await
            .map_err(|e| FeedError(e.to_string()))?;
        *self.last.lock().await = batch.iter().map(|s| s.seq).collect();
        Ok(batch.into_iter().map(|s| s.change).collect())
    }

    async fn handled(&self, count: usize) -> Result<(), FeedError> {
        let last = self.last.lock().await;
        match count.checked_sub(1).and_then(|i| last.get(i)) {
            Some(seq) => self.log.acknowledge(*seq).await.map_err(|e| FeedError(e.to_string())),
            None => Ok(()),
        }
    }
}

pub struct Driver {
    pub store: Arc<dyn CloseStore>,
    pub broker: Arc<dyn Broker>,
    /// When the broker is simulated, its webhook calls are awaited so `pump` is complete.
    pub sim: Option<Arc<SimulatedBroker>>,
    pub clock: Arc<dyn Clock>,
    pub feed: Arc<dyn ChangeFeed>,
    pub producer: Arc<dyn OrderQueue>,
    pub consumer: Arc<dyn QueueConsumer>,
    /// Where state-change events and alerts from the same changes go.
    pub events: Arc<dyn EventSink>,
    /// The order watch: each recorded order is looked up at growing delays until it ends.
    pub watch: Arc<MemoryWatch>,
    /// How long audit entries derived from the changes are kept.
    pub audit_retention: chrono::TimeDelta,
}

/// Attempts to hand one change to the queue before giving up on it loudly.
const RELAY_ATTEMPTS: usize = 3;

impl Driver {
    /// Relays the changes the feed has, in order, stopping at the first one the queue will
    /// not take (it comes back next time: nothing is skipped); returns how many it handled.
    pub async fn relay_changes(&self) -> usize {
        let batch = match self.feed.next_batch().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "change feed unavailable");
                return 0;
            }
        };
        let mut handled = 0;
        'changes: for change in &batch {
            for attempt in 1..=RELAY_ATTEMPTS {
                match relay(self.producer.as_ref(), change.before.as_ref(), &change.after).await {
                    Ok(_) => break,
                    Err(e) if attempt == RELAY_ATTEMPTS => {
                        tracing::error!(error = %e, position_id = %change.after.position.id, "outbox relay failed; will retry");
                        break 'changes;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let entries = audit_entries(change.before.as_ref(), &change.after);
            if !entries.is_empty() {
                if let Err(e) = self.store.record(&entries, self.audit_retention).await {
                    // Not acknowledged: the change comes back, and the queue and the audit
                    // log both drop what they already have.
                    tracing::error!(error = %e, position_id = %change.after.position.id, "audit entries not recorded; will retry");
                    break 'changes;
                }
            }
            if let Err(e) = watch_change(self.watch.as_ref(), change.before.as_ref(), &change.after).await {
                tracing::warn!(error = %e, position_id = %change.after.position.id, "order watch not scheduled");
            }
            let events = events_for(change.before.as_ref(), &change.after);
            if !events.is_empty() {
                if let Err(e) = self.events.publish(&events).await {
                    tracing::error!(error = %e, position_id = %change.after.position.id, "events not published");
                }
            }
            handled += 1;
        }
        if let Err(e) = self.feed.handled(handled).await {
            // Not acknowledged: the same changes are relayed again, and the queue's
            // deduplication drops the repeats.
            tracing::warn!(error = %e, "change feed acknowledgement failed");
        }
        handled
    }

    /// Submits one delivery; true when it is done with (acked), false when released.
    pub async fn handle(&self, d: &Delivery) -> bool {
        let done = match d.message.work() {
            Err(e) => {
                tracing::error!(error = %e, "malformed queue message dropped");
                true
            }
            Ok(Work::Job(step)) => {
                let job = BulkJob {
                    store: self.store.as_ref(),
                    queue: self.producer.as_ref(),
                    clock: self.clock.as_ref(),
                    broker: self.broker.as_ref(),
                    events: self.events.as_ref(),
                };
                match job.run(&step).await {
                    Ok(()) => true,
                    Err(JobError::Wait(why)) => {
                        tracing::debug!(%why, dedup_id = %d.message.dedup_id, "bulk close step waits; will redeliver");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, dedup_id = %d.message.dedup_id, "bulk close step failed; will redeliver");
                        false
                    }
                }
            }
            Ok(Work::Submit(req)) => {
                match submit(self.store.as_ref(), self.broker.as_ref(), self.clock.as_ref(), &req).await {
                    Ok(_) => true,
                    Err(SubmitError::Ambiguous(e)) => {
                        tracing::warn!(error = %e, dedup_id = %d.message.dedup_id, "submission outcome unknown; will redeliver");
                        false
                    }
                    Err(e @ SubmitError::TryLater { .. }) => {
                        tracing::info!(error = %e, dedup_id = %d.message.dedup_id, "broker asks to wait; will redeliver");
                        false
                    }
                    Err(SubmitError::Store(e)) => {
                        tracing::warn!(error = %e, dedup_id = %d.message.dedup_id, "store unavailable; will redeliver");
                        false
                    }
                }
            }
        };
        let res = if done {
            self.consumer.ack(d).await
        } else {
            self.consumer.release(d).await
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "queue acknowledgement failed; the message may be delivered again");
        }
        done
    }

    /// Runs the order-watch checks that are due; returns how many ran.
    pub async fn watch_due(&self) -> usize {
        let due = self.watch.take_due();
        for req in &due {
            let outcome = watch_order(
                self.store.as_ref(),
                self.broker.as_ref(),
                self.clock.as_ref(),
                self.watch.as_ref(),
                req,
            )
            .await;
            if let Err(e) = outcome {
                // The store was unavailable: look again at the next delay's pace.
                tracing::warn!(error = %e, client_order_id = %req.client_order_id, "order watch failed; retrying");
                let _ = self.watch.schedule(req, chrono::TimeDelta::seconds(1)).await;
            }
        }
        due.len()
    }

    /// Runs until nothing new happens: relay, submit, due order watches, wait for the
    /// simulated broker's webhook calls, repeat. A message released in this call is retried
    /// on the next call.
    pub async fn pump(&self) {
        let mut released: HashSet<String> = HashSet::new();
        loop {
            let mut worked = self.relay_changes().await > 0;
            worked |= self.watch_due().await > 0;
            match self.consumer.receive().await {
                Ok(batch) => {
                    for d in batch {
                        if released.contains(&d.message.dedup_id) {
                            let _ = self.consumer.release(&d).await;
                            continue;
                        }
                        worked = true;
                        if !self.handle(&d).await {
                            released.insert(d.message.dedup_id.clone());
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "queue unavailable"),
            }
            if let Some(sim) = &self.sim {
                sim.idle().await;
            }
            if !worked {
                return;
            }
        }
    }

    /// Runs live: pumps, and sleeps `idle` whenever there is nothing to do.
    pub async fn run(&self, idle: Duration) {
        loop {
            self.pump().await;
            tokio::time::sleep(idle).await;
        }
    }
}

/// [`MemoryQueue`] as a consumer: released messages come back on the next receive.
#[async_trait]
impl QueueConsumer for MemoryQueue {
    async fn receive(&self) -> Result<Vec<Delivery>, QueueError> {
        Ok(self
            .take_all()
            .into_iter()
            .map(|m| Delivery {
                receipt: m.dedup_id.clone(),
                message: m,
            })
            .collect())
    }

    async fn ack(&self, _d: &Delivery) -> Result<(), QueueError> {
        Ok(())
    }

    async fn release(&self, d: &Delivery) -> Result<(), QueueError> {
        self.redeliver(d.message.clone())
    }
}

/// The SQLite store's durable queue as the order queue: a relayed message survives a
/// restart until the submitter has handled it.
#[async_trait]
impl OrderQueue for SqliteStore {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        self.enqueue(&msg.group_id, &msg.dedup_id, &msg.body)
            .map(|_| ())
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }
}

#[async_trait]
impl QueueConsumer for SqliteStore {
    async fn receive(&self) -> Result<Vec<Delivery>, QueueError> {
        let rows = self
            .queued(FEED_BATCH)
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| Delivery {
                receipt: r.seq.to_string(),
                message: QueueMessage {
                    group_id: r.group_id,
                    dedup_id: r.dedup_id,
                    body: r.body,
                },
            })
            .collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        let seq = d
            .receipt
            .parse()
            .map_err(|_| QueueError::BadMessage(format!("receipt `{}`", d.receipt)))?;
        self.dequeue(seq).map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    /// Not handled: it stays queued and comes back on the next receive.
    async fn release(&self, _d: &Delivery) -> Result<(), QueueError> {
        Ok(())
    }
}
