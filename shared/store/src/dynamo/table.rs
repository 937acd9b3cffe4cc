//! The table's shape as data ([`TableSpec`]), and its creation for tests and local stacks.
//!
//! `TableSpec::required()` is what this code relies on (key names, the sparse index, the
//! stream view, the TTL attribute). The tests build the spec from `template.yaml` and create
//! tables from it, and a test fails when the template and `required()` differ, so key-schema
//! drift between code and template cannot go unnoticed.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::codec::{ATTENTION_INDEX, BY_ACCOUNT_INDEX, BY_STRATEGY_INDEX, PK, SK};
use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub hash_key: String,
    pub range_key: String,
    pub projection: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub hash_key: String,
    pub range_key: String,
    /// Every key attribute (table and indexes) is a string.
    pub string_attributes: Vec<String>,
    pub indexes: Vec<IndexSpec>,
    pub stream_view: String,
    pub ttl_attribute: String,
    pub billing_mode: String,
}

impl TableSpec {
    /// The shape the store code depends on.
    pub fn required() -> TableSpec {
        TableSpec {
            hash_key: PK.into(),
            range_key: SK.into(),
            string_attributes: vec![
                PK.into(),
                SK.into(),
                "attn".into(),
                "attn_at".into(),
                "account_id".into(),
                "strategy_id".into(),
                "created_sk".into(),
            ],
            indexes: vec![
                IndexSpec {
                    name: ATTENTION_INDEX.into(),
                    hash_key: "attn".into(),
                    range_key: "attn_at".into(),
                    projection: "ALL".into(),
                },
                // Listings: status is no key attribute, so a status change rewrites an
                // entry in place instead of moving it (README "Listing positions").
                IndexSpec {
                    name: BY_ACCOUNT_INDEX.into(),
                    hash_key: "account_id".into(),
                    range_key: "created_sk".into(),
                    projection: "ALL".into(),
                },
                IndexSpec {
                    name: BY_STRATEGY_INDEX.into(),
                    hash_key: "strategy_id".into(),
                    range_key: "created_sk".into(),
                    projection: "ALL".into(),
                },
            ],
            stream_view: "NEW_AND_OLD_IMAGES".into(),
            ttl_attribute: "expires_at".into(),
            billing_mode: "PAY_PER_REQUEST".into(),
        }
    }
}

impl TableSpec {
    /// The audit table's shape: no stream (nothing reacts to audit entries), entries
    /// expire by TTL after the audit retention.
    pub fn required_audit() -> TableSpec {
        TableSpec {
            hash_key: PK.into(),
            range_key: SK.into(),
            string_attributes: vec![PK.into(), SK.into(), "account_id".into(), "account_key".into()],
            indexes: vec![IndexSpec {
                name: super::audit::AUDIT_ACCOUNT_INDEX.into(),
                hash_key: "account_id".into(),
                range_key: "account_key".into(),
                projection: "ALL".into(),
            }],
            stream_view: String::new(),
            ttl_attribute: "expires_at".into(),
            billing_mode: "PAY_PER_REQUEST".into(),
        }
    }
}

fn key(n: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(n)
        .key_type(t)
        .build()
        .expect("key schema")
}

/// Creates a table of `spec`'s shape and waits until it is active, then turns TTL on.
pub async fn create_table(client: &Client, name: &str, spec: &TableSpec) -> Result<(), StoreError> {
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(spec.billing_mode.as_str()))
        .key_schema(key(&spec.hash_key, KeyType::Hash))
        .key_schema(key(&spec.range_key, KeyType::Range));
    if !spec.stream_view.is_empty() {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(spec.stream_view.as_str()))
                .build()
                .expect("stream specification"),
        );
    }
    for a in &spec.string_attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition"),
        );
    }
    for i in &spec.indexes {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&i.name)
                .key_schema(key(&i.hash_key, KeyType::Hash))
                .key_schema(key(&i.range_key, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(i.projection.as_str()))
                        .build(),
                )
                .build()
                .expect("index"),
        );
    }
    req.send().await.map_err(|e| {
        StoreError::Backend(format!(
            "create table {name}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        ))
    })?;
    for _ in 0..100 {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| StoreError::Backend(format!("describe table {name}: {e}")))?;
        if out.table().and_then(|t| t.table_status()).map(|s| s.as_str()) == Some("ACTIVE") {
            // TTL removes closed positions after retention (the cleanup function catches up
            // with what TTL has not deleted yet).
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(&spec.ttl_attribute)
                        .enabled(true)
                        .build()
                        .expect("ttl"),
                )
                .send()
                .await
                .map_err(|e| StoreError::Backend(format!("ttl on {name}: {e}")))?;
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(StoreError::Backend(format!("table {name} did not become active")))
}
