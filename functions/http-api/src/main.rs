//! Lambda entry point of the HTTP API: build clients once, then serve the shared router.
//! API Gateway's JWT authorizer has verified the caller; its claims are handed to the
//! router as `JwtClaims` (the function then checks the `accounts` claim per position).

use std::sync::Arc;

use closeflow_api::auth::{Auth, JwtClaims};
use closeflow_api::{router, AppState};
use closeflow_store::DynamoStore;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

fn with_claims(mut req: Request) -> Request {
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

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .without_time()
        .init();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let claim = std::env::var("ACCOUNTS_CLAIM").unwrap_or_else(|_| "accounts".into());
    let client = DynamoStore::client_from_env(None).await;
    let mut state = AppState::new(Arc::new(DynamoStore::new(client, table)));
    state.auth = Auth::Jwt { claim };
    let app = router(state);
    lambda_http::run(tower::ServiceBuilder::new().map_request(with_claims).service(app)).await
}
