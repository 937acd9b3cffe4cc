//! Lambda entry point of the outbox relay: build the SQS client once, then relay batches.

use aws_lambda_events::event::dynamodb;
use closeflow_aws::lambda::relay_stream_event;
use closeflow_aws::SqsQueue;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let url = std::env::var("QUEUE_URL").map_err(|_| "QUEUE_URL must be set")?;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&shared), url);
    let queue = &queue;
    run(service_fn(move |ev: LambdaEvent<dynamodb::Event>| async move {
        Ok::<_, Error>(relay_stream_event(queue, ev.payload).await)
    }))
    .await
}
