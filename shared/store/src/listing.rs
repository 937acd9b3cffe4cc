//! Listing positions: by account, newest first, in pages; and by strategy. One primitive per
//! backend ([`crate::Backend::list_index`]: one read of one index key) and the paging rules
//! written once here, so every backend answers the same pages.
//!
//! An index entry is keyed by the account (or the strategy) and sorted by `created_sk`
//! (`{created_at}#{position_id}`), which never changes: a position's status changes are
//! no index key changes (see README "Listing positions").

use closeflow_domain::{AccountId, Position, PositionAggregate, PositionStatus};

use crate::{Backend, StoreError};

/// Which index, under which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListIndex {
    /// `by_account`: the positions of one account.
    Account(AccountId),
    /// `by_strategy`: the legs of one strategy (of any account; filter by `accounts`).
    Strategy(String),
}

/// One read of one index key.
///
/// Entries with `created_sk < before` (all when `None`), newest first. With a filter
/// (`status` or `accounts`) at most `limit` entries are read and those that match are
/// answered, with `next` = the `created_sk` of the last entry read when `limit` were read
/// (a page may then be short, even empty, and still have a next one). Without a filter
/// `limit` entries are answered and `next` is set only when more exist. This is what one
/// DynamoDB `Query` with `Limit` does, so a page is one round trip on every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexQuery {
    pub index: ListIndex,
    pub before: Option<String>,
    pub limit: usize,
    pub status: Option<PositionStatus>,
    /// Only positions of these accounts.
    pub accounts: Option<Vec<AccountId>>,
}

impl IndexQuery {
    pub fn filtered(&self) -> bool {
        self.status.is_some() || self.accounts.is_some()
    }

    /// Whether a stored position passes the filters.
    pub fn matches(&self, p: &Position) -> bool {
        self.status.is_none_or(|s| p.status == s) && self.accounts.as_ref().is_none_or(|a| a.contains(&p.account_id))
    }

    /// The page from the entries read in index order (newest first): at most `limit` when
    /// filtered, at most `limit + 1` otherwise (see the type's rules).
    pub fn page(&self, read: Vec<(String, PositionAggregate)>) -> IndexPage {
        let items_read = read.len();
        if self.filtered() {
            let next = (read.len() >= self.limit)
                .then(|| read.last().map(|(sk, _)| sk.clone()))
                .flatten();
            let positions = read
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| self.matches(&p.position))
                .collect();
            IndexPage {
                positions,
                next,
                items_read,
            }
        } else {
            let more = read.len() > self.limit;
            let mut read = read;
            read.truncate(self.limit);
            let next = more.then(|| read.last().map(|(sk, _)| sk.clone())).flatten();
            IndexPage {
                positions: read.into_iter().map(|(_, p)| p).collect(),
                next,
                items_read,
            }
        }
    }

    /// How many entries a backend reads for this query.
    pub fn read_limit(&self) -> usize {
        if self.filtered() {
            self.limit.max(1)
        } else {
            self.limit.max(1) + 1
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexPage {
    /// Whole aggregates: a position's view carries what its latest close realized.
    pub positions: Vec<PositionAggregate>,
    /// Where the next page starts (`before` of the next query); `None`: nothing more.
    pub next: Option<String>,
    pub items_read: usize,
}

/// What a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The positions of these accounts (one index read per account and page).
    Accounts(Vec<AccountId>),
    /// The legs of a strategy, of these accounts only (`None`: any account).
    Strategy {
        strategy_id: String,
        accounts: Option<Vec<AccountId>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub scope: Scope,
    pub status: Option<PositionStatus>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    pub limit: usize,
}

/// A page of positions, newest first, and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PositionPage {
    pub positions: Vec<PositionAggregate>,
    pub next: Option<String>,
}

/// The most positions one page answers.
pub const MAX_PAGE: usize = 100;

/// A page of `req`: one index read per account in scope (one in all for a single account
/// or a strategy), merged newest first.
pub async fn list_positions<S: Backend + ?Sized>(store: &S, req: &ListRequest) -> Result<PositionPage, StoreError> {
    let limit = req.limit.clamp(1, MAX_PAGE);
    let queries: Vec<IndexQuery> = match &req.scope {
        Scope::Accounts(accounts) => accounts
            .iter()
            .map(|a| IndexQuery {
                index: ListIndex::Account(a.clone()),
                before: req.after.clone(),
                limit,
                status: req.status,
                accounts: None,
            })
            .collect(),
        Scope::Strategy { strategy_id, accounts } => vec![IndexQuery {
            index: ListIndex::Strategy(strategy_id.clone()),
            before: req.after.clone(),
            limit,
            status: req.status,
            accounts: accounts.clone(),
        }],
    };
    let mut pages = Vec::with_capacity(queries.len());
    for q in &queries {
        pages.push(store.list_index(q).await?);
    }
    Ok(merge(pages, limit))
}

/// Merges per-key pages: everything at or above the highest point where some key's page
/// stopped is complete; the next page starts below the last position answered.
pub fn merge(pages: Vec<IndexPage>, limit: usize) -> PositionPage {
    let floor = pages.iter().filter_map(|p| p.next.clone()).max();
    let mut all: Vec<(String, PositionAggregate)> = pages
        .into_iter()
        .flat_map(|p| p.positions)
        .map(|p| (crate::dynamo::codec::created_sk(&p.position), p))
        .filter(|(sk, _)| floor.as_ref().is_none_or(|f| sk >= f))
        .collect();
    all.sort_by(|a, b| b.0.cmp(&a.0));
    if all.len() > limit {
        all.truncate(limit);
        let next = all.last().map(|(sk, _)| sk.clone());
        return PositionPage {
            positions: all.into_iter().map(|(_, p)| p).collect(),
            next,
        };
    }
    PositionPage {
        positions: all.into_iter().map(|(_, p)| p).collect(),
        next: floor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeflow_domain::testing::position;

    fn entry(id: &str, minute: i64, status: PositionStatus) -> (String, PositionAggregate) {
        let mut p = position(id, "1", status);
        p.created_at += chrono::TimeDelta::minutes(minute);
        (crate::dynamo::codec::created_sk(&p), PositionAggregate::new(p))
    }

    fn query(limit: usize, status: Option<PositionStatus>) -> IndexQuery {
        IndexQuery {
            index: ListIndex::Account(AccountId::parse("acct-1").unwrap()),
            before: None,
            limit,
            status,
            accounts: None,
        }
    }

    #[test]
    fn an_unfiltered_page_says_more_only_when_there_is_more() {
        let read = vec![
            entry("c", 3, PositionStatus::Open),
            entry("b", 2, PositionStatus::Open),
            entry("a", 1, PositionStatus::Open),
        ];
        let page = query(2, None).page(read.clone());
        assert_eq!(page.positions.len(), 2);
        assert_eq!(page.next.as_deref(), Some(read[1].0.as_str()));
        let last = query(3, None).page(read);
        assert_eq!((last.positions.len(), last.next), (3, None));
    }

    #[test]
    fn a_filtered_page_reads_limit_entries_and_answers_the_matching_ones() {
        let read = vec![
            entry("c", 3, PositionStatus::Closed),
            entry("b", 2, PositionStatus::Open),
        ];
        let page = query(2, Some(PositionStatus::Open)).page(read.clone());
        assert_eq!(page.positions.len(), 1);
        assert_eq!(page.next.as_deref(), Some(read[1].0.as_str()));
    }

    #[test]
    fn merged_accounts_stop_where_the_first_account_stopped() {
        let (a1, a2, a3) = (
            entry("a1", 10, PositionStatus::Open),
            entry("a2", 5, PositionStatus::Open),
            entry("b1", 7, PositionStatus::Open),
        );
        let a = IndexPage {
            positions: vec![a1.1.clone(), a2.1.clone()],
            next: Some(a2.0.clone()),
            items_read: 3,
        };
        let b = IndexPage {
            positions: vec![a3.1.clone()],
            next: None,
            items_read: 1,
        };
        let page = merge(vec![a, b], 2);
        let ids: Vec<_> = page.positions.iter().map(|p| p.position.id.as_str()).collect();
        assert_eq!(ids, ["a1", "b1"]);
        assert_eq!(page.next, Some(a3.0));
    }
}
