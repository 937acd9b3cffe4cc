//! AWS adapters of the pipeline ports: the SQS FIFO order queue, the DynamoDB Streams
//! change feed (for local stacks on an emulator), and decoding of the stream images that
//! Lambda delivers. Same decoding for both, so Lambda and local runs see identical changes.

pub mod eventbridge;
pub mod http;
pub mod images;
pub mod lambda;
pub mod sqs;
pub mod stream_feed;

pub use eventbridge::EventBridgeSink;
pub use images::{change_from_images, lambda_item, streams_item};
pub use sqs::SqsQueue;
pub use stream_feed::DynamoStreamFeed;

/// Structured JSON logs for Lambda: every line carries the fields of its spans (Lambda's
/// `requestId`, and the position, close request or client order id of the work at hand).
/// CloudWatch stamps the time. Level from `RUST_LOG` (default `info`).
pub fn init_lambda_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(true)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .init();
}
