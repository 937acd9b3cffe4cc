//! The audit trail: who changed what, when and why, derived from a committed change (a
//! stream record or outbox row) like the events are, so an entry is never missed and never
//! invented. Each entry is identified by the aggregate version the change wrote and its
//! place among that change's entries: handling a change twice writes the same entries.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::ids::{AccountId, PositionId};
use crate::model::{CloseRequest, PositionAggregate};
use crate::order::Order;
use crate::pnl::{close_request_pnl, multiplier, order_pnl};
use crate::{format_timestamp, parse_timestamp, Timestamp};

/// Who made a change when nobody signed in did: the pipeline's own workers.
pub mod actor {
    pub const SUBMITTER: &str = "order-submitter";
    pub const RECONCILER: &str = "reconciler";
    pub const CLEANUP: &str = "cleanup";
    pub const ORDER_WATCH: &str = "order-watch";
    pub const TRADE_STREAM: &str = "trade-stream";
    pub const BROKER_WEBHOOK: &str = "broker-webhook";
    pub const SYNC: &str = "sync";
    /// A change written before changes carried their actor.
    pub const UNKNOWN: &str = "unknown";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub position_id: PositionId,
    pub account_id: AccountId,
    /// The aggregate version the change wrote.
    pub version: u64,
    /// Place among the entries of that change.
    pub index: u32,
    pub at: Timestamp,
    pub actor: String,
    /// `position`, `close_request` or `order`.
    pub subject: &'static str,
    pub subject_id: String,
    pub action: &'static str,
    pub reason: Option<String>,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    /// Quantities, prices, the broker's words, the request's idempotency key: as text, so
    /// decimals stay exact in every store.
    pub details: BTreeMap<&'static str, String>,
}

impl AuditEntry {
    /// The entry's key within its position: sorts oldest first.
    pub fn sort_key(&self) -> String {
        format!("{:020}#{:04}", self.version, self.index)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "position_id": self.position_id.to_string(),
            "account_id": self.account_id.to_string(),
            "version": self.version,
            "index": self.index,
            "at": format_timestamp(&self.at),
            "actor": self.actor,
            "subject": self.subject,
            "subject_id": self.subject_id,
            "action": self.action,
            "reason": self.reason,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "details": self.details,
        })
    }

    /// Reads what [`AuditEntry::to_json`] wrote; `None` for anything else.
    pub fn from_json(v: &Value) -> Option<AuditEntry> {
        let text = |k: &str| v.get(k).and_then(Value::as_str);
        let opt = |k: &str| text(k).map(str::to_string);
        let details = v
            .get("details")?
            .as_object()?
            .iter()
            .map(|(k, val)| Some((detail_key(k)?, val.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(AuditEntry {
            position_id: PositionId::parse(text("position_id")?).ok()?,
            account_id: AccountId::parse(text("account_id")?).ok()?,
            version: v.get("version")?.as_u64()?,
            index: u32::try_from(v.get("index")?.as_u64()?).ok()?,
            at: parse_timestamp(text("at")?)?,
            actor: opt("actor")?,
            subject: known(SUBJECTS, text("subject")?)?,
            subject_id: opt("subject_id")?,
            action: known(ACTIONS, text("action")?)?,
            reason: opt("reason"),
            status_before: opt("status_before"),
            status_after: opt("status_after"),
            details,
        })
    }
}

const SUBJECTS: &[&str] = &["position", "close_request", "order", "account"];
const ACTIONS: &[&str] = &[
    "position_registered",
    "position_changed",
    "close_requested",
    "close_request_changed",
    "order_placed",
    "order_changed",
    "trading_state_changed",
];
const DETAIL_KEYS: &[&str] = &[
    "quantity",
    "symbol",
    "avg_entry_price",
    "strategy_id",
    "idempotency_key",
    "target_qty",
    "filled_qty",
    "retry_count",
    "client_order_id",
    "broker_order_id",
    "qty",
    "filled_avg_price",
    "realized_pnl",
    "realized_pnl_unknown",
];

/// Where an account's own entries are kept: beside its positions' entries, under this
/// position id, so the account's trail (`GET /accounts/{id}/audit`) shows them in order.
pub fn account_trail_id(account: &AccountId) -> Option<PositionId> {
    PositionId::parse(&format!("account:{account}")).ok()
}

/// The entry of an account's trading-state move (`active`, `liquidating`, `halted`), keyed
/// by the account state's version: written twice, it is one entry. `None` when nothing
/// moved.
pub fn trading_state_entry(before: &crate::AccountState, after: &crate::AccountState) -> Option<AuditEntry> {
    if after.version == before.version {
        return None;
    }
    Some(AuditEntry {
        position_id: account_trail_id(&after.account_id)?,
        account_id: after.account_id.clone(),
        version: after.version,
        index: 0,
        at: after.changed_at?,
        actor: after.changed_by.clone().unwrap_or_else(|| actor::UNKNOWN.into()),
        subject: "account",
        subject_id: after.account_id.to_string(),
        action: "trading_state_changed",
        reason: after.reason.clone(),
        status_before: Some(before.trading_state.as_str().into()),
        status_after: Some(after.trading_state.as_str().into()),
        details: BTreeMap::new(),
    })
}

fn known(list: &[&'static str], s: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| *k == s)
}

fn detail_key(s: &str) -> Option<&'static str> {
    known(DETAIL_KEYS, s)
}

/// The audit entries of one committed change, in a fixed order: position, close request,
/// orders. A change that alters nothing an operator cares about (a remembered execution
/// id, a lookup counter) yields none.
pub fn audit_entries(before: Option<&PositionAggregate>, after: &PositionAggregate) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let p = &after.position;
    let actor = after.changed_by.clone().unwrap_or_else(|| actor::UNKNOWN.to_string());
    let mut push =
        |subject, subject_id: String, action, reason, before: Option<String>, after_status: String, details| {
            out.push(AuditEntry {
                position_id: p.id.clone(),
                account_id: p.account_id.clone(),
                version: p.version,
                index: 0,
                at: p.updated_at,
                actor: actor.clone(),
                subject,
                subject_id,
                action,
                reason,
                status_before: before,
                status_after: Some(after_status),
                details,
            });
        };

    let bp = before.map(|b| &b.position);
    let mut pd = BTreeMap::new();
    pd.insert("quantity", p.quantity.to_string());
    if let Some(price) = p.avg_entry_price {
        pd.insert("avg_entry_price", price.to_string());
    }
    match bp {
        None => {
            pd.insert("symbol", p.symbol.clone());
            if let Some(s) = &p.strategy_id {
                pd.insert("strategy_id", s.clone());
            }
            push(
                "position",
                p.id.to_string(),
                "position_registered",
                None,
                None,
                p.status.to_string(),
                pd,
            );
        }
        Some(b) if b.status != p.status || b.quantity != p.quantity || b.avg_entry_price != p.avg_entry_price => {
            let reason = after
                .latest_close_request
                .as_ref()
                .and_then(|c| c.failure_reason.clone());
            push(
                "position",
                p.id.to_string(),
                "position_changed",
                reason,
                Some(b.status.to_string()),
                p.status.to_string(),
                pd,
            );
        }
        Some(_) => {}
    }

    let before_cr = before.and_then(|b| b.latest_close_request.as_ref());
    if let Some(cr) = &after.latest_close_request {
        let same = before_cr.filter(|b| b.id == cr.id);
        match same {
            None => push(
                "close_request",
                cr.id.to_string(),
                "close_requested",
                cr.reason.clone(),
                None,
                cr.status.to_string(),
                close_details(cr, true),
            ),
            Some(b) if b.status != cr.status || b.filled_qty != cr.filled_qty || b.retry_count != cr.retry_count => {
                let mut d = close_details(cr, false);
                if cr.status.is_terminal() && !cr.filled_qty.is_zero() {
                    // What the whole close realized, as it ended (each fill's share is on
                    // its order's entry).
                    match close_request_pnl(p, &after.orders) {
                        Ok(pnl) => d.insert("realized_pnl", pnl.to_string()),
                        Err(e) => d.insert("realized_pnl_unknown", e.code().to_string()),
                    };
                }
                push(
                    "close_request",
                    cr.id.to_string(),
                    "close_request_changed",
                    cr.failure_reason.clone(),
                    Some(b.status.to_string()),
                    cr.status.to_string(),
                    d,
                )
            }
            Some(_) => {}
        }
        // Orders belong to the latest close request; a new close request starts afresh.
        let before_orders: &[Order] = if same.is_some() {
            before.map(|b| b.orders.as_slice()).unwrap_or(&[])
        } else {
            &[]
        };
        for o in &after.orders {
            let old = before_orders.iter().find(|b| b.client_order_id == o.client_order_id);
            let changed = old.is_none_or(|b| {
                b.status != o.status || b.filled_qty != o.filled_qty || b.broker_order_id != o.broker_order_id
            });
            if !changed {
                continue;
            }
            let reason = if o.status == crate::OrderStatus::Rejected {
                cr.failure_reason.clone()
            } else {
                None
            };
            let mut d = BTreeMap::new();
            d.insert("client_order_id", o.client_order_id.to_string());
            d.insert("qty", o.qty.to_string());
            d.insert("filled_qty", o.filled_qty.to_string());
            if let Some(id) = &o.broker_order_id {
                d.insert("broker_order_id", id.clone());
            }
            if let Some(price) = o.filled_avg_price {
                d.insert("filled_avg_price", price.to_string());
            }
            if old.is_none_or(|b| b.filled_qty != o.filled_qty) && !o.filled_qty.is_zero() {
                match order_pnl(p, o, multiplier(p)) {
                    Ok(pnl) => d.insert("realized_pnl", pnl.normalize().to_string()),
                    Err(e) => d.insert("realized_pnl_unknown", e.code().to_string()),
                };
            }
            push(
                "order",
                o.client_order_id.to_string(),
                if old.is_none() { "order_placed" } else { "order_changed" },
                reason,
                old.map(|b| b.status.to_string()),
                o.status.to_string(),
                d,
            );
        }
    }
    for (i, e) in out.iter_mut().enumerate() {
        e.index = i as u32;
    }
    out
}

fn close_details(cr: &CloseRequest, new: bool) -> BTreeMap<&'static str, String> {
    let mut d = BTreeMap::new();
    d.insert("target_qty", cr.target_qty.to_string());
    d.insert("filled_qty", cr.filled_qty.to_string());
    d.insert("retry_count", cr.retry_count.to_string());
    if new {
        d.insert("idempotency_key", cr.idempotency_key.to_string());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{aggregate, close, t0, update};
    use crate::{
        apply_order_update, decide_close, record_submission, Applied, CloseDecision, OrderStatus, PositionStatus,
        SubmitAnswer, SubmitRequest,
    };

    fn closing() -> PositionAggregate {
        let mut open = aggregate("p-1", "10", PositionStatus::Open);
        open.position.avg_entry_price = Some(crate::testing::price("100"));
        let CloseDecision::Create(next) = decide_close(Some(&open), &close("p-1", "k-1", t0())) else {
            panic!("close created")
        };
        *next
    }

    fn changed(a: Result<Applied, crate::IllegalTransition>) -> PositionAggregate {
        match a {
            Ok(Applied::Changed(next)) => *next,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn a_close_request_is_audited_with_who_why_and_the_key() {
        let before = aggregate("p-1", "10", PositionStatus::Open);
        let after = closing();
        let entries = audit_entries(Some(&before), &after);
        let actions: Vec<_> = entries.iter().map(|e| (e.subject, e.action, e.index)).collect();
        assert_eq!(
            actions,
            [
                ("position", "position_changed", 0),
                ("close_request", "close_requested", 1)
            ]
        );
        assert!(entries
            .iter()
            .all(|e| e.actor == "tester" && e.version == after.position.version));
        assert_eq!(entries[0].status_before.as_deref(), Some("open"));
        assert_eq!(entries[0].status_after.as_deref(), Some("closing"));
        assert_eq!(entries[1].details["idempotency_key"], "k-1");
        assert_eq!(entries[1].details["target_qty"], "10");
    }

    #[test]
    fn a_fill_carries_its_realized_pnl_and_nothing_new_is_audited_twice() {
        let agg = closing();
        let cr = agg.latest_close_request.clone().unwrap();
        let req = SubmitRequest {
            position_id: agg.position.id.clone(),
            close_request_id: cr.id,
            attempt: 1,
        };
        let accepted = update(cr.id, 1, OrderStatus::Accepted, "0", 1, t0());
        let submitted = changed(record_submission(&agg, &req, &SubmitAnswer::Accepted(accepted), t0()));
        let placed = audit_entries(Some(&agg), &submitted);
        assert!(placed
            .iter()
            .any(|e| e.action == "order_placed" && e.subject_id == req.client_order_id().to_string()));
        let mut fill = update(cr.id, 1, OrderStatus::Filled, "10", 2, t0());
        fill.filled_avg_price = Some(crate::testing::price("101.25"));
        let filled = changed(apply_order_update(&submitted, &fill, t0()));
        let entries = audit_entries(Some(&submitted), &filled);
        let order = entries.iter().find(|e| e.subject == "order").unwrap();
        assert_eq!(order.action, "order_changed");
        assert_eq!(order.status_before.as_deref(), Some("accepted"));
        assert_eq!(order.details["realized_pnl"], "12.5", "(101.25 - 100) x 10 on a long");
        assert!(entries
            .iter()
            .any(|e| e.action == "position_changed" && e.status_after.as_deref() == Some("closed")));
        // The same image again (a redelivered record) is no change at all.
        assert!(audit_entries(Some(&filled), &filled).is_empty());
    }

    #[test]
    fn entries_round_trip_through_their_stored_form() {
        let entries = audit_entries(None, &closing());
        assert!(!entries.is_empty());
        for e in entries {
            assert_eq!(AuditEntry::from_json(&e.to_json()), Some(e.clone()));
        }
        assert_eq!(AuditEntry::from_json(&json!({"action": "unknown"})), None);
    }

    #[test]
    fn an_unstamped_change_says_so_rather_than_guess() {
        let mut after = closing();
        after.changed_by = None;
        let entries = audit_entries(None, &after);
        assert!(entries.iter().all(|e| e.actor == actor::UNKNOWN));
    }
}
