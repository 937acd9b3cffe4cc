//! Lambda entry point of the outbox relay: build the SQS clients once, then relay batches
//! (order messages to the FIFO queue, first checks of recorded orders to the watch queue).

use aws_lambda_events::event::dynamodb;
use closeflow_aws::lambda::relay_stream_event;
use closeflow_aws::{SqsQueue, SqsWatchQueue};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let sqs = aws_sdk_sqs::Client::new(&closeflow_root::aws().await);
    let queue = SqsQueue::new(sqs.clone(), closeflow_root::required("QUEUE_URL")?);
    let watch = SqsWatchQueue::new(sqs, closeflow_root::required("WATCH_QUEUE_URL")?);
    let (queue, watch) = (&queue, &watch);
    run(service_fn(move |ev: LambdaEvent<dynamodb::Event>| async move {
        Ok::<_, Error>(relay_stream_event(queue, watch, ev.payload).await)
    }))
    .await
}
