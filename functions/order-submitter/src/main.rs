//! Lambda entry point of the order submitter: store and broker clients built once.

use aws_lambda_events::event::sqs::SqsEvent;
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_aws::lambda::submit_sqs_event;
use closeflow_pipeline::SystemClock;
use closeflow_store::DynamoStore;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME must be set")?;
    let store = DynamoStore::new(DynamoStore::client_from_env(None).await, table);
    match std::env::var("BROKER").as_deref() {
        Ok("alpaca") | Err(_) => {}
        Ok(other) => return Err(format!("BROKER `{other}` is not supported in AWS (alpaca)").into()),
    }
    let broker = AlpacaBroker::new(AlpacaConfig::from_env()?)?;
    let (store, broker, clock) = (&store, &broker, &SystemClock);
    run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(submit_sqs_event(store, broker, clock, ev.payload).await)
    }))
    .await
}
