//! DynamoDB adapter of the audit log: its own table (no stream, its own retention), one
//! item per entry under `AUDIT#<position>` / `<version>#<index>`, and the sparse-free
//! index `audit_by_account` (account, time-ordered key) for an account's trail.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use closeflow_domain::{AuditEntry, Timestamp};

use super::codec::{n, s, Item, PK, SK};
use super::{backend, DynamoStore};
use crate::audit::{account_key, account_lower_bound, AuditLog, AuditPage, AuditQuery};
use crate::StoreError;

pub const AUDIT_ACCOUNT_INDEX: &str = "audit_by_account";
/// BatchWriteItem's ceiling.
const BATCH: usize = 25;
/// Rounds of re-sending what DynamoDB left unprocessed (throttling) before giving up;
/// the change is then handled again from the stream.
const UNPROCESSED_ROUNDS: u32 = 8;

fn partition(position: &str) -> String {
    format!("AUDIT#{position}")
}

fn entry_item(e: &AuditEntry, expires_at: &Timestamp) -> Item {
    let mut item = Item::new();
    item.insert(PK.into(), s(partition(e.position_id.as_str())));
    item.insert(SK.into(), s(e.sort_key()));
    item.insert("account_id".into(), s(e.account_id.as_str()));
    item.insert("account_key".into(), s(account_key(e)));
    item.insert("entry".into(), s(e.to_json().to_string()));
    item.insert("expires_at".into(), n(expires_at.timestamp()));
    item
}

fn entry_of(item: &Item) -> Result<AuditEntry, StoreError> {
    let text = item
        .get("entry")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt("audit item without entry".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))?;
    AuditEntry::from_json(&value).ok_or_else(|| StoreError::Corrupt("unreadable audit entry".into()))
}

impl DynamoStore {
    fn audit_table(&self) -> Result<&str, StoreError> {
        self.audit_table
            .as_deref()
            .ok_or_else(|| StoreError::Backend("no audit table configured (AUDIT_TABLE_NAME)".into()))
    }
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn record(&self, entries: &[AuditEntry], retention: chrono::TimeDelta) -> Result<(), StoreError> {
        let table = self.audit_table()?;
        for chunk in entries.chunks(BATCH) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|e| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(entry_item(e, &(e.at + retention))))
                                .build()
                                .expect("item set"),
                        )
                        .build()
                })
                .collect();
            let mut round = 0;
            while !pending.is_empty() {
                if round == UNPROCESSED_ROUNDS {
                    return Err(StoreError::Contention);
                }
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << round.min(5))).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, pending)
                    .send()
                    .await
                    .map_err(backend)?;
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(table))
                    .cloned()
                    .unwrap_or_default();
                round += 1;
            }
        }
        Ok(())
    }

    async fn trail(&self, query: &AuditQuery, limit: usize, cursor: Option<&str>) -> Result<AuditPage, StoreError> {
        let table = self.audit_table()?;
        let fetch = (limit + 1).clamp(1, 1000) as i32;
        let req = self.client.query().table_name(table).limit(fetch);
        let (req, key_attr) = match query {
            AuditQuery::Position(p) => {
                let req = req.expression_attribute_values(":pk", s(partition(p.as_str())));
                match cursor {
                    Some(c) => (
                        req.key_condition_expression("pk = :pk AND sk > :after")
                            .expression_attribute_values(":after", s(c)),
                        SK,
                    ),
                    None => (req.key_condition_expression("pk = :pk"), SK),
                }
            }
            AuditQuery::Account { account, since } => {
                let floor = account_lower_bound(since.as_ref());
                let req = req
                    .index_name(AUDIT_ACCOUNT_INDEX)
                    .expression_attribute_values(":acct", s(account.as_str()));
                let req = match cursor {
                    Some(c) if c >= floor.as_str() => req
                        .key_condition_expression("account_id = :acct AND account_key > :after")
                        .expression_attribute_values(":after", s(c)),
                    _ if !floor.is_empty() => req
                        .key_condition_expression("account_id = :acct AND account_key >= :floor")
                        .expression_attribute_values(":floor", s(floor)),
                    _ => req.key_condition_expression("account_id = :acct"),
                };
                (req, "account_key")
            }
        };
        let out = req.send().await.map_err(backend)?;
        let items = out.items();
        let more = items.len() > limit;
        let page = &items[..items.len().min(limit)];
        let entries = page.iter().map(entry_of).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            page.last()
                .and_then(|i| i.get(key_attr))
                .and_then(|v: &AttributeValue| v.as_s().ok())
                .cloned()
        } else {
            None
        };
        Ok(AuditPage { entries, next_cursor })
    }

    async fn expire_audit(&self, _now: Timestamp) -> Result<usize, StoreError> {
        // The audit table's TTL on `expires_at` removes expired entries.
        Ok(0)
    }
}
