//! Strict JSON for request bodies: a key repeated in an object is refused, at any depth.
//! serde_json keeps the last of duplicate keys, so `{"reason":"a","reason":"b"}` would mean
//! whatever the last parser in a chain decided; refusing it leaves no room for two readers
//! to disagree.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses `raw` as JSON into `T`, refusing duplicate object keys anywhere in it.
pub fn from_slice_strict<T: DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    reject_duplicate_keys(raw)?;
    serde_json::from_slice(raw).map_err(|e| e.to_string())
}

/// `Ok` when `raw` is JSON whose objects never repeat a key.
pub fn reject_duplicate_keys(raw: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    NoDuplicates.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// Walks a JSON value, keeping only the keys of the object being read.
#[derive(Clone, Copy)]
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(reject_duplicate_keys(br#"{"a":1,"b":[{"c":1,"d":2}],"e":{"f":{}}}"#).is_ok());
        for dup in [
            &br#"{"a":1,"a":1}"#[..],
            br#"{"reason":"x","reason":"y"}"#,
            br#"{"a":{"b":1,"b":2}}"#,
            br#"[{"k":1},{"k":1,"k":2}]"#,
            // The same key spelt with an escape is still the same key.
            br#"{"a":1,"\u0061":2}"#,
        ] {
            let e = reject_duplicate_keys(dup).unwrap_err();
            assert!(e.contains("duplicate key"), "{e}");
        }
    }

    #[test]
    fn invalid_json_and_trailing_data_are_refused() {
        assert!(reject_duplicate_keys(b"{").is_err());
        assert!(reject_duplicate_keys(b"{} {}").is_err());
        assert!(from_slice_strict::<Value>(b"  {\"a\": [1, 2.5e3, null, true]}  ").is_ok());
    }
}
