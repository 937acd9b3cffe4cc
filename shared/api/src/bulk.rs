//! Bulk close: `POST /accounts/{account_id}/close-all` records the bulk close and hands
//! its first step to the pipeline (202 at once: the fan-out never runs inside a request);
//! `GET /bulk-closes/{id}` shows every row with its close's live state and the totals;
//! `POST /bulk-closes/{id}/retry-failed` re-drives only the failed rows.
//! `POST /accounts/{account_id}/liquidate` is a bulk close of everything that loops until
//! the broker reports the account flat (the pipeline's liquidation job).

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::{
    bulk_view, format_timestamp, latest_rows, row_view, AccountId, AssetType, BulkClose, BulkCloseCommand, BulkCloseId,
    BulkFilter, BulkView, Fingerprint, GuardEvent, PositionId, Progress, RowOutcome, TimeInForce, LIQUIDATION_ATTEMPTS,
};
use closeflow_pipeline::bulk::{pending_step, start_bulk, Started};
use closeflow_pipeline::QueueMessage;
use closeflow_pipeline::{guard_bulk_close, JobError};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::{caller, forbidden, signed_in};
use crate::error::ApiError;
use crate::extract::{Body, PathParam};
use crate::handlers::{idempotency_key, json_body, only_fields, reason_of, valid_strategy_id, valid_symbol};
#[allow(unused_imports)] // names used by the #[utoipa::path] annotations only
use crate::openapi::{
    AccountIdParam, BulkCloseBody, BulkCloseIdParam, CloseAllErrors, GetBulkCloseErrors, GuardEventBody,
    GuardEventErrors, IdempotencyKeyHeader, LiquidateBody, LiquidateErrors, RetryFailedErrors,
};
use crate::AppState;

/// Fields a close-all body may carry (alphabetical); anything else is refused.
pub(crate) const BULK_BODY_FIELDS: &[&str] = &[
    "asset_type",
    "cancel_open_orders",
    "reason",
    "strategy_ids",
    "symbols",
    "time_in_force",
];

/// The most symbols or strategy ids one filter names.
const FILTER_LIMIT: usize = 500;

/// One position of a bulk close.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BulkCloseRow)]
pub struct BulkRowView {
    pub position_id: String,
    pub symbol: String,
    pub strategy_id: Option<String>,
    // `pending` (working, or not reached yet), `succeeded`, `failed` or `skipped`.
    #[schema(inline, value_type = crate::openapi::BulkRowStatusSchema)]
    pub status: &'static str,
    /// The position's close request (poll, cancel or retry it like any close).
    #[schema(format = Uuid)]
    pub close_request_id: Option<String>,
    /// A refusal's stable code (the one the single close would answer), or `close_failed`.
    pub error: Option<String>,
    /// For people: why it failed or was skipped.
    pub message: Option<String>,
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub realized_pnl: Option<closeflow_domain::Quantity>,
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
}

/// A bulk close: its totals and one row per position it took.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BulkClose)]
pub struct BulkCloseView {
    #[schema(format = Uuid)]
    pub bulk_close_id: String,
    pub account_id: String,
    // `running` while positions are being fanned out or any close is working; then
    // `completed`, or `completed_with_errors` when any row failed.
    #[schema(inline, value_type = crate::openapi::BulkStatusSchema)]
    pub status: &'static str,
    #[schema(minimum = 0)]
    pub total: usize,
    #[schema(minimum = 0)]
    pub succeeded: usize,
    #[schema(minimum = 0)]
    pub failed: usize,
    #[schema(minimum = 0)]
    pub skipped: usize,
    #[schema(minimum = 0)]
    pub pending: usize,
    /// What the rows' closes realized; `null` when any one's is unknown.
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub total_realized_pnl: Option<closeflow_domain::Quantity>,
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
    /// Whether every position has been reached (rows keep coming until then).
    pub fanned_out: bool,
    /// Retries of the failed rows asked for so far.
    #[schema(minimum = 0)]
    pub retry_rounds: u32,
    pub reason: Option<String>,
    /// Who asked: a token name, `user:<sub>`, or `guard:<id>`.
    pub actor: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `GET /bulk-closes/{bulk_close_id}`.
    pub poll_url: String,
    // `close_all`, or `liquidation` (then `liquidation` says where it stands).
    #[schema(inline, value_type = crate::openapi::BulkKindSchema)]
    pub kind: &'static str,
    pub liquidation: Option<LiquidationView>,
    /// One per position it took: a position closed again by a later liquidation attempt
    /// shows its latest close.
    pub rows: Vec<BulkRowView>,
}

/// Where an emergency liquidation stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Liquidation)]
pub struct LiquidationView {
    // `cancel_orders`, `sync`, `close_shorts`, `close_longs`, `verify`, then `done`.
    #[schema(inline, value_type = crate::openapi::LiquidationPhaseSchema)]
    pub phase: &'static str,
    /// 1-based: each attempt cancels, syncs, closes and asks the broker whether it is flat.
    #[schema(minimum = 1)]
    pub attempt: u32,
    #[schema(minimum = 1)]
    pub max_attempts: u32,
    /// Open orders of the account it asked the broker to cancel.
    #[schema(minimum = 0)]
    pub orders_canceled: usize,
    /// Once done: whether the broker reported the account flat.
    pub flat: Option<bool>,
    /// Once done and not flat: what the broker still holds (`SYMBOL qty`); an alert names it too.
    pub left: Vec<String>,
}

fn view_of(bulk: &BulkClose, v: BulkView) -> BulkCloseView {
    let (total_realized_pnl, realized_pnl_unknown) = crate::views::pnl(v.total_realized_pnl);
    BulkCloseView {
        bulk_close_id: bulk.id.to_string(),
        account_id: bulk.account_id.to_string(),
        status: v.status.as_str(),
        total: v.total,
        succeeded: v.succeeded,
        failed: v.failed,
        skipped: v.skipped,
        pending: v.pending,
        total_realized_pnl,
        realized_pnl_unknown,
        // A liquidation reaches positions until its last attempt is done.
        fanned_out: match &bulk.liquidation {
            Some(_) => !bulk.job_running(),
            None => bulk.fan_out.finished,
        },
        retry_rounds: bulk.retry_rounds,
        reason: bulk.reason.clone(),
        actor: bulk.actor.clone(),
        created_at: format_timestamp(&bulk.created_at),
        poll_url: poll_url(&bulk.id),
        kind: if bulk.liquidation.is_some() {
            "liquidation"
        } else {
            "close_all"
        },
        liquidation: bulk.liquidation.as_ref().map(|l| LiquidationView {
            phase: l.phase.as_str(),
            attempt: l.attempt + 1,
            max_attempts: l.max_attempts,
            orders_canceled: l.canceled_orders.len(),
            flat: l.flat,
            left: l.left.clone(),
        }),
        rows: v
            .rows
            .into_iter()
            .map(|r| {
                let (realized_pnl, realized_pnl_unknown) = match r.realized_pnl {
                    Some(p) => crate::views::pnl(p),
                    None => (None, None),
                };
                BulkRowView {
                    position_id: r.position_id.to_string(),
                    symbol: r.symbol,
                    strategy_id: r.strategy_id,
                    status: r.status.as_str(),
                    close_request_id: r.close_request_id.map(|id| id.to_string()),
                    error: r.error,
                    message: r.message,
                    realized_pnl,
                    realized_pnl_unknown,
                }
            })
            .collect(),
    }
}

fn poll_url(id: &BulkCloseId) -> String {
    format!("/bulk-closes/{id}")
}

fn bulk_close_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "bulk_close_not_found", "Bulk close not found")
}

fn string_list(value: &Value, field: &str, valid: fn(&str) -> bool) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || {
        ApiError::invalid_body(format!(
            "{field} must be a non-empty list of at most {FILTER_LIMIT} valid names"
        ))
    };
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= FILTER_LIMIT => items
            .iter()
            .map(|v| v.as_str().filter(|s| valid(s)).map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// The close-all body as a filter and close settings; refused whole on any bad field.
fn parse_body(value: &Value) -> Result<(BulkFilter, bool, TimeInForce), ApiError> {
    only_fields(value, BULK_BODY_FIELDS, "close-all")?;
    let asset_type = match value.get("asset_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t == "equity" => Some(AssetType::Equity),
        Some(Value::String(t)) if t == "option" => Some(AssetType::Option),
        Some(_) => return Err(ApiError::invalid_body("asset_type must be `equity` or `option`")),
    };
    let cancel_open_orders = match value.get("cancel_open_orders") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_body("cancel_open_orders must be true or false")),
    };
    let time_in_force = match value.get("time_in_force") {
        None | Some(Value::Null) => TimeInForce::Day,
        Some(Value::String(t)) => TimeInForce::parse(t)
            .ok_or_else(|| ApiError::bad_request("invalid_time_in_force", "time_in_force must be `day` or `gtc`"))?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_time_in_force",
                "time_in_force must be `day` or `gtc`",
            ))
        }
    };
    let filter = BulkFilter {
        symbols: string_list(value, "symbols", valid_symbol)?,
        strategy_ids: string_list(value, "strategy_ids", valid_strategy_id)?,
        asset_type,
        position_ids: None,
    };
    Ok((filter, cancel_open_orders, time_in_force))
}

/// What a request on a whole account starts from: a caller who holds the account, its
/// Idempotency-Key and its JSON body (each refused with its own code, in that order).
fn account_request(
    app: &AppState,
    headers: &HeaderMap,
    ext: &Extensions,
    raw: &str,
    body: &axum::body::Bytes,
) -> Result<(crate::auth::Caller, AccountId, closeflow_domain::IdempotencyKey, Value), ApiError> {
    let who = signed_in(&app.auth, headers, ext)?;
    let account = account_id(raw)?;
    if !who.access.allows(&account) {
        return Err(forbidden());
    }
    let key = idempotency_key(headers)?;
    let value = json_body(body)?;
    Ok((who, account, key, value))
}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| ApiError::bad_request("invalid_account_id", e.to_string()))
}

/// Asks the pipeline for the step the record is at, if its job goes on. The queue drops
/// a step asked for twice, and a step already done only asks for the one after it, so
/// asking again (a replayed request) is always safe.
pub(crate) async fn drive(app: &AppState, bulk: &BulkClose) -> Result<(), ApiError> {
    let Some(step) = pending_step(bulk) else {
        return Ok(());
    };
    app.queue
        .send(&QueueMessage::for_job(&step))
        .await
        .map_err(|e| queue_unavailable(e, &bulk.id))
}

fn queue_unavailable(e: impl std::fmt::Display, id: &BulkCloseId) -> ApiError {
    tracing::error!(error = %e, bulk_close_id = %id, "bulk close step not queued");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_unavailable",
        "The bulk close is recorded but could not be started; send the same request again",
    )
    .with("bulk_close_id", json!(id.to_string()))
}

/// Starts (or, under the same key, finds) a bulk close or a liquidation; the answer carries
/// the record as it is, and the caller polls `poll_url`.
pub(crate) async fn start(app: &AppState, fresh: BulkClose) -> Result<(StatusCode, BulkClose), ApiError> {
    let id = fresh.id;
    match start_bulk(app.store.as_ref(), app.queue.as_ref(), app.clock.as_ref(), fresh).await {
        Ok(Started::Created(b)) => Ok((StatusCode::ACCEPTED, b)),
        Ok(Started::Existing(b)) => Ok((StatusCode::OK, b)),
        Ok(Started::KeyReused) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was already used on this account with a different request body",
        )),
        Err(JobError::Store(e)) => Err(app.store_error()(e)),
        Err(e) => Err(queue_unavailable(e, &id)),
    }
}

/// Closes every position of the account that matches the filters (all of them without
/// any): one close request per position, strategies as strategies, each failure a row of
/// its own while the others go on. Answers 202 at once; poll `poll_url`.
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/close-all",
    operation_id = "closeAll",
    tag = "bulk",
    params(AccountIdParam, IdempotencyKeyHeader),
    request_body(content = BulkCloseBody, description = "Optional; an empty body closes every position of the account",
        example = json!({"symbols": ["AAPL", "MSFT"], "reason": "end of day"})),
    responses(
        (status = 202, description = "Recorded and started; rows appear as the fan-out reaches them",
            body = BulkCloseView,
            links(("getBulkClose" = (operation_id = "getBulkClose",
                parameters(("bulk_close_id" = "$response.body#/bulk_close_id")))))),
        (status = 200, description = "Replay of the same key and body: the bulk close as it is now",
            body = BulkCloseView),
        CloseAllErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "close_all", skip_all, fields(account_id = %raw))]
pub async fn close_all(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (who, account, key, value) = account_request(&app, &headers, &ext, &raw, &body)?;
    let (filter, cancel_open_orders, time_in_force) = parse_body(&value)?;
    let reason = reason_of(&value)?;
    let cmd = BulkCloseCommand {
        account_id: account,
        idempotency_key: key,
        fingerprint: Fingerprint::of_body(&json!({ "close_all": value })),
        actor: who.actor,
        reason,
        filter,
        cancel_open_orders,
        time_in_force,
        max_retries: app.config.max_retries,
        now: app.clock.now(),
    };
    let (status, bulk) = start(&app, BulkClose::new(cmd)).await?;
    if status == StatusCode::ACCEPTED {
        tracing::info!(bulk_close_id = %bulk.id, "bulk close started");
    }
    Ok((status, Json(current(&app, bulk).await?)).into_response())
}

/// The bulk close with every row's live state.
async fn current(app: &AppState, bulk: BulkClose) -> Result<BulkCloseView, ApiError> {
    let pages = app.store.bulk_pages(&bulk.id).await.map_err(app.store_error())?;
    let rows = latest_rows(pages);
    let submitted: Vec<&PositionId> = rows
        .iter()
        .filter(|r| matches!(r.outcome, RowOutcome::Submitted { .. }))
        .map(|r| &r.position_id)
        .collect();
    let loaded = app
        .store
        .aggregates_by_id(&submitted)
        .await
        .map_err(app.store_error())?;
    let views = rows.iter().map(|r| row_view(r, loaded.get(&r.position_id))).collect();
    let v = bulk_view(&bulk, views);
    Ok(view_of(&bulk, v))
}

async fn visible(app: &AppState, headers: &HeaderMap, ext: &Extensions, raw: &str) -> Result<BulkClose, ApiError> {
    let access = caller(&app.auth, headers, ext)?;
    let id = BulkCloseId::parse(raw)
        .map_err(|_| ApiError::bad_request("invalid_bulk_close_id", "Not a bulk close id (a UUID)"))?;
    app.store
        .bulk_close(&id)
        .await
        .map_err(app.store_error())?
        // Another account's bulk close is answered like a missing one: ids cannot be probed.
        .filter(|b| access.allows(&b.account_id))
        .ok_or_else(bulk_close_not_found)
}

/// A bulk close: totals and rows, each row with its close's live state.
#[utoipa::path(
    get,
    path = "/bulk-closes/{bulk_close_id}",
    operation_id = "getBulkClose",
    tag = "bulk",
    params(BulkCloseIdParam),
    responses(
        (status = 200, description = "The bulk close", body = BulkCloseView),
        GetBulkCloseErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_bulk_close", skip_all, fields(bulk_close_id = %raw))]
pub async fn get_bulk_close(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    let bulk = visible(&app, &headers, &ext, &raw).await?;
    Ok(Json(current(&app, bulk).await?).into_response())
}

/// Re-drives the failed rows only: a refused close is asked again, a close that failed at
/// the broker gets a new attempt for what it has left. Succeeded, working and skipped rows
/// are left alone.
#[utoipa::path(
    post,
    path = "/bulk-closes/{bulk_close_id}/retry-failed",
    operation_id = "retryFailedBulkCloseRows",
    tag = "bulk",
    params(BulkCloseIdParam),
    responses(
        (status = 202, description = "The retry round started", body = BulkCloseView),
        RetryFailedErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "retry_failed", skip_all, fields(bulk_close_id = %raw))]
pub async fn retry_failed(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    signed_in(&app.auth, &headers, &ext)?;
    let bulk = visible(&app, &headers, &ext, &raw).await?;
    if bulk.liquidation.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "liquidation_not_retryable",
            "A liquidation retries by itself until the account is flat; liquidate again to go on",
        ));
    }
    if bulk.job_running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "bulk_close_running",
            "The bulk close is still reaching its positions; retry its failed rows once it has",
        ));
    }
    let shown = current(&app, bulk.clone()).await?;
    if shown.failed == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing_to_retry",
            "No row of this bulk close has failed",
        ));
    }
    let mut next = bulk.clone();
    next.retry_rounds += 1;
    next.retry = Some(Progress::default());
    next.version += 1;
    next.updated_at = app.clock.now();
    if !app.store.update_bulk_close(&next).await.map_err(app.store_error())? {
        // Someone else moved it first (another retry request): theirs stands.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "bulk_close_running",
            "The bulk close changed meanwhile; look at it again",
        ));
    }
    tracing::info!(bulk_close_id = %next.id, round = next.retry_rounds, "failed rows re-driven");
    drive(&app, &next).await?;
    Ok((StatusCode::ACCEPTED, Json(current(&app, next).await?)).into_response())
}

/// Fields a liquidate body may carry (alphabetical).
pub(crate) const LIQUIDATE_BODY_FIELDS: &[&str] = &["confirm", "reason"];

/// Emergency liquidation: the account stops taking exposure at once (`liquidating`); the
/// pipeline cancels every open order of the account, syncs with the broker (so what only
/// the broker holds is closed too), closes every position with market orders (shorts
/// first) and repeats until the broker reports the account flat or the attempts run out
/// (then an alert names what is left). The account ends `halted`: a human resumes it.
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/liquidate",
    operation_id = "liquidateAccount",
    tag = "bulk",
    params(AccountIdParam, IdempotencyKeyHeader),
    request_body(content = LiquidateBody, description = "The confirmation names the account",
        example = json!({"confirm": "LIQUIDATE acct-1", "reason": "margin call"})),
    responses(
        (status = 202, description = "The account is liquidating; follow it at `poll_url`",
            body = BulkCloseView,
            links(("getBulkClose" = (operation_id = "getBulkClose",
                parameters(("bulk_close_id" = "$response.body#/bulk_close_id")))))),
        (status = 200, description = "Replay of the same key and body: the liquidation as it is now",
            body = BulkCloseView),
        LiquidateErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "liquidate", skip_all, fields(account_id = %raw))]
pub async fn liquidate(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (who, account, key, value) = account_request(&app, &headers, &ext, &raw, &body)?;
    only_fields(&value, LIQUIDATE_BODY_FIELDS, "liquidate")?;
    let expected = format!("LIQUIDATE {account}");
    if value.get("confirm").and_then(Value::as_str) != Some(expected.as_str()) {
        return Err(ApiError::bad_request(
            "confirmation_required",
            format!("A liquidation closes every position of the account: confirm with \"confirm\": \"{expected}\""),
        ));
    }
    let reason = reason_of(&value)?;
    let cmd = BulkCloseCommand {
        account_id: account.clone(),
        idempotency_key: key,
        fingerprint: Fingerprint::of_body(&json!({ "liquidate": value })),
        actor: who.actor.clone(),
        reason: reason.clone(),
        filter: BulkFilter::default(),
        cancel_open_orders: true,
        time_in_force: TimeInForce::Day,
        max_retries: app.config.max_retries,
        now: app.clock.now(),
    };
    let (status, bulk) = start(&app, BulkClose::liquidation(cmd, LIQUIDATION_ATTEMPTS)).await?;
    Ok((status, Json(current(&app, bulk).await?)).into_response())
}

/// A risk guard fired: closes what the event scopes (`action` `close`: the positions in
/// `symbols`, the `position_ids`, or the whole account) or liquidates the account
/// (`liquidate`), once per `event_id` however often it is sent. Every close it makes has
/// `guard:<guard_id>` as its actor and the observed value and threshold in its reason. The
/// same events arrive from EventBridge (`GuardTriggered`) through the guard-events function.
#[utoipa::path(
    post,
    path = "/guards/events",
    operation_id = "postGuardEvent",
    tag = "bulk",
    request_body(content = GuardEventBody, description = "The guard's event",
        example = json!({"event_id": "gap-2026-01-02T15:00Z", "guard_id": "gap-1", "guard": "market_gap",
            "account_id": "acct-1", "symbols": ["AAPL"], "action": "close", "observed": "7.5", "threshold": "5"})),
    responses(
        (status = 202, description = "Started: a bulk close, or a liquidation; follow it at `poll_url`",
            body = BulkCloseView),
        (status = 200, description = "This event was handled before: what it started, as it is now",
            body = BulkCloseView),
        GuardEventErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "guard_event", skip_all)]
pub async fn guard_event(
    State(app): State<AppState>,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let event = GuardEvent::from_body(&body).map_err(|e| {
        let err = ApiError::bad_request(e.code(), e.to_string());
        match e.field() {
            Some(f) => err.with("field", json!(f)),
            None => err,
        }
    })?;
    if !who.access.allows(event.account_id()) {
        return Err(forbidden());
    }
    let bulk = guard_bulk_close(&event, app.config.max_retries, app.clock.now())
        .map_err(|why| ApiError::bad_request("invalid_guard_event", why).with("field", json!("event_id")))?;
    let (status, bulk) = start(&app, bulk).await?;
    Ok((status, Json(current(&app, bulk).await?)).into_response())
}
