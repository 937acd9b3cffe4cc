//! The OpenAPI document against the router: every route served is documented (and nothing
//! else), every documented route is really served, and the document's own rules hold.
//! (Examples are checked against the handlers in `closeflow-embedded`'s `openapi_examples`,
//! which can drive the pipeline.)

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use closeflow_api::openapi::{document, ERROR_CODES};
use closeflow_api::{router_for, served_routes, AppState, Routes};
use closeflow_store::MemoryStore;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn doc() -> Value {
    serde_json::to_value(document()).unwrap()
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let served: BTreeSet<(String, String)> = served_routes(Routes::ALL)
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented_routes(&doc());
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes served but not in the OpenAPI document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(extra.is_empty(), "routes documented but not served: {extra:?}");
}

/// `served_routes` is what the router answers: each route reaches a handler (no
/// `route_not_found` / `method_not_allowed`), for each router the Lambdas serve.
#[tokio::test]
async fn the_route_list_is_what_the_router_serves() {
    for routes in [Routes::ALL, Routes::CLOSE_API, Routes::BROKER_WEBHOOK] {
        let app = router_for(AppState::new(Arc::new(MemoryStore::new())), routes);
        for (method, path) in served_routes(routes) {
            let concrete = path
                .replace("{position_id}", "pos-1")
                .replace("{close_request_id}", "0b9d5d8a-9c33-8e61-8000-000000000000");
            let req = Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            assert!(
                !matches!(code.as_deref(), Some("route_not_found" | "method_not_allowed")),
                "{method} {path} on {routes:?}: {status} {code:?}"
            );
        }
        // And a route outside the list is not served.
        let req = Request::builder().uri("/no-such-route").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::NOT_FOUND);
    }
    // The Lambda routers serve only their own routes.
    assert!(!served_routes(Routes::CLOSE_API).contains(&(Method::POST, "/webhooks/broker")));
    assert_eq!(
        served_routes(Routes::BROKER_WEBHOOK),
        vec![(Method::POST, "/webhooks/broker")]
    );
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_served_without_credentials() {
    let app = router_for(AppState::new(Arc::new(MemoryStore::new())), Routes::ALL);
    let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(get("/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served, doc());
    assert_eq!(served["openapi"], "3.1.0");

    let resp = app.clone().oneshot(get("/docs")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/docs/");
    let resp = app.clone().oneshot(get("/docs/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // Assets come from the binary, never from a CDN.
    assert!(
        !page.contains("https://"),
        "the page loads something from the network: {page}"
    );
    let resp = app.clone().oneshot(get("/docs/swagger-initializer.js")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let init = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    let resp = app.clone().oneshot(get("/docs/swagger-ui-bundle.js")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Every `error` value the document lists is a known code, every operation lists the
/// headers and security the handlers read, and decimals are strings.
#[test]
fn the_document_names_codes_headers_and_security() {
    let doc = doc();
    let known: BTreeSet<&str> = ERROR_CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(known.len(), ERROR_CODES.len(), "each code is described once");
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let schema = &resp["content"]["application/json"]["schema"];
                if let Some(all) = schema["allOf"].as_array() {
                    assert_eq!(all[0]["$ref"], "#/components/schemas/Error", "{method} {path} {status}");
                    for code in all[1]["properties"]["error"]["enum"].as_array().unwrap() {
                        let code = code.as_str().unwrap();
                        assert!(known.contains(code), "{method} {path} {status}: unknown code {code}");
                        listed.insert(code);
                    }
                }
            }
        }
    }
    // Every code the service has is answered somewhere.
    assert_eq!(listed, known);

    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let close = op("/positions/{position_id}/close", "post");
    let headers: Vec<_> = close["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["required"].clone()))
        .collect();
    assert_eq!(headers, vec![("Idempotency-Key".to_string(), Value::Bool(true))]);
    for (path, method) in [
        ("/positions/{position_id}", "put"),
        ("/positions/{position_id}", "get"),
        ("/positions/{position_id}/close", "post"),
        ("/close-requests/{close_request_id}", "get"),
    ] {
        assert_eq!(
            op(path, method)["security"],
            serde_json::json!([{"bearerAuth": []}]),
            "{method} {path}"
        );
    }
    assert_eq!(
        op("/webhooks/broker", "post")["security"],
        serde_json::json!([{"webhookSignature": []}])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["webhookSignature"]["in"], "header");
    assert_eq!(schemes["webhookSignature"]["name"], "X-Closeflow-Signature");
    assert_eq!(op("/openapi.json", "get")["security"], serde_json::json!([{}]));

    // Decimals in answers are strings.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Decimal"]["type"], "string");
    for (schema, field) in [
        ("Position", "quantity"),
        ("CloseRequest", "remaining_qty"),
        ("Order", "qty"),
        ("CloseAccepted", "target_qty"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][field]["$ref"], "#/components/schemas/Decimal",
            "{schema}.{field}"
        );
    }
}

/// Links make schemathesis (and people) walk the real flow: register, close, poll.
#[test]
fn links_walk_register_close_poll() {
    let doc = doc();
    let put = &doc["paths"]["/positions/{position_id}"]["put"]["responses"]["201"]["links"];
    assert_eq!(put["closePosition"]["operationId"], "closePosition");
    assert_eq!(
        put["closePosition"]["parameters"]["position_id"],
        "$request.path.position_id"
    );
    let close = &doc["paths"]["/positions/{position_id}/close"]["post"]["responses"]["201"]["links"];
    assert_eq!(close["getCloseRequest"]["operationId"], "getCloseRequest");
    assert_eq!(
        close["getCloseRequest"]["parameters"]["close_request_id"],
        "$response.body#/close_request_id"
    );
    let ids: BTreeSet<_> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    for target in ["closePosition", "getCloseRequest", "getPosition"] {
        assert!(ids.contains(target), "{target}");
    }
}

/// The documented webhook body is the one the webhook reads: every documented field is
/// accepted, the required ones are required, and anything else is refused.
#[test]
fn the_webhook_body_schema_matches_the_parser() {
    use closeflow_pipeline::webhook::parse_body;
    let doc = doc();
    let schema = &doc["components"]["schemas"]["BrokerUpdate"];
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let full = serde_json::json!({
        "client_order_id": "0b9d5d8a-9c33-8e61-8000-000000000000-1", "broker_order_id": "b-1", "status": "filled",
        "filled_qty": "10", "filled_avg_price": "187.5", "seq": 7, "execution_id": "e-1",
        "updated_at": "2026-01-02T15:00:00Z"
    });
    let documented: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let sample: BTreeSet<&str> = full.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(documented, sample, "update this test's body with the documented fields");
    let now = chrono::Utc::now();
    let parse = |v: &Value| parse_body(&serde_json::to_vec(v).unwrap(), now);
    assert!(parse(&full).is_ok());
    for field in &documented {
        let mut without = full.clone();
        without.as_object_mut().unwrap().remove(*field);
        assert_eq!(parse(&without).is_ok(), !required.contains(field), "without {field}");
    }
    let mut extra = full.clone();
    extra["undocumented"] = Value::from(1);
    assert!(parse(&extra).is_err());
}

/// The decimal schemas' examples are read by the handlers' own decimal parser, and the
/// answers' decimals match the documented pattern.
#[test]
fn decimal_examples_parse_as_the_handlers_parse_them() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    for name in ["Decimal", "DecimalInput", "NonNegativeDecimalInput"] {
        let examples = schemas[name]["examples"].as_array().unwrap();
        assert!(!examples.is_empty(), "{name}");
        for ex in examples {
            let q: closeflow_domain::Quantity =
                serde_json::from_value(ex.clone()).unwrap_or_else(|e| panic!("{name} example {ex} is refused: {e}"));
            if name == "Decimal" {
                // Answered exactly as written.
                assert_eq!(serde_json::to_value(q).unwrap(), *ex);
            }
        }
    }
    let pattern = schemas["Decimal"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, closeflow_api::openapi::DECIMAL_OUT_PATTERN);
}

/// Every `error` code the API's sources can answer is in `ERROR_CODES` (and so, by the test
/// above, in the document), except the router's own answers for undocumented routes.
#[test]
fn every_error_code_in_the_sources_is_documented() {
    let sources = [
        include_str!("../src/handlers.rs"),
        include_str!("../src/error.rs"),
        include_str!("../src/auth.rs"),
        include_str!("../src/limits.rs"),
        include_str!("../src/extract.rs"),
        include_str!("../src/rate_limit.rs"),
    ];
    let known: BTreeSet<&str> = ERROR_CODES.iter().map(|(c, _)| *c).collect();
    let mut found = BTreeSet::new();
    for src in sources {
        // `ApiError::new(StatusCode::X, "code", …)` and `bad_request("code", …)`.
        let flat: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
        for marker in ["StatusCode::", "bad_request("] {
            for rest in flat.split(marker).skip(1) {
                let rest = if marker == "StatusCode::" {
                    match rest.split_once(", \"") {
                        Some((status, tail)) if status.chars().all(|c| c.is_ascii_uppercase() || c == '_') => tail,
                        _ => continue,
                    }
                } else {
                    match rest.strip_prefix('"') {
                        Some(tail) => tail,
                        None => continue,
                    }
                };
                if let Some((code, _)) = rest.split_once('"') {
                    if !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                        found.insert(code.to_string());
                    }
                }
            }
        }
    }
    found.insert("invalid_body".into()); // ApiError::invalid_body
    for code in ["route_not_found", "method_not_allowed"] {
        assert!(found.remove(code), "{code} no longer answered?");
    }
    assert!(found.len() >= 20, "the scan found too little: {found:?}");
    let missing: Vec<_> = found.iter().filter(|c| !known.contains(c.as_str())).collect();
    assert!(
        missing.is_empty(),
        "error codes answered but not documented: {missing:?}"
    );
}
