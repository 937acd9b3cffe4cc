//! The trade_updates consumer as a long-running service: Alpaca sends no webhooks, and a
//! WebSocket outlives any Lambda invocation, so in AWS this runs as one Fargate task (see
//! template.yaml, `TradeStreamImage`). It applies each broker event to the DynamoDB store
//! through the same merge rules as the webhook, and backfills in-flight orders after every
//! (re)connect. Without it the order watch still closes filled positions within seconds.
//!
//! SIGTERM (a deployment or scale-in) stops it between events; a second task overlapping
//! the first would only apply the same events twice, which the merge rules ignore.

use std::sync::Arc;

use closeflow_alpaca::stream::{consumers, run_each_key_pair};
use closeflow_pipeline::SystemClock;

#[tokio::main]
async fn main() -> Result<(), String> {
    closeflow_aws::init_lambda_logging();
    let policy = closeflow_root::Policy::from_env()?;
    let store = Arc::new(closeflow_root::dynamo_store(&policy).await?);
    let brokers = closeflow_root::alpaca_accounts()?;
    // One connection per key pair: each account's events arrive on its own keys' stream.
    let pairs = consumers(&brokers, store, brokers.clone(), Arc::new(SystemClock));
    if pairs.is_empty() {
        return Err(
            "no Alpaca credentials: set ALPACA_API_KEY_ID/ALPACA_API_SECRET_KEY or ALPACA_ACCOUNTS(_JSON)".into(),
        );
    }
    tracing::info!(url = %pairs[0].0.url, connections = pairs.len(), "trade_updates service starting");
    run_each_key_pair(pairs, terminated()).await;
    tracing::info!("trade_updates service stopped");
    Ok(())
}

/// Resolves on SIGTERM (what ECS sends before stopping a task) or Ctrl-C.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
