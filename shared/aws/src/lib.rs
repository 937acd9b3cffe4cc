//! AWS adapters of the pipeline ports: the SQS FIFO order queue, the DynamoDB Streams
//! change feed (for local stacks on an emulator), and decoding of the stream images that
//! Lambda delivers. Same decoding for both, so Lambda and local runs see identical changes.

pub mod eventbridge;
pub mod http;
pub mod images;
pub mod lambda;
pub mod provision;
pub mod sqs;
pub mod stream_feed;
pub mod template;

pub use eventbridge::EventBridgeSink;
pub use images::{change_from_images, lambda_item, streams_item};
pub use sqs::{SqsQueue, SqsWatchQueue};
pub use stream_feed::DynamoStreamFeed;
pub use template::Template;

/// Structured JSON logs for Lambda: every line carries the fields of its spans (Lambda's
/// `requestId`, and the position, close request or client order id of the work at hand).
/// CloudWatch stamps the time. Level from `RUST_LOG` (default `info`).
pub fn init_lambda_logging() {
    use tracing_subscriber::util::SubscriberInitExt;
    lambda_log_subscriber(std::io::stdout).init();
}

/// The subscriber behind [`init_lambda_logging`], writing to `writer`.
pub fn lambda_log_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
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
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_log_line_is_json_carrying_the_request_and_position_ids_of_its_spans() {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = super::lambda_log_subscriber(move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "req-42");
            let _i = invoke.enter();
            let work = tracing::info_span!("close_position", position_id = "pos-7");
            let _w = work.enter();
            tracing::info!(close_request_id = "cr-1", "close request created");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let spans = line["spans"].to_string();
        assert!(spans.contains("req-42") && spans.contains("pos-7"), "{line}");
        assert_eq!(line["close_request_id"], "cr-1");
        assert_eq!(line["message"], "close request created");
    }
}
