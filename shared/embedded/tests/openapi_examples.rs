//! Every example in the OpenAPI document, checked against the handlers: the request
//! examples are sent as they are (register, close, the broker's fill), and each documented
//! response example must be exactly what the embedded stack answered at that step (the
//! stack runs on a manual clock, so only close request ids differ and are masked).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::TimeZone;
use closeflow_api::auth::{parse_api_tokens, Auth};
use closeflow_api::{Clock, ManualClock};
use closeflow_embedded::{Stack, StackConfig, Storage};
use closeflow_pipeline::SimScenarios;
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &[u8] = b"examples-webhook-secret";
const TOKEN: &str = "token-acct-1";
const OTHER_TOKEN: &str = "token-acct-2";
/// The close request id the document's examples show.
const EXAMPLE_CLOSE_REQUEST_ID: &str = "0b9d5d8a-9c33-8e61-8000-000000000000";

struct Answer {
    operation: &'static str,
    status: StatusCode,
    body: Value,
}

struct Story {
    router: Router,
    answers: Vec<Answer>,
}

impl Story {
    async fn call(
        &mut self,
        operation: &'static str,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.answers.push(Answer {
            operation,
            status,
            body: body.clone(),
        });
        (status, body)
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Replaces every occurrence of `from` inside the strings of `v` with `to`.
fn mask(v: &Value, from: &str, to: &str) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace(from, to)),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask(x, from, to)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), mask(x, from, to))).collect()),
        other => other.clone(),
    }
}

/// (operation id, status, example) for every response example in the document.
fn response_examples(doc: &Value) -> Vec<(String, u16, Value)> {
    let mut out = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_string();
            for (status, resp) in op["responses"].as_object().unwrap() {
                let media = &resp["content"]["application/json"];
                if !media["example"].is_null() {
                    out.push((id.clone(), status.parse().unwrap(), media["example"].clone()));
                }
                if let Some(examples) = media["examples"].as_object() {
                    for ex in examples.values() {
                        out.push((id.clone(), status.parse().unwrap(), ex["value"].clone()));
                    }
                }
            }
        }
    }
    out
}

fn request_example(doc: &Value, path: &str, method: &str) -> Value {
    let ex = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["example"].clone();
    assert!(!ex.is_null(), "{method} {path} documents no request example");
    ex
}

fn parameter_example(doc: &Value, path: &str, method: &str, name: &str) -> String {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["example"].as_str())
        .unwrap_or_else(|| panic!("{method} {path}: no example for {name}"))
        .to_string()
}

#[tokio::test]
async fn every_documented_example_is_what_the_handlers_answer() {
    let doc = serde_json::to_value(closeflow_api::openapi::document()).unwrap();
    let start = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 15, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let tokens = parse_api_tokens(&format!("{TOKEN}=acct-1;{OTHER_TOKEN}=acct-2")).unwrap();
    let stack = Stack::new(StackConfig {
        storage: Storage::Memory,
        // The order stays open at the broker, so the documented webhook fills it.
        scenarios: SimScenarios::parse("AAPL=hold").unwrap(),
        webhook_secret: SECRET.to_vec(),
        clock: clock.clone(),
        auth: Auth::Tokens(Arc::new(tokens)),
        api: Default::default(),
        alpaca: None,
        audit_retention: closeflow_domain::Policy::default().audit_retention,
    })
    .unwrap();
    let mut s = Story {
        router: stack.router.clone(),
        answers: Vec::new(),
    };
    let auth = bearer(TOKEN);
    let json_ct = ("content-type", "application/json");

    // Register: the documented body, then the same again, then faults.
    let position_id = parameter_example(&doc, "/positions/{position_id}", "put", "position_id");
    let pos_uri = format!("/positions/{position_id}");
    let register = request_example(&doc, "/positions/{position_id}", "put");
    let register_bytes = serde_json::to_vec(&register).unwrap();
    let h = [("authorization", auth.as_str()), json_ct];
    assert_eq!(
        s.call("putPosition", "PUT", &pos_uri, &h, Some(register_bytes.clone()))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        s.call("putPosition", "PUT", &pos_uri, &h, Some(register_bytes.clone()))
            .await
            .0,
        StatusCode::OK
    );
    let mut bad = register.clone();
    bad["asset_type"] = json!("bond");
    let bad = serde_json::to_vec(&bad).unwrap();
    assert_eq!(
        s.call("putPosition", "PUT", &pos_uri, &h, Some(bad)).await.0,
        StatusCode::BAD_REQUEST
    );
    let (st, _) = s
        .call("putPosition", "PUT", &pos_uri, &[json_ct], Some(register_bytes.clone()))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let mut foreign = register.clone();
    foreign["account_id"] = json!("acct-2");
    let foreign = serde_json::to_vec(&foreign).unwrap();
    let (st, _) = s
        .call("putPosition", "PUT", "/positions/pos-2", &h, Some(foreign.clone()))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let other = bearer(OTHER_TOKEN);
    let (st, _) = s
        .call(
            "putPosition",
            "PUT",
            &pos_uri,
            &[("authorization", other.as_str()), json_ct],
            Some(foreign),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = s
        .call("getPosition", "GET", "/positions/no-such-position", &h, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // The listing, while the position is open.
    let (st, _) = s
        .call("listPositions", "GET", "/positions?account_id=acct-1", &h, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // The account, trading, with the one live position; resuming it changes nothing.
    let (st, _) = s.call("getAccount", "GET", "/accounts/acct-1", &h, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, resumed) = s
        .call("resumeAccount", "POST", "/accounts/acct-1/resume", &h, None)
        .await;
    assert_eq!(
        (st, resumed["trading_state"].as_str()),
        (StatusCode::OK, Some("active"))
    );

    // Close: the documented key and body.
    let close_path = "/positions/{position_id}/close";
    let key = parameter_example(&doc, close_path, "post", "Idempotency-Key");
    let close_body = serde_json::to_vec(&request_example(&doc, close_path, "post")).unwrap();
    let close_uri = format!("{pos_uri}/close");
    let (st, _) = s
        .call("closePosition", "POST", &close_uri, &h, Some(close_body.clone()))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let hk = [
        ("authorization", auth.as_str()),
        json_ct,
        ("idempotency-key", key.as_str()),
    ];
    let (st, _) = s
        .call(
            "closePosition",
            "POST",
            "/positions/no-such-position/close",
            &hk,
            Some(close_body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, created) = s
        .call("closePosition", "POST", &close_uri, &hk, Some(close_body.clone()))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let cr_id = created["close_request_id"].as_str().unwrap().to_string();
    assert_eq!(
        s.call("closePosition", "POST", &close_uri, &hk, Some(close_body.clone()))
            .await
            .0,
        StatusCode::OK
    );
    let (st, _) = s
        .call("closePosition", "POST", &close_uri, &hk, Some(b"{}".to_vec()))
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let hk2 = [
        ("authorization", auth.as_str()),
        json_ct,
        ("idempotency-key", "another-key"),
    ];
    let (st, _) = s
        .call("closePosition", "POST", &close_uri, &hk2, Some(close_body))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // The pipeline places the order; the broker's documented update fills it.
    stack.driver.pump().await;
    let mut update = request_example(&doc, "/webhooks/broker", "post");
    update["client_order_id"] = json!(format!("{cr_id}-1"));
    let update = serde_json::to_vec(&update).unwrap();
    let sig = closeflow_pipeline::webhook::sign(SECRET, clock.now().timestamp(), &update);
    let hs = [json_ct, ("x-closeflow-signature", sig.as_str())];
    let (st, _) = s
        .call("brokerWebhook", "POST", "/webhooks/broker", &hs, Some(update.clone()))
        .await;
    assert_eq!(st, StatusCode::OK);
    let unknown = br#"{"client_order_id":"not-ours-1","status":"filled","filled_qty":"1"}"#.to_vec();
    let sig = closeflow_pipeline::webhook::sign(SECRET, clock.now().timestamp(), &unknown);
    let hs = [json_ct, ("x-closeflow-signature", sig.as_str())];
    let (st, _) = s
        .call("brokerWebhook", "POST", "/webhooks/broker", &hs, Some(unknown))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _) = s
        .call("brokerWebhook", "POST", "/webhooks/broker", &[json_ct], Some(update))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Poll, and read the closed position.
    let (st, polled) = s
        .call("getCloseRequest", "GET", &format!("/close-requests/{cr_id}"), &h, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // The simulated broker's order ids are random.
    let broker_order_id = polled["orders"][0]["broker_order_id"].as_str().unwrap().to_string();
    let (st, _) = s
        .call(
            "getCloseRequest",
            "GET",
            &format!("/close-requests/{}", uuid::Uuid::nil()),
            &h,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(s.call("getPosition", "GET", &pos_uri, &h, None).await.0, StatusCode::OK);

    // A strategy whose leg is already closing: the documented refusal, nothing written.
    for (id, symbol, qty) in [
        ("ic-1-put-short", "AAPL260116P00170000", -1),
        ("ic-1-put-long", "AAPL260116P00160000", 1),
    ] {
        let body = json!({"account_id": "acct-1", "symbol": symbol, "asset_type": "option",
                          "quantity": qty, "strategy_id": "ic-1"});
        let (st, _) = s
            .call(
                "putPosition",
                "PUT",
                &format!("/positions/{id}"),
                &h,
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let hk3 = [
        ("authorization", auth.as_str()),
        json_ct,
        ("idempotency-key", "leg-first"),
    ];
    let (st, _) = s
        .call(
            "closePosition",
            "POST",
            "/positions/ic-1-put-short/close",
            &hk3,
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let strategy_body = serde_json::to_vec(&request_example(&doc, "/strategies/{strategy_id}/close", "post")).unwrap();
    let hk4 = [
        ("authorization", auth.as_str()),
        json_ct,
        ("idempotency-key", "strategy-1"),
    ];
    let (st, _) = s
        .call(
            "closeStrategy",
            "POST",
            "/strategies/ic-1/close",
            &hk4,
            Some(strategy_body),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Close everything matching the documented filters: a bad filter first, then the
    // documented body; the fan-out runs in the pipeline, and with nothing failed there is
    // nothing to retry.
    let all_uri = "/accounts/acct-1/close-all";
    let hk5 = [
        ("authorization", auth.as_str()),
        json_ct,
        ("idempotency-key", "close-all-1"),
    ];
    let (st, _) = s
        .call(
            "closeAll",
            "POST",
            all_uri,
            &hk5,
            Some(br#"{"asset_type":"bond"}"#.to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let all_body = serde_json::to_vec(&request_example(&doc, "/accounts/{account_id}/close-all", "post")).unwrap();
    let (st, bulk) = s.call("closeAll", "POST", all_uri, &hk5, Some(all_body)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{bulk}");
    let bulk_uri = format!("/bulk-closes/{}", bulk["bulk_close_id"].as_str().unwrap());
    stack.driver.pump().await;
    let (st, _) = s.call("getBulkClose", "GET", &bulk_uri, &h, None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .call(
            "retryFailedBulkCloseRows",
            "POST",
            &format!("{bulk_uri}/retry-failed"),
            &h,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // A liquidation is never started unconfirmed; a guard event is refused whole when its
    // scope is ambiguous. Neither changes anything.
    let (st, _) = s
        .call(
            "liquidateAccount",
            "POST",
            "/accounts/acct-1/liquidate",
            &hk5,
            Some(br#"{"confirm":"yes"}"#.to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let mut guard = request_example(&doc, "/guards/events", "post");
    guard["position_ids"] = json!(["pos-1"]);
    let (st, _) = s
        .call(
            "postGuardEvent",
            "POST",
            "/guards/events",
            &h,
            Some(serde_json::to_vec(&guard).unwrap()),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // The audit trail of what just happened (the driver derives it from the changes).
    stack.driver.pump().await;
    let (st, first) = s
        .call("getPositionAudit", "GET", &format!("{pos_uri}/audit?limit=1"), &h, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, _) = s
        .call("getPositionAudit", "GET", "/positions/no-such-position/audit", &h, None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, all) = s
        .call("getAccountAudit", "GET", "/accounts/acct-1/audit?limit=500", &h, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(all["entries"].as_array().unwrap().len() > 5, "{all}");
    let (st, _) = s
        .call("getAccountAudit", "GET", "/accounts/acct-2/audit", &h, None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Each answer's status is documented for its operation.
    let op_of = |id: &str| {
        doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|i| i.as_object().unwrap().values())
            .find(|op| op["operationId"] == id)
            .unwrap()
            .clone()
    };
    for a in &s.answers {
        let op = op_of(a.operation);
        assert!(
            !op["responses"][a.status.as_str()].is_null(),
            "{} answered {} which the document does not list: {}",
            a.operation,
            a.status,
            a.body
        );
    }

    // Each documented response example is exactly one of the answers.
    let examples = response_examples(&doc);
    assert!(examples.len() >= 15, "{} examples", examples.len());
    for (op, status, example) in examples {
        let candidates: Vec<Value> = s
            .answers
            .iter()
            .filter(|a| a.operation == op && a.status.as_u16() == status)
            .map(|a| {
                mask(
                    &mask(&a.body, &cr_id, EXAMPLE_CLOSE_REQUEST_ID),
                    &broker_order_id,
                    "sim-1",
                )
            })
            .collect();
        assert!(
            candidates.contains(&example),
            "the example of {op} {status} is not what the handlers answer.\n example: {example}\n answers: {}",
            serde_json::to_string_pretty(&candidates).unwrap()
        );
    }
}
