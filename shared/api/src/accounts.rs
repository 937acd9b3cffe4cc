//! An account's trading state: read it, and resume trading after a liquidation paused it.
//! While an account is `liquidating` or `halted`, nothing that adds exposure is accepted
//! (a new position, a larger one: 409 `account_halted`); closes, cancels and sync go on.

use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::{format_timestamp, AccountId, AccountState, TradingStateEvent};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::{caller, forbidden, signed_in};
use crate::error::ApiError;
use crate::extract::PathParam;
use crate::openapi::{AccountIdParam, GetAccountErrors, ResumeAccountErrors};
use crate::AppState;

/// An account as closeflow manages it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    pub account_id: String,
    // `active`, or `liquidating` / `halted`: then nothing that adds exposure is accepted.
    #[schema(inline, value_type = crate::openapi::TradingStateSchema)]
    pub trading_state: &'static str,
    /// When the trading state last changed (`null`: never, the account was always active).
    #[schema(format = DateTime)]
    pub trading_state_changed_at: Option<String>,
    /// Who changed it: a token name, `user:<sub>`, `liquidation`, or `guard:<id>`.
    pub trading_state_changed_by: Option<String>,
    pub trading_state_reason: Option<String>,
    /// Registered positions not yet closed.
    #[schema(minimum = 0)]
    pub live_positions: i64,
}

fn view(state: &AccountState, live: i64) -> AccountView {
    AccountView {
        account_id: state.account_id.as_str().to_string(),
        trading_state: state.trading_state.as_str(),
        trading_state_changed_at: state.changed_at.as_ref().map(format_timestamp),
        trading_state_changed_by: state.changed_by.clone(),
        trading_state_reason: state.reason.clone(),
        live_positions: live.max(0),
    }
}

fn account_id(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| ApiError::bad_request("invalid_account_id", e.to_string()))
}

/// An account's trading state and live positions.
#[utoipa::path(
    get,
    path = "/accounts/{account_id}",
    operation_id = "getAccount",
    tag = "accounts",
    params(AccountIdParam),
    responses(
        (status = 200, description = "The account", body = AccountView,
            example = json!({"account_id": "acct-1", "trading_state": "active", "trading_state_changed_at": null,
                "trading_state_changed_by": null, "trading_state_reason": null, "live_positions": 1})),
        GetAccountErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "get_account", skip_all, fields(account_id = %raw))]
pub async fn get_account(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    let access = caller(&app.auth, &headers, &ext)?;
    let account = account_id(&raw)?;
    if !access.allows(&account) {
        return Err(forbidden());
    }
    let state = app.store.account_state(&account).await.map_err(app.store_error())?;
    let live = app.store.live_positions(&account).await.map_err(app.store_error())?;
    Ok(Json(view(&state, live)).into_response())
}

/// Resumes trading on a halted account (after a liquidation). Resuming an active account
/// changes nothing; one still liquidating is refused until the liquidation ends.
#[utoipa::path(
    post,
    path = "/accounts/{account_id}/resume",
    operation_id = "resumeAccount",
    tag = "accounts",
    params(AccountIdParam),
    responses(
        (status = 200, description = "The account, trading again", body = AccountView),
        ResumeAccountErrors
    ),
    security(("bearerAuth" = []))
)]
#[tracing::instrument(name = "resume_account", skip_all, fields(account_id = %raw))]
pub async fn resume_account(
    State(app): State<AppState>,
    PathParam(raw): PathParam,
    headers: HeaderMap,
    ext: Extensions,
) -> Result<Response, ApiError> {
    let who = signed_in(&app.auth, &headers, &ext)?;
    let account = account_id(&raw)?;
    if !who.access.allows(&account) {
        return Err(forbidden());
    }
    let moved = app
        .store
        .set_trading_state(
            &account,
            TradingStateEvent::Resumed,
            &who.actor,
            Some("resumed"),
            app.clock.now(),
        )
        .await
        .map_err(app.store_error())?;
    let state = moved.map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "liquidation_in_progress",
            "The account is still liquidating; resume it once the liquidation has ended",
        )
        .with("trading_state", json!(e.from))
    })?;
    tracing::info!(trading_state = state.trading_state.as_str(), "account resumed");
    let live = app.store.live_positions(&account).await.map_err(app.store_error())?;
    Ok(Json(view(&state, live)).into_response())
}
