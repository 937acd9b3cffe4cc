//! `/paper/account`: the paper account's equity changed behind closeflow's back, as the
//! market moving would change it at Alpaca. The drawdown guard then finds it through
//! `GET /v2/account`.
//!
//! - `POST /paper/account` `{"account_id": "acct-1", "equity": "123.45"}` fixes the
//!   account's `equity` (and `portfolio_value`) at that exact decimal until changed again;
//!   `"equity": null` goes back to cash plus positions at their prices. `account_id`, when
//!   given, must be the key pair's. Answers `{"account_id", "equity"}`.
//!
//! Authenticated and rate limited like the Alpaca routes; errors are closeflow's
//! (`{"error": <stable code>, "message": …}`), and a refused request changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use closeflow_domain::Quantity;
use serde::Deserialize;
use serde_json::json;

use crate::holdings::refuse;
use crate::{rest, PaperBroker};

pub fn routes(broker: Arc<PaperBroker>) -> Router<Arc<PaperBroker>> {
    Router::new()
        .route("/paper/account", post(change))
        .route_layer(middleware::from_fn_with_state(broker, rest::guard))
}

/// `POST /paper/account`. The equity as a JSON string or number, read exactly; `null`
/// (given, not left out) clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    account_id: Option<String>,
    #[serde(default, deserialize_with = "given")]
    equity: Option<Option<Quantity>>,
}

/// Tells `"equity": null` (given, clear it) from a body without it (refused).
fn given<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Quantity>>, D::Error> {
    Option::<Quantity>::deserialize(d).map(Some)
}

async fn change(State(b): State<Arc<PaperBroker>>, body: Bytes) -> Response {
    let c: Change = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
    };
    if let Some(a) = c.account_id.as_deref().filter(|a| *a != b.account) {
        return refuse(
            StatusCode::NOT_FOUND,
            "unknown_account",
            format!("account `{a}` is not this key pair's (`{}`)", b.account),
        );
    }
    let Some(equity) = c.equity else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "equity is required (a decimal, or null for cash plus positions)",
        );
    };
    *b.equity.lock().unwrap_or_else(|p| p.into_inner()) = equity;
    tracing::info!(account = b.account, equity = ?equity.map(|e| e.to_string()), "equity changed outside closeflow");
    Json(json!({"account_id": b.account, "equity": equity.map(|e| e.to_string())})).into_response()
}
