//! Embedded in-memory store. One mutex over all aggregates: every operation is a short
//! critical section with no await inside, which gives the same atomicity as DynamoDB's
//! single-item conditional writes. Every write is also published, in commit order, on a
//! change feed: the embedded twin of the table's DynamoDB stream (the outbox).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::{
    decide_close, decide_register, CloseCommand, CloseDecision, CloseRequest, CloseRequestId, Order, Position,
    PositionAggregate, PositionId, RegisterDecision, RegisterPosition, Timestamp,
};
use tokio::sync::mpsc;

use crate::{
    work_list_entry, AggregateKey, CloseOutcome, CloseStore, Listed, Modified, ModifyFn, RegisterOutcome, StoreError,
    WorkList,
};

/// One committed write, as a stream record with old and new images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub before: Option<PositionAggregate>,
    pub after: PositionAggregate,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    positions: HashMap<PositionId, PositionAggregate>,
    /// Close request id -> owning position (the in-memory twin of the routing key).
    owners: HashMap<CloseRequestId, PositionId>,
    feed: Option<mpsc::UnboundedSender<Change>>,
    /// The sparse work-list index: (list, since, position) for listed aggregates only.
    lists: BTreeSet<(WorkList, Timestamp, PositionId)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation is a single `write` call, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to the change feed (one subscriber; a new one replaces the old).
    pub fn changes(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().feed = Some(tx);
        rx
    }

    /// Stores an aggregate as given: fixtures for states the API cannot reach on its own.
    pub fn insert_aggregate(&self, agg: PositionAggregate) {
        self.lock().write(agg);
    }
}

impl Inner {
    fn write(&mut self, agg: PositionAggregate) {
        if let Some(cr) = &agg.latest_close_request {
            self.owners.insert(cr.id, agg.position.id.clone());
        }
        let before = self.positions.insert(agg.position.id.clone(), agg.clone());
        if let Some((list, t)) = before.as_ref().and_then(work_list_entry) {
            self.lists.remove(&(list, t, agg.position.id.clone()));
        }
        if let Some((list, t)) = work_list_entry(&agg) {
            self.lists.insert((list, t, agg.position.id.clone()));
        }
        if let Some(feed) = &self.feed {
            // A dropped subscriber only means nobody is relaying (tests without a pipeline).
            let _ = feed.send(Change { before, after: agg });
        }
    }

    fn find(&self, key: &AggregateKey) -> Option<&PositionAggregate> {
        match key {
            AggregateKey::Position(id) => self.positions.get(id),
            AggregateKey::CloseRequest(id) => {
                let agg = self.positions.get(self.owners.get(id)?)?;
                agg.latest_close_request.as_ref().filter(|c| c.id == *id)?;
                Some(agg)
            }
        }
    }

    fn find_close_request(&self, id: &CloseRequestId) -> Option<(&Position, &CloseRequest, &[Order])> {
        let agg = self.find(&AggregateKey::CloseRequest(*id))?;
        Some((&agg.position, agg.latest_close_request.as_ref()?, &agg.orders))
    }
}

#[async_trait]
impl CloseStore for MemoryStore {
    async fn register_position(&self, cmd: &RegisterPosition) -> Result<RegisterOutcome, StoreError> {
        let mut inner = self.lock();
        let current = inner.positions.get(&cmd.position_id);
        let decision = decide_register(current, cmd);
        match &decision {
            Ok(RegisterDecision::Created(p)) => inner.write(PositionAggregate::new(p.clone())),
            Ok(RegisterDecision::Updated(p)) => {
                if let Some(mut agg) = inner.positions.get(&p.id).cloned() {
                    agg.position = p.clone();
                    inner.write(agg);
                }
            }
            Ok(RegisterDecision::Unchanged(_)) | Err(_) => {}
        }
        Ok(decision)
    }

    async fn position(&self, id: &PositionId) -> Result<Option<Position>, StoreError> {
        Ok(self.lock().positions.get(id).map(|a| a.position.clone()))
    }

    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError> {
        let mut inner = self.lock();
        match decide_close(inner.positions.get(&cmd.position_id), cmd) {
            CloseDecision::Create(next) => {
                let next = *next;
                let cr = next
                    .latest_close_request
                    .clone()
                    .ok_or_else(|| StoreError::Corrupt("created aggregate has no close request".into()))?;
                let position = next.position.clone();
                inner.write(next);
                Ok(CloseOutcome::Created {
                    position,
                    close_request: cr,
                })
            }
            CloseDecision::Replay(id) => {
                let (position, cr, orders) = inner.find_close_request(&id).ok_or_else(|| {
                    StoreError::Corrupt(format!("idempotency record points at missing close request {id}"))
                })?;
                Ok(CloseOutcome::Replayed {
                    position: position.clone(),
                    close_request: cr.clone(),
                    orders: orders.to_vec(),
                })
            }
            CloseDecision::Reject(r) => Ok(CloseOutcome::Rejected(r)),
        }
    }

    async fn aggregate(&self, key: &AggregateKey) -> Result<Option<PositionAggregate>, StoreError> {
        Ok(self.lock().find(key).cloned())
    }

    async fn modify(&self, key: &AggregateKey, f: &ModifyFn<'_>) -> Result<Option<Modified>, StoreError> {
        let mut inner = self.lock();
        let Some(before) = inner.find(key).cloned() else {
            return Ok(None);
        };
        let after = f(&before);
        if let Some(next) = &after {
            if next.position.version != before.position.version + 1 || next.position.id != before.position.id {
                return Err(StoreError::Corrupt(
                    "modify must bump the version of the same position".into(),
                ));
            }
            inner.write(next.clone());
        }
        Ok(Some(Modified { before, after }))
    }

    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError> {
        let inner = self.lock();
        let aggregates: Vec<_> = inner
            .lists
            .range((list, Timestamp::MIN_UTC, PositionId::parse("0").expect("literal"))..)
            .take_while(|(l, t, _)| *l == list && *t <= since)
            .take(limit)
            .filter_map(|(_, _, id)| inner.positions.get(id).cloned())
            .collect();
        Ok(Listed {
            items_read: aggregates.len(),
            aggregates,
        })
    }

    async fn delete_if_unchanged(&self, id: &PositionId, version: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.positions.get(id).map(|a| a.position.version) != Some(version) {
            return Ok(false);
        }
        if let Some(agg) = inner.positions.remove(id) {
            if let Some((list, t)) = work_list_entry(&agg) {
                inner.lists.remove(&(list, t, id.clone()));
            }
            if let Some(cr) = &agg.latest_close_request {
                inner.owners.remove(&cr.id);
            }
        }
        Ok(true)
    }
}
