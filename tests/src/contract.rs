//! The store contract: the port's semantics, driven directly (no router), identical on
//! every backend. A new adapter passes this suite or is not a store.

use std::sync::Arc;

use chrono::TimeDelta;
use closeflow_domain::{
    audit_entries, decide_close, record_submission, CloseDecision, CloseRejection, CloseRequestStatus, OrderStatus,
    PositionAggregate, PositionStatus, RegisterDecision, RoutingKey, SubmitAnswer, SubmitRequest,
};
use closeflow_store::{
    modify, AggregateKey, AuditQuery, ChangeLog, CloseOutcome, CloseStore, MemoryStore, SqliteStore, Step,
    UpdateResult, WorkList, Write,
};

use crate::builders::{close, pid, register, update};
use crate::{start_time, Backend};

pub struct ContractStore {
    pub store: Arc<dyn CloseStore>,
    /// The change log, on backends that keep one (the DynamoDB stream is tested elsewhere).
    pub log: Option<Arc<dyn ChangeLog>>,
    /// DynamoDB's TTL drops expired audit entries by itself (`expire_audit` removes none).
    pub audit_expires_by_itself: bool,
}

pub async fn store_for(backend: Backend) -> ContractStore {
    match backend {
        Backend::Embedded => {
            let m = Arc::new(MemoryStore::new());
            ContractStore {
                store: m.clone(),
                log: Some(m),
                audit_expires_by_itself: false,
            }
        }
        Backend::Sqlite => {
            let s = Arc::new(SqliteStore::open(&crate::temp_db_path()).expect("sqlite"));
            ContractStore {
                store: s.clone(),
                log: Some(s),
                audit_expires_by_itself: false,
            }
        }
        Backend::DynamoDb => {
            let client = crate::dynamo_client(Default::default()).await;
            let name = crate::unique_table_name();
            ContractStore {
                store: Arc::new(crate::dynamo_test_store(client, &name).await),
                log: None,
                audit_expires_by_itself: true,
            }
        }
    }
}

async fn agg(s: &ContractStore, id: &str) -> PositionAggregate {
    s.store
        .aggregate(&AggregateKey::Position(pid(id)))
        .await
        .expect("store")
        .expect("exists")
}

/// Submits attempt `attempt` of the latest close request as the submitter would.
async fn submit(s: &ContractStore, id: &str, attempt: u32) {
    let a = agg(s, id).await;
    let cr = a.latest_close_request.as_ref().expect("close request").id;
    let req = SubmitRequest {
        position_id: pid(id),
        close_request_id: cr,
        attempt,
    };
    let accepted = SubmitAnswer::Accepted(update(cr, attempt, OrderStatus::Accepted, "0", 1, start_time()));
    let m = modify(s.store.as_ref(), &AggregateKey::Position(pid(id)), "tester", |a| {
        Step::applied(record_submission(a, &req, &accepted, start_time()))
    })
    .await
    .expect("store")
    .expect("exists");
    assert!(m.after.is_some(), "submission recorded");
}

pub async fn registration_creates_updates_and_is_idempotent(s: &ContractStore) {
    let t = start_time();
    let created = s.store.register_position(&register("c-1", "10", t)).await.unwrap();
    assert!(matches!(created, Ok(RegisterDecision::Created(ref p)) if p.version == 1));
    let again = s.store.register_position(&register("c-1", "10", t)).await.unwrap();
    assert!(matches!(again, Ok(RegisterDecision::Unchanged(_))));
    let updated = s.store.register_position(&register("c-1", "12", t)).await.unwrap();
    assert!(matches!(updated, Ok(RegisterDecision::Updated(ref p)) if p.version == 2));
    assert_eq!(agg(s, "c-1").await.position.quantity, crate::builders::qty("12"));
    assert_eq!(s.store.position(&pid("nope")).await.unwrap(), None);
}

pub async fn commits_are_conditional_and_all_or_nothing(s: &ContractStore) {
    let t = start_time();
    s.store
        .register_position(&register("w-1", "5", t))
        .await
        .unwrap()
        .unwrap();
    let a = agg(s, "w-1").await;
    // Create over an existing aggregate fails and reports what is there.
    let c = s.store.commit(&[Write::Create(a.clone())]).await.unwrap().unwrap_err();
    assert_eq!(c.index, 0);
    if let Some(current) = c.current {
        assert_eq!(current.as_ref(), Some(&a));
    }
    // A stale version writes nothing.
    let mut stale = a.clone();
    stale.position.version = 9;
    let put = Write::Put {
        next: stale,
        expected: 8,
    };
    assert!(s.store.commit(&[put]).await.unwrap().is_err());
    assert_eq!(agg(s, "w-1").await, a);
    // Two writes, the second stale: neither happens.
    let fresh = PositionAggregate::new(register_position("w-2"));
    let mut bumped = a.clone();
    bumped.position.version += 1;
    let writes = [
        Write::Create(fresh.clone()),
        Write::Put {
            next: bumped.clone(),
            expected: a.position.version + 5,
        },
    ];
    let c = s.store.commit(&writes).await.unwrap().unwrap_err();
    assert_eq!(c.index, 1);
    assert_eq!(
        s.store.load(RoutingKey::of(&pid("w-2"))).await.unwrap(),
        None,
        "all or nothing"
    );
    // Both conditions hold: both are written.
    let writes = [
        Write::Create(fresh.clone()),
        Write::Put {
            next: bumped.clone(),
            expected: a.position.version,
        },
    ];
    s.store.commit(&writes).await.unwrap().unwrap();
    assert_eq!(agg(s, "w-2").await, fresh);
    assert_eq!(agg(s, "w-1").await, bumped);
    // Delete only at the version it was read at.
    let mut stale = fresh.clone();
    stale.position.version = 7;
    assert!(!s.store.delete_if_unchanged(&stale).await.unwrap());
    assert!(s.store.delete_if_unchanged(&fresh).await.unwrap());
    assert_eq!(s.store.position(&pid("w-2")).await.unwrap(), None);
}

fn register_position(id: &str) -> closeflow_domain::Position {
    match closeflow_domain::decide_register(None, &register(id, "3", start_time())) {
        Ok(RegisterDecision::Created(p)) => p,
        other => panic!("{other:?}"),
    }
}

/// Phase 1 stores exactly the aggregate the domain decides, on every path an adapter may
/// take (DynamoDB: the one-UpdateItem fast path for a first close, the protocol otherwise).
pub async fn a_close_stores_exactly_what_the_domain_decides(s: &ContractStore) {
    let t = start_time();
    s.store
        .register_position(&register("e-1", "-4.5", t))
        .await
        .unwrap()
        .unwrap();
    for (round, key) in ["first", "second"].into_iter().enumerate() {
        let before = agg(s, "e-1").await;
        let mut cmd = close("e-1", key, t + TimeDelta::seconds(round as i64));
        cmd.reason = (round == 1).then(|| "drawdown".to_string());
        let CloseDecision::Create(expected) = decide_close(Some(&before), &cmd) else {
            panic!("the domain accepts round {round}")
        };
        let out = s.store.open_close_request(&cmd).await.unwrap();
        assert!(matches!(out, CloseOutcome::Created { .. }), "{out:?}");
        assert_eq!(agg(s, "e-1").await, *expected, "round {round}");
        // End the close with nothing filled: the position reopens for the next round.
        submit(s, "e-1", 1).await;
        let cr = expected.latest_close_request.as_ref().unwrap().id;
        let r = s
            .store
            .apply_order_update(&update(cr, 1, OrderStatus::Canceled, "0", 2, t), t, "tester")
            .await
            .unwrap();
        assert!(
            matches!(
                r,
                UpdateResult::Applied {
                    position_status: PositionStatus::Open,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}

pub async fn replays_find_superseded_close_requests(s: &ContractStore) {
    let t = start_time();
    s.store
        .register_position(&register("h-1", "2", t))
        .await
        .unwrap()
        .unwrap();
    let CloseOutcome::Created { close_request: a, .. } =
        s.store.open_close_request(&close("h-1", "key-a", t)).await.unwrap()
    else {
        panic!()
    };
    submit(s, "h-1", 1).await;
    s.store
        .apply_order_update(&update(a.id, 1, OrderStatus::Canceled, "0", 2, t), t, "tester")
        .await
        .unwrap();
    let CloseOutcome::Created { close_request: b, .. } =
        s.store.open_close_request(&close("h-1", "key-b", t)).await.unwrap()
    else {
        panic!()
    };
    assert_ne!(a.id, b.id);
    match s.store.open_close_request(&close("h-1", "key-a", t)).await.unwrap() {
        CloseOutcome::Replayed {
            close_request, orders, ..
        } => {
            assert_eq!(close_request.id, a.id);
            assert!(
                close_request.status.is_terminal(),
                "as it ended: {:?}",
                close_request.status
            );
            assert_eq!(orders.len(), 1, "its order is kept with it");
        }
        other => panic!("{other:?}"),
    }
    let found = s
        .store
        .aggregate(&AggregateKey::CloseRequest(a.id))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.close_request(&a.id).map(|(c, _)| c.id), Some(a.id));
    // A different key while B is in flight is still refused.
    let r = s.store.open_close_request(&close("h-1", "key-c", t)).await.unwrap();
    assert!(matches!(
        r,
        CloseOutcome::Rejected(CloseRejection::AlreadyClosing { .. })
    ));
}

pub async fn fills_settle_the_close_and_modify_returns_the_decision(s: &ContractStore) {
    let t = start_time();
    s.store
        .register_position(&register("f-1", "10", t))
        .await
        .unwrap()
        .unwrap();
    let CloseOutcome::Created { close_request: cr, .. } =
        s.store.open_close_request(&close("f-1", "k", t)).await.unwrap()
    else {
        panic!()
    };
    submit(s, "f-1", 1).await;
    let partial = s
        .store
        .apply_order_update(&update(cr.id, 1, OrderStatus::PartiallyFilled, "4", 2, t), t, "tester")
        .await
        .unwrap();
    assert!(matches!(
        partial,
        UpdateResult::Applied {
            close_request_status: CloseRequestStatus::Submitted,
            ..
        }
    ));
    let stale = s
        .store
        .apply_order_update(&update(cr.id, 1, OrderStatus::PartiallyFilled, "3", 1, t), t, "tester")
        .await
        .unwrap();
    assert!(matches!(stale, UpdateResult::Ignored(_)), "{stale:?}");
    let done = s
        .store
        .apply_order_update(&update(cr.id, 1, OrderStatus::Filled, "10", 3, t), t, "tester")
        .await
        .unwrap();
    assert!(matches!(
        done,
        UpdateResult::Applied {
            position_status: PositionStatus::Closed,
            ..
        }
    ));
    let a = agg(s, "f-1").await;
    assert_eq!(a.latest_close_request.unwrap().filled_qty, crate::builders::qty("10"));
    // A step that writes nothing still hands back its decision.
    let m = modify(s.store.as_ref(), &AggregateKey::Position(pid("f-1")), "tester", |a| {
        Step {
            write: None,
            decision: a.position.version,
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!((m.after, m.decision), (None, a.position.version));
    let unknown = update(
        closeflow_domain::CloseRequestId::new(&pid("zz"), [1; 16]),
        1,
        OrderStatus::Filled,
        "1",
        1,
        t,
    );
    assert_eq!(
        s.store.apply_order_update(&unknown, t, "tester").await.unwrap(),
        UpdateResult::UnknownOrder
    );
}

pub async fn work_lists_hold_exactly_what_needs_a_job_oldest_first(s: &ContractStore) {
    let t = start_time();
    for (i, id) in ["l-1", "l-2", "l-3"].iter().enumerate() {
        s.store.register_position(&register(id, "1", t)).await.unwrap().unwrap();
        let at = t + TimeDelta::seconds(10 - i as i64);
        s.store.open_close_request(&close(id, "k", at)).await.unwrap();
    }
    s.store
        .register_position(&register("l-idle", "1", t))
        .await
        .unwrap()
        .unwrap();
    let listed = s
        .store
        .work_list(WorkList::Attention, t + TimeDelta::hours(1), 10)
        .await
        .unwrap();
    let ids: Vec<_> = listed.aggregates.iter().map(|a| a.position.id.to_string()).collect();
    assert_eq!(ids, ["l-3", "l-2", "l-1"], "oldest clock first, idle positions absent");
    assert_eq!(listed.items_read, 3);
    let early = s
        .store
        .work_list(WorkList::Attention, t + TimeDelta::seconds(8), 10)
        .await
        .unwrap();
    assert_eq!(early.aggregates.len(), 1, "only clocks started by `since`");
    let one = s
        .store
        .work_list(WorkList::Attention, t + TimeDelta::hours(1), 1)
        .await
        .unwrap();
    assert_eq!(one.aggregates.len(), 1);
    assert!(s
        .store
        .work_list(WorkList::Expiry, t + TimeDelta::hours(1), 10)
        .await
        .unwrap()
        .aggregates
        .is_empty());
}

/// Live positions are counted per account in the same atomic write as the position: a
/// registration over the quota writes nothing, and a close frees a slot.
pub async fn the_account_quota_counts_live_positions_atomically(s: &ContractStore) {
    let t = start_time();
    let account = closeflow_domain::AccountId::parse("acct-1").unwrap();
    let mut cmd = register("q-1", "1", t);
    cmd.max_live_positions = 2;
    for id in ["q-1", "q-2"] {
        cmd.position_id = pid(id);
        assert!(matches!(
            s.store.register_position(&cmd).await.unwrap(),
            Ok(RegisterDecision::Created(_))
        ));
    }
    cmd.position_id = pid("q-3");
    assert_eq!(
        s.store.register_position(&cmd).await.unwrap(),
        Err(closeflow_domain::RegisterRejection::QuotaExceeded { limit: 2 })
    );
    assert_eq!(s.store.position(&pid("q-3")).await.unwrap(), None, "nothing written");
    assert_eq!(s.store.live_positions(&account).await.unwrap(), 2);
    // Updating a counted position is not a new one.
    let mut update_q1 = cmd.clone();
    update_q1.position_id = pid("q-1");
    update_q1.quantity = crate::builders::qty("2");
    assert!(matches!(
        s.store.register_position(&update_q1).await.unwrap(),
        Ok(RegisterDecision::Updated(_))
    ));
    // q-1 closes: its slot is free for q-3.
    let CloseOutcome::Created { close_request: cr, .. } =
        s.store.open_close_request(&close("q-1", "k", t)).await.unwrap()
    else {
        panic!()
    };
    submit(s, "q-1", 1).await;
    s.store
        .apply_order_update(&update(cr.id, 1, OrderStatus::Filled, "2", 2, t), t, "tester")
        .await
        .unwrap();
    assert_eq!(s.store.live_positions(&account).await.unwrap(), 1);
    assert!(matches!(
        s.store.register_position(&cmd).await.unwrap(),
        Ok(RegisterDecision::Created(_))
    ));
    // Deleting the closed position changes nothing; deleting a live one frees its slot.
    assert!(s.store.delete_if_unchanged(&agg(s, "q-1").await).await.unwrap());
    assert_eq!(s.store.live_positions(&account).await.unwrap(), 2);
    assert!(s.store.delete_if_unchanged(&agg(s, "q-2").await).await.unwrap());
    assert_eq!(s.store.live_positions(&account).await.unwrap(), 1);
}

/// An account's trading state moves only along the domain's table, with a version
/// condition; while it is not `active`, a registration that adds exposure is refused inside
/// the same atomic write (nothing written, the count unchanged), one that reduces exposure
/// or adopts the broker's holding goes through.
pub async fn the_trading_state_refuses_new_exposure_atomically(s: &ContractStore) {
    use closeflow_domain::{RegisterRejection, TradingState, TradingStateEvent as E};
    let t = start_time();
    let account = closeflow_domain::AccountId::parse("acct-1").unwrap();
    let fresh = s.store.account_state(&account).await.unwrap();
    assert_eq!((fresh.trading_state, fresh.version), (TradingState::Active, 0));
    assert!(matches!(
        s.store.register_position(&register("h-1", "5", t)).await.unwrap(),
        Ok(RegisterDecision::Created(_))
    ));
    let liq = s
        .store
        .set_trading_state(&account, E::LiquidationStarted, "ops", Some("margin call"), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((liq.trading_state, liq.version), (TradingState::Liquidating, 1));
    assert_eq!(s.store.account_state(&account).await.unwrap(), liq, "stored as decided");
    let halted = Err(RegisterRejection::AccountHalted(TradingState::Liquidating));
    assert_eq!(
        s.store.register_position(&register("h-2", "1", t)).await.unwrap(),
        halted
    );
    assert_eq!(s.store.position(&pid("h-2")).await.unwrap(), None, "nothing written");
    assert_eq!(s.store.live_positions(&account).await.unwrap(), 1);
    assert_eq!(
        s.store.register_position(&register("h-1", "6", t)).await.unwrap(),
        halted,
        "a larger position"
    );
    assert_eq!(
        s.store.register_position(&register("h-1", "-1", t)).await.unwrap(),
        halted,
        "a turned one"
    );
    assert_eq!(
        s.store.position(&pid("h-1")).await.unwrap().unwrap().quantity,
        crate::builders::qty("5")
    );
    assert!(matches!(
        s.store.register_position(&register("h-1", "4", t)).await.unwrap(),
        Ok(RegisterDecision::Updated(_))
    ));
    // Sync adopting what the broker holds is no new exposure.
    let mut adopt = register("h-3", "2", t);
    adopt.source = Some(closeflow_domain::sync::SOURCE_BROKER.into());
    assert!(matches!(
        s.store.register_position(&adopt).await.unwrap(),
        Ok(RegisterDecision::Created(_))
    ));
    // Not resumable mid-liquidation; a stale write is refused with what is stored.
    assert!(s
        .store
        .set_trading_state(&account, E::Resumed, "ops", None, t)
        .await
        .unwrap()
        .is_err());
    let mut stale = liq.clone();
    stale.trading_state = TradingState::Active;
    assert_eq!(s.store.put_account_state(&stale).await.unwrap(), Err(liq.clone()));
    let ended = s
        .store
        .set_trading_state(&account, E::LiquidationEnded, "liquidation", None, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.trading_state, TradingState::Halted);
    assert_eq!(
        s.store.register_position(&register("h-2", "1", t)).await.unwrap(),
        Err(RegisterRejection::AccountHalted(TradingState::Halted))
    );
    let resumed = s
        .store
        .set_trading_state(&account, E::Resumed, "ops", None, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resumed.trading_state, resumed.version), (TradingState::Active, 3));
    assert!(matches!(
        s.store.register_position(&register("h-2", "1", t)).await.unwrap(),
        Ok(RegisterDecision::Created(_))
    ));
    // Another account was never touched.
    let other = closeflow_domain::AccountId::parse("acct-2").unwrap();
    assert_eq!(s.store.account_state(&other).await.unwrap().version, 0);
}

/// Backends with a change log: every committed write once, in commit order, with its old
/// image; acknowledged entries are never read again.
pub async fn the_change_log_has_every_commit_once_in_order(s: &ContractStore) {
    let Some(log) = &s.log else { return };
    let t = start_time();
    s.store
        .register_position(&register("o-1", "1", t))
        .await
        .unwrap()
        .unwrap();
    s.store.open_close_request(&close("o-1", "k", t)).await.unwrap();
    // A refused close writes nothing, so it logs nothing.
    s.store.open_close_request(&close("o-1", "other", t)).await.unwrap();
    let batch = log.unacknowledged(100).await.unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch[0].seq < batch[1].seq);
    assert_eq!(batch[0].change.before, None);
    assert_eq!(batch[1].change.before.as_ref(), Some(&batch[0].change.after));
    assert_eq!(batch[1].change.after.position.status, PositionStatus::Closing);
    log.acknowledge(batch[0].seq).await.unwrap();
    let rest = log.unacknowledged(100).await.unwrap();
    assert_eq!(rest, batch[1..].to_vec());
    log.acknowledge(batch[1].seq).await.unwrap();
    assert!(log.unacknowledged(100).await.unwrap().is_empty());
}

/// Audit entries of real changes: recorded twice (a change handled again), read back once
/// each, oldest first, per position and per account (from `since`), paged with cursors
/// that walk the whole trail, and dropped after their retention.
pub async fn the_audit_log_keeps_each_entry_once_in_order_per_position_and_account(s: &ContractStore) {
    let t = start_time();
    let mut entries = Vec::new();
    let mut change = |before: Option<&PositionAggregate>, after: &PositionAggregate| {
        entries.extend(audit_entries(before, after));
    };
    s.store
        .register_position(&register("au-1", "10", t))
        .await
        .unwrap()
        .unwrap();
    let a1 = agg(s, "au-1").await;
    change(None, &a1);
    let CloseOutcome::Created { .. } = s
        .store
        .open_close_request(&close("au-1", "k-au", t + TimeDelta::seconds(1)))
        .await
        .unwrap()
    else {
        panic!("close created")
    };
    let a2 = agg(s, "au-1").await;
    change(Some(&a1), &a2);
    s.store
        .register_position(&register("au-2", "-5", t + TimeDelta::seconds(2)))
        .await
        .unwrap()
        .unwrap();
    change(None, &agg(s, "au-2").await);
    assert_eq!(entries.len(), 4, "registered, closing + close requested, registered");
    let retention = TimeDelta::days(400);
    s.store.record(&entries, retention).await.unwrap();
    s.store.record(&entries[1..], retention).await.unwrap();

    let by_position = |id: &str| AuditQuery::Position(pid(id));
    let trail = s.store.trail(&by_position("au-1"), 10, None).await.unwrap();
    assert_eq!(trail.entries, entries[..3].to_vec());
    assert_eq!(trail.next_cursor, None);
    assert!(trail.entries.iter().all(|e| e.actor == "tester"));

    let account = |since| AuditQuery::Account {
        account: closeflow_domain::AccountId::parse("acct-1").unwrap(),
        since,
    };
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s.store.trail(&account(None), 1, cursor.as_deref()).await.unwrap();
        assert!(page.entries.len() <= 1);
        walked.extend(page.entries);
        match page.next_cursor {
            Some(c) => {
                assert!(closeflow_store::audit::valid_cursor(&account(None), &c), "{c}");
                cursor = Some(c)
            }
            None => break,
        }
    }
    assert_eq!(walked, entries, "the account's trail, oldest first, each entry once");
    let later = s
        .store
        .trail(&account(Some(t + TimeDelta::seconds(2))), 10, None)
        .await
        .unwrap();
    assert_eq!(later.entries, entries[3..].to_vec());

    // Kept one day only: gone a day later, however the backend expires them.
    s.store.record(&entries[3..], TimeDelta::days(1)).await.unwrap();
    let removed = s.store.expire_audit(t + TimeDelta::days(3)).await.unwrap();
    if s.audit_expires_by_itself {
        assert_eq!(removed, 0, "left to the table's TTL");
    } else {
        assert_eq!(removed, 1);
        assert!(s
            .store
            .trail(&by_position("au-2"), 10, None)
            .await
            .unwrap()
            .entries
            .is_empty());
        assert_eq!(
            s.store
                .trail(&by_position("au-1"), 10, None)
                .await
                .unwrap()
                .entries
                .len(),
            3
        );
    }
}

/// Registers `id` on `account` (created `minute` minutes after the start) in `strategy`.
async fn register_at(s: &ContractStore, id: &str, account: &str, strategy: Option<&str>, minute: i64) {
    let mut cmd = register(id, "2", start_time() + TimeDelta::minutes(minute));
    cmd.account_id = closeflow_domain::AccountId::parse(account).unwrap();
    cmd.strategy_id = strategy.map(str::to_string);
    s.store.register_position(&cmd).await.unwrap().unwrap();
}

fn ids(page: &closeflow_store::PositionPage) -> Vec<String> {
    page.positions.iter().map(|p| p.position.id.to_string()).collect()
}

/// Every page of a listing, following its cursors.
async fn all_pages(s: &ContractStore, mut req: closeflow_store::ListRequest) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    for _ in 0..20 {
        let page = s.store.list_positions(&req).await.unwrap();
        pages.push(ids(&page));
        match page.next {
            Some(n) => req.after = Some(n),
            None => return pages,
        }
    }
    panic!("a listing that never ends: {pages:?}")
}

/// Listings read one index key per page, newest first; cursors continue exactly where a
/// page stopped; filters never hide a position from the union of the pages.
pub async fn listings_page_newest_first_by_account_and_by_strategy(s: &ContractStore) {
    use closeflow_store::{ListRequest, Scope};
    for (i, id) in ["l-1", "l-2", "l-3", "l-4", "l-5"].iter().enumerate() {
        let strategy = (i % 2 == 0).then_some("ic-7");
        register_at(s, id, "acct-l", strategy, i as i64).await;
    }
    register_at(s, "other-1", "acct-m", Some("ic-7"), 10).await;
    let acct = |a: &str| closeflow_domain::AccountId::parse(a).unwrap();
    let by_account = ListRequest {
        scope: Scope::Accounts(vec![acct("acct-l")]),
        status: None,
        after: None,
        limit: 2,
    };
    assert_eq!(
        all_pages(s, by_account.clone()).await,
        vec![vec!["l-5", "l-4"], vec!["l-3", "l-2"], vec!["l-1"]],
        "newest first, two a page, the last page says it is the last"
    );
    // Two accounts merged, newest first, in pages of 4.
    let both = ListRequest {
        scope: Scope::Accounts(vec![acct("acct-l"), acct("acct-m")]),
        limit: 4,
        ..by_account.clone()
    };
    let flat: Vec<String> = all_pages(s, both).await.concat();
    assert_eq!(flat, ["other-1", "l-5", "l-4", "l-3", "l-2", "l-1"]);
    // A strategy, limited to the caller's accounts.
    let legs = ListRequest {
        scope: Scope::Strategy {
            strategy_id: "ic-7".into(),
            accounts: Some(vec![acct("acct-l")]),
        },
        limit: 10,
        ..by_account.clone()
    };
    assert_eq!(all_pages(s, legs).await.concat(), ["l-5", "l-3", "l-1"]);
    let any_account = ListRequest {
        scope: Scope::Strategy {
            strategy_id: "ic-7".into(),
            accounts: None,
        },
        limit: 10,
        ..by_account.clone()
    };
    assert_eq!(
        all_pages(s, any_account).await.concat(),
        ["other-1", "l-5", "l-3", "l-1"]
    );
    // A status filter: closing positions only, whatever the page size.
    for id in ["l-2", "l-4"] {
        let out = s.store.open_close_request(&close(id, "k", start_time())).await.unwrap();
        assert!(matches!(out, CloseOutcome::Created { .. }));
    }
    for limit in [1, 2, 5] {
        let closing = ListRequest {
            status: Some(PositionStatus::Closing),
            limit,
            ..by_account.clone()
        };
        assert_eq!(all_pages(s, closing).await.concat(), ["l-4", "l-2"], "limit {limit}");
    }
    let nothing = ListRequest {
        scope: Scope::Accounts(vec![acct("acct-none")]),
        ..by_account
    };
    assert_eq!(all_pages(s, nothing).await, vec![Vec::<String>::new()]);
}

/// A partial limit close stores what the domain decides on every path (DynamoDB's
/// one-UpdateItem fast path included), and a qty beyond the position writes nothing.
pub async fn a_partial_limit_close_stores_exactly_what_the_domain_decides(s: &ContractStore) {
    let t = start_time();
    s.store
        .register_position(&register("pl-1", "-10", t))
        .await
        .unwrap()
        .unwrap();
    let before = agg(s, "pl-1").await;
    let mut too_much = close("pl-1", "k0", t);
    too_much.qty = Some(closeflow_domain::Quantity::from(11));
    assert_eq!(
        s.store.open_close_request(&too_much).await.unwrap(),
        CloseOutcome::Rejected(CloseRejection::InvalidOptions(
            closeflow_domain::OptionsError::InvalidQty
        ))
    );
    assert_eq!(agg(s, "pl-1").await, before, "a refused close writes nothing");
    let mut cmd = close("pl-1", "k1", t);
    cmd.qty = Some(closeflow_domain::Quantity::from(4));
    // (A day limit may also trade outside regular hours; the API's options test stores that.)
    cmd.options = closeflow_domain::OrderOptions {
        time_in_force: closeflow_domain::TimeInForce::Gtc,
        ..closeflow_domain::OrderOptions::limit(closeflow_domain::Price::new(crate::builders::qty("2.5")).unwrap())
    };
    let CloseDecision::Create(expected) = decide_close(Some(&before), &cmd) else {
        panic!("the domain accepts it")
    };
    assert!(matches!(
        s.store.open_close_request(&cmd).await.unwrap(),
        CloseOutcome::Created { .. }
    ));
    assert_eq!(agg(s, "pl-1").await, *expected);
    // It fills: the position stays open with the rest.
    submit(s, "pl-1", 1).await;
    let cr = expected.latest_close_request.as_ref().unwrap().id;
    let r = s
        .store
        .apply_order_update(&update(cr, 1, OrderStatus::Filled, "4", 2, t), t, "tester")
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            UpdateResult::Applied {
                position_status: PositionStatus::Open,
                close_request_status: CloseRequestStatus::Completed
            }
        ),
        "{r:?}"
    );
    assert_eq!(
        agg(s, "pl-1").await.position.quantity,
        closeflow_domain::Quantity::from(-6)
    );
}

/// A cancel is recorded once and names the working order; a retry of a failed close starts
/// the next attempt once, and a replay of its key writes nothing.
pub async fn cancel_and_retry_are_decided_by_the_domain_and_written_once(s: &ContractStore) {
    use closeflow_domain::{Access, Fingerprint, IdempotencyKey, ManageRejection, RetryCommand};
    let t = start_time();
    s.store
        .register_position(&register("cr-1", "10", t))
        .await
        .unwrap()
        .unwrap();
    s.store.open_close_request(&close("cr-1", "k", t)).await.unwrap();
    let cr = agg(s, "cr-1").await.latest_close_request.unwrap().id;
    assert_eq!(
        s.store.request_cancel(&cr, &Access::All, "tester", t).await.unwrap(),
        Err(ManageRejection::NotCancelable),
        "no order at the broker yet"
    );
    submit(s, "cr-1", 1).await;
    let (account, orders) = s
        .store
        .request_cancel(&cr, &Access::All, "tester", t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((account.as_str(), orders.len()), ("acct-1", 1));
    let asked = agg(s, "cr-1").await;
    assert_eq!(
        asked.latest_close_request.as_ref().unwrap().cancel_requested_at,
        Some(t)
    );
    assert_eq!(asked.position.status, PositionStatus::Closing);
    s.store
        .request_cancel(&cr, &Access::All, "tester", t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        agg(s, "cr-1").await.position.version,
        asked.position.version,
        "recorded once"
    );
    // The broker refuses... nothing filled and the order rejected: close_failed by seeding.
    let mut failed = agg(s, "cr-1").await;
    failed.orders[0].status = OrderStatus::Rejected;
    failed.position.status = PositionStatus::CloseFailed;
    failed.position.active_close_request_id = None;
    failed.latest_close_request.as_mut().unwrap().status = CloseRequestStatus::Failed;
    crate::seed(s.store.as_ref(), failed).await;
    let cmd = RetryCommand {
        close_request_id: cr,
        idempotency_key: IdempotencyKey::parse("r-1").unwrap(),
        fingerprint: Fingerprint::of_body(&serde_json::json!({"retry": {}})),
        options: None,
        actor: "tester".into(),
        access: Access::All,
        now: t,
    };
    let (after, replayed) = s.store.retry_close(&cmd).await.unwrap().unwrap();
    assert!(!replayed);
    let c = after.latest_close_request.as_ref().unwrap();
    assert_eq!(
        (after.position.status, c.status, c.current_attempt()),
        (PositionStatus::Closing, CloseRequestStatus::Pending, 2)
    );
    assert_eq!(agg(s, "cr-1").await, after);
    let (again, replayed) = s.store.retry_close(&cmd).await.unwrap().unwrap();
    assert!(replayed);
    assert_eq!(
        again.position.version, after.position.version,
        "a replay writes nothing"
    );
}

/// The multi-leg order of an `mleg` strategy close: its legs are found by the strategy
/// close id; a report under the order's name (`{strategy_close_id}-{n}`) reaches every
/// leg's own order record, each with its share; a duplicate changes nothing; a report with
/// the legs' own fills settles each leg; an unknown name reaches nobody.
pub async fn an_mleg_report_reaches_every_leg_once(s: &ContractStore) {
    use closeflow_domain::{mleg_client_order_id, MlegLegReport, MlegReport, OrderUpdate, Quantity};
    for (i, (id, symbol, q)) in [
        ("ml-a", "SPY260116C00600000", "4"),
        ("ml-b", "SPY260116C00590000", "-2"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = register(id, q, start_time() + TimeDelta::minutes(i as i64));
        cmd.strategy_id = Some("ml".into());
        cmd.asset_type = closeflow_domain::AssetType::Option;
        cmd.symbol = symbol.into();
        s.store.register_position(&cmd).await.unwrap().unwrap();
    }
    let mut cmd = strategy_close("ml", "k", 5);
    cmd.broker_supports_mleg = true;
    let view = match s.store.close_strategy(&cmd).await.unwrap() {
        closeflow_store::StrategyCloseOutcome::Created(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(view.mode, closeflow_domain::StrategyCloseMode::Mleg);
    let mut found: Vec<String> = s
        .store
        .strategy_close_legs(&view.id)
        .await
        .unwrap()
        .iter()
        .map(|l| l.position.id.to_string())
        .collect();
    found.sort();
    assert_eq!(found, ["ml-a", "ml-b"]);

    // 1 of 2 units (2:1) filled, reported without legs: each leg fills its ratio.
    let partial = OrderUpdate {
        client_order_id: mleg_client_order_id(&view.id, 1),
        broker_order_id: Some("b-mleg".into()),
        status: OrderStatus::PartiallyFilled,
        filled_qty: Quantity::from(1),
        filled_avg_price: None,
        seq: None,
        execution_id: None,
        updated_at: start_time(),
    };
    assert!(matches!(
        s.store
            .apply_order_update(&partial, start_time(), "tester")
            .await
            .unwrap(),
        UpdateResult::Applied { .. }
    ));
    let filled = |a: &PositionAggregate| a.latest_close_request.as_ref().unwrap().filled_qty.to_string();
    assert_eq!(
        (filled(&agg(s, "ml-a").await), filled(&agg(s, "ml-b").await)),
        ("2".into(), "1".into())
    );
    let before = (agg(s, "ml-a").await, agg(s, "ml-b").await);
    assert!(matches!(
        s.store
            .apply_order_update(&partial, start_time(), "tester")
            .await
            .unwrap(),
        UpdateResult::Ignored(_)
    ));
    assert_eq!(
        (agg(s, "ml-a").await, agg(s, "ml-b").await),
        before,
        "a duplicate writes nothing"
    );

    // The final report names each leg's own fill and price.
    let leg = |symbol: &str, q: i64, price: &str| MlegLegReport {
        symbol: symbol.into(),
        broker_order_id: Some(format!("b-{symbol}")),
        status: Some(OrderStatus::Filled),
        filled_qty: Quantity::from(q),
        filled_avg_price: Some(crate::builders::price(price)),
    };
    let done = MlegReport {
        client_order_id: mleg_client_order_id(&view.id, 1),
        broker_order_id: Some("b-mleg".into()),
        status: OrderStatus::Filled,
        filled_qty: Quantity::from(2),
        legs: vec![
            leg("SPY260116C00600000", 4, "3.1"),
            leg("SPY260116C00590000", 2, "4.05"),
        ],
        seq: None,
        execution_id: None,
        updated_at: start_time(),
    };
    s.store.apply_mleg_report(&done, start_time(), "tester").await.unwrap();
    let v = s
        .store
        .strategy_close(&view.id, &closeflow_domain::Access::All)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.status, closeflow_domain::StrategyCloseStatus::Success);
    for l in &v.legs {
        assert_eq!(l.filled_qty, l.qty, "{l:?}");
    }
    for id in ["ml-a", "ml-b"] {
        let a = agg(s, id).await;
        assert_eq!(a.position.status, PositionStatus::Closed, "{id}");
        assert!(closeflow_domain::check_invariants(&a.position, a.latest_close_request.as_ref()).is_empty());
    }

    // A name no strategy close carries reaches nobody.
    let stray = closeflow_domain::StrategyCloseId::new(&pid("ml-a"), [0xee; 16]);
    assert!(s.store.strategy_close_legs(&stray).await.unwrap().is_empty());
    let mut unknown = partial.clone();
    unknown.client_order_id = mleg_client_order_id(&stray, 1);
    assert_eq!(
        s.store
            .apply_order_update(&unknown, start_time(), "tester")
            .await
            .unwrap(),
        UpdateResult::UnknownOrder
    );
}

/// One `#[tokio::test]` per contract check for a backend.
#[macro_export]
macro_rules! store_contract_tests {
    ($backend:expr) => {
        $crate::store_contract_tests!(@each $backend;
            registration_creates_updates_and_is_idempotent,
            commits_are_conditional_and_all_or_nothing,
            a_close_stores_exactly_what_the_domain_decides,
            replays_find_superseded_close_requests,
            fills_settle_the_close_and_modify_returns_the_decision,
            work_lists_hold_exactly_what_needs_a_job_oldest_first,
            the_change_log_has_every_commit_once_in_order,
            the_account_quota_counts_live_positions_atomically,
            the_trading_state_refuses_new_exposure_atomically,
            the_audit_log_keeps_each_entry_once_in_order_per_position_and_account,
            listings_page_newest_first_by_account_and_by_strategy,
            a_partial_limit_close_stores_exactly_what_the_domain_decides,
            cancel_and_retry_are_decided_by_the_domain_and_written_once,
            a_strategy_close_writes_every_leg_or_none,
            racing_strategy_closes_make_one,
            an_mleg_report_reaches_every_leg_once,
            bulk_close_records_are_created_once_versioned_and_paged,
            drawdown_states_are_versioned_per_account,
            aggregates_are_read_many_at_once_by_id,
            a_manual_mleg_retry_writes_every_failed_leg_or_none,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $crate::contract::store_for($backend).await;
                $crate::contract::$name(&store).await;
            }
        )*
    };
}

/// A strategy close command over `strategy` with `key`, the body `{}` (fingerprinted as the
/// API does: wrapped as `{"strategy_close": body}`), random bits `random`.
pub fn strategy_close(strategy: &str, key: &str, random: u8) -> closeflow_domain::StrategyCloseCommand {
    closeflow_domain::StrategyCloseCommand {
        strategy_id: strategy.into(),
        idempotency_key: closeflow_domain::IdempotencyKey::parse(key).unwrap(),
        fingerprint: closeflow_domain::Fingerprint::of_body(&serde_json::json!({"strategy_close": {}})),
        random: [random; 16],
        mode: None,
        broker_supports_mleg: false,
        options: closeflow_domain::OrderOptions::MARKET,
        qty: None,
        reason: Some("contract".into()),
        max_retries: 3,
        actor: "tester".into(),
        access: closeflow_domain::Access::All,
        now: start_time(),
    }
}

/// A strategy close moves every leg to `closing` in one commit — exactly the aggregates
/// the domain decides — or writes nothing (a leg not `open` is named); replays and a
/// reused key are answered from the legs' own idempotency records.
pub async fn a_strategy_close_writes_every_leg_or_none(s: &ContractStore) {
    use closeflow_domain::{StrategyCloseDecision as D, StrategyCloseRejection as R, StrategyCloseStatus};
    use closeflow_store::StrategyCloseOutcome as O;
    for (i, id) in ["sa-1", "sa-2", "sa-3"].iter().enumerate() {
        register_at(s, id, "acct-1", Some("ic-atomic"), i as i64).await;
    }
    for (i, id) in ["sb-1", "sb-2", "sb-3", "sb-4"].iter().enumerate() {
        register_at(s, id, "acct-1", Some("ic-ok"), i as i64).await;
    }
    assert_eq!(
        s.store
            .close_strategy(&strategy_close("no-such", "k", 1))
            .await
            .unwrap(),
        O::Rejected(R::NotFound)
    );

    // One leg already closing on its own: the strategy close is refused, nothing written.
    match s
        .store
        .open_close_request(&close("sa-2", "single", start_time()))
        .await
        .unwrap()
    {
        CloseOutcome::Created { .. } => {}
        other => panic!("{other:?}"),
    }
    let before = [agg(s, "sa-1").await, agg(s, "sa-2").await, agg(s, "sa-3").await];
    assert_eq!(
        s.store
            .close_strategy(&strategy_close("ic-atomic", "k", 1))
            .await
            .unwrap(),
        O::Rejected(R::NotClosable {
            position_id: pid("sa-2"),
            status: PositionStatus::Closing
        })
    );
    let after = [agg(s, "sa-1").await, agg(s, "sa-2").await, agg(s, "sa-3").await];
    assert_eq!(before, after, "a refused strategy close writes nothing");

    // Accepted: the stored legs are what the domain decided, tagged, stamped with the actor.
    let cmd = strategy_close("ic-ok", "k", 3);
    let legs = [
        agg(s, "sb-1").await,
        agg(s, "sb-2").await,
        agg(s, "sb-3").await,
        agg(s, "sb-4").await,
    ];
    let D::Create { id, legs: decided, .. } = closeflow_domain::decide_strategy_close(&legs, &cmd) else {
        panic!("the domain refused")
    };
    let O::Created(view) = s.store.close_strategy(&cmd).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(
        (view.id, view.legs.len(), view.status),
        (id, 4, StrategyCloseStatus::Pending)
    );
    for mut want in decided {
        want.changed_by = Some("tester".into());
        assert_eq!(agg(s, want.position.id.as_str()).await, want);
    }
    assert_eq!(s.store.close_strategy(&cmd).await.unwrap(), O::Replayed(view.clone()));
    let mut other_body = strategy_close("ic-ok", "k", 4);
    other_body.fingerprint =
        closeflow_domain::Fingerprint::of_body(&serde_json::json!({"strategy_close": {"qty": "1"}}));
    assert_eq!(
        s.store.close_strategy(&other_body).await.unwrap(),
        O::Rejected(R::IdempotencyKeyReused)
    );
    assert!(matches!(
        s.store.close_strategy(&strategy_close("ic-ok", "k2", 5)).await.unwrap(),
        O::Rejected(R::NotClosable { .. })
    ));
    // The view is derived from the legs; another account's caller cannot see it.
    assert_eq!(
        s.store
            .strategy_close(&id, &closeflow_domain::Access::All)
            .await
            .unwrap(),
        Some(view)
    );
    let other = closeflow_domain::Access::Accounts([closeflow_domain::AccountId::parse("acct-9").unwrap()].into());
    assert_eq!(s.store.strategy_close(&id, &other).await.unwrap(), None);
}

/// 32 racing strategy closes with distinct keys make exactly one strategy close; 32 with
/// one key all name it. A loser sees the legs `closing` (or, on DynamoDB, a transaction
/// conflict: 409 `position_locked`, nothing written).
pub async fn racing_strategy_closes_make_one(s: &ContractStore) {
    use closeflow_store::StrategyCloseOutcome as O;
    for (i, id) in ["sr-1", "sr-2", "sr-3", "sr-4"].iter().enumerate() {
        register_at(s, id, "acct-1", Some("ic-race"), i as i64).await;
    }
    for same_key in [false, true] {
        if same_key {
            for (i, id) in ["ss-1", "ss-2", "ss-3"].iter().enumerate() {
                register_at(s, id, "acct-1", Some("ic-same"), i as i64).await;
            }
        }
        let strategy = if same_key { "ic-same" } else { "ic-race" };
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let store = s.store.clone();
                let key = if same_key {
                    "one".to_string()
                } else {
                    format!("key-{i}")
                };
                let cmd = strategy_close(strategy, &key, i);
                tokio::spawn(async move { store.close_strategy(&cmd).await })
            })
            .collect();
        let mut created = Vec::new();
        let mut named = std::collections::BTreeSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(O::Created(v)) => {
                    named.insert(v.id);
                    created.push(v.id)
                }
                Ok(O::Replayed(v)) => {
                    named.insert(v.id);
                }
                Ok(O::Rejected(closeflow_domain::StrategyCloseRejection::NotClosable { .. })) => assert!(!same_key),
                Err(closeflow_store::StoreError::Contention) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(created.len(), 1, "same key: {same_key}");
        assert_eq!(named.len(), 1);
    }
}

/// A bulk close record is created once per id (the second create answers the stored
/// one), changes only at the next version, and keeps its pages in page order, a page
/// written again replacing the first write.
pub async fn bulk_close_records_are_created_once_versioned_and_paged(s: &ContractStore) {
    use closeflow_domain::{BulkPage, BulkRow, RowOutcome};
    let t = start_time();
    let bulk = crate::builders::bulk_close("bulk-1", t);
    assert_eq!(s.store.bulk_close(&bulk.id).await.unwrap(), None);
    assert_eq!(s.store.create_bulk_close(&bulk).await.unwrap(), None, "created");
    let mut again = crate::builders::bulk_close("bulk-1", t + TimeDelta::seconds(5));
    again.reason = Some("replayed".into());
    assert_eq!(
        s.store.create_bulk_close(&again).await.unwrap(),
        Some(bulk.clone()),
        "the stored one, unchanged"
    );
    let mut next = bulk.clone();
    next.version = 2;
    next.fan_out.pages_done = 1;
    next.fan_out.cursor = Some("2026-01-01#p".into());
    assert!(s.store.update_bulk_close(&next).await.unwrap());
    assert!(
        !s.store.update_bulk_close(&next).await.unwrap(),
        "a stale version writes nothing"
    );
    let mut skipped = next.clone();
    skipped.version = 4;
    assert!(!s.store.update_bulk_close(&skipped).await.unwrap());
    assert_eq!(s.store.bulk_close(&bulk.id).await.unwrap(), Some(next));
    let row = |id: &str, outcome: RowOutcome| BulkRow {
        position_id: pid(id),
        symbol: "AAPL".into(),
        strategy_id: None,
        outcome,
    };
    let failed = RowOutcome::Failed {
        error: "invalid_state".into(),
        message: "cannot close".into(),
    };
    for number in [1u32, 0, 10] {
        let page = BulkPage {
            number,
            rows: vec![row(&format!("p{number}"), failed.clone())],
        };
        s.store.put_bulk_page(&bulk.id, &page).await.unwrap();
    }
    let redone = BulkPage {
        number: 1,
        rows: vec![row(
            "p1",
            RowOutcome::Skipped {
                reason: "already_closing".into(),
            },
        )],
    };
    s.store.put_bulk_page(&bulk.id, &redone).await.unwrap();
    let pages = s.store.bulk_pages(&bulk.id).await.unwrap();
    assert_eq!(pages.iter().map(|p| p.number).collect::<Vec<_>>(), vec![0, 1, 10]);
    assert_eq!(pages[1], redone);
    let other = crate::builders::bulk_close("bulk-2", t);
    assert!(
        s.store.bulk_pages(&other.id).await.unwrap().is_empty(),
        "pages are per bulk close"
    );
}

/// The drawdown guard's memory: created once at version 1, then each write only over the
/// version before it (two runs racing: one wins), kept per account; a liquidation's record
/// round-trips with its loop state.
pub async fn drawdown_states_are_versioned_per_account(s: &ContractStore) {
    use closeflow_domain::{DrawdownLevel, DrawdownState};
    let a = closeflow_domain::AccountId::parse("acct-dd").unwrap();
    let b = closeflow_domain::AccountId::parse("acct-dd-2").unwrap();
    let state = |hw: i64, level| DrawdownState {
        high_water: rust_decimal::Decimal::from(hw),
        level,
    };
    assert_eq!(s.store.drawdown_state(&a).await.unwrap(), None);
    assert!(!s
        .store
        .put_drawdown_state(&a, &state(100, DrawdownLevel::Normal), 2)
        .await
        .unwrap());
    assert!(s
        .store
        .put_drawdown_state(&a, &state(100, DrawdownLevel::Normal), 1)
        .await
        .unwrap());
    assert!(
        !s.store
            .put_drawdown_state(&a, &state(90, DrawdownLevel::Normal), 1)
            .await
            .unwrap(),
        "version 1 exists"
    );
    let warned = state(120, DrawdownLevel::Warned);
    assert!(s.store.put_drawdown_state(&a, &warned, 2).await.unwrap());
    assert!(
        !s.store.put_drawdown_state(&a, &warned, 2).await.unwrap(),
        "a racing run lost"
    );
    assert_eq!(s.store.drawdown_state(&a).await.unwrap(), Some((warned, 2)));
    assert_eq!(s.store.drawdown_state(&b).await.unwrap(), None, "per account");

    let mut liq = crate::builders::bulk_close("liq-dd", start_time());
    liq.liquidation = Some(closeflow_domain::Liquidation::new(3));
    assert_eq!(s.store.create_bulk_close(&liq).await.unwrap(), None);
    let mut next = liq.clone();
    next.version += 1;
    next.liquidation = Some(
        liq.liquidation
            .clone()
            .unwrap()
            .advanced(closeflow_domain::LiquidationPhase::Sync),
    );
    next.liquidation.as_mut().unwrap().canceled_orders = vec!["o-1".into()];
    assert!(s.store.update_bulk_close(&next).await.unwrap());
    assert_eq!(s.store.bulk_close(&liq.id).await.unwrap(), Some(next));
}

/// Many aggregates read at once come back by position id: exactly the stored ones asked
/// for, each as stored (an unknown id is left out, an unasked one never appears).
pub async fn aggregates_are_read_many_at_once_by_id(s: &ContractStore) {
    for (i, id) in ["many-1", "many-2", "many-3"].iter().enumerate() {
        register_at(s, id, "acct-many", None, i as i64).await;
    }
    let (one, two, unknown) = (pid("many-1"), pid("many-3"), pid("many-404"));
    let found = s.store.aggregates_by_id(&[&one, &two, &unknown]).await.unwrap();
    let mut keys: Vec<String> = found.keys().map(|k| k.to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["many-1", "many-3"]);
    for (k, agg) in &found {
        assert_eq!(&agg.position.id, k);
        assert_eq!(
            Some(agg.clone()),
            s.store.aggregate(&AggregateKey::Position(k.clone())).await.unwrap()
        );
    }
    assert!(s.store.aggregates_by_id(&[]).await.unwrap().is_empty());
}

/// A manual retry of one leg of a multi-leg close writes every failed leg's new attempt
/// in one commit or none: racing retries with two keys start one attempt, a replay
/// answers the same, and the legs end at the same attempt with the same options.
pub async fn a_manual_mleg_retry_writes_every_failed_leg_or_none(s: &ContractStore) {
    use closeflow_domain::{RetryCommand, SubmitRequest};
    for (i, (id, symbol, q)) in [
        ("mr-a", "SPY260116C00600000", "1"),
        ("mr-b", "SPY260116C00590000", "-1"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = register(id, q, start_time() + TimeDelta::minutes(i as i64));
        cmd.strategy_id = Some("mr".into());
        cmd.asset_type = closeflow_domain::AssetType::Option;
        cmd.symbol = symbol.into();
        s.store.register_position(&cmd).await.unwrap().unwrap();
    }
    let mut cmd = strategy_close("mr", "k", 6);
    cmd.broker_supports_mleg = true;
    let view = match s.store.close_strategy(&cmd).await.unwrap() {
        closeflow_store::StrategyCloseOutcome::Created(v) => v,
        other => panic!("{other:?}"),
    };
    // The broker refused attempt 1's order: every leg `close_failed`.
    for leg in &view.legs {
        let req = SubmitRequest {
            position_id: leg.position_id.clone(),
            close_request_id: leg.close_request_id,
            attempt: 1,
        };
        let refused = SubmitAnswer::Rejected {
            reason: "refused".into(),
        };
        modify(
            s.store.as_ref(),
            &AggregateKey::Position(leg.position_id.clone()),
            "tester",
            |agg| Step::applied(record_submission(agg, &req, &refused, start_time())),
        )
        .await
        .unwrap();
        assert_eq!(
            agg(s, leg.position_id.as_str()).await.position.status,
            PositionStatus::CloseFailed
        );
    }
    let retry = |key: &str| RetryCommand {
        close_request_id: view.legs[0].close_request_id,
        idempotency_key: closeflow_domain::IdempotencyKey::parse(key).unwrap(),
        fingerprint: closeflow_domain::Fingerprint::of_body(&serde_json::json!({"retry": {}})),
        options: None,
        actor: "trader".into(),
        access: closeflow_domain::Access::All,
        now: start_time(),
    };
    let (one, two) = (retry("r-1"), retry("r-2"));
    let (a, b) = tokio::join!(s.store.retry_close(&one), s.store.retry_close(&two));
    let started = [a.unwrap(), b.unwrap()]
        .into_iter()
        .filter(|r| matches!(r, Ok((_, false))))
        .count();
    assert_eq!(started, 1, "one attempt started");
    for leg in &view.legs {
        let a = agg(s, leg.position_id.as_str()).await;
        let cr = a.latest_close_request.as_ref().unwrap();
        assert_eq!(
            (a.position.status, cr.status, cr.current_attempt()),
            (PositionStatus::Closing, CloseRequestStatus::Pending, 2),
            "{}: every leg or none, once",
            leg.position_id
        );
    }
    let winner = if agg(s, "mr-a").await.idempotency.contains_key(&one.idempotency_key) {
        one
    } else {
        two
    };
    assert!(
        matches!(s.store.retry_close(&winner).await.unwrap(), Ok((_, true))),
        "a replay"
    );
}
