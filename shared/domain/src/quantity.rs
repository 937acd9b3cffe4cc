//! Exact decimal quantities. Never `f64`: a fill of 0.1 + 0.2 must equal 0.3.
//!
//! One grammar for every decimal closeflow reads, whether it arrives as a JSON number, a
//! JSON string, a stored attribute or a broker field: the JSON number grammar
//! (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`). A value that `rust_decimal` cannot
//! hold exactly (more than 28 decimal places, more than 96 bits of digits) is refused,
//! never rounded. Arithmetic is checked: `None` instead of a panic on overflow.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error(
        "`{0}` is not a decimal number (digits, optional '-', '.', exponent; no '+', '_', spaces or leading zeros)"
    )]
    NotANumber(String),
    #[error("`{0}` cannot be represented exactly (at most 28 decimal places and 28 significant digits)")]
    Inexact(String),
    #[error("expected a decimal as a JSON string or number")]
    WrongType,
}

/// A signed, exact quantity (shares or contracts). Normalised so `10.00` == `10` prints as `10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(Decimal);

/// Largest exponent magnitude worth reading: anything beyond overflows or underflows the
/// 28-digit range unless its digits are all zero.
const MAX_EXPONENT_DIGITS: usize = 9;

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

    /// `a + b`, or `None` when the sum leaves the decimal range.
    pub fn checked_add(&self, other: Quantity) -> Option<Quantity> {
        self.0.checked_add(other.0).map(Quantity::new)
    }

    /// `a - b`, or `None` when the difference leaves the decimal range.
    pub fn checked_sub(&self, other: Quantity) -> Option<Quantity> {
        self.0.checked_sub(other.0).map(Quantity::new)
    }

    /// The sum of `items`, or `None` when it leaves the decimal range.
    pub fn checked_sum(items: impl IntoIterator<Item = Quantity>) -> Option<Quantity> {
        items.into_iter().try_fold(Quantity::ZERO, |acc, q| acc.checked_add(q))
    }

    /// `a - b` for a target and what filled against it. Both are non-negative, so the
    /// difference always lies between `-b` and `a` and cannot overflow; saturating keeps
    /// even a corrupt record from panicking.
    pub fn minus(&self, other: Quantity) -> Quantity {
        Quantity::new(self.0.saturating_sub(other.0))
    }

    /// Parses decimal text in the JSON number grammar, exactly: `10`, `-2.5`, `1e3`,
    /// `1.50`. Refuses `+5`, `.5`, `1.`, `00010`, `1_000`, surrounding spaces, and values
    /// that would need rounding.
    pub fn parse(text: &str) -> Result<Quantity, DecimalError> {
        let bad = || DecimalError::NotANumber(text.to_string());
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let digits_len = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
        let int_len = digits_len(rest);
        let (int, rest) = rest.split_at(int_len);
        if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
            return Err(bad());
        }
        let (frac, rest) = match rest.split_first() {
            Some((b'.', after)) => {
                let n = digits_len(after);
                if n == 0 {
                    return Err(bad());
                }
                after.split_at(n)
            }
            _ => (&rest[..0], rest),
        };
        let exponent: i64 = match rest.split_first() {
            None => 0,
            Some((b'e' | b'E', after)) => {
                let (sign, digits) = match after.split_first() {
                    Some((b'-', d)) => (-1, d),
                    Some((b'+', d)) => (1, d),
                    _ => (1, after),
                };
                if digits.is_empty() || digits_len(digits) != digits.len() {
                    return Err(bad());
                }
                let significant = &digits[digits.iter().take_while(|b| **b == b'0').count()..];
                if significant.len() > MAX_EXPONENT_DIGITS {
                    // Only a zero survives an exponent this large, in either direction.
                    return if int.iter().chain(frac).all(|b| *b == b'0') {
                        Ok(Quantity::ZERO)
                    } else {
                        Err(DecimalError::Inexact(text.to_string()))
                    };
                }
                let magnitude: i64 = std::str::from_utf8(significant)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .map_or(Ok(0), str::parse)
                    .map_err(|_| bad())?;
                sign * magnitude
            }
            Some(_) => return Err(bad()),
        };
        exact(int, frac, exponent, negative).ok_or_else(|| DecimalError::Inexact(text.to_string()))
    }
}

/// The exact decimal `±(int.frac) × 10^exponent`, or `None` when `Decimal` cannot hold it
/// without rounding.
fn exact(int: &[u8], frac: &[u8], exponent: i64, negative: bool) -> Option<Quantity> {
    // All digits as one integer D with value D × 10^(exponent - frac.len()); leading and
    // trailing zeros carry no information, so drop them first.
    let all: Vec<u8> = int.iter().chain(frac).copied().collect();
    let start = all.iter().take_while(|b| **b == b'0').count();
    let end = all.len() - all.iter().rev().take_while(|b| **b == b'0').count();
    if start >= end {
        return Some(Quantity::ZERO);
    }
    let trailing_zeros = (all.len() - end) as i64;
    let mut power = exponent - frac.len() as i64 + trailing_zeros;
    let significant = &all[start..end];
    // 2^96 - 1 has 29 digits: more significant digits can never fit.
    if significant.len() > 29 {
        return None;
    }
    let mut mantissa: u128 = std::str::from_utf8(significant).ok()?.parse().ok()?;
    while power > 0 {
        mantissa = mantissa.checked_mul(10)?;
        power -= 1;
    }
    let scale = u32::try_from(-power).ok()?;
    if scale > 28 || mantissa >= 1u128 << 96 {
        return None;
    }
    let signed = if negative {
        -(mantissa as i128)
    } else {
        mantissa as i128
    };
    Decimal::try_from_i128_with_scale(signed, scale).ok().map(Quantity::new)
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

/// Decimal from the raw text of a JSON value: a number, or a string holding a number in
/// the same grammar.
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
    use proptest::prelude::*;

    #[test]
    fn parses_integers_decimals_and_scientific_exactly() {
        assert_eq!(Quantity::parse("10").unwrap().to_string(), "10");
        assert_eq!(Quantity::parse("10.00").unwrap().to_string(), "10");
        assert_eq!(Quantity::parse("-2.5").unwrap().to_string(), "-2.5");
        assert_eq!(Quantity::parse("1e3").unwrap().to_string(), "1000");
        assert_eq!(Quantity::parse("25E-1").unwrap().to_string(), "2.5");
        assert_eq!(Quantity::parse("1e+2").unwrap().to_string(), "100");
        assert_eq!(Quantity::parse("0.5").unwrap().to_string(), "0.5");
        assert_eq!(Quantity::parse("-0").unwrap(), Quantity::ZERO);
        assert!(Quantity::parse("ten").is_err());
    }

    #[test]
    fn strings_follow_the_json_number_grammar() {
        for bad in [
            "1_000", "+5", ".5", "1.", "00010", "-", "", " 1", "1 ", "1e", "1e+", "0x10", "1.2.3", "--1", "1e1.5",
            "NaN", "inf", "١",
        ] {
            assert!(
                matches!(Quantity::parse(bad), Err(DecimalError::NotANumber(_))),
                "`{bad}` must be refused"
            );
        }
    }

    #[test]
    fn values_that_would_need_rounding_are_refused_not_rounded() {
        for inexact in [
            "0.00000000000000000000000000005",
            "1e-29",
            "79228162514264337593543950336",
            "1e29",
            "8.0000000000000000000000000001",
            "123456789012345678901234567890",
            "1e999999999999",
        ] {
            assert!(
                matches!(Quantity::parse(inexact), Err(DecimalError::Inexact(_))),
                "`{inexact}` must be refused"
            );
        }
        // Exact however it is written: trailing zeros and zero mantissas carry no digits.
        assert_eq!(
            Quantity::parse("1e-28").unwrap().to_string(),
            "0.0000000000000000000000000001"
        );
        assert_eq!(
            Quantity::parse("79228162514264337593543950335").unwrap().to_string(),
            "79228162514264337593543950335"
        );
        assert_eq!(
            Quantity::parse("1.000000000000000000000000000000000").unwrap(),
            Quantity::from(1)
        );
        assert_eq!(Quantity::parse("0e999999999999").unwrap(), Quantity::ZERO);
        assert_eq!(Quantity::parse("100000e-5").unwrap(), Quantity::from(1));
        assert_eq!(
            Quantity::parse("1.0000000000000000000000000001").unwrap().to_string(),
            "1.0000000000000000000000000001"
        );
    }

    #[test]
    fn json_numbers_keep_their_exact_text() {
        let q: Quantity = serde_json::from_str("0.1").unwrap();
        let r: Quantity = serde_json::from_str("\"0.2\"").unwrap();
        assert_eq!(q.checked_add(r), Some(Quantity::parse("0.3").unwrap()));
        let big: Quantity = serde_json::from_str("12345678901234567.123456789").unwrap();
        assert_eq!(big.to_string(), "12345678901234567.123456789");
        assert!(serde_json::from_str::<Quantity>("true").is_err());
        assert!(serde_json::from_str::<Quantity>("\"abc\"").is_err());
    }

    #[test]
    fn strings_and_numbers_accept_and_refuse_the_same_texts() {
        for text in [
            "1_000",
            "+5",
            ".5",
            "1.",
            "00010",
            "0.00000000000000000000000000005",
            "1e-3",
            "7",
        ] {
            let as_string = serde_json::from_str::<Quantity>(&format!("\"{text}\"")).ok();
            let as_number = serde_json::from_str::<Quantity>(text).ok();
            assert_eq!(as_string, as_number, "`{text}`");
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Quantity::new(Decimal::MAX);
        assert_eq!(max.checked_add(Quantity::from(1)), None);
        assert_eq!(Quantity::checked_sum([max, max]), None);
        assert_eq!(
            Quantity::checked_sum([Quantity::from(2), Quantity::parse("0.5").unwrap()]),
            Some(Quantity::parse("2.5").unwrap())
        );
        assert_eq!(Quantity::new(Decimal::MIN).checked_sub(Quantity::from(1)), None);
    }

    #[test]
    fn serialises_as_a_string() {
        assert_eq!(serde_json::to_string(&Quantity::from(-3)).unwrap(), "\"-3\"");
    }

    proptest! {
        /// Fuzz: any text parses or is refused, never panics, and what parses prints back
        /// to a value that parses to itself.
        #[test]
        fn any_text_parses_exactly_or_is_refused(text in "[-+0-9.eE_ ]{0,40}|\\PC{0,40}") {
            if let Ok(q) = Quantity::parse(&text) {
                prop_assert_eq!(Quantity::parse(&q.to_string()), Ok(q));
            }
        }

        #[test]
        fn every_representable_decimal_round_trips(m in any::<i64>(), scale in 0u32..=28) {
            let d = Quantity::new(Decimal::new(m, scale));
            prop_assert_eq!(Quantity::parse(&d.to_string()), Ok(d));
        }
    }
}
