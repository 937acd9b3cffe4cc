//! The audit trail's routes: a position's entries and an account's, oldest first, paged.

use axum::extract::{RawQuery, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::{parse_timestamp, AccountId, AuditEntry, PositionId};
use closeflow_store::audit::valid_cursor;
use closeflow_store::{AuditPage, AuditQuery};
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{caller, forbidden};
use crate::error::ApiError;
use crate::extract::PathParam;
#[allow(unused_imports)] // names used by the #[utoipa::path] annotations only
use crate::openapi::{AccountAuditErrors, AccountIdParam, PositionAuditErrors, PositionIdParam};
use crate::AppState;

/// Entries per page unless `limit` says otherwise, and the most `limit` may ask for.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 500;

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditEntryView {
    #[schema(format = DateTime)]
    pub at: String,
    /// Who made the change: the token's name or the JWT's subject (`user:<sub>`), or a
    /// worker (`order-submitter`, `reconciler`, `order-watch`, `trade-stream`,
    /// `broker-webhook`, `cleanup`, `sync`).
    pub actor: String,
    pub position_id: String,
    pub account_id: String,
    /// `position`, `close_request`, `order`, or `account` (its trading state; such entries
    /// carry the position id `account:<account_id>`).
    pub subject: &'static str,
    pub subject_id: String,
    /// `position_registered`, `position_changed`, `close_requested`, `close_request_changed`,
    /// `order_placed`, `order_changed`, `trading_state_changed`.
    pub action: &'static str,
    pub reason: Option<String>,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    /// Quantities and prices as exact decimal strings, ids, `realized_pnl` on a fill (or
    /// `realized_pnl_unknown` with why).
    #[schema(value_type = Object, additional_properties)]
    pub details: std::collections::BTreeMap<&'static str, String>,
}

/// A page of an audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditPageView {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

fn entry(e: AuditEntry) -> AuditEntryView {
    AuditEntryView {
        at: closeflow_domain::format_timestamp(&e.at),
        actor: e.actor,
        position_id: e.position_id.to_string(),
        account_id: e.account_id.to_string(),
        subject: e.subject,
        subject_id: e.subject_id,
        action: e.action,
        reason: e.reason,
        status_before: e.status_before,
        status_after: e.status_after,
        details: e.details,
    }
}

fn page(p: AuditPage) -> Response {
    Json(AuditPageView {
        entries: p.entries.into_iter().map(entry).collect(),
        next_cursor: p.next_cursor,
    })
    .into_response()
}

/// The query string's `limit`, `cursor` and (where allowed) `since`; anything else, or a
/// parameter given twice, is refused.
struct PageQuery {
    limit: usize,
    cursor: Option<String>,
    since: Option<closeflow_domain::Timestamp>,
}

fn page_query(raw: Option<String>, allow_since: bool) -> Result<PageQuery, ApiError> {
    let mut q = PageQuery {
        limit: DEFAULT_LIMIT,
        cursor: None,
        since: None,
    };
    for (k, v) in crate::extract::query_pairs(raw.as_deref())? {
        match k.as_str() {
            "limit" => {
                q.limit =
                    v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                        ApiError::bad_request("invalid_limit", format!("limit must be 1 to {MAX_LIMIT}"))
                    })?
            }
            "cursor" => q.cursor = Some(v),
            "since" if allow_since => {
                q.since = Some(parse_timestamp(&v).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_since",
                        "since must be an RFC 3339 time, e.g. 2026-01-02T15:00:00Z",
                    )
                })?)
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("Unknown query parameter `{other}`"),
                ))
            }
        }
    }
    Ok(q)
}

fn checked_cursor<'a>(query: &AuditQuery, cursor: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match cursor {
        Some(c) if !valid_cursor(query, c) => Err(ApiError::bad_request(
            "invalid_cursor",
            "cursor must be a next_cursor this trail answered",
        )),
        other => Ok(other),
    }
}

fn position_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "position_not_found", "Position not found")
}

/// A position's audit trail, oldest first. Entries outlive the position itself.
#[utoipa::path(
    get,
    path = "/positions/{position_id}/audit",
    operation_id = "getPositionAudit",
    tag = "audit",
    params(PositionIdParam, PageParams),
    responses(
        (status = 200, description = "A page of the position's audit trail", body = AuditPageView,
            example = json!({"entries": [{"at": "2026-01-02T15:00:00.000Z", "actor": "api-token", "position_id": "pos-1",
                "account_id": "acct-1", "subject": "position", "subject_id": "pos-1",
                "action": "position_registered", "reason": null, "status_before": null, "status_after": "open",
                "details": {"avg_entry_price": "187.25", "quantity": "10", "symbol": "AAPL"}}],
                "next_cursor": "00000000000000000001#0000"})),
        PositionAuditErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_position_audit", skip_all, fields(position_id = %raw))]
pub async fn get_position_audit(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    let access = caller(&app.auth, &headers, &ext)?;
    let id = PositionId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_position_id", e.to_string()))?;
    let q = page_query(raw_query, false)?;
    let query = AuditQuery::Position(id.clone());
    let cursor = checked_cursor(&query, q.cursor.as_deref())?;
    let position = app.store.position(&id).await.map_err(app.store_error())?;
    let trail = app
        .store
        .trail(&query, q.limit, cursor)
        .await
        .map_err(app.store_error())?;
    // The position decides who may read; once it is gone (retention), its entries do.
    // Another account's position answers like a missing one.
    let account = position
        .map(|p| p.account_id)
        .or_else(|| trail.entries.first().map(|e| e.account_id.clone()));
    match account {
        Some(a) if access.allows(&a) => Ok(page(trail)),
        _ => Err(position_not_found()),
    }
}

/// An account's audit trail (every position's), oldest first, from `since`.
#[utoipa::path(
    get,
    path = "/accounts/{account_id}/audit",
    operation_id = "getAccountAudit",
    tag = "audit",
    params(AccountIdParam, PageParams, SinceParam),
    responses(
        (status = 200, description = "A page of the account's audit trail", body = AuditPageView),
        AccountAuditErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_account_audit", skip_all, fields(account_id = %raw))]
pub async fn get_account_audit(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    let access = caller(&app.auth, &headers, &ext)?;
    let account = AccountId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_account_id", e.to_string()))?;
    let q = page_query(raw_query, true)?;
    if !access.allows(&account) {
        return Err(forbidden());
    }
    let query = AuditQuery::Account {
        account,
        since: q.since,
    };
    let cursor = checked_cursor(&query, q.cursor.as_deref())?;
    let trail = app
        .store
        .trail(&query, q.limit, cursor)
        .await
        .map_err(app.store_error())?;
    Ok(page(trail))
}

fn query_param(name: &str, description: &str, schema: ObjectBuilder, example: serde_json::Value) -> Parameter {
    crate::openapi::query_param_builder(name, description, schema)
        .example(Some(example))
        .build()
}

/// `limit` and `cursor`.
pub struct PageParams;

impl IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_param(
                "limit",
                "Entries per page (default 100).",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1.0))
                    .maximum(Some(MAX_LIMIT as f64)),
                json!(50),
            ),
            query_param(
                "cursor",
                "The previous page's `next_cursor`.",
                ObjectBuilder::new().schema_type(Type::String),
                json!("00000000000000000003#0001"),
            ),
        ]
    }
}

/// `since`.
pub struct SinceParam;

impl IntoParams for SinceParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![query_param(
            "since",
            "Only entries at or after this time (RFC 3339).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::DateTime,
                ))),
            json!("2026-01-02T15:00:00Z"),
        )]
    }
}
