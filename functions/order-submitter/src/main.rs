//! Lambda entry point of the order submitter: store and broker clients built once.

use aws_lambda_events::event::sqs::SqsEvent;
use closeflow_aws::lambda::submit_sqs_event;
use closeflow_aws::{EventBridgeSink, SqsQueue};
use closeflow_pipeline::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    // Bulk close jobs put their next step on the same queue.
    let queue = SqsQueue::new(
        aws_sdk_sqs::Client::new(&closeflow_root::aws().await),
        closeflow_root::required("QUEUE_URL")?,
    );
    // A liquidation tells the bus when it starts and ends.
    let bus = closeflow_root::required("EVENT_BUS_NAME")?;
    let events = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&closeflow_root::aws().await), bus);
    let (store, broker, clock, queue, events) = (&store, broker.as_ref(), &SystemClock, &queue, &events);
    run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(submit_sqs_event(store, broker, clock, queue, events, ev.payload).await)
    }))
    .await
}
