//! In-memory backend. One mutex over all aggregates: every commit is a short critical
//! section with no await inside, which gives the same atomicity as a DynamoDB transaction.
//! Commits append to an in-memory change log, acknowledged entries are trimmed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::{
    AccountId, AccountState, AuditEntry, BulkClose, BulkCloseId, BulkPage, CountChange, DrawdownState,
    PositionAggregate, RoutingKey, Timestamp,
};

use crate::audit::{account_lower_bound, trail_key, AuditLog, AuditPage, AuditQuery};
use crate::bulk::BulkLog;
use crate::dynamo::codec::created_sk;
use crate::listing::{IndexPage, IndexQuery, ListIndex};
use crate::{
    work_list_entry, Backend, Change, ChangeLog, CloseStore, Conflict, Listed, Sequenced, StoreError, WorkList, Write,
};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    aggregates: HashMap<RoutingKey, PositionAggregate>,
    /// The sparse work-list index: (list, since, routing key) for listed aggregates only.
    lists: BTreeSet<(WorkList, Timestamp, RoutingKey)>,
    log: VecDeque<Sequenced>,
    next_seq: u64,
    /// Live positions per account.
    counts: HashMap<AccountId, i64>,
    /// Trading states of the accounts that ever had one written.
    states: HashMap<AccountId, AccountState>,
    /// Audit entries by (position, entry key), with when each expires.
    audit: BTreeMap<(String, String), (AuditEntry, Timestamp)>,
    /// The listing indexes: (account or strategy, created_sk, routing key).
    by_account: BTreeSet<(String, String, RoutingKey)>,
    by_strategy: BTreeSet<(String, String, RoutingKey)>,
    bulk: HashMap<BulkCloseId, BulkClose>,
    bulk_pages: BTreeMap<(BulkCloseId, u32), BulkPage>,
    drawdown: HashMap<AccountId, (DrawdownState, u64)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation completes inside one critical section, so a poisoned lock is
        // still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores an aggregate as given: fixtures for states the API cannot reach on its own.
    pub fn insert_aggregate(&self, agg: PositionAggregate) {
        let mut inner = self.lock();
        let key = RoutingKey::of(&agg.position.id);
        inner.put(key, Some(agg));
    }
}

impl Inner {
    /// Replaces (or removes) what is stored under `key`, keeping the lists and the log.
    fn put(&mut self, key: RoutingKey, agg: Option<PositionAggregate>) {
        let before = match &agg {
            Some(a) => self.aggregates.insert(key, a.clone()),
            None => self.aggregates.remove(&key),
        };
        if let Some((list, t)) = before.as_ref().and_then(work_list_entry) {
            self.lists.remove(&(list, t, key));
        }
        if let Some((list, t)) = agg.as_ref().and_then(work_list_entry) {
            self.lists.insert((list, t, key));
        }
        if let Some(b) = &before {
            let sk = created_sk(&b.position);
            self.by_account
                .remove(&(b.position.account_id.as_str().to_string(), sk.clone(), key));
            if let Some(s) = &b.position.strategy_id {
                self.by_strategy.remove(&(s.clone(), sk, key));
            }
        }
        if let Some(a) = &agg {
            let sk = created_sk(&a.position);
            self.by_account
                .insert((a.position.account_id.as_str().to_string(), sk.clone(), key));
            if let Some(s) = &a.position.strategy_id {
                self.by_strategy.insert((s.clone(), sk, key));
            }
        }
        if let Some(after) = agg {
            self.next_seq += 1;
            let seq = self.next_seq;
            self.log.push_back(Sequenced {
                seq,
                change: Change { before, after },
            });
        }
    }
}

/// Whether a count change may be applied to `current` (its ceiling, if any, holds).
pub(crate) fn count_allows(current: i64, c: &CountChange) -> bool {
    c.ceiling
        .is_none_or(|max| i128::from(current) + i128::from(c.delta) <= i128::from(max))
}

/// Whether `write`'s condition holds against `current`, the stored aggregate (position
/// writes only; see [`count_allows`] for counts).
pub(crate) fn condition_holds(write: &Write, current: Option<&PositionAggregate>) -> bool {
    match write {
        Write::Count(_) | Write::RequireActive(_) => true,
        Write::Create(_) => current.is_none(),
        Write::Put { next, expected } => {
            current.is_some_and(|c| c.position.id == next.position.id && c.position.version == *expected)
        }
        Write::Delete { id, expected } => {
            current.is_some_and(|c| c.position.id == *id && c.position.version == *expected)
        }
    }
}

#[async_trait]
impl Backend for MemoryStore {
    async fn load(&self, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError> {
        Ok(self.lock().aggregates.get(&routing).cloned())
    }

    async fn commit(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError> {
        let mut inner = self.lock();
        for (index, w) in writes.iter().enumerate() {
            let active = |a: &AccountId| inner.states.get(a).is_none_or(|s| s.trading_state.accepts_exposure());
            let conflict = match (w, w.routing_key()) {
                (Write::Count(c), _) => {
                    let current = inner.counts.get(&c.account).copied().unwrap_or(0);
                    (!count_allows(current, c) || (c.require_active && !active(&c.account))).then_some(None)
                }
                (Write::RequireActive(a), _) => (!active(a)).then_some(None),
                (_, Some(key)) => {
                    let current = inner.aggregates.get(&key);
                    (!condition_holds(w, current)).then(|| Some(current.cloned()))
                }
                (_, None) => None,
            };
            if let Some(current) = conflict {
                return Ok(Err(Conflict { index, current }));
            }
        }
        for w in writes {
            match (w, w.routing_key()) {
                (Write::Count(c), _) => *inner.counts.entry(c.account.clone()).or_default() += c.delta,
                (Write::Create(a) | Write::Put { next: a, .. }, Some(key)) => inner.put(key, Some(a.clone())),
                (Write::Delete { .. }, Some(key)) => inner.put(key, None),
                _ => {}
            }
        }
        Ok(Ok(()))
    }

    async fn live_positions(&self, account: &AccountId) -> Result<i64, StoreError> {
        Ok(self.lock().counts.get(account).copied().unwrap_or(0))
    }

    async fn account_state(&self, account: &AccountId) -> Result<AccountState, StoreError> {
        Ok(self
            .lock()
            .states
            .get(account)
            .cloned()
            .unwrap_or_else(|| AccountState::new(account.clone())))
    }

    async fn put_account_state(&self, next: &AccountState) -> Result<Result<(), AccountState>, StoreError> {
        let mut inner = self.lock();
        let current = inner
            .states
            .get(&next.account_id)
            .cloned()
            .unwrap_or_else(|| AccountState::new(next.account_id.clone()));
        if current.version + 1 != next.version {
            return Ok(Err(current));
        }
        inner.states.insert(next.account_id.clone(), next.clone());
        Ok(Ok(()))
    }

    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError> {
        let inner = self.lock();
        let aggregates: Vec<_> = inner
            .lists
            .range((list, Timestamp::MIN_UTC, RoutingKey::MIN)..)
            .take_while(|(l, t, _)| *l == list && *t <= since)
            .take(limit)
            .filter_map(|(_, _, key)| inner.aggregates.get(key).cloned())
            .collect();
        Ok(Listed {
            items_read: aggregates.len(),
            aggregates,
        })
    }

    async fn list_index(&self, q: &IndexQuery) -> Result<IndexPage, StoreError> {
        let inner = self.lock();
        let (set, key) = match &q.index {
            ListIndex::Account(a) => (&inner.by_account, a.as_str().to_string()),
            ListIndex::Strategy(s) => (&inner.by_strategy, s.clone()),
        };
        let low = (key.clone(), String::new(), RoutingKey::MIN);
        // Exclusive upper end: below `before`, or past every entry of this key (no key
        // holds a NUL character).
        let high = match &q.before {
            Some(b) => (key.clone(), b.clone(), RoutingKey::MIN),
            None => (format!("{key}\u{0}"), String::new(), RoutingKey::MIN),
        };
        let read = set
            .range(low..high)
            .rev()
            .take(q.read_limit())
            .filter_map(|(_, sk, rk)| inner.aggregates.get(rk).map(|a| (sk.clone(), a.clone())))
            .collect();
        Ok(q.page(read))
    }
}

impl CloseStore for MemoryStore {}

#[async_trait]
impl ChangeLog for MemoryStore {
    async fn unacknowledged(&self, limit: usize) -> Result<Vec<Sequenced>, StoreError> {
        Ok(self.lock().log.iter().take(limit).cloned().collect())
    }

    async fn acknowledge(&self, seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        while inner.log.front().is_some_and(|s| s.seq <= seq) {
            inner.log.pop_front();
        }
        Ok(())
    }
}

#[async_trait]
impl BulkLog for MemoryStore {
    async fn create_bulk_close(&self, bulk: &BulkClose) -> Result<Option<BulkClose>, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.bulk.get(&bulk.id) {
            return Ok(Some(existing.clone()));
        }
        inner.bulk.insert(bulk.id, bulk.clone());
        Ok(None)
    }

    async fn update_bulk_close(&self, next: &BulkClose) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.bulk.get_mut(&next.id) {
            Some(stored) if stored.version + 1 == next.version => {
                *stored = next.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn bulk_close(&self, id: &BulkCloseId) -> Result<Option<BulkClose>, StoreError> {
        Ok(self.lock().bulk.get(id).cloned())
    }

    async fn put_bulk_page(&self, id: &BulkCloseId, page: &BulkPage) -> Result<(), StoreError> {
        self.lock().bulk_pages.insert((*id, page.number), page.clone());
        Ok(())
    }

    async fn bulk_pages(&self, id: &BulkCloseId) -> Result<Vec<BulkPage>, StoreError> {
        Ok(self
            .lock()
            .bulk_pages
            .range((*id, 0)..=(*id, u32::MAX))
            .map(|(_, p)| p.clone())
            .collect())
    }

    async fn drawdown_state(&self, account: &AccountId) -> Result<Option<(DrawdownState, u64)>, StoreError> {
        Ok(self.lock().drawdown.get(account).copied())
    }

    async fn put_drawdown_state(
        &self,
        account: &AccountId,
        state: &DrawdownState,
        version: u64,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let stored = inner.drawdown.get(account).map_or(0, |(_, v)| *v);
        if stored + 1 != version {
            return Ok(false);
        }
        inner.drawdown.insert(account.clone(), (*state, version));
        Ok(true)
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn record(&self, entries: &[AuditEntry], retention: chrono::TimeDelta) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for e in entries {
            inner
                .audit
                .insert((e.position_id.to_string(), e.sort_key()), (e.clone(), e.at + retention));
        }
        Ok(())
    }

    async fn trail(&self, query: &AuditQuery, limit: usize, cursor: Option<&str>) -> Result<AuditPage, StoreError> {
        let inner = self.lock();
        let mut keyed: Vec<(String, &AuditEntry)> = inner
            .audit
            .values()
            .map(|(e, _)| e)
            .filter(|e| match query {
                AuditQuery::Position(p) => e.position_id == *p,
                AuditQuery::Account { account, .. } => e.account_id == *account,
            })
            .map(|e| (trail_key(query, e), e))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let floor = match query {
            AuditQuery::Account { since, .. } => account_lower_bound(since.as_ref()),
            AuditQuery::Position(_) => String::new(),
        };
        let mut entries: Vec<(String, AuditEntry)> = keyed
            .into_iter()
            .filter(|(k, _)| *k >= floor && cursor.is_none_or(|c| k.as_str() > c))
            .take(limit + 1)
            .map(|(k, e)| (k, e.clone()))
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok(AuditPage {
            next_cursor: if more {
                entries.last().map(|(k, _)| k.clone())
            } else {
                None
            },
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }

    async fn expire_audit(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.audit.len();
        inner.audit.retain(|_, (_, expires)| *expires >= now);
        Ok(before - inner.audit.len())
    }
}
