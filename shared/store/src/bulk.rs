//! Bulk close records: the record itself (versioned, so job steps and retry requests
//! cannot overwrite each other) and its rows, one record per fan-out page. Kept apart from
//! the position aggregates: a bulk close changes no position by itself, the close requests
//! it opens do, through the close protocol.

use async_trait::async_trait;
use closeflow_domain::{AccountId, BulkClose, BulkCloseId, BulkPage, DrawdownState};

use crate::StoreError;

#[async_trait]
pub trait BulkLog: Send + Sync {
    /// Stores a new bulk close unless one with its id exists; answers the stored one then
    /// (a replay of the request, or a guard event delivered twice).
    async fn create_bulk_close(&self, bulk: &BulkClose) -> Result<Option<BulkClose>, StoreError>;

    /// Replaces the record if the stored one is at `next.version - 1`; false (nothing
    /// written) otherwise.
    async fn update_bulk_close(&self, next: &BulkClose) -> Result<bool, StoreError>;

    async fn bulk_close(&self, id: &BulkCloseId) -> Result<Option<BulkClose>, StoreError>;

    /// Stores one page's rows, replacing an earlier write of the same page (a job step
    /// done again writes what it decided again).
    async fn put_bulk_page(&self, id: &BulkCloseId, page: &BulkPage) -> Result<(), StoreError>;

    /// Every page of a bulk close, in page order.
    async fn bulk_pages(&self, id: &BulkCloseId) -> Result<Vec<BulkPage>, StoreError>;

    /// The drawdown guard's memory of an account (high-water mark, level) and its version;
    /// `None` before the first reading.
    async fn drawdown_state(&self, account: &AccountId) -> Result<Option<(DrawdownState, u64)>, StoreError>;

    /// Writes it as `version` if the stored one is at `version - 1` (absent for 1); false
    /// (nothing written) otherwise: another run wrote first.
    async fn put_drawdown_state(
        &self,
        account: &AccountId,
        state: &DrawdownState,
        version: u64,
    ) -> Result<bool, StoreError>;
}

/// A stored bulk document that does not parse is corruption, not a client error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bulk close record: {e}")))
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("bulk records serialise")
}
