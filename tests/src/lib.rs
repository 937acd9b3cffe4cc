//! Harness for the end-to-end scenario tests: one [`TestApp`] per test, on either backend,
//! driven through the real router in-process (no sockets).
//!
//! The DynamoDB backend talks to whatever `AWS_ENDPOINT_URL` points at (moto in
//! `make test`), each test in its own uniquely named table, so tests run in parallel.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use axum::Router;
use closeflow_api::{router, AppState, ManualClock};
use closeflow_domain::{
    CloseCommand, OrderUpdate, PositionAggregate, PositionId, RegisterPosition, RoutingKey, Timestamp,
};
use closeflow_store::dynamo::table;
use closeflow_store::{
    AuditLog, AuditPage, AuditQuery, Backend as StoreBackend, CloseOutcome, CloseStore, Conflict, DynamoStore, Listed,
    MemoryStore, RegisterOutcome, RoundTripCounter, SqliteStore, StoreError, UpdateResult, WorkList, Write,
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub mod builders;
pub mod bulk_scenarios;
pub mod chaos;
pub mod contract;
pub mod fuzz;
pub mod hardening;
pub mod options_scenarios;
pub mod paper;
pub mod pipeline;
pub mod pipeline_scenarios;
pub mod reconcile_scenarios;
pub mod scenarios;
pub mod strategy_scenarios;
pub mod sync_scenarios;
pub mod template;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store.
    Embedded,
    /// The SQLite store in a fresh database file.
    Sqlite,
    DynamoDb,
}

/// A fresh, uniquely named SQLite database file (tests run in parallel).
pub fn temp_db_path() -> String {
    std::env::temp_dir()
        .join(format!("closeflow-test-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned()
}

/// Stores an aggregate as given (over whatever is there): fixtures for states the API
/// cannot reach on its own. Goes through the store's own primitives, on every backend.
pub async fn seed(store: &dyn CloseStore, agg: PositionAggregate) {
    let current = store
        .load(RoutingKey::of(&agg.position.id))
        .await
        .expect("load for seeding");
    let write = match current {
        None => Write::Create(agg),
        Some(c) => Write::Put {
            next: agg,
            expected: c.position.version,
        },
    };
    store.commit(&[write]).await.expect("store").expect("seed write");
}

/// Wraps a store and makes its next N close attempts fail with `Contention`, which is how
/// DynamoDB answers a write that collides with a transaction or is throttled. Every
/// backend sits behind it, so the API's handling of contention is tested on each.
pub struct FaultInjectingStore {
    inner: Arc<dyn CloseStore>,
    contention_left: AtomicU32,
    /// Writes that reached the store: commits, phase-1 close writes, bulk close records and
    /// pages.
    writes: std::sync::atomic::AtomicU64,
}

impl FaultInjectingStore {
    /// `inner` with no faults, counting its writes.
    pub fn counting(inner: Arc<dyn CloseStore>) -> FaultInjectingStore {
        FaultInjectingStore {
            inner,
            contention_left: AtomicU32::new(0),
            writes: Default::default(),
        }
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl StoreBackend for FaultInjectingStore {
    async fn load(&self, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError> {
        self.inner.load(routing).await
    }
    async fn load_many(&self, keys: &[RoutingKey]) -> Result<Vec<PositionAggregate>, StoreError> {
        self.inner.load_many(keys).await
    }
    async fn commit(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError> {
        self.wrote();
        self.inner.commit(writes).await
    }
    async fn live_positions(&self, account: &closeflow_domain::AccountId) -> Result<i64, StoreError> {
        self.inner.live_positions(account).await
    }
    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError> {
        self.inner.work_list(list, since, limit).await
    }
    async fn list_index(&self, q: &closeflow_store::IndexQuery) -> Result<closeflow_store::IndexPage, StoreError> {
        self.inner.list_index(q).await
    }
    async fn account_state(
        &self,
        a: &closeflow_domain::AccountId,
    ) -> Result<closeflow_domain::AccountState, StoreError> {
        self.inner.account_state(a).await
    }
    async fn put_account_state(
        &self,
        next: &closeflow_domain::AccountState,
    ) -> Result<Result<(), closeflow_domain::AccountState>, StoreError> {
        self.inner.put_account_state(next).await
    }
}

/// Every protocol step goes to the wrapped store, so its own fast paths are the ones tested.
#[async_trait]
impl CloseStore for FaultInjectingStore {
    async fn register_position(&self, cmd: &RegisterPosition) -> Result<RegisterOutcome, StoreError> {
        self.inner.register_position(cmd).await
    }
    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError> {
        let injected = self
            .contention_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(StoreError::Contention);
        }
        // One conditional write on every backend (the close's phase 1).
        self.wrote();
        self.inner.open_close_request(cmd).await
    }
    async fn apply_order_update(
        &self,
        update: &OrderUpdate,
        now: Timestamp,
        actor: &str,
    ) -> Result<UpdateResult, StoreError> {
        self.inner.apply_order_update(update, now, actor).await
    }
}

#[async_trait]
impl AuditLog for FaultInjectingStore {
    async fn record(
        &self,
        entries: &[closeflow_domain::AuditEntry],
        retention: chrono::TimeDelta,
    ) -> Result<(), StoreError> {
        self.inner.record(entries, retention).await
    }
    async fn trail(&self, query: &AuditQuery, limit: usize, cursor: Option<&str>) -> Result<AuditPage, StoreError> {
        self.inner.trail(query, limit, cursor).await
    }
    async fn expire_audit(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.inner.expire_audit(now).await
    }
}

#[async_trait]
impl closeflow_store::BulkLog for FaultInjectingStore {
    async fn create_bulk_close(
        &self,
        bulk: &closeflow_domain::BulkClose,
    ) -> Result<Option<closeflow_domain::BulkClose>, StoreError> {
        self.wrote();
        self.inner.create_bulk_close(bulk).await
    }
    async fn update_bulk_close(&self, next: &closeflow_domain::BulkClose) -> Result<bool, StoreError> {
        self.wrote();
        self.inner.update_bulk_close(next).await
    }
    async fn bulk_close(
        &self,
        id: &closeflow_domain::BulkCloseId,
    ) -> Result<Option<closeflow_domain::BulkClose>, StoreError> {
        self.inner.bulk_close(id).await
    }
    async fn put_bulk_page(
        &self,
        id: &closeflow_domain::BulkCloseId,
        page: &closeflow_domain::BulkPage,
    ) -> Result<(), StoreError> {
        self.wrote();
        self.inner.put_bulk_page(id, page).await
    }
    async fn bulk_pages(
        &self,
        id: &closeflow_domain::BulkCloseId,
    ) -> Result<Vec<closeflow_domain::BulkPage>, StoreError> {
        self.inner.bulk_pages(id).await
    }

    async fn drawdown_state(
        &self,
        account: &closeflow_domain::AccountId,
    ) -> Result<Option<(closeflow_domain::DrawdownState, u64)>, StoreError> {
        self.inner.drawdown_state(account).await
    }

    async fn put_drawdown_state(
        &self,
        account: &closeflow_domain::AccountId,
        state: &closeflow_domain::DrawdownState,
        version: u64,
    ) -> Result<bool, StoreError> {
        self.inner.put_drawdown_state(account, state, version).await
    }
}

pub struct TestApp {
    pub backend: Backend,
    pub router: Router,
    pub clock: Arc<ManualClock>,
    /// DynamoDB round trips so far (DynamoDB backend only).
    pub round_trips: Option<RoundTripCounter>,
    faults: Arc<FaultInjectingStore>,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// `body[field]` as a string, panicking with the whole reply when absent.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{field}` in {} {}", self.status, self.body))
            .to_string()
    }
}

/// Store failures are logged (not sent to clients): show warnings in failing tests.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn start_time() -> closeflow_domain::Timestamp {
    closeflow_domain::testing::t0()
}

/// A client for the emulator named by `AWS_ENDPOINT_URL`, counting round trips.
pub async fn dynamo_client(counter: RoundTripCounter) -> aws_sdk_dynamodb::Client {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "the DynamoDB scenario tests need AWS_ENDPOINT_URL (a moto server); run them with `make test`"
    );
    DynamoStore::client_from_env(Some(counter)).await
}

pub fn unique_table_name() -> String {
    format!("closeflow-test-{}", uuid::Uuid::new_v4().simple())
}

/// New tables shaped by template.yaml (the closes table and its audit table, named after
/// `name`) and the store over them.
pub async fn dynamo_test_store(client: aws_sdk_dynamodb::Client, name: &str) -> DynamoStore {
    table::create_table(&client, name, &template::table_spec())
        .await
        .expect("create test table");
    let audit = format!("{name}-audit");
    table::create_table(&client, &audit, &template::audit_table_spec())
        .await
        .expect("create test audit table");
    DynamoStore::new(client, name).with_audit_table(audit)
}

impl TestApp {
    pub async fn new(backend: Backend) -> TestApp {
        Self::with_config(backend, closeflow_api::ApiConfig::default()).await
    }

    pub async fn with_config(backend: Backend, config: closeflow_api::ApiConfig) -> TestApp {
        init_test_logging();
        let (store, round_trips): (Arc<dyn CloseStore>, _) = match backend {
            Backend::Embedded => (Arc::new(MemoryStore::new()), None),
            Backend::Sqlite => (Arc::new(SqliteStore::open(&temp_db_path()).expect("sqlite")), None),
            Backend::DynamoDb => {
                let counter = RoundTripCounter::default();
                let client = dynamo_client(counter.clone()).await;
                let name = unique_table_name();
                (Arc::new(dynamo_test_store(client, &name).await), Some(counter))
            }
        };
        let faults = Arc::new(FaultInjectingStore::counting(store));
        let clock = Arc::new(ManualClock::new(start_time()));
        // No broker: the API scenarios here never reach one (the pipeline harness has one).
        let mut state = AppState::new(faults.clone());
        state.clock = clock.clone();
        state.auth = test_auth();
        state.config = config;
        TestApp {
            backend,
            router: router(state),
            clock,
            round_trips,
            faults,
        }
    }

    /// The next `n` close attempts meet a busy position.
    /// Moves an account's trading state through the store (what a liquidation does).
    pub async fn set_trading_state(&self, account: &str, event: closeflow_domain::TradingStateEvent) {
        let account = closeflow_domain::AccountId::parse(account).unwrap();
        self.faults
            .set_trading_state(&account, event, "tester", Some("test"), start_time())
            .await
            .expect("store")
            .expect("a legal move");
    }

    pub fn inject_contention(&self, n: u32) {
        self.faults.contention_left.store(n, Ordering::SeqCst);
    }

    /// Writes an aggregate directly, for states the API cannot produce in this version.
    pub async fn seed(&self, agg: PositionAggregate) {
        seed(self.faults.as_ref(), agg).await
    }

    pub fn round_trips(&self) -> u64 {
        self.round_trips.as_ref().map(RoundTripCounter::get).unwrap_or(0)
    }

    pub async fn call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        call(&self.router, method, path, headers, body).await
    }

    /// The whole aggregate, read through the store port.
    pub async fn aggregate(&self, id: &str) -> PositionAggregate {
        let key = closeflow_store::AggregateKey::Position(PositionId::parse(id).expect("position id"));
        self.faults
            .aggregate(&key)
            .await
            .expect("store")
            .expect("position exists")
    }

    /// The idempotency keys stored on a position.
    pub async fn stored_idempotency_keys(&self, id: &str) -> Vec<String> {
        let key = closeflow_store::AggregateKey::Position(PositionId::parse(id).expect("position id"));
        let agg = self.faults.aggregate(&key).await.expect("store");
        agg.map(|a| a.idempotency.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// A request as the caller holding `token`, with an idempotency key.
    pub async fn call_as(&self, token: &str, method: Method, path: &str, key: &str, body: Option<&str>) -> Reply {
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str()), ("idempotency-key", key)];
        self.call(method, path, &headers, body).await
    }

    pub async fn put_position(&self, id: &str, body: &str) -> Reply {
        self.call(Method::PUT, &format!("/positions/{id}"), &[], Some(body))
            .await
    }

    /// Registers an equity position with `quantity`, asserting it was created.
    pub async fn open_position(&self, id: &str, quantity: &str) -> Reply {
        let r = self
            .put_position(
                id,
                &format!(r#"{{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":{quantity}}}"#),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, &[], None).await
    }

    pub async fn close(&self, id: &str, key: &str) -> Reply {
        self.close_with(id, key, None).await
    }

    pub async fn close_with(&self, id: &str, key: &str, body: Option<&str>) -> Reply {
        self.call(
            Method::POST,
            &format!("/positions/{id}/close"),
            &[("idempotency-key", key)],
            body,
        )
        .await
    }
}

/// The harness's bearer tokens: one for every account, one limited to `acct-2`.
pub const TOKEN_ALL: &str = "test-token-all-accounts";
pub const TOKEN_ACCT2: &str = "test-token-acct-2";

pub fn test_auth() -> closeflow_api::auth::Auth {
    closeflow_api::auth::Auth::Tokens(Arc::new(
        closeflow_api::auth::parse_api_tokens(&format!("ops:{TOKEN_ALL}=*;acct2-user:{TOKEN_ACCT2}=acct-2"))
            .expect("tokens"),
    ))
}

/// Sends one request through the router in-process, as `TOKEN_ALL` unless the headers say
/// otherwise (an empty `authorization` value sends none).
pub async fn call(router: &Router, method: Method, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
        req = req.header("authorization", format!("Bearer {TOKEN_ALL}"));
    }
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("authorization") && v.is_empty() {
            continue;
        }
        req = req.header(*k, *v);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("router is infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON answer ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Reply { status, headers, body }
}

/// Generates one `#[tokio::test]` per scenario for a backend. The list lives here once,
/// so both backends always run the same scenarios.
#[macro_export]
macro_rules! scenario_tests {
    ($backend:expr) => {
        $crate::scenario_tests!(@each $backend;
            open_position_closes_into_a_pending_request,
            same_key_replays_the_same_close_request,
            different_key_while_closing_is_rejected_with_409,
            busy_position_answers_409_with_a_retry_hint_and_changes_nothing,
            unknown_ids_answer_404,
            zero_quantity_position_is_refused,
            closed_and_failed_positions_are_refused_as_invalid_state,
            bad_idempotency_keys_are_refused_before_any_write,
            malformed_or_unsupported_close_bodies_are_refused,
            same_key_with_a_different_body_is_refused_with_422,
            position_registration_creates_updates_and_guards_closing_positions,
            invalid_position_bodies_are_refused_and_change_nothing,
            short_fractional_positions_close_for_their_exact_absolute_quantity,
            thirty_two_concurrent_closes_with_distinct_keys_create_exactly_one,
            thirty_two_concurrent_closes_with_one_key_share_one_close_request,
            close_request_ids_route_to_their_own_position_only,
            callers_without_credentials_are_refused_with_401,
            callers_may_act_only_on_their_accounts,
            a_halted_account_refuses_new_exposure_and_resumes,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let app = $crate::TestApp::new($backend).await;
                $crate::scenarios::$name(&app).await;
            }
        )*
    };
}
