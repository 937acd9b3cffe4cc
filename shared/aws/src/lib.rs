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
