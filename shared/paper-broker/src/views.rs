//! Alpaca's JSON shapes: the order object (quantities and prices as strings), positions,
//! the account and `trade_updates` messages.

use closeflow_domain::OrderStatus;
use closeflow_domain::{format_timestamp, Quantity, Side, Timestamp};
use closeflow_pipeline::sim_broker::engine::{SimOrder, TradeEvent};
use closeflow_pipeline::sim_broker::holdings::Holding;
use closeflow_pipeline::sim_broker::mleg::{MlegOrder, MlegState};
use serde_json::{json, Value};

fn ts(t: &Option<Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, |t| json!(format_timestamp(t)))
}

fn text(q: &Option<Quantity>) -> Value {
    q.as_ref().map_or(Value::Null, |q| json!(q.to_string()))
}

pub fn side(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// OCC option symbols (`AAPL240119C00150000`) are options; anything else an equity.
pub fn asset_class(symbol: &str) -> &'static str {
    let digits = symbol.chars().filter(char::is_ascii_digit).count();
    if symbol.len() > 15 && digits >= 14 {
        "us_option"
    } else {
        "us_equity"
    }
}

pub fn order(o: &SimOrder) -> Value {
    json!({
        "id": o.id,
        "client_order_id": o.client_order_id,
        "created_at": format_timestamp(&o.created_at),
        "updated_at": format_timestamp(&o.updated_at),
        "submitted_at": format_timestamp(&o.submitted_at),
        "filled_at": ts(&o.filled_at),
        "expired_at": Value::Null,
        "canceled_at": ts(&o.canceled_at),
        "failed_at": Value::Null,
        "replaced_at": ts(&o.replaced_at),
        "replaced_by": o.replaced_by,
        "replaces": o.replaces,
        "asset_class": asset_class(&o.symbol),
        "symbol": o.symbol,
        "notional": Value::Null,
        "qty": o.qty.to_string(),
        "filled_qty": o.filled_qty.to_string(),
        "filled_avg_price": text(&o.filled_avg_price),
        "order_class": "",
        "order_type": o.order_type,
        "type": o.order_type,
        "side": side(o.side),
        "position_intent": o.position_intent,
        "time_in_force": o.time_in_force,
        "limit_price": text(&o.limit_price),
        "stop_price": Value::Null,
        "status": o.status.as_str(),
        "extended_hours": false,
        "legs": Value::Null,
        "trail_percent": Value::Null,
        "trail_price": Value::Null,
        "hwm": Value::Null,
    })
}

/// A multi-leg order as Alpaca answers it: `order_class` `mleg`, `qty` and `filled_qty` in
/// strategy units, no symbol or side of its own, each leg an order with its own fills.
pub fn mleg_order(m: &MlegOrder, st: &MlegState) -> Value {
    let status = mleg_status(st.status);
    json!({
        "id": m.id,
        "client_order_id": m.client_order_id,
        "created_at": format_timestamp(&m.created_at),
        "updated_at": format_timestamp(&st.updated_at),
        "submitted_at": format_timestamp(&m.created_at),
        "asset_class": "us_option",
        "symbol": "",
        "qty": m.qty.to_string(),
        "filled_qty": st.filled_units.to_string(),
        "filled_avg_price": Value::Null,
        "order_class": "mleg",
        "order_type": if m.limit_price.is_some() { "limit" } else { "market" },
        "type": if m.limit_price.is_some() { "limit" } else { "market" },
        "side": "",
        "time_in_force": m.time_in_force,
        "limit_price": text(&m.limit_price),
        "status": status,
        "legs": st.legs.iter().zip(&m.legs).map(|(o, (_, ratio, _))| {
            let mut leg = order(o);
            leg["ratio_qty"] = json!(ratio.to_string());
            leg
        }).collect::<Vec<_>>(),
    })
}

/// `None` when a value leaves the decimal range (a position that large is a test's typo).
fn times(a: Quantity, b: Quantity) -> Option<Quantity> {
    a.value().checked_mul(b.value()).map(Quantity::new)
}

/// A holding as Alpaca lists it: valued at the symbol's (constant) simulated price, its
/// cost at the holding's own entry price, the difference its unrealized profit or loss.
/// Amounts beyond the decimal range are `null` (a holding that large is a test's typo).
pub fn position(symbol: &str, holding: &Holding, price: Quantity) -> Value {
    let qty = holding.qty;
    let market = times(qty, price);
    let cost = times(qty, holding.avg_entry_price);
    let pl = market.zip(cost).and_then(|(m, c)| m.checked_sub(c));
    // Alpaca's ratio of profit to cost, to its 9 places.
    let plpc = pl.zip(cost).and_then(|(pl, c)| {
        pl.value()
            .checked_div(c.value().abs())
            .map(|r| Quantity::new(r.round_dp(9)))
    });
    let text = |q: Option<Quantity>| q.map(|q| q.to_string());
    json!({
        "symbol": symbol,
        "exchange": "NASDAQ",
        "asset_class": asset_class(symbol),
        "qty": qty.to_string(),
        "qty_available": qty.to_string(),
        "side": if qty.is_negative() { "short" } else { "long" },
        "avg_entry_price": holding.avg_entry_price.to_string(),
        "current_price": price.to_string(),
        "lastday_price": price.to_string(),
        "market_value": text(market),
        "cost_basis": text(cost),
        "unrealized_pl": text(pl),
        "unrealized_plpc": text(plpc),
        "unrealized_intraday_pl": text(pl),
        "unrealized_intraday_plpc": text(plpc),
        "change_today": "0",
    })
}

/// One `trade_updates` message. Fills carry the execution and the position after it.
pub fn trade_update(e: &TradeEvent) -> Value {
    let mut data = json!({
        "event": e.event,
        "timestamp": format_timestamp(&e.timestamp),
        "order": order(&e.order),
    });
    if let Some(x) = &e.execution_id {
        data["execution_id"] = json!(x);
    }
    if let Some(p) = &e.price {
        data["price"] = json!(p.to_string());
    }
    if let Some(q) = &e.qty {
        data["qty"] = json!(q.to_string());
    }
    if let Some(q) = &e.position_qty {
        data["position_qty"] = json!(q.to_string());
    }
    json!({"stream": "trade_updates", "data": data})
}

/// A multi-leg order's `trade_updates` message for an event of one of its legs, or `None`
/// when the order itself went through no event: `new` once (with its first leg), `fill`
/// or `partial_fill` (by the whole order's state) with the leg's execution beside the
/// order, and the order's end once every leg has ended.
pub fn mleg_trade_update(e: &TradeEvent, m: &MlegOrder, st: &MlegState) -> Option<Value> {
    let first_leg = m
        .legs
        .first()
        .is_some_and(|(_, _, cid)| *cid == e.order.client_order_id);
    let event = match e.event {
        "new" if first_leg => "new",
        "fill" | "partial_fill" if st.status == OrderStatus::Filled => "fill",
        "fill" | "partial_fill" => "partial_fill",
        // A leg's end is the order's once every leg has ended (a leg canceled while another
        // filled leaves the order partly filled and ended: Alpaca says `canceled`).
        "canceled" | "expired" | "rejected" if st.status.is_terminal() && st.status != OrderStatus::Filled => {
            mleg_status(st.status)
        }
        _ => return None,
    };
    let mut data = json!({
        "event": event,
        "timestamp": format_timestamp(&e.timestamp),
        "order": mleg_order(m, st),
    });
    if let (Some(x), Some(p), Some(q)) = (&e.execution_id, &e.price, &e.qty) {
        data["legs"] = json!([{
            "execution_id": x, "qty": q.to_string(), "price": p.to_string(), "order_id": e.order.id,
            "symbol": e.order.symbol, "timestamp": format_timestamp(&e.timestamp),
        }]);
        if let Some(held) = &e.position_qty {
            data["position_qtys"] = json!({ e.order.symbol.clone(): held.to_string() });
        }
    }
    Some(json!({"stream": "trade_updates", "data": data}))
}

fn mleg_status(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Filled => "filled",
        OrderStatus::PartiallyFilled => "partially_filled",
        OrderStatus::Canceled => "canceled",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Expired => "expired",
        _ => "accepted",
    }
}

/// The account: starting cash plus what the fills moved; positions at their price. Equity
/// is `set_equity` when it was set from outside (the market moved), else cash plus
/// positions.
pub fn account(
    id: &str,
    created_at: &Timestamp,
    cash: Quantity,
    long: Quantity,
    short: Quantity,
    set_equity: Option<Quantity>,
) -> Value {
    let equity = set_equity.or_else(|| cash.checked_add(long).and_then(|e| e.checked_add(short)));
    let equity = equity.map(|e| e.to_string());
    json!({
        "id": id,
        "account_number": "PA0CLOSEFLOW",
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "cash": cash.to_string(),
        "portfolio_value": equity,
        "equity": equity,
        "last_equity": equity,
        "buying_power": equity,
        "regt_buying_power": equity,
        "daytrading_buying_power": "0",
        "non_marginable_buying_power": cash.to_string(),
        "long_market_value": long.to_string(),
        "short_market_value": short.to_string(),
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "sma": "0",
        "multiplier": "1",
        "daytrade_count": 0,
        "pattern_day_trader": false,
        "trading_blocked": false,
        "transfers_blocked": false,
        "account_blocked": false,
        "trade_suspended_by_user": false,
        "shorting_enabled": true,
        "created_at": format_timestamp(created_at),
    })
}

pub fn market_value(qty: Quantity, price: Quantity) -> Option<Quantity> {
    times(qty, price)
}
