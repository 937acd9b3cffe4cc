//! Reconciler and cleanup scenarios on DynamoDB (moto), events on EventBridge (moto), and
//! the promise that the scheduled jobs read through the sparse index, never a Scan.

closeflow_tests::reconcile_tests!(closeflow_tests::Backend::DynamoDb);

mod sync {
    closeflow_tests::sync_tests!(closeflow_tests::Backend::DynamoDb);
}

use chrono::TimeDelta;
use closeflow_pipeline::ReconcileConfig;
use closeflow_tests::pipeline::PipelineApp;
use closeflow_tests::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_jobs_query_the_sparse_index_and_never_scan() {
    let app = PipelineApp::new(Backend::DynamoDb, "NVDA=hold").await;
    for i in 0..5 {
        app.open_and_close(&format!("settled-{i}"), "AAPL", "1").await;
    }
    app.open_and_close("stuck", "NVDA", "1").await;
    app.driver.pump().await;
    app.clock.advance(TimeDelta::minutes(10));
    let counter = app.round_trips.clone().unwrap();
    let before = counter.operations().len();
    let r = app.reconcile(&ReconcileConfig::default()).await;
    assert_eq!(r.items_read, 1, "only the in-flight position is read: {r:?}");
    app.cleanup(TimeDelta::days(3)).await;
    let ops = counter.operations()[before..].to_vec();
    assert!(!ops.iter().any(|o| o == "Scan"), "{ops:?}");
    assert!(ops.iter().any(|o| o == "Query"), "{ops:?}");
}
