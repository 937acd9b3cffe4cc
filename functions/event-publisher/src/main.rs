//! Lambda entry point of the event publisher: every position status change and alert,
//! from the stream, so none is missed and none is invented.

use aws_lambda_events::event::dynamodb;
use closeflow_aws::lambda::publish_stream_event;
use closeflow_aws::EventBridgeSink;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME must be set")?;
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&shared), bus);
    let sink = &sink;
    run(service_fn(move |ev: LambdaEvent<dynamodb::Event>| async move {
        Ok::<_, Error>(publish_stream_event(sink, ev.payload).await)
    }))
    .await
}
