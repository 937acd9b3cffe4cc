//! Exact decimal quantities. Never `f64`: a fill of 0.1 + 0.2 must equal 0.3.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    #[error("expected a decimal as a JSON string or number")]
    WrongType,
}

/// A signed, exact quantity (shares or contracts). Normalised so `10.00` == `10` prints as `10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(Decimal);

impl Quantity {
    pub const ZERO: Quantity = Quantity(Decimal::ZERO);

    pub fn new(value: Decimal) -> Self {
        Quantity(value.normalize())
    }

    pub fn value(&self) -> Decimal {
        self.0
    }

    pub fn abs(&self) -> Quantity {
        Quantity(self.0.abs())
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(&self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// `a - b`, exact.
    pub fn minus(&self, other: Quantity) -> Quantity {
        Quantity::new(self.0 - other.0)
    }

    /// Parses the decimal text of a JSON number or string: `10`, `-2.5`, `1e3`.
    pub fn parse(text: &str) -> Result<Quantity, DecimalError> {
        let t = text.trim();
        Decimal::from_str(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map(Quantity::new)
            .map_err(|_| DecimalError::NotANumber(text.to_string()))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for Quantity {
    fn from(v: i64) -> Self {
        Quantity::new(Decimal::from(v))
    }
}

/// Serialised as a JSON string so no consumer ever sees a binary float.
impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Accepts a JSON string (`"1.5"`) or a JSON number (`1.5`), reading the number's own
/// text so no precision is lost through `f64`.
impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        parse_json_decimal(raw.get())
            .map(Quantity::new)
            .map_err(serde::de::Error::custom)
    }
}

/// Decimal from the raw text of a JSON value: a number, or a string holding a number.
pub fn parse_json_decimal(raw: &str) -> Result<Decimal, DecimalError> {
    let raw = raw.trim();
    let text = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).map_err(|_| DecimalError::WrongType)?
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        raw.to_string()
    } else {
        return Err(DecimalError::WrongType);
    };
    Quantity::parse(&text).map(|q| q.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_decimals_and_scientific_exactly() {
        assert_eq!(Quantity::parse("10").unwrap().to_string(), "10");
        assert_eq!(Quantity::parse("10.00").unwrap().to_string(), "10");
        assert_eq!(Quantity::parse("-2.5").unwrap().to_string(), "-2.5");
        assert_eq!(Quantity::parse("1e3").unwrap().to_string(), "1000");
        assert!(Quantity::parse("ten").is_err());
    }

    #[test]
    fn json_numbers_keep_their_exact_text() {
        let q: Quantity = serde_json::from_str("0.1").unwrap();
        let r: Quantity = serde_json::from_str("\"0.2\"").unwrap();
        assert_eq!(Quantity::new(q.value() + r.value()), Quantity::parse("0.3").unwrap());
        let big: Quantity = serde_json::from_str("12345678901234567.123456789").unwrap();
        assert_eq!(big.to_string(), "12345678901234567.123456789");
        assert!(serde_json::from_str::<Quantity>("true").is_err());
        assert!(serde_json::from_str::<Quantity>("\"abc\"").is_err());
    }

    #[test]
    fn serialises_as_a_string() {
        assert_eq!(serde_json::to_string(&Quantity::from(-3)).unwrap(), "\"-3\"");
    }
}
