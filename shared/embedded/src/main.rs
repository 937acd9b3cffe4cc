//! `make run`: the embedded single-process closeflow stack. A durable SQLite store
//! (`CLOSEFLOW_DB`), the same router as the Lambda function, the order pipeline and the
//! simulated broker.

use std::sync::Arc;

use closeflow_api::auth::{parse_api_tokens, Auth};
use closeflow_api::SystemClock;
use closeflow_embedded::{Stack, StackConfig, Storage};
use closeflow_pipeline::config::{reconcile_config_from_env, timers_from_env};
use closeflow_pipeline::{cleanup_once, reconcile_once, SimScenarios};

const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";
const DEV_TOKEN: &str = "dev-token";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT must be a port number, got `{p}`"))?,
        Err(_) => 3000,
    };
    let spec = std::env::var("SIM_BROKER_SCENARIOS").unwrap_or_default();
    let scenarios = SimScenarios::parse(&spec).map_err(|e| format!("SIM_BROKER_SCENARIOS: {e}"))?;
    let secret = match std::env::var("WEBHOOK_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => {
            println!("WEBHOOK_SECRET not set: using the development secret `{DEV_WEBHOOK_SECRET}`");
            DEV_WEBHOOK_SECRET.to_string()
        }
    };
    let tokens = match std::env::var("API_TOKENS") {
        Ok(spec) if !spec.is_empty() => parse_api_tokens(&spec)?,
        _ => {
            println!("API_TOKENS not set: `{DEV_TOKEN}` may act on every account (Authorization: Bearer {DEV_TOKEN})");
            parse_api_tokens(&format!("{DEV_TOKEN}=*"))?
        }
    };
    let storage = Storage::from_env();
    let auth = Auth::Tokens(Arc::new(tokens));
    let stack = Stack::new(StackConfig {
        storage: storage.clone(),
        auth: auth.clone(),
        scenarios,
        webhook_secret: secret.into_bytes(),
        clock: Arc::new(SystemClock),
    })
    .map_err(|e| format!("cannot open the store ({}): {e}", storage.describe()))?;
    let cfg = reconcile_config_from_env()?;
    let (reconcile_every, cleanup_every) = timers_from_env()?;
    let p = &cfg.policy;
    println!(
        "reconciler every {}s (zombie after {}s, stuck after {}s, retry backoff {}s); cleanup every {}s (retention {}s)",
        reconcile_every.num_seconds(),
        p.zombie_after.num_seconds(),
        p.stuck_after.num_seconds(),
        p.retry_backoff.num_seconds(),
        cleanup_every.num_seconds(),
        p.retention.num_seconds()
    );
    let app = match closeflow_api::rate_limit::RateLimit::from_env()? {
        Some(limit) => {
            println!(
                "rate limit: {} requests/s per caller, bursts of {} (RATE_LIMIT_PER_SECOND=0 turns it off)",
                limit.per_second, limit.burst
            );
            closeflow_api::rate_limit::rate_limited(stack.router.clone(), limit, &auth)
        }
        None => stack.router.clone(),
    };
    let stack = Arc::new(stack);
    let jobs = stack.clone();
    tokio::spawn(async move {
        let mut reconcile_tick = tokio::time::interval(reconcile_every.to_std().unwrap_or_default());
        let mut cleanup_tick = tokio::time::interval(cleanup_every.to_std().unwrap_or_default());
        loop {
            tokio::select! {
                _ = reconcile_tick.tick() => {
                    if let Err(e) = reconcile_once(jobs.store.as_ref(), jobs.driver.broker.as_ref(), &SystemClock, &cfg).await {
                        tracing::error!(error = %e, "reconciler run failed");
                    }
                }
                _ = cleanup_tick.tick() => {
                    if let Err(e) = cleanup_once(jobs.store.as_ref(), &SystemClock, cfg.policy.retention, 500).await {
                        tracing::error!(error = %e, "cleanup run failed");
                    }
                }
            }
        }
    });
    tokio::spawn(async move { stack.driver.run(std::time::Duration::from_millis(20)).await });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "closeflow embedded stack ready on http://{} ({}, simulated broker{}; Ctrl-C to stop)",
        listener.local_addr()?,
        storage.describe(),
        if spec.is_empty() {
            String::new()
        } else {
            format!(": {spec}")
        }
    );
    closeflow_api::server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
