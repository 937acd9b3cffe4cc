//! What both local stacks (`make run` and `make run-aws-local`) read from the environment
//! and run beside the API: port, development credentials, simulated-broker scenarios,
//! the policy (through the composition root), and the reconciler and cleanup timers.

use std::sync::Arc;

use chrono::TimeDelta;
use closeflow_api::auth::{parse_api_tokens, Auth};
use closeflow_api::SystemClock;
use closeflow_pipeline::config::{
    drawdown_config_from_env, parse_duration, sim_scenarios_from_env, sync_config_from_env, sync_every_from_env,
    timers_from_env,
};
use closeflow_pipeline::{
    cleanup_once, drawdown_once, reconcile_once, sync_once, Broker, DrawdownConfig, EventSink, OrderQueue,
    SimScenarios, SyncConfig,
};
use closeflow_root::{env, Policy};
use closeflow_store::CloseStore;

pub const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";
pub const DEV_TOKEN: &str = "dev-token";

pub struct LocalSettings {
    pub port: u16,
    pub webhook_secret: Vec<u8>,
    pub auth: Auth,
    /// `SIM_BROKER_SCENARIOS` as given (for the ready line) and parsed, with
    /// `SIM_BROKER_PRICES` and `SIM_BROKER_POSITIONS`.
    pub scenarios_text: String,
    pub scenarios: SimScenarios,
    pub policy: Policy,
    pub reconcile_every: TimeDelta,
    pub cleanup_every: TimeDelta,
    /// Position sync (`SYNC_*`) and its timer (`SYNC_EVERY`; off when `None`).
    pub sync: SyncConfig,
    pub sync_every: Option<TimeDelta>,
    /// The drawdown guard (`DRAWDOWN_*`) and its timer (`DRAWDOWN_EVERY`, default 1 min).
    pub drawdown: DrawdownConfig,
    pub drawdown_every: TimeDelta,
    /// `BROKER=alpaca`: Alpaca (`ALPACA_*`, e.g. the paper broker at `ALPACA_BASE_URL`)
    /// instead of the simulated broker.
    pub alpaca: Option<Arc<closeflow_alpaca::accounts::AccountBrokers>>,
}

impl LocalSettings {
    /// Reads the settings, announcing each development default it falls back to.
    pub fn from_env() -> Result<LocalSettings, String> {
        let port = match env("PORT") {
            Some(p) => p
                .parse()
                .map_err(|_| format!("PORT must be a port number, got `{p}`"))?,
            None => 3000,
        };
        let secret = env("WEBHOOK_SECRET").unwrap_or_else(|| {
            println!("WEBHOOK_SECRET not set: using the development secret `{DEV_WEBHOOK_SECRET}`");
            DEV_WEBHOOK_SECRET.into()
        });
        let tokens = match env("API_TOKENS") {
            Some(spec) => parse_api_tokens(&spec)?,
            None => {
                println!(
                    "API_TOKENS not set: `{DEV_TOKEN}` may act on every account (Authorization: Bearer {DEV_TOKEN})"
                );
                parse_api_tokens(&format!("dev:{DEV_TOKEN}=*"))?
            }
        };
        let scenarios_text = env("SIM_BROKER_SCENARIOS").unwrap_or_default();
        let scenarios = sim_scenarios_from_env()?;
        let (reconcile_every, cleanup_every) = timers_from_env()?;
        let alpaca = match env("BROKER").as_deref() {
            None | Some("sim") | Some("simulated") => None,
            Some("alpaca") => Some(Arc::new(closeflow_alpaca::accounts::AccountBrokers::from_env()?)),
            Some(other) => return Err(format!("BROKER `{other}`: use `sim` (default) or `alpaca`")),
        };
        let sync = sync_config_from_env()?;
        // The simulated broker holds nothing to compare unless seeded (SIM_BROKER_POSITIONS):
        // syncing an empty broker would only flag every open position missing_at_broker.
        // Alpaca always holds what it holds.
        let sync_every = sync_every_from_env(alpaca.is_some() || !scenarios.seeded_positions().is_empty())?;
        let policy = Policy::from_env()?;
        let drawdown = drawdown_config_from_env(policy.api.max_retries)?;
        let drawdown_every = match env("DRAWDOWN_EVERY") {
            Some(v) => parse_duration(&v).map_err(|e| format!("DRAWDOWN_EVERY: {e}"))?,
            None => TimeDelta::minutes(1),
        };
        Ok(LocalSettings {
            sync,
            sync_every,
            drawdown,
            drawdown_every,
            alpaca,
            port,
            webhook_secret: secret.into_bytes(),
            auth: Auth::Tokens(Arc::new(tokens)),
            scenarios_text,
            scenarios,
            policy,
            reconcile_every,
            cleanup_every,
        })
    }

    /// The broker, as the ready line names it.
    pub fn describe_broker(&self) -> String {
        match (&self.alpaca, self.scenarios_text.as_str()) {
            (Some(_), _) => format!(
                "Alpaca at {}; fills from its trade_updates stream",
                closeflow_alpaca::accounts::base_url_from_env()
            ),
            (None, spec) => {
                let mut line = "simulated broker".to_string();
                if !spec.is_empty() {
                    line.push_str(&format!(": {spec}"));
                }
                // Seeded holdings are what sync will compare against: say how many.
                match self.scenarios.seeded_positions().len() {
                    0 => line,
                    n => format!("{line}; {n} seeded holding(s) (SIM_BROKER_POSITIONS)"),
                }
            }
        }
    }

    /// Runs Alpaca's `trade_updates` consumer for `store` forever (reconnecting), when the
    /// broker is Alpaca.
    pub async fn run_trade_stream(&self, store: Arc<dyn CloseStore>, broker: Arc<dyn Broker>) {
        let Some(brokers) = &self.alpaca else { return };
        // One connection per key pair.
        let pairs = closeflow_alpaca::stream::consumers(brokers, store, broker, Arc::new(SystemClock));
        closeflow_alpaca::stream::run_each_key_pair(pairs, std::future::pending()).await;
    }

    /// One line on the job timings, printed at start-up.
    pub fn describe_jobs(&self) -> String {
        let p = &self.policy.jobs.policy;
        let sync = match self.sync_every {
            Some(every) => format!(
                "; sync every {}s of {} account(s)",
                every.num_seconds(),
                self.sync.accounts.len()
            ),
            None => "; sync off (SYNC_EVERY)".into(),
        };
        let d = &self.drawdown;
        let sync = match d.is_on() {
            true => format!(
                "{sync}; drawdown guard every {}s of {} account(s) (warn at {}%, liquidate at {}%)",
                self.drawdown_every.num_seconds(),
                d.accounts.len(),
                d.policy.warn_pct.map_or("-".into(), |p| p.to_string()),
                d.policy.liquidate_pct.map_or("-".into(), |p| p.to_string()),
            ),
            false => format!("{sync}; drawdown guard off (DRAWDOWN_*_PCT)"),
        };
        format!(
            "reconciler every {}s (zombie after {}s, stuck after {}s, retry backoff {}s); cleanup every {}s (retention {}s){sync}",
            self.reconcile_every.num_seconds(),
            p.zombie_after.num_seconds(),
            p.stuck_after.num_seconds(),
            p.retry_backoff.num_seconds(),
            self.cleanup_every.num_seconds(),
            p.retention.num_seconds()
        )
    }

    /// Runs the reconciler, the cleanup job, sync and the drawdown guard on their timers,
    /// forever (what EventBridge schedules do in AWS). Their events go where the pipeline's
    /// go; a liquidation the guard starts runs on the pipeline's queue.
    pub async fn run_jobs(
        &self,
        store: Arc<dyn CloseStore>,
        broker: Arc<dyn Broker>,
        queue: Arc<dyn OrderQueue>,
        events: Arc<dyn EventSink>,
    ) {
        let cfg = self.policy.jobs.clone();
        let mut reconcile_tick = tokio::time::interval(self.reconcile_every.to_std().unwrap_or_default());
        let mut cleanup_tick = tokio::time::interval(self.cleanup_every.to_std().unwrap_or_default());
        // An interval's first tick is immediate: sync also runs once at start-up.
        let mut sync_tick = self
            .sync_every
            .map(|every| tokio::time::interval(every.to_std().unwrap_or_default()));
        let mut drawdown_tick = self
            .drawdown
            .is_on()
            .then(|| tokio::time::interval(self.drawdown_every.to_std().unwrap_or_default()));
        loop {
            tokio::select! {
                _ = reconcile_tick.tick() => {
                    if let Err(e) = reconcile_once(store.as_ref(), broker.as_ref(), &SystemClock, &cfg).await {
                        tracing::error!(error = %e, "reconciler run failed");
                    }
                }
                _ = cleanup_tick.tick() => {
                    if let Err(e) = cleanup_once(store.as_ref(), &SystemClock, cfg.policy.retention, 500).await {
                        tracing::error!(error = %e, "cleanup run failed");
                    }
                }
                Some(()) = async { match sync_tick.as_mut() { Some(t) => { t.tick().await; Some(()) } None => None } } => {
                    if let Err(e) = sync_once(store.as_ref(), broker.as_ref(), &SystemClock, events.as_ref(), &self.sync).await {
                        tracing::error!(error = %e, "sync run failed");
                    }
                }
                Some(()) = async { match drawdown_tick.as_mut() { Some(t) => { t.tick().await; Some(()) } None => None } } => {
                    let run = drawdown_once(store.as_ref(), broker.as_ref(), queue.as_ref(), &SystemClock, events.as_ref(), &self.drawdown);
                    if let Err(e) = run.await {
                        tracing::error!(error = %e, "drawdown guard run failed");
                    }
                }
            }
        }
    }
}
