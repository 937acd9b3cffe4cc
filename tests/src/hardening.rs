//! Regression tests of issue 16 (hardening), black-box through the router, each run on
//! every backend by `hardening_tests!`.

use axum::http::Method;
use chrono::TimeDelta;
use closeflow_api::{webhook_router, AppState};
use closeflow_domain::{ClientOrderId, CloseRequestId};
use closeflow_pipeline::webhook::sign;
use closeflow_pipeline::ReconcileConfig;
use closeflow_store::MemoryStore;
use serde_json::json;

use crate::pipeline::{PipelineApp, SECRET};
use crate::{call, Backend, Reply, TestApp};

pub fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "expected {status} {code}, got {}", r.body);
    assert_eq!(r.body["error"], code, "{}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
}

fn position_body(quantity: &str) -> String {
    format!(r#"{{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":{quantity}}}"#)
}

/// Issue 16.7: one grammar for decimal strings and numbers; nothing is rounded.
pub async fn decimals_are_exact_or_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let refused = [
        r#""1_000""#,
        r#""+5""#,
        r#"".5""#,
        r#""1.""#,
        r#""00010""#,
        r#"" 5""#,
        r#""0.00000000000000000000000000005""#,
        "0.00000000000000000000000000005",
        r#""79228162514264337593543950336""#,
        "1e29",
    ];
    for q in refused {
        let r = app.put_position("pos-dec", &position_body(q)).await;
        assert_error(&r, 400, "invalid_body");
    }
    assert_error(&app.get("/positions/pos-dec").await, 404, "position_not_found");
    // Strings and numbers take the same texts, exactly.
    for (q, stored) in [
        (r#""1e-28""#, "0.0000000000000000000000000001"),
        ("1e-28", "0.0000000000000000000000000001"),
        (r#""2.50""#, "2.5"),
        ("-0.5E1", "-5"),
    ] {
        let r = app.put_position("pos-dec", &position_body(q)).await;
        assert!(r.status == 200 || r.status == 201, "{q}: {}", r.body);
        assert_eq!(r.body["quantity"], stored, "{q}");
    }
}

/// Issue 16.7: duplicate JSON keys are refused in every body; nothing is written.
pub async fn duplicate_keys_are_refused_in_every_body(backend: Backend) {
    let app = TestApp::new(backend).await;
    let dup = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":1,"quantity":2}"#;
    assert_error(&app.put_position("pos-dup", dup).await, 400, "invalid_body");
    assert_error(&app.get("/positions/pos-dup").await, 404, "position_not_found");
    app.open_position("pos-dup", "3").await;
    for body in [r#"{"reason":"a","reason":"b"}"#, r#"{"reason":"a","reason":"a"}"#] {
        let r = app.close_with("pos-dup", "k-dup", Some(body)).await;
        assert_error(&r, 400, "invalid_body");
    }
    assert!(app.stored_idempotency_keys("pos-dup").await.is_empty());
    assert_eq!(app.get("/positions/pos-dup").await.body["status"], "open");
}

/// Issue 16.6: what axum and hyper answered as text/plain (or empty) is JSON now.
pub async fn oversized_and_undecodable_requests_answer_json_errors(backend: Backend) {
    let app = TestApp::new(backend).await;
    app.open_position("pos-big", "2").await;
    let before = app.get("/positions/pos-big").await.body;
    let huge = format!(
        r#"{{"reason":"{}"}}"#,
        "x".repeat(closeflow_api::limits::MAX_BODY_BYTES)
    );
    assert_error(
        &app.close_with("pos-big", "k", Some(&huge)).await,
        413,
        "body_too_large",
    );
    assert_error(&app.put_position("pos-big", &huge).await, 413, "body_too_large");
    for path in ["/positions/%FF", "/positions/%C3%28/close", "/close-requests/%E2%82"] {
        let method = if path.ends_with("close") {
            Method::POST
        } else {
            Method::GET
        };
        let r = app.call(method, path, &[("idempotency-key", "k")], None).await;
        assert_error(&r, 400, "invalid_path");
    }
    let names: Vec<String> = (0..=closeflow_api::limits::MAX_HEADERS)
        .map(|i| format!("x-filler-{i}"))
        .collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_error(
        &app.call(Method::GET, "/positions/pos-big", &many, None).await,
        431,
        "headers_too_large",
    );
    let long = "v".repeat(closeflow_api::limits::MAX_HEADER_BYTES);
    let r = app
        .call(
            Method::POST,
            "/positions/pos-big/close",
            &[("idempotency-key", "k"), ("x-long", &long)],
            None,
        )
        .await;
    assert_error(&r, 431, "headers_too_large");
    assert_eq!(app.get("/positions/pos-big").await.body, before);
    assert!(app.stored_idempotency_keys("pos-big").await.is_empty());
}

/// Issue 8.6a: a well-formed UUID that names no close request is 404, whatever its version.
pub async fn any_well_formed_uuid_without_a_close_request_is_404(backend: Backend) {
    let app = TestApp::new(backend).await;
    for id in [
        "0b6a3f3e-9a7c-4d5e-8f00-1234567890ab",
        "00000000-0000-0000-0000-000000000000",
        "0B6A3F3E9A7C4D5E8F001234567890AB",
    ] {
        assert_error(
            &app.get(&format!("/close-requests/{id}")).await,
            404,
            "close_request_not_found",
        );
    }
    assert_error(
        &app.get("/close-requests/not-a-uuid").await,
        400,
        "invalid_close_request_id",
    );
}

/// Issue 16.3: the close API's router has no webhook route, and a webhook router without
/// a secret refuses everything, even a body "signed" with the empty key.
pub async fn the_webhook_is_served_only_by_its_own_router_and_never_without_a_secret(backend: Backend) {
    let app = TestApp::new(backend).await;
    let body = r#"{"client_order_id":"x-1","status":"filled","filled_qty":"1"}"#;
    let t = closeflow_api::Clock::now(app.clock.as_ref()).timestamp();
    let sig = sign(b"", t, body.as_bytes());
    let r = app
        .call(
            Method::POST,
            "/webhooks/broker",
            &[("x-closeflow-signature", &sig)],
            Some(body),
        )
        .await;
    assert_error(&r, 404, "route_not_found");

    // AppState::new has no secret, as the http-api function had.
    let mut state = AppState::new(std::sync::Arc::new(MemoryStore::new()));
    state.clock = app.clock.clone();
    let webhook = webhook_router(state);
    let r = call(
        &webhook,
        Method::POST,
        "/webhooks/broker",
        &[("x-closeflow-signature", &sig)],
        Some(body),
    )
    .await;
    assert_error(&r, 401, "invalid_signature");
    // ... and serves nothing but the webhook.
    assert_error(
        &call(&webhook, Method::GET, "/positions/p", &[], None).await,
        404,
        "route_not_found",
    );
}

fn coid(cr: &str, attempt: u32) -> String {
    ClientOrderId::new(CloseRequestId::parse(cr).unwrap(), attempt).to_string()
}

/// Issue 16.2: 1,000 filled on a 10-unit order, or a fill beyond the decimal range on a
/// retry attempt (which once aborted the process): 400 invalid_fill, nothing written.
pub async fn an_over_fill_is_refused_and_changes_nothing(backend: Backend) {
    let app = PipelineApp::new(backend, "NVDA=hold,MSFT=partial:3").await;
    let cr = app.open_and_close("p-over", "NVDA", "10").await;
    app.driver.pump().await;
    let before = app.aggregate("p-over").await;
    for filled in ["1000", "10.000000001", "79228162514264337593543950335"] {
        for status in ["partially_filled", "filled"] {
            let body = json!({"client_order_id": coid(&cr, 1), "status": status, "filled_qty": filled, "seq": 5});
            assert_error(&app.webhook(&body.to_string()).await, 400, "invalid_fill");
        }
    }
    assert_eq!(app.aggregate("p-over").await, before, "nothing written");
    let ok = json!({"client_order_id": coid(&cr, 1), "status": "filled", "filled_qty": "10", "seq": 6});
    assert_eq!(app.webhook(&ok.to_string()).await.body["result"], "applied");
    assert_eq!(app.close_request(&cr).await.body["remaining_qty"], "0");

    // A retry attempt: 3 of 10 filled, attempt 2 asked for the remaining 7.
    let cr = app.open_and_close("p-retry-over", "MSFT", "10").await;
    app.driver.pump().await;
    app.clock.advance(TimeDelta::minutes(5));
    app.reconcile(&ReconcileConfig::default()).await;
    assert_eq!(app.close_request(&cr).await.body["status"], "pending");
    let before = app.aggregate("p-retry-over").await;
    let huge =
        json!({"client_order_id": coid(&cr, 2), "status": "filled", "filled_qty": "79228162514264337593543950335"});
    assert_error(&app.webhook(&huge.to_string()).await, 400, "invalid_fill");
    assert_eq!(app.aggregate("p-retry-over").await, before, "nothing written");
}

/// Issue 8.6b: an update for an order closeflow does not know is 202 even without the
/// optional fields.
pub async fn an_unknown_order_without_optional_fields_is_202(backend: Backend) {
    let app = PipelineApp::new(backend, "").await;
    let stranger = CloseRequestId::new(&closeflow_domain::PositionId::parse("nobody").unwrap(), [4; 16]);
    for id in ["someone-elses-order".to_string(), format!("{stranger}-1")] {
        let body = json!({"client_order_id": id, "status": "filled", "filled_qty": "1"});
        let r = app.webhook(&body.to_string()).await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.body["result"], "unknown_order");
    }
}

/// Issue 16.1 and 16.5: signature headers with many entries, or timestamps anywhere
/// outside the window (including the ends of i64), are 401 and write nothing.
pub async fn abusive_signature_headers_are_refused_cheaply(backend: Backend) {
    let app = PipelineApp::new(backend, "NVDA=hold").await;
    let cr = app.open_and_close("p-sig", "NVDA", "10").await;
    app.driver.pump().await;
    let before = app.aggregate("p-sig").await;
    let body = json!({"client_order_id": coid(&cr, 1), "status": "filled", "filled_qty": "10"}).to_string();
    let now = closeflow_api::Clock::now(app.clock.as_ref()).timestamp();
    let valid = sign(SECRET, now, body.as_bytes());
    let v1 = &valid[valid.find("v1=").unwrap()..];
    let app = &app;
    let post = |sig: String| {
        let body = body.clone();
        async move {
            app.call(
                Method::POST,
                "/webhooks/broker",
                &[("x-closeflow-signature", &sig)],
                Some(&body),
            )
            .await
        }
    };
    // The attack: the valid entry among many. 1,000 entries no longer reach the webhook
    // (the header block is too large); a few more than allowed are refused before any MAC.
    let many = |n: usize| format!("t={now}{}", format!(",{v1}").repeat(n));
    assert_error(&post(many(1_000)).await, 431, "headers_too_large");
    for n in [closeflow_pipeline::webhook::MAX_SIGNATURES + 1, 20] {
        assert_error(&post(many(n)).await, 401, "invalid_signature");
    }
    for t in [i64::MIN, i64::MAX, now - 301, now + 301] {
        let sig = sign(SECRET, t, body.as_bytes());
        assert_error(&post(sig).await, 401, "invalid_signature");
    }
    assert_eq!(app.aggregate("p-sig").await, before);
    // A large (but allowed) body with a valid signature is verified off the async workers.
    let padded = format!("{}{}", body, " ".repeat(40_000));
    let sig = sign(SECRET, now, padded.as_bytes());
    let r = app
        .call(
            Method::POST,
            "/webhooks/broker",
            &[("x-closeflow-signature", &sig)],
            Some(&padded),
        )
        .await;
    assert_eq!(r.body["result"], "applied", "{}", r.body);
}

/// Generates one `#[tokio::test]` per hardening scenario for a backend.
#[macro_export]
macro_rules! hardening_tests {
    ($backend:expr) => {
        $crate::hardening_tests!(@each $backend;
            decimals_are_exact_or_refused,
            duplicate_keys_are_refused_in_every_body,
            oversized_and_undecodable_requests_answer_json_errors,
            any_well_formed_uuid_without_a_close_request_is_404,
            the_webhook_is_served_only_by_its_own_router_and_never_without_a_secret,
            an_over_fill_is_refused_and_changes_nothing,
            an_unknown_order_without_optional_fields_is_202,
            abusive_signature_headers_are_refused_cheaply,
            registrations_over_the_account_quota_answer_409_and_store_nothing,
        );
    };
    (@each $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::hardening::$name($backend).await;
            }
        )*
    };
}

/// Issue 16.9: an account holds at most `MAX_POSITIONS_PER_ACCOUNT` live positions.
pub async fn registrations_over_the_account_quota_answer_409_and_store_nothing(backend: Backend) {
    let config = closeflow_api::ApiConfig {
        max_positions_per_account: 2,
        ..Default::default()
    };
    let app = TestApp::with_config(backend, config).await;
    app.open_position("quota-1", "1").await;
    app.open_position("quota-2", "1").await;
    let body = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":1}"#;
    let r = app.put_position("quota-3", body).await;
    assert_eq!(
        (r.status, r.str("error")),
        (409, "quota_exceeded".to_string()),
        "{}",
        r.body
    );
    assert_eq!(r.body["limit"], 2);
    assert_eq!(app.get("/positions/quota-3").await.status, 404, "nothing stored");
    // Another account has its own allowance.
    let other = r#"{"account_id":"acct-2","symbol":"AAPL","asset_type":"equity","quantity":1}"#;
    assert_eq!(app.put_position("quota-4", other).await.status, 201);
}

/// Issue 16.9: per-caller rate limiting of the embedded stack.
pub async fn callers_over_their_rate_get_429_with_retry_after() {
    use closeflow_api::rate_limit::{rate_limited, RateLimit};
    let app = TestApp::new(Backend::Embedded).await;
    let limit = RateLimit {
        per_second: 1,
        burst: 2,
    };
    let limited = rate_limited(app.router.clone(), limit, &crate::test_auth());
    let get = |token: String| {
        let limited = limited.clone();
        async move {
            let auth = format!("Bearer {token}");
            call(&limited, Method::GET, "/positions/p", &[("authorization", &auth)], None).await
        }
    };
    for _ in 0..2 {
        assert_error(&get(crate::TOKEN_ALL.into()).await, 404, "position_not_found");
    }
    let r = get(crate::TOKEN_ALL.into()).await;
    assert_error(&r, 429, "rate_limited");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    // Another caller has its own allowance.
    assert_error(&get(crate::TOKEN_ACCT2.into()).await, 404, "position_not_found");
    // Unknown tokens share their peer's allowance instead of minting fresh ones.
    assert_error(&get("forged-token-1".into()).await, 401, "unauthorized");
    assert_error(&get("forged-token-2".into()).await, 401, "unauthorized");
    assert_error(&get("forged-token-3".into()).await, 429, "rate_limited");
    // The routers test stacks use are never throttled.
    for _ in 0..20 {
        assert_error(&app.get("/positions/p").await, 404, "position_not_found");
    }
}

/// Sends raw bytes to `addr` and returns the whole answer (the request asks to close).
async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    // hyper may close while a refused request is still being written: read what came.
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 16.6 on a real socket: header blocks over the router's limits get its JSON 431;
/// only blocks beyond hyper's own buffer get hyper's empty 431.
pub async fn the_embedded_server_answers_oversized_headers_with_json() {
    let app = TestApp::new(Backend::Embedded).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(closeflow_api::server::serve(listener, app.router.clone(), async {
        let _ = stopped.await;
    }));
    let head = |extra: &str| {
        format!(
            "GET /positions/p HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n{extra}\r\n",
            crate::TOKEN_ALL
        )
    };
    let ok = raw_http(addr, &head("")).await;
    assert!(ok.starts_with("HTTP/1.1 404"), "{ok}");
    assert!(ok.contains("position_not_found"), "{ok}");
    let many: String = (0..150).map(|i| format!("x-filler-{i}: 1\r\n")).collect();
    let long = format!("x-long: {}\r\n", "v".repeat(20 * 1024));
    for extra in [many, long] {
        let r = raw_http(addr, &head(&extra)).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
        assert!(r.to_ascii_lowercase().contains("content-type: application/json"), "{r}");
        assert!(r.contains(r#""error":"headers_too_large""#), "{r}");
    }
    let beyond = format!(
        "x-long: {}\r\n",
        "v".repeat(closeflow_api::server::MAX_HEAD_BYTES + 1024)
    );
    let r = raw_http(addr, &head(&beyond)).await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 431"), "hyper's own answer: {r}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Tests that need no second backend: the embedded stack's own server and limiter, and the
/// request fuzzer (whose "nothing written" oracle is the memory store's change feed).
#[macro_export]
macro_rules! hardening_embedded_tests {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn callers_over_their_rate_get_429_with_retry_after() {
            $crate::hardening::callers_over_their_rate_get_429_with_retry_after().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_embedded_server_answers_oversized_headers_with_json() {
            $crate::hardening::the_embedded_server_answers_oversized_headers_with_json().await;
        }

        #[test]
        fn fuzzed_requests_get_answers_or_4xx_json_errors_that_change_nothing() {
            $crate::fuzz::fuzz_router();
        }
    };
}
