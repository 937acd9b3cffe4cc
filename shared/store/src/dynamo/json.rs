//! DynamoDB's typed JSON form of an item (`{"S": …}`, `{"N": "2.5"}`, `{"M": {…}}`): the
//! wire form of stream images and exports, and the SQLite backend's row format, so one
//! codec serves both and decimals stay exact strings.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use super::codec::Item;
use crate::StoreError;

/// DynamoDB's typed JSON form of an item (`{"S": ...}`, `{"N": "1.5"}`, ...): exact, and
/// readable with the same tools as a DynamoDB export.
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(v: &AttributeValue) -> Value {
    let (tag, inner) = match v {
        AttributeValue::S(s) => ("S", Value::String(s.clone())),
        AttributeValue::N(n) => ("N", Value::String(n.clone())),
        AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
        AttributeValue::Null(_) => ("NULL", Value::Bool(true)),
        AttributeValue::L(l) => ("L", Value::Array(l.iter().map(value_to_json).collect())),
        AttributeValue::M(m) => ("M", item_to_json(m)),
        AttributeValue::Ss(l) => ("SS", Value::Array(l.iter().cloned().map(Value::String).collect())),
        AttributeValue::Ns(l) => ("NS", Value::Array(l.iter().cloned().map(Value::String).collect())),
        // The codec writes no binary attributes.
        _ => ("NULL", Value::Bool(true)),
    };
    Value::Object(Map::from_iter([(tag.to_string(), inner)]))
}

pub fn item_from_json(v: &Value) -> Result<Item, StoreError> {
    let bad = || StoreError::Corrupt("item JSON is not DynamoDB's typed form".into());
    v.as_object()
        .ok_or_else(bad)?
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_from_json(v)?)))
        .collect()
}

fn value_from_json(v: &Value) -> Result<AttributeValue, StoreError> {
    let bad = || StoreError::Corrupt("attribute JSON is not DynamoDB's typed form".into());
    let (tag, inner) = v.as_object().and_then(|o| o.iter().next()).ok_or_else(bad)?;
    let strings = |x: &Value| -> Result<Vec<String>, StoreError> {
        x.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(bad))
            .collect()
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(inner.as_str().ok_or_else(bad)?.to_string()),
        "N" => AttributeValue::N(inner.as_str().ok_or_else(bad)?.to_string()),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(bad)?),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(value_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        _ => return Err(bad()),
    })
}
