//! HTTP helpers shared by the tests that drive a running `closeflow` binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "restart-test-token";

#[allow(dead_code)] // each test binary reads the fields it needs
pub struct Node {
    pub child: Child,
    pub base: String,
    /// The ready line (names the store and the broker).
    pub banner: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts the `closeflow` binary (serving, on a free port, with `TOKEN` for every account)
/// on the SQLite file `db` and waits for its ready line (which names the store).
#[allow(dead_code)] // not every test binary that includes this module starts one
pub fn start_with(db: &str, vars: &[(&str, &str)]) -> Node {
    // A free port can be taken by another test between finding it and binding it: a
    // start that fails for that reason is tried again on another port.
    let mut last = String::new();
    for _ in 0..3 {
        match try_start(db, vars) {
            Ok(node) => return node,
            Err(why) if why.contains("in use") => last = why,
            Err(why) => panic!("closeflow exited before it was ready: {why}"),
        }
    }
    panic!("closeflow found no free port: {last}")
}

fn try_start(db: &str, vars: &[(&str, &str)]) -> Result<Node, String> {
    let port = free_port();
    let errors = std::env::temp_dir().join(format!("closeflow-stderr-{}.log", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closeflow"));
    cmd.env("PORT", port.to_string())
        .env("CLOSEFLOW_DB", db)
        .env("API_TOKENS", format!("{TOKEN}=*"))
        .env("WEBHOOK_SECRET", "restart-test-secret")
        .env("RUST_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).expect("a stderr file"))
        .spawn()
        .expect("start closeflow");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let banner = loop {
        assert!(Instant::now() < deadline, "closeflow did not become ready");
        match lines.next() {
            Some(Ok(line)) if line.contains("ready on") => break line,
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.wait();
                let why = std::fs::read_to_string(&errors).unwrap_or_default();
                let _ = std::fs::remove_file(&errors);
                return Err(why);
            }
        }
    };
    let _ = std::fs::remove_file(&errors);
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
        banner,
    })
}

/// One request as the bearer of `token`, with an optional Idempotency-Key and JSON body;
/// the status and the JSON answer (`Null` when the body is not JSON).
pub async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GETs `url` every 50 ms until `done` holds for the JSON answer, and returns it; panics
/// with the last answer after 20 s.
#[allow(dead_code)] // not every test binary that includes this module polls
pub async fn get_until(http: &reqwest::Client, token: &str, url: String, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, v) = call(http, token, reqwest::Method::GET, url.clone(), None, None).await;
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{url} never got there: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
