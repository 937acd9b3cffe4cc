//! Request size limits, answered with the API's JSON errors.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Largest request body read (413 `body_too_large` above). Every body closeflow takes is a
/// few hundred bytes; the limit bounds what an unauthenticated webhook caller can make the
/// service hash and parse.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest header block answered normally (431 `headers_too_large` above): names, values
/// and their separators. API Gateway allows 10 KB; a JWT fits well within this.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most header fields answered normally (431 `headers_too_large` above).
pub const MAX_HEADERS: usize = 100;

pub fn headers_too_large() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!("Request headers must stay within {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes"),
    )
}

/// Refuses oversized header blocks before any handler runs.
pub async fn limit_headers(req: Request, next: Next) -> Response {
    let headers = req.headers();
    // ": " and CRLF around every field, as on the wire.
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return headers_too_large().into_response();
    }
    next.run(req).await
}
