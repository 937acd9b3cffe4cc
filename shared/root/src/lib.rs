//! The composition root. Every deployable — the Lambda functions, `make run`,
//! `make run-aws-local`, `make invoke` — builds its store, broker and policy here from the
//! environment, so one setting means the same thing everywhere (e.g. `RETENTION` sets
//! both the cleanup job's horizon and the TTL every function stamps on closed positions).

use std::sync::Arc;

use closeflow_alpaca::accounts::AccountBrokers;
use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_api::ApiConfig;
use closeflow_pipeline::config::reconcile_config_from_env;
use closeflow_pipeline::{Broker, ReconcileConfig};
use closeflow_store::DynamoStore;

/// A set, non-empty environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn required(name: &str) -> Result<String, String> {
    env(name).ok_or_else(|| format!("{name} must be set"))
}

/// The policy knobs: reconciler and cleanup timings and retention (`ZOMBIE_AFTER`,
/// `STUCK_AFTER`, `RETRY_BACKOFF`, `RETENTION`, `MAX_BROKER_QUERIES`) and the API's limits
/// (`MAX_POSITIONS_PER_ACCOUNT`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub jobs: ReconcileConfig,
    pub api: ApiConfig,
}

impl Policy {
    pub fn from_env() -> Result<Policy, String> {
        Ok(Policy {
            jobs: reconcile_config_from_env()?,
            api: ApiConfig::from_env()?,
        })
    }
}

/// The AWS SDK's shared configuration (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The DynamoDB store of `TABLE_NAME`, stamping closed positions with the policy's
/// retention as their TTL, with its audit trail in `AUDIT_TABLE_NAME`.
pub async fn dynamo_store(policy: &Policy) -> Result<DynamoStore, String> {
    let table = required("TABLE_NAME")?;
    let client = DynamoStore::client_from_env(None).await;
    let store = DynamoStore::new(client, table).with_retention(policy.jobs.policy.retention);
    Ok(match env("AUDIT_TABLE_NAME") {
        Some(audit) => store.with_audit_table(audit),
        None => store,
    })
}

/// The broker of a deployed stack: Alpaca (`BROKER=alpaca`, the default), one key pair
/// per account (`ALPACA_ACCOUNTS_JSON` from Secrets Manager, `ALPACA_ACCOUNTS`) and the
/// single pair `ALPACA_API_KEY_ID`/`ALPACA_API_SECRET_KEY` for every other account.
pub fn aws_broker() -> Result<Arc<dyn Broker>, String> {
    Ok(alpaca_accounts()?)
}

/// The Alpaca adapters of every key pair, routed by account (`BROKER=alpaca` only).
pub fn alpaca_accounts() -> Result<Arc<AccountBrokers>, String> {
    match env("BROKER").as_deref() {
        None | Some("alpaca") => Ok(Arc::new(AccountBrokers::from_env()?)),
        Some(other) => Err(format!("BROKER `{other}` is not supported in AWS (alpaca)")),
    }
}

pub fn alpaca() -> Result<AlpacaBroker, String> {
    AlpacaBroker::new(AlpacaConfig::from_env()?)
}

/// The broker webhook's HMAC secret; unsigned updates are never accepted.
pub fn webhook_secret() -> Result<Vec<u8>, String> {
    env("WEBHOOK_SECRET")
        .map(String::into_bytes)
        .ok_or_else(|| "WEBHOOK_SECRET must be set: unsigned broker updates are never accepted".into())
}

/// The API's state: the one place every deployable (the http-api Lambda, `make run`,
/// `make run-aws-local`, `make invoke`, the tests) puts its store, its broker (the API
/// cancels orders at it), the pipeline's work queue (bulk closes start there) and the
/// policy's API limits together.
pub fn api_state(
    store: Arc<dyn closeflow_store::CloseStore>,
    broker: Arc<dyn Broker>,
    queue: Arc<dyn closeflow_pipeline::OrderQueue>,
    policy: &ApiConfig,
) -> closeflow_api::AppState {
    let mut state = closeflow_api::AppState::new(store)
        .with_broker(broker)
        .with_queue(queue);
    state.config = policy.clone();
    state
}
