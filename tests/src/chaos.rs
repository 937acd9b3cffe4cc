//! The deterministic chaos suite: a seeded simulation of the whole local pipeline on an
//! embedded backend — closes with duplicate keys, the relay and the submitter crashing
//! between any two steps, queue redelivery and reordering, a broker that times out, fails,
//! throttles, fills in pieces, cancels and reports late, duplicated and out of order,
//! reconciler runs at random times, the order watch's lookups, the trade_updates stream's
//! path and its reconnect backfills, partial and limit closes, strategy closes in `mleg`
//! and `legs` mode, traders canceling working
//! orders and retrying failed closes by hand, and (on SQLite) process restarts. Every choice comes
//! from the seed, so a failing seed replays exactly:
//! `CHAOS_SEED=<seed> cargo test -p closeflow-tests --test chaos -- --nocapture`.
//!
//! After each run: at most one order per (close request, attempt) and never two live
//! orders for one position at the broker (a multi-leg order's legs count per position,
//! and its name is refused a second time); what the broker filled equals what closeflow
//! recorded (no lost or invented fill); the invariants hold; every close is terminal, on
//! the attention list, or `close_failed` with an alert for a human.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeDelta;
use closeflow_api::{Clock, ManualClock};
use closeflow_domain::{
    check_invariants, Access, AccountId, ClientOrderId, Fingerprint, IdempotencyKey, MlegIntent, MlegLegReport,
    OrderIntent, OrderOptions, OrderStatus, OrderUpdate, PositionAggregate, PositionStatus, Price, Quantity,
    RetryCommand, RoutingKey,
};
use closeflow_pipeline::broker::{BrokerMlegOrder, BrokerPosition, OpenOrder};
use closeflow_pipeline::{
    cancel_close, reconcile_once, relay::relay, submit, watch_change, watch_order, Broker, BrokerError, BrokerOrder,
    MemoryQueue, MemoryWatch, OrderQueue, QueueConsumer, ReconcileConfig, StoreUpdates, TradeUpdateHandler,
};
use closeflow_store::{AggregateKey, ChangeLog, CloseStore, MemoryStore, SqliteStore, WorkList};

use crate::builders::{close, pid, qty, register};
use crate::{start_time, Backend};

/// Who the broker's updates come through, for the audit trail.
const BROKER: &str = closeflow_domain::audit::actor::BROKER_WEBHOOK;

/// SplitMix64: tiny, fast and fully determined by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One order as the broker holds it.
#[derive(Debug, Clone)]
struct HeldOrder {
    position: RoutingKey,
    qty: Quantity,
    filled: Quantity,
    status: OrderStatus,
    seq: u64,
    /// Times the broker replaced the order: the attempt lives on in replacement `n`.
    replacements: u32,
}

#[derive(Default)]
struct BrokerState {
    /// Symbols where an order that is not closeflow's holds the shares (`held`): every
    /// close order is refused until it is canceled.
    held: HashSet<String>,
    /// Close requests a trader asked to cancel: only their orders may closeflow cancel.
    cancels_asked: HashSet<closeflow_domain::CloseRequestId>,
    orders: BTreeMap<ClientOrderId, HeldOrder>,
    /// Multi-leg orders by name: each leg's symbol and the name its order is held under
    /// (the leg's own record, so its fills travel like any order's).
    mlegs: BTreeMap<ClientOrderId, Vec<(String, ClientOrderId)>>,
    /// Updates sent and not yet delivered (the broker's notifications in flight).
    outbox: Vec<OrderUpdate>,
    violations: Vec<String>,
    /// Fault injection is switched off for the final drain.
    calm: bool,
}

/// A configurable broker for the chaos suite: deduplicates by client order id like
/// Alpaca, and fails, times out (sometimes after placing the order) and throttles as the
/// seed says.
pub struct ChaosBroker {
    state: Mutex<BrokerState>,
    rng: Mutex<Rng>,
    clock: Arc<ManualClock>,
}

impl ChaosBroker {
    fn new(seed: u64, clock: Arc<ManualClock>) -> Self {
        ChaosBroker {
            state: Mutex::default(),
            rng: Mutex::new(Rng::new(seed.wrapping_mul(31).wrapping_add(7))),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn roll(&self, percent: u64) -> bool {
        !self.lock().calm && self.rng.lock().unwrap_or_else(|p| p.into_inner()).chance(percent)
    }

    fn view(&self, id: &ClientOrderId, o: &HeldOrder) -> BrokerOrder {
        BrokerOrder {
            broker_order_id: broker_id(id, o),
            client_order_id: id.clone(),
            status: o.status,
            filled_qty: o.filled,
            filled_avg_price: (!o.filled.is_zero()).then(|| crate::builders::price("100")),
            updated_at: self.clock.now(),
        }
    }

    /// Holds a new order for a position (a single order, or one leg of a multi-leg
    /// order), noting a second live order for the same position as a violation.
    fn hold(st: &mut BrokerState, id: &ClientOrderId, qty: Quantity) {
        let position = id.close_request_id.routing_key();
        if let Some((other, _)) = st
            .orders
            .iter()
            .find(|(_, o)| !o.status.is_terminal() && o.position == position)
        {
            let v = format!("{id} placed while {other} is still live");
            st.violations.push(v);
        }
        st.orders.insert(
            id.clone(),
            HeldOrder {
                position,
                qty,
                filled: Quantity::ZERO,
                status: OrderStatus::Accepted,
                seq: 0,
                replacements: 0,
            },
        );
    }

    /// Cancels one of closeflow's orders a trader asked to cancel (anything else is a
    /// violation), keeping what filled; its notification travels like any other.
    fn cancel_one(
        st: &mut BrokerState,
        broker_order_id: &str,
        now: closeflow_domain::Timestamp,
    ) -> Result<(), BrokerError> {
        let id = st
            .orders
            .keys()
            .find(|k| format!("chaos-{k}") == broker_order_id)
            .cloned()
            .ok_or(BrokerError::NotFound)?;
        if !st.cancels_asked.contains(&id.close_request_id) {
            st.violations
                .push(format!("closeflow canceled its own order {broker_order_id} unasked"));
        }
        let o = st.orders.get_mut(&id).expect("found");
        if o.status.is_terminal() {
            return Err(BrokerError::Rejected("order is not cancelable".into()));
        }
        // Canceled, keeping what filled; the notification travels like any other.
        o.status = OrderStatus::Canceled;
        o.seq += 1;
        let update = OrderUpdate {
            client_order_id: id.clone(),
            broker_order_id: Some(broker_order_id.to_string()),
            status: o.status,
            filled_qty: o.filled,
            filled_avg_price: (!o.filled.is_zero()).then(|| crate::builders::price("100")),
            seq: Some(o.seq),
            execution_id: Some(format!("chaos-{id}-{}", o.seq)),
            updated_at: now,
        };
        st.outbox.push(update);
        Ok(())
    }

    fn mleg_view(&self, st: &BrokerState, name: &ClientOrderId) -> Option<BrokerMlegOrder> {
        let legs = st.mlegs.get(name)?;
        let mut reports = Vec::with_capacity(legs.len());
        for (symbol, cid) in legs {
            let o = st.orders.get(cid)?;
            let v = self.view(cid, o);
            reports.push(MlegLegReport {
                symbol: symbol.clone(),
                broker_order_id: Some(v.broker_order_id),
                status: Some(v.status),
                filled_qty: v.filled_qty,
                filled_avg_price: v.filled_avg_price,
            });
        }
        // The order's own status: its legs' lowest (the order is done when all are).
        let status = reports
            .iter()
            .filter_map(|r| r.status)
            .min_by_key(|s| s.rank())
            .unwrap_or(OrderStatus::Accepted);
        Some(BrokerMlegOrder {
            order: BrokerOrder {
                broker_order_id: format!("chaos-mleg-{name}"),
                client_order_id: name.clone(),
                status,
                filled_qty: Quantity::ZERO,
                filled_avg_price: None,
                updated_at: self.clock.now(),
            },
            legs: reports,
        })
    }

    /// Moves one live order on: a partial fill, a full fill or a cancel, and notifies.
    fn progress(&self, rng: &mut Rng) {
        let now = self.clock.now();
        let mut st = self.lock();
        let live: Vec<ClientOrderId> = st
            .orders
            .iter()
            .filter(|(_, o)| !o.status.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[rng.below(live.len())].clone();
        if !st.calm && rng.chance(10) {
            // Someone else's order starts holding the symbol's shares.
            st.held.insert(HELD_SYMBOL.to_string());
        }
        let o = st.orders.get_mut(&id).expect("listed");
        let left = o.qty.minus(o.filled);
        match rng.below(5) {
            // The broker replaces the order: the replacement carries the attempt on
            // (never read as canceled, so no retry closes twice).
            4 => o.replacements += 1,
            0 if left.value() > rust_decimal::Decimal::ONE => {
                o.filled = Quantity::new(o.filled.value() + rust_decimal::Decimal::ONE);
                o.status = OrderStatus::PartiallyFilled;
            }
            0 | 1 => {
                o.filled = o.qty;
                o.status = OrderStatus::Filled;
            }
            2 => o.status = OrderStatus::Canceled,
            _ => {
                o.filled = o.qty;
                o.status = OrderStatus::Filled;
            }
        }
        o.seq += 1;
        let update = OrderUpdate {
            client_order_id: id.clone(),
            broker_order_id: Some(broker_id(&id, o)),
            status: o.status,
            filled_qty: o.filled,
            filled_avg_price: (!o.filled.is_zero()).then(|| crate::builders::price("100")),
            seq: Some(o.seq),
            execution_id: Some(format!("chaos-{id}-{}", o.seq)),
            updated_at: now,
        };
        st.outbox.push(update);
    }

    /// Ends every live order (fill what is left, or cancel) for the final drain.
    fn settle_all(&self, rng: &mut Rng) {
        while self.lock().orders.values().any(|o| !o.status.is_terminal()) {
            self.progress(rng);
        }
    }
}

#[async_trait]
impl Broker for ChaosBroker {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        if self.roll(8) {
            return Err(BrokerError::Ambiguous("503 from the broker".into()));
        }
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        if self.roll(3) {
            return Err(BrokerError::Unavailable {
                retry_after: std::time::Duration::from_secs(30),
            });
        }
        let lost_answer = self.roll(8);
        let mut st = self.lock();
        if st.orders.contains_key(&intent.client_order_id) {
            return Err(BrokerError::DuplicateClientOrderId);
        }
        if st.held.contains(&intent.symbol) {
            return Err(BrokerError::BlockedByOpenOrders {
                held_qty: intent.qty,
                message: "insufficient qty available for order".into(),
            });
        }
        Self::hold(&mut st, &intent.client_order_id, intent.qty);
        let view = self.view(&intent.client_order_id, &st.orders[&intent.client_order_id]);
        if lost_answer {
            // Placed, but the answer never arrives: the caller cannot know.
            return Err(BrokerError::Ambiguous("timeout after sending".into()));
        }
        Ok(view)
    }

    fn supports_mleg(&self) -> bool {
        true
    }

    /// One order for every leg, all or nothing, with the same faults as a single order's
    /// (a lost answer after placing it among them); its name is refused a second time.
    async fn submit_mleg_order(&self, intent: &MlegIntent) -> Result<BrokerMlegOrder, BrokerError> {
        if self.roll(8) {
            return Err(BrokerError::Ambiguous("503 from the broker".into()));
        }
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        let lost_answer = self.roll(8);
        let mut st = self.lock();
        if st.mlegs.contains_key(&intent.client_order_id) {
            return Err(BrokerError::DuplicateClientOrderId);
        }
        if let Some(l) = intent.legs.iter().find(|l| st.held.contains(&l.symbol)) {
            return Err(BrokerError::BlockedByOpenOrders {
                held_qty: l.qty,
                message: "insufficient qty available for order".into(),
            });
        }
        for l in &intent.legs {
            Self::hold(&mut st, &l.client_order_id, l.qty);
        }
        let legs = intent
            .legs
            .iter()
            .map(|l| (l.symbol.clone(), l.client_order_id.clone()))
            .collect();
        st.mlegs.insert(intent.client_order_id.clone(), legs);
        if lost_answer {
            return Err(BrokerError::Ambiguous("timeout after sending".into()));
        }
        self.mleg_view(&st, &intent.client_order_id)
            .ok_or_else(|| BrokerError::Ambiguous("multi-leg order not visible".into()))
    }

    async fn get_mleg_order_by_client_id(
        &self,
        _: &AccountId,
        id: &ClientOrderId,
    ) -> Result<BrokerMlegOrder, BrokerError> {
        if self.roll(10) {
            return Err(BrokerError::Ambiguous("timeout".into()));
        }
        let st = self.lock();
        self.mleg_view(&st, id).ok_or(BrokerError::NotFound)
    }

    async fn get_order_by_client_id(&self, _: &AccountId, id: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        if self.roll(10) {
            return Err(BrokerError::Ambiguous("timeout".into()));
        }
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(2),
            });
        }
        let st = self.lock();
        match st.orders.get(id) {
            Some(o) => Ok(self.view(id, o)),
            None => Err(BrokerError::NotFound),
        }
    }

    /// Cancels the order that holds a symbol, or one of closeflow's orders a trader asked
    /// to cancel; closeflow canceling any other order of its own is a violation.
    async fn cancel_order(&self, _: &AccountId, broker_order_id: &str) -> Result<(), BrokerError> {
        if self.roll(10) {
            return Err(BrokerError::Ambiguous("timeout".into()));
        }
        let now = self.clock.now();
        let mut st = self.lock();
        if let Some(symbol) = broker_order_id.strip_prefix("foreign-") {
            return if st.held.remove(symbol) {
                Ok(())
            } else {
                Err(BrokerError::NotFound)
            };
        }
        // A multi-leg order is canceled as a whole: each of its legs still working.
        if let Some(name) = st
            .mlegs
            .keys()
            .find(|n| format!("chaos-mleg-{n}") == broker_order_id)
            .cloned()
        {
            let legs: Vec<String> = st.mlegs[&name].iter().map(|(_, cid)| format!("chaos-{cid}")).collect();
            let mut any = false;
            for leg in legs {
                any |= Self::cancel_one(&mut st, &leg, now).is_ok();
            }
            return match any {
                true => Ok(()),
                false => Err(BrokerError::Rejected("order is not cancelable".into())),
            };
        }
        let id = st
            .orders
            .keys()
            .find(|k| format!("chaos-{k}") == broker_order_id)
            .cloned()
            .ok_or(BrokerError::NotFound)?;
        if st.mlegs.values().flatten().any(|(_, cid)| *cid == id) {
            st.violations.push(format!(
                "closeflow canceled {broker_order_id}, one leg of a multi-leg order, on its own"
            ));
            return Err(BrokerError::Rejected("cancel the multi-leg order".into()));
        }
        Self::cancel_one(&mut st, broker_order_id, now)
    }

    async fn list_positions(&self, _: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        Ok(Vec::new())
    }

    async fn open_orders(&self, _: &AccountId, symbol: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        let st = self.lock();
        Ok(st
            .held
            .contains(symbol)
            .then(|| OpenOrder {
                broker_order_id: format!("foreign-{symbol}"),
                client_order_id: "manual-order".into(),
                symbol: symbol.to_string(),
                qty: qty("100"),
                filled_qty: Quantity::ZERO,
            })
            .into_iter()
            .collect())
    }

    async fn account_equity(&self, _: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        Ok(rust_decimal::Decimal::from(100_000))
    }

    /// The foreign orders holding symbols, as `open_orders` lists them per symbol.
    async fn account_open_orders(&self, _: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        if self.roll(5) {
            return Err(BrokerError::RateLimited {
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        let mut held: Vec<String> = self.lock().held.iter().cloned().collect();
        held.sort();
        Ok(held
            .into_iter()
            .map(|symbol| OpenOrder {
                broker_order_id: format!("foreign-{symbol}"),
                client_order_id: "manual-order".into(),
                symbol,
                qty: qty("100"),
                filled_qty: Quantity::ZERO,
            })
            .collect())
    }
}

/// The symbol the `held` fault blocks (the first position's option contract).
const HELD_SYMBOL: &str = "SPY260116C00600000";

/// Position `i`'s option contract: distinct per leg, so a multi-leg order names each.
fn leg_symbol(i: usize) -> String {
    format!("SPY260116C0060{i}000")
}

/// The broker's id of the order carrying the attempt (its latest replacement).
fn broker_id(id: &ClientOrderId, o: &HeldOrder) -> String {
    match o.replacements {
        0 => format!("chaos-{id}"),
        n => format!("chaos-{id}-r{n}"),
    }
}

/// The backend a seed runs on: memory for even seeds, SQLite (with restarts) for odd ones;
/// `CHAOS_BACKEND=memory|sqlite` puts every seed on one.
pub fn backend_of(seed: u64) -> Backend {
    match std::env::var("CHAOS_BACKEND").as_deref() {
        Ok("memory") => Backend::Embedded,
        Ok("sqlite") => Backend::Sqlite,
        _ if seed.is_multiple_of(2) => Backend::Embedded,
        _ => Backend::Sqlite,
    }
}

/// What one seed did, for the suite's totals.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChaosStats {
    pub closes_created: usize,
    pub orders_placed: usize,
    pub restarts: usize,
    /// Cancels that reached the broker, and manual retries that started an attempt.
    pub cancels: usize,
    pub manual_retries: usize,
    /// Strategy closes accepted (every position is a leg of one strategy).
    pub strategy_closes: usize,
    /// Multi-leg orders the broker took (at most one per `mleg` attempt: its name is
    /// refused a second time, and each leg's order counts in `orders_placed`).
    pub mleg_orders: usize,
    /// Bulk closes started (each fanned out by job steps on the order queue).
    pub bulk_closes: usize,
    /// Of which emergency liquidations.
    pub liquidations: usize,
}

struct Node {
    /// In memory even on SQLite: a restart loses it, and the reconciler covers.
    watch: Arc<MemoryWatch>,
    store: Arc<dyn CloseStore>,
    log: Arc<dyn ChangeLog>,
    producer: Arc<dyn OrderQueue>,
    consumer: Arc<dyn QueueConsumer>,
}

fn open(
    backend: Backend,
    db: &str,
    memory: &Option<(Arc<MemoryStore>, Arc<MemoryQueue>)>,
    clock: Arc<ManualClock>,
) -> Node {
    let watch = Arc::new(MemoryWatch::new(clock));
    match (backend, memory) {
        (Backend::Sqlite, _) => {
            let s = Arc::new(SqliteStore::open(db).expect("sqlite"));
            Node {
                watch,
                store: s.clone(),
                log: s.clone(),
                producer: s.clone(),
                consumer: s,
            }
        }
        (_, Some((m, q))) => Node {
            watch,
            store: m.clone(),
            log: m.clone(),
            producer: q.clone(),
            consumer: q.clone(),
        },
        _ => unreachable!("memory wiring is made once per seed"),
    }
}

/// The stream consumer's handler over this node's store and the chaos broker.
fn stream_handler(node: &Node, broker: &Arc<ChaosBroker>, clock: &Arc<ManualClock>) -> StoreUpdates {
    StoreUpdates::new(node.store.clone(), broker.clone(), clock.clone())
}

/// A close from the API: the whole position or part of it, market or limit; the body's
/// fingerprint covers the options, as the API's does.
fn chaos_close(rng: &mut Rng, position: &str, now: closeflow_domain::Timestamp) -> closeflow_domain::CloseCommand {
    let mut cmd = close(position, &format!("key-{}", rng.below(3)), now);
    if rng.chance(30) {
        cmd.qty = Some(Quantity::from(1 + rng.below(2) as i64));
    }
    if rng.chance(30) {
        cmd.options = OrderOptions::limit(Price::new(qty("100")).expect("> 0"));
    }
    cmd.fingerprint = Fingerprint::of_body(&serde_json::json!({
        "qty": cmd.qty.map(|q| q.to_string()),
        "limit": cmd.options.limit_price.map(|p| p.to_string()),
    }));
    cmd
}

const POSITIONS: usize = 4;
const STRATEGY: &str = "chaos-s";
const STEPS: usize = 80;

/// Runs one seed; `Err` says which promise broke.
pub async fn run_seed(seed: u64, backend: Backend) -> Result<ChaosStats, String> {
    let mut rng = Rng::new(seed);
    let clock = Arc::new(ManualClock::new(start_time()));
    let broker = Arc::new(ChaosBroker::new(seed, clock.clone()));
    let db = crate::temp_db_path();
    let memory = (backend != Backend::Sqlite).then(|| (Arc::new(MemoryStore::new()), Arc::new(MemoryQueue::new())));
    let mut node = open(backend, &db, &memory, clock.clone());
    let mut stats = ChaosStats::default();
    let mut bulk_ids = std::collections::BTreeSet::new();
    let mut strategy_statuses = std::collections::BTreeMap::new();
    let cfg = ReconcileConfig::default();
    let quantities: Vec<String> = (0..POSITIONS).map(|_| (2 + rng.below(5)).to_string()).collect();
    for (i, q) in quantities.iter().enumerate() {
        // Every position is a leg of one strategy, so strategy closes race single closes.
        let mut leg = register(&format!("x-{i}"), q, clock.now());
        leg.strategy_id = Some(STRATEGY.into());
        // Option legs, so a strategy close may run as one multi-leg order.
        leg.asset_type = closeflow_domain::AssetType::Option;
        leg.symbol = leg_symbol(i);
        node.store
            .register_position(&leg)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:?}"))?;
    }
    for step in 0..STEPS + 400 {
        let calm = step >= STEPS;
        broker.lock().calm = calm;
        let action = if calm {
            [2, 3, 4, 5, 6, 8][step % 6]
        } else {
            rng.below(15)
        };
        match action {
            // Closes from the API, with keys from a small pool (duplicates and refusals),
            // sometimes two racing on one position (a double click, two risk guards).
            0 | 1 => {
                let p = format!("x-{}", rng.below(POSITIONS));
                let mut first = chaos_close(&mut rng, &p, clock.now());
                let second = chaos_close(&mut rng, &p, clock.now());
                // Some closes may cancel the open orders that hold the shares.
                first.cancel_open_orders = rng.chance(50);
                let (a, b) = if rng.chance(30) {
                    let (a, b) = tokio::join!(
                        node.store.open_close_request(&first),
                        node.store.open_close_request(&second)
                    );
                    (a, Some(b))
                } else {
                    (node.store.open_close_request(&first).await, None)
                };
                let created = [Some(a), b]
                    .into_iter()
                    .flatten()
                    .filter(|o| matches!(o, Ok(closeflow_store::CloseOutcome::Created { .. })))
                    .count();
                if created > 1 {
                    return Err(format!("two racing closes of {p} both created a close request"));
                }
                stats.closes_created += created;
            }
            // The relay: some changes, then maybe a crash before acknowledging them.
            2 | 9 => {
                let batch = node
                    .log
                    .unacknowledged(1 + rng.below(4))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut last = None;
                for s in &batch {
                    if !calm && rng.chance(10) {
                        break; // crashed mid-batch
                    }
                    relay(node.producer.as_ref(), s.change.before.as_ref(), &s.change.after)
                        .await
                        .map_err(|e| e.to_string())?;
                    watch_change(node.watch.as_ref(), s.change.before.as_ref(), &s.change.after)
                        .await
                        .map_err(|e| e.to_string())?;
                    last = Some(s.seq);
                }
                if let Some(seq) = last.filter(|_| calm || !rng.chance(15)) {
                    node.log.acknowledge(seq).await.map_err(|e| e.to_string())?;
                }
            }
            // The submitter: a message in any order; maybe a crash before the ack.
            3 => {
                let mut msgs = node.consumer.receive().await.map_err(|e| e.to_string())?;
                if msgs.is_empty() {
                    continue;
                }
                let d = msgs.swap_remove(rng.below(msgs.len()));
                // What is not taken now goes back to the queue (redelivered later).
                for other in &msgs {
                    node.consumer.release(other).await.map_err(|e| e.to_string())?;
                }
                let done = handle(&node, &broker, &clock, &d).await?;
                if done && (calm || !rng.chance(10)) {
                    node.consumer.ack(&d).await.map_err(|e| e.to_string())?;
                } else {
                    node.consumer.release(&d).await.map_err(|e| e.to_string())?;
                }
            }
            // The broker moves an order on and notifies.
            4 => broker.progress(&mut rng),
            // A notification arrives: any one in flight, maybe delivered again later.
            5 => {
                let pending = broker.lock().outbox.len();
                if pending > 0 {
                    let i = rng.below(pending);
                    let u = if !calm && rng.chance(25) {
                        broker.lock().outbox[i].clone()
                    } else {
                        broker.lock().outbox.swap_remove(i)
                    };
                    // Half through the webhook's path, half through the trade_updates
                    // stream's (dated by the broker's own time).
                    if rng.chance(50) {
                        node.store.apply_order_update(&u, clock.now(), BROKER).await
                    } else {
                        stream_handler(&node, &broker, &clock).apply(&u).await
                    }
                    .map_err(|e| e.to_string())?;
                }
            }
            // A trader cancels a close's working order(s), the way the API's route does.
            10 => {
                let p = format!("x-{}", rng.below(POSITIONS));
                let agg = node
                    .store
                    .aggregate(&AggregateKey::Position(pid(&p)))
                    .await
                    .map_err(|e| e.to_string())?;
                let latest = agg.and_then(|a| a.latest_close_request);
                // A leg of a multi-leg order: the trader's cancel is the whole order's.
                if let Some(tag) = latest.as_ref().and_then(|c| c.strategy_close) {
                    if tag.mode == closeflow_domain::StrategyCloseMode::Mleg {
                        let legs = node
                            .store
                            .strategy_close_legs(&tag.id)
                            .await
                            .map_err(|e| e.to_string())?;
                        let mut st = broker.lock();
                        for l in legs {
                            let of_it = l
                                .latest_close_request
                                .filter(|c| c.strategy_close.is_some_and(|x| x.id == tag.id));
                            st.cancels_asked.extend(of_it.map(|c| c.id));
                        }
                    }
                }
                if let Some(cr) = latest.map(|c| c.id) {
                    broker.lock().cancels_asked.insert(cr);
                    let outcome = cancel_close(
                        node.store.as_ref(),
                        broker.as_ref(),
                        clock.as_ref(),
                        &cr,
                        &Access::All,
                        "trader",
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    stats.cancels += usize::from(outcome == closeflow_pipeline::CancelOutcome::Asked);
                }
            }
            // A human retries a failed close, keys from a small pool (replays, reuse).
            12 => {
                let p = format!("x-{}", rng.below(POSITIONS));
                let agg = node
                    .store
                    .aggregate(&AggregateKey::Position(pid(&p)))
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(cr) = agg.and_then(|a| a.latest_close_request.map(|c| c.id)) {
                    let options = rng
                        .chance(50)
                        .then(|| OrderOptions::limit(Price::new(qty("99")).expect("> 0")));
                    let cmd = RetryCommand {
                        close_request_id: cr,
                        idempotency_key: IdempotencyKey::parse(&format!("retry-{}", rng.below(3))).expect("key"),
                        fingerprint: Fingerprint::of_body(&serde_json::json!({"retry": options.is_some()})),
                        options,
                        actor: "trader".into(),
                        access: Access::All,
                        now: clock.now(),
                    };
                    let started = node.store.retry_close(&cmd).await.map_err(|e| e.to_string())?;
                    stats.manual_retries += usize::from(matches!(started, Ok((_, false))));
                }
            }
            // The trade_updates stream reconnects: it backfills every working order.
            11 => {
                stream_handler(&node, &broker, &clock)
                    .backfill()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // The reconciler, at a random later time.
            6 => {
                clock.advance(TimeDelta::seconds(rng.below(180) as i64));
                reconcile_once(node.store.as_ref(), broker.as_ref(), clock.as_ref(), &cfg)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // The order watch runs whatever checks are due (lookups applied like webhooks).
            8 => {
                for req in node.watch.take_due() {
                    watch_order(
                        node.store.as_ref(),
                        broker.as_ref(),
                        clock.as_ref(),
                        node.watch.as_ref(),
                        &req,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                }
            }
            // A strategy close (keys from a small pool), sometimes racing a single close of
            // one of its legs: all legs move under it, or none does.
            13 => {
                let mut cmd = crate::contract::strategy_close(STRATEGY, &format!("skey-{}", rng.below(2)), 0);
                cmd.random = (rng.next_u64() as u128 | ((rng.next_u64() as u128) << 64)).to_be_bytes();
                cmd.now = clock.now();
                // Mostly `mleg` (the default for option legs with this broker), some `legs`.
                cmd.broker_supports_mleg = broker.supports_mleg();
                cmd.mode = rng.chance(30).then_some(closeflow_domain::StrategyCloseMode::Legs);
                let leg = format!("x-{}", rng.below(POSITIONS));
                let single = chaos_close(&mut rng, &leg, clock.now());
                let (strategy, single) = if rng.chance(40) {
                    let (a, b) = tokio::join!(node.store.close_strategy(&cmd), node.store.open_close_request(&single));
                    (a, Some(b))
                } else {
                    (node.store.close_strategy(&cmd).await, None)
                };
                if let Ok(closeflow_store::StrategyCloseOutcome::Created(view)) = &strategy {
                    stats.strategy_closes += 1;
                    if matches!(single, Some(Ok(closeflow_store::CloseOutcome::Created { .. }))) {
                        return Err(format!(
                            "a strategy close and a single close of {leg} were both created"
                        ));
                    }
                    if view.legs.len() != POSITIONS {
                        return Err(format!(
                            "a strategy close moved {} of {POSITIONS} legs",
                            view.legs.len()
                        ));
                    }
                    for l in &view.legs {
                        let agg = node
                            .store
                            .aggregate(&AggregateKey::Position(l.position_id.clone()))
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or("a leg vanished")?;
                        if agg.latest_close_request.as_ref().map(|c| c.id) != Some(l.close_request_id) {
                            return Err(format!("leg {} is not under its strategy close", l.position_id));
                        }
                    }
                }
            }
            // Close everything (keys from a small pool: replays), the way the API's route
            // starts it; sometimes a retry of the failed rows of one that has finished.
            // A quarter of them are emergency liquidations (cancels, sync, shorts first,
            // verify), racing the other closes the same way.
            14 => {
                let liquidate = rng.chance(25);
                let key = match liquidate {
                    true => format!("liquidate-{}", rng.below(2)),
                    false => format!("bulk-{}", rng.below(2)),
                };
                let mut cmd = crate::builders::bulk_close(&key, clock.now());
                cmd.cancel_open_orders = rng.chance(50);
                if liquidate {
                    cmd.liquidation = Some(closeflow_domain::Liquidation::new(2));
                }
                let bulk = match node.store.create_bulk_close(&cmd).await.map_err(|e| e.to_string())? {
                    None => {
                        stats.bulk_closes += 1;
                        stats.liquidations += liquidate as usize;
                        bulk_ids.insert(cmd.id);
                        cmd
                    }
                    Some(existing) if existing.job_running() || existing.liquidation.is_some() || rng.chance(50) => {
                        existing
                    }
                    Some(mut existing) => {
                        existing.retry_rounds += 1;
                        existing.retry = Some(closeflow_domain::Progress::default());
                        existing.version += 1;
                        if !node
                            .store
                            .update_bulk_close(&existing)
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            continue;
                        }
                        existing
                    }
                };
                if let Some(step) = closeflow_pipeline::bulk::pending_step(&bulk) {
                    node.producer
                        .send(&closeflow_pipeline::QueueMessage::for_job(&step))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            // A process restart (SQLite: everything is reopened from the file).
            7 if backend == Backend::Sqlite => {
                drop(node);
                node = open(backend, &db, &memory, clock.clone());
                stats.restarts += 1;
            }
            _ => clock.advance(TimeDelta::seconds(1 + rng.below(20) as i64)),
        }
        if calm && step % 50 == 0 {
            broker.settle_all(&mut rng);
        }
        if step % 10 == 0 {
            watch_strategy_closes(&node, &mut strategy_statuses).await?;
        }
    }
    // Drain: every notification delivered, the reconciler given time to finish retries.
    broker.settle_all(&mut rng);
    for _ in 0..40 {
        let updates: Vec<_> = std::mem::take(&mut broker.lock().outbox);
        let mut worked = !updates.is_empty();
        for u in updates {
            node.store
                .apply_order_update(&u, clock.now(), BROKER)
                .await
                .map_err(|e| e.to_string())?;
        }
        loop {
            let batch = node.log.unacknowledged(100).await.map_err(|e| e.to_string())?;
            let Some(last) = batch.last().map(|s| s.seq) else { break };
            worked = true;
            for s in &batch {
                relay(node.producer.as_ref(), s.change.before.as_ref(), &s.change.after)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            node.log.acknowledge(last).await.map_err(|e| e.to_string())?;
        }
        for d in node.consumer.receive().await.map_err(|e| e.to_string())? {
            worked = true;
            if handle(&node, &broker, &clock, &d).await? {
                node.consumer.ack(&d).await.map_err(|e| e.to_string())?;
            } else {
                node.consumer.release(&d).await.map_err(|e| e.to_string())?;
            }
        }
        broker.settle_all(&mut rng);
        clock.advance(TimeDelta::minutes(11));
        let r = reconcile_once(node.store.as_ref(), broker.as_ref(), clock.as_ref(), &cfg)
            .await
            .map_err(|e| e.to_string())?;
        if !worked && r.changed == 0 && r.broker_queries == 0 {
            break;
        }
    }
    watch_strategy_closes(&node, &mut strategy_statuses).await?;
    let mut result = check(&node, &broker, &quantities, &clock).await;
    for id in &bulk_ids {
        let bulk = node.store.bulk_close(id).await.map_err(|e| e.to_string())?;
        match bulk {
            Some(b) if !b.job_running() => {}
            other => result = result.and(Err(format!("bulk close {id} never finished its job: {other:?}"))),
        }
    }
    drop(node);
    if backend == Backend::Sqlite {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{db}{suffix}"));
        }
    }
    stats.orders_placed = broker.lock().orders.len();
    stats.mleg_orders = broker.lock().mlegs.len();
    result.map(|_| stats)
}

/// One queue delivery handled the way the submitter function does: an order to place,
/// or a step of a bulk close job. True when it is done with (to be acknowledged).
async fn handle(
    node: &Node,
    broker: &Arc<ChaosBroker>,
    clock: &Arc<ManualClock>,
    d: &closeflow_pipeline::Delivery,
) -> Result<bool, String> {
    Ok(match d.message.work().map_err(|e| e.to_string())? {
        closeflow_pipeline::Work::Submit(req) => submit(node.store.as_ref(), broker.as_ref(), clock.as_ref(), &req)
            .await
            .is_ok(),
        closeflow_pipeline::Work::Job(step) => closeflow_pipeline::BulkJob {
            store: node.store.as_ref(),
            queue: node.producer.as_ref(),
            clock: clock.as_ref(),
            broker: broker.as_ref(),
            events: &closeflow_pipeline::LogSink,
        }
        .run(&step)
        .await
        .is_ok(),
    })
}

/// Every strategy close's status as its legs show it now, checked against the last one seen:
/// it may only have moved as the strategy close's table allows (a success never changes).
async fn watch_strategy_closes(
    node: &Node,
    seen: &mut std::collections::BTreeMap<closeflow_domain::StrategyCloseId, closeflow_domain::StrategyCloseStatus>,
) -> Result<(), String> {
    let mut legs = Vec::with_capacity(POSITIONS);
    for i in 0..POSITIONS {
        let key = AggregateKey::Position(pid(&format!("x-{i}")));
        legs.extend(node.store.aggregate(&key).await.map_err(|e| e.to_string())?);
    }
    let ids: HashSet<closeflow_domain::StrategyCloseId> = legs
        .iter()
        .flat_map(|a| {
            a.latest_close_request
                .iter()
                .chain(a.history.iter().map(|p| &p.close_request))
        })
        .filter_map(|c| c.strategy_close.map(|t| t.id))
        .collect();
    for id in ids {
        let Some(view) = closeflow_domain::strategy_close_view(&id, &legs) else {
            continue;
        };
        if let Some(before) = seen.insert(id, view.status) {
            if !closeflow_domain::strategy_close_may_become(before, view.status) {
                return Err(format!(
                    "strategy close {id} went from {} to {}",
                    before.as_str(),
                    view.status.as_str()
                ));
            }
        }
    }
    Ok(())
}

/// The promises, checked against the broker's truth and the store's record.
async fn check(node: &Node, broker: &ChaosBroker, quantities: &[String], clock: &ManualClock) -> Result<(), String> {
    let (violations, orders) = {
        let st = broker.lock();
        (st.violations.clone(), st.orders.clone())
    };
    if let Some(v) = violations.first() {
        return Err(format!("two live orders for one position: {v}"));
    }
    // Atomicity, after everything: each strategy close is on every leg or on none.
    let mut legs_of: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..POSITIONS {
        let agg = node
            .store
            .aggregate(&AggregateKey::Position(pid(&format!("x-{i}"))))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("a position vanished")?;
        let tags: HashSet<String> = agg
            .latest_close_request
            .iter()
            .chain(agg.history.iter().map(|p| &p.close_request))
            .filter_map(|c| c.strategy_close.map(|t| t.id.to_string()))
            .collect();
        for t in tags {
            *legs_of.entry(t).or_default() += 1;
        }
    }
    if let Some((id, n)) = legs_of.iter().find(|(_, n)| **n != POSITIONS) {
        return Err(format!("strategy close {id} is on {n} of {POSITIONS} legs"));
    }
    let attention: HashSet<String> = node
        .store
        .work_list(WorkList::Attention, clock.now() + TimeDelta::days(365), 1000)
        .await
        .map_err(|e| e.to_string())?
        .aggregates
        .into_iter()
        .map(|a| a.position.id.to_string())
        .collect();
    for (i, q) in quantities.iter().enumerate() {
        let id = format!("x-{i}");
        let agg: PositionAggregate = node
            .store
            .aggregate(&AggregateKey::Position(pid(&id)))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} vanished"))?;
        let violations = check_invariants(&agg.position, agg.latest_close_request.as_ref());
        if !violations.is_empty() {
            return Err(format!("{id}: invariants violated: {violations:?}"));
        }
        // Every order the broker holds for this position is recorded, with the same fill.
        let recorded: BTreeMap<ClientOrderId, Quantity> = agg
            .orders
            .iter()
            .chain(agg.history.iter().flat_map(|p| p.orders.iter()))
            .map(|o| (o.client_order_id.clone(), o.filled_qty))
            .collect();
        let mut broker_filled = Quantity::ZERO;
        for (cid, o) in orders.iter().filter(|(k, _)| k.close_request_id.belongs_to(&pid(&id))) {
            broker_filled = Quantity::new(broker_filled.value() + o.filled.value());
            match recorded.get(cid) {
                Some(f) if *f == o.filled => {}
                Some(f) => return Err(format!("{cid}: broker filled {}, closeflow recorded {f}", o.filled)),
                None if o.filled.is_zero() => {}
                None => {
                    return Err(format!(
                        "{cid}: broker filled {}, closeflow never recorded it",
                        o.filled
                    ))
                }
            }
        }
        if broker_filled.value() > qty(q).value() {
            return Err(format!("{id}: the broker closed {broker_filled} of a {q} position"));
        }
        let settled = match agg.latest_close_request.as_ref() {
            None => true,
            Some(cr) => cr.status.is_terminal(),
        };
        let needs_human = agg.position.status == PositionStatus::CloseFailed && agg.last_alert.is_some();
        if !(settled || attention.contains(&id) || needs_human) {
            return Err(format!(
                "{id}: close neither terminal nor on the attention list: {:?}",
                agg.latest_close_request
            ));
        }
    }
    Ok(())
}
