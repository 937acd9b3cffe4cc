//! The trade_updates service as deployed: its own process, DynamoDB (moto) for the store,
//! the Alpaca-compatible paper broker for orders and the stream. An order placed before the
//! service starts fills while it runs; the service closes the position, then stops cleanly
//! on SIGTERM (what ECS sends).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use closeflow_alpaca::{AlpacaBroker, AlpacaConfig};
use closeflow_domain::testing::{close, pid, register};
use closeflow_domain::{PositionStatus, SubmitRequest};
use closeflow_paper_broker::{router, PaperBroker, PaperConfig, DEV_KEY_ID, DEV_SECRET_KEY};
use closeflow_pipeline::{submit, Clock, SimScenarios, SubmitOutcome, SystemClock};
use closeflow_store::{CloseOutcome, CloseStore, DynamoStore, RoundTripCounter};
use closeflow_tests::{dynamo_client, template, unique_table_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_applies_a_fill_from_the_stream_and_stops_on_sigterm() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paper = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let scenarios = SimScenarios::parse("AAPL=fill_after:1500ms").unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(PaperBroker::new(PaperConfig::new(scenarios)))).await;
    });
    let client = dynamo_client(RoundTripCounter::default()).await;
    let table = unique_table_name();
    closeflow_store::dynamo::table::create_table(&client, &table, &template::table_spec())
        .await
        .unwrap();
    let store = Arc::new(DynamoStore::new(client, table.clone()));
    let alpaca = AlpacaBroker::new(AlpacaConfig {
        base_url: format!("http://{paper}"),
        key_id: DEV_KEY_ID.into(),
        secret_key: DEV_SECRET_KEY.into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();

    // A close whose order works at the broker when the service starts.
    let now = SystemClock.now();
    store
        .register_position(&register("ts-1", "5", now))
        .await
        .unwrap()
        .unwrap();
    let CloseOutcome::Created { close_request, .. } = store.open_close_request(&close("ts-1", "k", now)).await.unwrap()
    else {
        panic!("close created")
    };
    let req = SubmitRequest {
        position_id: pid("ts-1"),
        close_request_id: close_request.id,
        attempt: 1,
    };
    let placed = submit(store.as_ref(), &alpaca, &SystemClock, &req).await.unwrap();
    assert_eq!(placed, SubmitOutcome::Placed);
    assert_eq!(
        store.position(&pid("ts-1")).await.unwrap().unwrap().status,
        PositionStatus::Closing
    );

    let mut service = Command::new(env!("CARGO_BIN_EXE_trade-stream"))
        .env("TABLE_NAME", &table)
        .env("ALPACA_BASE_URL", format!("http://{paper}"))
        .env("ALPACA_STREAM_URL", format!("ws://{paper}/stream"))
        .env("ALPACA_API_KEY_ID", DEV_KEY_ID)
        .env("ALPACA_API_SECRET_KEY", DEV_SECRET_KEY)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    let closed = loop {
        let p = store.position(&pid("ts-1")).await.unwrap().unwrap();
        if p.status == PositionStatus::Closed || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(closed.status, PositionStatus::Closed, "the stream's fill closed it");

    // ECS stops a task with SIGTERM, then SIGKILL after a grace period: it must be gone first.
    let term = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = service.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
