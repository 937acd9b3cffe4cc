//! The broker webhook: Stripe-style signatures and idempotent, monotonic application.
//!
//! Header: `X-Closeflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

use closeflow_domain::json::from_slice_strict;
use closeflow_domain::{ClientOrderId, OrderStatus, OrderUpdate, Price, Quantity, Timestamp};
use closeflow_store::{CloseStore, StoreError};
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Signatures older (or further in the future) than this are refused: replay protection.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;

/// Most `v1=` entries one header may carry. Two cover a secret rotation; the cap keeps an
/// unauthenticated caller from making the comparison loop long.
pub const MAX_SIGNATURES: usize = 4;

/// Longest signature header read at all: `t=` and [`MAX_SIGNATURES`] entries of 64 hex
/// digits fit with room for a few unknown schemes.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the broker webhook has no secret configured; no update is accepted")]
    NotConfigured,
    #[error("missing X-Closeflow-Signature header")]
    MissingSignature,
    #[error("malformed X-Closeflow-Signature header (t=<unix seconds>, 1 to {MAX_SIGNATURES} v1=<64 hex digits>)")]
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

type Tag = CtOutput<Hmac<Sha256>>;

/// Reads `t=` and the `v1=` entries, refusing anything outside the format before any MAC
/// is computed.
fn parse_header(header: &str) -> Result<(i64, Vec<Tag>), WebhookError> {
    if header.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(WebhookError::MalformedSignature);
    }
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| WebhookError::MalformedSignature)?),
            Some(("v1", v)) => {
                if tags.len() == MAX_SIGNATURES {
                    return Err(WebhookError::MalformedSignature);
                }
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(v, &mut bytes).map_err(|_| WebhookError::MalformedSignature)?;
                tags.push(Tag::new(bytes.into()));
            }
            _ => {}
        }
    }
    match t {
        Some(t) if !tags.is_empty() => Ok((t, tags)),
        _ => Err(WebhookError::MalformedSignature),
    }
}

/// Checks a signature header against the raw body at time `now`. The MAC over the body is
/// computed once, after every cheap check, and compared with each entry in constant time.
pub fn verify_signature(secret: &[u8], header: Option<&str>, body: &[u8], now: Timestamp) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NotConfigured);
    }
    let (t, tags) = parse_header(header.ok_or(WebhookError::MissingSignature)?)?;
    let age = now.timestamp().checked_sub(t).map(i64::unsigned_abs);
    if age.is_none_or(|a| a > SIGNATURE_TOLERANCE_SECS.unsigned_abs()) {
        return Err(WebhookError::Expired);
    }
    let expected: Tag = mac(secret, t, body).finalize();
    // Several v1 values allow secret rotation: any match is enough. Every entry is
    // compared (no early exit), so timing says nothing about which one matched.
    let matched = tags.iter().fold(false, |any, tag| any | (*tag == expected));
    if matched {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub client_order_id: String,
    #[serde(default)]
    pub broker_order_id: Option<String>,
    pub status: String,
    pub filled_qty: Quantity,
    #[serde(default)]
    pub filled_avg_price: Option<Quantity>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub execution_id: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// What the body says, or `Ok(None)` when the client order id is not one of ours. An update
/// without `updated_at` is dated `received_at`.
pub fn parse_body(raw: &[u8], received_at: Timestamp) -> Result<Option<OrderUpdate>, WebhookError> {
    let b: WebhookBody = from_slice_strict(raw).map_err(WebhookError::InvalidBody)?;
    let status = OrderStatus::parse(&b.status)
        .ok_or_else(|| WebhookError::InvalidBody(format!("unknown status `{}`", b.status)))?;
    if b.filled_qty.is_negative() {
        return Err(WebhookError::InvalidBody("filled_qty must not be negative".into()));
    }
    let filled_avg_price = match b.filled_avg_price {
        None => None,
        Some(p) => Some(
            Price::new(p).ok_or_else(|| WebhookError::InvalidBody("filled_avg_price must not be negative".into()))?,
        ),
    };
    let updated_at = match &b.updated_at {
        None => received_at,
        Some(text) => closeflow_domain::parse_timestamp(text)
            .ok_or_else(|| WebhookError::InvalidBody("updated_at must be an RFC 3339 timestamp".into()))?,
    };
    let Ok(client_order_id) = ClientOrderId::parse(&b.client_order_id) else {
        return Ok(None);
    };
    Ok(Some(OrderUpdate {
        client_order_id,
        broker_order_id: b.broker_order_id,
        status,
        filled_qty: b.filled_qty,
        filled_avg_price,
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
    store
        .apply_order_update(update, now, closeflow_domain::audit::actor::BROKER_WEBHOOK)
        .await
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
    fn an_empty_secret_verifies_nothing() {
        let body = b"{}";
        let header = sign(b"", now().timestamp(), body);
        assert_eq!(
            verify_signature(b"", Some(&header), body, now()),
            Err(WebhookError::NotConfigured)
        );
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_expired_not_overflowed() {
        let body = b"{}";
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
            let header = sign(b"s", t, body);
            assert_eq!(
                verify_signature(b"s", Some(&header), body, now()),
                Err(WebhookError::Expired),
                "t={t}"
            );
        }
        let future = sign(b"s", now().timestamp() + 301, body);
        assert_eq!(
            verify_signature(b"s", Some(&future), body, now()),
            Err(WebhookError::Expired)
        );
    }

    #[test]
    fn a_rotated_secret_matches_any_entry_but_entries_are_capped() {
        let body = br#"{"a":1}"#;
        let t = now().timestamp();
        let old = sign(b"old", t, body);
        let new = sign(b"new", t, body);
        let (old_v1, new_v1) = (&old[old.find("v1=").unwrap()..], &new[new.find("v1=").unwrap()..]);
        let both = format!("t={t},{old_v1},{new_v1}");
        assert_eq!(verify_signature(b"new", Some(&both), body, now()), Ok(()));
        assert_eq!(verify_signature(b"old", Some(&both), body, now()), Ok(()));
        // The measured attack: 1,000 (or 20,000) entries, each once a MAC over the body.
        // Now refused before any MAC: too many entries, or a header too long to read.
        let many = |n: usize| format!("t={t}{}", format!(",{old_v1}").repeat(n));
        assert!(many(MAX_SIGNATURES).len() <= MAX_SIGNATURE_HEADER_LEN);
        assert_eq!(
            verify_signature(b"old", Some(&many(MAX_SIGNATURES)), body, now()),
            Ok(())
        );
        for n in [MAX_SIGNATURES + 1, 1_000, 20_000] {
            assert_eq!(
                verify_signature(b"old", Some(&many(n)), body, now()),
                Err(WebhookError::MalformedSignature),
                "{n} entries"
            );
        }
        // Entries must be whole 32-byte tags: a prefix of the right MAC is not a match.
        let short = format!("t={t},v1={}", &new_v1[3..40]);
        assert_eq!(
            verify_signature(b"new", Some(&short), body, now()),
            Err(WebhookError::MalformedSignature)
        );
    }

    #[test]
    fn bodies_parse_strictly_and_foreign_order_ids_are_not_ours() {
        let foreign = br#"{"client_order_id":"someone-else","broker_order_id":"b","status":"filled","filled_qty":"1","updated_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(parse_body(foreign, now()), Ok(None));
        // Optional fields may be missing, for unknown orders as for ours.
        let minimal = br#"{"client_order_id":"someone-else","status":"filled","filled_qty":"1"}"#;
        assert_eq!(parse_body(minimal, now()), Ok(None));
        let bad_status = br#"{"client_order_id":"x","broker_order_id":"b","status":"done","filled_qty":"1","updated_at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(
            parse_body(bad_status, now()),
            Err(WebhookError::InvalidBody(_))
        ));
        assert!(matches!(
            parse_body(b"not json", now()),
            Err(WebhookError::InvalidBody(_))
        ));
        let duplicate = br#"{"client_order_id":"x","status":"filled","filled_qty":"1","filled_qty":"2"}"#;
        assert!(matches!(
            parse_body(duplicate, now()),
            Err(WebhookError::InvalidBody(_))
        ));
        let rounded = br#"{"client_order_id":"x","status":"filled","filled_qty":"0.00000000000000000000000000005"}"#;
        assert!(matches!(parse_body(rounded, now()), Err(WebhookError::InvalidBody(_))));
    }

    #[test]
    fn an_update_of_ours_without_optional_fields_is_dated_on_receipt() {
        let id = closeflow_domain::ClientOrderId::new(
            closeflow_domain::CloseRequestId::new(&closeflow_domain::PositionId::parse("p").unwrap(), [1; 16]),
            1,
        );
        let body = format!(r#"{{"client_order_id":"{id}","status":"accepted","filled_qty":0}}"#);
        let u = parse_body(body.as_bytes(), now()).unwrap().expect("ours");
        assert_eq!((u.broker_order_id, u.updated_at, u.seq), (None, now(), None));
    }

    proptest::proptest! {
        /// Fuzz: any header and body are verified or refused without a panic, and only the
        /// true signature of that body verifies.
        #[test]
        fn any_header_and_body_are_refused_or_verified_never_panic(
            header in "(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,70}|[a-z0-9=]{0,8})(,(t=-?[0-9]{1,20}|v1=[0-9a-f]{0,70}|[a-z0-9= ]{0,8})){0,6}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let result = verify_signature(b"secret", Some(&header), &body, now());
            let genuine = sign(b"secret", now().timestamp(), &body);
            proptest::prop_assert!(result.is_err() || header.contains(&genuine[genuine.find("v1=").unwrap()..]));
            let _ = parse_body(&body, now());
        }
    }
}
