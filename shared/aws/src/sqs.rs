//! The order queue on SQS FIFO: `MessageGroupId` = position id, `MessageDeduplicationId`
//! = `{close_request_id}-{attempt}`.

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use closeflow_pipeline::{Delivery, OrderQueue, QueueConsumer, QueueError, QueueMessage, WatchQueue, WatchRequest};

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// Creates a FIFO queue (name must end in `.fifo`) for tests and local stacks.
    pub async fn create_fifo(client: Client, name: &str, visibility_timeout_secs: u32) -> Result<Self, QueueError> {
        let out = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_secs.to_string(),
            )
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let url = out.queue_url().ok_or_else(|| unavailable("no queue url"))?.to_string();
        Ok(SqsQueue { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl OrderQueue for SqsQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_group_id(&msg.group_id)
            .message_deduplication_id(&msg.dedup_id)
            .message_body(&msg.body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}

#[async_trait]
impl QueueConsumer for SqsQueue {
    async fn receive(&self) -> Result<Vec<Delivery>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let attrs = m.attributes();
                let get = |k: aws_sdk_sqs::types::MessageSystemAttributeName| {
                    attrs.and_then(|a| a.get(&k)).cloned().unwrap_or_default()
                };
                Some(Delivery {
                    message: QueueMessage {
                        group_id: get(aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId),
                        dedup_id: get(aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId),
                        body: m.body()?.to_string(),
                    },
                    receipt: m.receipt_handle()?.to_string(),
                })
            })
            .collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&d.receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))
    }

    async fn release(&self, d: &Delivery) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&d.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}

/// The order watch's schedule on a standard SQS queue: each check is a message delayed by
/// its step's delay (SQS allows up to 15 minutes, more than the longest step).
#[derive(Clone)]
pub struct SqsWatchQueue {
    client: Client,
    url: String,
}

impl SqsWatchQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsWatchQueue {
            client,
            url: url.into(),
        }
    }

    /// Creates a standard queue for tests and local stacks.
    pub async fn create(client: Client, name: &str) -> Result<Self, QueueError> {
        let out = client
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let url = out.queue_url().ok_or_else(|| unavailable("no queue url"))?.to_string();
        Ok(SqsWatchQueue { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl WatchQueue for SqsWatchQueue {
    async fn schedule(&self, req: &WatchRequest, delay: chrono::TimeDelta) -> Result<(), QueueError> {
        let body = serde_json::to_string(req).map_err(|e| QueueError::BadMessage(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .delay_seconds(delay.num_seconds().clamp(0, 900) as i32)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable(aws_sdk_sqs::error::DisplayErrorContext(e)))
    }
}
