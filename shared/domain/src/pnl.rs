//! Realized profit and loss of a close: per order fill, `(exit − entry) × qty × multiplier`
//! for a long position and `(entry − exit) × qty × multiplier` for a short one, in exact
//! decimals. Unknown when an input is unknown — never a guess.

use rust_decimal::Decimal;

use crate::model::{AssetType, Position, PositionAggregate};
use crate::order::Order;

/// A realized PnL, or why it cannot be given.
pub type Pnl = Result<Decimal, PnlUnknown>;

/// Why a realized PnL cannot be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PnlUnknown {
    #[error("the position's entry price is unknown")]
    EntryPriceUnknown,
    #[error("the broker reported no fill price")]
    FillPriceUnknown,
    #[error("the amount is beyond exact decimal range")]
    OutOfRange,
}

impl PnlUnknown {
    pub const ALL: [PnlUnknown; 3] = [
        PnlUnknown::EntryPriceUnknown,
        PnlUnknown::FillPriceUnknown,
        PnlUnknown::OutOfRange,
    ];

    pub fn parse(code: &str) -> Option<PnlUnknown> {
        PnlUnknown::ALL.into_iter().find(|u| u.code() == code)
    }

    /// A stable code for APIs and audit entries.
    pub fn code(&self) -> &'static str {
        match self {
            PnlUnknown::EntryPriceUnknown => "entry_price_unknown",
            PnlUnknown::FillPriceUnknown => "fill_price_unknown",
            PnlUnknown::OutOfRange => "out_of_range",
        }
    }
}

/// Units of the underlying per contract: 100 for a standard equity option, 1 for shares.
pub fn default_multiplier(asset_type: AssetType) -> Decimal {
    match asset_type {
        AssetType::Option => Decimal::ONE_HUNDRED,
        AssetType::Equity => Decimal::ONE,
    }
}

/// The position's multiplier: its own override, else its asset type's default.
pub fn multiplier(position: &Position) -> Decimal {
    position
        .multiplier
        .unwrap_or_else(|| default_multiplier(position.asset_type))
}

/// What one close request's orders realized on `position`, at the position's multiplier.
pub fn close_request_pnl(position: &Position, orders: &[Order]) -> Pnl {
    close_pnl(position, orders, multiplier(position))
}

/// `a + b`; unknown when either is (the first reason wins).
pub fn sum(a: Pnl, b: Pnl) -> Pnl {
    a?.checked_add(b?).map(|d| d.normalize()).ok_or(PnlUnknown::OutOfRange)
}

/// Everything the position realized, cumulative over its partial and full closes: the
/// settled share of earlier close requests plus the latest one's.
pub fn position_pnl(agg: &PositionAggregate) -> Pnl {
    sum(
        agg.position.realized_pnl_settled,
        close_request_pnl(&agg.position, &agg.orders),
    )
}

/// What one order's fills realized on `position` (its sign tells long from short).
pub fn order_pnl(position: &Position, order: &Order, multiplier: Decimal) -> Result<Decimal, PnlUnknown> {
    if order.filled_qty.is_zero() {
        return Ok(Decimal::ZERO);
    }
    let entry = position.avg_entry_price.ok_or(PnlUnknown::EntryPriceUnknown)?.value();
    let exit = order.filled_avg_price.ok_or(PnlUnknown::FillPriceUnknown)?.value();
    let per_unit = if position.quantity.is_negative() {
        entry.checked_sub(exit)
    } else {
        exit.checked_sub(entry)
    };
    per_unit
        .and_then(|d| d.checked_mul(order.filled_qty.value()))
        .and_then(|d| d.checked_mul(multiplier))
        .map(|d| d.normalize())
        .ok_or(PnlUnknown::OutOfRange)
}

/// What all of a close's orders realized: the sum of [`order_pnl`], unknown if any is.
pub fn close_pnl(position: &Position, orders: &[Order], multiplier: Decimal) -> Result<Decimal, PnlUnknown> {
    orders.iter().try_fold(Decimal::ZERO, |sum, o| {
        sum.checked_add(order_pnl(position, o, multiplier)?)
            .ok_or(PnlUnknown::OutOfRange)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{ClientOrderId, OrderStatus};
    use crate::testing::{aggregate, qty, t0};
    use crate::{CloseRequestId, Quantity};

    fn position(quantity: &str, entry: Option<&str>, asset: AssetType) -> Position {
        let mut p = aggregate("p", quantity, crate::PositionStatus::Closed).position;
        p.avg_entry_price = entry.map(crate::testing::price);
        p.asset_type = asset;
        p
    }

    fn filled(q: &str, price: Option<&str>) -> Order {
        let id = CloseRequestId::new(&crate::testing::pid("p"), [7; 16]);
        let mut o = Order::new(ClientOrderId::new(id, 1), qty(q));
        o.status = OrderStatus::Filled;
        o.filled_qty = qty(q);
        o.filled_avg_price = price.map(crate::testing::price);
        o
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn long_short_option_and_partial_closes_with_known_prices() {
        // Long 10 AAPL bought at 150, sold at 187.5: +375.
        let long = position("10", Some("150"), AssetType::Equity);
        assert_eq!(
            order_pnl(&long, &filled("10", Some("187.5")), Decimal::ONE),
            Ok(d("375"))
        );
        // Short 5 TSLA sold at 250, bought back at 260: −50.
        let short = position("-5", Some("250"), AssetType::Equity);
        assert_eq!(order_pnl(&short, &filled("5", Some("260")), Decimal::ONE), Ok(d("-50")));
        // Short 2 option contracts at 3.20, bought back at 1.05, ×100: +430.
        let option = position("-2", Some("3.20"), AssetType::Option);
        let m = default_multiplier(AssetType::Option);
        assert_eq!(order_pnl(&option, &filled("2", Some("1.05")), m), Ok(d("430")));
        // A partial close in two orders: 3 at 160 and 4 at 140 on a 150 entry: 30 − 40.
        let orders = [filled("3", Some("160")), filled("4", Some("140"))];
        assert_eq!(close_pnl(&long, &orders, Decimal::ONE), Ok(d("-10")));
        // Exact decimals: 0.1 + 0.2 is 0.3 here.
        let cents = position("3", Some("0.1"), AssetType::Equity);
        assert_eq!(order_pnl(&cents, &filled("3", Some("0.2")), Decimal::ONE), Ok(d("0.3")));
    }

    #[test]
    fn a_superseded_close_settles_into_the_position_and_unknown_stays_unknown() {
        let mut agg = crate::testing::aggregate("p", "10", crate::PositionStatus::Open);
        agg.position.avg_entry_price = Some(crate::testing::price("100"));
        let crate::CloseDecision::Create(opened) =
            crate::decide_close(Some(&agg), &crate::testing::close("p", "k-1", t0()))
        else {
            panic!("the close opens")
        };
        agg.latest_close_request = opened.latest_close_request;
        agg.orders = vec![filled("4", Some("101.25"))];
        assert_eq!(
            position_pnl(&agg),
            Ok(d("5")),
            "the latest close counts before it settles"
        );
        agg.retire_latest_close();
        assert_eq!(agg.position.realized_pnl_settled, Ok(d("5")));
        assert_eq!((agg.orders.len(), agg.history.len()), (0, 1));
        assert_eq!(position_pnl(&agg), Ok(d("5")), "settled once, not twice");
        // Dropping history (cleanup) leaves the cumulative figure alone.
        agg.history.clear();
        assert_eq!(position_pnl(&agg), Ok(d("5")));
        // A later close without a known entry makes the total unknown, not 5.
        agg.position.avg_entry_price = None;
        agg.orders = vec![filled("1", Some("1"))];
        assert_eq!(position_pnl(&agg), Err(PnlUnknown::EntryPriceUnknown));
        // The position's own multiplier wins over the asset type's.
        agg.position.avg_entry_price = Some(crate::testing::price("1"));
        agg.position.multiplier = Some(d("10"));
        agg.orders = vec![filled("1", Some("3"))];
        assert_eq!(position_pnl(&agg), Ok(d("25")));
        assert_eq!(
            PnlUnknown::parse("fill_price_unknown"),
            Some(PnlUnknown::FillPriceUnknown)
        );
    }

    #[test]
    fn an_unknown_input_makes_the_result_unknown_not_a_guess() {
        let unknown_entry = position("10", None, AssetType::Equity);
        assert_eq!(
            order_pnl(&unknown_entry, &filled("10", Some("1")), Decimal::ONE),
            Err(PnlUnknown::EntryPriceUnknown)
        );
        let known = position("10", Some("1"), AssetType::Equity);
        assert_eq!(
            order_pnl(&known, &filled("10", None), Decimal::ONE),
            Err(PnlUnknown::FillPriceUnknown)
        );
        // Nothing filled realizes nothing, even with unknown prices.
        let mut nothing = filled("10", None);
        nothing.filled_qty = Quantity::ZERO;
        assert_eq!(order_pnl(&unknown_entry, &nothing, Decimal::ONE), Ok(Decimal::ZERO));
        let huge = position("10", Some("0"), AssetType::Equity);
        assert_eq!(
            order_pnl(
                &huge,
                &filled("10", Some("79228162514264337593543950335")),
                Decimal::ONE
            ),
            Err(PnlUnknown::OutOfRange)
        );
    }
}
