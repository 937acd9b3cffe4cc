//! The per-account drawdown guard: how far equity has fallen from its high-water mark, and
//! whether that calls for a warning or an emergency liquidation.
//!
//! `drawdown % = (high water − equity) / high water × 100`, in exact decimals. The high
//! water rises with equity and never falls. A warning fires once when the drawdown reaches
//! `warn_pct`, a liquidation once when it reaches `liquidate_pct`; neither repeats while its
//! level holds, and both are re-armed only when the drawdown recovers below the lower of
//! the two thresholds (so equity hovering around a threshold does not fire again and again).

use rust_decimal::Decimal;

/// Where an account stands against its drawdown thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrawdownLevel {
    #[default]
    Normal,
    Warned,
    Liquidating,
}

impl DrawdownLevel {
    pub const ALL: [DrawdownLevel; 3] = [DrawdownLevel::Normal, DrawdownLevel::Warned, DrawdownLevel::Liquidating];

    pub fn as_str(&self) -> &'static str {
        match self {
            DrawdownLevel::Normal => "normal",
            DrawdownLevel::Warned => "warned",
            DrawdownLevel::Liquidating => "liquidating",
        }
    }

    pub fn parse(s: &str) -> Option<DrawdownLevel> {
        DrawdownLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// What is kept per account between two equity readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DrawdownState {
    /// The highest equity seen (0 until equity was ever positive).
    pub high_water: Decimal,
    pub level: DrawdownLevel,
}

/// Thresholds in percent (`5` is 5 %). Each is off unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DrawdownPolicy {
    pub warn_pct: Option<Decimal>,
    pub liquidate_pct: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DrawdownPolicyError {
    #[error("{0} must be above 0 and at most 100 (percent)")]
    OutOfRange(&'static str),
    #[error("warn_pct must be below liquidate_pct")]
    WarnNotBelowLiquidate,
}

impl DrawdownPolicy {
    /// A policy whose thresholds make sense: each in (0, 100], a warning before a
    /// liquidation. [`decide`] copes with any policy; this is for configuration.
    pub fn validate(&self) -> Result<(), DrawdownPolicyError> {
        let in_range = |p: Decimal| p > Decimal::ZERO && p <= Decimal::ONE_HUNDRED;
        if self.warn_pct.is_some_and(|p| !in_range(p)) {
            return Err(DrawdownPolicyError::OutOfRange("warn_pct"));
        }
        if self.liquidate_pct.is_some_and(|p| !in_range(p)) {
            return Err(DrawdownPolicyError::OutOfRange("liquidate_pct"));
        }
        match (self.warn_pct, self.liquidate_pct) {
            (Some(w), Some(l)) if w >= l => Err(DrawdownPolicyError::WarnNotBelowLiquidate),
            _ => Ok(()),
        }
    }

    /// Below this the account is back to normal and both thresholds fire again.
    fn rearm_below(&self) -> Option<Decimal> {
        match (self.warn_pct, self.liquidate_pct) {
            (Some(w), Some(l)) => Some(w.min(l)),
            (w, l) => w.or(l),
        }
    }
}

/// What the reading calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrawdownDecision {
    None,
    Warn { drawdown_pct: Decimal },
    Liquidate { drawdown_pct: Decimal },
}

/// `(high water − equity) / high water × 100`, or `None` without a positive high water
/// (nothing to fall from). Past the decimal range (equity hugely negative) it is
/// `Decimal::MAX`: beyond every threshold.
pub fn drawdown_pct(high_water: Decimal, equity: Decimal) -> Option<Decimal> {
    if high_water <= Decimal::ZERO {
        return None;
    }
    let Some(fall) = high_water.checked_sub(equity) else {
        return Some(Decimal::MAX);
    };
    // Multiplying first keeps the one rounding (of the division) at the 28th digit.
    let pct = match fall.checked_mul(Decimal::ONE_HUNDRED) {
        Some(scaled) => scaled.checked_div(high_water),
        None => fall
            .checked_div(high_water)
            .and_then(|r| r.checked_mul(Decimal::ONE_HUNDRED)),
    };
    Some(pct.unwrap_or(Decimal::MAX).normalize())
}

/// The next state and what to do, from the last state (`None`: first reading) and the
/// account's equity now.
pub fn decide(
    state: Option<&DrawdownState>,
    equity: Decimal,
    policy: &DrawdownPolicy,
) -> (DrawdownState, DrawdownDecision) {
    let previous = state.map_or(Decimal::ZERO, |s| s.high_water);
    let high_water = previous.max(equity).max(Decimal::ZERO);
    let was = state.map_or(DrawdownLevel::Normal, |s| s.level);
    let pct = drawdown_pct(high_water, equity);
    let reached = |threshold: Option<Decimal>| matches!((threshold, pct), (Some(t), Some(p)) if p >= t);
    let now = if reached(policy.liquidate_pct) {
        DrawdownLevel::Liquidating
    } else if reached(policy.warn_pct) {
        DrawdownLevel::Warned
    } else {
        DrawdownLevel::Normal
    };
    let recovered = match (policy.rearm_below(), pct) {
        (Some(r), Some(p)) => p < r,
        _ => true,
    };
    let drawdown_pct = pct.unwrap_or(Decimal::ZERO);
    use DrawdownLevel::*;
    let (level, decision) = match (was, now) {
        (Liquidating, Liquidating) => (Liquidating, DrawdownDecision::None),
        (_, Liquidating) => (Liquidating, DrawdownDecision::Liquidate { drawdown_pct }),
        (Normal, Warned) => (Warned, DrawdownDecision::Warn { drawdown_pct }),
        (Normal, Normal) => (Normal, DrawdownDecision::None),
        (Warned, Warned) => (Warned, DrawdownDecision::None),
        (Warned | Liquidating, _) if recovered => (Normal, DrawdownDecision::None),
        // Below the liquidation threshold but not recovered: the level holds, so a
        // drawdown hovering around the threshold liquidates once.
        (held, _) => (held, DrawdownDecision::None),
    };
    (DrawdownState { high_water, level }, decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn policy(warn: Option<&str>, liquidate: Option<&str>) -> DrawdownPolicy {
        DrawdownPolicy {
            warn_pct: warn.map(d),
            liquidate_pct: liquidate.map(d),
        }
    }

    /// Feeds `equities` in order; the decisions.
    fn run(p: &DrawdownPolicy, equities: &[&str]) -> (DrawdownState, Vec<DrawdownDecision>) {
        let mut state = None;
        let mut out = Vec::new();
        for e in equities {
            let (next, decision) = decide(state.as_ref(), d(e), p);
            state = Some(next);
            out.push(decision);
        }
        (state.unwrap(), out)
    }

    #[test]
    fn drawdown_is_an_exact_percentage_of_the_high_water() {
        assert_eq!(drawdown_pct(d("100000"), d("87500")), Some(d("12.5")));
        assert_eq!(
            drawdown_pct(d("0.3"), d("0.2")),
            Some(d("33.333333333333333333333333333"))
        );
        assert_eq!(drawdown_pct(d("100"), d("100")), Some(Decimal::ZERO));
        assert_eq!(drawdown_pct(d("100"), d("0")), Some(d("100")));
        assert_eq!(drawdown_pct(d("100"), d("-50")), Some(d("150")));
        assert_eq!(drawdown_pct(Decimal::ZERO, d("-5")), None);
        assert_eq!(drawdown_pct(Decimal::MAX, Decimal::MIN), Some(Decimal::MAX), "no panic");
        assert_eq!(drawdown_pct(Decimal::MAX, Decimal::ZERO), Some(d("100")), "no panic");
    }

    #[test]
    fn the_first_reading_sets_the_high_water() {
        let p = policy(Some("5"), Some("10"));
        let (s, dec) = decide(None, d("100000"), &p);
        assert_eq!(
            s,
            DrawdownState {
                high_water: d("100000"),
                level: DrawdownLevel::Normal
            }
        );
        assert_eq!(dec, DrawdownDecision::None);
    }

    #[test]
    fn the_high_water_rises_with_equity_and_never_falls() {
        let (s, _) = run(&DrawdownPolicy::default(), &["100", "120", "90", "119.99", "0", "-10"]);
        assert_eq!(s.high_water, d("120"));
    }

    #[test]
    fn a_warning_fires_once_when_the_warn_threshold_is_reached() {
        let p = policy(Some("5"), Some("10"));
        let (s, decisions) = run(&p, &["100", "96", "95", "94", "95"]);
        assert_eq!(
            decisions,
            vec![
                DrawdownDecision::None,
                DrawdownDecision::None,
                DrawdownDecision::Warn { drawdown_pct: d("5") },
                DrawdownDecision::None,
                DrawdownDecision::None,
            ]
        );
        assert_eq!(s.level, DrawdownLevel::Warned);
        let (s, decisions) = run(&p, &["100", "95", "95.5", "95"]);
        assert_eq!(s.level, DrawdownLevel::Warned, "warned again after recovering to 4.5 %");
        assert_eq!(decisions[3], DrawdownDecision::Warn { drawdown_pct: d("5") });
    }

    #[test]
    fn a_liquidation_fires_once_while_its_level_holds() {
        let p = policy(Some("5"), Some("10"));
        let (s, decisions) = run(&p, &["100", "94", "90", "88", "92", "89", "80"]);
        assert_eq!(
            decisions,
            vec![
                DrawdownDecision::None,
                DrawdownDecision::Warn { drawdown_pct: d("6") },
                DrawdownDecision::Liquidate { drawdown_pct: d("10") },
                DrawdownDecision::None,
                // Back between the thresholds: still liquidating, nothing new.
                DrawdownDecision::None,
                DrawdownDecision::None,
                DrawdownDecision::None,
            ]
        );
        assert_eq!(s.level, DrawdownLevel::Liquidating);
    }

    #[test]
    fn a_sudden_fall_past_both_thresholds_liquidates_without_a_warning_first() {
        let p = policy(Some("5"), Some("10"));
        let (_, decisions) = run(&p, &["100", "50"]);
        assert_eq!(decisions[1], DrawdownDecision::Liquidate { drawdown_pct: d("50") });
    }

    #[test]
    fn recovering_below_the_warn_threshold_rearms_both() {
        let p = policy(Some("5"), Some("10"));
        let (s, decisions) = run(&p, &["100", "89", "96", "94", "89"]);
        assert_eq!(
            decisions,
            vec![
                DrawdownDecision::None,
                DrawdownDecision::Liquidate { drawdown_pct: d("11") },
                DrawdownDecision::None,
                DrawdownDecision::Warn { drawdown_pct: d("6") },
                DrawdownDecision::Liquidate { drawdown_pct: d("11") },
            ]
        );
        assert_eq!(s.level, DrawdownLevel::Liquidating);
        let (s, _) = run(&p, &["100", "89", "101"]);
        assert_eq!(
            s,
            DrawdownState {
                high_water: d("101"),
                level: DrawdownLevel::Normal
            }
        );
    }

    #[test]
    fn thresholds_are_off_unless_set() {
        let (s, decisions) = run(&DrawdownPolicy::default(), &["100", "1", "-5"]);
        assert!(decisions.iter().all(|x| *x == DrawdownDecision::None));
        assert_eq!(s.level, DrawdownLevel::Normal);
        // Only a liquidation threshold: it re-arms below itself.
        let p = policy(None, Some("10"));
        let (_, decisions) = run(&p, &["100", "90", "95", "89"]);
        assert_eq!(
            decisions,
            vec![
                DrawdownDecision::None,
                DrawdownDecision::Liquidate { drawdown_pct: d("10") },
                DrawdownDecision::None,
                DrawdownDecision::Liquidate { drawdown_pct: d("11") },
            ]
        );
        // Only a warning threshold.
        let (_, decisions) = run(&policy(Some("5"), None), &["100", "50", "10"]);
        assert_eq!(
            decisions,
            vec![
                DrawdownDecision::None,
                DrawdownDecision::Warn { drawdown_pct: d("50") },
                DrawdownDecision::None,
            ]
        );
    }

    #[test]
    fn equity_at_or_below_zero_never_panics() {
        let p = policy(Some("5"), Some("10"));
        // Never positive: no high water, nothing to fall from.
        let (s, decisions) = run(&p, &["0", "-100", "0"]);
        assert_eq!(s.high_water, Decimal::ZERO);
        assert!(decisions.iter().all(|x| *x == DrawdownDecision::None));
        // Wiped out after a positive reading: a drawdown of 100 % and more.
        let (_, decisions) = run(&p, &["100", "0"]);
        assert_eq!(decisions[1], DrawdownDecision::Liquidate { drawdown_pct: d("100") });
        let (_, decisions) = run(&p, &["100", "-20"]);
        assert_eq!(decisions[1], DrawdownDecision::Liquidate { drawdown_pct: d("120") });
        let (s, decision) = decide(
            Some(&DrawdownState {
                high_water: Decimal::MAX,
                level: DrawdownLevel::Normal,
            }),
            Decimal::MIN,
            &p,
        );
        assert_eq!(s.high_water, Decimal::MAX);
        assert_eq!(
            decision,
            DrawdownDecision::Liquidate {
                drawdown_pct: Decimal::MAX
            }
        );
    }

    #[test]
    fn policies_are_validated_for_configuration() {
        assert_eq!(policy(Some("5"), Some("10")).validate(), Ok(()));
        assert_eq!(DrawdownPolicy::default().validate(), Ok(()));
        assert_eq!(
            policy(Some("0"), None).validate(),
            Err(DrawdownPolicyError::OutOfRange("warn_pct"))
        );
        assert_eq!(
            policy(None, Some("100.5")).validate(),
            Err(DrawdownPolicyError::OutOfRange("liquidate_pct"))
        );
        assert_eq!(
            policy(Some("10"), Some("10")).validate(),
            Err(DrawdownPolicyError::WarnNotBelowLiquidate)
        );
    }

    #[test]
    fn levels_have_stable_names() {
        for l in DrawdownLevel::ALL {
            assert_eq!(DrawdownLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(DrawdownLevel::parse("paused"), None);
    }

    fn equity() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (-1_000_000i64..2_000_000, 0u32..4).prop_map(|(m, s)| Decimal::new(m, s)),
            Just(Decimal::ZERO),
            Just(Decimal::MAX),
            Just(Decimal::MIN),
        ]
    }

    fn pct() -> impl Strategy<Value = Option<Decimal>> {
        proptest::option::of((1i64..=10_000, 0u32..3).prop_map(|(m, s)| Decimal::new(m, s)))
    }

    proptest! {
        #[test]
        fn the_high_water_never_falls_and_a_liquidation_fires_once_per_crossing(
            equities in proptest::collection::vec(equity(), 1..60),
            warn in pct(),
            liquidate in pct(),
        ) {
            let p = DrawdownPolicy { warn_pct: warn, liquidate_pct: liquidate };
            let rearm = p.rearm_below();
            let mut state: Option<DrawdownState> = None;
            // Whether a liquidation fired and the drawdown has not recovered since.
            let mut armed = true;
            for e in equities {
                let (next, decision) = decide(state.as_ref(), e, &p);
                let before = state.map_or(Decimal::ZERO, |s| s.high_water);
                prop_assert!(next.high_water >= before, "high water fell");
                prop_assert!(next.high_water >= e.max(Decimal::ZERO));
                let pct = drawdown_pct(next.high_water, e);
                let recovered = match (rearm, pct) {
                    (Some(r), Some(x)) => x < r,
                    _ => true,
                };
                match decision {
                    DrawdownDecision::Liquidate { drawdown_pct } => {
                        prop_assert!(armed, "a second liquidation without recovering in between");
                        prop_assert!(liquidate.is_some_and(|l| drawdown_pct >= l));
                        prop_assert_eq!(next.level, DrawdownLevel::Liquidating);
                        armed = false;
                    }
                    DrawdownDecision::Warn { drawdown_pct } => {
                        prop_assert!(warn.is_some_and(|w| drawdown_pct >= w));
                        prop_assert_eq!(next.level, DrawdownLevel::Warned);
                    }
                    DrawdownDecision::None => {}
                }
                if recovered {
                    armed = true;
                }
                state = Some(next);
            }
        }
    }
}
