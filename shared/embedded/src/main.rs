//! `closeflow`: `closeflow serve` (or no subcommand; what `make run` runs) is the embedded
//! single-process stack — a durable SQLite store (`CLOSEFLOW_DB`), the same router as the
//! Lambda function, the order pipeline and the simulated broker. Every other subcommand is
//! the command-line client of a running closeflow (`closeflow_embedded::cli`).

use std::sync::Arc;

use closeflow_api::SystemClock;
use closeflow_embedded::cli::{self, Cli, Command};
use closeflow_embedded::local::LocalSettings;
use closeflow_embedded::{Stack, StackConfig, Storage};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use clap::Parser;
    let cli = Cli::parse();
    if matches!(cli.command, None | Some(Command::Serve)) {
        return match serve().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("closeflow: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let exit = match cli::run(cli).await {
        Ok(exit) => exit,
        Err(failure) => {
            eprintln!("closeflow: {}", failure.message);
            failure.exit
        }
    };
    std::process::ExitCode::from(exit as u8)
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let settings = Arc::new(LocalSettings::from_env()?);
    let storage = Storage::from_env();
    let stack = Stack::new(StackConfig {
        storage: storage.clone(),
        auth: settings.auth.clone(),
        scenarios: settings.scenarios.clone(),
        webhook_secret: settings.webhook_secret.clone(),
        clock: Arc::new(SystemClock),
        api: settings.policy.api.clone(),
        alpaca: settings.alpaca.clone(),
        audit_retention: settings.policy.jobs.policy.audit_retention,
    })
    .map_err(|e| format!("cannot open the store ({}): {e}", storage.describe()))?;
    println!("{}", settings.describe_jobs());
    let app = match closeflow_api::rate_limit::RateLimit::from_env()? {
        Some(limit) => {
            println!(
                "rate limit: {} requests/s per caller, bursts of {} (RATE_LIMIT_PER_SECOND=0 turns it off)",
                limit.per_second, limit.burst
            );
            closeflow_api::rate_limit::rate_limited(stack.router.clone(), limit, &settings.auth)
        }
        None => stack.router.clone(),
    };
    let stack = Arc::new(stack);
    let jobs = (settings.clone(), stack.store.clone(), stack.driver.broker.clone());
    let stream = jobs.clone();
    let (queue, events) = (stack.driver.producer.clone(), stack.driver.events.clone());
    tokio::spawn(async move { jobs.0.run_jobs(jobs.1, jobs.2, queue, events).await });
    tokio::spawn(async move { stream.0.run_trade_stream(stream.1, stream.2).await });
    tokio::spawn(async move { stack.driver.run(std::time::Duration::from_millis(20)).await });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    println!(
        "closeflow embedded stack ready on http://{} ({}, {}; Ctrl-C to stop)",
        listener.local_addr()?,
        storage.describe(),
        settings.describe_broker()
    );
    closeflow_api::server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
