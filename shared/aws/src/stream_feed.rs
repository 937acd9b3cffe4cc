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
    /// The last sequence number read, per shard.
    positions: Mutex<HashMap<String, String>>,
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
            positions: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl ChangeFeed for DynamoStreamFeed {
    async fn next_batch(&self) -> Result<Vec<Change>, FeedError> {
        let mut positions = self.positions.lock().await;
        let desc = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(feed_error)?;
        let mut shards: Vec<String> = desc
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        let mut changes = Vec::new();
        // Positions move only when the whole batch was read: an error re-reads it all.
        let mut advanced = Vec::new();
        for shard in shards {
            // A fresh iterator from the last sequence number read, every time: iterators
            // expire (15 minutes in DynamoDB), and moto's go stale after a failed
            // transaction (it restores a copy of the table, stream included).
            let req = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(&shard);
            let req = match positions.get(&shard) {
                Some(seq) => req
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(seq),
                None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let it = req.send().await.map_err(feed_error)?;
            let Some(it) = it.shard_iterator() else { continue };
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
            if let Some(last) = out.records().last().and_then(|r| r.dynamodb()?.sequence_number()) {
                advanced.push((shard, last.to_string()));
            }
        }
        positions.extend(advanced);
        Ok(changes)
    }
}
