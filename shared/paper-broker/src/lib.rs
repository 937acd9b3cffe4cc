//! An Alpaca-compatible paper broker: the simulated broker's engine with Alpaca's face.
//! Trading API v2 (`/v2/orders`, `/v2/positions`, `/v2/account`) with Alpaca's status
//! codes and `{"code":…,"message":…}` error bodies, and the `trade_updates` WebSocket at
//! `/stream`. It runs as its own process, so closeflow can crash and restart against it
//! and a test can count the orders it really received. Its holdings can be changed behind
//! closeflow's back under `/paper` ([`holdings`]), for position sync to find, and so can
//! its equity ([`equity`]), for the drawdown guard to find.

pub mod equity;
pub mod holdings;
pub mod limit;
pub mod rest;
pub mod stream;
pub mod views;

use std::sync::Arc;

use axum::Router;
use closeflow_pipeline::sim_broker::engine::{Engine, Scheduler, TokioScheduler, TradeEvent};
use closeflow_pipeline::{Clock, SimScenarios, SystemClock};
use tokio::sync::broadcast;

pub use limit::RateLimit;

pub const DEFAULT_PORT: u16 = 4010;
pub const DEV_KEY_ID: &str = "paper-key";
pub const DEV_SECRET_KEY: &str = "paper-secret";
/// The closeflow account the key pair stands for unless `PAPER_ACCOUNT` or the seeded
/// holdings name one: the walkthrough's account.
pub const DEV_ACCOUNT: &str = "acct-1";

/// What the paper account starts with, in dollars.
pub const STARTING_CASH: i64 = 100_000;

/// How many `trade_updates` messages a slow stream client may fall behind before it is
/// disconnected (it must then reconnect and look its orders up).
const STREAM_BACKLOG: usize = 4096;

#[derive(Clone)]
pub struct PaperConfig {
    pub key_id: String,
    pub secret_key: String,
    /// The closeflow account id this key pair's holdings belong to (what closeflow's
    /// `list_positions` asks about, and `SIM_BROKER_POSITIONS` names).
    pub account: String,
    pub scenarios: SimScenarios,
    pub rate_limit: Option<RateLimit>,
    pub clock: Arc<dyn Clock>,
    pub scheduler: Arc<dyn Scheduler>,
}

impl std::fmt::Debug for PaperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaperConfig")
            .field("key_id", &self.key_id)
            .field("secret_key", &"<redacted>")
            .field("account", &self.account)
            .field("scenarios", &self.scenarios)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl PaperConfig {
    /// Development keys, every symbol `fill`, no rate limit, real time. The account is the
    /// one the scenarios' seeded holdings name, else [`DEV_ACCOUNT`].
    pub fn new(scenarios: SimScenarios) -> PaperConfig {
        let account = scenarios
            .seeded_positions()
            .first()
            .map_or(DEV_ACCOUNT.to_string(), |h| h.account.clone());
        PaperConfig {
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            account,
            scenarios,
            rate_limit: None,
            clock: Arc::new(SystemClock),
            scheduler: Arc::new(TokioScheduler),
        }
    }

    /// From `PAPER_KEY_ID`, `PAPER_SECRET_KEY`, `PAPER_ACCOUNT`, `SIM_BROKER_SCENARIOS`,
    /// `SIM_BROKER_PRICES`, `SIM_BROKER_POSITIONS`, `SIM_BROKER_EQUITY` (the account's
    /// equity, fixed until changed) and `PAPER_RATE_LIMIT`, announcing each
    /// development default it falls back to.
    pub fn from_env() -> Result<PaperConfig, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let scenarios = closeflow_pipeline::config::sim_scenarios_from_env()?;
        let mut cfg = PaperConfig::new(scenarios);
        if let Some(account) = env("PAPER_ACCOUNT") {
            cfg.account = account;
        }
        cfg.check_seeded_accounts()?;
        match env("PAPER_KEY_ID") {
            Some(k) => cfg.key_id = k,
            None => println!("PAPER_KEY_ID not set: using the development key id `{DEV_KEY_ID}`"),
        }
        match env("PAPER_SECRET_KEY") {
            Some(k) => cfg.secret_key = k,
            None => println!("PAPER_SECRET_KEY not set: using the development secret `{DEV_SECRET_KEY}`"),
        }
        cfg.rate_limit = env("PAPER_RATE_LIMIT")
            .map(|s| RateLimit::parse(&s).map_err(|e| format!("PAPER_RATE_LIMIT: {e}")))
            .transpose()?;
        Ok(cfg)
    }

    /// The paper broker is one account (one key pair): a seeded holding of another account
    /// could never be listed, so it is refused at start rather than silently ignored.
    pub fn check_seeded_accounts(&self) -> Result<(), String> {
        match self
            .scenarios
            .seeded_positions()
            .iter()
            .find(|h| h.account != self.account)
        {
            Some(h) => Err(format!(
                "SIM_BROKER_POSITIONS: `{}:{}`: the paper broker holds only account `{}` (its key pair; \
                 PAPER_ACCOUNT names it)",
                h.account, h.symbol, self.account
            )),
            None => Ok(()),
        }
    }
}

/// The broker's state behind both faces of the server.
pub struct PaperBroker {
    pub engine: Arc<Engine>,
    pub(crate) key_id: String,
    pub(crate) secret_key: String,
    pub(crate) limiter: Option<limit::Limiter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) account_id: String,
    /// The closeflow account id the key pair's holdings are kept under.
    pub(crate) account: String,
    pub(crate) started_at: closeflow_domain::Timestamp,
    /// Every `trade_updates` message, serialised once for all stream clients.
    pub(crate) updates: broadcast::Sender<Arc<str>>,
    /// The account's equity as set from outside (`SIM_BROKER_EQUITY`, `POST /paper/account`);
    /// `None`: cash plus positions at their prices.
    pub(crate) equity: std::sync::Mutex<Option<closeflow_domain::Quantity>>,
    /// Multi-leg orders (`order_class: "mleg"`), their legs the engine's orders.
    pub(crate) mlegs: closeflow_pipeline::sim_broker::mleg::MlegBook,
}

impl PaperBroker {
    pub fn new(cfg: PaperConfig) -> Arc<PaperBroker> {
        let equity = cfg
            .scenarios
            .equity_set()
            .then(|| closeflow_domain::Quantity::new(cfg.scenarios.starting_equity()));
        let engine = Engine::new(cfg.scenarios, cfg.clock.clone(), cfg.scheduler, None);
        let (updates, _) = broadcast::channel(STREAM_BACKLOG);
        // The engine calls its listeners under its lock, and a multi-leg order's message
        // reads the order's other legs from the engine: events are turned into messages
        // on a task of their own, in the order they happened.
        let (events, mut pending) = tokio::sync::mpsc::unbounded_channel::<TradeEvent>();
        engine.subscribe(Arc::new(move |e| {
            let _ = events.send(e.clone());
        }));
        let broker = Arc::new(PaperBroker {
            engine,
            key_id: cfg.key_id,
            secret_key: cfg.secret_key,
            limiter: cfg.rate_limit.map(limit::Limiter::new),
            account_id: uuid::Uuid::new_v4().to_string(),
            account: cfg.account,
            started_at: cfg.clock.now(),
            clock: cfg.clock,
            updates,
            equity: std::sync::Mutex::new(equity),
            mlegs: closeflow_pipeline::sim_broker::mleg::MlegBook::new(""),
        });
        let weak = Arc::downgrade(&broker);
        tokio::spawn(async move {
            while let Some(e) = pending.recv().await {
                let Some(broker) = weak.upgrade() else { return };
                if let Some(message) = broker.stream_message(&e) {
                    // No stream client listening is no error.
                    let _ = broker.updates.send(message.to_string().into());
                }
            }
        });
        broker
    }

    /// The `trade_updates` message of an engine event. A leg of a multi-leg order sends
    /// none of its own: the order's message carries every leg (as Alpaca's does), one
    /// message per leg execution and per end, each with the order as it stands when sent.
    fn stream_message(&self, e: &TradeEvent) -> Option<serde_json::Value> {
        let Some(m) = self.mlegs.parent_of(&e.order.client_order_id) else {
            return Some(views::trade_update(e));
        };
        let st = closeflow_pipeline::sim_broker::mleg::state(&self.engine, &m)?;
        views::mleg_trade_update(e, &m, &st)
    }

    /// How many multi-leg orders it took (each leg also counts in the engine's orders).
    pub fn mleg_orders_placed(&self) -> usize {
        self.mlegs.len()
    }

    pub(crate) fn authorized(&self, key_id: Option<&str>, secret: Option<&str>) -> bool {
        // Both compared in full, so timing says nothing about which one was wrong.
        let k = key_id.is_some_and(|k| constant_time_eq(k.as_bytes(), self.key_id.as_bytes()));
        let s = secret.is_some_and(|s| constant_time_eq(s.as_bytes(), self.secret_key.as_bytes()));
        k & s
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The whole server: REST under `/v2`, the stream at `/stream`.
pub fn router(broker: Arc<PaperBroker>) -> Router {
    rest::routes(broker.clone())
        .merge(holdings::routes(broker.clone()))
        .merge(equity::routes(broker.clone()))
        .merge(stream::routes())
        .fallback(rest::not_found)
        .with_state(broker)
}
