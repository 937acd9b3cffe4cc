//! Lambda entry point of the cleanup job.

use closeflow_pipeline::config::reconcile_config_from_env;
use closeflow_pipeline::{cleanup_once, SystemClock};
use closeflow_store::DynamoStore;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

/// Items handled per invocation; the daily schedule and TTL take care of any rest.
const PAGE: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let retention = reconcile_config_from_env()?.policy.retention;
    let store = DynamoStore::new(DynamoStore::client_from_env(None).await, table).with_retention(retention);
    let store = &store;
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let r = cleanup_once(store, &SystemClock, retention, PAGE).await?;
        Ok::<_, Error>(json!({"items_read": r.items_read, "deleted": r.deleted, "trimmed": r.trimmed}))
    }))
    .await
}
