//! `make paper-broker`: the Alpaca-compatible paper broker on 127.0.0.1:`PORT` (default
//! 4010). Point closeflow at it with `BROKER=alpaca ALPACA_BASE_URL=http://127.0.0.1:PORT
//! ALPACA_STREAM_URL=ws://127.0.0.1:PORT/stream` and the keys it announces.

use closeflow_paper_broker::{router, PaperBroker, PaperConfig, DEFAULT_PORT};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) if !p.is_empty() => p
            .parse()
            .map_err(|_| format!("PORT must be a port number, got `{p}`"))?,
        _ => DEFAULT_PORT,
    };
    let cfg = PaperConfig::from_env()?;
    let limit = match &cfg.rate_limit {
        Some(l) => format!("{} requests per {:?}", l.requests, l.window),
        None => "no rate limit".into(),
    };
    let key_id = cfg.key_id.clone();
    let broker = PaperBroker::new(cfg);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!(
        "closeflow paper broker ready: REST http://{addr}/v2, trade_updates ws://{addr}/stream \
         (key id `{key_id}`, {limit}; Ctrl-C to stop)"
    );
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
