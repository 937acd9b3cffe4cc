//! Position sync: closeflow's positions of one account against what the broker holds.
//! Pure: the scheduled job reads both sides, this decides, the job writes and alerts.
//!
//! Rules: a holding closeflow does not know is adopted (or only reported); an `open`
//! position the broker does not hold is flagged `missing_at_broker` (never deleted or
//! closed by sync); a quantity that differs at all, or an entry price off by more than the
//! tolerance, is a `conflict` with both values — an `open` position with nothing in flight
//! takes the broker's quantity, one with a close in flight is left alone; a position whose
//! close completed is confirmed by the broker holding none of it.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::model::Position;
use crate::quantity::Quantity;
use crate::status::PositionStatus;

/// One holding as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub symbol: String,
    /// Signed: > 0 long, < 0 short.
    pub qty: Quantity,
    pub avg_entry_price: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Register holdings closeflow does not know (`source: "broker"`); otherwise only alert.
    pub adopt: bool,
    /// Relative entry-price difference tolerated (0.01 = 1 %).
    pub price_tolerance: Decimal,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            adopt: true,
            price_tolerance: Decimal::new(1, 2),
        }
    }
}

/// What sync concluded about one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncFinding {
    /// Both sides agree.
    InSync { position_ids: Vec<crate::PositionId> },
    /// Held at the broker, unknown here: register it (when `adopt`), and say so.
    Unknown { holding: Holding, adopt: bool },
    /// Open here, nothing at the broker.
    MissingAtBroker { position_id: crate::PositionId },
    /// Both sides hold it, differently.
    Conflict {
        position_id: crate::PositionId,
        ours: Quantity,
        broker: Quantity,
        our_price: Option<Quantity>,
        broker_price: Option<Quantity>,
        /// Take the broker's quantity: the position is `open` with nothing in flight.
        take_broker_qty: bool,
    },
}

impl SyncFinding {
    /// Whether a human should hear of it.
    pub fn alerts(&self) -> bool {
        !matches!(self, SyncFinding::InSync { .. })
    }
}

/// Option symbols compare without padding spaces (OCC symbols arrive padded).
fn key(symbol: &str) -> String {
    symbol.chars().filter(|c| !c.is_whitespace()).collect()
}

fn price_off(ours: Option<Quantity>, broker: Option<Quantity>, tolerance: Decimal) -> bool {
    match (ours, broker) {
        (Some(o), Some(b)) if !o.is_zero() => {
            let diff = (o.value() - b.value()).abs();
            diff > (o.value().abs() * tolerance)
        }
        _ => false,
    }
}

/// Compares one account's positions (any status) with the broker's holdings of it.
pub fn decide_sync(ours: &[Position], broker: &[Holding], policy: &SyncPolicy) -> Vec<SyncFinding> {
    // Positions that still hold something here, by symbol; closed ones only confirm.
    let mut live: BTreeMap<String, Vec<&Position>> = BTreeMap::new();
    for p in ours.iter().filter(|p| p.status != PositionStatus::Closed) {
        live.entry(key(&p.symbol)).or_default().push(p);
    }
    let mut held: BTreeMap<String, &Holding> = BTreeMap::new();
    for h in broker.iter().filter(|h| !h.qty.is_zero()) {
        held.insert(key(&h.symbol), h);
    }
    let mut findings = Vec::new();
    for (symbol, positions) in &live {
        match held.get(symbol) {
            None => {
                for p in positions.iter().filter(|p| p.status == PositionStatus::Open) {
                    findings.push(SyncFinding::MissingAtBroker {
                        position_id: p.id.clone(),
                    });
                }
            }
            Some(h) => {
                let total = Quantity::checked_sum(positions.iter().map(|p| p.quantity));
                let single = (positions.len() == 1).then(|| positions[0]);
                let qty_differs = total != Some(h.qty);
                let price_differs =
                    single.is_some_and(|p| price_off(p.avg_entry_price, h.avg_entry_price, policy.price_tolerance));
                if !qty_differs && !price_differs {
                    findings.push(SyncFinding::InSync {
                        position_ids: positions.iter().map(|p| p.id.clone()).collect(),
                    });
                    continue;
                }
                // Several positions on one symbol: which one differs is not knowable, so
                // each is flagged and none is changed.
                for p in positions {
                    findings.push(SyncFinding::Conflict {
                        position_id: p.id.clone(),
                        ours: p.quantity,
                        broker: h.qty,
                        our_price: p.avg_entry_price,
                        broker_price: h.avg_entry_price,
                        take_broker_qty: single.is_some()
                            && qty_differs
                            && p.status == PositionStatus::Open
                            && p.active_close_request_id.is_none(),
                    });
                }
            }
        }
    }
    for (symbol, h) in &held {
        if !live.contains_key(symbol) {
            findings.push(SyncFinding::Unknown {
                holding: (*h).clone(),
                adopt: policy.adopt,
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{aggregate, qty};

    fn pos(id: &str, symbol: &str, quantity: &str, status: PositionStatus) -> Position {
        let mut p = aggregate(id, quantity, status).position;
        p.symbol = symbol.into();
        p.avg_entry_price = Some(qty("100"));
        p
    }

    fn holding(symbol: &str, q: &str, price: &str) -> Holding {
        Holding {
            symbol: symbol.into(),
            qty: qty(q),
            avg_entry_price: Some(qty(price)),
        }
    }

    #[test]
    fn each_sync_case() {
        let ours = [
            pos("same", "AAPL", "10", PositionStatus::Open),
            pos("gone", "MSFT", "5", PositionStatus::Open),
            pos("diff", "IBM", "7", PositionStatus::Open),
            pos("price", "NVDA", "2", PositionStatus::Open),
            pos("closed", "AMD", "4", PositionStatus::Closed),
            pos("opt", "AAPL  260116C00200000", "-1", PositionStatus::Open),
        ];
        let broker = [
            holding("AAPL", "10", "100.5"),
            holding("IBM", "9", "100"),
            holding("NVDA", "2", "102"),
            holding("TSLA", "-3", "250"),
            holding("AAPL260116C00200000", "-1", "100"),
        ];
        let f = decide_sync(&ours, &broker, &SyncPolicy::default());
        let pid = crate::testing::pid;
        assert!(
            f.contains(&SyncFinding::InSync {
                position_ids: vec![pid("same")]
            }),
            "0.5 % off is within 1 %"
        );
        assert!(
            f.contains(&SyncFinding::InSync {
                position_ids: vec![pid("opt")]
            }),
            "padded OCC symbol matches"
        );
        assert!(f.contains(&SyncFinding::MissingAtBroker {
            position_id: pid("gone")
        }));
        assert!(f.contains(&SyncFinding::Conflict {
            position_id: pid("diff"),
            ours: qty("7"),
            broker: qty("9"),
            our_price: Some(qty("100")),
            broker_price: Some(qty("100")),
            take_broker_qty: true,
        }));
        assert!(f.iter().any(|x| matches!(x, SyncFinding::Conflict { position_id, take_broker_qty: false, .. } if *position_id == pid("price"))), "2 % off: a conflict, quantity kept");
        assert!(f.contains(&SyncFinding::Unknown {
            holding: holding("TSLA", "-3", "250"),
            adopt: true
        }));
        // A closed position the broker no longer holds is confirmed: nothing said of it.
        assert!(!f.iter().any(|x| format!("{x:?}").contains("closed")));
        assert_eq!(f.len(), 6);
    }

    #[test]
    fn a_position_with_a_close_in_flight_is_flagged_but_not_changed() {
        let mut closing = pos("c", "IBM", "7", PositionStatus::Closing);
        closing.active_close_request_id = Some(crate::CloseRequestId::new(&closing.id, [1; 16]));
        let f = decide_sync(&[closing], &[holding("IBM", "3", "100")], &SyncPolicy::default());
        assert!(matches!(
            &f[..],
            [SyncFinding::Conflict {
                take_broker_qty: false,
                ..
            }]
        ));
        // Closing and gone at the broker: the close's own outcome settles it, not sync.
        let closing = pos("c", "IBM", "7", PositionStatus::Closing);
        assert!(decide_sync(&[closing], &[], &SyncPolicy::default()).is_empty());
    }

    #[test]
    fn without_adoption_an_unknown_holding_is_only_reported() {
        let policy = SyncPolicy {
            adopt: false,
            ..SyncPolicy::default()
        };
        let f = decide_sync(&[], &[holding("TSLA", "1", "1")], &policy);
        assert_eq!(
            f,
            vec![SyncFinding::Unknown {
                holding: holding("TSLA", "1", "1"),
                adopt: false
            }]
        );
        assert!(f[0].alerts());
    }
}
