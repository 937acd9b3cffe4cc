//! axum's extractors, with their refusals turned into the API's JSON errors (axum answers
//! them as text/plain).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::error::ApiError;
use crate::limits::MAX_BODY_BYTES;

/// The single path parameter of a route, as text.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParam(p))
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_path",
                    "The path is not valid: it must be UTF-8 once percent-decoded",
                )
            })
    }
}

/// The raw request body, within [`MAX_BODY_BYTES`].
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(Body).map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("Request bodies are limited to {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::invalid_body("The request body could not be read")
            }
        })
    }
}

/// A query string's parameters, each at most once (a repeated one is refused rather than
/// one of its values picked): `invalid_query`.
pub(crate) fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, crate::error::ApiError> {
    let invalid = |m: String| crate::error::ApiError::bad_request("invalid_query", m);
    let mut seen = std::collections::BTreeSet::new();
    let mut pairs = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !seen.insert(k.to_string()) {
            return Err(invalid(format!("`{k}` is given twice")));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(pairs)
}
