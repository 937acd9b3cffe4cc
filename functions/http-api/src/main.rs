//! Lambda entry point of the HTTP API: build clients once, then serve the shared router.

use std::sync::Arc;

use closeflow_api::{router, AppState};
use closeflow_store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .without_time()
        .init();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let client = DynamoStore::client_from_env(None).await;
    let app = router(AppState::new(Arc::new(DynamoStore::new(client, table))));
    lambda_http::run(app).await
}
