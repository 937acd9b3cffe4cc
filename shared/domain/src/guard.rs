//! A risk guard that fired: the event that asks closeflow to close part of an account or
//! liquidate all of it. Parsed and validated here, at the edge, from either of its two
//! shapes:
//!
//! - an EventBridge event (`detail-type` `GuardTriggered`): the envelope's `id` names the
//!   event unless the detail carries its own `event_id`;
//! - the body of `POST /guards/events`: the detail's fields plus a required `event_id`.
//!
//! The detail: `guard_id`, `guard` (`drawdown`, `market_gap`, `liquidity` or a custom
//! name), `account_id`, optional `symbols` or `position_ids` (at most one of them; neither
//! means the whole account), `action` (`close` or `liquidate`), `observed` and `threshold`
//! (exact decimals, JSON strings or numbers) and an optional `reason`.
//!
//! Unknown fields are refused, in the detail as in the body: a misspelt `symbols` would
//! otherwise widen a close to the whole account. Input is read as raw bytes so numbers keep
//! their exact text (a `serde_json::Value` would have turned them into binary floats).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::ids::{AccountId, PositionId};
use crate::quantity::parse_json_decimal;

/// The EventBridge `detail-type` of a guard event.
pub const DETAIL_TYPE: &str = "GuardTriggered";

/// Longest `event_id`: `guard:<event_id>` then stays a valid Idempotency-Key (255).
pub const MAX_EVENT_ID_LEN: usize = 128;
pub const MAX_GUARD_ID_LEN: usize = 64;
pub const MAX_GUARD_NAME_LEN: usize = 32;
/// Longest `reason` given with the event (the same bound as a close's reason).
pub const MAX_NOTE_LEN: usize = 256;
/// Most symbols or position ids one event may name.
pub const MAX_SCOPE_ITEMS: usize = 500;
/// Longest [`GuardEvent::reason`]: it becomes a close request's reason, which holds 256.
pub const MAX_REASON_LEN: usize = 256;

const DETAIL_FIELDS: &[&str] = &[
    "guard_id",
    "guard",
    "account_id",
    "symbols",
    "position_ids",
    "action",
    "observed",
    "threshold",
    "reason",
    "event_id",
];

/// Why a guard event was refused. Each names the field at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardEventError {
    /// Not JSON, not an object, or a key given twice.
    #[error("the guard event is not a JSON object: {0}")]
    Malformed(String),
    /// An EventBridge event of another kind.
    #[error("detail-type `{0}` is not a guard event (expected `GuardTriggered`)")]
    UnsupportedDetailType(String),
    #[error("`{field}` is required")]
    Missing { field: String },
    #[error("`{field}` {problem}")]
    Invalid { field: String, problem: String },
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// Both `symbols` and `position_ids`: which one bounds the close would be a guess.
    #[error("`symbols` and `position_ids` exclude each other; give at most one")]
    ConflictingScope,
    /// A liquidation takes the whole account; a narrowed one is a `close`.
    #[error("`action` `liquidate` acts on the whole account: drop `{0}` or use `close`")]
    ScopedLiquidation(&'static str),
}

impl GuardEventError {
    /// A stable code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            GuardEventError::Malformed(_) => "invalid_body",
            GuardEventError::UnsupportedDetailType(_) => "unsupported_detail_type",
            _ => "invalid_guard_event",
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            GuardEventError::Missing { field } | GuardEventError::Invalid { field, .. } => Some(field),
            GuardEventError::UnknownField(f) => Some(f),
            GuardEventError::UnsupportedDetailType(_) => Some("detail-type"),
            GuardEventError::ConflictingScope => Some("position_ids"),
            GuardEventError::ScopedLiquidation(f) => Some(f),
            GuardEventError::Malformed(_) => None,
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> GuardEventError {
    GuardEventError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Which guard fired. The known ones are variants; any other name is kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GuardKind {
    Drawdown,
    MarketGap,
    Liquidity,
    /// Never one of the known names (those parse to their variants).
    Custom(String),
}

impl GuardKind {
    pub fn as_str(&self) -> &str {
        match self {
            GuardKind::Drawdown => "drawdown",
            GuardKind::MarketGap => "market_gap",
            GuardKind::Liquidity => "liquidity",
            GuardKind::Custom(name) => name,
        }
    }

    /// A known name, or a custom one of 1 to 32 letters, digits, '_', '-' or '.'.
    pub fn parse(s: &str) -> Result<GuardKind, GuardEventError> {
        Ok(match s {
            "drawdown" => GuardKind::Drawdown,
            "market_gap" => GuardKind::MarketGap,
            "liquidity" => GuardKind::Liquidity,
            custom if token(custom, MAX_GUARD_NAME_LEN) => GuardKind::Custom(custom.to_string()),
            _ => {
                return Err(invalid(
                    "guard",
                    format!("must be drawdown, market_gap, liquidity or a name of 1 to {MAX_GUARD_NAME_LEN} letters, digits, '_', '-' or '.'"),
                ))
            }
        })
    }
}

impl fmt::Display for GuardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the guard asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardAction {
    /// Close the positions in scope.
    Close,
    /// Emergency liquidation of the whole account.
    Liquidate,
}

impl GuardAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            GuardAction::Close => "close",
            GuardAction::Liquidate => "liquidate",
        }
    }

    pub fn parse(s: &str) -> Option<GuardAction> {
        [GuardAction::Close, GuardAction::Liquidate]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// Which of the account's positions the event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GuardScope {
    WholeAccount,
    /// Every position of the account in these symbols (distinct, in the order given).
    Symbols(Vec<String>),
    /// These positions (distinct, in the order given).
    Positions(Vec<PositionId>),
}

/// A validated guard event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardEvent {
    event_id: String,
    /// EventBridge's `source`; `None` for the HTTP route.
    source: Option<String>,
    guard_id: String,
    guard: GuardKind,
    account_id: AccountId,
    scope: GuardScope,
    action: GuardAction,
    observed: Decimal,
    threshold: Decimal,
    note: Option<String>,
}

impl GuardEvent {
    /// From an EventBridge event (the JSON a rule delivers to its target).
    pub fn from_eventbridge(raw: &[u8]) -> Result<GuardEvent, GuardEventError> {
        let mut envelope = object(raw)?;
        let detail_type = required_string(&mut envelope, "detail-type")?;
        if detail_type != DETAIL_TYPE {
            return Err(GuardEventError::UnsupportedDetailType(detail_type));
        }
        let id = required_string(&mut envelope, "id")?;
        let source = required_string(&mut envelope, "source")?;
        if source.is_empty() || source.chars().any(char::is_control) {
            return Err(invalid("source", "must be a non-empty string of printable characters"));
        }
        let detail = envelope
            .remove("detail")
            .ok_or_else(|| GuardEventError::Missing { field: "detail".into() })?;
        let mut detail = object(detail.get().as_bytes()).map_err(|_| invalid("detail", "must be a JSON object"))?;
        // The detail's own id survives a publisher's retried PutEvents (which gets a new
        // envelope id); without one, EventBridge's id is the event's.
        let event_id = match optional_string(&mut detail, "event_id")? {
            Some(own) => own,
            None => id,
        };
        let mut event = parse_detail(detail, event_id)?;
        event.source = Some(source);
        Ok(event)
    }

    /// From the body of `POST /guards/events`: the detail's fields and `event_id`.
    pub fn from_body(raw: &[u8]) -> Result<GuardEvent, GuardEventError> {
        let mut body = object(raw)?;
        let event_id = required_string(&mut body, "event_id")?;
        parse_detail(body, event_id)
    }

    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn guard_id(&self) -> &str {
        &self.guard_id
    }

    pub fn guard(&self) -> &GuardKind {
        &self.guard
    }

    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }

    pub fn scope(&self) -> &GuardScope {
        &self.scope
    }

    pub fn action(&self) -> GuardAction {
        self.action
    }

    pub fn observed(&self) -> Decimal {
        self.observed
    }

    pub fn threshold(&self) -> Decimal {
        self.threshold
    }

    /// The `reason` the guard gave, as given.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Who acts, for the audit trail: `guard:<guard_id>`.
    pub fn actor(&self) -> String {
        format!("guard:{}", self.guard_id)
    }

    /// One sentence for humans: `drawdown guard dd-1: observed 12.5 >= threshold 10`, then
    /// the guard's own reason in parentheses. At most [`MAX_REASON_LEN`] characters (the
    /// guard's reason is shortened to fit), so it can be a close request's reason.
    pub fn reason(&self) -> String {
        // The relation as it stands: a liquidity guard fires below its threshold.
        let relation = if self.observed >= self.threshold { ">=" } else { "<" };
        let head = format!(
            "{} guard {}: observed {} {relation} threshold {}",
            self.guard, self.guard_id, self.observed, self.threshold
        );
        let Some(note) = &self.note else {
            return head;
        };
        let room = MAX_REASON_LEN.saturating_sub(head.chars().count() + " ()".len());
        if note.chars().count() <= room {
            return format!("{head} ({note})");
        }
        if room < 2 {
            return head;
        }
        let short: String = note.chars().take(room - 1).collect();
        format!("{head} ({short}…)")
    }

    /// The idempotency key of the closes this event starts: `guard:<event_id>`, so the same
    /// event delivered twice (EventBridge delivers at least once) starts them once.
    pub fn bulk_key(&self) -> String {
        format!("guard:{}", self.event_id)
    }

    /// The event as `POST /guards/events` takes it (decimals as strings).
    pub fn to_body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "event_id": self.event_id,
            "guard_id": self.guard_id,
            "guard": self.guard.as_str(),
            "account_id": self.account_id.as_str(),
            "action": self.action.as_str(),
            "observed": self.observed.to_string(),
            "threshold": self.threshold.to_string(),
        });
        match &self.scope {
            GuardScope::WholeAccount => {}
            GuardScope::Symbols(s) => body["symbols"] = serde_json::json!(s),
            GuardScope::Positions(p) => {
                body["position_ids"] = serde_json::json!(p.iter().map(PositionId::as_str).collect::<Vec<_>>())
            }
        }
        if let Some(note) = &self.note {
            body["reason"] = serde_json::json!(note);
        }
        body
    }
}

type Fields = BTreeMap<String, Box<RawValue>>;

/// The object's fields, raw; refuses anything but one JSON object without repeated keys.
fn object(raw: &[u8]) -> Result<Fields, GuardEventError> {
    crate::json::reject_duplicate_keys(raw).map_err(GuardEventError::Malformed)?;
    serde_json::from_slice(raw).map_err(|_| GuardEventError::Malformed("expected a JSON object".into()))
}

fn is_null(raw: &RawValue) -> bool {
    raw.get().trim() == "null"
}

/// 1 to `max` characters of letters, digits, '.', '_', ':' or '-'.
fn token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn string_of(field: &str, raw: &RawValue) -> Result<String, GuardEventError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| invalid(field, "must be a string"))
}

fn required_string(fields: &mut Fields, field: &str) -> Result<String, GuardEventError> {
    match fields.remove(field) {
        Some(raw) if !is_null(&raw) => string_of(field, &raw),
        _ => Err(GuardEventError::Missing { field: field.into() }),
    }
}

/// Absent and `null` are the same: nothing given.
fn optional_string(fields: &mut Fields, field: &str) -> Result<Option<String>, GuardEventError> {
    match fields.remove(field) {
        Some(raw) if !is_null(&raw) => string_of(field, &raw).map(Some),
        _ => Ok(None),
    }
}

fn required_decimal(fields: &mut Fields, field: &str) -> Result<Decimal, GuardEventError> {
    match fields.remove(field) {
        Some(raw) if !is_null(&raw) => parse_json_decimal(raw.get()).map_err(|e| invalid(field, e.to_string())),
        _ => Err(GuardEventError::Missing { field: field.into() }),
    }
}

/// A list of 1 to [`MAX_SCOPE_ITEMS`] items, each read by `item`, repeats dropped. Empty is
/// refused rather than read as "the whole account".
fn optional_list<T: Clone + Eq + std::hash::Hash>(
    fields: &mut Fields,
    field: &str,
    item: impl Fn(&str) -> Option<T>,
    what: &str,
) -> Result<Option<Vec<T>>, GuardEventError> {
    let raw = match fields.remove(field) {
        Some(raw) if !is_null(&raw) => raw,
        _ => return Ok(None),
    };
    let texts: Vec<serde_json::Value> =
        serde_json::from_str(raw.get()).map_err(|_| invalid(field, format!("must be a list of {what}")))?;
    if texts.is_empty() {
        return Err(invalid(
            field,
            "must not be empty (leave it out to act on the whole account)",
        ));
    }
    if texts.len() > MAX_SCOPE_ITEMS {
        return Err(invalid(field, format!("may name at most {MAX_SCOPE_ITEMS} items")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let parsed = t
            .as_str()
            .and_then(&item)
            .ok_or_else(|| invalid(format!("{field}[{i}]"), format!("must be {what}")))?;
        if seen.insert(parsed.clone()) {
            out.push(parsed);
        }
    }
    Ok(Some(out))
}

/// An equity ticker (BRK.B) or an OCC option symbol, as positions are registered with.
fn valid_symbol(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-' | b'_' | b' '))
        && !s.starts_with(' ')
        && !s.ends_with(' ')
}

fn parse_detail(mut fields: Fields, event_id: String) -> Result<GuardEvent, GuardEventError> {
    if let Some(unknown) = fields.keys().find(|k| !DETAIL_FIELDS.contains(&k.as_str())) {
        return Err(GuardEventError::UnknownField(unknown.clone()));
    }
    // Printable ASCII without spaces: it goes into an idempotency key and a log line.
    if event_id.is_empty() || event_id.len() > MAX_EVENT_ID_LEN || !event_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "event_id",
            format!("must be 1 to {MAX_EVENT_ID_LEN} printable ASCII characters without spaces"),
        ));
    }
    let guard_id = required_string(&mut fields, "guard_id")?;
    if !token(&guard_id, MAX_GUARD_ID_LEN) {
        return Err(invalid(
            "guard_id",
            format!("must be 1 to {MAX_GUARD_ID_LEN} letters, digits, '.', '_', ':' or '-'"),
        ));
    }
    let guard = GuardKind::parse(&required_string(&mut fields, "guard")?)?;
    let account_id = AccountId::parse(&required_string(&mut fields, "account_id")?)
        .map_err(|e| invalid("account_id", e.to_string()))?;
    let action_text = required_string(&mut fields, "action")?;
    let action = GuardAction::parse(&action_text).ok_or_else(|| invalid("action", "must be `close` or `liquidate`"))?;
    let symbols = optional_list(
        &mut fields,
        "symbols",
        |s| valid_symbol(s).then(|| s.to_string()),
        "symbols (1 to 64 letters, digits, '.', '/', '-', '_')",
    )?;
    let positions = optional_list(
        &mut fields,
        "position_ids",
        |s| PositionId::parse(s).ok(),
        "position ids (1 to 128 letters, digits, '.', '_', ':' or '-')",
    )?;
    let scope = match (symbols, positions) {
        (Some(_), Some(_)) => return Err(GuardEventError::ConflictingScope),
        (Some(s), None) => GuardScope::Symbols(s),
        (None, Some(p)) => GuardScope::Positions(p),
        (None, None) => GuardScope::WholeAccount,
    };
    if action == GuardAction::Liquidate {
        match scope {
            GuardScope::Symbols(_) => return Err(GuardEventError::ScopedLiquidation("symbols")),
            GuardScope::Positions(_) => return Err(GuardEventError::ScopedLiquidation("position_ids")),
            GuardScope::WholeAccount => {}
        }
    }
    let observed = required_decimal(&mut fields, "observed")?;
    let threshold = required_decimal(&mut fields, "threshold")?;
    let note = optional_string(&mut fields, "reason")?;
    if let Some(n) = &note {
        if n.is_empty() || n.chars().count() > MAX_NOTE_LEN || n.chars().any(char::is_control) {
            return Err(invalid(
                "reason",
                format!("must be 1 to {MAX_NOTE_LEN} printable characters"),
            ));
        }
    }
    Ok(GuardEvent {
        event_id,
        source: None,
        guard_id,
        guard,
        account_id,
        scope,
        action,
        observed,
        threshold,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn detail() -> Value {
        json!({
            "guard_id": "dd-1",
            "guard": "drawdown",
            "account_id": "acct-1",
            "action": "liquidate",
            "observed": "12.5",
            "threshold": 10,
        })
    }

    fn envelope(detail: Value) -> Value {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "GuardTriggered",
            "source": "risk.guards",
            "account": "111122223333",
            "time": "2026-01-02T15:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        })
    }

    fn body(mut fields: Value) -> Value {
        fields["event_id"] = json!("evt-1");
        fields
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn parse_body(v: &Value) -> Result<GuardEvent, GuardEventError> {
        GuardEvent::from_body(v.to_string().as_bytes())
    }

    fn field_error(v: &Value) -> (String, Option<String>) {
        let e = parse_body(v).unwrap_err();
        (e.code().to_string(), e.field().map(str::to_string))
    }

    #[test]
    fn an_eventbridge_event_is_read_with_its_envelope_id() {
        let raw = envelope(detail()).to_string();
        let e = GuardEvent::from_eventbridge(raw.as_bytes()).unwrap();
        assert_eq!(e.event_id(), "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        assert_eq!(e.source(), Some("risk.guards"));
        assert_eq!(e.guard_id(), "dd-1");
        assert_eq!(e.guard(), &GuardKind::Drawdown);
        assert_eq!(e.account_id().as_str(), "acct-1");
        assert_eq!(e.action(), GuardAction::Liquidate);
        assert_eq!(e.scope(), &GuardScope::WholeAccount);
        assert_eq!(e.observed(), Decimal::new(125, 1));
        assert_eq!(e.threshold(), Decimal::from(10));
        assert_eq!(e.actor(), "guard:dd-1");
        assert_eq!(e.bulk_key(), "guard:6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        assert_eq!(e.reason(), "drawdown guard dd-1: observed 12.5 >= threshold 10");
    }

    #[test]
    fn a_detail_event_id_outlives_a_republished_envelope() {
        let d = with(detail(), "event_id", json!("guard-run-7"));
        let first = envelope(d.clone());
        let again = with(envelope(d), "id", json!("another-envelope-id"));
        let a = GuardEvent::from_eventbridge(first.to_string().as_bytes()).unwrap();
        let b = GuardEvent::from_eventbridge(again.to_string().as_bytes()).unwrap();
        assert_eq!(a.bulk_key(), "guard:guard-run-7");
        assert_eq!(a.bulk_key(), b.bulk_key());
    }

    #[test]
    fn the_same_event_delivered_twice_maps_to_the_same_key() {
        let raw = envelope(detail()).to_string();
        let a = GuardEvent::from_eventbridge(raw.as_bytes()).unwrap();
        let b = GuardEvent::from_eventbridge(raw.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.bulk_key(), b.bulk_key());
        let c = GuardEvent::from_body(body(detail()).to_string().as_bytes()).unwrap();
        let d = GuardEvent::from_body(body(detail()).to_string().as_bytes()).unwrap();
        assert_eq!(c.bulk_key(), "guard:evt-1");
        assert_eq!(c.bulk_key(), d.bulk_key());
    }

    #[test]
    fn a_plain_body_is_read_with_its_event_id_and_no_source() {
        let v = body(with(
            with(detail(), "action", json!("close")),
            "symbols",
            json!(["AAPL", "BRK.B", "AAPL"]),
        ));
        let e = parse_body(&v).unwrap();
        assert_eq!(e.event_id(), "evt-1");
        assert_eq!(e.source(), None);
        assert_eq!(e.action(), GuardAction::Close);
        assert_eq!(
            e.scope(),
            &GuardScope::Symbols(vec!["AAPL".into(), "BRK.B".into()]),
            "repeats dropped, order kept"
        );
    }

    #[test]
    fn position_ids_scope_a_close_to_those_positions() {
        let v = body(with(
            with(detail(), "action", json!("close")),
            "position_ids",
            json!(["pos-1", "pos-2", "pos-1"]),
        ));
        let e = parse_body(&v).unwrap();
        assert_eq!(
            e.scope(),
            &GuardScope::Positions(vec![
                PositionId::parse("pos-1").unwrap(),
                PositionId::parse("pos-2").unwrap()
            ])
        );
    }

    #[test]
    fn the_body_round_trips_through_to_body() {
        let v = body(with(
            with(with(detail(), "action", json!("close")), "symbols", json!(["AAPL"])),
            "reason",
            json!("equity fell fast"),
        ));
        let e = parse_body(&v).unwrap();
        assert_eq!(parse_body(&e.to_body()).unwrap(), e);
        assert_eq!(e.to_body()["observed"], "12.5");
    }

    #[test]
    fn the_event_id_is_required_in_a_body_and_bounded() {
        assert_eq!(
            parse_body(&detail()).unwrap_err(),
            GuardEventError::Missing {
                field: "event_id".into()
            }
        );
        for bad in [
            json!(""),
            json!("has space"),
            json!("x".repeat(129)),
            json!(7),
            json!("caf\u{e9}"),
        ] {
            let v = with(detail(), "event_id", bad.clone());
            let (code, field) = field_error(&v);
            assert_eq!(
                (code.as_str(), field.as_deref()),
                ("invalid_guard_event", Some("event_id")),
                "{bad}"
            );
        }
        assert!(parse_body(&with(detail(), "event_id", json!("x".repeat(128)))).is_ok());
    }

    #[test]
    fn every_required_field_is_named_when_missing() {
        for field in ["guard_id", "guard", "account_id", "action", "observed", "threshold"] {
            let e = parse_body(&body(without(detail(), field))).unwrap_err();
            assert_eq!(e, GuardEventError::Missing { field: field.into() }, "{field}");
            assert_eq!(e.code(), "invalid_guard_event");
            assert!(e.to_string().contains(field), "{e}");
            let e = parse_body(&body(with(detail(), field, Value::Null))).unwrap_err();
            assert_eq!(e.field(), Some(field), "null is missing too");
        }
    }

    #[test]
    fn the_guard_id_is_a_non_empty_token() {
        for bad in [
            json!(""),
            json!("a b"),
            json!("x".repeat(65)),
            json!(["dd"]),
            json!("dd\n"),
        ] {
            let (code, field) = field_error(&body(with(detail(), "guard_id", bad.clone())));
            assert_eq!(
                (code.as_str(), field.as_deref()),
                ("invalid_guard_event", Some("guard_id")),
                "{bad}"
            );
        }
        assert!(parse_body(&body(with(detail(), "guard_id", json!("risk:dd_1.v2")))).is_ok());
    }

    #[test]
    fn known_guards_are_variants_and_others_are_kept_as_custom() {
        for (name, kind) in [
            ("drawdown", GuardKind::Drawdown),
            ("market_gap", GuardKind::MarketGap),
            ("liquidity", GuardKind::Liquidity),
            ("vol_spike", GuardKind::Custom("vol_spike".into())),
        ] {
            let e = parse_body(&body(with(detail(), "guard", json!(name)))).unwrap();
            assert_eq!(e.guard(), &kind);
            assert_eq!(e.guard().as_str(), name);
        }
        for bad in [json!(""), json!("two words"), json!("x".repeat(33)), json!(1)] {
            let (code, field) = field_error(&body(with(detail(), "guard", bad.clone())));
            assert_eq!(
                (code.as_str(), field.as_deref()),
                ("invalid_guard_event", Some("guard")),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_account_id_follows_the_domain_rules() {
        for bad in [json!(""), json!("acct 1"), json!("x".repeat(65)), json!(12)] {
            let e = parse_body(&body(with(detail(), "account_id", bad.clone()))).unwrap_err();
            assert_eq!(e.field(), Some("account_id"), "{bad}");
        }
    }

    #[test]
    fn the_action_is_close_or_liquidate() {
        for bad in ["Close", "flatten", ""] {
            let e = parse_body(&body(with(detail(), "action", json!(bad)))).unwrap_err();
            assert_eq!(e.field(), Some("action"), "{bad}");
            assert!(e.to_string().contains("`close` or `liquidate`"), "{e}");
        }
    }

    #[test]
    fn scope_lists_must_name_valid_distinct_items_and_not_be_empty() {
        let close = with(detail(), "action", json!("close"));
        for (field, bad, at) in [
            ("symbols", json!([]), "symbols"),
            ("symbols", json!("AAPL"), "symbols"),
            ("symbols", json!(["AAPL", ""]), "symbols[1]"),
            ("symbols", json!(["AAPL", 5]), "symbols[1]"),
            ("symbols", json!([" AAPL"]), "symbols[0]"),
            ("position_ids", json!([]), "position_ids"),
            ("position_ids", json!(["has space"]), "position_ids[0]"),
        ] {
            let e = parse_body(&body(with(close.clone(), field, bad.clone()))).unwrap_err();
            assert_eq!(e.field(), Some(at), "{field}={bad}");
            assert_eq!(e.code(), "invalid_guard_event");
        }
        let many: Vec<String> = (0..=MAX_SCOPE_ITEMS).map(|i| format!("S{i}")).collect();
        let e = parse_body(&body(with(close.clone(), "symbols", json!(many)))).unwrap_err();
        assert_eq!(e.field(), Some("symbols"));
        let v = body(with(close, "symbols", Value::Null));
        assert_eq!(
            parse_body(&v).unwrap().scope(),
            &GuardScope::WholeAccount,
            "null is absent"
        );
    }

    #[test]
    fn symbols_and_position_ids_together_are_refused() {
        let v = body(with(
            with(with(detail(), "action", json!("close")), "symbols", json!(["AAPL"])),
            "position_ids",
            json!(["pos-1"]),
        ));
        assert_eq!(parse_body(&v).unwrap_err(), GuardEventError::ConflictingScope);
    }

    #[test]
    fn a_liquidation_is_never_narrowed() {
        let e = parse_body(&body(with(detail(), "symbols", json!(["AAPL"])))).unwrap_err();
        assert_eq!(e, GuardEventError::ScopedLiquidation("symbols"));
        let e = parse_body(&body(with(detail(), "position_ids", json!(["p"])))).unwrap_err();
        assert_eq!(e.field(), Some("position_ids"));
    }

    #[test]
    fn observed_and_threshold_are_exact_decimals_from_strings_or_numbers() {
        // A JSON number is read from its own text: as an f64 it would not be 0.3…01.
        let raw = r#"{"event_id":"e","guard_id":"g","guard":"drawdown","account_id":"a","action":"liquidate",
            "observed":"0.1","threshold":0.30000000000000000001}"#;
        let e = GuardEvent::from_body(raw.as_bytes()).unwrap();
        assert_eq!(e.observed(), Decimal::new(1, 1));
        assert_eq!(e.threshold().to_string(), "0.30000000000000000001");
        for (field, bad) in [
            ("observed", json!("ten")),
            ("observed", json!(true)),
            ("threshold", json!("+5")),
            ("threshold", json!("1e-29")),
            ("threshold", json!([1])),
        ] {
            let e = parse_body(&body(with(detail(), field, bad.clone()))).unwrap_err();
            assert_eq!(e.field(), Some(field), "{bad}");
        }
    }

    #[test]
    fn the_reason_is_optional_printable_and_bounded() {
        let ok = parse_body(&body(with(detail(), "reason", json!("equity fell 12.5 % today")))).unwrap();
        assert_eq!(ok.note(), Some("equity fell 12.5 % today"));
        assert_eq!(
            ok.reason(),
            "drawdown guard dd-1: observed 12.5 >= threshold 10 (equity fell 12.5 % today)"
        );
        assert_eq!(
            parse_body(&body(with(detail(), "reason", Value::Null))).unwrap().note(),
            None
        );
        for bad in [json!(""), json!("line\nbreak"), json!("r".repeat(257)), json!(3)] {
            let e = parse_body(&body(with(detail(), "reason", bad.clone()))).unwrap_err();
            assert_eq!(e.field(), Some("reason"), "{bad}");
        }
    }

    #[test]
    fn the_reason_sentence_states_the_relation_and_fits_a_close_reason() {
        let v = body(with(
            with(with(detail(), "guard", json!("liquidity")), "observed", json!("0.5")),
            "threshold",
            json!("1.00"),
        ));
        assert_eq!(
            parse_body(&v).unwrap().reason(),
            "liquidity guard dd-1: observed 0.5 < threshold 1"
        );
        let long = body(with(
            with(
                with(detail(), "guard_id", json!("g".repeat(64))),
                "reason",
                json!("é".repeat(256)),
            ),
            "guard",
            json!("c".repeat(32)),
        ));
        let r = parse_body(&long).unwrap().reason();
        assert_eq!(r.chars().count(), MAX_REASON_LEN, "{r}");
        assert!(r.ends_with("…)"), "{r}");
    }

    #[test]
    fn unknown_fields_are_refused_in_the_body_and_the_detail() {
        let e = parse_body(&body(with(detail(), "symbol", json!(["AAPL"])))).unwrap_err();
        assert_eq!(e, GuardEventError::UnknownField("symbol".into()));
        assert_eq!(e.code(), "invalid_guard_event");
        let raw = envelope(with(detail(), "positon_ids", json!(["p"]))).to_string();
        let e = GuardEvent::from_eventbridge(raw.as_bytes()).unwrap_err();
        assert_eq!(e.field(), Some("positon_ids"));
    }

    #[test]
    fn malformed_json_and_repeated_keys_are_invalid_bodies() {
        for raw in [
            &b"not json"[..],
            b"[1]",
            b"\"x\"",
            br#"{"event_id":"a","event_id":"b"}"#,
            b"{} {}",
        ] {
            let e = GuardEvent::from_body(raw).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{}", String::from_utf8_lossy(raw));
            assert_eq!(e.field(), None);
        }
    }

    #[test]
    fn the_envelope_needs_the_guard_detail_type_an_id_a_source_and_an_object_detail() {
        let e = GuardEvent::from_eventbridge(
            with(envelope(detail()), "detail-type", json!("Alert"))
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e, GuardEventError::UnsupportedDetailType("Alert".into()));
        assert_eq!(e.code(), "unsupported_detail_type");
        for field in ["id", "source", "detail", "detail-type"] {
            let e =
                GuardEvent::from_eventbridge(without(envelope(detail()), field).to_string().as_bytes()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
        let e = GuardEvent::from_eventbridge(with(envelope(detail()), "detail", json!("{}")).to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.field(), Some("detail"));
        let e = GuardEvent::from_eventbridge(with(envelope(detail()), "source", json!("")).to_string().as_bytes())
            .unwrap_err();
        assert_eq!(e.field(), Some("source"));
        // The envelope's id follows the event id's rules.
        let e =
            GuardEvent::from_eventbridge(with(envelope(detail()), "id", json!("")).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field(), Some("event_id"));
    }
}
