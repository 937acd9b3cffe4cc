//! Lambda entry point of the guards: store, broker, queue and bus clients built once. A
//! `GuardTriggered` event starts what it asks for; the schedule runs the drawdown guard.
//! Events are read as raw JSON so their decimals keep their exact text.

use closeflow_aws::lambda::guards_invocation;
use closeflow_aws::{EventBridgeSink, SqsQueue};
use closeflow_pipeline::config::drawdown_config_from_env;
use closeflow_pipeline::SystemClock;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;

#[tokio::main]
async fn main() -> Result<(), Error> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = closeflow_root::dynamo_store(&policy).await?;
    let broker = closeflow_root::aws_broker()?;
    let aws = closeflow_root::aws().await;
    // What an event starts runs as job steps on the order queue, like a bulk close.
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), closeflow_root::required("QUEUE_URL")?);
    let events = EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&aws),
        closeflow_root::required("EVENT_BUS_NAME")?,
    );
    let max_retries = policy.api.max_retries;
    let drawdown = drawdown_config_from_env(max_retries)?;
    let (store, broker, queue, events, drawdown) = (&store, broker.as_ref(), &queue, &events, &drawdown);
    run(service_fn(move |ev: LambdaEvent<Box<RawValue>>| async move {
        let raw = ev.payload.get().as_bytes();
        guards_invocation(store, broker, queue, &SystemClock, events, drawdown, raw, max_retries)
            .await
            .map_err(Error::from)
    }))
    .await
}
