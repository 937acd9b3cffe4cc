//! Stream images -> position aggregates. Three crates model DynamoDB attribute values
//! (Lambda events, DynamoDB Streams, DynamoDB); everything is converted to the DynamoDB
//! SDK's type so one codec decodes it.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamAv;
use closeflow_store::dynamo::codec::{self, Item, POSITION_SK, SK};
use closeflow_store::{Change, StoreError};

/// An image from a Lambda DynamoDB stream event.
pub fn lambda_item(item: serde_dynamo::Item) -> Item {
    fn conv(v: serde_dynamo::AttributeValue) -> Av {
        use serde_dynamo::AttributeValue as S;
        match v {
            S::N(n) => Av::N(n),
            S::S(s) => Av::S(s),
            S::Bool(b) => Av::Bool(b),
            S::B(b) => Av::B(Blob::new(b)),
            S::Null(n) => Av::Null(n),
            S::M(m) => Av::M(m.into_iter().map(|(k, v)| (k, conv(v))).collect()),
            S::L(l) => Av::L(l.into_iter().map(conv).collect()),
            S::Ss(v) => Av::Ss(v),
            S::Ns(v) => Av::Ns(v),
            S::Bs(v) => Av::Bs(v.into_iter().map(Blob::new).collect()),
        }
    }
    item.into_inner().into_iter().map(|(k, v)| (k, conv(v))).collect()
}

/// An image from the DynamoDB Streams API (local driver).
pub fn streams_item(item: &HashMap<String, StreamAv>) -> Item {
    fn conv(v: &StreamAv) -> Av {
        match v {
            StreamAv::N(n) => Av::N(n.clone()),
            StreamAv::S(s) => Av::S(s.clone()),
            StreamAv::Bool(b) => Av::Bool(*b),
            StreamAv::B(b) => Av::B(Blob::new(b.as_ref())),
            StreamAv::Null(n) => Av::Null(*n),
            StreamAv::M(m) => Av::M(m.iter().map(|(k, v)| (k.clone(), conv(v))).collect()),
            StreamAv::L(l) => Av::L(l.iter().map(conv).collect()),
            StreamAv::Ss(v) => Av::Ss(v.clone()),
            StreamAv::Ns(v) => Av::Ns(v.clone()),
            StreamAv::Bs(v) => Av::Bs(v.iter().map(|b| Blob::new(b.as_ref())).collect()),
            _ => Av::Null(true),
        }
    }
    item.iter().map(|(k, v)| (k.clone(), conv(v))).collect()
}

/// The change a stream record describes, or `None` for records that are not a position
/// aggregate being written (deletes, other item kinds).
pub fn change_from_images(old: Option<Item>, new: Option<Item>) -> Result<Option<Change>, StoreError> {
    let Some(new) = new.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let is_position = new
        .get(SK)
        .and_then(|v| v.as_s().ok())
        .is_some_and(|sk| sk == POSITION_SK);
    if !is_position {
        return Ok(None);
    }
    let before = match old.filter(|i| !i.is_empty()) {
        Some(o) => Some(codec::aggregate_from_item(&o)?),
        None => None,
    };
    Ok(Some(Change {
        before,
        after: codec::aggregate_from_item(&new)?,
    }))
}
