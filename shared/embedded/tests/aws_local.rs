//! `make run-aws-local` through its own entry points: `infra/run-aws-local.sh` starting a
//! private moto server and the real `closeflow-aws-local` binary, driven over HTTP, with
//! `make invoke`'s way of finding the stack, and stopped the way a person does (Ctrl-C).

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "aws-local-test-token";
const SECRET: &str = "aws-local-test-secret";
const BIN: &str = env!("CARGO_BIN_EXE_closeflow-aws-local");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A started stack: its process (group), its output so far, and its env file.
struct Running {
    child: Child,
    output: Arc<Mutex<String>>,
    env_file: PathBuf,
    /// Signals go to the whole process group (script, moto, binary), like a terminal's.
    group: bool,
}

impl Running {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let ok = Command::new("kill").args([sig, "--", &target]).status().expect("kill");
        assert!(ok.success(), "kill {sig} {target}");
    }

    /// Waits for the env file the stack writes once it serves, and reads it.
    fn wait_ready(&mut self) -> HashMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.env_file) {
                return parse_env(&text);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the stack exited ({status}) before it was ready:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "the stack never became ready:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the stack did not stop:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

fn spawn(mut cmd: Command, env_file: PathBuf, group: bool) -> Running {
    cmd.env("PORT", "0")
        .env("AWS_LOCAL_ENV_FILE", &env_file)
        .env("API_TOKENS", format!("{TOKEN}=*"))
        .env("WEBHOOK_SECRET", SECRET)
        .env("SIM_BROKER_SCENARIOS", "HOLD=hold")
        .env("RUST_LOG", "warn")
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().expect("start the stack");
    let output = Arc::new(Mutex::new(String::new()));
    // Drain both streams so the stack never blocks on a full pipe.
    for mut stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    Running {
        child,
        output,
        env_file,
        group,
    }
}

fn temp_env_file() -> PathBuf {
    std::env::temp_dir()
        .join(format!("closeflow-aws-local-{}", uuid::Uuid::new_v4().simple()))
        .join("aws-local.env")
}

/// `KEY='value'` lines as the binary writes them.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').replace(r"'\''", "'")))
        .collect()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    common::call(http, TOKEN, method, url, key, body).await
}

/// Registers `id` and closes it; returns the close request id.
async fn open_and_close(http: &reqwest::Client, base: &str, id: &str, symbol: &str) -> String {
    let body = format!(r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":"5"}}"#);
    let (s, r) = call(
        http,
        reqwest::Method::PUT,
        format!("{base}/positions/{id}"),
        None,
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/positions/{id}/close"),
        Some("k-1"),
        None,
    )
    .await;
    assert_eq!(s, 201, "{r}");
    r["close_request_id"].as_str().expect("close_request_id").to_string()
}

/// Polls the close request until `done` holds for it.
async fn wait_close_request(http: &reqwest::Client, base: &str, crid: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, cr) = call(
            http,
            reqwest::Method::GET,
            format!("{base}/close-requests/{crid}"),
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "{cr}");
        if done(&cr) {
            return cr;
        }
        assert!(Instant::now() < deadline, "close request never got there: {cr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("port in url")
}

fn refuses_connections(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// The events the stack published, from its events tap queue: (detail type, position id).
async fn tapped_events(env: &HashMap<String, String>) -> Vec<(String, String)> {
    let creds = aws_sdk_sqs::config::Credentials::new(
        &env["AWS_ACCESS_KEY_ID"],
        &env["AWS_SECRET_ACCESS_KEY"],
        None,
        None,
        "test",
    );
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .endpoint_url(&env["AWS_ENDPOINT_URL"])
        .region(aws_sdk_sqs::config::Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(creds)
        .build();
    let sqs = aws_sdk_sqs::Client::from_conf(conf);
    let mut seen = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&env["EVENTS_TAP_URL"])
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive from the events tap");
        if out.messages().is_empty() {
            return seen;
        }
        for m in out.messages() {
            let v: Value = serde_json::from_str(m.body().unwrap_or("{}")).expect("event json");
            seen.push((
                v["detail-type"].as_str().unwrap_or_default().to_string(),
                v["detail"]["position_id"].as_str().unwrap_or_default().to_string(),
            ));
            sqs.delete_message()
                .queue_url(&env["EVENTS_TAP_URL"])
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// Runs `closeflow-invoke` the way `make invoke` does while the stack runs: with the env
/// file sourced into its environment.
fn invoke_against(env_file: &Path, function: &str, event: &str) -> Value {
    let out = Command::new("sh")
        .args([
            "-c",
            r#"set -a; . "$1"; set +a; exec "$2" "$3" "$4""#,
            "sh",
            env_file.to_str().unwrap(),
            env!("CARGO_BIN_EXE_closeflow-invoke"),
            function,
            event,
        ])
        .env_remove("TABLE_NAME")
        .env_remove("AWS_ENDPOINT_URL")
        .current_dir(ROOT)
        .output()
        .expect("closeflow-invoke");
    assert!(
        out.status.success(),
        "invoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("invoke prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_aws_local_closes_a_position_end_to_end_on_its_own_moto_and_ctrl_c_stops_it_all() {
    let mut cmd = Command::new("bash");
    cmd.arg("infra/run-aws-local.sh")
        .env("CLOSEFLOW_AWS_LOCAL_BIN", BIN)
        // No emulator given: the script must start (and stop) its own moto.
        .env_remove("AWS_ENDPOINT_URL");
    let mut stack = spawn(cmd, temp_env_file(), true);
    let env = stack.wait_ready();
    let base = env["CLOSEFLOW_URL"].clone();
    assert!(env["TABLE_NAME"].ends_with("-closes"), "{env:?}");
    assert!(env["QUEUE_URL"].ends_with("-orders.fifo"), "{env:?}");
    let moto_port = port_of(&env["AWS_ENDPOINT_URL"]);

    // A close through API → table → stream → relay → SQS FIFO → submitter → simulated
    // broker → signed webhook → table.
    let http = reqwest::Client::new();
    let crid = open_and_close(&http, &base, "aws-e2e-1", "AAPL").await;
    let cr = wait_close_request(&http, &base, &crid, |cr| cr["status"] == "completed").await;
    assert_eq!(cr["filled_qty"], "5", "{cr}");
    assert_eq!(cr["orders"].as_array().map(Vec::len), Some(1), "{cr}");
    let (s, position) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/positions/aws-e2e-1"),
        None,
        None,
    )
    .await;
    assert_eq!((s, &position["status"]), (200, &Value::from("closed")), "{position}");

    // The event publisher put the state changes on the bus.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    loop {
        events.extend(tapped_events(&env).await);
        let has = |t: &str| events.iter().any(|(dt, p)| dt == t && p == "aws-e2e-1");
        if has("PositionClosing") && has("PositionClosed") {
            break;
        }
        assert!(Instant::now() < deadline, "events on the bus: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `make invoke` finds the same table with no setup: what it writes, the stack serves.
    let out = invoke_against(&stack.env_file, "http-api", "events/http-api-put-position.json");
    assert_eq!(out["statusCode"], 201, "{out}");
    let (s, pos) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/positions/pos-1"),
        None,
        None,
    )
    .await;
    assert_eq!((s, &pos["symbol"]), (200, &Value::from("AAPL")), "{pos}");

    // Ctrl-C: the stack, its env file and the moto server it started are all gone.
    stack.signal("-INT");
    let status = stack.wait_exit();
    assert!(status.success(), "{status}:\n{}", stack.output());
    assert!(!stack.env_file.exists(), "the env file outlived the stack");
    assert!(refuses_connections(port_of(&base)), "the API still answers");
    assert!(refuses_connections(moto_port), "moto outlived the stack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_prefix_finds_its_resources_and_data_and_places_no_second_order() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "needs AWS_ENDPOINT_URL (a moto server); run with `make test`"
    );
    let prefix = format!("cf-t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let env_file = temp_env_file();
    let start = || {
        let mut cmd = Command::new(BIN);
        cmd.env("CLOSEFLOW_PREFIX", &prefix);
        spawn(cmd, env_file.clone(), false)
    };

    let http = reqwest::Client::new();
    let mut first = start();
    let env = first.wait_ready();
    assert_eq!(env["TABLE_NAME"], format!("{prefix}-closes"));
    // Held at the broker: in flight across the restart.
    let crid = open_and_close(&http, &env["CLOSEFLOW_URL"], "aws-restart-1", "HOLD").await;
    let before = wait_close_request(&http, &env["CLOSEFLOW_URL"], &crid, |cr| cr["status"] == "submitted").await;
    first.signal("-TERM");
    assert!(first.wait_exit().success(), "{}", first.output());
    assert!(!env_file.exists());

    let mut second = start();
    let env2 = second.wait_ready();
    assert_eq!(
        (&env2["TABLE_NAME"], &env2["QUEUE_URL"]),
        (&env["TABLE_NAME"], &env["QUEUE_URL"])
    );
    let base = env2["CLOSEFLOW_URL"].clone();
    // The new stack reads the table's stream from its start again: give the replay time to
    // reach the submitter, which must recognise the attempt as already placed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = wait_close_request(&http, &base, &crid, |cr| cr["status"] == "submitted").await;
    assert_eq!(after["orders"], before["orders"], "no second order after the restart");

    // The broker reports the fill through the HTTP webhook route: the close completes.
    let order = &after["orders"][0];
    let body = serde_json::json!({
        "client_order_id": order["client_order_id"], "broker_order_id": "b-restart-1",
        "status": "filled", "filled_qty": "5", "seq": 1, "updated_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string();
    let sig = closeflow_pipeline::webhook::sign(SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    let resp = http
        .post(format!("{base}/webhooks/broker"))
        .header("x-closeflow-signature", sig)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    let (_, position) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/positions/aws-restart-1"),
        None,
        None,
    )
    .await;
    assert_eq!(position["status"], "closed", "{position}");
    second.signal("-TERM");
    assert!(second.wait_exit().success(), "{}", second.output());
    let _ = std::fs::remove_dir_all(env_file.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_table_of_another_shape_is_refused_with_a_clear_error() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "needs AWS_ENDPOINT_URL (a moto server); run with `make test`"
    );
    let prefix = format!("cf-t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // As an older version might have left it: no attention index.
    let mut old = closeflow_store::dynamo::table::TableSpec::required();
    old.indexes.clear();
    old.string_attributes.retain(|a| a == "pk" || a == "sk");
    let client = closeflow_store::DynamoStore::client_from_env(None).await;
    closeflow_store::dynamo::table::create_table(&client, &format!("{prefix}-closes"), &old)
        .await
        .expect("create the old table");

    let mut cmd = Command::new(BIN);
    cmd.env("CLOSEFLOW_PREFIX", &prefix);
    let mut stack = spawn(cmd, temp_env_file(), false);
    let status = stack.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", stack.output());
    let out = stack.output();
    assert!(
        out.contains(&format!("table {prefix}-closes exists with another shape")),
        "{out}"
    );
    assert!(!stack.env_file.exists());
}
