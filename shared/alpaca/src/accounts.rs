//! Broker accounts: each closeflow `account_id` trades with its own Alpaca key pair.
//!
//! - `ALPACA_ACCOUNTS="ACC1=<key_id>:<secret>;ACC2=…"` (local), or `ALPACA_ACCOUNTS_JSON`
//!   (`{"ACC1": {"key_id": "…", "secret_key": "…"}, …}` or `{"ACC1": "<key_id>:<secret>"}`:
//!   in AWS the Secrets Manager secret named by the template's `AlpacaAccountsSecretName`);
//! - the single pair `ALPACA_API_KEY_ID`/`ALPACA_API_SECRET_KEY` serves every account
//!   without its own;
//! - with neither, a close of that account fails at once with
//!   `no_broker_credentials` (nothing is sent to the broker).
//!
//! Orders, lookups, the request budget and the circuit breaker are per key pair: accounts
//! that share a key pair share one adapter. The trade_updates stream runs one connection
//! per key pair ([`AccountBrokers::key_pairs`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use closeflow_domain::{AccountId, ClientOrderId, MlegIntent, OrderIntent};
use closeflow_pipeline::broker::{BrokerMlegOrder, BrokerPosition, OpenOrder};
use closeflow_pipeline::trade_updates::AccountFilter;
use closeflow_pipeline::{Broker, BrokerError, BrokerOrder};
use serde::Deserialize;

use crate::{AlpacaBroker, AlpacaConfig, Limits, LIVE_URL, PAPER_URL};

/// One key pair, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub key_id: String,
    pub secret_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(<redacted>)")
    }
}

/// Which key pair each account uses, and the one for every other account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub accounts: HashMap<AccountId, KeyPair>,
    pub default: Option<KeyPair>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonPair {
    Object { key_id: String, secret_key: String },
    Text(String),
}

fn pair(text: &str) -> Option<KeyPair> {
    let (k, s) = text.trim().split_once(':')?;
    (!k.trim().is_empty() && !s.trim().is_empty()).then(|| KeyPair {
        key_id: k.trim().to_string(),
        secret_key: s.trim().to_string(),
    })
}

impl Credentials {
    /// `ACC1=<key_id>:<secret>;ACC2=…` (errors never echo a secret).
    pub fn parse_accounts(spec: &str) -> Result<HashMap<AccountId, KeyPair>, String> {
        let mut out = HashMap::new();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (account, keys) = entry
                .split_once('=')
                .ok_or_else(|| "ALPACA_ACCOUNTS: expected ACCOUNT=<key_id>:<secret>;…".to_string())?;
            let account = AccountId::parse(account.trim())
                .map_err(|_| format!("ALPACA_ACCOUNTS: `{}` is not an account id", account.trim()))?;
            let keys =
                pair(keys).ok_or_else(|| format!("ALPACA_ACCOUNTS: account {account}: expected <key_id>:<secret>"))?;
            if out.insert(account.clone(), keys).is_some() {
                return Err(format!("ALPACA_ACCOUNTS: account {account} is given twice"));
            }
        }
        Ok(out)
    }

    /// The Secrets Manager map: `{"ACC1": {"key_id": …, "secret_key": …}}` or
    /// `{"ACC1": "<key_id>:<secret>"}`.
    pub fn parse_accounts_json(text: &str) -> Result<HashMap<AccountId, KeyPair>, String> {
        let map: HashMap<String, JsonPair> = serde_json::from_str(text).map_err(|_| {
            "ALPACA_ACCOUNTS_JSON: expected {\"ACCOUNT\": {\"key_id\": …, \"secret_key\": …}, …}".to_string()
        })?;
        map.into_iter()
            .map(|(account, keys)| {
                let id = AccountId::parse(&account)
                    .map_err(|_| format!("ALPACA_ACCOUNTS_JSON: `{account}` is not an account id"))?;
                let keys = match keys {
                    JsonPair::Object { key_id, secret_key } => pair(&format!("{key_id}:{secret_key}")),
                    JsonPair::Text(t) => pair(&t),
                }
                .ok_or_else(|| format!("ALPACA_ACCOUNTS_JSON: account {account}: empty key id or secret"))?;
                Ok((id, keys))
            })
            .collect()
    }

    /// From `ALPACA_ACCOUNTS`, `ALPACA_ACCOUNTS_JSON` and the single pair
    /// `ALPACA_API_KEY_ID`/`ALPACA_API_SECRET_KEY`. Having none at all is no error here:
    /// each close then fails with its own clear reason.
    pub fn from_env() -> Result<Credentials, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut accounts = match env("ALPACA_ACCOUNTS_JSON") {
            Some(j) => Self::parse_accounts_json(&j)?,
            None => HashMap::new(),
        };
        if let Some(spec) = env("ALPACA_ACCOUNTS") {
            for (account, keys) in Self::parse_accounts(&spec)? {
                if accounts.insert(account.clone(), keys).is_some() {
                    return Err(format!(
                        "account {account} is in both ALPACA_ACCOUNTS and ALPACA_ACCOUNTS_JSON"
                    ));
                }
            }
        }
        let default = match (env("ALPACA_API_KEY_ID"), env("ALPACA_API_SECRET_KEY")) {
            (Some(key_id), Some(secret_key)) => Some(KeyPair { key_id, secret_key }),
            (None, None) => None,
            _ => return Err("ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY must be set together".into()),
        };
        Ok(Credentials { accounts, default })
    }
}

/// The Alpaca adapters of every key pair, routed by account.
pub struct AccountBrokers {
    /// One adapter per key pair, with the accounts it serves (`None`: the default pair,
    /// serving every account without its own).
    pairs: Vec<(Arc<AlpacaBroker>, Option<Vec<AccountId>>)>,
    by_account: HashMap<AccountId, Arc<AlpacaBroker>>,
    default: Option<Arc<AlpacaBroker>>,
}

/// The base URL every key pair talks to: `ALPACA_BASE_URL`, or paper/live by `ALPACA_LIVE`.
pub fn base_url_from_env() -> String {
    let live = std::env::var("ALPACA_LIVE").is_ok_and(|v| v == "true");
    std::env::var("ALPACA_BASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| if live { LIVE_URL } else { PAPER_URL }.to_string())
}

impl AccountBrokers {
    pub fn new(
        creds: &Credentials,
        base_url: &str,
        timeout: std::time::Duration,
        limits: Limits,
    ) -> Result<AccountBrokers, String> {
        let adapter = |k: &KeyPair| {
            AlpacaBroker::with_limits(
                AlpacaConfig {
                    base_url: base_url.to_string(),
                    key_id: k.key_id.clone(),
                    secret_key: k.secret_key.clone(),
                    timeout,
                },
                limits,
            )
            .map(Arc::new)
        };
        // One adapter per key id: accounts sharing a key pair share its budget and breaker.
        let mut by_key: HashMap<String, (Arc<AlpacaBroker>, Option<Vec<AccountId>>)> = HashMap::new();
        let default = match &creds.default {
            Some(k) => {
                let b = adapter(k)?;
                by_key.insert(k.key_id.clone(), (b.clone(), None));
                Some(b)
            }
            None => None,
        };
        let mut by_account = HashMap::new();
        let mut accounts: Vec<_> = creds.accounts.iter().collect();
        accounts.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (account, k) in accounts {
            let entry = match by_key.get_mut(&k.key_id) {
                Some(e) => e,
                None => by_key
                    .entry(k.key_id.clone())
                    .or_insert((adapter(k)?, Some(Vec::new()))),
            };
            if let Some(list) = entry.1.as_mut() {
                list.push(account.clone());
            }
            by_account.insert(account.clone(), entry.0.clone());
        }
        let mut pairs: Vec<_> = by_key.into_values().collect();
        pairs.sort_by(|a, b| a.0.config().key_id.cmp(&b.0.config().key_id));
        Ok(AccountBrokers {
            pairs,
            by_account,
            default,
        })
    }

    /// From the environment: [`Credentials::from_env`], [`base_url_from_env`],
    /// [`Limits::from_env`].
    pub fn from_env() -> Result<AccountBrokers, String> {
        let creds = Credentials::from_env()?;
        if creds.accounts.is_empty() && creds.default.is_none() {
            tracing::warn!(
                "no Alpaca credentials (ALPACA_ACCOUNTS, ALPACA_ACCOUNTS_JSON, ALPACA_API_KEY_ID): every close fails with no_broker_credentials"
            );
        }
        Self::new(
            &creds,
            &base_url_from_env(),
            std::time::Duration::from_secs(5),
            Limits::from_env()?,
        )
    }

    /// The adapter (key pair) of `account`.
    pub fn for_account(&self, account: &AccountId) -> Result<&Arc<AlpacaBroker>, BrokerError> {
        self.by_account
            .get(account)
            .or(self.default.as_ref())
            .ok_or_else(|| BrokerError::NoCredentials(account.clone()))
    }

    /// Every key pair once, with the accounts its stream connection reports on.
    pub fn key_pairs(&self) -> Vec<(AlpacaConfig, AccountFilter)> {
        self.pairs
            .iter()
            .map(|(b, accounts)| {
                let own: Vec<AccountId> = self
                    .by_account
                    .iter()
                    .filter(|(_, a)| Arc::ptr_eq(a, b))
                    .map(|(id, _)| id.clone())
                    .collect();
                let mapped: Vec<AccountId> = self.by_account.keys().cloned().collect();
                let serves_rest = accounts.is_none();
                let filter: AccountFilter =
                    Arc::new(move |a: &AccountId| own.contains(a) || (serves_rest && !mapped.contains(a)));
                (b.config().clone(), filter)
            })
            .collect()
    }
}

#[async_trait]
impl Broker for AccountBrokers {
    async fn submit_order(&self, intent: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        self.for_account(&intent.account_id)?.submit_order(intent).await
    }

    async fn get_order_by_client_id(
        &self,
        account: &AccountId,
        id: &ClientOrderId,
    ) -> Result<BrokerOrder, BrokerError> {
        self.for_account(account)?.get_order_by_client_id(account, id).await
    }

    async fn cancel_order(&self, account: &AccountId, broker_order_id: &str) -> Result<(), BrokerError> {
        self.for_account(account)?.cancel_order(account, broker_order_id).await
    }

    async fn list_positions(&self, account: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        self.for_account(account)?.list_positions(account).await
    }

    async fn open_orders(&self, account: &AccountId, symbol: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        self.for_account(account)?.open_orders(account, symbol).await
    }

    async fn account_equity(&self, account: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        self.for_account(account)?.account_equity(account).await
    }

    async fn account_open_orders(&self, account: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        self.for_account(account)?.account_open_orders(account).await
    }

    fn supports_mleg(&self) -> bool {
        true
    }

    async fn submit_mleg_order(&self, intent: &MlegIntent) -> Result<BrokerMlegOrder, BrokerError> {
        self.for_account(&intent.account_id)?.submit_mleg_order(intent).await
    }

    async fn get_mleg_order_by_client_id(
        &self,
        account: &AccountId,
        id: &ClientOrderId,
    ) -> Result<BrokerMlegOrder, BrokerError> {
        self.for_account(account)?
            .get_mleg_order_by_client_id(account, id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    #[test]
    fn account_specs_parse_and_errors_never_echo_a_secret() {
        let m = Credentials::parse_accounts("ACC1=k1:s1; ACC2=k2:s2;").unwrap();
        assert_eq!(m[&acc("ACC1")].key_id, "k1");
        assert_eq!(m[&acc("ACC2")].secret_key, "s2");
        for bad in ["ACC1", "ACC1=k1", "ACC1=:s", "ACC1=k:s;ACC1=k:s"] {
            let e = Credentials::parse_accounts(bad).unwrap_err();
            assert!(!e.contains("s1"), "{e}");
        }
        let j = Credentials::parse_accounts_json(r#"{"ACC1": {"key_id": "k1", "secret_key": "s1"}, "ACC2": "k2:s2"}"#)
            .unwrap();
        assert_eq!(
            (j[&acc("ACC1")].key_id.as_str(), j[&acc("ACC2")].key_id.as_str()),
            ("k1", "k2")
        );
        assert!(Credentials::parse_accounts_json("[1]").is_err());
    }

    #[test]
    fn each_account_gets_its_pair_the_default_serves_the_rest_and_none_is_a_clear_error() {
        let creds = Credentials {
            accounts: Credentials::parse_accounts("ACC1=k1:s1;ACC2=k1:s1;ACC3=k3:s3").unwrap(),
            default: Some(KeyPair {
                key_id: "kd".into(),
                secret_key: "sd".into(),
            }),
        };
        let b = AccountBrokers::new(&creds, "http://x", std::time::Duration::from_secs(1), Limits::default()).unwrap();
        assert_eq!(b.for_account(&acc("ACC1")).unwrap().config().key_id, "k1");
        assert!(
            Arc::ptr_eq(
                b.for_account(&acc("ACC1")).unwrap(),
                b.for_account(&acc("ACC2")).unwrap()
            ),
            "one adapter per key pair"
        );
        assert_eq!(b.for_account(&acc("other")).unwrap().config().key_id, "kd");
        let pairs = b.key_pairs();
        assert_eq!(pairs.len(), 3, "one stream connection per key pair");
        let k1 = pairs.iter().find(|(c, _)| c.key_id == "k1").unwrap();
        assert!(k1.1(&acc("ACC2")) && !k1.1(&acc("ACC3")) && !k1.1(&acc("other")));
        let kd = pairs.iter().find(|(c, _)| c.key_id == "kd").unwrap();
        assert!(kd.1(&acc("other")) && !kd.1(&acc("ACC1")));
        let none = AccountBrokers::new(
            &Credentials::default(),
            "http://x",
            std::time::Duration::from_secs(1),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            none.for_account(&acc("ACC9")).err(),
            Some(BrokerError::NoCredentials(acc("ACC9")))
        );
        assert!(none.key_pairs().is_empty());
    }
}
