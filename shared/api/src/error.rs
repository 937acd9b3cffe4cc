//! One error type for the HTTP boundary: a stable `error` code, a safe message, and
//! optional extra fields. Causes of 500s are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use closeflow_domain::CloseRejection;
use closeflow_store::StoreError;
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after_ms: None,
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        ApiError::bad_request("invalid_body", message)
    }

    pub fn locked(retry_after_ms: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "position_locked",
            "Position is being processed, please retry",
        )
        .with("retry_after_ms", json!(retry_after_ms));
        e.retry_after_ms = Some(retry_after_ms);
        e
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error; nothing was changed by this request if it was refused",
        )
    }

    pub fn from_store(e: StoreError, retry_after_ms: u64) -> Self {
        match e {
            StoreError::Contention => ApiError::locked(retry_after_ms),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }

    pub fn from_rejection(r: CloseRejection) -> Self {
        match r {
            // Another account's position is answered like a missing one: ids cannot be probed.
            CloseRejection::Forbidden | CloseRejection::PositionNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "position_not_found", "Position not found")
            }
            CloseRejection::IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was already used on this position with a different request body",
            ),
            CloseRejection::AlreadyClosing {
                active_close_request_id,
            } => ApiError::new(
                StatusCode::CONFLICT,
                "position_already_closing",
                "Position is being closed by another request",
            )
            .with(
                "active_close_request_id",
                json!(active_close_request_id.map(|id| id.to_string())),
            ),
            CloseRejection::ZeroQuantity => {
                ApiError::bad_request("zero_quantity", "Position already has zero quantity")
            }
            CloseRejection::InvalidOptions(e) => ApiError::bad_request(e.code(), e.to_string()),
            CloseRejection::InvalidState(s) => {
                ApiError::bad_request("invalid_state", format!("Cannot close a position in state `{s}`"))
                    .with("position_status", json!(s.as_str()))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if let Some(ms) = self.retry_after_ms {
            // Retry-After is whole seconds; never advertise 0.
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
