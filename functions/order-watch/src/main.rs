//! Lambda entry point of the order watch: each message is one check of one recorded order
//! (a lookup applied like a webhook); the next check goes back on the same queue with the
//! next delay, until the order has ended.

use aws_lambda_events::event::sqs::SqsEvent;
use closeflow_aws::lambda::watch_sqs_event;
use closeflow_aws::SqsWatchQueue;
use closeflow_pipeline::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    let queue = SqsWatchQueue::new(
        aws_sdk_sqs::Client::new(&closeflow_root::aws().await),
        closeflow_root::required("WATCH_QUEUE_URL")?,
    );
    let (store, broker, queue, clock) = (&store, broker.as_ref(), &queue, &SystemClock);
    run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(watch_sqs_event(store, broker, clock, queue, ev.payload).await)
    }))
    .await
}
