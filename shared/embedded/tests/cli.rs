//! The `closeflow` command line against a running embedded stack (the same binary,
//! serving): exit statuses, printed Idempotency-Keys that make a rerun safe, confirmation.

mod common;

use std::process::{Command, Output, Stdio};

use common::{start_with, Node, TOKEN};
use serde_json::Value;

fn db() -> String {
    std::env::temp_dir()
        .join(format!("closeflow-cli-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned()
}

/// Runs `closeflow <args>` as a client of `node`, with no terminal on stdin.
fn cli(node: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_closeflow"))
        .args(args)
        .env("CLOSEFLOW_URL", &node.base)
        .env("CLOSEFLOW_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run closeflow")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("stdout is JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn register(node: &Node, id: &str, symbol: &str) {
    register_in(node, id, "acct-1", symbol).await
}

async fn position_status(node: &Node, id: &str) -> String {
    let (_, p) = common::call(
        &reqwest::Client::new(),
        TOKEN,
        reqwest::Method::GET,
        format!("{}/positions/{id}", node.base),
        None,
        None,
    )
    .await;
    p["status"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_follows_to_the_end_and_a_rerun_with_the_printed_key_closes_nothing_twice() {
    let db = db();
    let node = start_with(&db, &[("SIM_BROKER_SCENARIOS", "TSLA=reject")]);
    register(&node, "cli-1", "AAPL").await;

    let out = cli(&node, &["close", "cli-1", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(0), "closed: {}", stderr(&out));
    let done = stdout_json(&out);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["filled_qty"], "5");
    let err = stderr(&out);
    let key = err
        .split("Idempotency-Key: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the key is printed: {err}"))
        .to_string();
    assert_eq!(position_status(&node, "cli-1").await, "closed");

    // The same command again with the printed key: the same close request, no new one.
    let again = cli(&node, &["close", "cli-1", "--yes", "--json", "--key", &key]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(stdout_json(&again)["close_request_id"], done["close_request_id"]);

    // A broker refusal: exit status 2 and the broker's reason.
    register(&node, "cli-2", "TSLA").await;
    let refused = cli(&node, &["close", "cli-2", "--yes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(String::from_utf8_lossy(&refused.stdout).starts_with("failed:"));
    assert_eq!(position_status(&node, "cli-2").await, "close_failed");

    // The list, paged through by the CLI, shows both as they ended.
    let listed = cli(&node, &["positions", "--account", "acct-1", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let rows = stdout_json(&listed);
    let status_of = |id: &str| {
        rows["positions"]
            .as_array()
            .and_then(|r| r.iter().find(|p| p["position_id"] == id))
            .map(|p| p["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status_of("cli-1").as_deref(), Some("closed"), "{rows}");
    assert_eq!(status_of("cli-2").as_deref(), Some("close_failed"), "{rows}");

    // A manual retry of the refused close: a new attempt, refused again (exit 2); a cancel
    // of a close with nothing working is the API's refusal (exit 1).
    let trail = cli(&node, &["audit", "cli-2", "--json"]);
    assert_eq!(trail.status.code(), Some(0), "{}", stderr(&trail));
    let trail = stdout_json(&trail);
    let failed_cr = trail["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["action"] == "close_requested"))
        .map(|e| e["subject_id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("the close is audited: {trail}"));
    let table = cli(&node, &["audit", "cli-2"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("close_requested") && table.contains("open -> closing"),
        "{table}"
    );
    let retried = cli(&node, &["retry", &failed_cr, "--yes", "--json"]);
    assert_eq!(retried.status.code(), Some(2), "{}", stderr(&retried));
    assert_eq!(stdout_json(&retried)["manual_retries"], 1);
    // A strategy with a refused leg: partially closed, exit 3, the broker's words.
    for (id, symbol) in [("st-aapl", "AAPL"), ("st-tsla", "TSLA")] {
        let body = format!(
            r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":"2","strategy_id":"pair-1"}}"#
        );
        put_position(&node, id, &body).await;
    }
    let strategy = cli(&node, &["close-strategy", "pair-1", "--yes"]);
    assert_eq!(strategy.status.code(), Some(3), "{}", stderr(&strategy));
    let said = String::from_utf8_lossy(&strategy.stdout);
    assert!(said.starts_with("partially closed: 1/2 legs (TSLA:"), "{said}");
    assert_eq!(position_status(&node, "st-aapl").await, "closed");

    let canceled = cli(&node, &["cancel", done["close_request_id"].as_str().unwrap(), "--yes"]);
    assert_eq!(canceled.status.code(), Some(1));
    assert!(stderr(&canceled).contains("not_cancelable"), "{}", stderr(&canceled));
    let _ = std::fs::remove_file(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_or_yes_nothing_is_sent_and_errors_exit_1() {
    let db = db();
    let node = start_with(&db, &[]);
    register(&node, "cli-3", "AAPL").await;

    let out = cli(&node, &["close", "cli-3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(position_status(&node, "cli-3").await, "open", "nothing was sent");

    // The API's error code reaches the user.
    let out = cli(&node, &["close", "no-such-position", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("position_not_found"), "{}", stderr(&out));

    // A wrong token: the server's refusal, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_closeflow"))
        .args(["--url", &node.base, "--token", "wrong", "watch", "x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let _ = std::fs::remove_file(&db);
}

async fn register_in(node: &Node, id: &str, account: &str, symbol: &str) {
    put_position(
        node,
        id,
        &format!(r#"{{"account_id":"{account}","symbol":"{symbol}","asset_type":"equity","quantity":"5"}}"#),
    )
    .await
}

async fn put_position(node: &Node, id: &str, body: &str) {
    let (s, v) = common::call(
        &reqwest::Client::new(),
        TOKEN,
        reqwest::Method::PUT,
        format!("{}/positions/{id}", node.base),
        None,
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

/// `close-all` follows the bulk close to its end (exit 3: some closed, one refused), a
/// rerun with the printed key starts nothing new; `retry-failed` goes again; `liquidate`
/// is never sent unconfirmed, and with `--yes` empties the account and halts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_and_liquidate_follow_the_bulk_close_to_its_end() {
    let db = db();
    let node = start_with(&db, &[("SIM_BROKER_SCENARIOS", "TSLA=reject")]);
    for (id, symbol) in [("ca-1", "AAPL"), ("ca-2", "MSFT"), ("ca-3", "TSLA")] {
        register_in(&node, id, "acct-ca", symbol).await;
    }
    let out = cli(&node, &["close-all", "acct-ca", "--json"]);
    assert_eq!(out.status.code(), Some(1), "unconfirmed: {}", stderr(&out));
    assert_eq!(position_status(&node, "ca-1").await, "open", "nothing was sent");

    let out = cli(
        &node,
        &["--json", "close-all", "acct-ca", "--yes", "--reason", "end of day"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let bulk = stdout_json(&out);
    assert_eq!(
        (
            bulk["status"].as_str(),
            bulk["succeeded"].as_u64(),
            bulk["failed"].as_u64()
        ),
        (Some("completed_with_errors"), Some(2), Some(1)),
        "{bulk}"
    );
    let key = stderr(&out)
        .split_whitespace()
        .skip_while(|w| *w != "Idempotency-Key:")
        .nth(1)
        .expect("the key is printed")
        .to_string();
    let again = cli(
        &node,
        &[
            "--json",
            "close-all",
            "acct-ca",
            "--yes",
            "--key",
            &key,
            "--reason",
            "end of day",
        ],
    );
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert_eq!(
        stdout_json(&again)["bulk_close_id"],
        bulk["bulk_close_id"],
        "the same bulk close"
    );

    // Human-readable: the failed row says why.
    let id = bulk["bulk_close_id"].as_str().unwrap();
    let shown = cli(&node, &["bulk", id]);
    assert_eq!(shown.status.code(), Some(3));
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        text.contains("2 of 3 closed, 1 failed") && text.contains("TSLA"),
        "{text}"
    );

    let retried = cli(&node, &["--json", "retry-failed", id, "--yes"]);
    assert_eq!(
        retried.status.code(),
        Some(3),
        "TSLA is refused again: {}",
        stderr(&retried)
    );
    assert_eq!(stdout_json(&retried)["retry_rounds"], 1);

    register_in(&node, "lq-1", "acct-lq", "AAPL").await;
    let out = cli(&node, &["liquidate", "acct-lq"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(position_status(&node, "lq-1").await, "open", "nothing was sent");
    let out = cli(&node, &["--json", "liquidate", "acct-lq", "--yes", "--reason", "risk"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let liq = stdout_json(&out);
    assert_eq!(
        (liq["kind"].as_str(), liq["liquidation"]["flat"].as_bool()),
        (Some("liquidation"), Some(true)),
        "{liq}"
    );
    assert_eq!(position_status(&node, "lq-1").await, "closed");
    let _ = std::fs::remove_file(&db);
}
