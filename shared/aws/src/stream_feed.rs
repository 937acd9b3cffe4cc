//! The table's DynamoDB stream as a [`ChangeFeed`], for local stacks on an emulator (in AWS,
//! Lambda reads the stream). Reads every shard from its start, in order.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_dynamodbstreams::Client;
use closeflow_pipeline::{ChangeFeed, FeedError};
use closeflow_store::Change;
use tokio::sync::Mutex;

use crate::images::{change_from_images, streams_item};

pub struct DynamoStreamFeed {
    client: Client,
    stream_arn: String,
    /// Next iterator per shard; `None` once a closed shard is exhausted.
    iterators: Mutex<HashMap<String, Option<String>>>,
}

fn feed_error(e: impl std::fmt::Display) -> FeedError {
    FeedError(e.to_string())
}

impl DynamoStreamFeed {
    /// The feed of `table`'s latest stream.
    pub async fn for_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: Client,
        table: &str,
    ) -> Result<Self, FeedError> {
        let out = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(feed_error)?;
        let arn = out
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| feed_error(format!("table {table} has no stream")))?
            .to_string();
        Ok(DynamoStreamFeed {
            client: streams,
            stream_arn: arn,
            iterators: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl ChangeFeed for DynamoStreamFeed {
    async fn next_batch(&self) -> Result<Vec<Change>, FeedError> {
        let mut iterators = self.iterators.lock().await;
        let desc = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(feed_error)?;
        let shards: Vec<String> = desc
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for shard in shards {
            if iterators.contains_key(&shard) {
                continue;
            }
            let it = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(feed_error)?;
            iterators.insert(shard, it.shard_iterator().map(str::to_string));
        }
        let mut changes = Vec::new();
        let mut shard_ids: Vec<String> = iterators.keys().cloned().collect();
        shard_ids.sort();
        for shard in shard_ids {
            let Some(Some(it)) = iterators.get(&shard).cloned() else {
                continue;
            };
            let out = self
                .client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .map_err(feed_error)?;
            for r in out.records() {
                let Some(rec) = r.dynamodb() else { continue };
                let change = change_from_images(rec.old_image().map(streams_item), rec.new_image().map(streams_item))
                    .map_err(feed_error)?;
                changes.extend(change);
            }
            iterators.insert(shard, out.next_shard_iterator().map(str::to_string));
        }
        Ok(changes)
    }
}
