//! State-change events and alerts on an EventBridge bus (source `closeflow`).

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use closeflow_domain::DomainEvent;
use closeflow_pipeline::{EventError, EventSink};

pub const SOURCE: &str = "closeflow";

pub struct EventBridgeSink {
    client: Client,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        EventBridgeSink {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl EventSink for EventBridgeSink {
    async fn publish(&self, events: &[DomainEvent]) -> Result<(), EventError> {
        // PutEvents takes at most 10 entries.
        for chunk in events.chunks(10) {
            let entries = chunk
                .iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(SOURCE)
                        .detail_type(e.detail_type)
                        .detail(e.detail().to_string())
                        .event_bus_name(&self.bus)
                        .build()
                })
                .collect::<Vec<_>>();
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| EventError(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string()))?;
            if out.failed_entry_count() > 0 {
                return Err(EventError(format!(
                    "{} events refused by EventBridge",
                    out.failed_entry_count()
                )));
            }
        }
        Ok(())
    }
}
