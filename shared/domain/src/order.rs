//! Broker orders and the merge rules for their updates (seed 000 §6): idempotent and
//! monotonic, so duplicated and out-of-order broker messages converge on one state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{CloseRequestId, IdError};
use crate::quantity::Quantity;
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    New,
    Accepted,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::New,
        OrderStatus::Accepted,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Rejected,
        OrderStatus::Expired,
    ];

    /// Progress order: a status only moves to a higher rank. `filled` is above the other
    /// terminal statuses because a fill reported after a cancel is real (brokers send it).
    pub fn rank(&self) -> u8 {
        match self {
            OrderStatus::New => 0,
            OrderStatus::Accepted => 1,
            OrderStatus::PartiallyFilled => 2,
            OrderStatus::Canceled | OrderStatus::Rejected | OrderStatus::Expired => 3,
            OrderStatus::Filled => 4,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.rank() >= 3
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::New => "new",
            OrderStatus::Accepted => "accepted",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{close_request_id}-{attempt}`: deterministic, so the broker itself refuses a second
/// order for the same attempt. At most 48 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientOrderId {
    pub close_request_id: CloseRequestId,
    pub attempt: u32,
}

impl ClientOrderId {
    pub fn new(close_request_id: CloseRequestId, attempt: u32) -> Self {
        ClientOrderId {
            close_request_id,
            attempt,
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::InvalidCloseRequestId(s.to_string());
        // The id itself contains '-': split at the last one.
        let (id, attempt) = s.rsplit_once('-').ok_or_else(bad)?;
        let attempt: u32 = attempt.parse().map_err(|_| bad())?;
        if attempt == 0 || attempt.to_string().len() != s.len() - id.len() - 1 {
            return Err(bad());
        }
        Ok(ClientOrderId::new(CloseRequestId::parse(id)?, attempt))
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.close_request_id, self.attempt)
    }
}

/// How many recent execution ids an order remembers. Dedupe by execution id only saves
/// writes: `filled_qty` is cumulative, so a replayed execution can never double-count.
pub const EXECUTION_IDS_KEPT: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub client_order_id: ClientOrderId,
    pub broker_order_id: Option<String>,
    pub qty: Quantity,
    pub status: OrderStatus,
    /// Cumulative, never decreases.
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<crate::Price>,
    pub last_seq: Option<u64>,
    pub execution_ids: Vec<String>,
    pub last_broker_update_at: Option<Timestamp>,
    /// Consecutive reconciler lookups that found no such order at the broker.
    pub not_found_count: u32,
}

impl Order {
    /// An order just placed for `qty`, before any broker report.
    pub fn new(client_order_id: ClientOrderId, qty: Quantity) -> Self {
        Order {
            client_order_id,
            broker_order_id: None,
            qty,
            status: OrderStatus::New,
            filled_qty: Quantity::ZERO,
            filled_avg_price: None,
            last_seq: None,
            execution_ids: vec![],
            last_broker_update_at: None,
            not_found_count: 0,
        }
    }

    pub fn attempt(&self) -> u32 {
        self.client_order_id.attempt
    }
}

/// One broker report about an order (webhook, broker lookup, or submit answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    pub client_order_id: ClientOrderId,
    pub broker_order_id: Option<String>,
    pub status: OrderStatus,
    /// Cumulative filled quantity as the broker reports it.
    pub filled_qty: Quantity,
    pub filled_avg_price: Option<crate::Price>,
    pub seq: Option<u64>,
    pub execution_id: Option<String>,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A `seq` not newer than the last one applied.
    StaleSeq,
    /// An execution id already applied.
    DuplicateExecution,
    /// Nothing in the update is news (duplicate, or older status and quantity).
    NoChange,
    /// The broker reports more filled than the order was for (or than the close request
    /// can add up exactly). Refused: a broker out of step with what was ordered needs a
    /// human, not a guess.
    OverFill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    Ignored(Ignored),
    Changed(Order),
}

/// Merges a broker update into an order. With `seq`, staleness is decided by `seq`;
/// without it, by execution id; in both cases status only moves up by rank and
/// `filled_qty` only grows, which makes the result independent of arrival order.
pub fn merge_order_update(order: &Order, u: &OrderUpdate) -> Merge {
    if u.filled_qty > order.qty {
        return Merge::Ignored(Ignored::OverFill);
    }
    match (u.seq, order.last_seq) {
        (Some(new), Some(last)) if new <= last => return Merge::Ignored(Ignored::StaleSeq),
        (None, _) => {
            if let Some(e) = &u.execution_id {
                if order.execution_ids.contains(e) {
                    return Merge::Ignored(Ignored::DuplicateExecution);
                }
            }
        }
        _ => {}
    }
    let mut next = order.clone();
    // The broker's id follows the order that carries the attempt now: after a
    // `replaced`, its replacement (where a cancel must go).
    if (u.broker_order_id.is_some() && !order.status.is_terminal()) || next.broker_order_id.is_none() {
        next.broker_order_id = u.broker_order_id.clone();
    }
    if u.filled_qty > next.filled_qty {
        next.filled_qty = u.filled_qty;
        next.filled_avg_price = u.filled_avg_price.or(next.filled_avg_price);
    } else if u.filled_qty == next.filled_qty && next.filled_avg_price.is_none() {
        next.filled_avg_price = u.filled_avg_price;
    }
    // Filled is final; otherwise only forward by rank. Equal-rank terminal statuses
    // (canceled vs expired) keep the first one reported.
    if next.status != OrderStatus::Filled && u.status.rank() > next.status.rank() {
        next.status = u.status;
    }
    next.last_seq = match (next.last_seq, u.seq) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if u.seq.is_none() {
        if let Some(e) = &u.execution_id {
            next.execution_ids.push(e.clone());
            if next.execution_ids.len() > EXECUTION_IDS_KEPT {
                next.execution_ids.remove(0);
            }
        }
    }
    let seen_news = next.status != order.status
        || next.filled_qty != order.filled_qty
        || next.filled_avg_price != order.filled_avg_price
        || next.broker_order_id != order.broker_order_id
        || next.last_seq != order.last_seq
        || next.execution_ids != order.execution_ids;
    if !seen_news {
        return Merge::Ignored(Ignored::NoChange);
    }
    next.last_broker_update_at = Some(match order.last_broker_update_at {
        Some(t) if t > u.updated_at => t,
        _ => u.updated_at,
    });
    Merge::Changed(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PositionId;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn coid() -> ClientOrderId {
        ClientOrderId::new(CloseRequestId::new(&PositionId::parse("p").unwrap(), [1; 16]), 1)
    }

    fn order(qty: i64) -> Order {
        Order::new(coid(), Quantity::from(qty))
    }

    fn update(status: OrderStatus, filled: i64, seq: Option<u64>, exec: Option<&str>) -> OrderUpdate {
        OrderUpdate {
            client_order_id: coid(),
            broker_order_id: Some("b-1".into()),
            status,
            filled_qty: Quantity::from(filled),
            filled_avg_price: (filled > 0).then(|| crate::Price::new(Quantity::from(100 + filled)).unwrap()),
            seq,
            execution_id: exec.map(str::to_string),
            updated_at: chrono::Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, seq.unwrap_or(0) as u32 % 60)
                .unwrap(),
        }
    }

    fn apply(o: &Order, u: &OrderUpdate) -> Order {
        match merge_order_update(o, u) {
            Merge::Changed(n) => n,
            Merge::Ignored(_) => o.clone(),
        }
    }

    #[test]
    fn client_order_ids_fit_48_chars_and_parse_back() {
        let c = ClientOrderId::new(coid().close_request_id, 12);
        let text = c.to_string();
        assert!(text.len() <= 48);
        assert_eq!(ClientOrderId::parse(&text).unwrap(), c);
        let max = ClientOrderId::new(coid().close_request_id, u32::MAX).to_string();
        assert!(max.len() <= 48, "{max}");
        assert!(ClientOrderId::parse("nope").is_err());
        assert!(ClientOrderId::parse(&format!("{}-0", coid().close_request_id)).is_err());
        assert!(ClientOrderId::parse(&format!("{}-01", coid().close_request_id)).is_err());
    }

    #[test]
    fn filled_is_final_and_never_regresses_to_canceled() {
        let o = apply(&order(10), &update(OrderStatus::Filled, 10, Some(5), None));
        let after = merge_order_update(&o, &update(OrderStatus::Canceled, 10, Some(6), None));
        match after {
            Merge::Changed(n) => assert_eq!((n.status, n.filled_qty), (OrderStatus::Filled, Quantity::from(10))),
            Merge::Ignored(r) => panic!("seq 6 is newer: {r:?}"),
        }
    }

    #[test]
    fn a_fill_reported_after_cancel_still_counts() {
        let o = apply(&order(10), &update(OrderStatus::Canceled, 3, Some(4), None));
        let o = apply(&o, &update(OrderStatus::Filled, 10, Some(5), None));
        assert_eq!((o.status, o.filled_qty), (OrderStatus::Filled, Quantity::from(10)));
    }

    #[test]
    fn stale_seq_and_repeated_execution_ids_are_ignored() {
        let o = apply(&order(10), &update(OrderStatus::PartiallyFilled, 4, Some(7), None));
        assert_eq!(
            merge_order_update(&o, &update(OrderStatus::PartiallyFilled, 6, Some(7), None)),
            Merge::Ignored(Ignored::StaleSeq)
        );
        let o = apply(&order(10), &update(OrderStatus::PartiallyFilled, 4, None, Some("x1")));
        assert_eq!(
            merge_order_update(&o, &update(OrderStatus::PartiallyFilled, 4, None, Some("x1"))),
            Merge::Ignored(Ignored::DuplicateExecution)
        );
    }

    #[test]
    fn a_fill_above_the_order_quantity_is_refused_whatever_else_it_says() {
        let o = apply(&order(10), &update(OrderStatus::PartiallyFilled, 4, Some(1), None));
        for u in [
            update(OrderStatus::Filled, 1000, Some(2), None),
            update(OrderStatus::PartiallyFilled, 11, None, Some("x9")),
            // Even a stale one: the anomaly is what matters.
            update(OrderStatus::Filled, 11, Some(1), None),
        ] {
            assert_eq!(merge_order_update(&o, &u), Merge::Ignored(Ignored::OverFill));
        }
        let exact = apply(&o, &update(OrderStatus::Filled, 10, Some(3), None));
        assert_eq!(exact.filled_qty, Quantity::from(10));
    }

    #[test]
    fn filled_qty_never_decreases() {
        let o = apply(&order(10), &update(OrderStatus::PartiallyFilled, 6, None, None));
        let o = apply(&o, &update(OrderStatus::PartiallyFilled, 2, None, None));
        assert_eq!(o.filled_qty, Quantity::from(6));
        assert_eq!(o.filled_avg_price, crate::Price::new(Quantity::from(106)));
    }

    /// A valid life of one order: new, accepted, increasing partial fills, then an end
    /// (filled; or canceled/expired with what filled so far, possibly followed by a late fill).
    fn valid_sequence() -> impl Strategy<Value = (i64, Vec<OrderUpdate>)> {
        (
            1i64..20,
            proptest::collection::vec(1i64..5, 0..5),
            0u8..4,
            any::<bool>(),
        )
            .prop_map(|(qty, steps, ending, with_seq)| {
                let mut out = Vec::new();
                let mut seq = 0u64;
                let mut push = |status, filled: i64, out: &mut Vec<OrderUpdate>| {
                    seq += 1;
                    let (s, e) = if with_seq {
                        (Some(seq), None)
                    } else {
                        (None, Some(format!("e{seq}")))
                    };
                    out.push(update(status, filled, s, e.as_deref()));
                };
                push(OrderStatus::New, 0, &mut out);
                push(OrderStatus::Accepted, 0, &mut out);
                let mut cum = 0;
                for s in steps {
                    if cum + s >= qty {
                        break;
                    }
                    cum += s;
                    push(OrderStatus::PartiallyFilled, cum, &mut out);
                }
                match ending {
                    0 => push(OrderStatus::Filled, qty, &mut out),
                    1 => push(OrderStatus::Canceled, cum, &mut out),
                    2 => push(OrderStatus::Expired, cum, &mut out),
                    _ => {
                        push(OrderStatus::Canceled, cum, &mut out);
                        push(OrderStatus::Filled, qty, &mut out);
                    }
                }
                (qty, out)
            })
    }

    proptest! {
        #[test]
        fn any_permutation_with_duplicates_converges_to_the_same_state(
            (qty, seq) in valid_sequence(),
            picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
            shuffle_seed in any::<u64>(),
        ) {
            let in_order = seq.iter().fold(order(qty), |o, u| apply(&o, u));
            let mut messy: Vec<OrderUpdate> = seq.clone();
            for p in &picks {
                messy.push(seq[p.index(seq.len())].clone());
            }
            // Deterministic Fisher-Yates from the seed.
            let mut state = shuffle_seed | 1;
            for i in (1..messy.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                messy.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let shuffled = messy.iter().fold(order(qty), |o, u| apply(&o, u));
            prop_assert_eq!(shuffled.status, in_order.status);
            prop_assert_eq!(shuffled.filled_qty, in_order.filled_qty);
            prop_assert_eq!(shuffled.filled_avg_price, in_order.filled_avg_price);
            prop_assert_eq!(shuffled.last_seq, in_order.last_seq);
            prop_assert_eq!(shuffled.broker_order_id, in_order.broker_order_id);
            let mut a = shuffled.execution_ids.clone(); a.sort();
            let mut b = in_order.execution_ids.clone(); b.sort();
            prop_assert_eq!(a, b);
        }
    }
}
