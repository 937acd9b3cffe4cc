//! Lambda entry point of the reconciler: clients and settings once, one bounded run per tick.

use closeflow_pipeline::{reconcile_once, SystemClock};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    let (store, broker, cfg) = (&store, broker.as_ref(), &policy.jobs);
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let r = reconcile_once(store, broker, &SystemClock, cfg).await?;
        Ok::<_, Error>(json!({
            "items_read": r.items_read, "changed": r.changed, "broker_queries": r.broker_queries,
            "deferred": r.deferred, "broker_errors": r.broker_errors
        }))
    }))
    .await
}
