//! The broker webhook: Stripe-style signatures and idempotent, monotonic application.
//!
//! Header: `X-Closeflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

use closeflow_domain::{ClientOrderId, OrderStatus, OrderUpdate, Quantity, Timestamp};
use closeflow_store::{CloseStore, StoreError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Signatures older (or further in the future) than this are refused: replay protection.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the broker webhook has no secret configured; no update is accepted")]
    NotConfigured,
    #[error("missing X-Closeflow-Signature header")]
    MissingSignature,
    #[error("malformed X-Closeflow-Signature header")]
    MalformedSignature,
    #[error("signature timestamp outside the {SIGNATURE_TOLERANCE_SECS} s tolerance")]
    Expired,
    #[error("signature does not match")]
    BadSignature,
    #[error("invalid webhook body: {0}")]
    InvalidBody(String),
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value for `body` signed at unix time `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

/// Checks a signature header against the raw body at time `now` (constant-time compare).
pub fn verify_signature(secret: &[u8], header: Option<&str>, body: &[u8], now: Timestamp) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| WebhookError::MalformedSignature)?),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| WebhookError::MalformedSignature)?),
            _ => {}
        }
    }
    let t = t.ok_or(WebhookError::MalformedSignature)?;
    if sigs.is_empty() {
        return Err(WebhookError::MalformedSignature);
    }
    if (now.timestamp() - t).abs() > SIGNATURE_TOLERANCE_SECS {
        return Err(WebhookError::Expired);
    }
    // Several v1 values allow secret rotation: any match is enough.
    if sigs.iter().any(|s| mac(secret, t, body).verify_slice(s).is_ok()) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub client_order_id: String,
    pub broker_order_id: String,
    pub status: String,
    pub filled_qty: Quantity,
    #[serde(default)]
    pub filled_avg_price: Option<Quantity>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub execution_id: Option<String>,
    pub updated_at: String,
}

/// What the body says, or `Ok(None)` when the client order id is not one of ours.
pub fn parse_body(raw: &[u8]) -> Result<Option<OrderUpdate>, WebhookError> {
    let b: WebhookBody = serde_json::from_slice(raw).map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
    let status = OrderStatus::parse(&b.status)
        .ok_or_else(|| WebhookError::InvalidBody(format!("unknown status `{}`", b.status)))?;
    if b.filled_qty.is_negative() {
        return Err(WebhookError::InvalidBody("filled_qty must not be negative".into()));
    }
    let updated_at = closeflow_domain::parse_timestamp(&b.updated_at)
        .ok_or_else(|| WebhookError::InvalidBody("updated_at must be an RFC 3339 timestamp".into()))?;
    let Ok(client_order_id) = ClientOrderId::parse(&b.client_order_id) else {
        return Ok(None);
    };
    Ok(Some(OrderUpdate {
        client_order_id,
        broker_order_id: Some(b.broker_order_id),
        status,
        filled_qty: b.filled_qty,
        filled_avg_price: b.filled_avg_price,
        seq: b.seq,
        execution_id: b.execution_id,
        updated_at,
    }))
}

pub use closeflow_store::UpdateResult;

/// Applies a broker order update through the store (one conditional write; see
/// [`CloseStore::apply_order_update`]). The same path serves the webhook, the simulated
/// broker and the reconciler's lookups.
pub async fn apply_broker_update(
    store: &dyn CloseStore,
    update: &OrderUpdate,
    now: Timestamp,
) -> Result<UpdateResult, StoreError> {
    store.apply_order_update(update, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap()
    }

    #[test]
    fn a_fresh_signature_verifies_and_any_tampering_fails() {
        let body = br#"{"a":1}"#;
        let t = now().timestamp();
        let header = sign(b"secret", t, body);
        assert_eq!(verify_signature(b"secret", Some(&header), body, now()), Ok(()));
        assert_eq!(
            verify_signature(b"other", Some(&header), body, now()),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"secret", Some(&header), br#"{"a":2}"#, now()),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"secret", None, body, now()),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(b"secret", Some("v1=zz"), body, now()),
            Err(WebhookError::MalformedSignature)
        );
    }

    #[test]
    fn signatures_older_than_300_seconds_are_refused() {
        let body = b"{}";
        let old = sign(b"s", now().timestamp() - 301, body);
        assert_eq!(
            verify_signature(b"s", Some(&old), body, now()),
            Err(WebhookError::Expired)
        );
        let edge = sign(b"s", now().timestamp() - 300, body);
        assert_eq!(verify_signature(b"s", Some(&edge), body, now()), Ok(()));
    }

    #[test]
    fn bodies_parse_strictly_and_foreign_order_ids_are_not_ours() {
        let foreign = br#"{"client_order_id":"someone-else","broker_order_id":"b","status":"filled","filled_qty":"1","updated_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(parse_body(foreign), Ok(None));
        let bad_status = br#"{"client_order_id":"x","broker_order_id":"b","status":"done","filled_qty":"1","updated_at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(parse_body(bad_status), Err(WebhookError::InvalidBody(_))));
        assert!(matches!(parse_body(b"not json"), Err(WebhookError::InvalidBody(_))));
    }
}
