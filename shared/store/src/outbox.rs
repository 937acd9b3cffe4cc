//! The change log (outbox) of the embedded backends: every committed write of an
//! aggregate, with its old and new image, numbered in commit order. It is the embedded twin
//! of the table's DynamoDB stream, written in the same atomic step as the aggregate, so no
//! committed change can be missing from it and none can be in it without being committed.

use async_trait::async_trait;
use closeflow_domain::PositionAggregate;

use crate::StoreError;

/// One committed write, as a stream record with old and new images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub before: Option<PositionAggregate>,
    pub after: PositionAggregate,
}

/// A change and its position in the log (strictly increasing, starting at 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub change: Change,
}

#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Changes after the last acknowledged one, oldest first, at most `limit`.
    async fn unacknowledged(&self, limit: usize) -> Result<Vec<Sequenced>, StoreError>;

    /// Everything up to and including `seq` has been handled: it is never read again
    /// (durably so on a durable backend) and may be trimmed.
    async fn acknowledge(&self, seq: u64) -> Result<(), StoreError>;
}
