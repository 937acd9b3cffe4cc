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

use crate::ids::{AccountId, PositionId};
use crate::model::{AssetType, Position, PositionAggregate};
use crate::quantity::Quantity;
use crate::register::RegisterPosition;
use crate::status::PositionStatus;
use crate::Timestamp;

/// The `source` of a position sync adopted from the broker's holdings.
pub const SOURCE_BROKER: &str = "broker";

/// Sync's verdict on one position, as `sync_status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    InSync,
    MissingAtBroker,
    Conflict,
}

impl SyncStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncStatus::InSync => "in_sync",
            SyncStatus::MissingAtBroker => "missing_at_broker",
            SyncStatus::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<SyncStatus> {
        match s {
            "in_sync" => Some(SyncStatus::InSync),
            "missing_at_broker" => Some(SyncStatus::MissingAtBroker),
            "conflict" => Some(SyncStatus::Conflict),
            _ => None,
        }
    }
}

/// What sync last concluded about a position, stored on it. Rewritten only when the
/// verdict or the broker's values change, so a run over an unchanged account writes nothing;
/// `at` is therefore when sync reached this verdict, not when it last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMark {
    pub status: SyncStatus,
    /// The broker's quantity and entry price, kept for a conflict (both values shown).
    pub broker_qty: Option<Quantity>,
    pub broker_price: Option<crate::Price>,
    /// The quantity closeflow held when the conflict was found (before taking the broker's).
    pub our_qty: Option<Quantity>,
    pub at: Timestamp,
}

impl SyncMark {
    fn same_verdict(&self, other: &SyncMark) -> bool {
        self.status == other.status && self.broker_qty == other.broker_qty && self.broker_price == other.broker_price
    }
}

/// One holding as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub symbol: String,
    /// Signed: > 0 long, < 0 short.
    pub qty: Quantity,
    pub avg_entry_price: Option<crate::Price>,
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
        our_price: Option<crate::Price>,
        broker_price: Option<crate::Price>,
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

fn price_off(ours: Option<crate::Price>, broker: Option<crate::Price>, tolerance: Decimal) -> bool {
    match (ours, broker) {
        (Some(o), Some(b)) if !o.is_zero() => {
            let diff = (o.value() - b.value()).abs();
            diff > (o.value() * tolerance)
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

/// The aggregate after sync's verdict on one of its positions, or `None` when nothing is to
/// be written. Re-decided on the aggregate as loaded for the write, so a close begun since
/// the listing keeps sync's hands off the quantity.
pub fn apply_finding(cur: &PositionAggregate, finding: &SyncFinding, now: Timestamp) -> Option<PositionAggregate> {
    let p = &cur.position;
    let (mark, take) = match finding {
        SyncFinding::InSync { position_ids } if position_ids.contains(&p.id) => (
            SyncMark {
                status: SyncStatus::InSync,
                broker_qty: None,
                broker_price: None,
                our_qty: None,
                at: now,
            },
            None,
        ),
        SyncFinding::MissingAtBroker { position_id } if *position_id == p.id => {
            // A close began since the listing: its own outcome settles the position.
            if p.status != PositionStatus::Open {
                return None;
            }
            (
                SyncMark {
                    status: SyncStatus::MissingAtBroker,
                    broker_qty: None,
                    broker_price: None,
                    our_qty: None,
                    at: now,
                },
                None,
            )
        }
        SyncFinding::Conflict {
            position_id,
            ours,
            broker,
            broker_price,
            take_broker_qty,
            ..
        } if *position_id == p.id => {
            let can_take = *take_broker_qty
                && p.status == PositionStatus::Open
                && p.active_close_request_id.is_none()
                && p.quantity == *ours;
            (
                SyncMark {
                    status: SyncStatus::Conflict,
                    broker_qty: Some(*broker),
                    broker_price: *broker_price,
                    our_qty: Some(*ours),
                    at: now,
                },
                can_take.then_some(*broker),
            )
        }
        _ => return None,
    };
    if take.is_none() && p.sync.as_ref().is_some_and(|m| m.same_verdict(&mark)) {
        return None;
    }
    let mut next = cur.clone();
    if let Some(q) = take {
        if q.is_negative() != next.position.quantity.is_negative() {
            // The latest close's PnL reads long or short from the position's sign: settle
            // it before the sign turns.
            next.retire_latest_close();
        }
        next.position.quantity = q;
        next.position.updated_at = now;
    }
    // The change feed turns a new alert into an `Alert` event: one per new verdict.
    let alert = match mark.status {
        SyncStatus::InSync => None,
        SyncStatus::MissingAtBroker => Some((
            crate::reconcile::AlertKind::SyncMissingAtBroker,
            format!("{} {} open here, not held at the broker", p.quantity, p.symbol),
        )),
        SyncStatus::Conflict => Some((
            crate::reconcile::AlertKind::SyncConflict,
            format!(
                "{}: closeflow {} @ {}, broker {} @ {}{}",
                p.symbol,
                mark.our_qty.map_or("?".into(), |q| q.to_string()),
                p.avg_entry_price.map_or("?".into(), |q| q.to_string()),
                mark.broker_qty.map_or("?".into(), |q| q.to_string()),
                mark.broker_price.map_or("?".into(), |q| q.to_string()),
                if take.is_some() {
                    "; took the broker's quantity"
                } else {
                    ""
                }
            ),
        )),
    };
    if let Some((kind, message)) = alert {
        next.last_alert = Some(crate::reconcile::Alert { kind, message, at: now });
    }
    next.position.sync = Some(mark);
    next.position.version += 1;
    Some(next)
}

/// The id an adopted holding is registered under: one per account and symbol, so two runs
/// adopting the same holding meet at the same position instead of making two. `attempt`
/// > 0 names a later one, for a symbol whose first adopted position was since closed.
pub fn adopted_id(account: &AccountId, symbol: &str, attempt: u32) -> Option<PositionId> {
    let symbol: String = key(symbol)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
        .collect();
    let id = if attempt == 0 {
        format!("sync:{}:{symbol}", account.as_str())
    } else {
        format!("sync:{}:{symbol}:{attempt}", account.as_str())
    };
    PositionId::parse(&id).ok()
}

/// The registration of a holding closeflow did not know (`source: "broker"`).
pub fn adoption(
    account: &AccountId,
    holding: &Holding,
    position_id: PositionId,
    actor: &str,
    now: Timestamp,
) -> RegisterPosition {
    // Option symbols (OCC: root, yymmdd, C/P, strike) are longer than any equity ticker.
    let asset_type = if key(&holding.symbol).len() > 12 {
        AssetType::Option
    } else {
        AssetType::Equity
    };
    RegisterPosition {
        position_id,
        account_id: account.clone(),
        symbol: key(&holding.symbol),
        asset_type,
        quantity: holding.qty,
        avg_entry_price: holding.avg_entry_price,
        strategy_id: None,
        multiplier: None,
        source: Some(SOURCE_BROKER.into()),
        actor: actor.into(),
        access: crate::Access::All,
        max_live_positions: u64::MAX,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{aggregate, qty};

    fn pos(id: &str, symbol: &str, quantity: &str, status: PositionStatus) -> Position {
        let mut p = aggregate(id, quantity, status).position;
        p.symbol = symbol.into();
        p.avg_entry_price = Some(crate::testing::price("100"));
        p
    }

    fn holding(symbol: &str, q: &str, price: &str) -> Holding {
        Holding {
            symbol: symbol.into(),
            qty: qty(q),
            avg_entry_price: Some(crate::testing::price(price)),
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
            our_price: Some(crate::testing::price("100")),
            broker_price: Some(crate::testing::price("100")),
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
    fn a_verdict_is_written_once_and_an_open_position_takes_the_brokers_quantity() {
        let agg = PositionAggregate::new(pos("diff", "IBM", "7", PositionStatus::Open));
        let now = crate::testing::t0();
        let f = decide_sync(
            std::slice::from_ref(&agg.position),
            &[holding("IBM", "9", "100")],
            &SyncPolicy::default(),
        );
        let next = apply_finding(&agg, &f[0], now).expect("taken");
        assert_eq!(next.position.quantity, qty("9"));
        assert_eq!(next.position.version, agg.position.version + 1);
        let mark = next.position.sync.clone().unwrap();
        assert_eq!(
            (mark.status, mark.our_qty, mark.broker_qty),
            (SyncStatus::Conflict, Some(qty("7")), Some(qty("9")))
        );
        // The next run agrees; once marked in sync, a further run writes nothing.
        let f = decide_sync(
            std::slice::from_ref(&next.position),
            &[holding("IBM", "9", "100")],
            &SyncPolicy::default(),
        );
        let agreed = apply_finding(&next, &f[0], now).expect("conflict cleared");
        assert_eq!(agreed.position.sync.as_ref().unwrap().status, SyncStatus::InSync);
        assert_eq!(apply_finding(&agreed, &f[0], now), None);
        // A sign turned by the broker settles the latest close's PnL first: read with
        // the new sign it would turn too.
        let mut sold = next.clone();
        sold.position.avg_entry_price = Some(crate::testing::price("100"));
        let crate::CloseDecision::Create(opened) =
            crate::decide_close(Some(&sold), &crate::testing::close("diff", "k-1", now))
        else {
            panic!("the close opens")
        };
        sold.latest_close_request = opened.latest_close_request;
        let mut order = crate::Order::new(
            crate::ClientOrderId::new(sold.latest_close_request.as_ref().unwrap().id, 1),
            qty("2"),
        );
        (order.filled_qty, order.filled_avg_price) = (qty("2"), Some(crate::testing::price("110")));
        sold.orders = vec![order];
        let f = decide_sync(
            std::slice::from_ref(&sold.position),
            &[holding("IBM", "-4", "100")],
            &SyncPolicy::default(),
        );
        let turned = apply_finding(&sold, &f[0], now).expect("taken");
        assert_eq!(turned.position.quantity, qty("-4"));
        assert_eq!(turned.position.realized_pnl_settled, Ok("20".parse().unwrap()));
        assert_eq!(crate::pnl::position_pnl(&turned), Ok("20".parse().unwrap()));
        // A missing position is flagged once, never closed.
        let gone = PositionAggregate::new(pos("gone", "MSFT", "5", PositionStatus::Open));
        let f = decide_sync(std::slice::from_ref(&gone.position), &[], &SyncPolicy::default());
        let flagged = apply_finding(&gone, &f[0], now).unwrap();
        assert_eq!(flagged.position.status, PositionStatus::Open);
        assert_eq!(flagged.position.quantity, qty("5"));
        assert_eq!(apply_finding(&flagged, &f[0], now), None);
    }

    #[test]
    fn adopted_ids_are_valid_and_stable() {
        let a = AccountId::parse("ACC1").unwrap();
        assert_eq!(
            adopted_id(&a, "AAPL  260116C00200000", 0).unwrap().as_str(),
            "sync:ACC1:AAPL260116C00200000"
        );
        assert_eq!(adopted_id(&a, "BRK/B", 2).unwrap().as_str(), "sync:ACC1:BRK_B:2");
        let r = adoption(
            &a,
            &holding("AAPL260116C00200000", "-1", "3"),
            adopted_id(&a, "X", 0).unwrap(),
            "sync",
            crate::testing::t0(),
        );
        assert_eq!((r.asset_type, r.source.as_deref()), (AssetType::Option, Some("broker")));
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
