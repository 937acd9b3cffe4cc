//! `make bench`: prints a table of closeflow's performance targets.
//!
//! - DynamoDB round trips per close request on each path, counted at the SDK layer against
//!   moto (target: 1 on create, <= 2 elsewhere).
//! - Close-handler latency through the router on the embedded store (target: p99 < 1 ms).

use std::time::{Duration, Instant};

use closeflow_tests::{Backend, TestApp};

const ROUND_TRIP_SAMPLES: usize = 20;
const LATENCY_SAMPLES: usize = 5_000;

struct Row {
    metric: String,
    value: String,
    target: &'static str,
    ok: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn round_trips(rows: &mut Vec<Row>) {
    let app = TestApp::new(Backend::DynamoDb).await;
    let mut totals = [0u64; 4];
    for i in 0..ROUND_TRIP_SAMPLES {
        let id = format!("bench-{i}");
        app.open_position(&id, "10").await;
        let steps = [
            (id.as_str(), "k1", 201),
            (id.as_str(), "k1", 200),
            (id.as_str(), "k2", 409),
            ("bench-missing", "k1", 404),
        ];
        for (n, (pos, key, status)) in steps.into_iter().enumerate() {
            let before = app.round_trips();
            let r = app.close(pos, key).await;
            assert_eq!(r.status, status, "{}", r.body);
            totals[n] += app.round_trips() - before;
        }
    }
    let names = ["create (201)", "replay (200)", "different key (409)", "not found (404)"];
    for (n, name) in names.iter().enumerate() {
        let avg = totals[n] as f64 / ROUND_TRIP_SAMPLES as f64;
        let (target, limit) = if n == 0 { ("= 1", 1.0) } else { ("<= 2", 2.0) };
        rows.push(Row {
            metric: format!("DynamoDB round trips per close, {name}"),
            value: format!("{avg:.2}"),
            target,
            ok: avg <= limit,
        });
    }
}

async fn embedded_latency(rows: &mut Vec<Row>) {
    let app = TestApp::new(Backend::Embedded).await;
    for i in 0..LATENCY_SAMPLES {
        app.open_position(&format!("lat-{i}"), "10").await;
    }
    let mut create = Vec::with_capacity(LATENCY_SAMPLES);
    let mut replay = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let id = format!("lat-{i}");
        let t = Instant::now();
        let r = app.close(&id, "k").await;
        create.push(t.elapsed());
        assert_eq!(r.status, 201);
        let t = Instant::now();
        let r = app.close(&id, "k").await;
        replay.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    for (name, mut samples) in [("create", create), ("replay", replay)] {
        samples.sort();
        let p50 = percentile(&samples, 0.50);
        let p99 = percentile(&samples, 0.99);
        rows.push(Row {
            metric: format!("close handler latency, embedded, {name} p50"),
            value: micros(p50),
            target: "-",
            ok: true,
        });
        rows.push(Row {
            metric: format!("close handler latency, embedded, {name} p99"),
            value: micros(p99),
            target: "< 1 ms",
            ok: p99 < Duration::from_millis(1),
        });
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut rows = Vec::new();
    round_trips(&mut rows).await;
    embedded_latency(&mut rows).await;

    let width = rows.iter().map(|r| r.metric.len()).max().unwrap_or(10);
    println!();
    println!(
        "| {:<width$} | {:>10} | {:>7} | {:>4} |",
        "metric", "value", "target", "ok"
    );
    println!(
        "|-{}-|-{}-|-{}-|-{}-|",
        "-".repeat(width),
        "-".repeat(10),
        "-".repeat(7),
        "-".repeat(4)
    );
    for r in &rows {
        println!(
            "| {:<width$} | {:>10} | {:>7} | {:>4} |",
            r.metric,
            r.value,
            r.target,
            if r.ok { "yes" } else { "NO" }
        );
    }
    println!();
    println!(
        "samples: {ROUND_TRIP_SAMPLES} positions for round trips (moto), {LATENCY_SAMPLES} closes + {LATENCY_SAMPLES} replays for latency"
    );
}
