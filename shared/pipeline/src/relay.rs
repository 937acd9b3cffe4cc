//! The outbox relay: a committed change of a position aggregate (a stream record) becomes
//! at most one queue message. Replaying a record sends the same deduplication id again,
//! so the queue drops it.

use closeflow_domain::{outbox_message, PositionAggregate};

use crate::queue::{OrderQueue, QueueError, QueueMessage};

pub fn message_for(before: Option<&PositionAggregate>, after: &PositionAggregate) -> Option<QueueMessage> {
    let mut msg = outbox_message(before, after).map(|req| QueueMessage::for_request(&req))?;
    // A re-drive asks for the same order again: a new deduplication id (the queue must not
    // drop it), the same client order id (the broker must).
    let redrives = after.latest_close_request.as_ref().map_or(0, |c| c.redrives);
    if redrives > 0 {
        msg.dedup_id = format!("{}-r{redrives}", msg.dedup_id);
    }
    Some(msg)
}

/// Relays one change; an error means "not relayed, retry this record" (never dropped).
#[tracing::instrument(name = "relay", skip_all, fields(position_id = %after.position.id))]
pub async fn relay(
    queue: &dyn OrderQueue,
    before: Option<&PositionAggregate>,
    after: &PositionAggregate,
) -> Result<bool, QueueError> {
    match message_for(before, after) {
        Some(msg) => {
            queue.send(&msg).await?;
            tracing::info!(position_id = %after.position.id, dedup_id = %msg.dedup_id, "close order requested");
            Ok(true)
        }
        None => Ok(false),
    }
}
