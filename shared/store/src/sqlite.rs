//! SQLite backend: the durable single-node store of the embedded stack (`make run`).
//!
//! One row per aggregate, keyed by the position's routing key, holding the same item
//! document as DynamoDB (its typed JSON form, so one codec and its round-trip tests serve
//! both and decimals stay exact strings). A commit is one SQLite transaction that writes
//! the rows, their work-list columns and the change log (`outbox`) together. WAL journal
//! with `synchronous=NORMAL`: a committed transaction survives a process crash (`kill -9`);
//! `CLOSEFLOW_DB_SYNC=full` also makes it survive a power loss, at an fsync per commit
//! (`off`: no fsync at all, for simulations).
//!
//! The same file holds the durable order queue (`queue`), so a message relayed from the
//! outbox and not yet handled by the submitter is still there after a restart.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use closeflow_domain::{
    format_timestamp, AccountId, AccountState, AuditEntry, BulkClose, BulkCloseId, BulkPage, DrawdownState,
    PositionAggregate, RoutingKey, Timestamp, TradingState,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use crate::audit::{account_key, account_lower_bound, AuditLog, AuditPage, AuditQuery};
use crate::bulk::{self, BulkLog};
use crate::dynamo::codec;
use crate::dynamo::json::{item_from_json, item_to_json};
use crate::listing::{IndexPage, IndexQuery, ListIndex};
use crate::{
    work_list_entry, Backend, Change, ChangeLog, CloseStore, Conflict, Listed, Sequenced, StoreError, WorkList, Write,
};

/// The listing indexes, created once the columns exist (files from before listings get
/// them added by [`migrate_listing_columns`]).
const LISTING_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS aggregates_by_account ON aggregates (account_id, created_sk);
CREATE INDEX IF NOT EXISTS aggregates_by_strategy ON aggregates (strategy_id, created_sk) WHERE strategy_id IS NOT NULL;
";

/// Adds and fills the listing columns in a database written before listings existed.
fn migrate_listing_columns(conn: &Connection) -> Result<(), StoreError> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('aggregates') WHERE name = 'created_sk'")
        .map_err(sql)?
        .exists([])
        .map_err(sql)?;
    if has {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE aggregates ADD COLUMN account_id TEXT; \
         ALTER TABLE aggregates ADD COLUMN strategy_id TEXT; \
         ALTER TABLE aggregates ADD COLUMN created_sk TEXT;",
    )
    .map_err(sql)?;
    let rows: Vec<(i64, String)> = {
        let mut stmt = conn.prepare("SELECT routing_key, item FROM aggregates").map_err(sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        rows
    };
    for (key, item) in rows {
        let agg = decode(&item)?;
        conn.execute(
            "UPDATE aggregates SET account_id = ?2, strategy_id = ?3, created_sk = ?4 WHERE routing_key = ?1",
            params![
                key,
                agg.position.account_id.as_str(),
                agg.position.strategy_id,
                codec::created_sk(&agg.position)
            ],
        )
        .map_err(sql)?;
    }
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS aggregates (
    routing_key INTEGER PRIMARY KEY,
    position_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    list        TEXT,
    list_at     TEXT,
    item        TEXT NOT NULL,
    account_id  TEXT,
    strategy_id TEXT,
    created_sk  TEXT
);
CREATE INDEX IF NOT EXISTS aggregates_work_list ON aggregates (list, list_at) WHERE list IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    before TEXT,
    after  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_id TEXT NOT NULL UNIQUE,
    group_id TEXT NOT NULL,
    body     TEXT NOT NULL,
    done     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_pending ON queue (done, seq);
CREATE TABLE IF NOT EXISTS audit (
    position_id TEXT NOT NULL,
    entry_key   TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    account_key TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    entry       TEXT NOT NULL,
    PRIMARY KEY (position_id, entry_key)
);
CREATE INDEX IF NOT EXISTS audit_by_account ON audit (account_id, account_key);
CREATE INDEX IF NOT EXISTS audit_expiry ON audit (expires_at);
CREATE TABLE IF NOT EXISTS account_counts (
    account_id TEXT PRIMARY KEY,
    live       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS account_states (
    account_id    TEXT PRIMARY KEY,
    version       INTEGER NOT NULL,
    trading_state TEXT NOT NULL,
    changed_at    TEXT,
    changed_by    TEXT,
    reason        TEXT
);
CREATE TABLE IF NOT EXISTS bulk_closes (
    id      TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drawdown_states (
    account_id TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bulk_pages (
    id     TEXT NOT NULL,
    number INTEGER NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (id, number)
);
";

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Where the data lives (`:memory:` for a private in-memory database).
    location: String,
}

fn sql(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Contention
        }
        other => StoreError::Backend(format!("sqlite: {other}")),
    }
}

/// A queued message as stored: its sequence, group, deduplication id and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRow {
    pub seq: u64,
    pub group_id: String,
    pub dedup_id: String,
    pub body: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, or a private in-memory one for
    /// `:memory:`. Parent directories are created.
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory().map_err(sql)?
        } else {
            if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
            }
            Connection::open(path).map_err(sql)?
        };
        let sync = match std::env::var("CLOSEFLOW_DB_SYNC").as_deref() {
            Ok("full") => "FULL",
            // Still safe against a process crash (every commit reaches the OS), not
            // against an OS crash or power loss: for simulations and throwaway stacks.
            Ok("off") => "OFF",
            _ => "NORMAL",
        };
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        migrate_listing_columns(&conn)?;
        conn.execute_batch(LISTING_INDEXES).map_err(sql)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            location: path.to_string(),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic inside a transaction rolls it back when the transaction is dropped, so
        // a poisoned connection is still consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a message unless one with the same deduplication id was ever queued (the
    /// durable twin of SQS FIFO deduplication). True when it was added.
    pub fn enqueue(&self, group_id: &str, dedup_id: &str, body: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO queue (dedup_id, group_id, body) VALUES (?1, ?2, ?3)",
                params![dedup_id, group_id, body],
            )
            .map_err(sql)?;
        Ok(n == 1)
    }

    /// Messages not yet handled, oldest first (FIFO within each group, as queued).
    pub fn queued(&self, limit: usize) -> Result<Vec<QueuedRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT seq, group_id, dedup_id, body FROM queue WHERE done = 0 ORDER BY seq LIMIT ?1")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(QueuedRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    group_id: r.get(1)?,
                    dedup_id: r.get(2)?,
                    body: r.get(3)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql)
    }

    /// A message was handled: it is never delivered again (its dedup id stays known).
    pub fn dequeue(&self, seq: u64) -> Result<(), StoreError> {
        self.lock()
            .execute("UPDATE queue SET done = 1 WHERE seq = ?1", params![seq as i64])
            .map_err(sql)?;
        Ok(())
    }
}

fn read_row(conn: &Connection, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT item FROM aggregates WHERE routing_key = ?1")
        .map_err(sql)?
        .query_row(params![routing.value() as i64], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    text.map(|t| decode(&t)).transpose()
}

fn read_count(conn: &Connection, account: &AccountId) -> Result<i64, StoreError> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT live FROM account_counts WHERE account_id = ?1")
        .map_err(sql)?
        .query_row(params![account.as_str()], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    Ok(n.unwrap_or(0))
}

fn read_account_state(conn: &Connection, account: &AccountId) -> Result<AccountState, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT version, trading_state, changed_at, changed_by, reason FROM account_states WHERE account_id = ?1",
        )
        .map_err(sql)?
        .query_row(params![account.as_str()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()
        .map_err(sql)?;
    let Some((version, state, at, by, reason)) = row else {
        return Ok(AccountState::new(account.clone()));
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("{what} of account {account}"));
    Ok(AccountState {
        account_id: account.clone(),
        trading_state: TradingState::parse(&state).ok_or_else(|| corrupt("trading_state"))?,
        version: version as u64,
        changed_at: at
            .map(|t| closeflow_domain::parse_timestamp(&t).ok_or_else(|| corrupt("changed_at")))
            .transpose()?,
        changed_by: by,
        reason,
    })
}

fn encode(agg: &PositionAggregate) -> String {
    item_to_json(&codec::aggregate_item(agg)).to_string()
}

fn decode(text: &str) -> Result<PositionAggregate, StoreError> {
    let value: Value = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("item JSON: {e}")))?;
    codec::aggregate_from_item(&item_from_json(&value)?)
}

#[async_trait]
impl Backend for SqliteStore {
    async fn load(&self, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError> {
        read_row(&self.lock(), routing)
    }

    async fn commit(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: the write lock is taken before the conditions are read, so no other
        // connection to the file can change a row between the check and the write.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let mut befores = Vec::with_capacity(writes.len());
        for (index, w) in writes.iter().enumerate() {
            let Some(routing) = w.routing_key() else {
                let active = |a: &AccountId| -> Result<bool, StoreError> {
                    Ok(read_account_state(&tx, a)?.trading_state.accepts_exposure())
                };
                let holds = match w {
                    Write::Count(c) => {
                        crate::memory::count_allows(read_count(&tx, &c.account)?, c)
                            && (!c.require_active || active(&c.account)?)
                    }
                    Write::RequireActive(a) => active(a)?,
                    _ => true,
                };
                if !holds {
                    return Ok(Err(Conflict { index, current: None }));
                }
                befores.push(None);
                continue;
            };
            let current = read_row(&tx, routing)?;
            if !crate::memory::condition_holds(w, current.as_ref()) {
                return Ok(Err(Conflict {
                    index,
                    current: Some(current),
                }));
            }
            befores.push(current);
        }
        for (w, before) in writes.iter().zip(befores) {
            let key = w.routing_key().map(|k| k.value() as i64);
            match w {
                Write::Count(c) => {
                    tx.prepare_cached(
                        "INSERT INTO account_counts (account_id, live) VALUES (?1, ?2) \
                         ON CONFLICT (account_id) DO UPDATE SET live = live + excluded.live",
                    )
                    .map_err(sql)?
                    .execute(params![c.account.as_str(), c.delta])
                    .map_err(sql)?;
                }
                Write::Create(agg) | Write::Put { next: agg, .. } => {
                    let entry = work_list_entry(agg);
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO aggregates \
                         (routing_key, position_id, version, list, list_at, item, account_id, strategy_id, created_sk) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .map_err(sql)?
                    .execute(params![
                        key,
                        agg.position.id.as_str(),
                        agg.position.version as i64,
                        entry.map(|(l, _)| l.as_str()),
                        entry.map(|(_, t)| format_timestamp(&t)),
                        encode(agg),
                        agg.position.account_id.as_str(),
                        agg.position.strategy_id,
                        codec::created_sk(&agg.position),
                    ])
                    .map_err(sql)?;
                    tx.prepare_cached("INSERT INTO outbox (before, after) VALUES (?1, ?2)")
                        .map_err(sql)?
                        .execute(params![before.as_ref().map(encode), encode(agg)])
                        .map_err(sql)?;
                }
                Write::Delete { .. } => {
                    tx.prepare_cached("DELETE FROM aggregates WHERE routing_key = ?1")
                        .map_err(sql)?
                        .execute(params![key])
                        .map_err(sql)?;
                }
                Write::RequireActive(_) => {}
            }
        }
        tx.commit().map_err(sql)?;
        Ok(Ok(()))
    }

    async fn live_positions(&self, account: &AccountId) -> Result<i64, StoreError> {
        read_count(&self.lock(), account)
    }

    async fn account_state(&self, account: &AccountId) -> Result<AccountState, StoreError> {
        read_account_state(&self.lock(), account)
    }

    async fn put_account_state(&self, next: &AccountState) -> Result<Result<(), AccountState>, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let current = read_account_state(&tx, &next.account_id)?;
        if current.version + 1 != next.version {
            return Ok(Err(current));
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO account_states (account_id, version, trading_state, changed_at, changed_by, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql)?
        .execute(params![
            next.account_id.as_str(),
            next.version as i64,
            next.trading_state.as_str(),
            next.changed_at.as_ref().map(format_timestamp),
            next.changed_by,
            next.reason
        ])
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(Ok(()))
    }

    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT item FROM aggregates WHERE list = ?1 AND list_at <= ?2 ORDER BY list_at, routing_key LIMIT ?3",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![list.as_str(), format_timestamp(&since), limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(sql)?;
        let aggregates = rows.map(|t| decode(&t.map_err(sql)?)).collect::<Result<Vec<_>, _>>()?;
        Ok(Listed {
            items_read: aggregates.len(),
            aggregates,
        })
    }

    async fn list_index(&self, q: &IndexQuery) -> Result<IndexPage, StoreError> {
        let conn = self.lock();
        let (column, key) = match &q.index {
            ListIndex::Account(a) => ("account_id", a.as_str().to_string()),
            ListIndex::Strategy(s) => ("strategy_id", s.clone()),
        };
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT created_sk, item FROM aggregates WHERE {column} = ?1 AND (?2 IS NULL OR created_sk < ?2) \
                 ORDER BY created_sk DESC LIMIT ?3"
            ))
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![key, q.before, q.read_limit() as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        let read = rows
            .map(|row| {
                let (sk, item) = row.map_err(sql)?;
                Ok((sk, decode(&item)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(q.page(read))
    }
}

impl CloseStore for SqliteStore {}

#[async_trait]
impl BulkLog for SqliteStore {
    async fn create_bulk_close(&self, bulk: &BulkClose) -> Result<Option<BulkClose>, StoreError> {
        let conn = self.lock();
        let inserted = conn
            .prepare_cached("INSERT OR IGNORE INTO bulk_closes (id, version, doc) VALUES (?1, ?2, ?3)")
            .map_err(sql)?
            .execute(params![bulk.id.to_string(), bulk.version as i64, bulk::encode(bulk)])
            .map_err(sql)?;
        if inserted == 1 {
            return Ok(None);
        }
        read_bulk(&conn, &bulk.id)
    }

    async fn update_bulk_close(&self, next: &BulkClose) -> Result<bool, StoreError> {
        let changed = self
            .lock()
            .prepare_cached("UPDATE bulk_closes SET version = ?2, doc = ?3 WHERE id = ?1 AND version = ?4")
            .map_err(sql)?
            .execute(params![
                next.id.to_string(),
                next.version as i64,
                bulk::encode(next),
                next.version as i64 - 1
            ])
            .map_err(sql)?;
        Ok(changed == 1)
    }

    async fn bulk_close(&self, id: &BulkCloseId) -> Result<Option<BulkClose>, StoreError> {
        read_bulk(&self.lock(), id)
    }

    async fn put_bulk_page(&self, id: &BulkCloseId, page: &BulkPage) -> Result<(), StoreError> {
        self.lock()
            .prepare_cached("INSERT OR REPLACE INTO bulk_pages (id, number, doc) VALUES (?1, ?2, ?3)")
            .map_err(sql)?
            .execute(params![id.to_string(), page.number, bulk::encode(page)])
            .map_err(sql)?;
        Ok(())
    }

    async fn bulk_pages(&self, id: &BulkCloseId) -> Result<Vec<BulkPage>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT doc FROM bulk_pages WHERE id = ?1 ORDER BY number")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![id.to_string()], |r| r.get::<_, String>(0))
            .map_err(sql)?;
        rows.map(|doc| bulk::decode(&doc.map_err(sql)?)).collect()
    }

    async fn drawdown_state(&self, account: &AccountId) -> Result<Option<(DrawdownState, u64)>, StoreError> {
        let row: Option<(String, i64)> = self
            .lock()
            .prepare_cached("SELECT doc, version FROM drawdown_states WHERE account_id = ?1")
            .map_err(sql)?
            .query_row(params![account.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql)?;
        row.map(|(doc, v)| Ok((bulk::decode(&doc)?, v as u64))).transpose()
    }

    async fn put_drawdown_state(
        &self,
        account: &AccountId,
        state: &DrawdownState,
        version: u64,
    ) -> Result<bool, StoreError> {
        // One statement: insert the first version, or replace the one just before.
        let changed = self
            .lock()
            .prepare_cached(
                "INSERT INTO drawdown_states (account_id, version, doc) SELECT ?1, ?2, ?3 \
                 WHERE ?2 = 1 AND NOT EXISTS (SELECT 1 FROM drawdown_states WHERE account_id = ?1) \
                 ON CONFLICT (account_id) DO NOTHING",
            )
            .map_err(sql)?
            .execute(params![account.as_str(), version as i64, bulk::encode(state)])
            .map_err(sql)?;
        if changed == 1 || version == 1 {
            return Ok(changed == 1);
        }
        let changed = self
            .lock()
            .prepare_cached("UPDATE drawdown_states SET version = ?2, doc = ?3 WHERE account_id = ?1 AND version = ?4")
            .map_err(sql)?
            .execute(params![
                account.as_str(),
                version as i64,
                bulk::encode(state),
                version as i64 - 1
            ])
            .map_err(sql)?;
        Ok(changed == 1)
    }
}

fn read_bulk(conn: &Connection, id: &BulkCloseId) -> Result<Option<BulkClose>, StoreError> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM bulk_closes WHERE id = ?1")
        .map_err(sql)?
        .query_row(params![id.to_string()], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    doc.as_deref().map(bulk::decode).transpose()
}

#[async_trait]
impl ChangeLog for SqliteStore {
    async fn unacknowledged(&self, limit: usize) -> Result<Vec<Sequenced>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT seq, before, after FROM outbox ORDER BY seq LIMIT ?1")
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(sql)?;
        rows.map(|row| {
            let (seq, before, after) = row.map_err(sql)?;
            Ok(Sequenced {
                seq: seq as u64,
                change: Change {
                    before: before.as_deref().map(decode).transpose()?,
                    after: decode(&after)?,
                },
            })
        })
        .collect()
    }

    async fn acknowledge(&self, seq: u64) -> Result<(), StoreError> {
        // AUTOINCREMENT never reuses a sequence, so trimming cannot confuse a later read.
        self.lock()
            .execute("DELETE FROM outbox WHERE seq <= ?1", params![seq as i64])
            .map_err(sql)?;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for SqliteStore {
    async fn record(&self, entries: &[AuditEntry], retention: chrono::TimeDelta) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(sql)?;
        {
            // Same identity, same content: replacing it is a no-op.
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO audit (position_id, entry_key, account_id, account_key, expires_at, entry) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for e in entries {
                stmt.execute(params![
                    e.position_id.as_str(),
                    e.sort_key(),
                    e.account_id.as_str(),
                    account_key(e),
                    format_timestamp(&(e.at + retention)),
                    e.to_json().to_string(),
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    async fn trail(&self, query: &AuditQuery, limit: usize, cursor: Option<&str>) -> Result<AuditPage, StoreError> {
        let conn = self.lock();
        let fetch = (limit + 1) as i64;
        let rows: Vec<(String, String)> = match query {
            AuditQuery::Position(p) => {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT entry_key, entry FROM audit WHERE position_id = ?1 AND entry_key > ?2 \
                         ORDER BY entry_key LIMIT ?3",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![p.as_str(), cursor.unwrap_or(""), fetch], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            }
            AuditQuery::Account { account, since } => {
                let floor = account_lower_bound(since.as_ref());
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT account_key, entry FROM audit WHERE account_id = ?1 AND account_key >= ?2 \
                         AND account_key > ?3 ORDER BY account_key LIMIT ?4",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![account.as_str(), floor, cursor.unwrap_or(""), fetch], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .map_err(sql)?;
                rows.collect::<Result<_, _>>().map_err(sql)?
            }
        };
        let more = rows.len() > limit;
        let mut entries = Vec::with_capacity(limit.min(rows.len()));
        let mut last = None;
        for (key, text) in rows.into_iter().take(limit) {
            let value: Value =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("audit entry: {e}")))?;
            entries
                .push(AuditEntry::from_json(&value).ok_or_else(|| StoreError::Corrupt(format!("audit entry {key}")))?);
            last = Some(key);
        }
        Ok(AuditPage {
            entries,
            next_cursor: if more { last } else { None },
        })
    }

    async fn expire_audit(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.lock()
            .execute(
                "DELETE FROM audit WHERE expires_at < ?1",
                params![format_timestamp(&now)],
            )
            .map_err(sql)
    }
}
