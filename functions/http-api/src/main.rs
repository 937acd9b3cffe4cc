//! Lambda entry point of the HTTP API: build clients once, then serve the close API router
//! (no webhook route and no webhook secret: those belong to the broker-webhook function).
//! API Gateway's JWT authorizer has verified the caller; its claims are handed to the
//! router as `JwtClaims` (the function then checks the `accounts` claim per position).

use std::sync::Arc;

use closeflow_api::auth::Auth;
use closeflow_api::router;
use closeflow_aws::http::with_claims;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = Arc::new(closeflow_root::dynamo_store(&policy).await?);
    // Bulk closes are recorded here and fanned out by the order submitter from this queue.
    let queue = Arc::new(closeflow_aws::SqsQueue::new(
        aws_sdk_sqs::Client::new(&closeflow_root::aws().await),
        closeflow_root::required("QUEUE_URL")?,
    ));
    let mut state = closeflow_root::api_state(store, closeflow_root::aws_broker()?, queue, &policy.api);
    state.auth = Auth::Jwt {
        claim: closeflow_root::env("ACCOUNTS_CLAIM").unwrap_or_else(|| "accounts".into()),
    };
    let app = router(state);
    lambda_http::run(tower::ServiceBuilder::new().map_request(with_claims).service(app)).await
}
