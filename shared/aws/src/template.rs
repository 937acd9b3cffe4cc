//! `template.yaml` as the one source of truth for the resources local stacks and tests
//! create: the table (keys, indexes, stream, TTL), the order queue and its dead-letter
//! queue, and the event bus are built from its definitions, never restated in code.

use std::path::Path;

use closeflow_store::dynamo::table::{IndexSpec, TableSpec};
use serde_yaml::Value;

/// A parsed SAM template.
#[derive(Debug, Clone)]
pub struct Template(Value);

/// An SQS queue as the template defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub fifo: bool,
    /// Seconds; SQS's default (30) when the template sets none.
    pub visibility_timeout: u32,
    /// Seconds; SQS's default when `None`.
    pub retention: Option<u32>,
    /// Receives before a message moves to the dead-letter queue, when the queue redrives.
    pub max_receive_count: Option<u32>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn key_of(schema: &Value, kind: &str) -> String {
    schema
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|k| k["KeyType"] == kind)
        .map(|k| text(&k["AttributeName"]))
        .unwrap_or_default()
}

fn seconds(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

impl Template {
    /// Reads and parses the template at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Template, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Template::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Template, String> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        if !value["Resources"].is_mapping() {
            return Err("no Resources section".into());
        }
        Ok(Template(value))
    }

    /// The whole document, for checks on parts this module does not model.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// `Resources.<name>.Properties`, or an error naming the missing resource.
    pub fn properties(&self, name: &str) -> Result<&Value, String> {
        let r = &self.0["Resources"][name];
        if r.is_null() {
            return Err(format!("template has no resource `{name}`"));
        }
        Ok(&r["Properties"])
    }

    /// The `ClosesTable` resource as a [`TableSpec`].
    pub fn table_spec(&self) -> Result<TableSpec, String> {
        self.table_spec_of("ClosesTable")
    }

    /// The `AuditTable` resource as a [`TableSpec`].
    pub fn audit_table_spec(&self) -> Result<TableSpec, String> {
        self.table_spec_of("AuditTable")
    }

    fn table_spec_of(&self, resource: &str) -> Result<TableSpec, String> {
        let p = self.properties(resource)?;
        Ok(TableSpec {
            hash_key: key_of(&p["KeySchema"], "HASH"),
            range_key: key_of(&p["KeySchema"], "RANGE"),
            string_attributes: p["AttributeDefinitions"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter(|a| a["AttributeType"] == "S")
                .map(|a| text(&a["AttributeName"]))
                .collect(),
            indexes: p["GlobalSecondaryIndexes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|i| IndexSpec {
                    name: text(&i["IndexName"]),
                    hash_key: key_of(&i["KeySchema"], "HASH"),
                    range_key: key_of(&i["KeySchema"], "RANGE"),
                    projection: text(&i["Projection"]["ProjectionType"]),
                })
                .collect(),
            stream_view: text(&p["StreamSpecification"]["StreamViewType"]),
            ttl_attribute: text(&p["TimeToLiveSpecification"]["AttributeName"]),
            billing_mode: text(&p["BillingMode"]),
        })
    }

    /// An `AWS::SQS::Queue` resource.
    pub fn queue(&self, name: &str) -> Result<QueueSpec, String> {
        let p = self.properties(name)?;
        Ok(QueueSpec {
            fifo: p["FifoQueue"] == true,
            visibility_timeout: seconds(&p["VisibilityTimeout"]).unwrap_or(30),
            retention: seconds(&p["MessageRetentionPeriod"]),
            max_receive_count: seconds(&p["RedrivePolicy"]["maxReceiveCount"]),
        })
    }

    /// The `OrderQueue` resource.
    pub fn order_queue(&self) -> Result<QueueSpec, String> {
        self.queue("OrderQueue")
    }

    /// The `OrderDeadLetterQueue` resource.
    pub fn dead_letter_queue(&self) -> Result<QueueSpec, String> {
        self.queue("OrderDeadLetterQueue")
    }

    /// The `EventBus` name for a stack called `stack_name` (the template names it with
    /// `!Sub "${AWS::StackName}-…"`).
    pub fn event_bus_name(&self, stack_name: &str) -> Result<String, String> {
        let name = &self.properties("EventBus")?["Name"];
        let pattern = match name {
            Value::Tagged(t) if t.tag == "!Sub" => text(&t.value),
            other => text(other),
        };
        if pattern.is_empty() {
            return Err("EventBus has no Name".into());
        }
        let resolved = pattern.replace("${AWS::StackName}", stack_name);
        if resolved.contains("${") {
            return Err(format!(
                "EventBus Name `{pattern}` uses substitutions other than AWS::StackName"
            ));
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_template() -> Template {
        Template::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).expect("template.yaml")
    }

    #[test]
    fn reads_the_workspace_template() {
        let t = workspace_template();
        assert_eq!(t.table_spec().unwrap(), TableSpec::required());
        assert_eq!(t.audit_table_spec().unwrap(), TableSpec::required_audit());
        let q = t.order_queue().unwrap();
        assert!(q.fifo);
        assert_eq!(q.max_receive_count, Some(10));
        let dlq = t.dead_letter_queue().unwrap();
        assert!(dlq.fifo && dlq.max_receive_count.is_none());
        assert_eq!(dlq.retention, Some(1_209_600));
        assert_eq!(t.event_bus_name("demo").unwrap(), "demo-events");
    }

    #[test]
    fn missing_files_and_resources_are_named_in_the_error() {
        let e = Template::load("/nonexistent/template.yaml").unwrap_err();
        assert!(e.contains("/nonexistent/template.yaml"), "{e}");
        let t = Template::parse("Resources:\n  Other: {}\n").unwrap();
        assert_eq!(t.table_spec().unwrap_err(), "template has no resource `ClosesTable`");
        assert!(Template::parse("just text").is_err());
    }
}
