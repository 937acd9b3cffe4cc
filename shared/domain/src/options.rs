//! How a close is executed at the broker: market or limit, the limit price, time in force,
//! extended hours, and how much of the position to close. Parsed at the edge into these
//! types and validated by pure functions that answer stable error codes, so a refused close
//! writes nothing.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::AssetType;
use crate::quantity::{DecimalError, Quantity};

/// A price per unit (a limit, a fill, an entry): an exact decimal, never negative. Kept apart
/// from [`Quantity`] so a price can never be passed where an amount is meant (or the
/// reverse). Zero is a price (a zero cost basis, a worthless option); an order's limit must be
/// above it, which [`OrderOptions::validate_shape`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(Quantity);

impl Price {
    /// `None` when `value` is negative.
    pub fn new(value: Quantity) -> Option<Price> {
        (!value.is_negative()).then_some(Price(value))
    }

    pub const ZERO: Price = Price(Quantity::ZERO);

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn parse(text: &str) -> Result<Option<Price>, DecimalError> {
        Quantity::parse(text).map(Price::new)
    }

    /// The exact decimal, for arithmetic (a price times a quantity is money, neither).
    pub fn value(&self) -> Decimal {
        self.0.value()
    }

    /// The price in the decimal type amounts use, for the places that carry prices as plain
    /// decimals (wire formats, a multi-leg order's net price of either sign).
    pub fn as_quantity(&self) -> Quantity {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let q = Quantity::deserialize(d)?;
        Price::new(q).ok_or_else(|| serde::de::Error::custom("a price must not be negative"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    #[default]
    Market,
    Limit,
}

impl OrderType {
    pub const ALL: [OrderType; 2] = [OrderType::Market, OrderType::Limit];

    pub fn as_str(&self) -> &'static str {
        match self {
            OrderType::Market => "market",
            OrderType::Limit => "limit",
        }
    }

    pub fn parse(s: &str) -> Option<OrderType> {
        OrderType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    #[default]
    Day,
    Gtc,
}

impl TimeInForce {
    pub const ALL: [TimeInForce; 2] = [TimeInForce::Day, TimeInForce::Gtc];

    pub fn as_str(&self) -> &'static str {
        match self {
            TimeInForce::Day => "day",
            TimeInForce::Gtc => "gtc",
        }
    }

    pub fn parse(s: &str) -> Option<TimeInForce> {
        TimeInForce::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The order a close places (every attempt of it: a limit close's retries keep its price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OrderOptions {
    pub order_type: OrderType,
    pub limit_price: Option<Price>,
    pub time_in_force: TimeInForce,
    pub extended_hours: bool,
    /// A multi-leg order's net limit price is a credit (received), not a debit (paid): the
    /// broker is sent `-limit_price`. Never set on a single order.
    pub credit: bool,
}

/// Why a close's options were refused; each is one stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("qty must be greater than 0 and at most the position's absolute quantity")]
    InvalidQty,
    #[error("limit_price is required for a limit order and refused for a market order")]
    InvalidLimitPrice,
    #[error("time_in_force must be `day` or `gtc`; option orders are `day` only")]
    InvalidTimeInForce,
    #[error("extended_hours is only for limit orders with time_in_force day")]
    InvalidExtendedHours,
}

impl OptionsError {
    /// The API's `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OptionsError::InvalidQty => "invalid_qty",
            OptionsError::InvalidLimitPrice => "invalid_limit_price",
            OptionsError::InvalidTimeInForce => "invalid_time_in_force",
            OptionsError::InvalidExtendedHours => "invalid_extended_hours",
        }
    }
}

impl OrderOptions {
    /// A market day order, regular hours: what a close without options places.
    pub const MARKET: OrderOptions = OrderOptions {
        order_type: OrderType::Market,
        limit_price: None,
        time_in_force: TimeInForce::Day,
        extended_hours: false,
        credit: false,
    };

    pub fn limit(price: Price) -> OrderOptions {
        OrderOptions {
            order_type: OrderType::Limit,
            limit_price: Some(price),
            ..OrderOptions::MARKET
        }
    }

    /// The limit price as the broker takes it: a net credit is negative.
    pub fn signed_limit_price(&self) -> Option<Quantity> {
        self.limit_price.map(|p| match self.credit {
            true => Quantity::new(-p.value()),
            false => p.as_quantity(),
        })
    }

    /// The limit price from its signed form (a stored or requested net price): negative is
    /// a credit; zero is no price.
    pub fn with_signed_limit_price(mut self, signed: Option<Quantity>) -> OrderOptions {
        self.credit = signed.is_some_and(|q| q.is_negative());
        self.limit_price = signed.and_then(|q| Price::new(q.abs())).filter(|p| !p.is_zero());
        self
    }

    /// The checks that need nothing but the options themselves.
    pub fn validate_shape(&self) -> Result<(), OptionsError> {
        if self.credit && self.order_type != OrderType::Limit {
            return Err(OptionsError::InvalidLimitPrice);
        }
        // Nobody sells at a limit of 0: a zero limit is a mistake, not a price.
        match (self.order_type, self.limit_price) {
            (OrderType::Limit, Some(p)) if !p.is_zero() => {}
            (OrderType::Market, None) => {}
            _ => return Err(OptionsError::InvalidLimitPrice),
        }
        // Brokers take orders outside regular hours only as day limit orders.
        if self.extended_hours && (self.order_type != OrderType::Limit || self.time_in_force != TimeInForce::Day) {
            return Err(OptionsError::InvalidExtendedHours);
        }
        Ok(())
    }

    /// Every check for an order on an asset of `asset_type`.
    pub fn validate_for(&self, asset_type: AssetType) -> Result<(), OptionsError> {
        self.validate_shape()?;
        if asset_type == AssetType::Option && self.time_in_force != TimeInForce::Day {
            return Err(OptionsError::InvalidTimeInForce);
        }
        Ok(())
    }
}

/// The amount a close closes: `requested` (a partial close) or the whole position. Refused
/// unless `0 < requested <= |position|`.
pub fn close_qty(requested: Option<Quantity>, position: Quantity) -> Result<Quantity, OptionsError> {
    let whole = position.abs();
    match requested {
        None => Ok(whole),
        Some(q) if q.is_zero() || q.is_negative() || q > whole => Err(OptionsError::InvalidQty),
        Some(q) => Ok(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn price(s: &str) -> Price {
        Price::new(q(s)).unwrap()
    }

    #[test]
    fn a_price_is_never_negative_and_exact() {
        assert_eq!(Price::new(Quantity::ZERO), Some(Price::ZERO));
        assert_eq!(Price::new(q("-1")), None);
        assert_eq!(price("187.25").to_string(), "187.25");
        assert_eq!(Price::parse("0.0001").unwrap(), Some(price("0.0001")));
        assert!(serde_json::from_str::<Price>("\"-0.01\"").is_err());
        assert_eq!(serde_json::from_str::<Price>("\"0\"").unwrap(), Price::ZERO);
        assert_eq!(serde_json::from_str::<Price>("\"1.5\"").unwrap(), price("1.5"));
    }

    #[test]
    fn limit_prices_go_with_limit_orders_only() {
        assert_eq!(OrderOptions::MARKET.validate_shape(), Ok(()));
        assert_eq!(OrderOptions::limit(price("10")).validate_shape(), Ok(()));
        assert_eq!(
            OrderOptions::limit(Price::ZERO).validate_shape(),
            Err(OptionsError::InvalidLimitPrice)
        );
        let limit_without_price = OrderOptions {
            order_type: OrderType::Limit,
            ..OrderOptions::MARKET
        };
        assert_eq!(
            limit_without_price.validate_shape(),
            Err(OptionsError::InvalidLimitPrice)
        );
        let market_with_price = OrderOptions {
            limit_price: Some(price("10")),
            ..OrderOptions::MARKET
        };
        assert_eq!(market_with_price.validate_shape(), Err(OptionsError::InvalidLimitPrice));
        assert_eq!(OptionsError::InvalidLimitPrice.code(), "invalid_limit_price");
    }

    #[test]
    fn extended_hours_needs_a_limit_and_options_trade_day_only() {
        let ext_market = OrderOptions {
            extended_hours: true,
            ..OrderOptions::MARKET
        };
        assert_eq!(ext_market.validate_shape(), Err(OptionsError::InvalidExtendedHours));
        let ext_limit = OrderOptions {
            extended_hours: true,
            ..OrderOptions::limit(price("3"))
        };
        assert_eq!(ext_limit.validate_for(AssetType::Equity), Ok(()));
        let ext_gtc = OrderOptions {
            time_in_force: TimeInForce::Gtc,
            ..ext_limit
        };
        assert_eq!(ext_gtc.validate_shape(), Err(OptionsError::InvalidExtendedHours));
        let gtc = OrderOptions {
            time_in_force: TimeInForce::Gtc,
            ..OrderOptions::limit(price("3"))
        };
        assert_eq!(gtc.validate_for(AssetType::Equity), Ok(()));
        assert_eq!(
            gtc.validate_for(AssetType::Option),
            Err(OptionsError::InvalidTimeInForce)
        );
    }

    #[test]
    fn a_partial_qty_lies_between_zero_and_the_whole_position() {
        assert_eq!(close_qty(None, q("-7")), Ok(q("7")));
        assert_eq!(close_qty(Some(q("2.5")), q("-7")), Ok(q("2.5")));
        assert_eq!(close_qty(Some(q("7")), q("7")), Ok(q("7")));
        for bad in ["0", "-1", "7.0001"] {
            assert_eq!(close_qty(Some(q(bad)), q("-7")), Err(OptionsError::InvalidQty), "{bad}");
        }
    }

    #[test]
    fn a_net_credit_is_a_flag_beside_a_positive_price_and_only_on_a_limit_order() {
        let credit = OrderOptions::MARKET.with_signed_limit_price(Some(q("-1.25")));
        assert_eq!((credit.limit_price, credit.credit), (Some(price("1.25")), true));
        assert_eq!(credit.signed_limit_price(), Some(q("-1.25")));
        assert_eq!(
            credit.validate_shape(),
            Err(OptionsError::InvalidLimitPrice),
            "a market order has none"
        );
        let limit = OrderOptions {
            order_type: OrderType::Limit,
            ..credit
        };
        assert_eq!(limit.validate_shape(), Ok(()));
        let debit = limit.with_signed_limit_price(Some(q("2")));
        assert_eq!((debit.signed_limit_price(), debit.credit), (Some(q("2")), false));
        assert_eq!(debit.with_signed_limit_price(None).limit_price, None);
        assert_eq!(debit.with_signed_limit_price(Some(Quantity::ZERO)).limit_price, None);
    }
}
