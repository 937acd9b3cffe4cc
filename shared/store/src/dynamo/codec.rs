//! Item <-> domain mapping for the single-table design (README "Table design").
//!
//! Position item: `pk = P#{routing key}`, `sk = POSITION#{position id}`. The latest close
//! request lives on the same item as `cr_*` attributes and the idempotency keys as the map
//! `idem`, so opening a close is one `UpdateItem`.

use closeflow_domain::pnl::PnlUnknown;
use closeflow_domain::sync::{SyncMark, SyncStatus};
use closeflow_domain::{AccountState, TradingState};
use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use closeflow_domain::{
    format_timestamp, parse_timestamp, AccountId, AssetType, ClientOrderId, CloseRequest, CloseRequestId,
    CloseRequestStatus, Fingerprint, IdempotencyKey, IdempotencyRecord, Order, OrderOptions, OrderStatus, OrderType,
    PastClose, Position, PositionAggregate, PositionId, PositionStatus, Price, Quantity, RoutingKey, StrategyCloseId,
    StrategyCloseMode, StrategyCloseTag, TimeInForce, Timestamp,
};

use crate::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
/// The sort key of a position item (one position per routing key).
pub const POSITION_SK: &str = "POSITION";

pub fn partition_key(routing: RoutingKey) -> String {
    format!("P#{}", routing.to_hex())
}

pub fn position_key(id: &PositionId) -> (AttributeValue, AttributeValue) {
    routed_key(RoutingKey::of(id))
}

/// The key of the position item a routing key (e.g. from a close request id) points at.
pub fn routed_key(routing: RoutingKey) -> (AttributeValue, AttributeValue) {
    (
        AttributeValue::S(partition_key(routing)),
        AttributeValue::S(POSITION_SK.to_string()),
    )
}

/// The key of an account's item (its live-position count): `A#{account id}`.
pub fn account_key(account: &AccountId) -> (AttributeValue, AttributeValue) {
    (
        AttributeValue::S(format!("A#{}", account.as_str())),
        AttributeValue::S("ACCOUNT".to_string()),
    )
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn ts(t: &Timestamp) -> AttributeValue {
    AttributeValue::S(format_timestamp(t))
}

/// A freshly registered position: no close request, no idempotency keys (an empty map,
/// so a close can `SET idem.#key` without creating it).
pub fn new_position_item(p: &Position) -> Item {
    let (pk, sk) = position_key(&p.id);
    let mut item = Item::new();
    item.insert(PK.into(), pk);
    item.insert(SK.into(), sk);
    item.insert("entity".into(), s("position"));
    item.insert("idem".into(), AttributeValue::M(HashMap::new()));
    for (k, v) in position_attributes(p) {
        if let Some(v) = v {
            item.insert(k.into(), v);
        }
    }
    item
}

/// The position's own attributes; `None` means "absent" (REMOVE on update).
pub fn position_attributes(p: &Position) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("position_id", Some(s(p.id.as_str()))),
        ("account_id", Some(s(p.account_id.as_str()))),
        ("symbol", Some(s(&p.symbol))),
        ("asset_type", Some(s(p.asset_type.as_str()))),
        ("quantity", Some(n(p.quantity))),
        // |quantity|, kept so an update expression can copy it into cr_target_qty.
        ("close_qty", Some(n(p.quantity.abs()))),
        ("avg_entry_price", p.avg_entry_price.map(n)),
        ("strategy_id", p.strategy_id.as_deref().map(s)),
        ("status", Some(s(p.status.as_str()))),
        (
            "active_close_request_id",
            p.active_close_request_id.map(|id| s(id.to_string())),
        ),
        ("closed_at", p.closed_at.as_ref().map(ts)),
        ("created_at", Some(ts(&p.created_at))),
        // Sort key of the listing indexes (`by_account`, `by_strategy`): newest first by
        // creation, unique per position. Set once; status is no index key.
        ("created_sk", Some(s(created_sk(p)))),
        ("updated_at", Some(ts(&p.updated_at))),
        ("version", Some(n(p.version))),
        ("source", p.source.as_deref().map(s)),
        ("sync_status", p.sync.as_ref().map(|m| s(m.status.as_str()))),
        ("sync_broker_qty", p.sync.as_ref().and_then(|m| m.broker_qty).map(n)),
        ("sync_broker_price", p.sync.as_ref().and_then(|m| m.broker_price).map(n)),
        ("sync_our_qty", p.sync.as_ref().and_then(|m| m.our_qty).map(n)),
        ("synced_at", p.sync.as_ref().map(|m| ts(&m.at))),
        ("multiplier", p.multiplier.map(n)),
        ("realized_pnl_settled", p.realized_pnl_settled.ok().map(n)),
        (
            "realized_pnl_unknown",
            p.realized_pnl_settled.err().map(|e| s(e.code())),
        ),
    ]
}

/// `{created_at}#{position_id}`: orders a listing by creation time and names its position.
pub fn created_sk(p: &Position) -> String {
    format!("{}#{}", format_timestamp(&p.created_at), p.id.as_str())
}

/// An account's trading state from its account item (`None`, or no state written:
/// `active` at version 0).
pub fn account_state_from_item(account: &AccountId, item: Option<&Item>) -> Result<AccountState, StoreError> {
    let Some(item) = item.filter(|i| i.contains_key("trading_state")) else {
        return Ok(AccountState::new(account.clone()));
    };
    Ok(AccountState {
        account_id: account.clone(),
        trading_state: TradingState::parse(get_s(item, "trading_state")?)
            .ok_or_else(|| corrupt("bad trading_state", item))?,
        version: uint(item, "state_version")?,
        changed_at: opt_time(item, "state_changed_at")?,
        changed_by: opt_s(item, "state_changed_by").map(str::to_string),
        reason: opt_s(item, "state_reason").map(str::to_string),
    })
}

/// Index names of the listings: positions of an account, positions of a strategy.
pub const BY_ACCOUNT_INDEX: &str = "by_account";
pub const BY_STRATEGY_INDEX: &str = "by_strategy";

fn corrupt(what: &str, item: &Item) -> StoreError {
    let key = item.get(SK).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    StoreError::Corrupt(format!("{what} in item {key}"))
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(&format!("missing string `{name}`"), item))
}

fn opt_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn get_n<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .map(String::as_str)
        .ok_or_else(|| corrupt(&format!("missing number `{name}`"), item))
}

fn qty(item: &Item, name: &str) -> Result<Quantity, StoreError> {
    Quantity::parse(get_n(item, name)?).map_err(|_| corrupt(&format!("bad decimal `{name}`"), item))
}

fn opt_qty(item: &Item, name: &str) -> Result<Option<Quantity>, StoreError> {
    match item.get(name).and_then(|v| v.as_n().ok()) {
        None => Ok(None),
        Some(t) => Quantity::parse(t)
            .map(Some)
            .map_err(|_| corrupt(&format!("bad decimal `{name}`"), item)),
    }
}

fn opt_price(item: &Item, name: &str) -> Result<Option<Price>, StoreError> {
    opt_qty(item, name)?
        .map(|q| Price::new(q).ok_or_else(|| corrupt(&format!("negative price `{name}`"), item)))
        .transpose()
}

fn uint<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    get_n(item, name)?
        .parse()
        .map_err(|_| corrupt(&format!("bad integer `{name}`"), item))
}

fn time(item: &Item, name: &str) -> Result<Timestamp, StoreError> {
    parse_timestamp(get_s(item, name)?).ok_or_else(|| corrupt(&format!("bad timestamp `{name}`"), item))
}

fn opt_time(item: &Item, name: &str) -> Result<Option<Timestamp>, StoreError> {
    opt_s(item, name)
        .map(|t| parse_timestamp(t).ok_or_else(|| corrupt(&format!("bad timestamp `{name}`"), item)))
        .transpose()
}

fn cr_id(item: &Item, text: &str) -> Result<CloseRequestId, StoreError> {
    CloseRequestId::parse(text).map_err(|_| corrupt("bad close request id", item))
}

pub fn position_from_item(item: &Item) -> Result<Position, StoreError> {
    Ok(Position {
        id: PositionId::parse(get_s(item, "position_id")?).map_err(|_| corrupt("bad position_id", item))?,
        account_id: AccountId::parse(get_s(item, "account_id")?).map_err(|_| corrupt("bad account_id", item))?,
        symbol: get_s(item, "symbol")?.to_string(),
        asset_type: AssetType::parse(get_s(item, "asset_type")?).ok_or_else(|| corrupt("bad asset_type", item))?,
        quantity: qty(item, "quantity")?,
        avg_entry_price: opt_price(item, "avg_entry_price")?,
        strategy_id: opt_s(item, "strategy_id").map(str::to_string),
        status: PositionStatus::parse(get_s(item, "status")?).map_err(|e| corrupt(&e.to_string(), item))?,
        active_close_request_id: opt_s(item, "active_close_request_id")
            .map(|t| cr_id(item, t))
            .transpose()?,
        closed_at: opt_time(item, "closed_at")?,
        created_at: time(item, "created_at")?,
        updated_at: time(item, "updated_at")?,
        version: uint(item, "version")?,
        source: opt_s(item, "source").map(str::to_string),
        sync: match opt_s(item, "sync_status") {
            None => None,
            Some(status) => Some(SyncMark {
                status: SyncStatus::parse(status).ok_or_else(|| corrupt("bad sync_status", item))?,
                broker_qty: opt_qty(item, "sync_broker_qty")?,
                broker_price: opt_price(item, "sync_broker_price")?,
                our_qty: opt_qty(item, "sync_our_qty")?,
                at: time(item, "synced_at")?,
            }),
        },
        multiplier: opt_qty(item, "multiplier")?.map(|q| q.value()),
        realized_pnl_settled: match opt_s(item, "realized_pnl_unknown") {
            Some(code) => Err(PnlUnknown::parse(code).ok_or_else(|| corrupt("bad realized_pnl_unknown", item))?),
            None => Ok(opt_qty(item, "realized_pnl_settled")?.map_or(rust_decimal::Decimal::ZERO, |q| q.value())),
        },
    })
}

/// The latest close request stored as `cr_*` attributes on the position item.
pub fn latest_close_request_from_item(item: &Item, position: &PositionId) -> Result<Option<CloseRequest>, StoreError> {
    let Some(id) = opt_s(item, "cr_id") else {
        return Ok(None);
    };
    Ok(Some(CloseRequest {
        id: cr_id(item, id)?,
        position_id: position.clone(),
        idempotency_key: IdempotencyKey::parse(get_s(item, "cr_key")?).map_err(|_| corrupt("bad cr_key", item))?,
        status: CloseRequestStatus::parse(get_s(item, "cr_status")?).map_err(|e| corrupt(&e.to_string(), item))?,
        target_qty: qty(item, "cr_target_qty")?,
        // Derived from the orders (the fast partial-fill write updates only its order).
        filled_qty: Quantity::ZERO,
        retry_count: uint(item, "cr_retry_count")?,
        redrives: match item.get("cr_redrives") {
            Some(_) => uint(item, "cr_redrives")?,
            None => 0,
        },
        max_retries: uint(item, "cr_max_retries")?,
        reason: opt_s(item, "cr_reason").map(str::to_string),
        cancel_open_orders: matches!(item.get("cr_cancel_open_orders"), Some(AttributeValue::Bool(true))),
        failure_reason: opt_s(item, "cr_failure_reason").map(str::to_string),
        created_at: time(item, "cr_created_at")?,
        submitted_at: opt_time(item, "cr_submitted_at")?,
        completed_at: opt_time(item, "cr_completed_at")?,
        updated_at: time(item, "cr_updated_at")?,
        // Closes stored before partial closes existed were whole-position closes.
        position_qty: match opt_qty(item, "cr_position_qty")? {
            Some(q) => q,
            None => qty(item, "cr_target_qty")?,
        },
        options: order_options_from_item(item)?,
        cancel_requested_at: opt_time(item, "cr_cancel_requested_at")?,
        manual_retries: match item.get("cr_manual_retries") {
            Some(_) => uint(item, "cr_manual_retries")?,
            None => 0,
        },
        strategy_close: strategy_close_tag_from_item(item)?,
    }))
}

/// The strategy close a leg's close request belongs to: `cr_sc_id` and `cr_sc_mode`
/// (both absent for a single close).
fn strategy_close_tag_from_item(item: &Item) -> Result<Option<StrategyCloseTag>, StoreError> {
    let Some(id) = opt_s(item, "cr_sc_id") else {
        return Ok(None);
    };
    Ok(Some(StrategyCloseTag {
        id: StrategyCloseId::parse(id).map_err(|_| corrupt("bad cr_sc_id", item))?,
        mode: StrategyCloseMode::parse(get_s(item, "cr_sc_mode")?).ok_or_else(|| corrupt("bad cr_sc_mode", item))?,
    }))
}

/// A close's order options: `cr_order_type` (absent: market), `cr_limit_price` (signed: a
/// multi-leg order's net credit is negative), `cr_tif` (absent: day), `cr_ext_hours`
/// (absent: false).
fn order_options_from_item(item: &Item) -> Result<OrderOptions, StoreError> {
    let order_type = match opt_s(item, "cr_order_type") {
        None => OrderType::Market,
        Some(t) => OrderType::parse(t).ok_or_else(|| corrupt("bad cr_order_type", item))?,
    };
    let signed = opt_qty(item, "cr_limit_price")?;
    if signed.is_some_and(|p| p.is_zero()) {
        return Err(corrupt("bad cr_limit_price", item));
    }
    let time_in_force = match opt_s(item, "cr_tif") {
        None => TimeInForce::Day,
        Some(t) => TimeInForce::parse(t).ok_or_else(|| corrupt("bad cr_tif", item))?,
    };
    let extended_hours = matches!(item.get("cr_ext_hours"), Some(AttributeValue::Bool(true)));
    Ok(OrderOptions {
        order_type,
        time_in_force,
        extended_hours,
        ..OrderOptions::MARKET
    }
    .with_signed_limit_price(signed))
}

/// The latest close request as `cr_*` attributes; `None` values are absent.
pub fn close_request_attributes(cr: &CloseRequest) -> Vec<(&'static str, Option<AttributeValue>)> {
    vec![
        ("cr_id", Some(s(cr.id.to_string()))),
        ("cr_key", Some(s(cr.idempotency_key.as_str()))),
        ("cr_status", Some(s(cr.status.as_str()))),
        ("cr_target_qty", Some(n(cr.target_qty))),
        ("cr_retry_count", Some(n(cr.retry_count))),
        ("cr_redrives", (cr.redrives > 0).then(|| n(cr.redrives))),
        ("cr_max_retries", Some(n(cr.max_retries))),
        ("cr_reason", cr.reason.as_deref().map(s)),
        (
            "cr_cancel_open_orders",
            cr.cancel_open_orders.then_some(AttributeValue::Bool(true)),
        ),
        ("cr_failure_reason", cr.failure_reason.as_deref().map(s)),
        ("cr_created_at", Some(ts(&cr.created_at))),
        ("cr_submitted_at", cr.submitted_at.as_ref().map(ts)),
        ("cr_completed_at", cr.completed_at.as_ref().map(ts)),
        ("cr_updated_at", Some(ts(&cr.updated_at))),
        ("cr_position_qty", Some(n(cr.position_qty))),
        (
            "cr_order_type",
            (cr.options.order_type != OrderType::Market).then(|| s(cr.options.order_type.as_str())),
        ),
        ("cr_limit_price", cr.options.signed_limit_price().map(n)),
        (
            "cr_tif",
            (cr.options.time_in_force != TimeInForce::Day).then(|| s(cr.options.time_in_force.as_str())),
        ),
        (
            "cr_ext_hours",
            cr.options.extended_hours.then_some(AttributeValue::Bool(true)),
        ),
        ("cr_cancel_requested_at", cr.cancel_requested_at.as_ref().map(ts)),
        (
            "cr_manual_retries",
            (cr.manual_retries > 0).then(|| n(cr.manual_retries)),
        ),
        ("cr_sc_id", cr.strategy_close.map(|t| s(t.id.to_string()))),
        ("cr_sc_mode", cr.strategy_close.map(|t| s(t.mode.as_str()))),
    ]
}

/// The whole aggregate as one item (fixtures, and any full rewrite of a position).
/// Name of the sparse index of items the reconciler or the cleaner must look at.
pub const ATTENTION_INDEX: &str = "attention";

/// The index entry of an aggregate: on the reconciler's list while a close is in flight or
/// retryable (sorted by when its clock started), on the cleaner's once something in it can
/// expire (sorted by when that clock started), on neither otherwise (absent = not indexed).
pub fn index_entry(agg: &PositionAggregate) -> Option<(&'static str, Timestamp)> {
    crate::work_list_entry(agg).map(|(list, t)| (list.as_str(), t))
}

pub fn aggregate_item(agg: &PositionAggregate) -> Item {
    let mut item = new_position_item(&agg.position);
    if let Some((list, since)) = index_entry(agg) {
        item.insert("attn".into(), s(list));
        item.insert("attn_at".into(), ts(&since));
    }
    let idem = agg
        .idempotency
        .iter()
        .map(|(k, r)| (k.to_string(), idempotency_record(r)))
        .collect();
    item.insert("idem".into(), AttributeValue::M(idem));
    item.insert("orders".into(), orders_value(&agg.orders));
    if let Some(actor) = &agg.changed_by {
        item.insert("changed_by".into(), s(actor));
    }
    if let Some(a) = &agg.last_alert {
        item.insert("alert_kind".into(), s(a.kind.as_str()));
        item.insert("alert_message".into(), s(&a.message));
        item.insert("alert_at".into(), ts(&a.at));
    }
    if let Some(cr) = &agg.latest_close_request {
        insert_close_request(&mut item, cr);
    }
    if !agg.history.is_empty() {
        let past = agg
            .history
            .iter()
            .map(|p| {
                let mut m = Item::new();
                insert_close_request(&mut m, &p.close_request);
                m.insert("orders".into(), orders_value(&p.orders));
                AttributeValue::M(m)
            })
            .collect();
        item.insert("history".into(), AttributeValue::L(past));
    }
    item
}

fn insert_close_request(item: &mut Item, cr: &CloseRequest) {
    for (k, v) in close_request_attributes(cr) {
        if let Some(v) = v {
            item.insert(k.into(), v);
        }
    }
}

fn orders_value(orders: &[Order]) -> AttributeValue {
    AttributeValue::M(
        orders
            .iter()
            .map(|o| (o.client_order_id.to_string(), order_value(o)))
            .collect(),
    )
}

/// Past close requests: each a map of `cr_*` attributes and its `orders`, like the item.
fn history_from_item(item: &Item, position: &PositionId) -> Result<Vec<PastClose>, StoreError> {
    let Some(AttributeValue::L(list)) = item.get("history") else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|v| {
            let AttributeValue::M(m) = v else {
                return Err(corrupt("bad history entry", item));
            };
            let orders = orders_from_item(m)?;
            let mut close_request = latest_close_request_from_item(m, position)?
                .ok_or_else(|| corrupt("history entry without id", item))?;
            close_request.filled_qty = filled(&orders)?;
            Ok(PastClose { close_request, orders })
        })
        .collect()
}

/// What the orders filled together (derived, never stored twice).
fn filled(orders: &[Order]) -> Result<Quantity, StoreError> {
    closeflow_domain::total_filled(orders)
        .ok_or_else(|| StoreError::Corrupt("order fills do not add up within the decimal range".into()))
}

fn order_value(o: &Order) -> AttributeValue {
    let mut m = HashMap::from([
        ("qty".to_string(), n(o.qty)),
        ("status".to_string(), s(o.status.as_str())),
        ("filled_qty".to_string(), n(o.filled_qty)),
        (
            "execution_ids".to_string(),
            AttributeValue::L(o.execution_ids.iter().map(s).collect()),
        ),
    ]);
    if let Some(b) = &o.broker_order_id {
        m.insert("broker_order_id".into(), s(b));
    }
    if let Some(p) = o.filled_avg_price {
        m.insert("filled_avg_price".into(), n(p));
    }
    if let Some(q) = o.last_seq {
        m.insert("last_seq".into(), n(q));
    }
    if let Some(t) = &o.last_broker_update_at {
        m.insert("last_broker_update_at".into(), ts(t));
    }
    if o.not_found_count > 0 {
        m.insert("not_found_count".into(), n(o.not_found_count));
    }
    AttributeValue::M(m)
}

fn orders_from_item(item: &Item) -> Result<Vec<Order>, StoreError> {
    let Some(AttributeValue::M(map)) = item.get("orders") else {
        // Items written before orders existed have none.
        return Ok(Vec::new());
    };
    let mut orders = map
        .iter()
        .map(|(k, v)| {
            let AttributeValue::M(o) = v else {
                return Err(corrupt("bad order", item));
            };
            let mut execution_ids: Vec<String> = match o.get("execution_ids") {
                Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
                _ => Vec::new(),
            };
            // The fast partial-fill write appends without trimming; keep the domain's bound.
            let excess = execution_ids
                .len()
                .saturating_sub(closeflow_domain::order::EXECUTION_IDS_KEPT);
            execution_ids.drain(..excess);
            Ok(Order {
                client_order_id: ClientOrderId::parse(k).map_err(|_| corrupt("bad client order id", item))?,
                broker_order_id: opt_s(o, "broker_order_id").map(str::to_string),
                qty: qty(o, "qty")?,
                status: OrderStatus::parse(get_s(o, "status")?).ok_or_else(|| corrupt("bad order status", item))?,
                filled_qty: qty(o, "filled_qty")?,
                filled_avg_price: opt_price(o, "filled_avg_price")?,
                last_seq: match o.get("last_seq") {
                    Some(_) => Some(uint(o, "last_seq")?),
                    None => None,
                },
                execution_ids,
                last_broker_update_at: opt_time(o, "last_broker_update_at")?,
                not_found_count: match o.get("not_found_count") {
                    Some(_) => uint(o, "not_found_count")?,
                    None => 0,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    orders.sort_by_key(|o| o.attempt());
    Ok(orders)
}

pub fn idempotency_record(r: &IdempotencyRecord) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("cr".to_string(), s(r.close_request_id.to_string())),
        ("fp".to_string(), s(r.fingerprint.as_str())),
        ("at".to_string(), ts(&r.created_at)),
    ]))
}

fn idempotency_from_item(item: &Item) -> Result<BTreeMap<IdempotencyKey, IdempotencyRecord>, StoreError> {
    let Some(AttributeValue::M(map)) = item.get("idem") else {
        return Err(corrupt("missing map `idem`", item));
    };
    map.iter()
        .map(|(k, v)| {
            let AttributeValue::M(rec) = v else {
                return Err(corrupt("bad idempotency record", item));
            };
            let key = IdempotencyKey::parse(k).map_err(|_| corrupt("bad idempotency key", item))?;
            let record = IdempotencyRecord {
                close_request_id: cr_id(item, get_s(rec, "cr")?)?,
                fingerprint: Fingerprint::from_hex(get_s(rec, "fp")?),
                created_at: time(rec, "at")?,
            };
            Ok((key, record))
        })
        .collect()
}

pub fn aggregate_from_item(item: &Item) -> Result<PositionAggregate, StoreError> {
    let position = position_from_item(item)?;
    let mut latest = latest_close_request_from_item(item, &position.id)?;
    let orders = orders_from_item(item)?;
    if let Some(cr) = latest.as_mut() {
        cr.filled_qty = filled(&orders)?;
    }
    Ok(PositionAggregate {
        history: history_from_item(item, &position.id)?,
        idempotency: idempotency_from_item(item)?,
        latest_close_request: latest,
        orders,
        last_alert: match (opt_s(item, "alert_kind"), opt_s(item, "alert_message")) {
            (Some(kind), Some(message)) => Some(closeflow_domain::reconcile::Alert {
                kind: closeflow_domain::AlertKind::parse(kind).ok_or_else(|| corrupt("bad alert_kind", item))?,
                message: message.to_string(),
                at: time(item, "alert_at")?,
            }),
            _ => None,
        },
        changed_by: opt_s(item, "changed_by").map(str::to_string),
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use closeflow_domain::{decide_close, CloseCommand, CloseDecision};

    fn position() -> Position {
        let t = chrono::Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        Position {
            id: PositionId::parse("pos-1").unwrap(),
            account_id: AccountId::parse("acct-1").unwrap(),
            symbol: "AAPL240119C00150000".into(),
            asset_type: AssetType::Option,
            quantity: Quantity::parse("-2.5").unwrap(),
            avg_entry_price: Price::parse("1.23").unwrap(),
            strategy_id: Some("iron-condor-7".into()),
            status: PositionStatus::Open,
            active_close_request_id: None,
            closed_at: None,
            created_at: t,
            updated_at: t,
            version: 1,
            source: None,
            sync: None,
            multiplier: None,
            realized_pnl_settled: Ok(rust_decimal::Decimal::ZERO),
        }
    }

    #[test]
    fn a_position_item_round_trips_exactly() {
        let p = position();
        let item = new_position_item(&p);
        assert_eq!(item["close_qty"], n("2.5"));
        assert_eq!(item[PK], s(partition_key(RoutingKey::of(&p.id))));
        let agg = aggregate_from_item(&item).unwrap();
        assert_eq!(agg, PositionAggregate::new(p));
    }

    #[test]
    fn a_multiplier_and_settled_pnl_round_trip_known_or_unknown() {
        let mut p = position();
        p.multiplier = Some("10".parse().unwrap());
        p.realized_pnl_settled = Ok("-12.345".parse().unwrap());
        let agg = aggregate_from_item(&new_position_item(&p)).unwrap();
        assert_eq!(agg.position, p);
        p.realized_pnl_settled = Err(PnlUnknown::EntryPriceUnknown);
        let item = new_position_item(&p);
        assert_eq!(item["realized_pnl_unknown"], s("entry_price_unknown"));
        assert!(!item.contains_key("realized_pnl_settled"));
        assert_eq!(aggregate_from_item(&item).unwrap().position, p);
    }

    #[test]
    fn an_aggregate_with_a_close_request_round_trips() {
        let p = position();
        let agg = PositionAggregate::new(p.clone());
        let cmd = CloseCommand {
            actor: "tester".into(),
            position_id: p.id.clone(),
            idempotency_key: IdempotencyKey::parse("key with spaces.1").unwrap(),
            fingerprint: Fingerprint::of_body(&serde_json::json!({"reason": "drawdown"})),
            new_id: CloseRequestId::new(&p.id, [9; 16]),
            max_retries: 3,
            reason: Some("drawdown".into()),
            cancel_open_orders: true,
            qty: None,
            options: closeflow_domain::OrderOptions::MARKET,
            access: closeflow_domain::Access::All,
            now: p.created_at,
        };
        let CloseDecision::Create(next) = decide_close(Some(&agg), &cmd) else {
            panic!()
        };
        let item = aggregate_item(&next);
        assert_eq!(item["cr_target_qty"], n("2.5"));
        assert_eq!(aggregate_from_item(&item).unwrap(), *next);
        // A leg of a strategy close keeps its tag, latest and in history.
        let mut leg = (*next).clone();
        let tag = StrategyCloseTag {
            id: StrategyCloseId::new(&p.id, [3; 16]),
            mode: StrategyCloseMode::Legs,
        };
        leg.latest_close_request.as_mut().unwrap().strategy_close = Some(tag);
        leg.history.push(PastClose {
            close_request: leg.latest_close_request.clone().unwrap(),
            orders: Vec::new(),
        });
        let item = aggregate_item(&leg);
        assert_eq!(item["cr_sc_mode"], s("legs"));
        assert_eq!(aggregate_from_item(&item).unwrap(), leg);
    }

    #[test]
    fn a_damaged_item_is_reported_as_corrupt_not_guessed() {
        let mut item = new_position_item(&position());
        item.insert("status".into(), s("OPEN"));
        assert!(matches!(aggregate_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = new_position_item(&position());
        item.remove("quantity");
        assert!(matches!(aggregate_from_item(&item), Err(StoreError::Corrupt(_))));
    }
}
