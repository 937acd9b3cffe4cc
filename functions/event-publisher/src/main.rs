//! Lambda entry point of the event publisher: every position change's audit entries and
//! status-change events and alerts, from the stream, so none is missed and none is invented.

use aws_lambda_events::event::dynamodb;
use closeflow_aws::lambda::publish_stream_event;
use closeflow_aws::EventBridgeSink;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let bus = std::env::var("EVENT_BUS_NAME").map_err(|_| "EVENT_BUS_NAME must be set")?;
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let retention = policy.jobs.policy.audit_retention;
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&closeflow_root::aws().await), bus);
    let (sink, store) = (&sink, &store);
    run(service_fn(move |ev: LambdaEvent<dynamodb::Event>| async move {
        Ok::<_, Error>(publish_stream_event(sink, store, retention, ev.payload).await)
    }))
    .await
}
