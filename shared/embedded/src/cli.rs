//! The `closeflow` command line: `closeflow serve` runs the embedded stack (what `make run`
//! runs); every other subcommand is a client of a running closeflow (the embedded stack or
//! the HTTP API in AWS) over the same HTTP API a browser or curl uses.
//!
//! Commands that place or change orders ask for confirmation unless `--yes`, and print the
//! Idempotency-Key they send, so rerunning them with `--key` can never close twice. `close`,
//! `cancel`, `retry` and `watch` follow the close request with a live spinner until it ends;
//! `close-all`, `liquidate`, `retry-failed` and `bulk` follow a bulk close with a progress
//! bar of its rows (and a liquidation's phase) until every close has ended.
//! Exit status: 0 closed, 1 error, 2 failed, 3 partially closed.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "closeflow", version, about = "Close trading positions safely.")]
pub struct Cli {
    /// The closeflow server.
    #[arg(long, global = true, env = "CLOSEFLOW_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Bearer token (an API token of the embedded stack, or a JWT in AWS).
    #[arg(
        long,
        global = true,
        env = "CLOSEFLOW_TOKEN",
        default_value = "dev-token",
        hide_env_values = true
    )]
    pub token: String,
    /// Machine-readable output: the API's JSON, nothing else on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the embedded stack (the default without a subcommand; what `make run` runs).
    Serve,
    /// List positions of the caller's accounts, newest first.
    Positions {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        strategy: Option<String>,
        /// At most this many (all pages are read until then).
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Close a position (all of it, or --qty of it) with a market or --limit order.
    Close {
        position: String,
        /// Close only this much (a partial close).
        #[arg(long)]
        qty: Option<String>,
        /// A limit order at this price instead of a market order.
        #[arg(long = "limit", value_name = "PRICE")]
        limit_price: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Close every leg of a strategy, all legs or none.
    CloseStrategy {
        strategy: String,
        /// `mleg` (one multi-leg order) or `legs` (one order per leg); the server's default
        /// otherwise.
        #[arg(long, value_parser = ["mleg", "legs"])]
        mode: Option<String>,
        /// Close only this many strategy units (the legs' ratios kept).
        #[arg(long)]
        qty: Option<String>,
        /// A net limit price for a multi-leg order (positive debit, negative credit).
        #[arg(long = "limit", value_name = "PRICE", allow_hyphen_values = true)]
        limit_price: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Cancel the working order(s) of a close request.
    Cancel {
        close_request: String,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Start a new attempt of a failed close request for what remains.
    Retry {
        close_request: String,
        #[arg(long = "limit", value_name = "PRICE")]
        limit_price: Option<String>,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Close every open position of an account (or the ones the filters name), following
    /// the bulk close with a progress bar until every close has ended.
    CloseAll {
        account: String,
        /// Only these symbols (comma separated).
        #[arg(long, value_delimiter = ',')]
        symbols: Vec<String>,
        /// Only the legs of these strategies (comma separated).
        #[arg(long = "strategies", value_delimiter = ',')]
        strategy_ids: Vec<String>,
        #[arg(long, value_parser = ["equity", "option"])]
        asset_type: Option<String>,
        /// Cancel the open orders that hold a position's shares before closing it.
        #[arg(long)]
        cancel_open_orders: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Emergency liquidation: cancel every open order, close everything (shorts first) until
    /// the broker holds nothing, then halt the account's trading. Asks you to type
    /// `LIQUIDATE <account>` unless --yes.
    Liquidate {
        account: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Close again only the failed rows of a bulk close, and follow it.
    RetryFailed {
        bulk_close: String,
        #[command(flatten)]
        order: OrderFlags,
    },
    /// Follow a bulk close or liquidation until it ends.
    Bulk {
        bulk_close: String,
        /// Give up following (not the bulk close) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// A position's audit trail (who changed what, when and why), oldest first.
    Audit {
        position: String,
        /// At most this many entries (all pages are read until then).
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// Follow a close request until it ends.
    Watch {
        close_request: String,
        /// Give up watching (not the close) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
pub struct OrderFlags {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// The Idempotency-Key to send (rerun a command with the key it printed: safe).
    #[arg(long)]
    pub key: Option<String>,
    /// Return once accepted instead of following the close to its end.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following (not the close) after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// How a command ended, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Closed = 0,
    Error = 1,
    Failed = 2,
    Partial = 3,
}

/// The exit status a close request's view means: still working is `None`.
pub fn outcome(close_request: &Value) -> Option<Exit> {
    let filled = decimal(&close_request["filled_qty"]);
    let target = decimal(&close_request["target_qty"]);
    match close_request["status"].as_str()? {
        "completed" if filled.is_some() && filled == target => Some(Exit::Closed),
        "completed" => Some(Exit::Partial),
        "failed" if filled.is_some_and(|f| !f.is_zero()) => Some(Exit::Partial),
        "failed" => Some(Exit::Failed),
        _ => None,
    }
}

fn decimal(v: &Value) -> Option<rust_decimal::Decimal> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// A command's failure: what to print, and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit: Exit,
}

impl Failure {
    fn error(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            exit: Exit::Error,
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base.trim_end_matches('/')))
            .bearer_auth(&self.token);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| Failure::error(format!("cannot reach closeflow at {}: {e}", self.base)))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let code = value["error"].as_str().unwrap_or("http_error");
            let message = value["message"].as_str().unwrap_or("");
            Err(Failure::error(format!("{status}: {code}: {message}")))
        }
    }
}

/// Runs a client subcommand; `Serve` is the caller's to handle.
pub async fn run(cli: Cli) -> Result<Exit, Failure> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::error(e.to_string()))?,
        base: cli.url.clone(),
        token: cli.token.clone(),
    };
    let json_out = cli.json;
    match cli.command {
        None | Some(Command::Serve) => Err(Failure::error("serve is not a client command")),
        Some(Command::Positions {
            account,
            status,
            strategy,
            limit,
        }) => positions(&client, json_out, account, status, strategy, limit).await,
        Some(Command::Close {
            position,
            qty,
            limit_price,
            reason,
            order,
        }) => {
            let p = client
                .call(
                    reqwest::Method::GET,
                    &format!("/positions/{}", encode(&position)),
                    None,
                    None,
                )
                .await?;
            let amount = qty
                .clone()
                .unwrap_or_else(|| abs(p["quantity"].as_str().unwrap_or("?")));
            let how = match &limit_price {
                Some(px) => format!("a limit order at {px}"),
                None => "a market order".into(),
            };
            let question = format!(
                "Close {amount} of {} ({position}, account {}) with {how}?",
                p["symbol"].as_str().unwrap_or("?"),
                p["account_id"].as_str().unwrap_or("?")
            );
            let mut body = json!({});
            if let Some(q) = qty {
                body["qty"] = json!(q);
            }
            if let Some(px) = limit_price {
                body["order_type"] = json!("limit");
                body["limit_price"] = json!(px);
            }
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let path = format!("/positions/{}/close", encode(&position));
            let accepted = place(&client, json_out, &order, &question, &path, body).await?;
            follow_from(&client, json_out, &order, &accepted).await
        }
        Some(Command::CloseStrategy {
            strategy,
            mode,
            qty,
            limit_price,
            reason,
            order,
        }) => {
            let s = client
                .call(
                    reqwest::Method::GET,
                    &format!("/strategies/{}", encode(&strategy)),
                    None,
                    None,
                )
                .await?;
            let legs = s["legs"].as_array().map(Vec::len).unwrap_or_default();
            let how = match &limit_price {
                Some(px) => format!("a net limit of {px}"),
                None => "market".into(),
            };
            let question = format!("Close all {legs} legs of strategy {strategy} at {how}, all legs or none?");
            let mut body = json!({});
            if let Some(px) = limit_price {
                body["order_type"] = json!("limit");
                body["limit_price"] = json!(px);
            }
            for (k, v) in [("mode", mode), ("qty", qty), ("reason", reason)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            let path = format!("/strategies/{}/close", encode(&strategy));
            let accepted = place(&client, json_out, &order, &question, &path, body).await?;
            let id = accepted["strategy_close_id"]
                .as_str()
                .ok_or_else(|| Failure::error("the answer names no strategy close"))?
                .to_string();
            if order.no_wait {
                print_json_or(json_out, &accepted, || format!("accepted: strategy close {id}"));
                return Ok(Exit::Closed);
            }
            follow_strategy(&client, json_out, &id, order.timeout).await
        }
        Some(Command::Cancel { close_request, order }) => {
            let question = format!("Cancel the working order(s) of close request {close_request}?");
            confirm(&question, order.yes)?;
            let path = format!("/close-requests/{}/cancel", encode(&close_request));
            let answer = client.call(reqwest::Method::POST, &path, None, Some(json!({}))).await?;
            if order.no_wait {
                print_json_or(json_out, &answer, || "cancel asked; the broker confirms it".into());
                return Ok(Exit::Closed);
            }
            follow(&client, json_out, &close_request, order.timeout).await
        }
        Some(Command::Retry {
            close_request,
            limit_price,
            order,
        }) => {
            let question = format!("Start a new attempt of close request {close_request} for what remains?");
            let mut body = json!({});
            if let Some(px) = limit_price {
                body["order_type"] = json!("limit");
                body["limit_price"] = json!(px);
            }
            let path = format!("/close-requests/{}/retry", encode(&close_request));
            place(&client, json_out, &order, &question, &path, body).await?;
            if order.no_wait {
                return Ok(Exit::Closed);
            }
            follow(&client, json_out, &close_request, order.timeout).await
        }
        Some(Command::CloseAll {
            account,
            symbols,
            strategy_ids,
            asset_type,
            cancel_open_orders,
            reason,
            order,
        }) => {
            let mut body = json!({});
            let mut scope = Vec::new();
            if !symbols.is_empty() {
                scope.push(format!("symbols {}", symbols.join(", ")));
                body["symbols"] = json!(symbols);
            }
            if !strategy_ids.is_empty() {
                scope.push(format!("strategies {}", strategy_ids.join(", ")));
                body["strategy_ids"] = json!(strategy_ids);
            }
            if let Some(t) = asset_type {
                scope.push(format!("{t} positions"));
                body["asset_type"] = json!(t);
            }
            if cancel_open_orders {
                body["cancel_open_orders"] = json!(true);
            }
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let what = match scope.is_empty() {
                true => "every open position".to_string(),
                false => format!("the open positions of {}", scope.join(" and ")),
            };
            let question = format!("Close {what} of account {account} at market?");
            let path = format!("/accounts/{}/close-all", encode(&account));
            let started = send_with_key(&client, &order, &question, &path, body).await?;
            follow_bulk_from(&client, json_out, &order, &started).await
        }
        Some(Command::Liquidate { account, reason, order }) => {
            let phrase = format!("LIQUIDATE {account}");
            if !order.yes {
                confirm_typed(
                    &format!(
                        "This cancels every open order of account {account}, closes every position at \
                         market and halts its trading. Type `{phrase}` to go on:"
                    ),
                    &phrase,
                )?;
            }
            let mut body = json!({ "confirm": phrase });
            if let Some(r) = reason {
                body["reason"] = json!(r);
            }
            let path = format!("/accounts/{}/liquidate", encode(&account));
            let flags = OrderFlags { yes: true, ..order };
            let started = send_with_key(&client, &flags, "", &path, body).await?;
            follow_bulk_from(&client, json_out, &flags, &started).await
        }
        Some(Command::RetryFailed { bulk_close, order }) => {
            let question = format!("Close the failed rows of bulk close {bulk_close} again?");
            confirm(&question, order.yes)?;
            let path = format!("/bulk-closes/{}/retry-failed", encode(&bulk_close));
            let started = client.call(reqwest::Method::POST, &path, None, Some(json!({}))).await?;
            follow_bulk_from(&client, json_out, &order, &started).await
        }
        Some(Command::Bulk { bulk_close, timeout }) => follow_bulk(&client, json_out, &bulk_close, timeout).await,
        Some(Command::Audit { position, limit }) => audit(&client, json_out, &position, limit).await,
        Some(Command::Watch { close_request, timeout }) => follow(&client, json_out, &close_request, timeout).await,
    }
}

/// The `field` items of every page of a listing at `path` (following `next_cursor`), at
/// most `limit`.
async fn pages(
    client: &Client,
    path: &str,
    query: Vec<(&str, String)>,
    field: &str,
    limit: usize,
) -> Result<Vec<Value>, Failure> {
    let mut all: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let qs = serde_urlencoded::to_string(&q).map_err(|e| Failure::error(e.to_string()))?;
        let page = client
            .call(reqwest::Method::GET, &format!("{path}?{qs}"), None, None)
            .await?;
        all.extend(page[field].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(String::from);
        if cursor.is_none() || all.len() >= limit {
            break;
        }
    }
    all.truncate(limit);
    Ok(all)
}

async fn positions(
    client: &Client,
    json_out: bool,
    account: Option<String>,
    status: Option<String>,
    strategy: Option<String>,
    limit: usize,
) -> Result<Exit, Failure> {
    let mut query: Vec<(&str, String)> = vec![("limit", limit.clamp(1, 100).to_string())];
    for (k, v) in [("account_id", account), ("status", status), ("strategy_id", strategy)] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let all = pages(client, "/positions", query, "positions", limit).await?;
    if json_out {
        println!("{}", json!({ "positions": all }));
        return Ok(Exit::Closed);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "position", "account", "symbol", "quantity", "entry", "strategy", "status", "realized",
    ]);
    for p in &all {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        table.add_row([
            s("position_id"),
            s("account_id"),
            s("symbol"),
            s("quantity"),
            s("avg_entry_price"),
            s("strategy_id"),
            s("status"),
            // Unknown PnL shows why, never a made-up 0.
            p["realized_pnl"]
                .as_str()
                .map_or_else(|| format!("? ({})", s("realized_pnl_unknown")), str::to_string),
        ]);
    }
    println!("{table}");
    println!("{} position(s)", all.len());
    Ok(Exit::Closed)
}

async fn audit(client: &Client, json_out: bool, position: &str, limit: usize) -> Result<Exit, Failure> {
    let path = format!("/positions/{}/audit", encode(position));
    let query = vec![("limit", limit.clamp(1, 500).to_string())];
    let all = pages(client, &path, query, "entries", limit).await?;
    if json_out {
        println!("{}", json!({ "entries": all }));
        return Ok(Exit::Closed);
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(["at", "actor", "action", "subject", "status", "reason", "details"]);
    for e in &all {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        let status = match (e["status_before"].as_str(), e["status_after"].as_str()) {
            (Some(b), Some(a)) => format!("{b} -> {a}"),
            (None, Some(a)) => a.to_string(),
            _ => String::new(),
        };
        let details = e["details"]
            .as_object()
            .map(|d| {
                d.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        table.add_row([
            s("at"),
            s("actor"),
            s("action"),
            s("subject_id"),
            status,
            s("reason"),
            details,
        ]);
    }
    println!("{table}");
    println!("{} entr{}", all.len(), if all.len() == 1 { "y" } else { "ies" });
    Ok(Exit::Closed)
}

/// Confirms, then sends an order-placing request with a (printed) Idempotency-Key.
async fn place(
    client: &Client,
    json_out: bool,
    flags: &OrderFlags,
    question: &str,
    path: &str,
    body: Value,
) -> Result<Value, Failure> {
    let answer = send_with_key(client, flags, question, path, body).await?;
    if !json_out {
        eprintln!(
            "close request {} ({})",
            answer["close_request_id"].as_str().unwrap_or("?"),
            answer["close_request_status"]
                .as_str()
                .or(answer["status"].as_str())
                .unwrap_or("?")
        );
    }
    Ok(answer)
}

/// Confirms, then sends a request that changes orders with a printed Idempotency-Key (a
/// bulk close or liquidation as it is; a single close's answer is described by `place`).
async fn send_with_key(
    client: &Client,
    flags: &OrderFlags,
    question: &str,
    path: &str,
    body: Value,
) -> Result<Value, Failure> {
    confirm(question, flags.yes)?;
    let key = flags.key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Before sending: a crash or timeout after this line is still safe to rerun.
    eprintln!("Idempotency-Key: {key}   (rerun with --key {key} to repeat safely)");
    client.call(reqwest::Method::POST, path, Some(&key), Some(body)).await
}

async fn follow_bulk_from(
    client: &Client,
    json_out: bool,
    flags: &OrderFlags,
    started: &Value,
) -> Result<Exit, Failure> {
    let id = started["bulk_close_id"]
        .as_str()
        .ok_or_else(|| Failure::error("the answer names no bulk close"))?;
    if !json_out {
        eprintln!("bulk close {id} ({})", started["kind"].as_str().unwrap_or("close_all"));
    }
    if flags.no_wait {
        print_json_or(json_out, started, || format!("accepted: bulk close {id}"));
        return Ok(Exit::Closed);
    }
    follow_bulk(client, json_out, id, flags.timeout).await
}

/// The exit status a bulk close's view means: still working is `None`. A liquidation
/// that ended with the broker still holding something is not a success.
pub fn bulk_outcome(bulk: &Value) -> Option<Exit> {
    let n = |k: &str| bulk[k].as_u64().unwrap_or(0);
    match bulk["status"].as_str()? {
        "completed" if bulk["liquidation"]["flat"] == json!(false) => Some(Exit::Partial),
        "completed" => Some(Exit::Closed),
        "completed_with_errors" if n("succeeded") > 0 => Some(Exit::Partial),
        "completed_with_errors" => Some(Exit::Failed),
        _ => None,
    }
}

/// Polls the bulk close until every close has ended, with a progress bar (on a terminal)
/// of rows done out of the rows taken so far, and a liquidation's phase.
async fn follow_bulk(client: &Client, json_out: bool, id: &str, timeout: u64) -> Result<Exit, Failure> {
    let bar = terminal_bar(json_out, || indicatif::ProgressBar::new(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .map_err(|e| Failure::error(e.to_string()))?,
    );
    let path = format!("/bulk-closes/{}", encode(id));
    let work = Following {
        what: format!("bulk close {id}"),
        again: format!("closeflow bulk {id}"),
        every: Duration::from_millis(500),
        timeout,
    };
    poll(client, json_out, &path, &bar, &work, |b, bar| {
        let n = |k: &str| b[k].as_u64().unwrap_or(0);
        bar.set_length(n("total"));
        bar.set_position(n("succeeded") + n("failed") + n("skipped"));
        let phase = match b["liquidation"]["phase"].as_str() {
            Some(p) => format!(", {p} (attempt {})", b["liquidation"]["attempt"]),
            None => String::new(),
        };
        bar.set_message(format!(
            "{} closed, {} failed, {} working{phase}",
            n("succeeded"),
            n("failed"),
            n("pending")
        ));
        let exit = bulk_outcome(b)?;
        let failed: Vec<String> = b["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["status"] == "failed")
            .map(|r| {
                format!(
                    "{}: {}",
                    r["symbol"].as_str().unwrap_or("?"),
                    r["message"].as_str().or(r["error"].as_str()).unwrap_or("failed")
                )
            })
            .collect();
        let mut line = format!(
            "{}: {} of {} closed, {} failed, {} skipped",
            b["status"].as_str().unwrap_or("?"),
            n("succeeded"),
            n("total"),
            n("failed"),
            n("skipped")
        );
        if let Some(pnl) = b["total_realized_pnl"].as_str() {
            line.push_str(&format!("; realized {pnl}"));
        }
        if !failed.is_empty() {
            line.push_str(&format!(" ({})", failed.join("; ")));
        }
        if let Some(left) = b["liquidation"]["left"].as_array().filter(|l| !l.is_empty()) {
            let left: Vec<&str> = left.iter().filter_map(Value::as_str).collect();
            line.push_str(&format!("; NOT FLAT, still held at the broker: {}", left.join(", ")));
        }
        Some((exit, line))
    })
    .await
}

/// Something followed until it ends: how to name it, how to pick it up again, how often
/// to look and for how long.
struct Following {
    what: String,
    again: String,
    every: Duration,
    timeout: u64,
}

/// A bar on a terminal; hidden for `--json` or without one.
fn terminal_bar(json_out: bool, make: impl FnOnce() -> indicatif::ProgressBar) -> indicatif::ProgressBar {
    if json_out || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        make()
    }
}

/// Polls `path` until `look` (which also shows the progress on `bar`) says how the work
/// ended and what to print; stops following, never the work, after the timeout.
async fn poll(
    client: &Client,
    json_out: bool,
    path: &str,
    bar: &indicatif::ProgressBar,
    work: &Following,
    look: impl Fn(&Value, &indicatif::ProgressBar) -> Option<(Exit, String)>,
) -> Result<Exit, Failure> {
    let deadline = Instant::now() + Duration::from_secs(work.timeout);
    loop {
        let v = client.call(reqwest::Method::GET, path, None, None).await?;
        if let Some((exit, text)) = look(&v, bar) {
            bar.finish_and_clear();
            print_json_or(json_out, &v, || text);
            return Ok(exit);
        }
        if Instant::now() >= deadline {
            bar.finish_and_clear();
            return Err(Failure::error(format!(
                "{} is still working after {} s; it goes on without us ({})",
                work.what, work.timeout, work.again
            )));
        }
        tokio::time::sleep(work.every).await;
    }
}

async fn follow_from(client: &Client, json_out: bool, flags: &OrderFlags, accepted: &Value) -> Result<Exit, Failure> {
    let id = accepted["close_request_id"]
        .as_str()
        .ok_or_else(|| Failure::error("the answer names no close request"))?;
    if flags.no_wait {
        print_json_or(json_out, accepted, || format!("accepted: close request {id}"));
        return Ok(Exit::Closed);
    }
    follow(client, json_out, id, flags.timeout).await
}

/// Polls the close request until it ends, with a spinner (on a terminal) saying where it is.
async fn follow(client: &Client, json_out: bool, id: &str, timeout: u64) -> Result<Exit, Failure> {
    let spinner = terminal_bar(json_out, indicatif::ProgressBar::new_spinner);
    spinner.enable_steady_tick(Duration::from_millis(100));
    let path = format!("/close-requests/{}", encode(id));
    let work = Following {
        what: format!("close request {id}"),
        again: format!("closeflow watch {id}"),
        every: Duration::from_millis(250),
        timeout,
    };
    poll(client, json_out, &path, &spinner, &work, |cr, spinner| {
        spinner.set_message(format!(
            "close request {id}: {}, filled {} of {}",
            cr["status"].as_str().unwrap_or("?"),
            cr["filled_qty"].as_str().unwrap_or("?"),
            cr["target_qty"].as_str().unwrap_or("?")
        ));
        outcome(cr).map(|exit| (exit, describe_end(cr, exit)))
    })
    .await
}

/// Follows a strategy close until no leg works: success 0, partial 3, error 2.
async fn follow_strategy(client: &Client, json_out: bool, id: &str, timeout: u64) -> Result<Exit, Failure> {
    let spinner = terminal_bar(json_out, indicatif::ProgressBar::new_spinner);
    spinner.enable_steady_tick(Duration::from_millis(100));
    let path = format!("/strategy-closes/{}", encode(id));
    let work = Following {
        what: format!("strategy close {id}"),
        again: format!("GET /strategy-closes/{id}"),
        every: Duration::from_millis(250),
        timeout,
    };
    poll(client, json_out, &path, &spinner, &work, |sc, spinner| {
        let (closed, total) = (&sc["closed_legs"], &sc["total_legs"]);
        spinner.set_message(format!("strategy close {id}: {closed} of {total} legs closed"));
        let (exit, head) = match sc["status"].as_str() {
            Some("success") => (Exit::Closed, "closed"),
            Some("partial") => (Exit::Partial, "partially closed"),
            Some("error") => (Exit::Failed, "failed"),
            _ => return None,
        };
        let refused: Vec<String> = sc["legs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some(format!("{}: {}", l["symbol"].as_str()?, l["error_message"].as_str()?)))
            .collect();
        let why = match refused.is_empty() {
            true => String::new(),
            false => format!(" ({})", refused.join("; ")),
        };
        Some((exit, format!("{head}: {closed}/{total} legs{why}")))
    })
    .await
}

fn describe_end(cr: &Value, exit: Exit) -> String {
    let s = |k: &str| cr[k].as_str().unwrap_or("?").to_string();
    match exit {
        Exit::Closed => format!("closed: {} filled", s("filled_qty")),
        Exit::Partial => format!("partially closed: {} of {} filled", s("filled_qty"), s("target_qty")),
        Exit::Failed => format!("failed: {}", cr["failure_reason"].as_str().unwrap_or("nothing filled")),
        Exit::Error => "error".into(),
    }
}

fn print_json_or(json_out: bool, value: &Value, human: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

/// Asks on the terminal; without one (a script), only `--yes` proceeds.
fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    match answer(&format!("{question} [y/N]"))?.as_str() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Failure::error("not confirmed; nothing was sent")),
    }
}

/// Asks for `phrase` typed out in full (an emergency action is never one keypress away).
fn confirm_typed(question: &str, phrase: &str) -> Result<(), Failure> {
    if answer(question)? == phrase {
        Ok(())
    } else {
        Err(Failure::error("not confirmed; nothing was sent"))
    }
}

/// The line a person types after `question`; refused without a terminal (a script must
/// say `--yes`).
fn answer(question: &str) -> Result<String, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::error(format!(
            "{question} Not confirmed: pass --yes to run without a terminal"
        )));
    }
    eprint!("{question} ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::error(e.to_string()))?;
    Ok(line.trim().to_string())
}

fn abs(q: &str) -> String {
    q.trim_start_matches('-').to_string()
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_requests_end_is_the_exit_status() {
        let cr = |status: &str, filled: &str| json!({"status": status, "filled_qty": filled, "target_qty": "10"});
        assert_eq!(outcome(&cr("completed", "10")), Some(Exit::Closed));
        assert_eq!(outcome(&cr("completed", "4")), Some(Exit::Partial));
        assert_eq!(outcome(&cr("failed", "0")), Some(Exit::Failed));
        assert_eq!(outcome(&cr("failed", "3")), Some(Exit::Partial));
        for working in ["pending", "submitted", "retryable"] {
            assert_eq!(outcome(&cr(working, "3")), None, "{working}");
        }
    }

    #[test]
    fn every_subcommand_parses_with_its_flags() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("closeflow").chain(args.iter().copied()));
        assert!(parse(&[]).unwrap().command.is_none());
        assert!(matches!(parse(&["serve"]).unwrap().command, Some(Command::Serve)));
        let c = parse(&[
            "close", "pos-1", "--qty", "2.5", "--limit", "187.5", "--yes", "--key", "k1",
        ])
        .unwrap();
        let Some(Command::Close {
            position,
            qty,
            limit_price,
            order,
            ..
        }) = c.command
        else {
            panic!("close")
        };
        assert_eq!(
            (position.as_str(), qty.as_deref(), limit_price.as_deref()),
            ("pos-1", Some("2.5"), Some("187.5"))
        );
        assert!(order.yes);
        assert_eq!(order.key.as_deref(), Some("k1"));
        assert!(
            parse(&["--json", "positions", "--account", "a", "--status", "open"])
                .unwrap()
                .json
        );
        assert!(parse(&["close"]).is_err(), "a position is required");
        assert!(parse(&["watch", "cr-1", "--timeout", "5"]).is_ok());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode("pos 1/x"), "pos%201%2Fx");
    }
}
