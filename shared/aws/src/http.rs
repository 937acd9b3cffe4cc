//! API Gateway (HTTP API v2) requests into the router's terms.

use closeflow_api::auth::JwtClaims;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// Hands the claims API Gateway's JWT authorizer verified to the router as [`JwtClaims`].
pub fn with_claims(mut req: Request) -> Request {
    let claims = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| jwt.claims.clone()),
        _ => None,
    };
    if let Some(c) = claims {
        req.extensions_mut().insert(JwtClaims(c));
    }
    req
}
