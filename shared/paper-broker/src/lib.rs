//! An Alpaca-compatible paper broker: the simulated broker's engine with Alpaca's face.
//! Trading API v2 (`/v2/orders`, `/v2/positions`, `/v2/account`) with Alpaca's status
//! codes and `{"code":…,"message":…}` error bodies, and the `trade_updates` WebSocket at
//! `/stream`. It runs as its own process, so closeflow can crash and restart against it
//! and a test can count the orders it really received.

pub mod limit;
pub mod rest;
pub mod stream;
pub mod views;

use std::sync::Arc;

use axum::Router;
use closeflow_pipeline::sim_broker::engine::{Engine, Scheduler, TokioScheduler};
use closeflow_pipeline::{Clock, SimScenarios, SystemClock};
use tokio::sync::broadcast;

pub use limit::RateLimit;

pub const DEFAULT_PORT: u16 = 4010;
pub const DEV_KEY_ID: &str = "paper-key";
pub const DEV_SECRET_KEY: &str = "paper-secret";

/// What the paper account starts with, in dollars.
pub const STARTING_CASH: i64 = 100_000;

/// How many `trade_updates` messages a slow stream client may fall behind before it is
/// disconnected (it must then reconnect and look its orders up).
const STREAM_BACKLOG: usize = 4096;

#[derive(Clone)]
pub struct PaperConfig {
    pub key_id: String,
    pub secret_key: String,
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
            .field("scenarios", &self.scenarios)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl PaperConfig {
    /// Development keys, every symbol `fill`, no rate limit, real time.
    pub fn new(scenarios: SimScenarios) -> PaperConfig {
        PaperConfig {
            key_id: DEV_KEY_ID.into(),
            secret_key: DEV_SECRET_KEY.into(),
            scenarios,
            rate_limit: None,
            clock: Arc::new(SystemClock),
            scheduler: Arc::new(TokioScheduler),
        }
    }

    /// From `PAPER_KEY_ID`, `PAPER_SECRET_KEY`, `SIM_BROKER_SCENARIOS`, `SIM_BROKER_PRICES`
    /// and `PAPER_RATE_LIMIT`, announcing each development default it falls back to.
    pub fn from_env() -> Result<PaperConfig, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let scenarios = SimScenarios::parse(&env("SIM_BROKER_SCENARIOS").unwrap_or_default())
            .map_err(|e| format!("SIM_BROKER_SCENARIOS: {e}"))?
            .with_prices(&env("SIM_BROKER_PRICES").unwrap_or_default())
            .map_err(|e| format!("SIM_BROKER_PRICES: {e}"))?;
        let mut cfg = PaperConfig::new(scenarios);
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
}

/// The broker's state behind both faces of the server.
pub struct PaperBroker {
    pub engine: Arc<Engine>,
    pub(crate) key_id: String,
    pub(crate) secret_key: String,
    pub(crate) limiter: Option<limit::Limiter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) account_id: String,
    pub(crate) started_at: closeflow_domain::Timestamp,
    /// Every `trade_updates` message, serialised once for all stream clients.
    pub(crate) updates: broadcast::Sender<Arc<str>>,
}

impl PaperBroker {
    pub fn new(cfg: PaperConfig) -> Arc<PaperBroker> {
        let engine = Engine::new(cfg.scenarios, cfg.clock.clone(), cfg.scheduler, None);
        let (updates, _) = broadcast::channel(STREAM_BACKLOG);
        let tx = updates.clone();
        engine.subscribe(Arc::new(move |e| {
            // No stream client listening is no error.
            let _ = tx.send(views::trade_update(e).to_string().into());
        }));
        Arc::new(PaperBroker {
            engine,
            key_id: cfg.key_id,
            secret_key: cfg.secret_key,
            limiter: cfg.rate_limit.map(limit::Limiter::new),
            account_id: uuid::Uuid::new_v4().to_string(),
            started_at: cfg.clock.now(),
            clock: cfg.clock,
            updates,
        })
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
        .merge(stream::routes())
        .fallback(rest::not_found)
        .with_state(broker)
}
