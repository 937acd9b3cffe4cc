//! `make run-aws-local`: the stack on the AWS services, emulated (moto, or LocalStack).
//! The same router and pipeline code as `make run`, on the other adapters: DynamoDB for
//! the store, the table's stream as the change feed, SQS FIFO as the order queue and
//! EventBridge for events. Resources come from `template.yaml` (find-or-create, named
//! after a prefix) and are written to an env file so `make invoke` finds them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use closeflow_api::auth::Auth;
use closeflow_api::{router_for, Routes, SystemClock};
use closeflow_aws::provision::{provision, Resources};
use closeflow_aws::{DynamoStreamFeed, EventBridgeSink, SqsQueue, Template};
use closeflow_pipeline::{Broker, Driver, SimScenarios, SimulatedBroker};
use closeflow_store::{CloseStore, DynamoStore};

use crate::RouterSink;

/// The prefix resources are named after unless `CLOSEFLOW_PREFIX` says otherwise.
pub const DEFAULT_PREFIX: &str = "closeflow-local";
/// Where the running stack describes itself for `make invoke` (`AWS_LOCAL_ENV_FILE`).
pub const DEFAULT_ENV_FILE: &str = ".closeflow/aws-local.env";

pub enum BrokerChoice {
    Simulated(SimScenarios),
    /// Alpaca from `ALPACA_*` (paper by default). Alpaca does not call closeflow's signed
    /// webhook, so fills arrive through the reconciler's lookups.
    Alpaca(Arc<closeflow_alpaca::accounts::AccountBrokers>),
}

pub struct AwsLocalConfig {
    pub template: PathBuf,
    pub prefix: String,
    pub broker: BrokerChoice,
    pub webhook_secret: Vec<u8>,
    pub auth: Auth,
    pub policy: closeflow_root::Policy,
}

pub struct AwsLocal {
    pub router: Router,
    pub store: Arc<dyn CloseStore>,
    pub driver: Driver,
    pub resources: Resources,
}

impl AwsLocal {
    /// Finds or creates the resources on the emulator the standard AWS environment points
    /// at, and wires the stack on them.
    pub async fn start(cfg: AwsLocalConfig) -> Result<AwsLocal, String> {
        let template = Template::load(&cfg.template)?;
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let dynamodb = DynamoStore::client_from_env(None).await;
        let resources = provision(&shared, &dynamodb, &template, &cfg.prefix).await?;
        let names = &resources.names;
        let feed = DynamoStreamFeed::for_table(&dynamodb, aws_sdk_dynamodbstreams::Client::new(&shared), &names.table)
            .await
            .map_err(|e| e.to_string())?;
        let queue = Arc::new(SqsQueue::new(
            aws_sdk_sqs::Client::new(&shared),
            &resources.order_queue_url,
        ));
        let events = Arc::new(EventBridgeSink::new(
            aws_sdk_eventbridge::Client::new(&shared),
            &names.bus,
        ));
        let store: Arc<dyn CloseStore> = Arc::new(
            DynamoStore::new(dynamodb, &names.table)
                .with_retention(cfg.policy.jobs.policy.retention)
                .with_audit_table(&names.audit_table),
        );
        let clock = Arc::new(SystemClock);
        let (broker, sim): (Arc<dyn Broker>, _) = match cfg.broker {
            BrokerChoice::Simulated(scenarios) => {
                let sim = Arc::new(SimulatedBroker::new(scenarios, &cfg.webhook_secret, clock.clone()));
                (sim.clone(), Some(sim))
            }
            BrokerChoice::Alpaca(brokers) => (brokers, None),
        };
        let mut state = closeflow_root::api_state(store.clone(), broker.clone(), queue.clone(), &cfg.policy.api);
        state.clock = clock.clone();
        state.webhook_secret = Arc::new(cfg.webhook_secret.clone());
        state.auth = cfg.auth;
        let router = router_for(state, Routes::ALL);
        if let Some(sim) = &sim {
            // The simulated broker's fills come back through the signed webhook route.
            sim.connect(Arc::new(RouterSink(router.clone())));
        }
        let driver = Driver {
            store: store.clone(),
            broker,
            sim,
            watch: Arc::new(closeflow_pipeline::MemoryWatch::new(clock.clone())),
            clock,
            feed: Arc::new(feed),
            producer: queue.clone(),
            consumer: queue,
            events,
            audit_retention: cfg.policy.jobs.policy.audit_retention,
        };
        Ok(AwsLocal {
            router,
            store,
            driver,
            resources,
        })
    }

    /// `KEY='value'` lines for a shell to source: the API's URL, the emulator and the
    /// variables the functions read (`TABLE_NAME`, `QUEUE_URL`, `EVENT_BUS_NAME`).
    pub fn env_lines(&self, api_url: &str) -> Vec<(String, String)> {
        let r = &self.resources;
        let mut lines = vec![("CLOSEFLOW_URL".to_string(), api_url.to_string())];
        // The invoking shell has none of these when with-moto.sh started the emulator.
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            if let Ok(v) = std::env::var(k) {
                lines.push((k.into(), v));
            }
        }
        lines.extend([
            ("TABLE_NAME".into(), r.names.table.clone()),
            ("AUDIT_TABLE_NAME".into(), r.names.audit_table.clone()),
            ("QUEUE_URL".into(), r.order_queue_url.clone()),
            ("DEAD_LETTER_QUEUE_URL".into(), r.dead_letter_queue_url.clone()),
            ("EVENT_BUS_NAME".into(), r.names.bus.clone()),
            ("EVENTS_TAP_URL".into(), r.events_tap_url.clone()),
        ]);
        lines
    }
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Writes the env file whole (readers never see half of it), readable by its owner only:
/// it holds the emulator's credentials.
pub fn write_env_file(path: &Path, lines: &[(String, String)]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    writeln!(
        f,
        "# closeflow-aws-local (make run-aws-local) while it runs; make invoke sources it"
    )
    .map_err(err)?;
    for (k, v) in lines {
        writeln!(f, "{k}={}", shell_quote(v)).map_err(err)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_is_sourceable_and_private() {
        let dir = std::env::temp_dir().join(format!("closeflow-envfile-{}", std::process::id()));
        let path = dir.join("aws-local.env");
        let lines = vec![
            ("TABLE_NAME".to_string(), "t-1".to_string()),
            ("ODD".to_string(), "it's $HOME".to_string()),
        ];
        write_env_file(&path, &lines).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". '{}'; printf '%s|%s' \"$TABLE_NAME\" \"$ODD\"",
                path.display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "t-1|it's $HOME");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
