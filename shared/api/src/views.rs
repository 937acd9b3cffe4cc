//! JSON shapes of the API's answers. Quantities are decimal strings, times RFC 3339 (ms).

use closeflow_domain::{format_timestamp, CloseRequest, Order, Position};
use serde_json::{json, Value};

fn time(t: &Option<closeflow_domain::Timestamp>) -> Value {
    t.as_ref().map(format_timestamp).map(Value::from).unwrap_or(Value::Null)
}

pub fn position(p: &Position) -> Value {
    json!({
        "position_id": p.id.as_str(),
        "account_id": p.account_id.as_str(),
        "symbol": p.symbol,
        "asset_type": p.asset_type.as_str(),
        "quantity": p.quantity,
        "avg_entry_price": p.avg_entry_price,
        "strategy_id": p.strategy_id,
        "status": p.status.as_str(),
        "active_close_request_id": p.active_close_request_id.map(|id| id.to_string()),
        "closed_at": time(&p.closed_at),
        "created_at": format_timestamp(&p.created_at),
        "updated_at": format_timestamp(&p.updated_at),
    })
}

pub fn poll_url(cr: &CloseRequest) -> String {
    format!("/close-requests/{}", cr.id)
}

/// Answer to POST /positions/{id}/close (201 create and 200 replay alike).
pub fn close_accepted(p: &Position, cr: &CloseRequest, list: &[Order], poll_interval_ms: u64) -> Value {
    json!({
        "close_request_id": cr.id.to_string(),
        "position_id": p.id.as_str(),
        "position_status": p.status.as_str(),
        "close_request_status": cr.status.as_str(),
        "target_qty": cr.target_qty,
        "filled_qty": cr.filled_qty,
        "orders": orders(list),
        "poll_url": poll_url(cr),
        "poll_interval_ms": poll_interval_ms,
    })
}

pub fn order(o: &Order) -> Value {
    json!({
        "client_order_id": o.client_order_id.to_string(),
        "broker_order_id": o.broker_order_id,
        "attempt": o.attempt(),
        "qty": o.qty,
        "status": o.status.as_str(),
        "filled_qty": o.filled_qty,
        "filled_avg_price": o.filled_avg_price,
    })
}

fn orders(list: &[Order]) -> Value {
    Value::Array(list.iter().map(order).collect())
}

pub fn close_request(cr: &CloseRequest, list: &[Order]) -> Value {
    json!({
        "close_request_id": cr.id.to_string(),
        "position_id": cr.position_id.as_str(),
        "status": cr.status.as_str(),
        "target_qty": cr.target_qty,
        "filled_qty": cr.filled_qty,
        "remaining_qty": cr.remaining_qty(),
        "retry_count": cr.retry_count,
        "max_retries": cr.max_retries,
        "reason": cr.reason,
        "created_at": format_timestamp(&cr.created_at),
        "submitted_at": time(&cr.submitted_at),
        "completed_at": time(&cr.completed_at),
        "failure_reason": cr.failure_reason,
        "orders": orders(list),
    })
}
