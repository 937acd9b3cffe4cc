//! The order pipeline around the store: outbox relay, submitter, broker port with the
//! simulated broker, and the broker webhook (signature check and update application).
//! Transport (Lambda events, SQS, in-process queues) is the caller's business.

pub mod broker;
pub mod bulk;
pub mod clock;
pub mod config;
pub mod drawdown;
pub mod driver;
pub mod events;
pub mod guard;
pub mod liquidation;
pub mod manage;
pub mod mleg;
pub mod queue;
pub mod reconciler;
pub mod relay;
pub mod sim_broker;
pub mod submitter;
pub mod sync;
pub mod trade_updates;
pub mod watch;
pub mod webhook;

pub use broker::{Broker, BrokerError, BrokerOrder};
pub use bulk::{start_bulk, BulkJob, JobError, JobStep, Started};
pub use clock::{Clock, ManualClock, RandomSource, SystemClock, SystemRandom};
pub use drawdown::{drawdown_once, DrawdownConfig, DrawdownReport};
pub use driver::{ChangeFeed, Delivery, Driver, FeedError, LogFeed, QueueConsumer};
pub use events::{EventError, EventSink, LogSink, RecordingSink};
pub use guard::{guard_bulk_close, start_guard};
pub use manage::{cancel_close, CancelOutcome};
pub use mleg::{lookup_order, submit_mleg};
pub use queue::{MemoryQueue, OrderQueue, QueueError, QueueMessage, Work};
pub use reconciler::{cleanup_once, reconcile_once, CleanupReport, ReconcileConfig, ReconcileReport};
pub use sim_broker::{SimBehaviour, SimScenarios, SimulatedBroker, WebhookSink};
pub use submitter::{submit, SubmitError, SubmitOutcome};
pub use sync::{sync_once, SyncConfig, SyncReport};
pub use trade_updates::{StoreUpdates, TradeUpdateHandler};
pub use watch::{watch_change, watch_order, MemoryWatch, WatchOutcome, WatchQueue, WatchRequest};
pub use webhook::{apply_broker_update, sign, verify_signature, UpdateResult, WebhookBody, WebhookError};
