//! A bounded fuzzer of the whole router (close API and webhook): proptest generates
//! requests around the real grammar (ids, decimals, bodies, signatures) with mutations,
//! and every answer must be a success or a 4xx JSON error `{"error","message"}`, never a
//! 5xx or a panic; a refused request must write nothing (checked on the memory store's
//! change feed, which carries every write). `CLOSEFLOW_FUZZ_CASES` runs more cases.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use closeflow_api::{router_for, AppState, ManualClock, Routes};
use closeflow_pipeline::webhook::sign;
use closeflow_store::{ChangeLog, MemoryStore};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::ServiceExt;

use crate::pipeline::SECRET;
use crate::{start_time, test_auth, TOKEN_ACCT2, TOKEN_ALL};

const DEFAULT_CASES: u32 = 400;

#[derive(Debug, Clone)]
enum Signing {
    None,
    /// Signed over the body, `offset` seconds from now.
    Signed {
        offset: i64,
    },
    Garbage(String),
}

#[derive(Debug, Clone)]
struct FuzzRequest {
    method: Method,
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    signing: Signing,
    body: Option<Vec<u8>>,
}

/// Percent-encodes everything but unreserved characters, so any text fits in a path.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn segment(cr: String) -> BoxedStrategy<String> {
    prop_oneof![
        Just("pos-a".to_string()),
        Just("pos-b".to_string()),
        Just(cr),
        Just("0b6a3f3e-9a7c-4d5e-8f00-1234567890ab".to_string()),
        "[a-zA-Z0-9._:-]{1,12}",
        "(%[0-9A-F]{2}){1,3}",
        "\\PC{0,8}".prop_map(|s| encode(&s)),
    ]
    .boxed()
}

/// Decimal texts around the grammar's edges.
fn decimal() -> BoxedStrategy<String> {
    let text = prop_oneof![
        "-?[0-9]{1,3}(\\.[0-9]{1,3})?",
        "[-+]?[0-9_.]{0,6}([eE][-+]?[0-9]{0,3})?",
        "[0-9]{25,32}",
        "0\\.[0-9]{26,31}",
        "-?1[eE]-?[0-9]{1,3}",
    ];
    (text, any::<bool>())
        .prop_map(|(t, quoted)| if quoted { format!("\"{t}\"") } else { t })
        .boxed()
}

fn json_text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-zA-Z0-9 _-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("null".to_string()),
        Just("5".to_string()),
        Just("{}".to_string()),
    ]
    .boxed()
}

fn position_body() -> BoxedStrategy<String> {
    (
        prop_oneof![Just("acct-1"), Just("acct-2"), Just(""), Just("bad/acct")],
        prop_oneof![Just("AAPL"), Just(""), Just("BRK.B")],
        prop_oneof![Just("equity"), Just("option"), Just("crypto")],
        decimal(),
        proptest::option::of(decimal()),
        proptest::option::of(json_text()),
    )
        .prop_map(|(account, symbol, asset, qty, price, extra)| {
            let mut body =
                format!(r#"{{"account_id":"{account}","symbol":"{symbol}","asset_type":"{asset}","quantity":{qty}"#);
            if let Some(p) = price {
                body.push_str(&format!(r#","avg_entry_price":{p}"#));
            }
            if let Some(x) = extra {
                // A duplicate or an unknown field.
                let key = if x.len() % 2 == 0 { "quantity" } else { "qty" };
                body.push_str(&format!(r#","{key}":{x}"#));
            }
            body.push('}');
            body
        })
        .boxed()
}

fn close_body() -> BoxedStrategy<String> {
    prop_oneof![
        Just("{}".to_string()),
        json_text().prop_map(|r| format!(r#"{{"reason":{r}}}"#)),
        json_text().prop_map(|r| format!(r#"{{"reason":"a","reason":{r}}}"#)),
        decimal().prop_map(|q| format!(r#"{{"qty":{q}}}"#)),
    ]
    .boxed()
}

fn webhook_body(cr: String) -> BoxedStrategy<String> {
    (
        prop_oneof![
            Just(format!("{cr}-1")),
            Just(format!("{cr}-2")),
            Just(format!("{cr}-0")),
            "[a-z0-9-]{0,12}",
        ],
        prop_oneof![
            Just("new"),
            Just("accepted"),
            Just("partially_filled"),
            Just("filled"),
            Just("canceled"),
            Just("rejected"),
            Just("expired"),
            Just("done"),
        ],
        decimal(),
        proptest::option::of(0u64..20),
        proptest::option::of(prop_oneof![Just("2026-01-02T14:30:00Z".to_string()), "[0-9TZ:-]{0,12}"]),
        any::<bool>(),
    )
        .prop_map(|(id, status, filled, seq, at, dup)| {
            let mut body = format!(r#"{{"client_order_id":"{id}","status":"{status}","filled_qty":{filled}"#);
            if let Some(s) = seq {
                body.push_str(&format!(r#","seq":{s}"#));
            }
            if let Some(t) = at {
                body.push_str(&format!(r#","updated_at":"{t}""#));
            }
            if dup {
                body.push_str(r#","status":"filled""#);
            }
            body.push('}');
            body
        })
        .boxed()
}

fn body(cr: String) -> BoxedStrategy<Option<Vec<u8>>> {
    let limit = closeflow_api::limits::MAX_BODY_BYTES;
    let templates = prop_oneof![position_body(), close_body(), webhook_body(cr)];
    prop_oneof![
        3 => templates.clone().prop_map(|b| Some(b.into_bytes())),
        1 => (templates, any::<proptest::sample::Index>()).prop_map(|(b, cut)| {
            let bytes = b.into_bytes();
            let at = cut.index(bytes.len() + 1);
            Some(bytes[..at].to_vec())
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        1 => (limit - 2..limit + 2).prop_map(|n| Some(vec![b' '; n])),
        1 => Just(None),
    ]
    .boxed()
}

fn request(cr: String) -> BoxedStrategy<FuzzRequest> {
    let path = prop_oneof![
        segment(cr.clone()).prop_map(|s| format!("/positions/{s}")),
        segment(cr.clone()).prop_map(|s| format!("/positions/{s}/close")),
        segment(cr.clone()).prop_map(|s| format!("/close-requests/{s}")),
        Just("/webhooks/broker".to_string()),
        segment(cr.clone()).prop_map(|s| format!("/{s}")),
    ];
    (
        prop_oneof![
            Just(Method::GET),
            Just(Method::PUT),
            Just(Method::POST),
            Just(Method::DELETE),
            Just(Method::PATCH),
        ],
        path,
        prop_oneof![
            Just(Some(TOKEN_ALL.to_string())),
            Just(Some(TOKEN_ACCT2.to_string())),
            Just(None),
            "[ -~]{0,20}".prop_map(Some),
        ],
        proptest::option::of("[ -~]{0,12}"),
        prop_oneof![
            Just(Signing::None),
            (-400i64..400).prop_map(|offset| Signing::Signed { offset }),
            Just(Signing::Signed { offset: 0 }),
            "[ -~]{0,80}".prop_map(Signing::Garbage),
        ],
        body(cr),
    )
        .prop_map(
            |(method, path, authorization, idempotency_key, signing, body)| FuzzRequest {
                method,
                path,
                authorization,
                idempotency_key,
                signing,
                body,
            },
        )
        .boxed()
}

/// Forgets what was written so far: the next refusal must add nothing to the log.
async fn drain(log: &MemoryStore) {
    while let Some(last) = log.unacknowledged(1000).await.expect("log").last() {
        log.acknowledge(last.seq).await.expect("log");
    }
}

async fn check(router: &Router, changes: &MemoryStore, r: FuzzRequest) -> Result<(), TestCaseError> {
    let mut req = Request::builder().method(r.method.clone()).uri(&r.path);
    if let Some(a) = &r.authorization {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    if let Some(k) = &r.idempotency_key {
        req = req.header("idempotency-key", k.as_str());
    }
    let body = r.body.clone().unwrap_or_default();
    match &r.signing {
        Signing::None => {}
        Signing::Signed { offset } => {
            req = req.header(
                "x-closeflow-signature",
                sign(SECRET, start_time().timestamp() + offset, &body),
            );
        }
        Signing::Garbage(g) => req = req.header("x-closeflow-signature", g.as_str()),
    }
    let Ok(req) = req.body(Body::from(body)) else {
        // Not expressible as an HTTP request (e.g. a header value with a control byte).
        return Ok(());
    };
    let resp = router.clone().oneshot(req).await.expect("router is infallible");
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    prop_assert!(!status.is_server_error(), "{status} for {r:?}: {bytes:?}");
    if status.is_success() {
        drain(changes).await;
        return Ok(());
    }
    prop_assert!(status.is_client_error(), "{status} for {r:?}");
    prop_assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{} for {:?}",
        status,
        r
    );
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(v["error"].as_str().is_some_and(|c| !c.is_empty()), "{v} for {r:?}");
    prop_assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v} for {r:?}");
    prop_assert!(
        changes.unacknowledged(1).await.expect("log").is_empty(),
        "{status} {v} refused, yet something was written: {r:?}"
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        prop_assert!(false, "test routers are never rate limited");
    }
    Ok(())
}

/// Runs the fuzzer for `CLOSEFLOW_FUZZ_CASES` cases (default 400; a few seconds).
pub fn fuzz_router() {
    crate::init_test_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(MemoryStore::new());
    let changes = store.clone();
    let mut state = AppState::new(store);
    state.clock = Arc::new(ManualClock::new(start_time()));
    state.auth = test_auth();
    state.webhook_secret = Arc::new(SECRET.to_vec());
    let router = router_for(state, Routes::ALL);
    // Something to aim at: an open position, and a closing one with its close request.
    let cr = rt.block_on(async {
        let body = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":10}"#;
        for id in ["pos-a", "pos-b"] {
            let r = crate::call(&router, Method::PUT, &format!("/positions/{id}"), &[], Some(body)).await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        let r = crate::call(
            &router,
            Method::POST,
            "/positions/pos-b/close",
            &[("idempotency-key", "k")],
            None,
        )
        .await;
        r.str("close_request_id")
    });
    rt.block_on(drain(&changes));
    let cases = std::env::var("CLOSEFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Boxed strategies: unboxed, this many nested strategy types overflow a test thread's
    // stack in debug builds while generating.
    let outcome = runner.run(&request(cr), |r| rt.block_on(check(&router, &changes, r)));
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
