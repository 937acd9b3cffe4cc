//! Position-sync scenarios (issue 11 §3) with an injected clock: each sync case, on every
//! backend via `sync_tests!`. The broker's holdings come from [`Holdings`], so each test
//! says exactly what the broker holds.

use std::sync::Mutex;

use async_trait::async_trait;
use axum::http::Method;
use closeflow_domain::sync::SyncPolicy;
use closeflow_domain::{AccountId, ClientOrderId, OrderIntent, Quantity};
use closeflow_pipeline::broker::{BrokerPosition, OpenOrder};
use closeflow_pipeline::{sync_once, Broker, BrokerError, BrokerOrder, RecordingSink, SyncConfig, SyncReport};

use crate::pipeline::PipelineApp;

/// A broker that holds what the test says and does nothing else; counts position lists.
#[derive(Default)]
pub struct Holdings {
    held: Mutex<Vec<BrokerPosition>>,
    pub calls: Mutex<usize>,
}

impl Holdings {
    /// `"IBM=9@100,TSLA=-3"`: symbol, signed quantity, optional entry price.
    pub fn set(&self, spec: &str) {
        let held = spec
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (symbol, rest) = s.split_once('=').expect("SYMBOL=qty");
                let (q, price) = match rest.split_once('@') {
                    Some((q, p)) => (q, Some(crate::builders::price(p))),
                    None => (rest, None),
                };
                BrokerPosition {
                    symbol: symbol.into(),
                    qty: Quantity::parse(q).unwrap(),
                    avg_entry_price: price,
                }
            })
            .collect();
        *self.held.lock().unwrap() = held;
    }

    pub fn push(&self, p: BrokerPosition) {
        self.held.lock().unwrap().push(p);
    }
}

#[async_trait]
impl Broker for Holdings {
    async fn submit_order(&self, _: &OrderIntent) -> Result<BrokerOrder, BrokerError> {
        Err(BrokerError::Rejected("holdings only".into()))
    }
    async fn get_order_by_client_id(&self, _: &AccountId, _: &ClientOrderId) -> Result<BrokerOrder, BrokerError> {
        Err(BrokerError::NotFound)
    }
    async fn cancel_order(&self, _: &AccountId, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn list_positions(&self, _: &AccountId) -> Result<Vec<BrokerPosition>, BrokerError> {
        *self.calls.lock().unwrap() += 1;
        Ok(self.held.lock().unwrap().clone())
    }
    async fn open_orders(&self, _: &AccountId, _: &str) -> Result<Vec<OpenOrder>, BrokerError> {
        Ok(vec![])
    }
    /// Holdings only: a steady equity and no orders.
    async fn account_equity(&self, _: &AccountId) -> Result<rust_decimal::Decimal, BrokerError> {
        Ok(rust_decimal::Decimal::from(100_000))
    }
    async fn account_open_orders(&self, _: &AccountId) -> Result<Vec<OpenOrder>, BrokerError> {
        Ok(vec![])
    }
}

pub fn config(adopt: bool) -> SyncConfig {
    SyncConfig {
        accounts: vec![AccountId::parse("acct-1").unwrap()],
        policy: SyncPolicy {
            adopt,
            ..SyncPolicy::default()
        },
        ..SyncConfig::default()
    }
}

pub async fn run(app: &PipelineApp, broker: &Holdings, alerts: &RecordingSink, cfg: &SyncConfig) -> SyncReport {
    sync_once(app.store.as_ref(), broker, app.clock.as_ref(), alerts, cfg)
        .await
        .expect("sync run")
}

/// Registers a long or short equity position of `acct-1` at `price`.
pub async fn register(app: &PipelineApp, id: &str, symbol: &str, qty: &str, price: &str) {
    let r = app
        .call(
            Method::PUT,
            &format!("/positions/{id}"),
            &[],
            Some(&format!(
                r#"{{"account_id":"acct-1","symbol":"{symbol}","asset_type":"equity","quantity":"{qty}","avg_entry_price":"{price}"}}"#
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn alerts_of(app: &PipelineApp, position: &str) -> Vec<String> {
    app.driver.pump().await;
    app.published()
        .await
        .into_iter()
        .filter(|(t, d)| t == "Alert" && d["position_id"] == position)
        .map(|(_, d)| d["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every case at once: in sync, missing at the broker, a quantity conflict taken from the
/// broker, an entry-price conflict, and a holding closeflow did not know (adopted). A second
/// run settles the taken conflict; a third writes nothing.
pub async fn each_sync_case_is_marked_alerted_and_written_once(app: &PipelineApp) {
    register(app, "s-same", "AAPL", "10", "100").await;
    register(app, "s-gone", "MSFT", "5", "50").await;
    register(app, "s-diff", "IBM", "7", "100").await;
    register(app, "s-price", "NVDA", "2", "100").await;
    let broker = Holdings::default();
    broker.set("AAPL=10@100.5,IBM=9@100,NVDA=2@102,TSLA=-3@250");
    let alerts = RecordingSink::default();
    let r = run(app, &broker, &alerts, &config(true)).await;
    assert_eq!(
        (
            r.accounts,
            r.broker_calls,
            r.positions_read,
            r.adopted,
            r.taken,
            r.missing_at_broker,
            r.conflicts,
            r.unknown
        ),
        (1, 1, 4, 1, 1, 1, 2, 1),
        "{r:?}"
    );
    assert_eq!(r.written, 5, "4 verdicts and 1 adoption: {r:?}");

    let same = app.position("s-same").await.body;
    assert_eq!(
        (same["sync_status"].as_str(), same["source"].as_str()),
        (Some("in_sync"), Some("api"))
    );
    assert_eq!(same["last_synced_at"], "2026-01-02T14:30:00.000Z");
    let gone = app.position("s-gone").await.body;
    assert_eq!(
        (
            gone["sync_status"].as_str(),
            gone["status"].as_str(),
            gone["quantity"].as_str()
        ),
        (Some("missing_at_broker"), Some("open"), Some("5")),
        "never closed or deleted by sync"
    );
    let diff = app.position("s-diff").await.body;
    assert_eq!(diff["sync_status"], "conflict");
    assert_eq!(
        (
            diff["quantity"].as_str(),
            diff["sync_our_quantity"].as_str(),
            diff["sync_broker_quantity"].as_str()
        ),
        (Some("9"), Some("7"), Some("9")),
        "open with nothing in flight: takes the broker's quantity, both values shown"
    );
    let price = app.position("s-price").await.body;
    assert_eq!(
        (
            price["sync_status"].as_str(),
            price["quantity"].as_str(),
            price["sync_broker_avg_entry_price"].as_str()
        ),
        (Some("conflict"), Some("2"), Some("102")),
        "2 % off the entry price: a conflict, the quantity kept"
    );
    let adopted = app.position("sync:acct-1:TSLA").await.body;
    assert_eq!(
        (
            adopted["source"].as_str(),
            adopted["status"].as_str(),
            adopted["quantity"].as_str(),
            adopted["avg_entry_price"].as_str()
        ),
        (Some("broker"), Some("open"), Some("-3"), Some("250"))
    );

    assert_eq!(alerts_of(app, "s-same").await.len(), 0);
    assert!(alerts_of(app, "s-gone").await[0].starts_with("sync_missing_at_broker"));
    assert!(alerts_of(app, "s-diff").await[0].contains("closeflow 7 @ 100, broker 9 @ 100"));
    assert_eq!(alerts_of(app, "s-price").await.len(), 1);
    let unknown = alerts.events();
    assert_eq!(unknown.len(), 1);
    assert!(unknown[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("sync_unknown_holding: -3 TSLA"));

    // The audit trail says sync did it.
    let audit = app.call(Method::GET, "/positions/s-diff/audit", &[], None).await.body;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "sync", "{audit}");

    app.clock.advance(chrono::TimeDelta::minutes(5));
    let second = run(app, &broker, &alerts, &config(true)).await;
    assert_eq!(
        second.written, 2,
        "the taken conflict and the adopted position now agree: {second:?}"
    );
    assert_eq!(app.position("s-diff").await.body["sync_status"], "in_sync");
    app.clock.advance(chrono::TimeDelta::minutes(5));
    let third = run(app, &broker, &alerts, &config(true)).await;
    assert_eq!(third.written, 0, "nothing changed, nothing written: {third:?}");
    assert_eq!(alerts_of(app, "s-gone").await.len(), 1, "alerted once, not every run");
    assert_eq!(alerts.events().len(), 1);
}

/// A position with a close in flight is flagged but its quantity is left to the close.
pub async fn a_position_closing_is_flagged_but_left_alone(app: &PipelineApp) {
    app.open_and_close("s-closing", "NVDA", "4").await;
    app.driver.pump().await; // held at the broker: the close stays in flight
    let broker = Holdings::default();
    broker.set("NVDA=1");
    let r = run(app, &broker, &RecordingSink::default(), &config(true)).await;
    assert_eq!((r.conflicts, r.taken), (1, 0), "{r:?}");
    let p = app.position("s-closing").await.body;
    assert_eq!(
        (p["status"].as_str(), p["quantity"].as_str(), p["sync_status"].as_str()),
        (Some("closing"), Some("4"), Some("conflict"))
    );
    // Gone at the broker while closing: the close's own outcome settles it, not sync.
    broker.set("");
    let r = run(app, &broker, &RecordingSink::default(), &config(true)).await;
    assert_eq!((r.missing_at_broker, r.written), (0, 0), "{r:?}");
}

/// `SYNC_ADOPT=false`: a holding closeflow does not know is only alerted, every run.
pub async fn without_adoption_an_unknown_holding_is_only_alerted(app: &PipelineApp) {
    let broker = Holdings::default();
    broker.set("TSLA=-3@250");
    let alerts = RecordingSink::default();
    let r = run(app, &broker, &alerts, &config(false)).await;
    assert_eq!((r.unknown, r.adopted, r.written), (1, 0, 0), "{r:?}");
    assert_eq!(app.position("sync:acct-1:TSLA").await.status, 404);
    assert!(alerts.events()[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("SYNC_ADOPT=false"));
}

/// An unchanged account of more than one listing page costs reads only, once marked.
pub async fn an_unchanged_account_costs_no_writes(app: &PipelineApp) {
    let broker = Holdings::default();
    for i in 0..120 {
        let symbol = format!("S{i}");
        register(app, &format!("s-many-{i}"), &symbol, "3", "10").await;
        broker.push(BrokerPosition {
            symbol,
            qty: Quantity::from(3),
            avg_entry_price: Some(crate::builders::price("10")),
        });
    }
    let alerts = RecordingSink::default();
    let first = run(app, &broker, &alerts, &config(true)).await;
    assert_eq!((first.positions_read, first.written), (120, 120), "{first:?}");
    let before = app.round_trips.as_ref().map(|c| c.operations().len());
    let again = run(app, &broker, &alerts, &config(true)).await;
    assert_eq!(
        (again.positions_read, again.written, again.broker_calls),
        (120, 0, 1),
        "{again:?}"
    );
    if let (Some(c), Some(before)) = (&app.round_trips, before) {
        // DynamoDB: the two listing pages, nothing else (no per-position read or write).
        assert_eq!(c.operations()[before..], ["Query", "Query"], "only the listing is read");
    }
    assert!(alerts.events().is_empty());
}

/// The simulated broker's own holdings (not a fake): seeded as `SIM_BROKER_POSITIONS`
/// would, a close through the pipeline sells its holding away and sync confirms the close;
/// a holding then changed outside closeflow is a conflict whose quantity closeflow takes.
pub async fn the_simulated_brokers_holdings_follow_closes_and_outside_changes(app: &PipelineApp) {
    let account = AccountId::parse("acct-1").unwrap();
    register(app, "h-ibm", "IBM", "7", "100").await;
    app.sim.set_holding(&account, "IBM", Quantity::from(7));
    app.sim.set_holding(&account, "AAPL", Quantity::from(10));
    app.open_and_close("h-aapl", "AAPL", "10").await;
    app.driver.pump().await;
    assert_eq!(app.position("h-aapl").await.body["status"], "closed");
    let alerts = RecordingSink::default();
    let broker = app.sim.as_ref();
    let r = sync_once(app.store.as_ref(), broker, app.clock.as_ref(), &alerts, &config(true))
        .await
        .expect("sync run");
    assert_eq!(
        (r.conflicts, r.missing_at_broker, r.unknown),
        (0, 0, 0),
        "AAPL sold away at the broker too, IBM agrees: {r:?}"
    );
    assert_eq!(app.position("h-ibm").await.body["sync_status"], "in_sync");
    assert_eq!(app.position("h-aapl").await.body["sync_status"], "unchecked");

    app.sim.set_holding(&account, "IBM", Quantity::from(4));
    let r = sync_once(app.store.as_ref(), broker, app.clock.as_ref(), &alerts, &config(true))
        .await
        .expect("sync run");
    assert_eq!((r.conflicts, r.taken), (1, 1), "{r:?}");
    let ibm = app.position("h-ibm").await.body;
    assert_eq!(
        (
            ibm["sync_status"].as_str(),
            ibm["quantity"].as_str(),
            ibm["sync_our_quantity"].as_str()
        ),
        (Some("conflict"), Some("4"), Some("7"))
    );
}

#[macro_export]
macro_rules! sync_tests {
    ($backend:expr) => {
        $crate::sync_tests!(@each $backend;
            each_sync_case_is_marked_alerted_and_written_once: "",
            a_position_closing_is_flagged_but_left_alone: "NVDA=hold",
            without_adoption_an_unknown_holding_is_only_alerted: "",
            an_unchanged_account_costs_no_writes: "",
            the_simulated_brokers_holdings_follow_closes_and_outside_changes: "",
        );
    };
    (@each $backend:expr; $($name:ident: $scenarios:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::pipeline::PipelineApp::new($backend, $scenarios).await;
                $crate::sync_scenarios::$name(&app).await;
            }
        )*
    };
}
