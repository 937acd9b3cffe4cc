//! `make run`: the embedded single-process closeflow stack. In-memory store, the same
//! router as the Lambda function, the order pipeline and the simulated broker.

use std::sync::Arc;

use closeflow_api::SystemClock;
use closeflow_embedded::{Stack, StackConfig};
use closeflow_pipeline::SimScenarios;

const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";

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
    let stack = Stack::new(StackConfig {
        scenarios,
        webhook_secret: secret.into_bytes(),
        clock: Arc::new(SystemClock),
    });
    let app = stack.router.clone();
    tokio::spawn(async move { stack.driver.run(std::time::Duration::from_millis(20)).await });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "closeflow embedded stack ready on http://{} (in-memory store, simulated broker{}; Ctrl-C to stop)",
        listener.local_addr()?,
        if spec.is_empty() {
            String::new()
        } else {
            format!(": {spec}")
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
