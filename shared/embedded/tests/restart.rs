//! The embedded stack as a durable single node: the real `closeflow` binary on a SQLite
//! file, killed with SIGKILL mid-close and started again.

mod common;

use serde_json::Value;

use common::{start_with, Node, TOKEN};

/// Starts the binary on `db` with a broker that never fills HOLD.
fn start(db: &str) -> Node {
    // Accepted at the broker and never filled: the close stays in flight.
    start_with(db, &[("SIM_BROKER_SCENARIOS", "HOLD=hold")])
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

#[tokio::test]
async fn a_close_in_flight_survives_kill_9_and_its_key_still_replays() {
    let db = std::env::temp_dir()
        .join(format!("closeflow-restart-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned();
    let http = reqwest::Client::new();
    let node = start(&db);
    assert!(
        node.banner.contains("SQLite store at") && node.banner.contains(&db),
        "{}",
        node.banner
    );

    let (s, _) = call(
        &http,
        reqwest::Method::PUT,
        format!("{}/positions/pos-r1", node.base),
        None,
        Some(r#"{"account_id":"acct-1","symbol":"HOLD","asset_type":"equity","quantity":"7"}"#),
    )
    .await;
    assert_eq!(s, 201);
    let (s, created) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/positions/pos-r1/close", node.base),
        Some("key-r1"),
        None,
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let crid = created["close_request_id"].as_str().expect("id").to_string();

    // Wait until the order is at the broker: the close is now in flight there.
    let submitted = |cr: &Value| cr["status"] == "submitted";
    let before = common::get_until(&http, TOKEN, format!("{}/close-requests/{crid}", node.base), submitted).await;

    // SIGKILL: no shutdown hook runs.
    drop(node);
    let node = start(&db);

    let (s, position) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/positions/pos-r1", node.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(position["status"], "closing", "{position}");
    let (s, after) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/close-requests/{crid}", node.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(after["status"], "submitted");
    assert_eq!(after["orders"], before["orders"], "the order record survives");
    let (s, replay) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/positions/pos-r1/close", node.base),
        Some("key-r1"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{replay}");
    assert_eq!(replay["close_request_id"], crid.as_str());
    let _ = std::fs::remove_file(&db);
}

/// `BROKER=alpaca` against the Alpaca-compatible paper broker: the real adapter places the
/// order, the trade_updates stream brings the fill; closeflow is killed with SIGKILL while
/// the order works at the broker and started again, and the broker holds exactly one
/// order for the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_alpaca_a_close_survives_kill_9_with_exactly_one_order_at_the_broker() {
    use closeflow_paper_broker::{router, PaperBroker, PaperConfig, DEV_KEY_ID, DEV_SECRET_KEY};
    let scenarios = closeflow_pipeline::SimScenarios::parse("AAPL=fill_after:3s").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paper = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(PaperBroker::new(PaperConfig::new(scenarios)))).await;
    });
    let db = std::env::temp_dir()
        .join(format!("closeflow-alpaca-{}.db", uuid::Uuid::new_v4().simple()))
        .to_string_lossy()
        .into_owned();
    let (base_url, stream_url) = (format!("http://{paper}"), format!("ws://{paper}/stream"));
    let vars = [
        ("BROKER", "alpaca"),
        ("ALPACA_BASE_URL", base_url.as_str()),
        ("ALPACA_STREAM_URL", stream_url.as_str()),
        ("ALPACA_API_KEY_ID", DEV_KEY_ID),
        ("ALPACA_API_SECRET_KEY", DEV_SECRET_KEY),
    ];
    let http = reqwest::Client::new();
    let node = start_with(&db, &vars);
    assert!(node.banner.contains("Alpaca at"), "{}", node.banner);
    let body = r#"{"account_id":"acct-1","symbol":"AAPL","asset_type":"equity","quantity":"4"}"#;
    let (s, _) = call(
        &http,
        reqwest::Method::PUT,
        format!("{}/positions/al-1", node.base),
        None,
        Some(body),
    )
    .await;
    assert_eq!(s, 201);
    let (s, created) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/positions/al-1/close", node.base),
        Some("k"),
        None,
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let crid = created["close_request_id"].as_str().unwrap().to_string();
    let url = format!("{}/close-requests/{crid}", node.base);
    common::get_until(&http, TOKEN, url, |cr| cr["status"] == "submitted").await;
    drop(node);
    let node = start_with(&db, &vars);
    let url = format!("{}/positions/al-1", node.base);
    common::get_until(&http, TOKEN, url, |p| p["status"] == "closed").await;
    let orders: Value = http
        .get(format!("http://{paper}/v2/orders"))
        .query(&[("status", "all")])
        .header("APCA-API-KEY-ID", DEV_KEY_ID)
        .header("APCA-API-SECRET-KEY", DEV_SECRET_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ours: Vec<_> = orders
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["client_order_id"].as_str().is_some_and(|c| c.starts_with(&crid)))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one order for the close at the broker: {orders}");
    assert_eq!(ours[0]["status"], "filled");
    let _ = std::fs::remove_file(&db);
}

mod in_process {
    //! Crashes at each hand-over of the local pipeline, simulated by dropping the whole
    //! stack (nothing is flushed or shut down) and opening a new one on the same file.

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use closeflow_api::auth::{parse_api_tokens, Auth};
    use closeflow_api::SystemClock;
    use closeflow_embedded::{Stack, StackConfig, Storage};
    use closeflow_pipeline::SimScenarios;
    use tower::ServiceExt;

    fn stack(db: &str) -> Stack {
        Stack::new(StackConfig {
            storage: Storage::Sqlite(db.to_string()),
            scenarios: SimScenarios::default(),
            webhook_secret: b"crash-test-secret".to_vec(),
            clock: Arc::new(SystemClock),
            auth: Auth::Tokens(Arc::new(parse_api_tokens("crash-token=*").expect("tokens"))),
            api: Default::default(),
            alpaca: None,
            audit_retention: closeflow_domain::Policy::default().audit_retention,
        })
        .expect("open stack")
    }

    async fn send(stack: &Stack, method: &str, path: &str, key: Option<&str>, body: &str) -> u16 {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer crash-token")
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = stack
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).expect("request"))
            .await
            .expect("infallible");
        resp.status().as_u16()
    }

    async fn open_and_close(stack: &Stack, id: &str) {
        let body = r#"{"account_id":"a","symbol":"MSFT","asset_type":"equity","quantity":"3"}"#;
        assert_eq!(send(stack, "PUT", &format!("/positions/{id}"), None, body).await, 201);
        assert_eq!(
            send(stack, "POST", &format!("/positions/{id}/close"), Some("k"), "").await,
            201
        );
    }

    async fn status(stack: &Stack, id: &str) -> String {
        let p = closeflow_domain::PositionId::parse(id).expect("id");
        stack
            .store
            .position(&p)
            .await
            .expect("store")
            .expect("exists")
            .status
            .as_str()
            .to_string()
    }

    fn db() -> String {
        std::env::temp_dir()
            .join(format!("closeflow-crash-{}.db", uuid::Uuid::new_v4().simple()))
            .to_string_lossy()
            .into_owned()
    }

    #[tokio::test]
    async fn a_crash_before_the_relay_resumes_with_exactly_one_order() {
        let db = db();
        let first = stack(&db);
        open_and_close(&first, "c1").await;
        drop(first);
        let second = stack(&db);
        second.driver.pump().await;
        assert_eq!(second.broker.orders_placed(), 1);
        assert_eq!(status(&second, "c1").await, "closed");
    }

    #[tokio::test]
    async fn a_crash_between_relay_and_submitter_resumes_from_the_durable_queue() {
        let db = db();
        let first = stack(&db);
        open_and_close(&first, "c2").await;
        assert!(first.driver.relay_changes().await > 0);
        assert_eq!(first.broker.orders_placed(), 0);
        drop(first);
        let second = stack(&db);
        second.driver.pump().await;
        assert_eq!(second.broker.orders_placed(), 1);
        assert_eq!(status(&second, "c2").await, "closed");
    }

    #[tokio::test]
    async fn after_a_restart_nothing_already_handled_is_relayed_or_submitted_again() {
        let db = db();
        let first = stack(&db);
        open_and_close(&first, "c3").await;
        first.driver.pump().await;
        assert_eq!(first.broker.orders_placed(), 1);
        drop(first);
        let second = stack(&db);
        second.driver.pump().await;
        assert_eq!(second.broker.orders_placed(), 0, "no second order after a restart");
        assert_eq!(status(&second, "c3").await, "closed");
    }
}
