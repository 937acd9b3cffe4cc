//! The audit log: entries derived from committed changes ([`closeflow_domain::audit_entries`]),
//! kept beyond the position's own life (until `expires_at`), read per position or per
//! account, oldest first. Each entry is stored under its identity (position, aggregate
//! version, index within the change), so recording a change again writes nothing new.

use async_trait::async_trait;
use closeflow_domain::{format_timestamp, AccountId, AuditEntry, PositionId, Timestamp};

use crate::StoreError;

/// Which trail to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditQuery {
    Position(PositionId),
    /// An account's entries at or after `since`.
    Account {
        account: AccountId,
        since: Option<Timestamp>,
    },
}

/// A page of a trail; `next_cursor` continues it (absent on the last page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Stores `entries`, each kept `retention` past its time. Idempotent: an entry
    /// already stored is written again unchanged.
    async fn record(&self, entries: &[AuditEntry], retention: chrono::TimeDelta) -> Result<(), StoreError>;

    /// Entries of one trail after `cursor` (a `next_cursor` of the same query), oldest
    /// first, at most `limit`.
    async fn trail(&self, query: &AuditQuery, limit: usize, cursor: Option<&str>) -> Result<AuditPage, StoreError>;

    /// Drops entries whose `expires_at` is before `now`; how many. (DynamoDB's TTL does
    /// this by itself there.)
    async fn expire_audit(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// An entry's sort key in its account's trail: time first, then the entry's identity.
pub fn account_key(e: &AuditEntry) -> String {
    format!("{}#{}#{}", format_timestamp(&e.at), e.position_id, e.sort_key())
}

/// The sort key a trail is ordered by.
pub fn trail_key(query: &AuditQuery, e: &AuditEntry) -> String {
    match query {
        AuditQuery::Position(_) => e.sort_key(),
        AuditQuery::Account { .. } => account_key(e),
    }
}

/// Where an account trail starts: after the cursor, else at `since`.
pub fn account_lower_bound(since: Option<&Timestamp>) -> String {
    since.map(format_timestamp).unwrap_or_default()
}

/// Is `cursor` a sort key this query could have handed out? (A forged or stale-format
/// cursor is a client error, not a storage one.)
pub fn valid_cursor(query: &AuditQuery, cursor: &str) -> bool {
    let entry_key = |k: &str| {
        k.len() == 25
            && k.as_bytes()[20] == b'#'
            && k[..20].bytes().all(|b| b.is_ascii_digit())
            && k[21..].bytes().all(|b| b.is_ascii_digit())
    };
    match query {
        AuditQuery::Position(_) => entry_key(cursor),
        AuditQuery::Account { .. } => {
            let mut parts = cursor.splitn(2, '#');
            let (Some(at), Some(rest)) = (parts.next(), parts.next()) else {
                return false;
            };
            let Some((pid, key)) = rest.rsplit_once('#').and_then(|(head, index)| {
                let (pid, version) = head.rsplit_once('#')?;
                Some((pid, format!("{version}#{index}")))
            }) else {
                return false;
            };
            closeflow_domain::parse_timestamp(at).is_some() && PositionId::parse(pid).is_ok() && entry_key(&key)
        }
    }
}
