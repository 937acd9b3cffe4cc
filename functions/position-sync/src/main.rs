//! Lambda entry point of position sync: clients and settings once, one bounded run per tick.

use closeflow_aws::EventBridgeSink;
use closeflow_pipeline::config::sync_config_from_env;
use closeflow_pipeline::{sync_once, SystemClock};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME must be set")?;
    let policy = closeflow_root::Policy::from_env()?;
    let cfg = sync_config_from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    // Holdings closeflow does not know have no position whose stream record could carry
    // their alert: they go to the bus directly.
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&closeflow_root::aws().await), bus);
    let (store, broker, sink, cfg) = (&store, broker.as_ref(), &sink, &cfg);
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let r = sync_once(store, broker, &SystemClock, sink, cfg).await?;
        Ok::<_, Error>(r.to_json())
    }))
    .await
}
