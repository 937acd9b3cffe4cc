//! `template.yaml` as the one source of truth for what tests create: the table (keys,
//! indexes, stream, TTL) and the order queue are built from its definitions.

use closeflow_store::dynamo::table::{IndexSpec, TableSpec};
use serde_yaml::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml next to the workspace");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn resource(t: &Value, name: &str) -> Value {
    t["Resources"][name]["Properties"].clone()
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

/// The `ClosesTable` resource as a [`TableSpec`].
pub fn table_spec() -> TableSpec {
    let p = resource(&template(), "ClosesTable");
    TableSpec {
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
    }
}

/// The `OrderQueue` resource: (FIFO?, visibility timeout in seconds).
pub fn order_queue() -> (bool, u32) {
    let p = resource(&template(), "OrderQueue");
    (
        p["FifoQueue"] == true,
        p["VisibilityTimeout"].as_u64().unwrap_or(30) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_defines_exactly_the_table_the_code_relies_on() {
        assert_eq!(
            table_spec(),
            TableSpec::required(),
            "template.yaml ClosesTable drifted from the code"
        );
    }

    #[test]
    fn the_order_queue_is_fifo_with_a_visibility_longer_than_the_submitter_timeout() {
        let (fifo, visibility) = order_queue();
        assert!(fifo);
        let t = template();
        let timeout = t["Resources"]["OrderSubmitterFunction"]["Properties"]["Timeout"]
            .as_u64()
            .unwrap();
        assert!(visibility as u64 > timeout, "{visibility} s vs submitter {timeout} s");
        let dlq = &t["Resources"]["OrderQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"];
        assert!(
            matches!(dlq, Value::Tagged(_)),
            "the order queue redrives to a dead-letter queue"
        );
    }
}
