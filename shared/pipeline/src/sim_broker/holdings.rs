//! What the simulated accounts hold, per account and symbol: a signed quantity (> 0 long,
//! < 0 short) and its average entry price. Seeded from `SIM_BROKER_POSITIONS`
//! (`ACC1:IBM=7,ACC1:AAPL=-3@187.5`), then moved by every fill, so position sync has
//! something true to compare with closeflow's positions.
//!
//! A fill that reduces a holding keeps its entry price (what was paid for what is left does
//! not change); one that adds to it averages the prices by quantity; one that crosses zero
//! opens the other side at the fill price. A holding that reaches zero is gone.

use std::collections::BTreeMap;

use closeflow_domain::Quantity;

/// Decimal places an averaged entry price keeps (Alpaca reports prices to 9 places); a
/// quantity-weighted average can have more digits than any price it came from.
const PRICE_PLACES: u32 = 9;

/// One holding of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Signed: > 0 long, < 0 short; never zero while held.
    pub qty: Quantity,
    pub avg_entry_price: Quantity,
}

/// One entry of a `SIM_BROKER_POSITIONS` spec; the price is `None` when the entry names
/// none (the broker then uses the symbol's simulated price).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedHolding {
    pub account: String,
    pub symbol: String,
    pub qty: Quantity,
    pub avg_entry_price: Option<Quantity>,
}

/// Parses `ACCOUNT:SYMBOL=QTY[@PRICE],…`: a signed, non-zero quantity in the JSON number
/// grammar, read exactly, and an optional entry price > 0. Each account and symbol at most
/// once. The error names the bad entry.
pub fn parse_seed(spec: &str) -> Result<Vec<SeedHolding>, String> {
    let mut out: Vec<SeedHolding> = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| format!("`{entry}`: {why} (expected ACCOUNT:SYMBOL=QTY or ACCOUNT:SYMBOL=QTY@PRICE)");
        let (key, value) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let (account, symbol) = key
            .split_once(':')
            .ok_or_else(|| bad("no `:` between account and symbol"))?;
        let (account, symbol) = (account.trim(), symbol.trim());
        if account.is_empty() || symbol.is_empty() || symbol.contains(char::is_whitespace) {
            return Err(bad("empty account or symbol"));
        }
        let (qty, price) = match value.split_once('@') {
            Some((q, p)) => (q.trim(), Some(p.trim())),
            None => (value.trim(), None),
        };
        let qty = Quantity::parse(qty).map_err(|e| bad(&format!("quantity: {e}")))?;
        if qty.is_zero() {
            return Err(bad("a quantity of 0 holds nothing"));
        }
        let avg_entry_price = match price {
            None => None,
            Some(p) => match Quantity::parse(p) {
                Ok(p) if !p.is_zero() && !p.is_negative() => Some(p),
                Ok(_) => return Err(bad("the entry price must be > 0")),
                Err(e) => return Err(bad(&format!("entry price: {e}"))),
            },
        };
        if out.iter().any(|h| h.account == account && h.symbol == symbol) {
            return Err(bad("this account and symbol are given twice"));
        }
        out.push(SeedHolding {
            account: account.to_string(),
            symbol: symbol.to_string(),
            qty,
            avg_entry_price,
        });
    }
    Ok(out)
}

/// Every account's holdings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    by_key: BTreeMap<(String, String), Holding>,
}

impl Holdings {
    /// The account's holdings by symbol.
    pub fn of(&self, account: &str) -> Vec<(String, Holding)> {
        self.by_key
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|((_, s), h)| (s.clone(), *h))
            .collect()
    }

    /// Every holding as `(account, symbol, holding)`, by account and symbol.
    pub fn all(&self) -> Vec<(String, String, Holding)> {
        self.by_key
            .iter()
            .map(|((a, s), h)| (a.clone(), s.clone(), *h))
            .collect()
    }

    pub fn get(&self, account: &str, symbol: &str) -> Option<Holding> {
        self.by_key.get(&(account.to_string(), symbol.to_string())).copied()
    }

    /// Sets a holding outright; a quantity of zero removes it.
    pub fn set(&mut self, account: &str, symbol: &str, qty: Quantity, avg_entry_price: Quantity) {
        let key = (account.to_string(), symbol.to_string());
        if qty.is_zero() {
            self.by_key.remove(&key);
        } else {
            self.by_key.insert(key, Holding { qty, avg_entry_price });
        }
    }

    /// Removes a holding; whether there was one.
    pub fn remove(&mut self, account: &str, symbol: &str) -> bool {
        self.by_key.remove(&(account.to_string(), symbol.to_string())).is_some()
    }

    /// Applies an execution of `signed` units (> 0 bought, < 0 sold) at `price`; returns
    /// the quantity held after it (zero: gone). `None`, changing nothing, when a value
    /// would leave the decimal range.
    pub fn apply_fill(&mut self, account: &str, symbol: &str, signed: Quantity, price: Quantity) -> Option<Quantity> {
        let key = (account.to_string(), symbol.to_string());
        let before = self.by_key.get(&key).copied();
        let after = next_holding(before, signed, price)?;
        match after {
            Some(h) => {
                self.by_key.insert(key, h);
                Some(h.qty)
            }
            None => {
                self.by_key.remove(&key);
                Some(Quantity::ZERO)
            }
        }
    }
}

/// The holding after an execution: `Some(None)` when it reaches zero, `None` past the
/// decimal range.
fn next_holding(before: Option<Holding>, signed: Quantity, price: Quantity) -> Option<Option<Holding>> {
    let Some(h) = before else {
        return Some((!signed.is_zero()).then_some(Holding {
            qty: signed,
            avg_entry_price: price,
        }));
    };
    let qty = h.qty.checked_add(signed)?;
    if qty.is_zero() {
        return Some(None);
    }
    let same_side = qty.is_negative() == h.qty.is_negative();
    let avg_entry_price = if !same_side {
        // Crossed zero: what is held now was all bought (or sold short) at this fill.
        price
    } else if qty.abs() <= h.qty.abs() {
        // A reduction: the rest was paid for at the old price.
        h.avg_entry_price
    } else {
        // Added to: the average of old and new units, weighted by quantity.
        let old = h.qty.abs().value().checked_mul(h.avg_entry_price.value())?;
        let new = signed.abs().value().checked_mul(price.value())?;
        let total = old.checked_add(new)?;
        Quantity::new(total.checked_div(qty.abs().value())?.round_dp(PRICE_PLACES))
    };
    Some(Some(Holding { qty, avg_entry_price }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn seeded(spec: &str) -> Holdings {
        let mut h = Holdings::default();
        for s in parse_seed(spec).unwrap() {
            h.set(&s.account, &s.symbol, s.qty, s.avg_entry_price.unwrap_or(q("100")));
        }
        h
    }

    #[test]
    fn a_seed_names_account_symbol_signed_quantity_and_optional_price() {
        assert_eq!(
            parse_seed(" ACC1:IBM=7, ACC1:AAPL=-3@187.5 ,ACC2:IBM=0.5").unwrap(),
            vec![
                SeedHolding {
                    account: "ACC1".into(),
                    symbol: "IBM".into(),
                    qty: q("7"),
                    avg_entry_price: None
                },
                SeedHolding {
                    account: "ACC1".into(),
                    symbol: "AAPL".into(),
                    qty: q("-3"),
                    avg_entry_price: Some(q("187.5"))
                },
                SeedHolding {
                    account: "ACC2".into(),
                    symbol: "IBM".into(),
                    qty: q("0.5"),
                    avg_entry_price: None
                },
            ]
        );
        assert_eq!(parse_seed("").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_seed_entry_is_refused_by_name() {
        for bad in [
            "ACC1:IBM",
            "IBM=7",
            ":IBM=7",
            "ACC1:=7",
            "ACC1:IBM=0",
            "ACC1:IBM=x",
            "ACC1:IBM=+7",
            "ACC1:IBM=7@0",
            "ACC1:IBM=7@-1",
            "ACC1:IBM=7@",
            "ACC1:IBM=1e400",
        ] {
            let err = parse_seed(&format!("ACC1:AAPL=1,{bad}")).unwrap_err();
            assert!(err.starts_with(&format!("`{bad}`")), "{bad}: {err}");
        }
        let twice = parse_seed("ACC1:IBM=7,ACC1:IBM=2").unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
    }

    #[test]
    fn selling_a_long_reduces_it_at_its_entry_price_and_removes_it_at_zero() {
        let mut h = seeded("A:IBM=7@120");
        assert_eq!(h.apply_fill("A", "IBM", q("-3"), q("150")), Some(q("4")));
        assert_eq!(
            h.get("A", "IBM"),
            Some(Holding {
                qty: q("4"),
                avg_entry_price: q("120")
            })
        );
        assert_eq!(h.apply_fill("A", "IBM", q("-4"), q("150")), Some(Quantity::ZERO));
        assert_eq!(h.get("A", "IBM"), None);
        assert!(h.of("A").is_empty(), "a holding at zero is gone");
    }

    #[test]
    fn buying_to_cover_a_short_raises_it_toward_zero() {
        let mut h = seeded("A:AAPL=-3@187.5");
        assert_eq!(h.apply_fill("A", "AAPL", q("1"), q("190")), Some(q("-2")));
        assert_eq!(h.get("A", "AAPL").unwrap().avg_entry_price, q("187.5"));
        assert_eq!(h.apply_fill("A", "AAPL", q("2"), q("190")), Some(Quantity::ZERO));
        assert_eq!(h.get("A", "AAPL"), None);
    }

    #[test]
    fn adding_averages_the_entry_price_and_crossing_zero_opens_the_other_side_at_the_fill() {
        let mut h = seeded("A:IBM=2@100");
        h.apply_fill("A", "IBM", q("1"), q("130"));
        assert_eq!(
            h.get("A", "IBM"),
            Some(Holding {
                qty: q("3"),
                avg_entry_price: q("110")
            })
        );
        h.apply_fill("A", "IBM", q("1"), q("100"));
        assert_eq!(h.get("A", "IBM").unwrap().avg_entry_price, q("107.5"));
        // 1 unit at 1 and 2 at 2 average 5/3: kept to 9 places, as the quotient does not end.
        let mut thirds = seeded("A:X=1@1");
        thirds.apply_fill("A", "X", q("2"), q("2"));
        assert_eq!(thirds.get("A", "X").unwrap().avg_entry_price, q("1.666666667"));
        assert_eq!(h.apply_fill("A", "IBM", q("-6"), q("90")), Some(q("-2")));
        assert_eq!(
            h.get("A", "IBM"),
            Some(Holding {
                qty: q("-2"),
                avg_entry_price: q("90")
            })
        );
    }

    #[test]
    fn accounts_are_apart_and_a_fill_with_nothing_held_opens_a_holding() {
        let mut h = seeded("A:IBM=7,B:IBM=1");
        h.apply_fill("B", "TSLA", q("-2"), q("250"));
        assert_eq!(h.of("A"), vec![("IBM".to_string(), h.get("A", "IBM").unwrap())]);
        assert_eq!(
            h.of("B").into_iter().map(|(s, h)| (s, h.qty)).collect::<Vec<_>>(),
            vec![("IBM".to_string(), q("1")), ("TSLA".to_string(), q("-2"))]
        );
    }

    #[test]
    fn a_fill_past_the_decimal_range_changes_nothing() {
        // Averaging 1e27 units at 1e27 multiplies past the range.
        let mut h = seeded("A:IBM=1e27@1e27");
        assert_eq!(h.apply_fill("A", "IBM", q("1"), q("1")), None);
        assert_eq!(h.get("A", "IBM").unwrap().qty, q("1e27"));
    }
}
