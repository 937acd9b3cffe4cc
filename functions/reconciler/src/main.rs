//! Lambda entry point of the reconciler: clients and settings once, one bounded run per tick.

use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_pipeline::config::reconcile_config_from_env;
use closeflow_pipeline::{reconcile_once, SystemClock};
use closeflow_store::DynamoStore;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let cfg = reconcile_config_from_env()?;
    let store = DynamoStore::new(DynamoStore::client_from_env(None).await, table);
    match std::env::var("BROKER").as_deref() {
        Ok("alpaca") | Err(_) => {}
        Ok(other) => return Err(format!("BROKER `{other}` is not supported in AWS (alpaca)").into()),
    }
    let broker = AlpacaBroker::new(AlpacaConfig::from_env()?)?;
    let (store, broker, cfg) = (&store, &broker, &cfg);
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let r = reconcile_once(store, broker, &SystemClock, cfg).await?;
        Ok::<_, Error>(json!({
            "items_read": r.items_read, "changed": r.changed, "broker_queries": r.broker_queries,
            "deferred": r.deferred, "broker_errors": r.broker_errors
        }))
    }))
    .await
}
