//! Lambda entry point of the cleanup job.

use closeflow_pipeline::{cleanup_once, SystemClock};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

/// Items handled per invocation; the daily schedule and TTL take care of any rest.
const PAGE: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let retention = policy.jobs.policy.retention;
    let store = &closeflow_root::dynamo_store(&policy).await?;
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let r = cleanup_once(store, &SystemClock, retention, PAGE).await?;
        Ok::<_, Error>(json!({"items_read": r.items_read, "deleted": r.deleted, "trimmed": r.trimmed}))
    }))
    .await
}
