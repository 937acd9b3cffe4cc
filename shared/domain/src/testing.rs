//! Test builders, in one place for every suite (the domain's own unit tests, the store
//! contract, the scenario and chaos suites): plain defaults and one knob per call.
//! Compiled for this crate's tests and, through the `testing` feature, for other crates'.

use chrono::TimeZone;

use crate::{
    Access, AccountId, AssetType, ClientOrderId, CloseCommand, CloseRequestId, Fingerprint, IdempotencyKey,
    OrderStatus, OrderUpdate, Position, PositionAggregate, PositionId, PositionStatus, Quantity, RegisterPosition,
    Timestamp,
};

/// A fixed start time: suites move it with an injected clock, never by sleeping.
pub fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2026, 1, 2, 14, 30, 0).unwrap()
}

pub fn qty(text: &str) -> Quantity {
    Quantity::parse(text).expect("decimal literal")
}

pub fn price(text: &str) -> crate::Price {
    crate::Price::parse(text)
        .expect("decimal literal")
        .expect("a price is not negative")
}

pub fn pid(id: &str) -> PositionId {
    PositionId::parse(id).expect("position id")
}

/// A stored equity position on `acct-1` (negative quantity: short), version 1.
pub fn position(id: &str, quantity: &str, status: PositionStatus) -> Position {
    Position {
        id: pid(id),
        account_id: AccountId::parse("acct-1").expect("account"),
        symbol: "AAPL".into(),
        asset_type: AssetType::Equity,
        quantity: qty(quantity),
        avg_entry_price: None,
        strategy_id: None,
        status,
        active_close_request_id: None,
        closed_at: None,
        created_at: t0(),
        updated_at: t0(),
        version: 1,
        source: None,
        sync: None,
        multiplier: None,
        realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
    }
}

/// The aggregate of [`position`], with no close request yet.
pub fn aggregate(id: &str, quantity: &str, status: PositionStatus) -> PositionAggregate {
    PositionAggregate::new(position(id, quantity, status))
}

/// Registration of an equity position on `acct-1`, with a generous quota.
pub fn register(id: &str, quantity: &str, now: Timestamp) -> RegisterPosition {
    RegisterPosition {
        source: None,
        actor: "tester".into(),
        position_id: pid(id),
        account_id: AccountId::parse("acct-1").expect("account"),
        symbol: "AAPL".into(),
        asset_type: AssetType::Equity,
        quantity: qty(quantity),
        avg_entry_price: Some(price("100")),
        strategy_id: None,
        multiplier: None,
        access: Access::All,
        max_live_positions: 10_000,
        now,
    }
}

/// A close of `id` under `key` with an empty body; the new id is derived from `key`, so
/// two commands with the same key mint the same close request id.
pub fn close(id: &str, key: &str, now: Timestamp) -> CloseCommand {
    let position = pid(id);
    // FNV-1a over the key, twice with different seeds: 16 bytes that differ per key.
    let fnv = |seed: u64| {
        key.bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    random[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    CloseCommand {
        actor: "tester".into(),
        new_id: CloseRequestId::new(&position, random),
        position_id: position,
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        fingerprint: Fingerprint::of_body(&serde_json::json!({})),
        max_retries: 3,
        reason: None,
        cancel_open_orders: false,
        qty: None,
        options: crate::OrderOptions::MARKET,
        access: Access::All,
        now,
    }
}

/// A broker update for attempt `attempt` of close request `cr`: cumulative `filled`.
pub fn update(
    cr: CloseRequestId,
    attempt: u32,
    status: OrderStatus,
    filled: &str,
    seq: u64,
    at: Timestamp,
) -> OrderUpdate {
    OrderUpdate {
        client_order_id: ClientOrderId::new(cr, attempt),
        broker_order_id: Some(format!("brk-{cr}-{attempt}")),
        status,
        filled_qty: qty(filled),
        filled_avg_price: Some(price("101.25")),
        seq: Some(seq),
        execution_id: None,
        updated_at: at,
    }
}

/// A bulk close of every position of `acct-1` (the account of [`position`]) under `key`.
pub fn bulk_close(key: &str, now: Timestamp) -> crate::BulkClose {
    crate::BulkClose::new(crate::BulkCloseCommand {
        account_id: AccountId::parse("acct-1").expect("account"),
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        fingerprint: Fingerprint::of_body(&serde_json::json!({})),
        actor: "tester".into(),
        reason: Some("test".into()),
        filter: crate::BulkFilter::default(),
        cancel_open_orders: false,
        time_in_force: crate::TimeInForce::Day,
        max_retries: 3,
        now,
    })
}
