//! Find-or-create of the stack's resources on an emulator (moto, LocalStack) from
//! `template.yaml`'s own definitions. Idempotent, with names derived from a prefix only, so
//! a restarted local stack and `make invoke` find the same resources again.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use closeflow_store::dynamo::table::{create_table, TableSpec};

use crate::template::{QueueSpec, Template};

/// Deterministic resource names for a stack prefix (the local stand-in for a stack name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub table: String,
    pub audit_table: String,
    pub order_queue: String,
    pub dead_letter_queue: String,
    pub bus: String,
    /// A queue receiving every event on the bus, so a person (or a test) can read them;
    /// local only: in AWS, consumers add their own rules.
    pub events_tap: String,
}

impl ResourceNames {
    pub fn for_prefix(prefix: &str, template: &Template) -> Result<ResourceNames, String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "prefix `{prefix}`: use 1-40 letters, digits, `-` or `_` (it names tables and queues)"
            ));
        }
        let fifo = |name: String, spec: &QueueSpec| if spec.fifo { format!("{name}.fifo") } else { name };
        Ok(ResourceNames {
            table: format!("{prefix}-closes"),
            audit_table: format!("{prefix}-audit"),
            order_queue: fifo(format!("{prefix}-orders"), &template.order_queue()?),
            dead_letter_queue: fifo(format!("{prefix}-orders-dlq"), &template.dead_letter_queue()?),
            bus: template.event_bus_name(prefix)?,
            events_tap: format!("{prefix}-events-tap"),
        })
    }
}

/// The resources, found or created.
#[derive(Debug, Clone)]
pub struct Resources {
    pub names: ResourceNames,
    pub order_queue_url: String,
    pub dead_letter_queue_url: String,
    pub events_tap_url: String,
}

/// Finds or creates the table, the order queue with its dead-letter queue, and the event
/// bus (with the events tap) named after `prefix`.
pub async fn provision(
    shared: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    template: &Template,
    prefix: &str,
) -> Result<Resources, String> {
    let names = ResourceNames::for_prefix(prefix, template)?;
    find_or_create_table(dynamodb, &names.table, &template.table_spec()?).await?;
    find_or_create_table(dynamodb, &names.audit_table, &template.audit_table_spec()?).await?;
    let sqs = aws_sdk_sqs::Client::new(shared);
    let (dead_letter_queue_url, dlq_arn) =
        find_or_create_queue(&sqs, &names.dead_letter_queue, &template.dead_letter_queue()?, None).await?;
    let (order_queue_url, _) =
        find_or_create_queue(&sqs, &names.order_queue, &template.order_queue()?, Some(&dlq_arn)).await?;
    let events_tap_url = find_or_create_bus(shared, &sqs, &names).await?;
    Ok(Resources {
        names,
        order_queue_url,
        dead_letter_queue_url,
        events_tap_url,
    })
}

async fn find_or_create_table(client: &aws_sdk_dynamodb::Client, name: &str, spec: &TableSpec) -> Result<(), String> {
    match client.describe_table().table_name(name).send().await {
        Ok(out) => check_table(name, out.table(), spec),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            create_table(client, name, spec).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("describe table {name}: {}", DisplayErrorContext(e))),
    }
}

/// An existing table must have the shape the code relies on; a table left by an older
/// version would otherwise fail later, on some request, far from the cause.
fn check_table(
    name: &str,
    table: Option<&aws_sdk_dynamodb::types::TableDescription>,
    spec: &TableSpec,
) -> Result<(), String> {
    let t = table.ok_or_else(|| format!("describe table {name}: no description"))?;
    let key = |kind: &str| {
        t.key_schema()
            .iter()
            .find(|k| k.key_type().as_str() == kind)
            .map(|k| k.attribute_name().to_string())
            .unwrap_or_default()
    };
    let stream = t.stream_specification();
    let mut indexes: Vec<&str> = t
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    indexes.sort_unstable();
    let mut wanted: Vec<&str> = spec.indexes.iter().map(|i| i.name.as_str()).collect();
    wanted.sort_unstable();
    let same = key("HASH") == spec.hash_key
        && key("RANGE") == spec.range_key
        && match stream.filter(|s| s.stream_enabled()) {
            Some(s) => s.stream_view_type().map(|v| v.as_str()) == Some(spec.stream_view.as_str()),
            // The audit table has no stream.
            None => spec.stream_view.is_empty(),
        }
        && indexes == wanted;
    if same {
        Ok(())
    } else {
        Err(format!(
            "table {name} exists with another shape than its template.yaml table (keys, stream or \
             indexes); delete it or choose another prefix"
        ))
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("queue {url}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| format!("queue {url} has no ARN"))
}

/// Creates the queue or returns the existing one (SQS's CreateQueue is idempotent for the
/// same attributes); returns its URL and ARN.
async fn find_or_create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    spec: &QueueSpec,
    dead_letter_arn: Option<&str>,
) -> Result<(String, String), String> {
    let mut req = sqs.create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        spec.visibility_timeout.to_string(),
    );
    if spec.fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some(r) = spec.retention {
        req = req.attributes(QueueAttributeName::MessageRetentionPeriod, r.to_string());
    }
    match (spec.max_receive_count, dead_letter_arn) {
        (Some(n), Some(arn)) => {
            let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": n});
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        (Some(_), None) => return Err(format!("queue {name} redrives, but no dead-letter queue was given")),
        (None, _) => {}
    }
    let out = req.send().await.map_err(|e| {
        format!(
            "create queue {name}: {} (an existing queue with other attributes: delete it or choose another prefix)",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        )
    })?;
    let url = out
        .queue_url()
        .ok_or_else(|| format!("create queue {name}: no URL"))?
        .to_string();
    let arn = queue_arn(sqs, &url).await?;
    Ok((url, arn))
}

/// The bus, and a rule sending every closeflow event on it to the events tap queue.
async fn find_or_create_bus(
    shared: &aws_config::SdkConfig,
    sqs: &aws_sdk_sqs::Client,
    names: &ResourceNames,
) -> Result<String, String> {
    let eb = aws_sdk_eventbridge::Client::new(shared);
    let err = |what: &str, e: String| format!("{what} on bus {}: {e}", names.bus);
    match eb.describe_event_bus().name(&names.bus).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            eb.create_event_bus()
                .name(&names.bus)
                .send()
                .await
                .map_err(|e| err("create", aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string()))?;
        }
        Err(e) => {
            return Err(err(
                "describe",
                aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
            ))
        }
    }
    let tap = QueueSpec {
        fifo: false,
        visibility_timeout: 30,
        retention: None,
        max_receive_count: None,
    };
    let (tap_url, tap_arn) = find_or_create_queue(sqs, &names.events_tap, &tap, None).await?;
    // PutRule and PutTargets replace what is there: repeating them is harmless.
    eb.put_rule()
        .name(&names.events_tap)
        .event_bus_name(&names.bus)
        .event_pattern(serde_json::json!({"source": [crate::eventbridge::SOURCE]}).to_string())
        .send()
        .await
        .map_err(|e| {
            err(
                "put rule",
                aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("events-tap")
        .arn(tap_arn)
        .build()
        .map_err(|e| err("target", e.to_string()))?;
    eb.put_targets()
        .rule(&names.events_tap)
        .event_bus_name(&names.bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| {
            err(
                "put targets",
                aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
            )
        })?;
    Ok(tap_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_the_template() {
        let t = Template::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).expect("template");
        let n = ResourceNames::for_prefix("closeflow-local", &t).unwrap();
        assert_eq!(n.table, "closeflow-local-closes");
        assert_eq!(n.order_queue, "closeflow-local-orders.fifo");
        assert_eq!(n.dead_letter_queue, "closeflow-local-orders-dlq.fifo");
        assert_eq!(n.bus, "closeflow-local-events");
        for bad in ["", "has space", "a/b", &"x".repeat(41)] {
            assert!(ResourceNames::for_prefix(bad, &t).is_err(), "{bad}");
        }
    }
}
