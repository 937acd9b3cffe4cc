//! The store of position aggregates: one protocol ([`CloseStore`]) written once over a
//! few primitives ([`Backend`]) that each adapter provides — [`MemoryStore`] (tests, and
//! `CLOSEFLOW_DB=:memory:`), [`SqliteStore`] (the durable embedded stack) and
//! [`DynamoStore`] (AWS, moto).
//!
//! Every adapter keeps a position, the idempotency keys used on it and its close requests
//! together in one record, addressed by the position's routing key, so phase 1 of a close
//! is a single conditional write. The protocol decides with the pure domain
//! ([`decide_close`], [`decide_register`], ...) and writes with a version condition; an
//! adapter may override a protocol step with a cheaper path (DynamoDB's one-`UpdateItem`
//! close and partial fill) only where a test proves it writes what the domain decides.

use async_trait::async_trait;
use closeflow_domain::{
    adds_exposure, apply_order_update, count_changes, decide_close, decide_register, AccountId, AccountState, Applied,
    CloseCommand, CloseDecision, CloseRejection, CloseRequest, CloseRequestId, CloseRequestStatus, CountChange,
    Ignored, IllegalTradingMove, IllegalTransition, Order, OrderUpdate, Position, PositionAggregate, PositionId,
    PositionStatus, RegisterDecision, RegisterPosition, RegisterRejection, RoutingKey, Timestamp, TradingStateEvent,
};
use closeflow_domain::{
    decide_cancel, decide_mleg_retry, decide_retry, Access, ClientOrderId, LegsRetryDecision, ManageRejection,
    RetryCommand, RetryDecision,
};
use closeflow_domain::{
    decide_strategy_close, leg_updates, strategy_close_view, MlegReport, StrategyCloseCommand, StrategyCloseDecision,
    StrategyCloseId, StrategyCloseRejection, StrategyCloseView,
};

pub mod audit;
pub mod bulk;
pub mod dynamo;
pub mod listing;
pub mod memory;
pub mod outbox;
pub mod sqlite;

pub use audit::{AuditLog, AuditPage, AuditQuery};
pub use bulk::BulkLog;
pub use dynamo::{DynamoStore, RoundTripCounter};
pub use listing::{IndexPage, IndexQuery, ListIndex, ListRequest, PositionPage, Scope};
pub use memory::MemoryStore;
pub use outbox::{Change, ChangeLog, Sequenced};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent write or throttling: nothing was written, the caller may retry.
    #[error("the position is busy (write conflict or throttling)")]
    Contention,
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// One conditional write of a [`Backend::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Store a new aggregate if nothing is stored under its routing key.
    Create(PositionAggregate),
    /// Replace the aggregate if the stored one is the same position at version `expected`.
    Put { next: PositionAggregate, expected: u64 },
    /// Remove the aggregate if the stored one is this position at version `expected`.
    Delete { id: PositionId, expected: u64 },
    /// Change an account's count of live positions; with a ceiling, only if the count
    /// stays at or below it (and, with `require_active`, only while the account trades).
    Count(CountChange),
    /// Writes nothing; holds only while the account's trading state accepts new exposure
    /// (so a position cannot grow once a liquidation has begun).
    RequireActive(AccountId),
}

impl Write {
    /// The position item this write addresses (`None` for an account's count).
    pub fn routing_key(&self) -> Option<RoutingKey> {
        match self {
            Write::Create(a) | Write::Put { next: a, .. } => Some(RoutingKey::of(&a.position.id)),
            Write::Delete { id, .. } => Some(RoutingKey::of(id)),
            Write::Count(_) | Write::RequireActive(_) => None,
        }
    }

    /// A position write with the account counts it changes (see
    /// [`closeflow_domain::count_changes`]), to be committed together.
    pub fn with_counts(self, before: Option<&PositionAggregate>, limit: u64) -> Vec<Write> {
        let after = match &self {
            Write::Create(a) | Write::Put { next: a, .. } => Some(a),
            Write::Delete { .. } | Write::Count(_) | Write::RequireActive(_) => None,
        };
        let counts: Vec<Write> = count_changes(before, after, limit)
            .into_iter()
            .map(Write::Count)
            .collect();
        let mut writes = Vec::with_capacity(1 + counts.len());
        writes.push(self);
        writes.extend(counts);
        writes
    }
}

/// Writes that change no account's quota use this ceiling (only registration enforces one).
const NO_LIMIT: u64 = u64::MAX;

/// A commit whose condition failed: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Which write's condition failed (the first one found).
    pub index: usize,
    /// What is stored under that write's routing key, when the backend got it for free
    /// (DynamoDB's ALL_OLD image); `None` means "load it again".
    pub current: Option<Option<PositionAggregate>>,
}

/// The primitives an adapter provides. Everything else is [`CloseStore`]'s protocol.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The aggregate stored under a routing key (strongly consistent).
    async fn load(&self, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError>;

    /// The aggregates stored under several routing keys (strongly consistent), in no
    /// particular order; keys with nothing stored are left out. Backends that can read many
    /// items in one request override this (DynamoDB: `BatchGetItem`).
    async fn load_many(&self, keys: &[RoutingKey]) -> Result<Vec<PositionAggregate>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for k in keys {
            found.extend(self.load(*k).await?);
        }
        Ok(found)
    }

    /// All of `writes` or none: each write's condition must hold. Keeps the work lists and,
    /// where the backend has one, the change log in the same atomic step.
    async fn commit(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError>;

    /// An account's count of live (registered, not yet closed) positions.
    async fn live_positions(&self, account: &AccountId) -> Result<i64, StoreError>;

    /// Aggregates on one work list (`WorkList::Attention`: in-flight or retryable closes;
    /// `WorkList::Expiry`: something can expire) whose clock started at or before `since`,
    /// oldest first, at most `limit`. Reads only listed items (a sparse index; never a Scan).
    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError>;

    /// One read of a listing index (`by_account`, `by_strategy`) under one key, newest
    /// first; the paging rules are [`IndexQuery`]'s. Reads only that key's entries (on
    /// DynamoDB one `Query`, never a Scan).
    async fn list_index(&self, q: &IndexQuery) -> Result<IndexPage, StoreError>;

    /// An account's trading state (never written: `active` at version 0).
    async fn account_state(&self, account: &AccountId) -> Result<AccountState, StoreError>;

    /// Stores `next` if the stored state is at `next.version - 1`; `Err(current)` if not.
    async fn put_account_state(&self, next: &AccountState) -> Result<Result<(), AccountState>, StoreError>;
}

/// Result of [`CloseStore::open_close_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    Created {
        position: Position,
        close_request: CloseRequest,
    },
    Replayed {
        position: Position,
        close_request: CloseRequest,
        orders: Vec<Order>,
    },
    Rejected(CloseRejection),
}

pub type RegisterOutcome = Result<RegisterDecision, RegisterRejection>;

/// How to find an aggregate: by its position, or by one of its close requests (webhooks
/// and queue messages only know the close request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateKey {
    Position(PositionId),
    CloseRequest(CloseRequestId),
}

impl AggregateKey {
    pub fn routing_key(&self) -> RoutingKey {
        match self {
            AggregateKey::Position(id) => RoutingKey::of(id),
            AggregateKey::CloseRequest(id) => id.routing_key(),
        }
    }

    /// Whether `agg` is what this key names (a routing key is shared by 1 in 2^60 pairs).
    pub fn names(&self, agg: &PositionAggregate) -> bool {
        match self {
            AggregateKey::Position(id) => agg.position.id == *id,
            AggregateKey::CloseRequest(id) => agg.close_request(id).is_some(),
        }
    }
}

/// What a pure step decided: the aggregate to write (or nothing) and the decision itself,
/// which [`modify`] hands back so no caller decides twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<T> {
    pub write: Option<PositionAggregate>,
    pub decision: T,
}

impl Step<Result<Applied, IllegalTransition>> {
    /// The usual domain answer: write what changed, nothing otherwise.
    pub fn applied(decision: Result<Applied, IllegalTransition>) -> Self {
        let write = match &decision {
            Ok(Applied::Changed(next)) => Some((**next).clone()),
            _ => None,
        };
        Step { write, decision }
    }
}

/// What [`modify`] did: the aggregate it decided on, what it wrote, and the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modified<T> {
    pub before: PositionAggregate,
    pub after: Option<PositionAggregate>,
    pub decision: T,
}

/// Re-decisions after losing an optimistic-concurrency race before answering "busy".
const ATTEMPTS: usize = 5;

/// The store protocol: decide with the domain, write with a condition, re-decide on a lost
/// race. Adapters implement [`Backend`] and may override a step with a proven fast path.
#[async_trait]
pub trait CloseStore: Backend + AuditLog + BulkLog {
    /// Registers a new position or updates an open one (PUT semantics).
    async fn register_position(&self, cmd: &RegisterPosition) -> Result<RegisterOutcome, StoreError> {
        // Create first: a new position costs one conditional write, and an existing one
        // comes back with the failed condition where the backend returns it.
        let mut current: Option<Option<PositionAggregate>> = Some(None);
        for _ in 0..ATTEMPTS {
            let agg = match current.take() {
                Some(known) => known,
                None => self.load(RoutingKey::of(&cmd.position_id)).await?,
            };
            let (write, decided) = match decide_register(agg.as_ref(), cmd) {
                Ok(RegisterDecision::Created(p)) => {
                    let mut created = PositionAggregate::new(p.clone());
                    created.changed_by = Some(cmd.actor.clone());
                    (Write::Create(created), RegisterDecision::Created(p))
                }
                Ok(RegisterDecision::Updated(p)) => {
                    let mut next = agg
                        .clone()
                        .ok_or_else(|| StoreError::Corrupt("update without a position".into()))?;
                    let expected = next.position.version;
                    next.position = p.clone();
                    next.changed_by = Some(cmd.actor.clone());
                    (Write::Put { next, expected }, RegisterDecision::Updated(p))
                }
                other => return Ok(other),
            };
            // The account's count moves in the same atomic write: the quota cannot be
            // overrun by concurrent registrations.
            let exposure = match (&write, cmd.source.is_none()) {
                (Write::Create(a) | Write::Put { next: a, .. }, true) => {
                    adds_exposure(agg.as_ref().map(|o| &o.position), &a.position)
                }
                // Adopting what the broker already holds (sync) adds nothing: it is there.
                _ => false,
            };
            let account = match &write {
                Write::Create(a) | Write::Put { next: a, .. } => Some(a.position.account_id.clone()),
                _ => None,
            };
            let mut writes = write.with_counts(agg.as_ref(), cmd.max_live_positions);
            // While the account liquidates or is halted, nothing may add exposure: the
            // condition rides on the same atomic write, so no registration slips in
            // between a check and the liquidation's start.
            let mut guarded = false;
            for w in writes.iter_mut() {
                if let Write::Count(c) = w {
                    if c.delta > 0 && exposure {
                        c.require_active = true;
                        guarded = true;
                    }
                }
            }
            if exposure && !guarded {
                writes.extend(account.map(Write::RequireActive));
            }
            match self.commit(&writes).await? {
                Ok(()) => return Ok(Ok(decided)),
                Err(conflict) => match &writes[conflict.index] {
                    Write::Count(c) if c.ceiling.is_some() => {
                        let state = self.account_state(&c.account).await?;
                        if c.require_active && !state.trading_state.accepts_exposure() {
                            return Ok(Err(RegisterRejection::AccountHalted(state.trading_state)));
                        }
                        return Ok(Err(RegisterRejection::QuotaExceeded {
                            limit: cmd.max_live_positions,
                        }));
                    }
                    Write::RequireActive(a) => {
                        let state = self.account_state(a).await?;
                        if !state.trading_state.accepts_exposure() {
                            return Ok(Err(RegisterRejection::AccountHalted(state.trading_state)));
                        }
                        current = None; // resumed meanwhile: decide again
                    }
                    _ => current = conflict.current,
                },
            }
        }
        Err(StoreError::Contention)
    }

    async fn position(&self, id: &PositionId) -> Result<Option<Position>, StoreError> {
        Ok(self
            .aggregate(&AggregateKey::Position(id.clone()))
            .await?
            .map(|a| a.position))
    }

    /// The stored aggregates of `ids`, by position id, in one batched read where the backend
    /// has one; ids with nothing stored are left out.
    async fn aggregates_by_id(
        &self,
        ids: &[&PositionId],
    ) -> Result<std::collections::HashMap<PositionId, PositionAggregate>, StoreError> {
        aggregates_by_id(self, ids).await
    }

    /// Moves an account's trading state by the domain's table (retrying a concurrent
    /// write); the state after, or why the move is not legal from where it stands.
    async fn set_trading_state(
        &self,
        account: &AccountId,
        event: TradingStateEvent,
        actor: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Result<AccountState, IllegalTradingMove>, StoreError> {
        let mut current = self.account_state(account).await?;
        for _ in 0..ATTEMPTS {
            let next = match closeflow_domain::decide_trading_state(&current, event, actor, reason, now) {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(Ok(current)),
                Err(e) => return Ok(Err(e)),
            };
            match self.put_account_state(&next).await? {
                Ok(()) => {
                    // Recorded once the move stands (keyed by its version, so a repeat is
                    // one entry). Kept the default audit retention: the store is not told
                    // AUDIT_RETENTION. A failure here loses the entry, not the move: logged.
                    if let Some(entry) = closeflow_domain::audit::trading_state_entry(&current, &next) {
                        let retention = closeflow_domain::Policy::default().audit_retention;
                        if let Err(e) = self.record(&[entry], retention).await {
                            tracing::error!(error = %e, %account, "trading-state audit entry not recorded");
                        }
                    }
                    return Ok(Ok(next));
                }
                Err(stored) => current = stored,
            }
        }
        Err(StoreError::Contention)
    }

    /// Phase 1 of a close in one atomic conditional write: idempotency check, state
    /// validation, close request creation, position -> `closing`.
    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError> {
        open_close_request_from(self, cmd, None).await
    }

    /// The whole aggregate (strongly consistent), by position or by any of its close requests.
    async fn aggregate(&self, key: &AggregateKey) -> Result<Option<PositionAggregate>, StoreError> {
        Ok(self.load(key.routing_key()).await?.filter(|a| key.names(a)))
    }

    /// Applies one broker order update (merge and settlement rules of the domain) with one
    /// conditional write.
    /// `actor` is who relayed the update (`broker-webhook`, `trade-stream`, ...).
    async fn apply_order_update(
        &self,
        update: &OrderUpdate,
        now: Timestamp,
        actor: &str,
    ) -> Result<UpdateResult, StoreError> {
        apply_order_update_by_protocol(self, update, now, actor).await
    }

    /// Records a trader's (`actor`'s) cancel of close request `id` (once) and answers the
    /// orders to cancel at the broker; the close moves only when the broker confirms.
    async fn request_cancel(
        &self,
        id: &CloseRequestId,
        access: &Access,
        actor: &str,
        now: Timestamp,
    ) -> Result<Result<(AccountId, Vec<(ClientOrderId, String)>), ManageRejection>, StoreError> {
        let key = AggregateKey::CloseRequest(*id);
        let decided = modify(self, &key, actor, |agg| match decide_cancel(agg, id, access, now) {
            Ok(d) => Step {
                write: d.write,
                decision: Ok(d.orders),
            },
            Err(e) => Step {
                write: None,
                decision: Err(e),
            },
        })
        .await?;
        Ok(decided.map_or(Err(ManageRejection::NotFound), |m| {
            let account = m.before.position.account_id;
            m.decision.map(|orders| (account, orders))
        }))
    }

    /// A manual retry of a failed close (one conditional write); the aggregate after it,
    /// or as it is for a replay of the same key and body (then `true`).
    async fn retry_close(
        &self,
        cmd: &RetryCommand,
    ) -> Result<Result<(PositionAggregate, bool), ManageRejection>, StoreError> {
        /// What the retry's one conditional write decided.
        enum Retried {
            /// Retried (`false`) or a replay (`true`).
            Done(bool),
            Refused(ManageRejection),
            /// A leg of a multi-leg close: every failed leg is retried with it, in one commit.
            Mleg(closeflow_domain::StrategyCloseTag),
        }
        let key = AggregateKey::CloseRequest(cmd.close_request_id);
        let decided = modify(self, &key, &cmd.actor, |agg| {
            let tag = agg
                .close_request(&cmd.close_request_id)
                .and_then(|(cr, _)| cr.strategy_close)
                .filter(|t| t.mode == closeflow_domain::StrategyCloseMode::Mleg);
            let (write, decision) = match tag.map_or_else(|| Ok(decide_retry(agg, cmd)), Err) {
                Err(tag) => (None, Retried::Mleg(tag)),
                Ok(Ok(RetryDecision::Retry(next))) => (Some(*next), Retried::Done(false)),
                Ok(Ok(RetryDecision::Replay)) => (None, Retried::Done(true)),
                Ok(Err(e)) => (None, Retried::Refused(e)),
            };
            Step { write, decision }
        })
        .await?;
        let Some(m) = decided else {
            return Ok(Err(ManageRejection::NotFound));
        };
        match m.decision {
            Retried::Done(replayed) => Ok(Ok((m.after.unwrap_or(m.before), replayed))),
            Retried::Refused(e) => Ok(Err(e)),
            Retried::Mleg(tag) => retry_mleg_by_protocol(self, cmd, &tag.id).await,
        }
    }

    /// A strategy close (all legs of a strategy) in one atomic commit: every leg moves to
    /// `closing` with its own close request, or nothing is written. On DynamoDB the legs'
    /// writes are one `TransactWriteItems` (one round trip for up to 99 legs).
    async fn close_strategy(&self, cmd: &StrategyCloseCommand) -> Result<StrategyCloseOutcome, StoreError> {
        close_strategy_by_protocol(self, cmd).await
    }

    /// The strategy close `id` as its legs show it, if the caller may see it (`None`
    /// otherwise, like a missing one).
    async fn strategy_close(
        &self,
        id: &StrategyCloseId,
        access: &Access,
    ) -> Result<Option<StrategyCloseView>, StoreError> {
        let Some(anchor) = self.load(id.routing_key()).await? else {
            return Ok(None);
        };
        let Some(strategy_id) = anchor.position.strategy_id.clone() else {
            return Ok(None);
        };
        if !access.allows(&anchor.position.account_id)
            || strategy_close_view(id, std::slice::from_ref(&anchor)).is_none()
        {
            return Ok(None);
        }
        let legs = strategy_legs(self, &strategy_id, access).await?;
        Ok(strategy_close_view(id, &legs))
    }

    /// Every leg of strategy close `id` (with the rest of its strategy's positions), each
    /// loaded strongly consistent; empty when no such strategy close exists. The submitter
    /// and the broker's reports of a multi-leg order act on all legs through this.
    async fn strategy_close_legs(&self, id: &StrategyCloseId) -> Result<Vec<PositionAggregate>, StoreError> {
        strategy_close_legs_by_protocol(self, id).await
    }

    /// Applies a broker report of the multi-leg order of a strategy close: one order
    /// update per leg (see `closeflow_domain::mleg`), each through the same conditional
    /// write as a single order's. Idempotent per leg, so a redelivered report, or one
    /// interrupted half way, converges when applied again.
    async fn apply_mleg_report(
        &self,
        report: &MlegReport,
        now: Timestamp,
        actor: &str,
    ) -> Result<UpdateResult, StoreError> {
        apply_mleg_report_by_protocol(self, report, now, actor).await
    }

    /// A page of positions (by account or by strategy), newest first.
    async fn list_positions(&self, req: &ListRequest) -> Result<PositionPage, StoreError> {
        listing::list_positions(self, req).await
    }

    /// Deletes the position `seen` was read from, if it is still at that version (the
    /// caller has the aggregate: no read); false when it changed or is gone.
    async fn delete_if_unchanged(&self, seen: &PositionAggregate) -> Result<bool, StoreError> {
        let write = Write::Delete {
            id: seen.position.id.clone(),
            expected: seen.position.version,
        };
        Ok(self.commit(&write.with_counts(Some(seen), NO_LIMIT)).await?.is_ok())
    }
}

/// Phase 1 of a close, starting from an aggregate the caller already has (`current`, e.g.
/// a failed fast path's ALL_OLD image) or from a fresh load.
pub async fn open_close_request_from<S: Backend + ?Sized>(
    store: &S,
    cmd: &CloseCommand,
    mut current: Option<Option<PositionAggregate>>,
) -> Result<CloseOutcome, StoreError> {
    for _ in 0..ATTEMPTS {
        let agg = match current.take() {
            Some(known) => known,
            None => store.load(RoutingKey::of(&cmd.position_id)).await?,
        };
        match decide_close(agg.as_ref(), cmd) {
            CloseDecision::Reject(r) => return Ok(CloseOutcome::Rejected(r)),
            CloseDecision::Replay(id) => {
                let agg = agg.ok_or_else(|| StoreError::Corrupt("replay without a position".into()))?;
                let (cr, orders) = agg.close_request(&id).ok_or_else(|| {
                    StoreError::Corrupt(format!("idempotency record points at missing close request {id}"))
                })?;
                return Ok(CloseOutcome::Replayed {
                    position: agg.position.clone(),
                    close_request: cr.clone(),
                    orders: orders.to_vec(),
                });
            }
            CloseDecision::Create(next) => {
                let expected = agg.as_ref().map(|a| a.position.version).unwrap_or_default();
                let next = *next;
                let write = Write::Put {
                    next: next.clone(),
                    expected,
                };
                match store.commit(&write.with_counts(agg.as_ref(), NO_LIMIT)).await? {
                    Ok(()) => {
                        let close_request = next
                            .latest_close_request
                            .ok_or_else(|| StoreError::Corrupt("created aggregate has no close request".into()))?;
                        return Ok(CloseOutcome::Created {
                            position: next.position,
                            close_request,
                        });
                    }
                    Err(conflict) => current = conflict.current,
                }
            }
        }
    }
    Err(StoreError::Contention)
}

/// What [`CloseStore::close_strategy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrategyCloseOutcome {
    Created(StrategyCloseView),
    Replayed(StrategyCloseView),
    Rejected(StrategyCloseRejection),
}

/// The most legs one strategy listing reads: a runaway strategy id is refused by the
/// domain (`MAX_LEGS`) long before this bound.
const STRATEGY_LEG_BOUND: usize = 1_000;

/// Every leg of a strategy the caller may act on, each loaded strongly consistent (the
/// index only finds them; the conditional writes are decided on the items themselves).
pub async fn strategy_legs<S: Backend + ?Sized>(
    store: &S,
    strategy_id: &str,
    access: &Access,
) -> Result<Vec<PositionAggregate>, StoreError> {
    let indexed = indexed_strategy_legs(store, strategy_id, access).await?;
    let ids: Vec<&PositionId> = indexed.iter().map(|p| &p.position.id).collect();
    let mut loaded = aggregates_by_id(store, &ids).await?;
    // In the index's order (newest first), each once.
    Ok(indexed.iter().filter_map(|p| loaded.remove(&p.position.id)).collect())
}

/// See [`CloseStore::aggregates_by_id`]: one batched read of each distinct id.
pub async fn aggregates_by_id<S: Backend + ?Sized>(
    store: &S,
    ids: &[&PositionId],
) -> Result<std::collections::HashMap<PositionId, PositionAggregate>, StoreError> {
    let wanted: std::collections::HashSet<&PositionId> = ids.iter().copied().collect();
    let keys: Vec<RoutingKey> = wanted.iter().map(|id| RoutingKey::of(id)).collect();
    Ok(store
        .load_many(&keys)
        .await?
        .into_iter()
        // Only what was asked for: a routing key is shared by 1 in 2^60 pairs.
        .filter(|a| wanted.contains(&a.position.id))
        .map(|a| (a.position.id.clone(), a))
        .collect())
}

/// Every leg of a strategy the caller may act on, as the index holds it (whole aggregates,
/// possibly a moment old): good for deciding a write whose version conditions catch
/// anything stale, never for answering.
async fn indexed_strategy_legs<S: Backend + ?Sized>(
    store: &S,
    strategy_id: &str,
    access: &Access,
) -> Result<Vec<PositionAggregate>, StoreError> {
    let accounts = match access {
        Access::All => None,
        Access::Accounts(set) => Some(set.iter().cloned().collect()),
    };
    let mut positions = Vec::new();
    let mut after = None;
    loop {
        let page = listing::list_positions(
            store,
            &ListRequest {
                scope: Scope::Strategy {
                    strategy_id: strategy_id.to_string(),
                    accounts: accounts.clone(),
                },
                status: None,
                after,
                limit: listing::MAX_PAGE,
            },
        )
        .await?;
        positions.extend(page.positions);
        match page.next {
            Some(next) if positions.len() < STRATEGY_LEG_BOUND => after = Some(next),
            _ => break,
        }
    }
    Ok(positions)
}

/// The protocol's strategy close: find the legs, decide with the domain, write every leg
/// with its version condition in one commit; on a lost race load again and re-decide (a
/// racing close with another key then finds the legs `closing` and is refused).
///
/// The first decision is made on the legs as the index holds them (whole aggregates, one
/// round trip): the commit's version conditions refuse anything stale, so a close that
/// goes through costs the index query and the write. A refusal, a replay or a lost race
/// is decided again on the legs read strongly consistent, so nobody is answered from a
/// stale index.
pub async fn close_strategy_by_protocol<S: Backend + ?Sized>(
    store: &S,
    cmd: &StrategyCloseCommand,
) -> Result<StrategyCloseOutcome, StoreError> {
    let mut consistent = false;
    for _ in 0..ATTEMPTS {
        let legs = match consistent {
            true => strategy_legs(store, &cmd.strategy_id, &cmd.access).await?,
            false => indexed_strategy_legs(store, &cmd.strategy_id, &cmd.access).await?,
        };
        match decide_strategy_close(&legs, cmd) {
            // No leg found: the strong read goes through the same index; nothing to check.
            StrategyCloseDecision::Reject(StrategyCloseRejection::NotFound) => {
                return Ok(StrategyCloseOutcome::Rejected(StrategyCloseRejection::NotFound))
            }
            StrategyCloseDecision::Reject(_) | StrategyCloseDecision::Replay(_) if !consistent => {
                consistent = true;
                continue;
            }
            StrategyCloseDecision::Reject(r) => return Ok(StrategyCloseOutcome::Rejected(r)),
            StrategyCloseDecision::Replay(id) => {
                let view = strategy_close_view(&id, &legs).ok_or_else(|| {
                    StoreError::Corrupt(format!("idempotency record points at missing strategy close {id}"))
                })?;
                return Ok(StrategyCloseOutcome::Replayed(view));
            }
            StrategyCloseDecision::Create { id, legs: next, .. } => {
                let writes = leg_writes(&legs, &next, &cmd.actor)?;
                // DynamoDB's transaction limit; the domain's leg bound keeps us below it.
                if writes.len() > 100 {
                    return Ok(StrategyCloseOutcome::Rejected(StrategyCloseRejection::TooManyLegs {
                        legs: next.len(),
                    }));
                }
                match store.commit(&writes).await? {
                    Ok(()) => {
                        let view = strategy_close_view(&id, &next)
                            .ok_or_else(|| StoreError::Corrupt("created strategy close has no legs".into()))?;
                        return Ok(StrategyCloseOutcome::Created(view));
                    }
                    // A leg changed meanwhile (or the index was behind): nothing was
                    // written; decide again on what is stored.
                    Err(_) => consistent = true,
                }
            }
        }
    }
    Err(StoreError::Contention)
}

/// One commit's writes for several legs decided at once: each leg at the version it was
/// decided on (`loaded`), with the account counts it changes, stamped with `actor`.
fn leg_writes(loaded: &[PositionAggregate], next: &[PositionAggregate], actor: &str) -> Result<Vec<Write>, StoreError> {
    let mut writes = Vec::with_capacity(next.len());
    for mut after in next.iter().cloned() {
        let before = loaded
            .iter()
            .find(|l| l.position.id == after.position.id)
            .ok_or_else(|| StoreError::Corrupt("decided leg was not loaded".into()))?;
        after.changed_by = Some(actor.to_string());
        let expected = before.position.version;
        writes.extend(Write::Put { next: after, expected }.with_counts(Some(before), NO_LIMIT));
    }
    Ok(writes)
}

/// See [`CloseStore::retry_close`]: a manual retry of a leg of `mleg` strategy close `id`,
/// decided over every leg and written in one commit (all legs or none); on a lost race
/// load again and re-decide.
pub async fn retry_mleg_by_protocol<S: Backend + ?Sized>(
    store: &S,
    cmd: &RetryCommand,
    id: &StrategyCloseId,
) -> Result<Result<(PositionAggregate, bool), ManageRejection>, StoreError> {
    for _ in 0..ATTEMPTS {
        let legs = strategy_close_legs_by_protocol(store, id).await?;
        let Some(requested) = legs.iter().find(|l| l.close_request(&cmd.close_request_id).is_some()) else {
            return Ok(Err(ManageRejection::NotFound));
        };
        let next = match decide_mleg_retry(requested, &legs, cmd) {
            Err(e) => return Ok(Err(e)),
            Ok(LegsRetryDecision::Replay) => return Ok(Ok((requested.clone(), true))),
            Ok(LegsRetryDecision::Retry(next)) => next,
        };
        let writes = leg_writes(&legs, &next, &cmd.actor)?;
        match store.commit(&writes).await? {
            Ok(()) => {
                let mut first = next.into_iter().next().expect("the requested leg is decided first");
                first.changed_by = Some(cmd.actor.clone());
                return Ok(Ok((first, false)));
            }
            // A leg changed meanwhile: nothing was written; decide again.
            Err(_) => continue,
        }
    }
    Err(StoreError::Contention)
}

/// Loads an aggregate, applies the pure step `f`, and writes its result only if nothing
/// changed the aggregate meanwhile (re-decides a few times, then `Contention`). `None`
/// when the aggregate does not exist. `f`'s write must be the same position, version + 1;
/// it is stamped with `actor`, who made the change.
pub async fn modify<S, T, F>(
    store: &S,
    key: &AggregateKey,
    actor: &str,
    f: F,
) -> Result<Option<Modified<T>>, StoreError>
where
    S: Backend + ?Sized,
    F: Fn(&PositionAggregate) -> Step<T> + Send + Sync,
    T: Send,
{
    let mut current: Option<Option<PositionAggregate>> = None;
    for _ in 0..ATTEMPTS {
        let loaded = match current.take() {
            Some(known) => known,
            None => store.load(key.routing_key()).await?,
        };
        let Some(before) = loaded.filter(|a| key.names(a)) else {
            return Ok(None);
        };
        let Step { write, decision } = f(&before);
        let Some(mut after) = write else {
            return Ok(Some(Modified {
                before,
                after: None,
                decision,
            }));
        };
        if after.position.version != before.position.version + 1 || after.position.id != before.position.id {
            return Err(StoreError::Corrupt(
                "modify must bump the version of the same position".into(),
            ));
        }
        after.changed_by = Some(actor.to_string());
        let w = Write::Put {
            next: after.clone(),
            expected: before.position.version,
        };
        match store.commit(&w.with_counts(Some(&before), NO_LIMIT)).await? {
            Ok(()) => {
                return Ok(Some(Modified {
                    before,
                    after: Some(after),
                    decision,
                }))
            }
            // Someone wrote first: decide again on their result.
            Err(conflict) => current = conflict.current,
        }
    }
    Err(StoreError::Contention)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkList {
    Attention,
    Expiry,
}

impl WorkList {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkList::Attention => "ATTENTION",
            WorkList::Expiry => "EXPIRY",
        }
    }
}

/// A page of a work list, with how many stored items were read to produce it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    pub aggregates: Vec<PositionAggregate>,
    pub items_read: usize,
}

/// The work list an aggregate belongs on, and since when (see `closeflow_domain::reconcile`).
pub fn work_list_entry(agg: &PositionAggregate) -> Option<(WorkList, Timestamp)> {
    if let Some(t) = closeflow_domain::attention_since(agg) {
        return Some((WorkList::Attention, t));
    }
    closeflow_domain::expiry_at(agg, chrono::TimeDelta::zero()).map(|t| (WorkList::Expiry, t))
}

/// What applying a broker order update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateResult {
    Applied {
        position_status: PositionStatus,
        close_request_status: CloseRequestStatus,
    },
    Ignored(Ignored),
    UnknownOrder,
}

impl UpdateResult {
    fn applied(after: &PositionAggregate) -> Self {
        UpdateResult::Applied {
            position_status: after.position.status,
            close_request_status: after
                .latest_close_request
                .as_ref()
                .map(|c| c.status)
                .unwrap_or(CloseRequestStatus::Pending),
        }
    }
}

/// The protocol's path for a broker update: load, decide with the domain, conditional write.
/// An update naming no close request may name a strategy close's multi-leg order
/// (`{strategy_close_id}-{n}`): it is then applied to every leg, each leg's fill read
/// from the order's filled units and the leg's ratio.
pub async fn apply_order_update_by_protocol<S: Backend + ?Sized>(
    store: &S,
    update: &OrderUpdate,
    now: Timestamp,
    actor: &str,
) -> Result<UpdateResult, StoreError> {
    match apply_leg_update(store, update, now, actor).await? {
        UpdateResult::UnknownOrder => {
            let report = MlegReport {
                client_order_id: update.client_order_id.clone(),
                broker_order_id: update.broker_order_id.clone(),
                status: update.status,
                filled_qty: update.filled_qty,
                legs: vec![],
                seq: update.seq,
                execution_id: update.execution_id.clone(),
                updated_at: update.updated_at,
            };
            apply_mleg_report_by_protocol(store, &report, now, actor).await
        }
        known => Ok(known),
    }
}

/// See [`CloseStore::strategy_close_legs`]: the id's first leg, then the strategy's legs
/// through the `by_strategy` index.
pub async fn strategy_close_legs_by_protocol<S: Backend + ?Sized>(
    store: &S,
    id: &StrategyCloseId,
) -> Result<Vec<PositionAggregate>, StoreError> {
    let Some(anchor) = store.load(id.routing_key()).await? else {
        return Ok(vec![]);
    };
    let Some(strategy_id) = anchor.position.strategy_id.clone() else {
        return Ok(vec![]);
    };
    if strategy_close_view(id, std::slice::from_ref(&anchor)).is_none() {
        return Ok(vec![]);
    }
    strategy_legs(store, &strategy_id, &Access::All).await
}

/// See [`CloseStore::apply_mleg_report`]. The answer is the first leg's that changed, or
/// else the first leg's (they move together).
pub async fn apply_mleg_report_by_protocol<S: Backend + ?Sized>(
    store: &S,
    report: &MlegReport,
    now: Timestamp,
    actor: &str,
) -> Result<UpdateResult, StoreError> {
    let id = StrategyCloseId::from_close_request_id(report.client_order_id.close_request_id);
    let legs = strategy_close_legs_by_protocol(store, &id).await?;
    if legs.is_empty() {
        return Ok(UpdateResult::UnknownOrder);
    }
    let updates = match leg_updates(&id, &legs, report) {
        Ok(u) => u,
        Err(e) => {
            // A report that does not fit the order placed: nothing is written; a human
            // looks (the reconciler's lookups keep the legs in view meanwhile).
            tracing::error!(error = %e, client_order_id = %report.client_order_id, "multi-leg report refused");
            return Ok(UpdateResult::Ignored(Ignored::NoChange));
        }
    };
    let mut answer: Option<UpdateResult> = None;
    for (_, u) in &updates {
        let r = apply_leg_update(store, u, now, actor).await?;
        answer = match answer {
            Some(a @ UpdateResult::Applied { .. }) => Some(a),
            Some(a) if !matches!(r, UpdateResult::Applied { .. }) => Some(a),
            _ => Some(r),
        };
    }
    Ok(answer.unwrap_or(UpdateResult::UnknownOrder))
}

/// One order update of one close request: load, decide with the domain, conditional write.
async fn apply_leg_update<S: Backend + ?Sized>(
    store: &S,
    update: &OrderUpdate,
    now: Timestamp,
    actor: &str,
) -> Result<UpdateResult, StoreError> {
    let key = AggregateKey::CloseRequest(update.client_order_id.close_request_id);
    let decided = modify(store, &key, actor, |agg| {
        Step::applied(apply_order_update(agg, update, now))
    })
    .await?;
    let Some(m) = decided else {
        return Ok(UpdateResult::UnknownOrder);
    };
    Ok(match (&m.after, m.decision) {
        (Some(after), _) => UpdateResult::applied(after),
        (None, Ok(Applied::Ignored(why))) => UpdateResult::Ignored(why),
        (None, Ok(Applied::UnknownOrder)) => UpdateResult::UnknownOrder,
        (None, Ok(Applied::Changed(_))) => UpdateResult::Ignored(Ignored::NoChange),
        (None, Err(illegal)) => {
            // The domain refused the move; nothing was written. Worth a human's eye.
            tracing::error!(error = %illegal, client_order_id = %update.client_order_id, "illegal transition from broker update");
            UpdateResult::Ignored(Ignored::NoChange)
        }
    })
}
