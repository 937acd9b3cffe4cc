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

    /// Every route the http-api function serves has its API Gateway route (a route left
    /// out answers 404 in AWS only), and every API Gateway route reaches a served one.
    #[test]
    fn every_served_route_has_its_api_gateway_route() {
        let t = template();
        let events = t.value()["Resources"]["HttpApiFunction"]["Properties"]["Events"]
            .as_mapping()
            .expect("HttpApiFunction events");
        let mut declared: Vec<(String, String)> = events
            .values()
            .filter(|e| e["Type"] == "HttpApi")
            .map(|e| {
                let p = &e["Properties"];
                (
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        declared.sort();
        let mut served: Vec<(String, String)> = closeflow_api::served_routes(closeflow_api::Routes::CLOSE_API)
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            // The console page is the embedded stack's operator screen; it is not
            // published through API Gateway.
            .filter(|(_, p)| !p.starts_with("/docs/") && p != "/console")
            .collect();
        served.push(("GET".into(), "/docs/{proxy+}".into()));
        served.sort();
        served.dedup();
        assert_eq!(declared, served);
    }
}
