//! Phase 1 of seed 000 §4 as a pure decision: idempotency, state validation, creation.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::{CloseRequestId, IdempotencyKey, PositionId};
use crate::model::{CloseRequest, IdempotencyRecord, PositionAggregate};
use crate::status::{CloseRequestStatus, PositionStatus};
use crate::transition::{step, CloseEvent};
use crate::Timestamp;

/// SHA-256 of the canonical JSON of a request body (keys sorted, no whitespace), so
/// `{}` and an empty body, or reordered keys, count as the same request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of_body(body: &serde_json::Value) -> Self {
        // serde_json's map is a BTreeMap (no preserve_order), so to_string is canonical.
        let canonical = serde_json::to_string(body).unwrap_or_default();
        Fingerprint(hex::encode(Sha256::digest(canonical.as_bytes())))
    }

    pub fn from_hex(s: &str) -> Self {
        Fingerprint(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseCommand {
    pub position_id: PositionId,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// Minted by the caller (routing key + random bytes); used only if a request is created.
    pub new_id: CloseRequestId,
    pub max_retries: u32,
    pub reason: Option<String>,
    /// When the symbol's open orders hold the quantity, cancel them and close anyway
    /// (otherwise the close fails as `blocked_by_open_orders`).
    pub cancel_open_orders: bool,
    /// Who asks (the signed-in caller, `guard:<id>`, ...), for the audit trail.
    pub actor: String,
    /// Close only this much (a partial close); `None`: the whole position.
    pub qty: Option<crate::Quantity>,
    /// The order every attempt places.
    pub options: crate::OrderOptions,
    /// The caller's accounts: a close of another account's position is refused.
    pub access: crate::Access,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseRejection {
    PositionNotFound,
    /// The caller may not act on this position's account.
    Forbidden,
    /// Same key, different body.
    IdempotencyKeyReused,
    AlreadyClosing {
        active_close_request_id: Option<CloseRequestId>,
    },
    ZeroQuantity,
    InvalidState(PositionStatus),
    /// `qty` or the order options do not fit this position (nothing written).
    InvalidOptions(crate::OptionsError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseDecision {
    /// Accept: the aggregate after the close request was created.
    Create(Box<PositionAggregate>),
    /// The key was seen before with the same body: answer with that close request.
    Replay(CloseRequestId),
    Reject(CloseRejection),
}

/// Decides a close command against the current aggregate. The order of checks is the
/// seed's: existence, idempotency, in-flight close, state, quantity; then the close's own
/// options against this position (partial `qty`, order options for its asset type).
pub fn decide_close(current: Option<&PositionAggregate>, cmd: &CloseCommand) -> CloseDecision {
    let Some(agg) = current.filter(|a| a.position.id == cmd.position_id) else {
        return CloseDecision::Reject(CloseRejection::PositionNotFound);
    };
    if !cmd.access.allows(&agg.position.account_id) {
        return CloseDecision::Reject(CloseRejection::Forbidden);
    }
    if let Some(seen) = agg.idempotency.get(&cmd.idempotency_key) {
        return if seen.fingerprint == cmd.fingerprint {
            CloseDecision::Replay(seen.close_request_id)
        } else {
            CloseDecision::Reject(CloseRejection::IdempotencyKeyReused)
        };
    }
    let position = &agg.position;
    match position.status {
        PositionStatus::Closing => {
            return CloseDecision::Reject(CloseRejection::AlreadyClosing {
                active_close_request_id: position.active_close_request_id,
            })
        }
        PositionStatus::Open => {}
        other => return CloseDecision::Reject(CloseRejection::InvalidState(other)),
    }
    if position.quantity.is_zero() {
        return CloseDecision::Reject(CloseRejection::ZeroQuantity);
    }
    if let Err(e) = cmd.options.validate_for(position.asset_type) {
        return CloseDecision::Reject(CloseRejection::InvalidOptions(e));
    }
    let target_qty = match crate::options::close_qty(cmd.qty, position.quantity) {
        Ok(q) => q,
        Err(e) => return CloseDecision::Reject(CloseRejection::InvalidOptions(e)),
    };
    // The new close request starts where the table says (pending); the pair it moves from
    // is the position with its latest close request.
    let latest = agg.latest_close_request.as_ref().map(|c| c.status);
    let status = match step((position.status, latest), CloseEvent::CloseAccepted) {
        Ok((s, _)) => s,
        Err(_) => return CloseDecision::Reject(CloseRejection::InvalidState(position.status)),
    };

    let mut next = agg.clone();
    next.position.status = status;
    next.position.active_close_request_id = Some(cmd.new_id);
    next.position.updated_at = cmd.now;
    next.position.version += 1;
    next.changed_by = Some(cmd.actor.clone());
    next.idempotency.insert(
        cmd.idempotency_key.clone(),
        IdempotencyRecord {
            close_request_id: cmd.new_id,
            fingerprint: cmd.fingerprint.clone(),
            created_at: cmd.now,
        },
    );
    next.retire_latest_close();
    next.latest_close_request = Some(CloseRequest {
        id: cmd.new_id,
        position_id: position.id.clone(),
        idempotency_key: cmd.idempotency_key.clone(),
        status: CloseRequestStatus::Pending,
        target_qty,
        filled_qty: crate::Quantity::ZERO,
        retry_count: 0,
        redrives: 0,
        max_retries: cmd.max_retries,
        reason: cmd.reason.clone(),
        cancel_open_orders: cmd.cancel_open_orders,
        failure_reason: None,
        created_at: cmd.now,
        submitted_at: None,
        completed_at: None,
        updated_at: cmd.now,
        position_qty: position.quantity.abs(),
        options: cmd.options,
        cancel_requested_at: None,
        manual_retries: 0,
        strategy_close: None,
    });
    CloseDecision::Create(Box::new(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::check_invariants;

    use crate::Quantity;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    fn aggregate(qty: i64, status: PositionStatus) -> PositionAggregate {
        let mut a = crate::testing::aggregate("p1", &qty.to_string(), status);
        a.position.created_at = now();
        a.position.updated_at = now();
        a
    }

    fn cmd(key: &str, body: serde_json::Value, random: u8) -> CloseCommand {
        let p = PositionId::parse("p1").unwrap();
        CloseCommand {
            actor: "tester".into(),
            new_id: CloseRequestId::new(&p, [random; 16]),
            position_id: p,
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint::of_body(&body),
            max_retries: 3,
            reason: None,
            cancel_open_orders: false,
            qty: None,
            options: crate::OrderOptions::MARKET,
            access: crate::Access::All,
            now: now(),
        }
    }

    fn created(d: CloseDecision) -> PositionAggregate {
        match d {
            CloseDecision::Create(a) => *a,
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn an_open_short_position_gets_a_pending_request_for_its_absolute_quantity() {
        let agg = aggregate(-7, PositionStatus::Open);
        let c = cmd("k1", serde_json::json!({}), 1);
        let next = created(decide_close(Some(&agg), &c));
        let cr = next.latest_close_request.as_ref().unwrap();
        assert_eq!(next.position.status, PositionStatus::Closing);
        assert_eq!(next.position.active_close_request_id, Some(c.new_id));
        assert_eq!(next.position.version, 2);
        assert_eq!(cr.status, CloseRequestStatus::Pending);
        assert_eq!(cr.target_qty, Quantity::from(7));
        assert_eq!(cr.remaining_qty(), Quantity::from(7));
        assert!(check_invariants(&next.position, Some(cr)).is_empty());
    }

    #[test]
    fn the_same_key_and_body_replays_and_a_different_body_is_refused() {
        let agg = created(decide_close(
            Some(&aggregate(5, PositionStatus::Open)),
            &cmd("k1", serde_json::json!({}), 1),
        ));
        let first_id = agg.position.active_close_request_id.unwrap();
        assert_eq!(
            decide_close(Some(&agg), &cmd("k1", serde_json::json!({}), 2)),
            CloseDecision::Replay(first_id)
        );
        assert_eq!(
            decide_close(Some(&agg), &cmd("k1", serde_json::json!({"qty": "1"}), 2)),
            CloseDecision::Reject(CloseRejection::IdempotencyKeyReused)
        );
        assert_eq!(
            decide_close(Some(&agg), &cmd("k2", serde_json::json!({}), 2)),
            CloseDecision::Reject(CloseRejection::AlreadyClosing {
                active_close_request_id: Some(first_id)
            })
        );
    }

    #[test]
    fn a_partial_limit_close_targets_its_qty_and_keeps_its_price() {
        let agg = aggregate(-10, PositionStatus::Open);
        let mut c = cmd("k1", serde_json::json!({"qty": "4"}), 1);
        c.qty = Some(Quantity::from(4));
        c.options = crate::OrderOptions::limit(crate::Price::new(Quantity::from(5)).unwrap());
        let next = created(decide_close(Some(&agg), &c));
        let cr = next.latest_close_request.as_ref().unwrap();
        assert_eq!(
            (cr.target_qty, cr.position_qty),
            (Quantity::from(4), Quantity::from(10))
        );
        assert!(cr.is_partial());
        assert_eq!(cr.options, c.options);
        assert!(check_invariants(&next.position, Some(cr)).is_empty());
    }

    #[test]
    fn options_that_do_not_fit_the_position_are_refused_with_their_code() {
        use crate::OptionsError as E;
        let agg = aggregate(3, PositionStatus::Open);
        let mut c = cmd("k1", serde_json::json!({}), 1);
        c.qty = Some(Quantity::from(4));
        assert_eq!(
            decide_close(Some(&agg), &c),
            CloseDecision::Reject(CloseRejection::InvalidOptions(E::InvalidQty))
        );
        let mut option = aggregate(3, PositionStatus::Open);
        option.position.asset_type = crate::AssetType::Option;
        let mut c = cmd("k1", serde_json::json!({}), 1);
        c.options = crate::OrderOptions {
            time_in_force: crate::TimeInForce::Gtc,
            ..crate::OrderOptions::limit(crate::Price::new(Quantity::from(1)).unwrap())
        };
        assert_eq!(
            decide_close(Some(&option), &c),
            CloseDecision::Reject(CloseRejection::InvalidOptions(E::InvalidTimeInForce))
        );
        assert!(matches!(decide_close(Some(&agg), &c), CloseDecision::Create(_)));
    }

    #[test]
    fn body_fingerprints_ignore_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "b": {"d":3, "c":2}, "a": 1 }"#).unwrap();
        assert_eq!(Fingerprint::of_body(&a), Fingerprint::of_body(&b));
        assert_ne!(Fingerprint::of_body(&a), Fingerprint::of_body(&serde_json::json!({})));
    }

    #[test]
    fn missing_zero_and_non_open_positions_are_refused() {
        let c = cmd("k", serde_json::json!({}), 1);
        assert_eq!(
            decide_close(None, &c),
            CloseDecision::Reject(CloseRejection::PositionNotFound)
        );
        assert_eq!(
            decide_close(Some(&aggregate(0, PositionStatus::Open)), &c),
            CloseDecision::Reject(CloseRejection::ZeroQuantity)
        );
        for s in [
            PositionStatus::Closed,
            PositionStatus::CloseFailed,
            PositionStatus::CloseRetryable,
        ] {
            assert_eq!(
                decide_close(Some(&aggregate(3, s)), &c),
                CloseDecision::Reject(CloseRejection::InvalidState(s))
            );
        }
    }
}
