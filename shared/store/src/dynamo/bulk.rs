//! DynamoDB adapter of the bulk close records: in the main table under `B#{id}`, the
//! record at sort key `BULK` (conditional on `version`) and one item per page at
//! `PAGE#{number}` (zero-padded, so a Query reads the pages in order). The stream handlers
//! pass these items by: only position items carry work.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use closeflow_domain::{AccountId, BulkClose, BulkCloseId, BulkPage, DrawdownState};

use super::codec::{n, s, Item, PK, SK};
use super::{backend, conditional, DynamoStore};
use crate::bulk::{decode, encode, BulkLog};
use crate::StoreError;

const RECORD_SK: &str = "BULK";
const PAGE_PREFIX: &str = "PAGE#";
/// The drawdown guard's item sits beside the account's own (`A#{account}`).
const DRAWDOWN_SK: &str = "DRAWDOWN";

fn partition(id: &BulkCloseId) -> AttributeValue {
    s(format!("B#{id}"))
}

fn doc_of(item: &Item) -> Result<&str, StoreError> {
    item.get("doc")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt("bulk close item without doc".into()))
}

#[async_trait]
impl BulkLog for DynamoStore {
    async fn create_bulk_close(&self, bulk: &BulkClose) -> Result<Option<BulkClose>, StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, partition(&bulk.id))
            .item(SK, s(RECORD_SK))
            .item("version", n(bulk.version))
            .item("doc", s(encode(bulk)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional(res)? {
            Ok(_) => Ok(None),
            Err(old) if !old.is_empty() => Ok(Some(decode(doc_of(&old)?)?)),
            Err(_) => self.bulk_close(&bulk.id).await,
        }
    }

    async fn update_bulk_close(&self, next: &BulkClose) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, partition(&next.id))
            .item(SK, s(RECORD_SK))
            .item("version", n(next.version))
            .item("doc", s(encode(next)))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(next.version.saturating_sub(1)))
            .send()
            .await;
        Ok(conditional(res)?.is_ok())
    }

    async fn bulk_close(&self, id: &BulkCloseId) -> Result<Option<BulkClose>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, partition(id))
            .key(SK, s(RECORD_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item.as_ref().map(|i| decode(doc_of(i)?)).transpose()
    }

    async fn put_bulk_page(&self, id: &BulkCloseId, page: &BulkPage) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, partition(id))
            .item(SK, s(format!("{PAGE_PREFIX}{:08}", page.number)))
            .item("doc", s(encode(page)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn bulk_pages(&self, id: &BulkCloseId) -> Result<Vec<BulkPage>, StoreError> {
        let mut pages = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :page)")
                .expression_attribute_values(":pk", partition(id))
                .expression_attribute_values(":page", s(PAGE_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            for item in out.items() {
                pages.push(decode(doc_of(item)?)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(pages),
            }
        }
    }

    async fn drawdown_state(&self, account: &AccountId) -> Result<Option<(DrawdownState, u64)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(format!("A#{account}")))
            .key(SK, s(DRAWDOWN_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = out.item else { return Ok(None) };
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt("drawdown item without version".into()))?;
        Ok(Some((decode(doc_of(&item)?)?, version)))
    }

    async fn put_drawdown_state(
        &self,
        account: &AccountId,
        state: &DrawdownState,
        version: u64,
    ) -> Result<bool, StoreError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PK, s(format!("A#{account}")))
            .item(SK, s(DRAWDOWN_SK))
            .item("version", n(version))
            .item("doc", s(encode(state)));
        let req = if version <= 1 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(version - 1))
        };
        Ok(conditional(req.send().await)?.is_ok())
    }
}
