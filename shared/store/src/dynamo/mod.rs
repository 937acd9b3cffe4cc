//! DynamoDB adapter of the store port (single table, see README "Table design").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use closeflow_domain::{
    format_timestamp, AccountId, AccountState, CloseCommand, OrderStatus, OrderUpdate, PositionAggregate, RoutingKey,
    Timestamp, TradingState,
};

use crate::listing::{IndexPage, IndexQuery, ListIndex};
use crate::{Backend, CloseOutcome, CloseStore, Conflict, Listed, StoreError, UpdateResult, WorkList, Write};

pub mod audit;
pub mod bulk;
pub mod codec;
pub mod json;
pub mod table;

use codec::{n, s, Item, PK, SK};

/// Counts HTTP round trips to DynamoDB (one per attempt, retries included) and records
/// their operation names, for the round-trip and no-Scan assertions and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct RoundTripCounter(Arc<AtomicU64>, Arc<std::sync::Mutex<Vec<String>>>);

impl RoundTripCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Operation names sent so far (`GetItem`, `Query`, ...), oldest first.
    pub fn operations(&self) -> Vec<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Intercept for RoundTripCounter {
    fn name(&self) -> &'static str {
        "RoundTripCounter"
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let op = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map(|m| m.name().to_string())
            .unwrap_or_default();
        self.1.lock().unwrap_or_else(|p| p.into_inner()).push(op);
        Ok(())
    }
}

/// Error codes that mean "someone else is writing this item right now, or we are being
/// throttled": nothing was written, and the client should retry shortly.
const CONTENTION_CODES: &[&str] = &[
    "TransactionConflictException",
    "TransactionConflict",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
];

pub fn classify_error_code(code: Option<&str>, message: String) -> StoreError {
    match code {
        Some(c) if CONTENTION_CODES.contains(&c) => StoreError::Contention,
        _ => StoreError::Backend(message),
    }
}

fn backend<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let message = match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("service error"),
            se.message().unwrap_or("")
        ),
        None => format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&e)),
    };
    classify_error_code(code.as_deref(), message)
}

/// Errors of conditional writes that can carry the item as it was (ALL_OLD).
pub trait ConditionFailed {
    /// `Some(old item)` (empty when not returned) if this is a failed condition.
    fn condition_failed(&self) -> Option<Item>;
}

macro_rules! condition_failed {
    ($($err:path),*) => {$(
        impl ConditionFailed for $err {
            fn condition_failed(&self) -> Option<Item> {
                match self {
                    Self::ConditionalCheckFailedException(c) => Some(c.item().cloned().unwrap_or_default()),
                    _ => None,
                }
            }
        }
    )*};
}

condition_failed!(
    aws_sdk_dynamodb::operation::put_item::PutItemError,
    aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    aws_sdk_dynamodb::operation::delete_item::DeleteItemError
);

/// A conditional write's result: `Ok(output)` written, `Err(old item)` condition failed;
/// any other failure is a store error.
fn conditional<T, E, R>(res: Result<T, SdkError<E, R>>) -> Result<Result<T, Item>, StoreError>
where
    E: ConditionFailed + ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match res {
        Ok(out) => Ok(Ok(out)),
        Err(e) => match e.as_service_error().and_then(ConditionFailed::condition_failed) {
            Some(old) => Ok(Err(old)),
            None => Err(backend(e)),
        },
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: chrono::TimeDelta,
    /// Where the audit trail is kept (`AUDIT_TABLE_NAME`); the audit operations fail
    /// clearly without it.
    audit_table: Option<String>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            retention: closeflow_domain::Policy::default().retention,
            audit_table: None,
        }
    }

    /// Keeps the audit trail in `table` (see [`crate::AuditLog`]).
    pub fn with_audit_table(mut self, table: impl Into<String>) -> Self {
        self.audit_table = Some(table.into());
        self
    }

    /// Client from the standard AWS environment (`AWS_REGION`, credentials, and
    /// `AWS_ENDPOINT_URL` for emulators such as moto or LocalStack).
    pub async fn client_from_env(counter: Option<RoundTripCounter>) -> Client {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&shared);
        if let Some(c) = counter {
            builder = builder.interceptor(c);
        }
        Client::from_conf(builder.build())
    }

    /// Sets how long closed positions are kept before DynamoDB's TTL removes them.
    pub fn with_retention(mut self, retention: chrono::TimeDelta) -> Self {
        self.retention = retention;
        self
    }

    /// The whole item, with the TTL attribute on positions that are closed.
    fn item_with_ttl(&self, agg: &PositionAggregate) -> Item {
        let mut item = codec::aggregate_item(agg);
        // Only a closed position goes as a whole; its expiry is the domain's rule.
        if agg.position.status == closeflow_domain::PositionStatus::Closed {
            if let Some(at) = closeflow_domain::expiry_at(agg, self.retention) {
                item.insert("expires_at".into(), n(at.timestamp()));
            }
        }
        item
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }
}

fn aggregate_of(item: &Item) -> Result<Option<closeflow_domain::PositionAggregate>, StoreError> {
    if item.is_empty() {
        Ok(None)
    } else {
        codec::aggregate_from_item(item).map(Some)
    }
}

/// The account item's condition for new exposure: no trading state written, or `active`.
const ACCOUNT_ACTIVE: &str = "(attribute_not_exists(trading_state) OR trading_state = :active)";

/// The condition of one write: the shape [`crate::memory::condition_holds`] checks in memory.
fn write_condition(w: &Write) -> (String, Vec<(&'static str, AttributeValue)>) {
    match w {
        Write::Create(_) => ("attribute_not_exists(pk)".into(), vec![]),
        Write::Put { next, expected } => (
            "position_id = :pid AND #ver = :expected".into(),
            vec![(":pid", s(next.position.id.as_str())), (":expected", n(*expected))],
        ),
        Write::Delete { id, expected } => (
            "position_id = :pid AND #ver = :expected".into(),
            vec![(":pid", s(id.as_str())), (":expected", n(*expected))],
        ),
        // An atomic ADD needs no read; a ceiling is a condition on the value before it.
        Write::Count(c) => {
            let mut conds = Vec::new();
            let mut values = Vec::new();
            if let Some(max) = c.ceiling {
                let before_max =
                    (i128::from(max) - i128::from(c.delta)).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
                conds.push("(attribute_not_exists(live_positions) OR live_positions <= :max)");
                values.push((":max", n(before_max)));
            }
            if c.require_active {
                conds.push(ACCOUNT_ACTIVE);
                values.push((":active", s(TradingState::Active.as_str())));
            }
            (conds.join(" AND "), values)
        }
        Write::RequireActive(_) => (
            ACCOUNT_ACTIVE.into(),
            vec![(":active", s(TradingState::Active.as_str()))],
        ),
    }
}

#[async_trait]
impl Backend for DynamoStore {
    async fn load(&self, routing: RoutingKey) -> Result<Option<PositionAggregate>, StoreError> {
        let (pk, sk) = codec::routed_key(routing);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item.as_ref().map(codec::aggregate_from_item).transpose()
    }

    async fn load_many(&self, keys: &[RoutingKey]) -> Result<Vec<PositionAggregate>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        // BatchGetItem takes 100 keys per request.
        for chunk in keys.chunks(100) {
            let mut pending: Vec<std::collections::HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| {
                    let (pk, sk) = codec::routed_key(*k);
                    std::collections::HashMap::from([(PK.to_string(), pk), (SK.to_string(), sk)])
                })
                .collect();
            pending.dedup();
            // DynamoDB may leave keys unprocessed under load; ask again for those, a
            // bounded number of times, then report the store busy (nothing was decided).
            for _ in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    found.push(codec::aggregate_from_item(&item)?);
                }
                if let Some(mut left) = out.unprocessed_keys {
                    if let Some(k) = left.remove(&self.table) {
                        pending = k.keys;
                    }
                }
            }
            if !pending.is_empty() {
                return Err(StoreError::Contention);
            }
        }
        Ok(found)
    }

    async fn commit(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError> {
        match writes {
            [] => Ok(Ok(())),
            [one] if one.routing_key().is_some() => self.commit_one(one).await,
            many => self.commit_transaction(many).await,
        }
    }

    async fn live_positions(&self, account: &AccountId) -> Result<i64, StoreError> {
        let (pk, sk) = codec::account_key(account);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        match out
            .item
            .as_ref()
            .and_then(|i| i.get("live_positions"))
            .map(|v| v.as_n())
        {
            None => Ok(0),
            Some(Ok(text)) => text
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("live_positions `{text}` of account {account}"))),
            Some(Err(_)) => Err(StoreError::Corrupt(format!("live_positions of account {account}"))),
        }
    }

    async fn account_state(&self, account: &AccountId) -> Result<AccountState, StoreError> {
        let (pk, sk) = codec::account_key(account);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        codec::account_state_from_item(account, out.item.as_ref())
    }

    async fn put_account_state(&self, next: &AccountState) -> Result<Result<(), AccountState>, StoreError> {
        let (pk, sk) = codec::account_key(&next.account_id);
        let mut sets = vec!["trading_state = :ts", "state_version = :v"];
        let mut removes = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .expression_attribute_values(":ts", s(next.trading_state.as_str()))
            .expression_attribute_values(":v", n(next.version));
        for (name, value) in [
            ("state_changed_at", next.changed_at.as_ref().map(format_timestamp)),
            ("state_changed_by", next.changed_by.clone()),
            ("state_reason", next.reason.clone()),
        ] {
            match value {
                Some(v) => {
                    sets.push(match name {
                        "state_changed_at" => "state_changed_at = :at",
                        "state_changed_by" => "state_changed_by = :by",
                        _ => "state_reason = :reason",
                    });
                    let key = match name {
                        "state_changed_at" => ":at",
                        "state_changed_by" => ":by",
                        _ => ":reason",
                    };
                    req = req.expression_attribute_values(key, s(v));
                }
                None => removes.push(name),
            }
        }
        let cond = if next.version <= 1 {
            "attribute_not_exists(state_version)"
        } else {
            req = req.expression_attribute_values(":prev", n(next.version - 1));
            "state_version = :prev"
        };
        let mut update = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            update.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let res = req
            .update_expression(update)
            .condition_expression(cond)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional(res)? {
            Ok(_) => Ok(Ok(())),
            Err(old) => Ok(Err(codec::account_state_from_item(&next.account_id, Some(&old))?)),
        }
    }

    async fn work_list(&self, list: WorkList, since: Timestamp, limit: usize) -> Result<Listed, StoreError> {
        // The index is sparse: only listed items are in it, so this reads nothing else.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(codec::ATTENTION_INDEX)
            .key_condition_expression("attn = :list AND attn_at <= :since")
            .expression_attribute_values(":list", s(list.as_str()))
            .expression_attribute_values(":since", s(format_timestamp(&since)))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(backend)?;
        let aggregates = out
            .items()
            .iter()
            .map(codec::aggregate_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Listed {
            items_read: out.scanned_count().max(0) as usize,
            aggregates,
        })
    }

    async fn list_index(&self, q: &IndexQuery) -> Result<IndexPage, StoreError> {
        // A Query on the index under one key, newest first: one round trip, never a Scan.
        let (index, key_attr, key) = match &q.index {
            ListIndex::Account(a) => (codec::BY_ACCOUNT_INDEX, "account_id", a.as_str().to_string()),
            ListIndex::Strategy(st) => (codec::BY_STRATEGY_INDEX, "strategy_id", st.clone()),
        };
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .scan_index_forward(false)
            .limit(q.read_limit().min(1000) as i32)
            .expression_attribute_names("#k", key_attr)
            .expression_attribute_values(":k", s(key));
        req = match &q.before {
            Some(b) => req
                .key_condition_expression("#k = :k AND created_sk < :before")
                .expression_attribute_values(":before", s(b)),
            None => req.key_condition_expression("#k = :k"),
        };
        let mut filters = Vec::new();
        if let Some(st) = q.status {
            filters.push("#status = :status".to_string());
            req = req
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(st.as_str()));
        }
        if let Some(accounts) = &q.accounts {
            let names: Vec<String> = (0..accounts.len()).map(|i| format!(":acct{i}")).collect();
            for (name, a) in names.iter().zip(accounts) {
                req = req.expression_attribute_values(name, s(a.as_str()));
            }
            filters.push(if names.is_empty() {
                "attribute_not_exists(pk)".to_string()
            } else {
                format!("account_id IN ({})", names.join(", "))
            });
        }
        if !filters.is_empty() {
            req = req.filter_expression(filters.join(" AND "));
        }
        let out = req.send().await.map_err(backend)?;
        let read = out
            .items()
            .iter()
            .map(|item| {
                let sk = item
                    .get("created_sk")
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt("listed item without created_sk".into()))?;
                Ok((sk, codec::aggregate_from_item(item)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !q.filtered() {
            return Ok(q.page(read));
        }
        // Filtered: the page ends where DynamoDB stopped reading (its LastEvaluatedKey),
        // which may be an entry the filter dropped.
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get("created_sk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(IndexPage {
            positions: read.into_iter().map(|(_, p)| p).collect(),
            next,
            items_read: out.scanned_count().max(0) as usize,
        })
    }
}

#[async_trait]
impl CloseStore for DynamoStore {
    async fn open_close_request(&self, cmd: &CloseCommand) -> Result<CloseOutcome, StoreError> {
        // Options that are wrong whatever the position holds take the protocol's path,
        // where the domain refuses them; the fast path's condition covers the rest.
        let shape_ok = cmd.options.validate_shape().is_ok() && cmd.qty.is_none_or(|q| !q.is_zero() && !q.is_negative());
        if !shape_ok {
            return crate::open_close_request_from(self, cmd, None).await;
        }
        match self.open_close_request_in_place(cmd).await? {
            Ok(created) => Ok(created),
            // The fast path's condition failed: the domain decides on the item as it was
            // (ALL_OLD), with no second read; a re-close of a reopened position lands here.
            Err(old) => crate::open_close_request_from(self, cmd, Some(old)).await,
        }
    }

    async fn apply_order_update(
        &self,
        update: &OrderUpdate,
        now: Timestamp,
        actor: &str,
    ) -> Result<UpdateResult, StoreError> {
        if update.status == OrderStatus::PartiallyFilled {
            if let Some(done) = self.partial_fill_in_place(update, now, actor).await? {
                return Ok(done);
            }
        }
        crate::apply_order_update_by_protocol(self, update, now, actor).await
    }
}

impl DynamoStore {
    async fn commit_one(&self, w: &Write) -> Result<Result<(), Conflict>, StoreError> {
        let (cond, values) = write_condition(w);
        let conflict = |old: Item| -> Result<Conflict, StoreError> {
            Ok(Conflict {
                index: 0,
                current: Some(aggregate_of(&old)?),
            })
        };
        match w {
            Write::Count(_) | Write::RequireActive(_) => self.commit_transaction(std::slice::from_ref(w)).await,
            Write::Create(agg) | Write::Put { next: agg, .. } => {
                let mut req = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(self.item_with_ttl(agg)))
                    .condition_expression(cond)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                if matches!(w, Write::Put { .. }) {
                    req = req.expression_attribute_names("#ver", "version");
                }
                for (k, v) in values {
                    req = req.expression_attribute_values(k, v);
                }
                match conditional(req.send().await)? {
                    Ok(_) => Ok(Ok(())),
                    Err(old) => Ok(Err(conflict(old)?)),
                }
            }
            Write::Delete { id, .. } => {
                let (pk, sk) = codec::position_key(id);
                let mut req = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key(PK, pk)
                    .key(SK, sk)
                    .condition_expression(cond)
                    .expression_attribute_names("#ver", "version")
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                for (k, v) in values {
                    req = req.expression_attribute_values(k, v);
                }
                match conditional(req.send().await)? {
                    Ok(_) => Ok(Ok(())),
                    Err(old) => Ok(Err(conflict(old)?)),
                }
            }
        }
    }

    /// Several writes as one `TransactWriteItems`: all or none.
    async fn commit_transaction(&self, writes: &[Write]) -> Result<Result<(), Conflict>, StoreError> {
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
        let mut items = Vec::with_capacity(writes.len());
        for w in writes {
            let (cond, values) = write_condition(w);
            let values: std::collections::HashMap<String, AttributeValue> =
                values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let names = matches!(w, Write::Put { .. } | Write::Delete { .. })
                .then(|| std::collections::HashMap::from([("#ver".to_string(), "version".to_string())]));
            let values = (!values.is_empty()).then_some(values);
            let fail = ReturnValuesOnConditionCheckFailure::AllOld;
            let item = match w {
                Write::Count(c) => {
                    let (pk, sk) = codec::account_key(&c.account);
                    let mut values = values.unwrap_or_default();
                    values.insert(":d".into(), n(c.delta));
                    TransactWriteItem::builder()
                        .update(
                            Update::builder()
                                .table_name(&self.table)
                                .key(PK, pk)
                                .key(SK, sk)
                                .update_expression("ADD live_positions :d")
                                .set_condition_expression((!cond.is_empty()).then_some(cond))
                                .set_expression_attribute_values(Some(values))
                                .build()
                                .map_err(|e| StoreError::Backend(e.to_string()))?,
                        )
                        .build()
                }
                Write::RequireActive(account) => {
                    let (pk, sk) = codec::account_key(account);
                    TransactWriteItem::builder()
                        .condition_check(
                            aws_sdk_dynamodb::types::ConditionCheck::builder()
                                .table_name(&self.table)
                                .key(PK, pk)
                                .key(SK, sk)
                                .condition_expression(cond)
                                .set_expression_attribute_values(values)
                                .build()
                                .map_err(|e| StoreError::Backend(e.to_string()))?,
                        )
                        .build()
                }
                Write::Create(agg) | Write::Put { next: agg, .. } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(self.item_with_ttl(agg)))
                            .condition_expression(cond)
                            .set_expression_attribute_names(names)
                            .set_expression_attribute_values(values)
                            .return_values_on_condition_check_failure(fail)
                            .build()
                            .map_err(|e| StoreError::Backend(e.to_string()))?,
                    )
                    .build(),
                Write::Delete { id, .. } => {
                    let (pk, sk) = codec::position_key(id);
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.table)
                                .key(PK, pk)
                                .key(SK, sk)
                                .condition_expression(cond)
                                .set_expression_attribute_names(names)
                                .set_expression_attribute_values(values)
                                .return_values_on_condition_check_failure(fail)
                                .build()
                                .map_err(|e| StoreError::Backend(e.to_string()))?,
                        )
                        .build()
                }
            };
            items.push(item);
        }
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match res {
            Ok(_) => return Ok(Ok(())),
            Err(e) => e,
        };
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) = err.as_service_error() {
            let reasons = tc.cancellation_reasons();
            if let Some(index) = reasons.iter().position(|r| r.code() == Some("ConditionalCheckFailed")) {
                let current = match reasons[index].item() {
                    Some(old) => Some(aggregate_of(old)?),
                    None => None,
                };
                return Ok(Err(Conflict { index, current }));
            }
            // Cancelled for a concurrent transaction or throttling: nothing was written.
            return Err(StoreError::Contention);
        }
        Err(backend(err))
    }

    /// Phase 1 of a close as one conditional `UpdateItem`: the condition is the "accept"
    /// branch of `decide_close` for a position with no close request on it yet (the first
    /// close, or the first after cleanup); a test proves it writes what the domain decides.
    /// `Err(current)`: the condition failed, with the item as it was (ALL_OLD).
    async fn open_close_request_in_place(
        &self,
        cmd: &CloseCommand,
    ) -> Result<Result<CloseOutcome, Option<PositionAggregate>>, StoreError> {
        let (pk, sk) = codec::position_key(&cmd.position_id);
        let now = format_timestamp(&cmd.now);
        let record = closeflow_domain::IdempotencyRecord {
            close_request_id: cmd.new_id,
            fingerprint: cmd.fingerprint.clone(),
            created_at: cmd.now,
        };
        let mut req = self.client.update_item();
        if let Some(reason) = &cmd.reason {
            req = req.expression_attribute_values(":reason", s(reason));
        }
        if cmd.cancel_open_orders {
            req = req.expression_attribute_values(":coo", AttributeValue::Bool(true));
        }
        // The caller's accounts are part of the same condition: no read, no race.
        let mut account_check = String::new();
        if let closeflow_domain::Access::Accounts(accounts) = &cmd.access {
            let names: Vec<String> = (0..accounts.len()).map(|i| format!(":acct{i}")).collect();
            for (name, a) in names.iter().zip(accounts) {
                req = req.expression_attribute_values(name, s(a.as_str()));
            }
            account_check = format!(" AND account_id IN ({})", names.join(", "));
        }
        // The close's own options, as the codec stores them (absent = the default).
        let mut sets = String::new();
        let mut removes = vec![
            "cr_submitted_at",
            "cr_completed_at",
            "cr_failure_reason",
            "cr_redrives",
            "cr_cancel_requested_at",
            "cr_manual_retries",
            "cr_sc_id",
            "cr_sc_mode",
        ];
        let mut option_checks = String::new();
        let target = match cmd.qty {
            Some(q) => {
                req = req.expression_attribute_values(":tq", n(q));
                // A partial close must fit the position (decide_close's `invalid_qty`).
                option_checks.push_str(" AND close_qty >= :tq");
                ":tq"
            }
            None => "close_qty",
        };
        let o = cmd.options;
        for (name, value) in [
            (
                "cr_order_type",
                (o.order_type != closeflow_domain::OrderType::Market).then(|| s(o.order_type.as_str())),
            ),
            ("cr_limit_price", o.signed_limit_price().map(n)),
            (
                "cr_tif",
                (o.time_in_force != closeflow_domain::TimeInForce::Day).then(|| s(o.time_in_force.as_str())),
            ),
            ("cr_ext_hours", o.extended_hours.then_some(AttributeValue::Bool(true))),
        ] {
            match value {
                Some(v) => {
                    sets.push_str(&format!(", {name} = :{name}"));
                    req = req.expression_attribute_values(format!(":{name}"), v);
                }
                None => removes.push(name),
            }
        }
        if o.time_in_force != closeflow_domain::TimeInForce::Day {
            // Option orders are day orders only (decide_close's `invalid_time_in_force`).
            option_checks.push_str(" AND asset_type = :equity");
            req = req.expression_attribute_values(":equity", s("equity"));
        }
        if cmd.reason.is_some() {
            sets.push_str(", cr_reason = :reason");
        } else {
            removes.push("cr_reason");
        }
        if cmd.cancel_open_orders {
            sets.push_str(", cr_cancel_open_orders = :coo");
        } else {
            removes.push("cr_cancel_open_orders");
        }
        let res = req
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .condition_expression(format!(
                "attribute_exists(pk) AND position_id = :pid AND attribute_not_exists(idem.#key) \
                 AND attribute_not_exists(cr_id) AND #status = :open AND #qty <> :zero{account_check}{option_checks}"
            ))
            .update_expression(format!(
                "SET #status = :closing, active_close_request_id = :crid, idem.#key = :idem, \
                 cr_id = :crid, cr_key = :keytext, cr_status = :pending, cr_target_qty = {target}, \
                 cr_position_qty = close_qty, cr_retry_count = :zero, cr_max_retries = :maxr, \
                 cr_created_at = :now, cr_updated_at = :now, updated_at = :now, attn = :attn, attn_at = :now, \
                 orders = :no_orders, changed_by = :actor, #ver = #ver + :one{sets} \
                 REMOVE {}",
                removes.join(", ")
            ))
            .expression_attribute_names("#key", cmd.idempotency_key.as_str())
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#qty", "quantity")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_values(":pid", s(cmd.position_id.as_str()))
            .expression_attribute_values(":attn", s(WorkList::Attention.as_str()))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":closing", s("closing"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":no_orders", AttributeValue::M(Default::default()))
            .expression_attribute_values(":crid", s(cmd.new_id.to_string()))
            .expression_attribute_values(":keytext", s(cmd.idempotency_key.as_str()))
            .expression_attribute_values(":actor", s(&cmd.actor))
            .expression_attribute_values(":idem", codec::idempotency_record(&record))
            .expression_attribute_values(":maxr", n(cmd.max_retries))
            .expression_attribute_values(":now", s(now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional(res)? {
            Ok(out) => {
                let agg = codec::aggregate_from_item(&out.attributes().cloned().unwrap_or_default())?;
                let close_request = agg
                    .latest_close_request
                    .ok_or_else(|| StoreError::Corrupt("close request missing after create".into()))?;
                Ok(Ok(CloseOutcome::Created {
                    position: agg.position,
                    close_request,
                }))
            }
            Err(old) => Ok(Err(aggregate_of(&old)?)),
        }
    }

    /// A partial fill that settles nothing, as one conditional `UpdateItem` on its order:
    /// the condition is exactly when the domain merge would only raise the order's fill
    /// (order recorded and working, close request submitted, strictly more filled but not
    /// more than ordered, newer `seq` or unseen execution id, not older than the last
    /// update). Anything else fails
    /// the condition and takes the general path, so results are the same either way.
    async fn partial_fill_in_place(
        &self,
        u: &OrderUpdate,
        now: Timestamp,
        actor: &str,
    ) -> Result<Option<UpdateResult>, StoreError> {
        let (pk, sk) = codec::routed_key(u.client_order_id.close_request_id.routing_key());
        let mut cond = vec![
            "cr_id = :crid",
            "cr_status = :submitted",
            "#status = :closing",
            "attribute_exists(orders.#c)",
            "orders.#c.#st IN (:new, :accepted, :pf)",
            "orders.#c.filled_qty < :filled",
            "orders.#c.qty >= :filled",
            "(attribute_not_exists(orders.#c.last_broker_update_at) OR orders.#c.last_broker_update_at <= :t)",
        ];
        let mut sets = vec![
            "orders.#c.filled_qty = :filled",
            "orders.#c.#st = :pf",
            "orders.#c.last_broker_update_at = :t",
            "updated_at = :now",
            "cr_updated_at = :now",
            "attn_at = :now",
            "changed_by = :actor",
            "#ver = #ver + :one",
        ];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .expression_attribute_names("#c", u.client_order_id.to_string())
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_values(":crid", s(u.client_order_id.close_request_id.to_string()))
            .expression_attribute_values(":submitted", s("submitted"))
            .expression_attribute_values(":closing", s("closing"))
            .expression_attribute_values(":new", s("new"))
            .expression_attribute_values(":accepted", s("accepted"))
            .expression_attribute_values(":pf", s("partially_filled"))
            .expression_attribute_values(":filled", n(u.filled_qty))
            .expression_attribute_values(":t", s(format_timestamp(&u.updated_at)))
            .expression_attribute_values(":now", s(format_timestamp(&now)))
            .expression_attribute_values(":actor", s(actor))
            .expression_attribute_values(":one", n(1));
        match (u.seq, &u.execution_id) {
            (Some(seq), _) => {
                cond.push("(attribute_not_exists(orders.#c.last_seq) OR orders.#c.last_seq < :seq)");
                sets.push("orders.#c.last_seq = :seq");
                req = req.expression_attribute_values(":seq", n(seq));
            }
            (None, Some(exec)) => {
                cond.push("NOT contains(orders.#c.execution_ids, :exec)");
                sets.push("orders.#c.execution_ids = list_append(orders.#c.execution_ids, :execl)");
                req = req
                    .expression_attribute_values(":exec", s(exec))
                    .expression_attribute_values(":execl", AttributeValue::L(vec![s(exec)]));
            }
            (None, None) => {}
        }
        if let Some(price) = u.filled_avg_price {
            sets.push("orders.#c.filled_avg_price = :price");
            req = req.expression_attribute_values(":price", n(price));
        }
        if let Some(b) = &u.broker_order_id {
            // The order works (condition above): its broker id follows the newest report,
            // as the domain merge does (a replacement carries the attempt on).
            sets.push("orders.#c.broker_order_id = :bid");
            req = req.expression_attribute_values(":bid", s(b));
        }
        let res = req
            .condition_expression(cond.join(" AND "))
            .update_expression(format!("SET {}", sets.join(", ")))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let Ok(out) = conditional(res)? else {
            return Ok(None); // not a plain partial fill: the general path decides
        };
        let agg = codec::aggregate_from_item(&out.attributes().cloned().unwrap_or_default())?;
        Ok(Some(UpdateResult::Applied {
            position_status: agg.position.status,
            close_request_status: agg
                .latest_close_request
                .map(|c| c.status)
                .unwrap_or(closeflow_domain::CloseRequestStatus::Pending),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_throttling_are_contention_everything_else_is_a_backend_error() {
        for code in CONTENTION_CODES {
            assert!(matches!(
                classify_error_code(Some(code), String::new()),
                StoreError::Contention
            ));
        }
        assert!(matches!(
            classify_error_code(Some("ValidationException"), "bad".into()),
            StoreError::Backend(m) if m == "bad"
        ));
        assert!(matches!(classify_error_code(None, "io".into()), StoreError::Backend(_)));
    }
}
