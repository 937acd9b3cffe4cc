//! The store port for positions and close requests, with two adapters of identical
//! semantics: [`MemoryStore`] (embedded stack, fast tests) and [`DynamoStore`] (AWS, moto).
//!
//! Both adapters keep a position, the idempotency keys used on it and its latest close
//! request together in one record, so that phase 1 of a close (seed 000 §4) is a single
//! atomic conditional write, and both classify outcomes with the same pure domain
//! functions ([`decide_close`], [`decide_register`]).

use async_trait::async_trait;
use closeflow_domain::{
    apply_order_update, Applied, CloseCommand, CloseRejection, CloseRequest, CloseRequestId, CloseRequestStatus,
    Ignored, Order, OrderUpdate, Position, PositionAggregate, PositionId, PositionStatus, RegisterDecision,
    RegisterPosition, RegisterRejection, Timestamp,
};

pub mod dynamo;
pub mod memory;

pub use dynamo::{DynamoStore, RoundTripCounter};
pub use memory::{Change, MemoryStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent write or throttling: nothing was written, the caller may retry.
    #[error("the position is busy (write conflict or throttling)")]
    Contention,
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Result of [`CloseStore::open_close_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    Created {
        position: Position,
        close_request: CloseRequest,
    },
    Replayed {
        position: Position,
        close_request: CloseRequest,
        orders: Vec<Order>,
    },
    Rejected(CloseRejection),
}

pub type RegisterOutcome = Result<RegisterDecision, RegisterRejection>;

/// How to find an aggregate: by its position, or by its latest close request (webhooks
/// and queue messages only know the close request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateKey {
    Position(PositionId),
    CloseRequest(CloseRequestId),
}

/// A pure step on an aggregate: `Some(next)` to write `next`, `None` to write nothing.
/// `next.position.version` must be the loaded version + 1.
pub type ModifyFn<'a> = dyn Fn(&PositionAggregate) -> Option<PositionAggregate> + Send + Sync + 'a;

/// What [`CloseStore::modify`] did: the aggregate it decided on, and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified {
    pub before: PositionAggregate,
    pub after: Option<PositionAggregate>,
}

#[async_trait]
pub trait CloseStore: Send + Sync {
    /// Registers a new position or updates an open one (PUT semantics).
    async fn register_position(&self, cmd: &RegisterPosition) -> Result<RegisterOutcome, StoreError>;

    async fn position(&self, id: &PositionId) -> Result<Option<Position>, StoreError>;

    /// Phase 1 of a close in one atomic conditional write: idempotency check, state
    /// validation, close request creation, position -> `closing`.
    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError>;

    /// The whole aggregate (strongly consistent), by position or by its latest close request.
    async fn aggregate(&self, key: &AggregateKey) -> Result<Option<PositionAggregate>, StoreError>;

    /// Loads an aggregate, applies `f`, and writes the result only if nothing changed the
    /// aggregate meanwhile (optimistic concurrency; re-decides a few times, then
    /// `Contention`). `None` when the aggregate does not exist.
    async fn modify(&self, key: &AggregateKey, f: &ModifyFn<'_>) -> Result<Option<Modified>, StoreError>;

    /// Applies one broker order update (seed 000 §6 merge and settlement) with one
    /// conditional write. Adapters may take a cheaper path for updates that cannot settle
    /// anything (DynamoDB: a partial fill is one `UpdateItem`), with identical results.
    async fn apply_order_update(&self, update: &OrderUpdate, now: Timestamp) -> Result<UpdateResult, StoreError> {
        apply_order_update_by_modify(self, update, now).await
    }

    /// Aggregates on one work list (`WorkList::Attention`: in-flight or retryable closes;
    /// `WorkList::Expiry`: something can expire) whose clock started at or before `since`,
    /// oldest first, at most `limit`. Reads only listed items (a sparse index; never a Scan).
    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError>;

    /// Deletes a position if it is still at `version`; false when it changed or is gone.
    async fn delete_if_unchanged(&self, id: &PositionId, version: u64) -> Result<bool, StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkList {
    Attention,
    Expiry,
}

/// A page of a work list, with how many stored items were read to produce it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    pub aggregates: Vec<PositionAggregate>,
    pub items_read: usize,
}

/// The work list an aggregate belongs on, and since when (see `closeflow_domain::reconcile`).
pub fn work_list_entry(agg: &PositionAggregate) -> Option<(WorkList, Timestamp)> {
    if let Some(t) = closeflow_domain::attention_since(agg) {
        return Some((WorkList::Attention, t));
    }
    closeflow_domain::expiry_at(agg, chrono::TimeDelta::zero()).map(|t| (WorkList::Expiry, t))
}

/// What applying a broker order update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateResult {
    Applied {
        position_status: PositionStatus,
        close_request_status: CloseRequestStatus,
    },
    Ignored(Ignored),
    UnknownOrder,
}

/// The general path: load, decide with the domain, write with an optimistic condition.
pub async fn apply_order_update_by_modify<S: CloseStore + ?Sized>(
    store: &S,
    update: &OrderUpdate,
    now: Timestamp,
) -> Result<UpdateResult, StoreError> {
    let key = AggregateKey::CloseRequest(update.client_order_id.close_request_id);
    let decide = |agg: &PositionAggregate| apply_order_update(agg, update, now);
    let modified = store
        .modify(&key, &|agg| match decide(agg) {
            Ok(Applied::Changed(next)) => Some(*next),
            _ => None,
        })
        .await?;
    let Some(m) = modified else {
        return Ok(UpdateResult::UnknownOrder);
    };
    if let Some(after) = &m.after {
        let cr = after.latest_close_request.as_ref().map(|c| c.status);
        return Ok(UpdateResult::Applied {
            position_status: after.position.status,
            close_request_status: cr.unwrap_or(CloseRequestStatus::Pending),
        });
    }
    Ok(match decide(&m.before) {
        Ok(Applied::Ignored(why)) => UpdateResult::Ignored(why),
        Ok(Applied::UnknownOrder) => UpdateResult::UnknownOrder,
        Ok(Applied::Changed(_)) => UpdateResult::Ignored(Ignored::NoChange),
        Err(illegal) => {
            // The domain refused the move; nothing was written. Worth a human's eye.
            tracing::error!(error = %illegal, client_order_id = %update.client_order_id, "illegal transition from broker update");
            UpdateResult::Ignored(Ignored::NoChange)
        }
    })
}
