//! Where state-change events and alerts go: EventBridge in AWS (closeflow-aws), the log in
//! the embedded stack, a recorder in tests.

use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::DomainEvent;

#[derive(Debug, thiserror::Error)]
#[error("event publishing failed: {0}")]
pub struct EventError(pub String);

#[async_trait]
pub trait EventSink: Send + Sync {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), EventError>;
}

/// Writes events to the log (alerts at WARN).
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), EventError> {
        for e in events {
            if e.detail_type == "Alert" {
                tracing::warn!(event = e.detail_type, detail = %e.detail(), "ALERT");
            } else {
                tracing::info!(event = e.detail_type, detail = %e.detail(), "event");
            }
        }
        Ok(())
    }
}

/// Keeps every published event, for tests.
#[derive(Default)]
pub struct RecordingSink(Mutex<Vec<DomainEvent>>);

impl RecordingSink {
    pub fn events(&self) -> Vec<DomainEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), EventError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(events);
        Ok(())
    }
}
