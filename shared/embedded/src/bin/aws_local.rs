//! `closeflow-aws-local` (`make run-aws-local`): the stack on DynamoDB + Streams, SQS FIFO
//! and EventBridge at `AWS_ENDPOINT_URL` (moto or LocalStack): the API on `PORT`, the
//! stream → relay → FIFO → submitter path, the event publisher, the reconciler and
//! cleanup timers, and the simulated broker (`BROKER=alpaca` for Alpaca).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use closeflow_embedded::aws_local::{
    write_env_file, AwsLocal, AwsLocalConfig, BrokerChoice, DEFAULT_ENV_FILE, DEFAULT_PREFIX,
};
use closeflow_embedded::local::LocalSettings;
/// Each idle poll costs the emulator a few requests (stream, shards, queue): poll less
/// often than the embedded stack does.
const POLL_IDLE: Duration = Duration::from_millis(100);

use closeflow_root::env;

async fn stop_requested() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run().await {
        eprintln!("closeflow-aws-local: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    // Refuse real AWS: this command creates tables and queues wherever it points.
    let endpoint = env("AWS_ENDPOINT_URL").ok_or(
        "AWS_ENDPOINT_URL is not set: point it at an emulator (LocalStack: `set -a; . infra/localstack.env; \
         set +a`), or use `make run-aws-local`, which starts moto",
    )?;
    let settings = Arc::new(LocalSettings::from_env()?);
    let broker = match &settings.alpaca {
        Some(cfg) => BrokerChoice::Alpaca(cfg.clone()),
        None => BrokerChoice::Simulated(settings.scenarios.clone()),
    };
    let broker_text = settings.describe_broker();
    let prefix = env("CLOSEFLOW_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.into());
    let env_file = PathBuf::from(env("AWS_LOCAL_ENV_FILE").unwrap_or_else(|| DEFAULT_ENV_FILE.into()));

    let stack = AwsLocal::start(AwsLocalConfig {
        template: PathBuf::from(env("CLOSEFLOW_TEMPLATE").unwrap_or_else(|| "template.yaml".into())),
        prefix,
        broker,
        webhook_secret: settings.webhook_secret.clone(),
        auth: settings.auth.clone(),
        policy: settings.policy.clone(),
    })
    .await
    .map_err(|e| format!("cannot set up the stack on {endpoint}: {e}"))?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", settings.port))?;
    let api_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let app = stack.router.clone();
    let stack = Arc::new(stack);
    let jobs = (settings.clone(), stack.store.clone(), stack.driver.broker.clone());
    let stream = jobs.clone();
    let (queue, events) = (stack.driver.producer.clone(), stack.driver.events.clone());
    tokio::spawn(async move { jobs.0.run_jobs(jobs.1, jobs.2, queue, events).await });
    tokio::spawn(async move { stream.0.run_trade_stream(stream.1, stream.2).await });
    let pipeline = stack.clone();
    tokio::spawn(async move { pipeline.driver.run(POLL_IDLE).await });

    write_env_file(&env_file, &stack.env_lines(&api_url))?;
    let r = &stack.resources;
    println!("closeflow on AWS services at {endpoint} ({broker_text})");
    println!(
        "  table       {} (its stream feeds the relay and the event publisher)",
        r.names.table
    );
    println!("  order queue {}", r.order_queue_url);
    println!("  dead letter {}", r.dead_letter_queue_url);
    println!(
        "  event bus   {} (every event is copied to {})",
        r.names.bus, r.events_tap_url
    );
    println!(
        "  timers      reconciler every {}s, cleanup every {}s",
        settings.reconcile_every.num_seconds(),
        settings.cleanup_every.num_seconds()
    );
    println!("  make invoke uses this stack via {}", env_file.display());
    println!("closeflow aws-local stack ready on {api_url} (Ctrl-C to stop)");

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_requested())
        .await;
    // Stale resource names would send `make invoke` to an emulator that is gone.
    let _ = std::fs::remove_file(&env_file);
    served.map_err(|e| format!("server: {e}"))?;
    println!("closeflow aws-local stack stopped");
    Ok(())
}
