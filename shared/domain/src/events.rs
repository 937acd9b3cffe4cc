//! State-change events and alerts, derived from a committed change (a stream record), so
//! none is missed and none is invented.

use crate::model::PositionAggregate;
use crate::status::PositionStatus as P;
use crate::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// `PositionClosing`, `PositionClosed`, `PositionCloseRetryable`, `PositionCloseFailed`,
    /// `PositionReopened`, `Alert`.
    pub detail_type: &'static str,
    pub position_id: String,
    pub account_id: String,
    pub close_request_id: Option<String>,
    pub status: &'static str,
    pub reason: Option<String>,
    pub at: Timestamp,
}

impl DomainEvent {
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "position_id": self.position_id,
            "account_id": self.account_id,
            "close_request_id": self.close_request_id,
            "position_status": self.status,
            "reason": self.reason,
            "at": crate::format_timestamp(&self.at),
        })
    }
}

pub fn events_for(before: Option<&PositionAggregate>, after: &PositionAggregate) -> Vec<DomainEvent> {
    let cr = after.latest_close_request.as_ref();
    let event = |detail_type, reason: Option<String>| DomainEvent {
        detail_type,
        position_id: after.position.id.to_string(),
        account_id: after.position.account_id.to_string(),
        close_request_id: cr.map(|c| c.id.to_string()),
        status: after.position.status.as_str(),
        reason,
        at: after.position.updated_at,
    };
    let mut out = Vec::new();
    let old_status = before.map(|b| b.position.status);
    let failure = cr.and_then(|c| c.failure_reason.clone());
    if old_status != Some(after.position.status) && before.is_some() {
        match after.position.status {
            P::Closing => {
                let reason = cr.map(|c| match c.retry_count {
                    0 => c.reason.clone().unwrap_or_else(|| "close requested".into()),
                    n => format!("retry {n} for the remaining {}", c.remaining_qty()),
                });
                out.push(event("PositionClosing", reason));
            }
            P::Closed => out.push(event("PositionClosed", None)),
            P::CloseRetryable => out.push(event(
                "PositionCloseRetryable",
                cr.map(|c| format!("{} of {} filled", c.filled_qty, c.target_qty)),
            )),
            P::CloseFailed => {
                out.push(event("PositionCloseFailed", failure.clone()));
                out.push(event(
                    "Alert",
                    failure.or_else(|| Some("close failed; needs attention".into())),
                ));
            }
            P::Open => {
                // A completed partial close leaves the rest open: say what it closed.
                let partial = cr
                    .filter(|c| c.status == crate::CloseRequestStatus::Completed && c.is_partial())
                    .map(|c| format!("partially closed: {} of {} filled", c.filled_qty, c.position_qty));
                out.push(event("PositionReopened", partial.or(failure)))
            }
        }
    }
    let new_alert = after
        .last_alert
        .as_ref()
        .filter(|a| before.and_then(|b| b.last_alert.as_ref()) != Some(a));
    if let Some(a) = new_alert {
        if after.position.status != P::CloseFailed || old_status == Some(P::CloseFailed) {
            out.push(event("Alert", Some(format!("{}: {}", a.kind, a.message))));
        }
    }
    out
}
