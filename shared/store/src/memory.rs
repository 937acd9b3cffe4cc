//! Embedded in-memory store. One mutex over all aggregates: every operation is a short
//! critical section with no await inside, which gives the same atomicity as DynamoDB's
//! single-item conditional writes.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::{
    decide_close, decide_register, CloseCommand, CloseDecision, CloseRequest, CloseRequestId,
    Position, PositionAggregate, PositionId, RegisterDecision, RegisterPosition,
};

use crate::{CloseOutcome, CloseStore, RegisterOutcome, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    positions: HashMap<PositionId, PositionAggregate>,
    /// Close request id -> owning position (the in-memory twin of the routing key).
    owners: HashMap<CloseRequestId, PositionId>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied aggregate (every
        // mutation is a single insert), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an aggregate as given: fixtures for states the API cannot reach on its own
    /// yet (and, later, the writer of those states).
    pub fn insert_aggregate(&self, agg: PositionAggregate) {
        let mut inner = self.lock();
        if let Some(cr) = &agg.latest_close_request {
            inner.owners.insert(cr.id, agg.position.id.clone());
        }
        inner.positions.insert(agg.position.id.clone(), agg);
    }

    /// A copy of the whole aggregate, for tests and invariant checks.
    pub fn aggregate(&self, id: &PositionId) -> Option<PositionAggregate> {
        self.lock().positions.get(id).cloned()
    }
}

impl Inner {
    fn find_close_request(&self, id: &CloseRequestId) -> Option<(&Position, &CloseRequest)> {
        let owner = self.owners.get(id)?;
        let agg = self.positions.get(owner)?;
        let cr = agg.latest_close_request.as_ref().filter(|c| c.id == *id)?;
        Some((&agg.position, cr))
    }
}

#[async_trait]
impl CloseStore for MemoryStore {
    async fn register_position(
        &self,
        cmd: &RegisterPosition,
    ) -> Result<RegisterOutcome, StoreError> {
        let mut inner = self.lock();
        let current = inner.positions.get(&cmd.position_id);
        let decision = decide_register(current, cmd);
        match &decision {
            Ok(RegisterDecision::Created(p)) => {
                inner
                    .positions
                    .insert(p.id.clone(), PositionAggregate::new(p.clone()));
            }
            Ok(RegisterDecision::Updated(p)) => {
                if let Some(agg) = inner.positions.get_mut(&p.id) {
                    agg.position = p.clone();
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
                let cr = next.latest_close_request.clone().ok_or_else(|| {
                    StoreError::Corrupt("created aggregate has no close request".into())
                })?;
                let position = next.position.clone();
                inner.owners.insert(cr.id, position.id.clone());
                inner.positions.insert(position.id.clone(), next);
                Ok(CloseOutcome::Created {
                    position,
                    close_request: cr,
                })
            }
            CloseDecision::Replay(id) => {
                let (position, cr) = inner.find_close_request(&id).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "idempotency record points at missing close request {id}"
                    ))
                })?;
                Ok(CloseOutcome::Replayed {
                    position: position.clone(),
                    close_request: cr.clone(),
                })
            }
            CloseDecision::Reject(r) => Ok(CloseOutcome::Rejected(r)),
        }
    }

    async fn close_request(&self, id: &CloseRequestId) -> Result<Option<CloseRequest>, StoreError> {
        Ok(self.lock().find_close_request(id).map(|(_, cr)| cr.clone()))
    }
}
