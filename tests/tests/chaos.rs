//! The chaos suite over a fixed sample of seeds (`CHAOS_SEEDS`, default 500), half on the
//! memory store and half on SQLite with restarts. `CHAOS_SEED=<n>` replays one seed;
//! `make chaos SEEDS=N` runs N.

use closeflow_tests::chaos::{backend_of, run_seed, ChaosStats};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "current_thread")]
async fn every_seed_keeps_every_promise() {
    let seeds: Vec<u64> = match env_u64("CHAOS_SEED") {
        Some(one) => vec![one],
        None => (0..env_u64("CHAOS_SEEDS").unwrap_or(500)).collect(),
    };
    // A simulated restart drops the process's handles, never the OS's buffers: fsyncs
    // would only slow the simulation down.
    std::env::set_var("CLOSEFLOW_DB_SYNC", "off");
    let started = std::time::Instant::now();
    let mut total = ChaosStats::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run_seed(seed, backend_of(seed)).await {
            Ok(s) => {
                total.closes_created += s.closes_created;
                total.orders_placed += s.orders_placed;
                total.restarts += s.restarts;
                total.cancels += s.cancels;
                total.manual_retries += s.manual_retries;
                total.strategy_closes += s.strategy_closes;
                total.mleg_orders += s.mleg_orders;
                total.bulk_closes += s.bulk_closes;
                total.liquidations += s.liquidations;
            }
            Err(why) => failures.push(format!(
                "seed {seed} ({:?}): {why}\n  replay: CHAOS_SEED={seed} cargo test -p closeflow-tests --test chaos -- --nocapture",
                backend_of(seed)
            )),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "chaos: {} seeds in {secs:.1} s ({:.0} seeds/s): {} closes, {} broker orders, {} restarts, {} cancels, {} manual retries, {} strategy closes, {} multi-leg orders, {} bulk closes ({} liquidations)",
        seeds.len(),
        seeds.len() as f64 / secs,
        total.closes_created,
        total.orders_placed,
        total.restarts,
        total.cancels,
        total.manual_retries,
        total.strategy_closes,
        total.mleg_orders,
        total.bulk_closes,
        total.liquidations
    );
    assert!(
        seeds.len() < 50
            || (total.cancels > 0
                && total.manual_retries > 0
                && total.strategy_closes > 0
                && total.mleg_orders > 0
                && total.bulk_closes > 0
                && total.liquidations > 0),
        "cancels, manual retries, strategy closes, multi-leg orders, bulk closes and liquidations must take part"
    );
    assert!(
        total.orders_placed > 0 || seeds.len() < 10,
        "the simulation placed no order at all"
    );
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
