//! Lambda entry point of the order submitter: store and broker clients built once.

use aws_lambda_events::event::sqs::SqsEvent;
use closeflow_aws::lambda::submit_sqs_event;
use closeflow_pipeline::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    let (store, broker, clock) = (&store, broker.as_ref(), &SystemClock);
    run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(submit_sqs_event(store, broker, clock, ev.payload).await)
    }))
    .await
}
