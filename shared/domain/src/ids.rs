//! Identifiers, parsed at the edge ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters of letters, digits, '.', '_', ':' or '-'")]
    InvalidId { what: &'static str, max: usize },
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("`{0}` is not a close request id")]
    InvalidCloseRequestId(String),
    #[error("not a bulk close id")]
    InvalidBulkCloseId,
}

fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

macro_rules! token_id {
    ($name:ident, $what:literal, $max:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                if valid_token(s, $max) {
                    Ok($name(s.to_string()))
                } else {
                    Err(IdError::InvalidId {
                        what: $what,
                        max: $max,
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(PositionId, "position_id", 128);
token_id!(AccountId, "account_id", 64);

/// A client-chosen idempotency key, scoped to one position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl TryFrom<String> for IdempotencyKey {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        IdempotencyKey::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if ok {
            Ok(IdempotencyKey(s.to_string()))
        } else {
            Err(IdError::InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first 60 bits of SHA-256(position id): the key of the position's item. Every close
/// request id carries it, so a close request id (or a client order id) alone addresses
/// its position with one strongly consistent read or one conditional write. Two position
/// ids with the same routing key cannot both be registered (the second is refused as a
/// collision; about 1 in 2^60 per pair), so a routing key always means one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutingKey(u64);

const ROUTING_BITS: u32 = 60;

impl RoutingKey {
    pub fn of(position: &PositionId) -> Self {
        let digest = Sha256::digest(position.as_str().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        RoutingKey(u64::from_be_bytes(first) >> (64 - ROUTING_BITS))
    }

    pub const MIN: RoutingKey = RoutingKey(0);

    /// 15 hex digits.
    pub fn to_hex(&self) -> String {
        format!("{:015x}", self.0)
    }

    /// The key as a number (it fits in 60 bits, so also in a signed 64-bit column).
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// Close request id: a UUID (version 8, RFC 9562 "custom") whose 60 non-fixed bits before
/// the variant carry the position's [`RoutingKey`] (bytes 0-5, the low nibble of byte 6,
/// byte 7); the remaining 62 bits are random. 36 characters, so the client order id
/// `{close_request_id}-{attempt}` stays within 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CloseRequestId(Uuid);

impl CloseRequestId {
    /// Builds an id for `position` from 16 random bytes supplied by the caller.
    pub fn new(position: &PositionId, random: [u8; 16]) -> Self {
        let k = RoutingKey::of(position).0;
        let mut bytes = random;
        bytes[..6].copy_from_slice(&(k >> 12).to_be_bytes()[2..8]);
        bytes[6] = (bytes[6] & 0xf0) | ((k >> 8) as u8 & 0x0f);
        bytes[7] = k as u8;
        CloseRequestId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let u = Uuid::try_parse(s).map_err(|_| IdError::InvalidCloseRequestId(s.to_string()))?;
        if u.get_version_num() != 8 {
            return Err(IdError::InvalidCloseRequestId(s.to_string()));
        }
        Ok(CloseRequestId(u))
    }

    pub fn routing_key(&self) -> RoutingKey {
        let b = self.0.as_bytes();
        let mut high = [0u8; 8];
        high[2..8].copy_from_slice(&b[..6]);
        let k = (u64::from_be_bytes(high) << 12) | (((b[6] & 0x0f) as u64) << 8) | b[7] as u64;
        RoutingKey(k)
    }

    pub fn belongs_to(&self, position: &PositionId) -> bool {
        self.routing_key() == RoutingKey::of(position)
    }
}

impl TryFrom<String> for CloseRequestId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        CloseRequestId::parse(&s)
    }
}

impl From<CloseRequestId> for String {
    fn from(id: CloseRequestId) -> String {
        id.to_string()
    }
}

impl fmt::Display for CloseRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn position_ids_are_restricted_tokens() {
        assert!(PositionId::parse("pos-1:AAPL_2024.01").is_ok());
        assert!(PositionId::parse("").is_err());
        assert!(PositionId::parse("has space").is_err());
        assert!(PositionId::parse(&"x".repeat(129)).is_err());
        assert!(PositionId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_255() {
        assert!(IdempotencyKey::parse("a b~!").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("caf\u{e9}").is_err());
    }

    #[test]
    fn close_request_ids_are_36_char_uuids_that_route_to_their_position() {
        let p = PositionId::parse("pos-42").unwrap();
        let id = CloseRequestId::new(&p, [7u8; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(CloseRequestId::parse(&text).unwrap(), id);
        assert!(id.belongs_to(&p));
        assert!(!id.belongs_to(&PositionId::parse("pos-43").unwrap()));
        assert!(CloseRequestId::parse("not-a-uuid").is_err());
        // A v4 UUID was not minted by us and carries no routing key.
        assert!(CloseRequestId::parse("0b6a3f3e-9a7c-4d5e-8f00-1234567890ab").is_err());
    }

    proptest! {
        #[test]
        fn routing_key_survives_any_random_bytes(pos in "[a-zA-Z0-9._:-]{1,128}", random in any::<[u8; 16]>()) {
            let p = PositionId::parse(&pos).unwrap();
            let id = CloseRequestId::new(&p, random);
            prop_assert_eq!(id.routing_key(), RoutingKey::of(&p));
            prop_assert_eq!(CloseRequestId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
