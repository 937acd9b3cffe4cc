//! HTTP helpers shared by the tests that drive a running `closeflow` binary.

use serde_json::Value;

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
