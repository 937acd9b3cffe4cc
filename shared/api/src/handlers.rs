//! Request handlers: parse at the edge, ask the store, map the outcome. No business rules
//! here; those live in `closeflow_domain`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::json::from_slice_strict;
use closeflow_domain::{
    Access, AccountId, AssetType, CloseCommand, CloseRequestId, Fingerprint, IdempotencyKey, Ignored, ManageRejection,
    OrderOptions, OrderType, PositionId, PositionStatus, Price, Quantity, RegisterDecision, RegisterPosition,
    RegisterRejection, RetryCommand, TimeInForce,
};
use closeflow_store::{AggregateKey, CloseOutcome};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{caller, forbidden, signed_in, Caller};
use crate::error::ApiError;
use crate::extract::{Body, PathParam};
#[allow(unused_imports)] // names used by the #[utoipa::path] annotations only
use crate::openapi::{
    BrokerWebhookErrors, CancelErrors, CloseBody, ClosePositionErrors, CloseRequestIdParam, DecimalInput,
    GetCloseRequestErrors, GetPositionErrors, GetStrategyErrors, IdempotencyKeyHeader, ListPositionsErrors,
    ListPositionsParams, NonNegativeDecimalInput, PositionIdParam, PutPositionErrors, RetryBody, RetryErrors,
    StrategyIdParam, WebhookBodyDoc, WebhookResult, WebhookUnknownOrder,
};
use crate::{views, AppState};

type ApiResult = Result<Response, ApiError>;

fn position_id(raw: &str) -> Result<PositionId, ApiError> {
    PositionId::parse(raw).map_err(|e| ApiError::bad_request("invalid_position_id", e.to_string()))
}

/// Parses a request body as JSON (no key twice in an object); an empty body counts as `{}`.
pub(crate) fn json_body(body: &Bytes) -> Result<Value, ApiError> {
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
    /// Units of the underlying per unit of quantity, when not the default (100 per option
    /// contract, 1 per share): realized PnL multiplies by it. Must be above 0.
    #[serde(default)]
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    multiplier: Option<Quantity>,
}

pub(crate) fn valid_symbol(s: &str) -> bool {
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
    let avg_entry_price = match b.avg_entry_price {
        None => None,
        Some(p) => Some(Price::new(p).ok_or_else(|| ApiError::invalid_body("avg_entry_price must not be negative"))?),
    };
    if let Some(s) = &b.strategy_id {
        if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
            return Err(ApiError::invalid_body(
                "strategy_id must be 1 to 128 printable characters",
            ));
        }
    }
    if b.multiplier.is_some_and(|m| m.is_zero() || m.is_negative()) {
        return Err(ApiError::invalid_body("multiplier must be above 0"));
    }
    Ok(RegisterPosition {
        multiplier: b.multiplier.map(|m| m.value()),
        source: None,
        position_id: id,
        account_id,
        symbol: b.symbol,
        asset_type,
        quantity: b.quantity,
        avg_entry_price,
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
                "quantity": "10", "closed_quantity": null, "avg_entry_price": "187.25", "strategy_id": null, "status": "open",
                "active_close_request_id": null, "closed_at": null,
                "created_at": "2026-01-02T15:00:00.000Z", "updated_at": "2026-01-02T15:00:00.000Z",
                "source": "api", "sync_status": "unchecked", "last_synced_at": null, "sync_our_quantity": null,
                "sync_broker_quantity": null, "sync_broker_avg_entry_price": null,
                "multiplier": "1", "realized_pnl": "0", "realized_pnl_unknown": null})),
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
            let view = views::position(&closeflow_domain::PositionAggregate::new(p));
            Ok((StatusCode::CREATED, Json(view)).into_response())
        }
        Ok(RegisterDecision::Updated(p)) | Ok(RegisterDecision::Unchanged(p)) => {
            // The realized PnL of an existing position counts its close requests' orders,
            // which the registration does not carry: read them (an update is rare, a
            // first registration answers above without this read).
            let agg = app
                .store
                .aggregate(&AggregateKey::Position(p.id.clone()))
                .await
                .map_err(app.store_error())?
                .filter(|a| a.position.version >= p.version)
                .unwrap_or_else(|| closeflow_domain::PositionAggregate::new(p));
            Ok((StatusCode::OK, Json(views::position(&agg))).into_response())
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
        Err(RegisterRejection::AccountHalted(state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "account_halted",
            format!(
                "The account is `{}`: nothing that adds exposure is accepted until it is resumed",
                state.as_str()
            ),
        )
        .with("trading_state", json!(state.as_str()))),
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
                "quantity": "0", "closed_quantity": "10", "avg_entry_price": "187.25", "strategy_id": null, "status": "closed",
                "active_close_request_id": null, "closed_at": "2026-01-02T15:00:00.000Z",
                "created_at": "2026-01-02T15:00:00.000Z", "updated_at": "2026-01-02T15:00:00.000Z",
                "source": "api", "sync_status": "unchecked", "last_synced_at": null, "sync_our_quantity": null,
                "sync_broker_quantity": null, "sync_broker_avg_entry_price": null,
                "multiplier": "1", "realized_pnl": "2.5", "realized_pnl_unknown": null})),
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
    let agg = app
        .store
        .aggregate(&AggregateKey::Position(id))
        .await
        .map_err(app.store_error())?;
    match agg {
        Some(a) if access.allows(&a.position.account_id) => Ok(Json(views::position(&a)).into_response()),
        _ => Err(position_not_found()),
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let value = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::bad_request("missing_idempotency_key", "The Idempotency-Key header is required"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be printable ASCII"))?;
    IdempotencyKey::parse(text).map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))
}

/// Fields a close body may carry (alphabetical). Anything else is refused rather than
/// ignored: a field silently ignored could close more, or otherwise, than was asked.
pub(crate) const CLOSE_BODY_FIELDS: &[&str] = &[
    "cancel_open_orders",
    "extended_hours",
    "limit_price",
    "order_type",
    "qty",
    "reason",
    "time_in_force",
];

/// Fields a retry body may carry: new order options for the attempts to come.
pub(crate) const RETRY_BODY_FIELDS: &[&str] = &["extended_hours", "limit_price", "order_type", "time_in_force"];

/// The typed order fields of a close or retry body, read from the raw bytes so decimals
/// keep their exact text.
#[derive(Deserialize, Default)]
struct OrderFields {
    #[serde(default)]
    extended_hours: Option<bool>,
    #[serde(default)]
    limit_price: Option<Quantity>,
    #[serde(default)]
    order_type: Option<String>,
    #[serde(default)]
    qty: Option<Quantity>,
    #[serde(default)]
    time_in_force: Option<String>,
}

pub(crate) fn options_error(e: closeflow_domain::OptionsError) -> ApiError {
    ApiError::bad_request(e.code(), e.to_string())
}

/// Parses and checks the order fields of a body (everything that needs no position).
/// `None` when the body names no order option at all.
/// `net`: the limit price is a multi-leg order's net price, where a negative one is a credit.
pub(crate) fn order_fields(body: &Bytes, net: bool) -> Result<(Option<OrderOptions>, Option<Quantity>), ApiError> {
    let f: OrderFields = if body.iter().all(u8::is_ascii_whitespace) {
        OrderFields::default()
    } else {
        from_slice_strict(body).map_err(|e| ApiError::invalid_body(format!("Invalid close body: {e}")))?
    };
    if let Some(q) = f.qty {
        if q.is_zero() || q.is_negative() {
            return Err(options_error(closeflow_domain::OptionsError::InvalidQty));
        }
    }
    let named =
        f.order_type.is_some() || f.limit_price.is_some() || f.time_in_force.is_some() || f.extended_hours.is_some();
    if !named {
        return Ok((None, f.qty));
    }
    let order_type = match f.order_type.as_deref() {
        None => OrderType::Market,
        Some(t) => {
            OrderType::parse(t).ok_or_else(|| ApiError::invalid_body("order_type must be `market` or `limit`"))?
        }
    };
    let limit_price = match f.limit_price {
        None => None,
        Some(p) if net && !p.is_zero() => Some(p),
        Some(p) => Some(
            Price::new(p)
                .filter(|p| !p.is_zero())
                .map(|p| p.as_quantity())
                .ok_or_else(|| match net {
                    true => ApiError::bad_request("invalid_limit_price", "a net limit_price must not be 0"),
                    false => ApiError::bad_request("invalid_limit_price", "limit_price must be greater than 0"),
                })?,
        ),
    };
    let time_in_force = match f.time_in_force.as_deref() {
        None => TimeInForce::Day,
        Some(t) => TimeInForce::parse(t)
            .ok_or_else(|| ApiError::bad_request("invalid_time_in_force", "time_in_force must be `day` or `gtc`"))?,
    };
    let options = OrderOptions {
        order_type,
        time_in_force,
        extended_hours: f.extended_hours.unwrap_or(false),
        ..OrderOptions::MARKET
    }
    .with_signed_limit_price(limit_price);
    options.validate_shape().map_err(options_error)?;
    Ok((Some(options), f.qty))
}

/// Refuses a body that is not an object or carries a field outside `allowed`.
pub(crate) fn only_fields(value: &Value, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::invalid_body(format!("The {what} body must be a JSON object")));
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid_body(format!(
            "Unsupported field `{unknown}` in {what} body"
        )));
    }
    Ok(())
}

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
    only_fields(&value, CLOSE_BODY_FIELDS, "close")?;
    let reason = reason_of(&value)?;
    Ok((value, reason))
}

/// The `reason` of a close body: 1 to 256 printable characters, or none.
pub(crate) fn reason_of(value: &Value) -> Result<Option<String>, ApiError> {
    let reason = match value.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if (1..=256).contains(&r.len()) && !r.chars().any(char::is_control) => Some(r.clone()),
        Some(_) => {
            return Err(ApiError::invalid_body(
                "reason must be a string of 1 to 256 printable characters",
            ))
        }
    };
    Ok(reason)
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
                "orders": [], "partial": false, "poll_url": "/close-requests/0b9d5d8a-9c33-8e61-8000-000000000000",
                "poll_interval_ms": 1000})),
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
    let (value, reason) = close_body(&body)?;
    let cancel_open_orders = cancel_open_orders(&value)?;
    let (options, qty) = order_fields(&body, false)?;
    let body = value;
    let access = who.access.clone();
    let cmd = CloseCommand {
        new_id: CloseRequestId::new(&id, app.random.random_bytes()),
        position_id: id,
        idempotency_key: key,
        fingerprint: Fingerprint::of_body(&body),
        max_retries: app.config.max_retries,
        reason,
        cancel_open_orders,
        qty,
        options: options.unwrap_or(OrderOptions::MARKET),
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
            let mut view = views::close_accepted(&position, &close_request, &[], poll);
            view.warning = naked_leg_warning(&app, &position, &access).await;
            Ok((StatusCode::CREATED, Json(view)).into_response())
        }
        CloseOutcome::Replayed {
            position,
            close_request,
            orders,
        } => {
            let mut view = views::close_accepted(&position, &close_request, &orders, poll);
            view.warning = naked_leg_warning(&app, &position, &access).await;
            Ok((StatusCode::OK, Json(view)).into_response())
        }
        CloseOutcome::Rejected(r) => Err(ApiError::from_rejection(r)),
    }
}

/// `leaves_other_legs_open` when closing this leg alone leaves a short leg of its strategy
/// naked. Advisory: read from the listing index after the close was accepted, so a failed
/// read answers no warning rather than failing a close that already happened.
async fn naked_leg_warning(
    app: &AppState,
    position: &closeflow_domain::Position,
    access: &Access,
) -> Option<&'static str> {
    let strategy_id = position.strategy_id.clone()?;
    let accounts = match access {
        Access::All => None,
        Access::Accounts(set) => Some(set.iter().cloned().collect()),
    };
    let req = closeflow_store::ListRequest {
        scope: closeflow_store::Scope::Strategy { strategy_id, accounts },
        status: None,
        after: None,
        limit: closeflow_store::listing::MAX_PAGE,
    };
    let legs: Vec<_> = (app.store.list_positions(&req).await.ok()?.positions)
        .into_iter()
        .map(|a| a.position)
        .collect();
    closeflow_domain::leaves_short_leg_naked(position, &legs).then_some("leaves_other_legs_open")
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
                "waiting_on_broker": null, "position_qty": "10", "partial": false, "order_type": "market", "limit_price": null,
                "time_in_force": "day", "extended_hours": false, "cancel_requested_at": null, "manual_retries": 0,
                "realized_pnl": "2.5", "realized_pnl_unknown": null})),
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
            let position = &found_agg.expect("found above").position;
            let mut view = views::close_request(position, cr, orders);
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

/// Parses a close request id from the path: a UUID closeflow did not mint names nothing.
fn close_request_id(raw: &str) -> Result<CloseRequestId, ApiError> {
    match CloseRequestId::parse(raw) {
        Ok(id) => Ok(id),
        Err(_) if uuid::Uuid::try_parse(raw).is_ok() => Err(close_request_not_found()),
        Err(e) => Err(ApiError::bad_request("invalid_close_request_id", e.to_string())),
    }
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// The listing's cursor: the index position where the next page starts, hex-encoded so it
/// is opaque and URL-safe.
fn encode_cursor(next: &str) -> String {
    hex::encode(next.as_bytes())
}

fn decode_cursor(text: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor this API answered");
    let bytes = hex::decode(text).map_err(|_| bad())?;
    let sk = String::from_utf8(bytes).map_err(|_| bad())?;
    // `{created_at}#{position_id}`: anything else was not answered here.
    let (at, id) = sk.split_once('#').ok_or_else(bad)?;
    if closeflow_domain::parse_timestamp(at).is_none() || PositionId::parse(id).is_err() {
        return Err(bad());
    }
    Ok(sk)
}

pub(crate) fn valid_strategy_id(s: &str) -> bool {
    (1..=128).contains(&s.len()) && !s.chars().any(char::is_control)
}

/// Lists the caller's positions, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/positions",
    operation_id = "listPositions",
    tag = "positions",
    params(ListPositionsParams),
    responses(
        (status = 200, description = "A page of positions, newest first", body = views::PositionPageView,
            example = json!({"positions": [{"position_id": "pos-1", "account_id": "acct-1", "symbol": "AAPL",
                "asset_type": "equity", "quantity": "10", "closed_quantity": null, "avg_entry_price": "187.25", "strategy_id": null,
                "status": "open", "active_close_request_id": null, "closed_at": null,
                "created_at": "2026-01-02T15:00:00.000Z", "updated_at": "2026-01-02T15:00:00.000Z",
                "source": "api", "sync_status": "unchecked", "last_synced_at": null, "sync_our_quantity": null,
                "sync_broker_quantity": null, "sync_broker_avg_entry_price": null,
                "multiplier": "1", "realized_pnl": "0", "realized_pnl_unknown": null}],
                "next_cursor": null})),
        ListPositionsErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "list_positions", skip_all)]
pub async fn list_positions(
    State(app): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    ext: Extensions,
) -> ApiResult {
    let access = caller(&app.auth, &headers, &ext)?;
    let (mut account, mut status, mut strategy, mut limit, mut cursor) = (None, None, None, 50usize, None);
    for (k, v) in crate::extract::query_pairs(query.as_deref())? {
        match k.as_str() {
            "account_id" => {
                account = Some(AccountId::parse(&v).map_err(|e| invalid_query(e.to_string()))?);
            }
            "status" => {
                status = Some(PositionStatus::parse(&v).map_err(|e| invalid_query(e.to_string()))?);
            }
            "strategy_id" if valid_strategy_id(&v) => strategy = Some(v.to_string()),
            "strategy_id" => return Err(invalid_query("strategy_id must be 1 to 128 printable characters")),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=closeflow_store::listing::MAX_PAGE).contains(n))
                    .ok_or_else(|| invalid_query("limit must be a whole number from 1 to 100"))?;
            }
            "cursor" => cursor = Some(decode_cursor(&v)?),
            other => return Err(invalid_query(format!("unknown query parameter `{other}`"))),
        }
    }
    // Naming another account is refused outright; without one, all of the caller's.
    let accounts: Option<Vec<AccountId>> = match (&account, &access) {
        (Some(a), _) if !access.allows(a) => return Err(forbidden()),
        (Some(a), _) => Some(vec![a.clone()]),
        (None, Access::Accounts(set)) => Some(set.iter().cloned().collect()),
        (None, Access::All) => None,
    };
    let scope = match (strategy, accounts) {
        (Some(strategy_id), accounts) => closeflow_store::Scope::Strategy { strategy_id, accounts },
        (None, Some(accounts)) => closeflow_store::Scope::Accounts(accounts),
        (None, None) => {
            return Err(ApiError::bad_request(
                "account_id_required",
                "This caller may act on every account: name one with account_id (or a strategy_id)",
            ))
        }
    };
    let req = closeflow_store::ListRequest {
        scope,
        status,
        after: cursor,
        limit,
    };
    let page = app.store.list_positions(&req).await.map_err(app.store_error())?;
    Ok(Json(views::PositionPageView {
        positions: page.positions.iter().map(views::position).collect(),
        next_cursor: page.next.as_deref().map(encode_cursor),
    })
    .into_response())
}

/// A strategy's legs and status. Legs of accounts the caller does not hold are left out; a
/// strategy with none left answers 404.
#[utoipa::path(
    get,
    path = "/strategies/{strategy_id}",
    operation_id = "getStrategy",
    tag = "positions",
    params(StrategyIdParam),
    responses(
        (status = 200, description = "The strategy", body = views::StrategyView),
        GetStrategyErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_strategy", skip_all, fields(strategy_id = %raw))]
pub async fn get_strategy(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> ApiResult {
    let access = caller(&app.auth, &headers, &ext)?;
    if !valid_strategy_id(&raw) {
        return Err(ApiError::bad_request(
            "invalid_strategy_id",
            "strategy_id must be 1 to 128 printable characters",
        ));
    }
    let accounts = match &access {
        Access::All => None,
        Access::Accounts(set) => Some(set.iter().cloned().collect()),
    };
    let mut legs = Vec::new();
    let mut after = None;
    // A strategy has a handful of legs; the bound only stops a runaway listing.
    for _ in 0..10 {
        let req = closeflow_store::ListRequest {
            scope: closeflow_store::Scope::Strategy {
                strategy_id: raw.clone(),
                accounts: accounts.clone(),
            },
            status: None,
            after: after.take(),
            limit: closeflow_store::listing::MAX_PAGE,
        };
        let page = app.store.list_positions(&req).await.map_err(app.store_error())?;
        legs.extend(page.positions);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if legs.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "strategy_not_found",
            "Strategy not found",
        ));
    }
    // Only a strategy with a leg in flight can have an active strategy close: the legs'
    // close requests are read (one more round trip) only then.
    let in_flight = legs.iter().any(|l| {
        matches!(
            l.position.status,
            PositionStatus::Closing | PositionStatus::CloseRetryable
        )
    });
    let active_strategy_close_id = if in_flight {
        let aggregates = closeflow_store::strategy_legs(app.store.as_ref(), &raw, &access)
            .await
            .map_err(app.store_error())?;
        closeflow_domain::strategy_close::active_strategy_close(&aggregates).map(|id| id.to_string())
    } else {
        None
    };
    Ok(Json(views::StrategyView {
        strategy_id: raw,
        status: closeflow_domain::strategy_status(&legs.iter().map(|l| l.position.clone()).collect::<Vec<_>>())
            .as_str(),
        legs: legs.iter().map(views::position).collect(),
        active_strategy_close_id,
    })
    .into_response())
}

fn manage_error(r: ManageRejection) -> ApiError {
    match r {
        ManageRejection::NotFound => close_request_not_found(),
        ManageRejection::NotCancelable => ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            "Nothing of this close is working at the broker",
        ),
        ManageRejection::NotRetryable(status) => ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            "Only a failed close (position `close_failed`, nothing working at the broker) can be retried",
        )
        .with("position_status", json!(status.as_str())),
        ManageRejection::IdempotencyKeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was already used on this position with a different request body",
        ),
        ManageRejection::InvalidOptions(e) => options_error(e),
    }
}

/// The close request as stored now, for the caller.
async fn current_close_request(app: &AppState, id: CloseRequestId) -> ApiResult {
    let agg = app
        .store
        .aggregate(&AggregateKey::CloseRequest(id))
        .await
        .map_err(app.store_error())?;
    match agg.as_ref().and_then(|a| Some((&a.position, a.close_request(&id)?))) {
        Some((p, (cr, orders))) => Ok(Json(views::close_request(p, cr, orders)).into_response()),
        None => Err(close_request_not_found()),
    }
}

/// Asks the broker to cancel a close's working order(s). The close ends by the usual rules
/// once the broker confirms (nothing filled: position `open`; part filled:
/// `close_retryable`, then `close_failed` for a human rather than an automatic retry).
#[utoipa::path(
    post,
    path = "/close-requests/{close_request_id}/cancel",
    operation_id = "cancelCloseRequest",
    tag = "closes",
    params(CloseRequestIdParam),
    responses(
        (status = 202, description = "The cancel reached the broker; the close request as it is now (it ends when \
the broker confirms)", body = views::CloseRequestView),
        CancelErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "cancel_close_request", skip_all, fields(close_request_id = %raw))]
pub async fn cancel_close_request(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> ApiResult {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let id = close_request_id(&raw)?;
    let outcome = closeflow_pipeline::cancel_close(
        app.store.as_ref(),
        app.broker.as_ref(),
        app.clock.as_ref(),
        &id,
        &who.access,
        &who.actor,
    )
    .await
    .map_err(app.store_error())?;
    match outcome {
        closeflow_pipeline::CancelOutcome::Asked => {}
        closeflow_pipeline::CancelOutcome::Refused(r) => return Err(manage_error(r)),
        closeflow_pipeline::CancelOutcome::BrokerUnavailable(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "broker_unavailable",
                "The broker did not confirm the cancel; the order may still be working. Ask again.",
            ))
        }
    }
    let mut resp = current_close_request(&app, id).await?;
    *resp.status_mut() = StatusCode::ACCEPTED;
    Ok(resp)
}

/// Starts a new attempt of a failed close for what remains (same close request, next
/// client order id), optionally with new order options.
#[utoipa::path(
    post,
    path = "/close-requests/{close_request_id}/retry",
    operation_id = "retryCloseRequest",
    tag = "closes",
    params(CloseRequestIdParam, IdempotencyKeyHeader),
    request_body(content = RetryBody, description = "Optional; an empty body keeps the close's order options",
        example = json!({"order_type": "limit", "limit_price": "187.5"})),
    responses(
        (status = 202, description = "A new attempt is pending", body = views::CloseRequestView),
        (status = 200, description = "Replay of the same key and body: the close request as it is now",
            body = views::CloseRequestView),
        RetryErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "retry_close_request", skip_all, fields(close_request_id = %raw))]
pub async fn retry_close_request(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> ApiResult {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let id = close_request_id(&raw)?;
    let key = idempotency_key(&headers)?;
    let value = json_body(&body)?;
    only_fields(&value, RETRY_BODY_FIELDS, "retry")?;
    // A leg of a multi-leg close takes a net price (negative: a credit); the domain refuses
    // a credit for any other close.
    let (options, _) = order_fields(&body, true)?;
    let cmd = RetryCommand {
        close_request_id: id,
        idempotency_key: key,
        // Apart from any close body: a key used for a close never replays as a retry.
        fingerprint: Fingerprint::of_body(&json!({ "retry": value })),
        options,
        actor: who.actor,
        access: who.access,
        now: app.clock.now(),
    };
    let (agg, replayed) = app
        .store
        .retry_close(&cmd)
        .await
        .map_err(app.store_error())?
        .map_err(manage_error)?;
    let (cr, orders) = agg.close_request(&id).ok_or_else(close_request_not_found)?;
    let status = if replayed {
        StatusCode::OK
    } else {
        tracing::info!(close_request_id = %id, attempt = cr.current_attempt(), "manual retry started");
        StatusCode::ACCEPTED
    };
    Ok((status, Json(views::close_request(&agg.position, cr, orders))).into_response())
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
