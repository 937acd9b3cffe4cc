//! Pure close-flow domain (functional core).
//!
//! Everything here is deterministic: no I/O, no async runtime, no clock reads and no
//! randomness. Time and random bytes come in as parameters; decisions come out as values
//! that the store adapters carry out.

pub mod access;
pub mod account;
pub mod audit;
pub mod bulk;
pub mod close;
pub mod drawdown;
pub mod events;
pub mod guard;
pub mod ids;
pub mod invariants;
pub mod json;
pub mod lifecycle;
pub mod manage;
pub mod mleg;
pub mod model;
pub mod options;
pub mod order;
pub mod pnl;
pub mod quantity;
pub mod reconcile;
pub mod register;
pub mod status;
pub mod strategy;
pub mod strategy_close;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transition;
pub mod trouble;

pub use access::Access;
pub use account::{
    adds_exposure, count_changes, decide_trading_state, AccountState, CountChange, IllegalTradingMove, TradingState,
    TradingStateEvent,
};
pub use audit::{audit_entries, AuditEntry};
pub use bulk::{
    bulk_view, latest_rows, row_view, BulkClose, BulkCloseCommand, BulkCloseId, BulkFilter, BulkPage, BulkRow,
    BulkStatus, BulkView, Liquidation, LiquidationPhase, Progress, RowOutcome, RowStatus, RowView, BULK_PAGE_SIZE,
    LIQUIDATION_ATTEMPTS, LIQUIDATION_PATIENCE,
};
pub use close::{decide_close, CloseCommand, CloseDecision, CloseRejection, Fingerprint};
pub use drawdown::{DrawdownDecision, DrawdownLevel, DrawdownPolicy, DrawdownPolicyError, DrawdownState};
pub use events::{events_for, DomainEvent};
pub use guard::{GuardAction, GuardEvent, GuardEventError, GuardKind, GuardScope};
pub use ids::{AccountId, CloseRequestId, IdError, IdempotencyKey, PositionId, RoutingKey};
pub use invariants::{check_invariants, Violation};
pub use lifecycle::{
    apply_order_update, intent_for, outbox_message, record_submission, total_filled, watch_delay, watch_for, Applied,
    OrderIntent, SubmitAnswer, SubmitRequest,
};
pub use manage::{
    decide_cancel, decide_mleg_retry, decide_retry, CancelDecision, LegsRetryDecision, ManageRejection, RetryCommand,
    RetryDecision,
};
pub use mleg::{
    leg_updates, mleg_client_order_id, mleg_intent, MlegError, MlegIntent, MlegLeg, MlegLegReport, MlegReport,
    PositionIntent,
};
pub use model::{AssetType, CloseRequest, IdempotencyRecord, PastClose, Position, PositionAggregate, Side};
pub use options::{close_qty, OptionsError, OrderOptions, OrderType, Price, TimeInForce};
pub use order::{merge_order_update, ClientOrderId, Ignored, Merge, Order, OrderStatus, OrderUpdate};
pub use quantity::{DecimalError, Quantity};
pub use reconcile::{
    after_lookup, attention_since, expire, expiry_at, reconcile, Alert, AlertKind, Due, Expire, Lookup, Policy,
};
pub use register::{decide_register, RegisterDecision, RegisterPosition, RegisterRejection};
pub use status::{CloseRequestStatus, PositionStatus, UnknownStatus};
pub use strategy::{strategy_status, StrategyStatus};
pub use strategy_close::{
    decide_strategy_close, leaves_short_leg_naked, strategy_close_status, strategy_close_view, StrategyCloseCommand,
    StrategyCloseDecision, StrategyCloseId, StrategyCloseLeg, StrategyCloseMode, StrategyCloseRejection,
    StrategyCloseStatus, StrategyCloseTag, StrategyCloseView,
};
pub use transition::{
    reachable, step, strategy_close_may_become, strategy_close_step_legal, CloseEvent, IllegalTransition, Pair,
    STRATEGY_CLOSE_MOVES,
};

/// Timestamps are kept at millisecond precision everywhere so that every store
/// round-trips them exactly.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Canonical text form of a timestamp (RFC 3339, UTC, milliseconds).
pub fn format_timestamp(t: &Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses the canonical text form produced by [`format_timestamp`].
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
