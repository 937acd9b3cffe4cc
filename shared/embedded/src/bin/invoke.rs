//! `closeflow-invoke <function> <event.json>`: see `closeflow_embedded::invoke`.

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let (Some(function), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: closeflow-invoke <function> <event.json>\nfunctions: {}",
            closeflow_embedded::invoke::FUNCTIONS.join(", ")
        );
        std::process::exit(2);
    };
    let event = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    match closeflow_embedded::invoke::invoke(function, &event).await {
        Ok(out) => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
