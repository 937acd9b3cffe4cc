//! The table definition (keys, stream) used by tests, benchmarks and local stacks.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use crate::StoreError;

/// Creates the closeflow table (pk/sk strings, on-demand, stream with new and old images
/// as the outbox) and waits until it is active.
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .expect("key schema")
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("attn"))
        .attribute_definitions(attr("attn_at"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(super::codec::ATTENTION_INDEX)
                .key_schema(key("attn", KeyType::Hash))
                .key_schema(key("attn_at", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("index"),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("stream specification"),
        )
        .send()
        .await
        .map_err(|e| {
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
                        .attribute_name("expires_at")
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

pub async fn delete_table(client: &Client, name: &str) -> Result<(), StoreError> {
    client
        .delete_table()
        .table_name(name)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Backend(format!("delete table {name}: {e}")))
}
