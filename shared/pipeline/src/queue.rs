//! The order queue between the outbox relay and the submitter: FIFO per position, with
//! deduplication by close request and attempt (SQS FIFO semantics). It also carries the
//! steps of bulk close jobs, FIFO per bulk close, deduplicated by step.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::{CloseRequestId, PositionId, SubmitRequest};
use serde::{Deserialize, Serialize};

use crate::bulk::JobStep;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// `MessageGroupId`: one position's messages are handled in order.
    pub group_id: String,
    /// `MessageDeduplicationId`: `{close_request_id}-{attempt}`.
    pub dedup_id: String,
    pub body: String,
}

#[derive(Serialize, Deserialize)]
struct Body {
    position_id: String,
    close_request_id: String,
    attempt: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobBody {
    job: JobStep,
}

/// What a queue message asks of its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Place the order of one close attempt.
    Submit(SubmitRequest),
    /// Run one step of a bulk close job.
    Job(JobStep),
}

impl QueueMessage {
    pub fn for_request(req: &SubmitRequest) -> Self {
        let body = Body {
            position_id: req.position_id.to_string(),
            close_request_id: req.close_request_id.to_string(),
            attempt: req.attempt,
        };
        QueueMessage {
            group_id: req.position_id.to_string(),
            dedup_id: req.client_order_id().to_string(),
            body: serde_json::to_string(&body).expect("plain struct serialises"),
        }
    }

    /// One step of a bulk close job (see [`crate::bulk`]).
    pub fn for_job(step: &JobStep) -> Self {
        QueueMessage {
            group_id: format!("bulk-{}", step.bulk_close_id),
            dedup_id: format!("bulk-{}-r{}-p{}", step.bulk_close_id, step.round, step.page),
            body: serde_json::to_string(&JobBody { job: *step }).expect("plain struct serialises"),
        }
    }

    /// What the message asks for.
    pub fn work(&self) -> Result<Work, QueueError> {
        if let Ok(JobBody { job }) = serde_json::from_str::<JobBody>(&self.body) {
            return Ok(Work::Job(job));
        }
        self.request().map(Work::Submit)
    }

    pub fn request(&self) -> Result<SubmitRequest, QueueError> {
        let b: Body = serde_json::from_str(&self.body).map_err(|e| QueueError::BadMessage(e.to_string()))?;
        Ok(SubmitRequest {
            position_id: PositionId::parse(&b.position_id).map_err(|e| QueueError::BadMessage(e.to_string()))?,
            close_request_id: CloseRequestId::parse(&b.close_request_id)
                .map_err(|e| QueueError::BadMessage(e.to_string()))?,
            attempt: b.attempt,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("malformed queue message: {0}")]
    BadMessage(String),
}

#[async_trait]
pub trait OrderQueue: Send + Sync {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError>;
}

/// In-process queue for the embedded stack: drops a message whose dedup id was already
/// sent (like SQS FIFO within its deduplication window, here for the process lifetime).
#[derive(Default)]
pub struct MemoryQueue {
    seen: Mutex<HashMap<String, ()>>,
    messages: Mutex<VecDeque<QueueMessage>>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a message back for another delivery (the visibility timeout expiring).
    pub fn redeliver(&self, msg: QueueMessage) -> Result<(), QueueError> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner()).push_back(msg);
        Ok(())
    }

    pub fn take_all(&self) -> Vec<QueueMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl OrderQueue for MemoryQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(msg.dedup_id.clone(), ())
            .is_none();
        if fresh {
            self.redeliver(msg.clone())?;
        }
        Ok(())
    }
}
