//! Lambda entry point of the broker webhook: `POST /webhooks/broker` alone, with the HMAC
//! secret it must have.

use std::sync::Arc;

use closeflow_api::{webhook_router, AppState};
use closeflow_store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    closeflow_aws::init_lambda_logging();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let secret = std::env::var("WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or("WEBHOOK_SECRET must be set: unsigned broker updates are never accepted")?;
    let client = DynamoStore::client_from_env(None).await;
    let mut state = AppState::new(Arc::new(DynamoStore::new(client, table)));
    state.webhook_secret = Arc::new(secret.into_bytes());
    lambda_http::run(webhook_router(state)).await
}
