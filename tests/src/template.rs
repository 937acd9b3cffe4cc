//! `template.yaml` as the one source of truth for what tests create: the table (keys,
//! indexes, stream, TTL) and the order queue are built from its definitions, read by the
//! same code (`closeflow_aws::template`) that `make run-aws-local` uses.

use closeflow_aws::Template;
use closeflow_store::dynamo::table::TableSpec;

/// The workspace's `template.yaml`.
pub fn template() -> Template {
    Template::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).expect("template.yaml")
}

/// The `ClosesTable` resource as a [`TableSpec`].
pub fn table_spec() -> TableSpec {
    template().table_spec().expect("ClosesTable")
}

/// The `AuditTable` resource as a [`TableSpec`].
pub fn audit_table_spec() -> TableSpec {
    template().audit_table_spec().expect("AuditTable")
}

/// The `OrderQueue` resource: (FIFO?, visibility timeout in seconds).
pub fn order_queue() -> (bool, u32) {
    let q = template().order_queue().expect("OrderQueue");
    (q.fifo, q.visibility_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml::Value;

    #[test]
    fn the_template_defines_exactly_the_table_the_code_relies_on() {
        assert_eq!(
            table_spec(),
            TableSpec::required(),
            "template.yaml ClosesTable drifted from the code"
        );
        assert_eq!(
            audit_table_spec(),
            TableSpec::required_audit(),
            "template.yaml AuditTable drifted from the code"
        );
    }

    #[test]
    fn the_order_queue_is_fifo_with_a_visibility_longer_than_the_submitter_timeout() {
        let (fifo, visibility) = order_queue();
        assert!(fifo);
        let t = template();
        let t = t.value();
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
