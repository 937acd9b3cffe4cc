//! `POST /strategies/{strategy_id}/close` and `GET /strategy-closes/{strategy_close_id}`:
//! closing every leg of a strategy under one strategy close (see
//! `closeflow_domain::strategy_close`). Parse at the edge, ask the store, map the outcome.

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use closeflow_domain::{
    Fingerprint, OrderOptions, StrategyCloseCommand, StrategyCloseId, StrategyCloseMode, StrategyCloseRejection,
    StrategyCloseView,
};
use closeflow_store::StrategyCloseOutcome;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::{caller, signed_in};
use crate::error::ApiError;
use crate::extract::{Body, PathParam};
use crate::handlers::{idempotency_key, json_body, only_fields, options_error, order_fields, reason_of};
#[allow(unused_imports)] // names used by the #[utoipa::path] annotations only
use crate::openapi::{
    CancelStrategyCloseErrors, CloseStrategyErrors, GetStrategyCloseErrors, IdempotencyKeyHeader, StrategyCloseBody,
    StrategyCloseIdParam, StrategyIdParam,
};
use crate::AppState;

/// Fields a strategy close body may carry (alphabetical); anything else is refused.
pub(crate) const STRATEGY_CLOSE_BODY_FIELDS: &[&str] = &["limit_price", "mode", "order_type", "qty", "reason"];

/// One leg of a strategy close.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StrategyCloseLeg)]
pub struct StrategyCloseLegView {
    pub position_id: String,
    /// The leg's own close request (poll, cancel or retry it like any close).
    #[schema(format = Uuid)]
    pub close_request_id: String,
    pub symbol: String,
    #[schema(inline, value_type = crate::openapi::SideSchema)]
    pub side: &'static str,
    #[schema(value_type = crate::openapi::Decimal)]
    pub qty: closeflow_domain::Quantity,
    #[schema(inline, value_type = crate::openapi::CloseRequestStatusSchema)]
    pub status: &'static str,
    #[schema(value_type = crate::openapi::Decimal)]
    pub filled_qty: closeflow_domain::Quantity,
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub filled_avg_price: Option<closeflow_domain::Price>,
    pub error_message: Option<String>,
    /// What the leg's fills realized so far; `null` when unknown (`realized_pnl_unknown`).
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub realized_pnl: Option<closeflow_domain::Quantity>,
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
}

/// A strategy close: the answer of the close (201 and 200 alike) and of its poll.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StrategyClose)]
pub struct StrategyCloseResponse {
    #[schema(format = Uuid)]
    pub strategy_close_id: String,
    pub strategy_id: String,
    // What is carried out: `legs` (one order per leg) or `mleg` (one multi-leg order).
    #[schema(inline, value_type = crate::openapi::StrategyCloseModeSchema)]
    pub mode: &'static str,
    // `pending` while any leg is working; then `success`, `partial` or `error`.
    #[schema(inline, value_type = crate::openapi::StrategyCloseStatusSchema)]
    pub status: &'static str,
    #[schema(minimum = 0)]
    pub total_legs: usize,
    #[schema(minimum = 0)]
    pub closed_legs: usize,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub legs: Vec<StrategyCloseLegView>,
    /// What all legs realized; `null` when any leg's is unknown (`realized_pnl_unknown`).
    #[schema(value_type = Option<crate::openapi::Decimal>)]
    pub total_realized_pnl: Option<closeflow_domain::Quantity>,
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
    /// `GET /strategy-closes/{strategy_close_id}`.
    pub poll_url: String,
}

fn view_of(v: &StrategyCloseView) -> StrategyCloseResponse {
    let (total_realized_pnl, realized_pnl_unknown) = crate::views::pnl(v.total_realized_pnl());
    StrategyCloseResponse {
        strategy_close_id: v.id.to_string(),
        strategy_id: v.strategy_id.clone(),
        mode: v.mode.as_str(),
        status: v.status.as_str(),
        total_legs: v.legs.len(),
        closed_legs: v.closed_legs(),
        created_at: closeflow_domain::format_timestamp(&v.created_at),
        legs: v
            .legs
            .iter()
            .map(|l| StrategyCloseLegView {
                position_id: l.position_id.to_string(),
                close_request_id: l.close_request_id.to_string(),
                symbol: l.symbol.clone(),
                side: match l.side {
                    closeflow_domain::Side::Buy => "buy",
                    closeflow_domain::Side::Sell => "sell",
                },
                qty: l.qty,
                status: l.status.as_str(),
                filled_qty: l.filled_qty,
                filled_avg_price: l.filled_avg_price,
                error_message: l.error_message.clone(),
                realized_pnl: crate::views::pnl(l.realized_pnl).0,
                realized_pnl_unknown: crate::views::pnl(l.realized_pnl).1,
            })
            .collect(),
        total_realized_pnl,
        realized_pnl_unknown,
        poll_url: format!("/strategy-closes/{}", v.id),
    }
}

fn strategy_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "strategy_not_found", "Strategy not found")
}

fn strategy_close_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "strategy_close_not_found",
        "Strategy close not found",
    )
}

fn rejection(r: StrategyCloseRejection) -> ApiError {
    match r {
        StrategyCloseRejection::NotFound => strategy_not_found(),
        StrategyCloseRejection::IdempotencyKeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was already used on this strategy with a different request body",
        ),
        StrategyCloseRejection::NotClosable { position_id, status } => ApiError::new(
            StatusCode::CONFLICT,
            "strategy_not_closable",
            format!("Leg `{position_id}` is `{status}`: every leg must be open; nothing was closed"),
        )
        .with("position_id", json!(position_id.as_str()))
        .with("position_status", json!(status.as_str())),
        StrategyCloseRejection::InvalidOptions(e) => options_error(e),
        StrategyCloseRejection::TooManyLegs { legs } => ApiError::bad_request(
            "too_many_legs",
            format!(
                "A strategy close takes at most {} legs (one atomic write); this strategy has {legs}",
                closeflow_domain::strategy_close::MAX_LEGS
            ),
        ),
        StrategyCloseRejection::MlegNotAvailable(why) => ApiError::new(
            StatusCode::CONFLICT,
            "mleg_not_available",
            format!("mode `mleg` cannot be used: {why}; nothing was closed"),
        ),
    }
}

/// Closes every leg of a strategy at once: all legs move to `closing` under one strategy
/// close, or none does. In `mleg` mode one multi-leg order per attempt closes every leg
/// (a leg the broker refuses refuses the whole order); each leg still shows its own fill.
#[utoipa::path(
    post,
    path = "/strategies/{strategy_id}/close",
    operation_id = "closeStrategy",
    tag = "closes",
    params(StrategyIdParam, IdempotencyKeyHeader),
    request_body(content = StrategyCloseBody, description = "Optional; an empty body is `{}`",
        example = json!({"mode": "legs", "reason": "take profit"})),
    responses(
        (status = 201, description = "A new strategy close; each leg has its own close request",
            body = StrategyCloseResponse),
        (status = 200, description = "Replay of the same key and body: the strategy close as it is now",
            body = StrategyCloseResponse),
        CloseStrategyErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "close_strategy", skip_all, fields(strategy_id = %raw))]
pub async fn close_strategy(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
    Body(body): Body,
) -> Result<axum::response::Response, ApiError> {
    let who = signed_in(&app.auth, &headers, &ext)?;
    if !crate::handlers::valid_strategy_id(&raw) {
        return Err(ApiError::bad_request(
            "invalid_strategy_id",
            "strategy_id must be 1 to 128 printable characters",
        ));
    }
    let key = idempotency_key(&headers)?;
    let value = json_body(&body)?;
    only_fields(&value, STRATEGY_CLOSE_BODY_FIELDS, "strategy close")?;
    let reason = reason_of(&value)?;
    let mode = match value.get("mode") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) => {
            Some(StrategyCloseMode::parse(m).ok_or_else(|| ApiError::invalid_body("mode must be `mleg` or `legs`"))?)
        }
        Some(_) => return Err(ApiError::invalid_body("mode must be `mleg` or `legs`")),
    };
    let (options, qty) = order_fields(&body, true)?;
    let cmd = StrategyCloseCommand {
        strategy_id: raw,
        idempotency_key: key,
        // Apart from any single close's body: a key used to close one leg never replays
        // as a strategy close.
        fingerprint: Fingerprint::of_body(&json!({ "strategy_close": value })),
        random: app.random.random_bytes(),
        mode,
        // The broker adapter says whether it places multi-leg orders; without one
        // (`NoBroker`) an `mleg` request runs as `legs` and says so.
        broker_supports_mleg: app.broker.supports_mleg(),
        options: options.unwrap_or(OrderOptions::MARKET),
        qty,
        reason,
        max_retries: app.config.max_retries,
        actor: who.actor,
        access: who.access,
        now: app.clock.now(),
    };
    match app.store.close_strategy(&cmd).await.map_err(app.store_error())? {
        StrategyCloseOutcome::Created(v) => {
            tracing::info!(strategy_close_id = %v.id, legs = v.legs.len(), mode = v.mode.as_str(), "strategy close created");
            Ok((StatusCode::CREATED, Json(view_of(&v))).into_response())
        }
        StrategyCloseOutcome::Replayed(v) => Ok((StatusCode::OK, Json(view_of(&v))).into_response()),
        StrategyCloseOutcome::Rejected(r) => Err(rejection(r)),
    }
}

/// A strategy close as its legs show it now.
#[utoipa::path(
    get,
    path = "/strategy-closes/{strategy_close_id}",
    operation_id = "getStrategyClose",
    tag = "closes",
    params(StrategyCloseIdParam),
    responses(
        (status = 200, description = "The strategy close", body = StrategyCloseResponse),
        GetStrategyCloseErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_strategy_close", skip_all, fields(strategy_close_id = %raw))]
pub async fn get_strategy_close(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<axum::response::Response, ApiError> {
    let access = caller(&app.auth, &headers, &ext)?;
    let id = StrategyCloseId::parse(&raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_strategy_close_id",
            "strategy_close_id must be a strategy close id (a UUID)",
        )
    })?;
    match app
        .store
        .strategy_close(&id, &access)
        .await
        .map_err(app.store_error())?
    {
        Some(v) => Ok(Json(view_of(&v)).into_response()),
        None => Err(strategy_close_not_found()),
    }
}

/// Asks the broker to cancel the working orders of every leg of a strategy close (each
/// leg's close as `POST /close-requests/{id}/cancel` does). Each leg ends by the usual
/// rules once the broker confirms; nothing is assumed before.
#[utoipa::path(
    post,
    path = "/strategy-closes/{strategy_close_id}/cancel",
    operation_id = "cancelStrategyClose",
    tag = "closes",
    params(StrategyCloseIdParam),
    responses(
        (status = 202, description = "The cancels reached the broker; the strategy close as it is now",
            body = StrategyCloseResponse),
        CancelStrategyCloseErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "cancel_strategy_close", skip_all, fields(strategy_close_id = %raw))]
pub async fn cancel_strategy_close(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<axum::response::Response, ApiError> {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let id = StrategyCloseId::parse(&raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_strategy_close_id",
            "strategy_close_id must be a strategy close id (a UUID)",
        )
    })?;
    let view = app
        .store
        .strategy_close(&id, &who.access)
        .await
        .map_err(app.store_error())?
        .ok_or_else(strategy_close_not_found)?;
    let (mut asked, mut unreachable) = (0usize, false);
    for leg in view.legs.iter().filter(|l| !l.status.is_terminal()) {
        let outcome = closeflow_pipeline::cancel_close(
            app.store.as_ref(),
            app.broker.as_ref(),
            app.clock.as_ref(),
            &leg.close_request_id,
            &who.access,
            &who.actor,
        )
        .await
        .map_err(app.store_error())?;
        match outcome {
            closeflow_pipeline::CancelOutcome::Asked => asked += 1,
            closeflow_pipeline::CancelOutcome::BrokerUnavailable(_) => unreachable = true,
            // This leg has nothing working (not yet at the broker, or ended): the others
            // are still canceled.
            closeflow_pipeline::CancelOutcome::Refused(_) => {}
        }
    }
    if unreachable {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "broker_unavailable",
            "The broker did not confirm every cancel; some orders may still be working. Ask again.",
        ));
    }
    if asked == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            "Nothing of this strategy close is working at the broker",
        ));
    }
    let now = app
        .store
        .strategy_close(&id, &who.access)
        .await
        .map_err(app.store_error())?
        .ok_or_else(strategy_close_not_found)?;
    Ok((StatusCode::ACCEPTED, Json(view_of(&now))).into_response())
}
