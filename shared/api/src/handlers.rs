//! Request handlers: parse at the edge, ask the store, map the outcome. No business rules
//! here; those live in `closeflow_domain`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::json::from_slice_strict;
use closeflow_domain::{
    AccountId, AssetType, CloseCommand, CloseRequestId, Fingerprint, IdempotencyKey, Ignored, PositionId, Quantity,
    RegisterDecision, RegisterPosition, RegisterRejection,
};
use closeflow_store::{AggregateKey, CloseOutcome};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{caller, forbidden, signed_in, Caller};
use crate::error::ApiError;
use crate::extract::{Body, PathParam};
#[allow(unused_imports)] // names used by the #[utoipa::path] annotations only
use crate::openapi::{
    BrokerWebhookErrors, CloseBody, ClosePositionErrors, CloseRequestIdParam, DecimalInput, GetCloseRequestErrors,
    GetPositionErrors, IdempotencyKeyHeader, NonNegativeDecimalInput, PositionIdParam, PutPositionErrors,
    WebhookBodyDoc, WebhookResult, WebhookUnknownOrder,
};
use crate::{views, AppState};

type ApiResult = Result<Response, ApiError>;

fn position_id(raw: &str) -> Result<PositionId, ApiError> {
    PositionId::parse(raw).map_err(|e| ApiError::bad_request("invalid_position_id", e.to_string()))
}

/// Parses a request body as JSON (no key twice in an object); an empty body counts as `{}`.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    from_slice_strict(body).map_err(|e| ApiError::invalid_body(format!("Request body is not valid JSON: {e}")))
}

fn position_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "position_not_found", "Position not found")
}

fn close_request_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "close_request_not_found",
        "Close request not found",
    )
}

/// Body of `PUT /positions/{position_id}`. Unknown fields are refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PositionRegistration)]
struct PositionBody {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    account_id: String,
    /// An equity ticker (`BRK.B`) or an OCC option symbol.
    #[schema(pattern = r"^[A-Za-z0-9./_-][A-Za-z0-9./_ -]{0,63}$")]
    symbol: String,
    #[schema(inline, value_type = crate::openapi::AssetTypeSchema)]
    asset_type: String,
    /// Signed: > 0 long, < 0 short.
    #[schema(value_type = DecimalInput)]
    quantity: Quantity,
    #[serde(default)]
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    avg_entry_price: Option<Quantity>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    strategy_id: Option<String>,
}

fn valid_symbol(s: &str) -> bool {
    // Equity tickers (BRK.B) and OCC option symbols (AAPL240119C00150000), with room for
    // the space-padded OCC form.
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'-' | b'_' | b' '))
        && !s.starts_with(' ')
}

fn parse_position_body(
    id: PositionId,
    body: &Bytes,
    caller: Caller,
    now: closeflow_domain::Timestamp,
    max_live_positions: u64,
) -> Result<RegisterPosition, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_body(
            "A JSON body with account_id, symbol, asset_type and quantity is required",
        ));
    }
    let b: PositionBody =
        from_slice_strict(body).map_err(|e| ApiError::invalid_body(format!("Invalid position: {e}")))?;
    let account_id = AccountId::parse(&b.account_id).map_err(|e| ApiError::invalid_body(e.to_string()))?;
    if !valid_symbol(&b.symbol) {
        return Err(ApiError::invalid_body(
            "symbol must be 1 to 64 characters of letters, digits, spaces, '.', '/', '-' or '_'",
        ));
    }
    let asset_type = AssetType::parse(&b.asset_type)
        .ok_or_else(|| ApiError::invalid_body("asset_type must be `equity` or `option`"))?;
    if let Some(p) = b.avg_entry_price {
        if p.is_negative() {
            return Err(ApiError::invalid_body("avg_entry_price must not be negative"));
        }
    }
    if let Some(s) = &b.strategy_id {
        if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
            return Err(ApiError::invalid_body(
                "strategy_id must be 1 to 128 printable characters",
            ));
        }
    }
    Ok(RegisterPosition {
        position_id: id,
        account_id,
        symbol: b.symbol,
        asset_type,
        quantity: b.quantity,
        avg_entry_price: b.avg_entry_price,
        strategy_id: b.strategy_id,
        actor: caller.actor,
        access: caller.access,
        max_live_positions,
        now,
    })
}

/// Registers a position, or updates an open one (same account).
#[utoipa::path(
    put,
    path = "/positions/{position_id}",
    operation_id = "putPosition",
    tag = "positions",
    params(PositionIdParam),
    request_body(
        content = PositionBody,
        example = json!({"account_id": "acct-1", "symbol": "AAPL", "asset_type": "equity", "quantity": "10", "avg_entry_price": "187.25"})
    ),
    responses(
        (status = 201, description = "Registered", body = views::PositionView,
            links(
                ("closePosition" = (operation_id = "closePosition", parameters(("position_id" = "$request.path.position_id")),
                    description = "Close the position just registered")),
                ("getPosition" = (operation_id = "getPosition", parameters(("position_id" = "$request.path.position_id"))))
            ),
            example = json!({"position_id": "pos-1", "account_id": "acct-1", "symbol": "AAPL", "asset_type": "equity",
                "quantity": "10", "avg_entry_price": "187.25", "strategy_id": null, "status": "open",
                "active_close_request_id": null, "closed_at": null,
                "created_at": "2026-01-02T15:00:00.000Z", "updated_at": "2026-01-02T15:00:00.000Z"})),
        (status = 200, description = "Updated, or unchanged (same body again)", body = views::PositionView),
        PutPositionErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "put_position", skip_all, fields(position_id = %raw))]
pub async fn put_position(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> ApiResult {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let id = position_id(&raw)?;
    let cmd = parse_position_body(id, &body, who, app.clock.now(), app.config.max_positions_per_account)?;
    // Asking for an account the caller does not hold says nothing about stored data, so it
    // is 403; past this check a refusal on account grounds means the id is held by another
    // account (below).
    if !cmd.access.allows(&cmd.account_id) {
        return Err(forbidden());
    }
    let outcome = app.store.register_position(&cmd).await.map_err(app.store_error())?;
    match outcome {
        Ok(RegisterDecision::Created(p)) => {
            tracing::info!(position_id = %p.id, "position registered");
            Ok((StatusCode::CREATED, Json(views::position(&p))).into_response())
        }
        Ok(RegisterDecision::Updated(p)) | Ok(RegisterDecision::Unchanged(p)) => {
            Ok((StatusCode::OK, Json(views::position(&p))).into_response())
        }
        Err(RegisterRejection::PositionNotOpen(status)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "position_not_open",
            format!("Position is `{status}`; only an open position can be changed"),
        )
        .with("position_status", json!(status.as_str()))),
        Err(RegisterRejection::Forbidden) => {
            tracing::info!("position id held by another account");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "position_id_unavailable",
                "This position id is not available; register the position under another id",
            ))
        }
        Err(RegisterRejection::QuotaExceeded { limit }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "quota_exceeded",
            format!("This account already holds {limit} live positions, its limit; close some first"),
        )
        .with("limit", json!(limit))),
        Err(RegisterRejection::RoutingKeyTaken(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "position_id_collision",
            "This position id collides with an existing position's storage key; register it under another id",
        )),
    }
}

/// Reads a position. Another account's position answers like a missing one.
#[utoipa::path(
    get,
    path = "/positions/{position_id}",
    operation_id = "getPosition",
    tag = "positions",
    params(PositionIdParam),
    responses(
        (status = 200, description = "The position", body = views::PositionView,
            example = json!({"position_id": "pos-1", "account_id": "acct-1", "symbol": "AAPL", "asset_type": "equity",
                "quantity": "10", "avg_entry_price": "187.25", "strategy_id": null, "status": "closed",
                "active_close_request_id": null, "closed_at": "2026-01-02T15:00:00.000Z",
                "created_at": "2026-01-02T15:00:00.000Z", "updated_at": "2026-01-02T15:00:00.000Z"})),
        GetPositionErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_position", skip_all, fields(position_id = %raw))]
pub async fn get_position(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> ApiResult {
    let access = caller(&app.auth, &headers, &ext)?;
    let id = position_id(&raw)?;
    // Another account's position answers exactly like a missing one: ids cannot be probed.
    match app.store.position(&id).await.map_err(app.store_error())? {
        Some(p) if access.allows(&p.account_id) => Ok(Json(views::position(&p)).into_response()),
        _ => Err(position_not_found()),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::bad_request("missing_idempotency_key", "The Idempotency-Key header is required"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be printable ASCII"))?;
    IdempotencyKey::parse(text).map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))
}

/// Fields a close body may carry in this version. Anything else is refused rather than
/// ignored: silently ignoring `qty` would close the whole position.
pub(crate) const CLOSE_BODY_FIELDS: &[&str] = &["cancel_open_orders", "reason"];

/// `cancel_open_orders` of a close body `close_body` accepted: `true` lets the submitter
/// cancel the symbol's open orders that hold the quantity (default `false`).
fn cancel_open_orders(body: &Value) -> Result<bool, ApiError> {
    match body.get("cancel_open_orders") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_body("cancel_open_orders must be true or false")),
    }
}

/// Parses the close body: the JSON value (for the fingerprint) and the reason.
fn close_body(body: &Bytes) -> Result<(Value, Option<String>), ApiError> {
    let value = json_body(body)?;
    let Value::Object(map) = &value else {
        return Err(ApiError::invalid_body("The close body must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !CLOSE_BODY_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid_body(format!(
            "Unsupported field `{unknown}` in close body"
        )));
    }
    let reason = match map.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if (1..=256).contains(&r.len()) && !r.chars().any(char::is_control) => Some(r.clone()),
        Some(_) => {
            return Err(ApiError::invalid_body(
                "reason must be a string of 1 to 256 printable characters",
            ))
        }
    };
    Ok((value, reason))
}

/// Closes a position: one close request per Idempotency-Key, exactly one broker order per attempt.
#[utoipa::path(
    post,
    path = "/positions/{position_id}/close",
    operation_id = "closePosition",
    tag = "closes",
    params(PositionIdParam, IdempotencyKeyHeader),
    request_body(content = CloseBody, description = "Optional; an empty body is `{}`",
        example = json!({"reason": "risk limit"})),
    responses(
        (status = 201, description = "A new close request", body = views::CloseAcceptedView,
            links(
                ("getCloseRequest" = (operation_id = "getCloseRequest",
                    parameters(("close_request_id" = "$response.body#/close_request_id")),
                    description = "Poll the close request")),
                ("getPosition" = (operation_id = "getPosition", parameters(("position_id" = "$request.path.position_id"))))
            ),
            example = json!({"close_request_id": "0b9d5d8a-9c33-8e61-8000-000000000000", "position_id": "pos-1",
                "position_status": "closing", "close_request_status": "pending", "target_qty": "10", "filled_qty": "0",
                "orders": [], "poll_url": "/close-requests/0b9d5d8a-9c33-8e61-8000-000000000000", "poll_interval_ms": 1000})),
        (status = 200, description = "Replay of the same key and body: the close request's current state",
            body = views::CloseAcceptedView,
            links(
                ("getCloseRequest" = (operation_id = "getCloseRequest",
                    parameters(("close_request_id" = "$response.body#/close_request_id"))))
            )),
        ClosePositionErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "close_position", skip_all, fields(position_id = %raw))]
pub async fn close_position(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> ApiResult {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let id = position_id(&raw)?;
    let key = idempotency_key(&headers)?;
    let (body, reason) = close_body(&body)?;
    let cancel_open_orders = cancel_open_orders(&body)?;
    let cmd = CloseCommand {
        new_id: CloseRequestId::new(&id, app.random.random_bytes()),
        position_id: id,
        idempotency_key: key,
        fingerprint: Fingerprint::of_body(&body),
        max_retries: app.config.max_retries,
        reason,
        cancel_open_orders,
        actor: who.actor,
        access: who.access,
        now: app.clock.now(),
    };
    let outcome = app.store.open_close_request(&cmd).await.map_err(app.store_error())?;
    let poll = app.config.poll_interval_ms;
    match outcome {
        CloseOutcome::Created {
            position,
            close_request,
        } => {
            tracing::info!(position_id = %position.id, close_request_id = %close_request.id, "close request created");
            Ok((
                StatusCode::CREATED,
                Json(views::close_accepted(&position, &close_request, &[], poll)),
            )
                .into_response())
        }
        CloseOutcome::Replayed {
            position,
            close_request,
            orders,
        } => Ok((
            StatusCode::OK,
            Json(views::close_accepted(&position, &close_request, &orders, poll)),
        )
            .into_response()),
        CloseOutcome::Rejected(r) => Err(ApiError::from_rejection(r)),
    }
}

/// Reads a close request and its orders (poll it after a close).
#[utoipa::path(
    get,
    path = "/close-requests/{close_request_id}",
    operation_id = "getCloseRequest",
    tag = "closes",
    params(CloseRequestIdParam),
    responses(
        (status = 200, description = "The close request", body = views::CloseRequestView,
            example = json!({"close_request_id": "0b9d5d8a-9c33-8e61-8000-000000000000", "position_id": "pos-1",
                "status": "completed", "target_qty": "10", "filled_qty": "10", "remaining_qty": "0", "retry_count": 0,
                "max_retries": 3, "reason": "risk limit", "created_at": "2026-01-02T15:00:00.000Z",
                "submitted_at": "2026-01-02T15:00:00.000Z", "completed_at": "2026-01-02T15:00:00.000Z",
                "failure_reason": null,
                "orders": [{"client_order_id": "0b9d5d8a-9c33-8e61-8000-000000000000-1", "broker_order_id": "sim-1",
                    "attempt": 1, "qty": "10", "status": "filled", "filled_qty": "10", "filled_avg_price": "187.5"}],
                "waiting_on_broker": null})),
        GetCloseRequestErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_close_request", skip_all, fields(close_request_id = %raw))]
pub async fn get_close_request(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> ApiResult {
    let access = caller(&app.auth, &headers, &ext)?;
    let id = match CloseRequestId::parse(&raw) {
        Ok(id) => id,
        // A UUID closeflow did not mint is well formed, it just names nothing here.
        Err(_) if uuid::Uuid::try_parse(&raw).is_ok() => return Err(close_request_not_found()),
        Err(e) => return Err(ApiError::bad_request("invalid_close_request_id", e.to_string())),
    };
    // The aggregate, not just the close request: its account decides who may see it.
    let found = app
        .store
        .aggregate(&AggregateKey::CloseRequest(id))
        .await
        .map_err(app.store_error())?;
    // Another account's close request answers exactly like a missing one.
    let found_agg = found.as_ref();
    let found = found
        .as_ref()
        .and_then(|agg| Some((agg.close_request(&id)?, &agg.position.account_id)));
    match found {
        Some(((cr, orders), account)) if access.allows(account) => {
            let mut view = views::close_request(cr, orders);
            if let Some(agg) = found_agg
                .as_ref()
                .filter(|a| a.latest_close_request.as_ref().is_some_and(|l| l.id == cr.id))
            {
                view.waiting_on_broker = closeflow_domain::trouble::waiting_on_broker(agg).map(views::waiting);
            }
            Ok(Json(view).into_response())
        }
        _ => Err(close_request_not_found()),
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "No such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed on this route",
    )
}

/// Bodies up to this size are verified on the async worker; larger ones (up to
/// `MAX_BODY_BYTES`) on the blocking pool, so hashing them never stalls other requests.
const INLINE_WEBHOOK_BYTES: usize = 8 * 1024;

/// POST /webhooks/broker: signed broker order updates (see closeflow_pipeline::webhook).
#[utoipa::path(
    post,
    path = "/webhooks/broker",
    operation_id = "brokerWebhook",
    tag = "webhooks",
    description = "A broker order update, applied idempotently and monotonically (stale `seq`, repeated \
`execution_id`, older statuses are ignored). Signed with `X-Closeflow-Signature`; no bearer token.",
    request_body(content = WebhookBodyDoc,
        example = json!({"client_order_id": "0b9d5d8a-9c33-8e61-8000-000000000000-1", "broker_order_id": "b-1",
            "status": "filled", "filled_qty": "10", "filled_avg_price": "187.5", "seq": 7,
            "updated_at": "2026-01-02T15:00:00Z"})),
    responses(
        (status = 200, description = "Read: applied or ignored", body = WebhookResult,
            example = json!({"result": "applied", "position_status": "closed", "close_request_status": "completed"})),
        (status = 202, description = "An order closeflow did not place: nothing written", body = WebhookUnknownOrder,
            example = json!({"result": "unknown_order"})),
        BrokerWebhookErrors
    ),
    security(("webhookSignature" = []))
)]
#[tracing::instrument(name = "broker_webhook", skip_all, fields(client_order_id))]
pub async fn broker_webhook(State(app): State<AppState>, headers: HeaderMap, Body(body): Body) -> ApiResult {
    use closeflow_pipeline::webhook::{parse_body, verify_signature, UpdateResult, WebhookError};
    let signature = headers
        .get("x-closeflow-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let secret = app.webhook_secret.clone();
    let now = app.clock.now();
    let inline = body.len() <= INLINE_WEBHOOK_BYTES;
    let check = move || {
        verify_signature(&secret, signature.as_deref(), &body, now)?;
        parse_body(&body, now)
    };
    let checked = if inline {
        check()
    } else {
        tokio::task::spawn_blocking(check).await.map_err(|e| {
            tracing::error!(error = %e, "webhook verification task failed");
            ApiError::internal()
        })?
    };
    let update = match checked {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::warn!("webhook for an order closeflow did not place; nothing written");
            return Ok((StatusCode::ACCEPTED, Json(json!({"result": "unknown_order"}))).into_response());
        }
        Err(WebhookError::InvalidBody(e)) => return Err(ApiError::invalid_body(e)),
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                e.to_string(),
            ));
        }
    };
    tracing::Span::current().record("client_order_id", tracing::field::display(&update.client_order_id));
    let result = closeflow_pipeline::apply_broker_update(app.store.as_ref(), &update, app.clock.now())
        .await
        .map_err(app.store_error())?;
    Ok(match result {
        UpdateResult::Applied {
            position_status,
            close_request_status,
        } => {
            tracing::info!(client_order_id = %update.client_order_id, status = %update.status, "broker update applied");
            let body = json!({
                "result": "applied",
                "position_status": position_status.as_str(),
                "close_request_status": close_request_status.as_str(),
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        UpdateResult::Ignored(Ignored::OverFill) => {
            // Nothing was written; a broker reporting more than was ordered needs a human.
            tracing::error!(
                alert = "invalid_fill",
                client_order_id = %update.client_order_id,
                filled_qty = %update.filled_qty,
                "ALERT: the broker reports more filled than the order was for; not applied"
            );
            return Err(ApiError::bad_request(
                "invalid_fill",
                "filled_qty exceeds the order's quantity; the update was not applied",
            ));
        }
        UpdateResult::Ignored(why) => {
            let body = json!({"result": "ignored", "reason": format!("{why:?}")});
            (StatusCode::OK, Json(body)).into_response()
        }
        UpdateResult::UnknownOrder => {
            tracing::warn!(client_order_id = %update.client_order_id, "webhook for an unknown order; nothing written");
            (StatusCode::ACCEPTED, Json(json!({"result": "unknown_order"}))).into_response()
        }
    })
}
