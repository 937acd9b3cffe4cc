//! Lambda entry point of the broker webhook: the webhook router (API Gateway routes only
//! `POST /webhooks/broker` here), with the HMAC secret it must have.

use std::sync::Arc;

use closeflow_api::{webhook_router, AppState};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let mut state = AppState::new(Arc::new(closeflow_root::dynamo_store(&policy).await?));
    state.config = policy.api;
    state.webhook_secret = Arc::new(closeflow_root::webhook_secret()?);
    lambda_http::run(webhook_router(state)).await
}
