//! Lambda entry point of guard events: store and queue clients built once; each event is
//! read as raw JSON so its decimals keep their exact text.

use closeflow_aws::lambda::guard_event;
use closeflow_aws::SqsQueue;
use closeflow_pipeline::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    // What an event starts runs as job steps on the order queue, like a bulk close.
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&closeflow_root::aws().await),
        closeflow_root::required("QUEUE_URL")?,
    );
    let max_retries = policy.api.max_retries;
    let (store, queue) = (&store, &queue);
    run(service_fn(move |ev: LambdaEvent<Box<RawValue>>| async move {
        guard_event(store, queue, &SystemClock, ev.payload.get().as_bytes(), max_retries)
            .await
            .map_err(Error::from)
    }))
    .await
}
