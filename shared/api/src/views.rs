//! JSON shapes of the API's answers. Quantities are decimal strings, times RFC 3339 (ms).
//! Typed, so the OpenAPI document's schemas are derived from the same structs that are
//! serialised (see `crate::openapi`).

use closeflow_domain::pnl::Pnl;
use closeflow_domain::{format_timestamp, CloseRequest, Order, Position, PositionAggregate, Price, Quantity};
use serde::Serialize;
use utoipa::ToSchema;

use crate::openapi::{CloseRequestStatusSchema, Decimal, OrderStatusSchema, PositionStatusSchema};

fn time(t: &Option<closeflow_domain::Timestamp>) -> Option<String> {
    t.as_ref().map(format_timestamp)
}

/// A realized PnL as the API shows it: the amount, or `null` and why.
pub fn pnl(p: Pnl) -> (Option<Quantity>, Option<&'static str>) {
    match p {
        Ok(d) => (Some(Quantity::new(d)), None),
        Err(e) => (None, Some(e.code())),
    }
}

/// A registered position.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Position)]
pub struct PositionView {
    pub position_id: String,
    pub account_id: String,
    pub symbol: String,
    #[schema(inline, value_type = crate::openapi::AssetTypeSchema)]
    pub asset_type: &'static str,
    /// Signed: > 0 long, < 0 short; `0` once the position is closed (what it held then is
    /// `closed_quantity`).
    #[schema(value_type = Decimal)]
    pub quantity: Quantity,
    /// What a closed position held when its last close completed (signed); `null` until
    /// the position is closed.
    #[schema(value_type = Option<Decimal>)]
    pub closed_quantity: Option<Quantity>,
    #[schema(value_type = Option<Decimal>)]
    pub avg_entry_price: Option<Price>,
    pub strategy_id: Option<String>,
    #[schema(inline, value_type = PositionStatusSchema)]
    pub status: &'static str,
    /// The close request in flight, while the position is `closing`.
    #[schema(format = Uuid)]
    pub active_close_request_id: Option<String>,
    #[schema(format = DateTime)]
    pub closed_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    // Plain comments on inlined enums: a doc comment there makes utoipa emit an `allOf` with
    // `type: object`, which no string value satisfies.
    // `api` (registered through PUT) or `broker` (adopted by position sync).
    #[schema(inline, value_type = crate::openapi::PositionSourceSchema)]
    pub source: &'static str,
    // Position sync's verdict: `unchecked` until sync has looked, then `in_sync`,
    // `missing_at_broker` (open here, not held at the broker) or `conflict`.
    #[schema(inline, value_type = crate::openapi::SyncStatusSchema)]
    pub sync_status: &'static str,
    /// When sync reached the current verdict (sync writes only when it changes).
    #[schema(format = DateTime)]
    pub last_synced_at: Option<String>,
    /// On a conflict: the quantity closeflow held when it was found, and the broker's
    /// quantity and average entry price (both values, as found).
    #[schema(value_type = Option<Decimal>)]
    pub sync_our_quantity: Option<Quantity>,
    #[schema(value_type = Option<Decimal>)]
    pub sync_broker_quantity: Option<Quantity>,
    #[schema(value_type = Option<Decimal>)]
    pub sync_broker_avg_entry_price: Option<Price>,
    /// Units of the underlying per unit of quantity: 100 per option contract and 1 per
    /// share unless the position was registered with its own.
    #[schema(value_type = Decimal)]
    pub multiplier: Quantity,
    /// What the position's closes realized, cumulative over partial closes: per fill
    /// `(exit - entry) x qty x multiplier` for a long, `(entry - exit) x ...` for a short.
    /// `null` when it cannot be known (`realized_pnl_unknown` says why): never a guess.
    #[schema(value_type = Option<Decimal>)]
    pub realized_pnl: Option<Quantity>,
    // Why `realized_pnl` is null: `entry_price_unknown` (registered without
    // avg_entry_price), `fill_price_unknown` (the broker gave no fill price) or
    // `out_of_range`.
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
}

pub fn position(agg: &PositionAggregate) -> PositionView {
    let p = &agg.position;
    let (realized_pnl, realized_pnl_unknown) = pnl(closeflow_domain::pnl::position_pnl(agg));
    PositionView {
        position_id: p.id.as_str().to_string(),
        account_id: p.account_id.as_str().to_string(),
        symbol: p.symbol.clone(),
        asset_type: p.asset_type.as_str(),
        // The store keeps the last quantity (it tells long from short for PnL); the
        // holding itself is gone once closed, as the broker's own positions confirm.
        quantity: if p.status == closeflow_domain::PositionStatus::Closed {
            Quantity::ZERO
        } else {
            p.quantity
        },
        closed_quantity: (p.status == closeflow_domain::PositionStatus::Closed).then_some(p.quantity),
        avg_entry_price: p.avg_entry_price,
        strategy_id: p.strategy_id.clone(),
        status: p.status.as_str(),
        active_close_request_id: p.active_close_request_id.map(|id| id.to_string()),
        closed_at: time(&p.closed_at),
        created_at: format_timestamp(&p.created_at),
        updated_at: format_timestamp(&p.updated_at),
        source: match p.source.as_deref() {
            Some(closeflow_domain::sync::SOURCE_BROKER) => "broker",
            _ => "api",
        },
        sync_status: p.sync.as_ref().map_or("unchecked", |m| m.status.as_str()),
        last_synced_at: p.sync.as_ref().map(|m| format_timestamp(&m.at)),
        sync_our_quantity: p.sync.as_ref().and_then(|m| m.our_qty),
        sync_broker_quantity: p.sync.as_ref().and_then(|m| m.broker_qty),
        sync_broker_avg_entry_price: p.sync.as_ref().and_then(|m| m.broker_price),
        multiplier: Quantity::new(closeflow_domain::pnl::multiplier(p)),
        realized_pnl,
        realized_pnl_unknown,
    }
}

pub fn poll_url(cr: &CloseRequest) -> String {
    format!("/close-requests/{}", cr.id)
}

/// Answer to POST /positions/{id}/close (201 create and 200 replay alike).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CloseAccepted)]
pub struct CloseAcceptedView {
    #[schema(format = Uuid)]
    pub close_request_id: String,
    pub position_id: String,
    #[schema(inline, value_type = PositionStatusSchema)]
    pub position_status: &'static str,
    #[schema(inline, value_type = CloseRequestStatusSchema)]
    pub close_request_status: &'static str,
    #[schema(value_type = Decimal)]
    pub target_qty: Quantity,
    #[schema(value_type = Decimal)]
    pub filled_qty: Quantity,
    pub orders: Vec<OrderView>,
    /// Closes part of the position (`target_qty` below its quantity).
    pub partial: bool,
    /// Where to poll the close request (`GET /close-requests/{close_request_id}`).
    pub poll_url: String,
    #[schema(minimum = 0)]
    pub poll_interval_ms: u64,
    /// `leaves_other_legs_open`: this leg hedges a short leg of its strategy that stays
    /// open (naked) once it closes. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline, value_type = Option<crate::openapi::CloseWarningSchema>)]
    pub warning: Option<&'static str>,
}

pub fn close_accepted(p: &Position, cr: &CloseRequest, list: &[Order], poll_interval_ms: u64) -> CloseAcceptedView {
    CloseAcceptedView {
        close_request_id: cr.id.to_string(),
        position_id: p.id.as_str().to_string(),
        position_status: p.status.as_str(),
        close_request_status: cr.status.as_str(),
        target_qty: cr.target_qty,
        filled_qty: cr.filled_qty,
        orders: orders(list),
        partial: cr.is_partial(),
        poll_url: poll_url(cr),
        poll_interval_ms,
        warning: None,
    }
}

/// One order placed at the broker for an attempt of a close request.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    /// `{close_request_id}-{attempt}`.
    pub client_order_id: String,
    pub broker_order_id: Option<String>,
    #[schema(minimum = 1)]
    pub attempt: u32,
    #[schema(value_type = Decimal)]
    pub qty: Quantity,
    #[schema(inline, value_type = OrderStatusSchema)]
    pub status: &'static str,
    #[schema(value_type = Decimal)]
    pub filled_qty: Quantity,
    #[schema(value_type = Option<Decimal>)]
    pub filled_avg_price: Option<Price>,
}

pub fn order(o: &Order) -> OrderView {
    OrderView {
        client_order_id: o.client_order_id.to_string(),
        broker_order_id: o.broker_order_id.clone(),
        attempt: o.attempt(),
        qty: o.qty,
        status: o.status.as_str(),
        filled_qty: o.filled_qty,
        filled_avg_price: o.filled_avg_price,
    }
}

fn orders(list: &[Order]) -> Vec<OrderView> {
    list.iter().map(order).collect()
}

/// A close request and its orders.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CloseRequest)]
pub struct CloseRequestView {
    #[schema(format = Uuid)]
    pub close_request_id: String,
    pub position_id: String,
    #[schema(inline, value_type = CloseRequestStatusSchema)]
    pub status: &'static str,
    #[schema(value_type = Decimal)]
    pub target_qty: Quantity,
    #[schema(value_type = Decimal)]
    pub filled_qty: Quantity,
    #[schema(value_type = Decimal)]
    pub remaining_qty: Quantity,
    #[schema(minimum = 0)]
    pub retry_count: u32,
    #[schema(minimum = 0)]
    pub max_retries: u32,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub submitted_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub failure_reason: Option<String>,
    pub orders: Vec<OrderView>,
    /// Set while the close is delayed by the broker (rate limit, broker unreachable,
    /// refused credentials): it stays in flight and goes on by itself once the broker
    /// answers again.
    pub waiting_on_broker: Option<WaitingOnBrokerView>,
    /// |quantity| of the position when the close began.
    #[schema(value_type = Decimal)]
    pub position_qty: Quantity,
    /// Closes part of the position (`target_qty` < `position_qty`): once completed, the
    /// position stays `open` with the rest.
    pub partial: bool,
    #[schema(inline, value_type = crate::openapi::OrderTypeSchema)]
    pub order_type: &'static str,
    /// The limit price of every attempt (limit closes); a leg of a multi-leg close carries the
    /// order's net price (negative: a credit).
    #[schema(value_type = Option<Decimal>)]
    pub limit_price: Option<Quantity>,
    #[schema(inline, value_type = crate::openapi::TimeInForceSchema)]
    pub time_in_force: &'static str,
    pub extended_hours: bool,
    /// When a cancel was asked; it counts once the broker confirms.
    #[schema(format = DateTime)]
    pub cancel_requested_at: Option<String>,
    /// Attempts started by `POST /close-requests/{id}/retry`.
    #[schema(minimum = 0)]
    pub manual_retries: u32,
    /// What this close's fills realized so far (see the position's `realized_pnl`);
    /// `null` when unknown, with `realized_pnl_unknown` saying why.
    #[schema(value_type = Option<Decimal>)]
    pub realized_pnl: Option<Quantity>,
    #[schema(inline, value_type = Option<crate::openapi::PnlUnknownSchema>)]
    pub realized_pnl_unknown: Option<&'static str>,
}

/// Why a close in flight waits on the broker.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WaitingOnBroker)]
pub struct WaitingOnBrokerView {
    /// `broker_rate_limited`, `broker_unreachable` or `broker_credentials_rejected`.
    pub kind: String,
    pub message: String,
    #[schema(format = DateTime)]
    pub since: String,
}

pub fn waiting(a: &closeflow_domain::Alert) -> WaitingOnBrokerView {
    WaitingOnBrokerView {
        kind: a.kind.as_str().to_string(),
        message: a.message.clone(),
        since: format_timestamp(&a.at),
    }
}

pub fn close_request(p: &Position, cr: &CloseRequest, list: &[Order]) -> CloseRequestView {
    let (realized_pnl, realized_pnl_unknown) = pnl(closeflow_domain::pnl::close_request_pnl(p, list));
    CloseRequestView {
        close_request_id: cr.id.to_string(),
        position_id: cr.position_id.as_str().to_string(),
        status: cr.status.as_str(),
        target_qty: cr.target_qty,
        filled_qty: cr.filled_qty,
        remaining_qty: cr.remaining_qty(),
        retry_count: cr.retry_count,
        max_retries: cr.max_retries,
        reason: cr.reason.clone(),
        created_at: format_timestamp(&cr.created_at),
        submitted_at: time(&cr.submitted_at),
        completed_at: time(&cr.completed_at),
        failure_reason: cr.failure_reason.clone(),
        orders: orders(list),
        waiting_on_broker: None,
        position_qty: cr.position_qty,
        partial: cr.is_partial(),
        order_type: cr.options.order_type.as_str(),
        limit_price: cr.options.signed_limit_price(),
        time_in_force: cr.options.time_in_force.as_str(),
        extended_hours: cr.options.extended_hours,
        cancel_requested_at: time(&cr.cancel_requested_at),
        manual_retries: cr.manual_retries,
        realized_pnl,
        realized_pnl_unknown,
    }
}

/// A page of positions, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PositionPage)]
pub struct PositionPageView {
    pub positions: Vec<PositionView>,
    /// Pass as `cursor` for the next page; `null`: this is the last page.
    pub next_cursor: Option<String>,
}

/// A strategy: its legs (the positions sharing its `strategy_id`) and its status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Strategy)]
pub struct StrategyView {
    pub strategy_id: String,
    #[schema(inline, value_type = crate::openapi::StrategyStatusSchema)]
    pub status: &'static str,
    pub legs: Vec<PositionView>,
    /// The strategy close still working on its legs (`GET /strategy-closes/{id}`), if any.
    #[schema(format = Uuid)]
    pub active_strategy_close_id: Option<String>,
}
