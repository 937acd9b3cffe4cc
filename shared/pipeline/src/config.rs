//! Job settings from the environment. Durations accept `500ms`, `2s`, `10m`, `1h`, `3d`.

use chrono::TimeDelta;
use closeflow_domain::Policy;

use crate::reconciler::ReconcileConfig;

pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit (ms, s, m, h, d)"))?;
    let d = match unit {
        "ms" => TimeDelta::milliseconds(n),
        "s" => TimeDelta::seconds(n),
        "m" => TimeDelta::minutes(n),
        "h" => TimeDelta::hours(n),
        "d" => TimeDelta::days(n),
        _ => return Err(format!("`{text}`: unit must be ms, s, m, h or d")),
    };
    if d <= TimeDelta::zero() {
        return Err(format!("`{text}`: must be positive"));
    }
    Ok(d)
}

fn env_duration(name: &str, default: TimeDelta) -> Result<TimeDelta, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => parse_duration(&v).map_err(|e| format!("{name}: {e}")),
        _ => Ok(default),
    }
}

fn env_number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| format!("{name}: `{v}` is not a number")),
        _ => Ok(default),
    }
}

/// `ZOMBIE_AFTER` (2m), `STUCK_AFTER` (10m), `RETRY_BACKOFF` (30s), `RETENTION` (3d),
/// `AUDIT_RETENTION` (400d),
/// `MAX_BROKER_QUERIES` (25 per run).
pub fn reconcile_config_from_env() -> Result<ReconcileConfig, String> {
    let d = Policy::default();
    let defaults = ReconcileConfig::default();
    Ok(ReconcileConfig {
        policy: Policy {
            zombie_after: env_duration("ZOMBIE_AFTER", d.zombie_after)?,
            stuck_after: env_duration("STUCK_AFTER", d.stuck_after)?,
            retry_backoff: env_duration("RETRY_BACKOFF", d.retry_backoff)?,
            not_found_limit: d.not_found_limit,
            redrive_limit: d.redrive_limit,
            retention: env_duration("RETENTION", d.retention)?,
            audit_retention: env_duration("AUDIT_RETENTION", d.audit_retention)?,
        },
        max_broker_queries: env_number("MAX_BROKER_QUERIES", defaults.max_broker_queries)?,
        page: defaults.page,
    })
}

/// `RECONCILE_EVERY` (1m) and `CLEANUP_EVERY` (1d): the embedded stack's timers.
pub fn timers_from_env() -> Result<(TimeDelta, TimeDelta), String> {
    Ok((
        env_duration("RECONCILE_EVERY", TimeDelta::minutes(1))?,
        env_duration("CLEANUP_EVERY", TimeDelta::days(1))?,
    ))
}

/// `SYNC_ACCOUNTS` (comma-separated account ids; none: nothing to sync), `SYNC_ADOPT`
/// (true), `SYNC_PRICE_TOLERANCE` (0.01 = 1 %), `SYNC_MAX_BROKER_CALLS` (25 per run).
pub fn sync_config_from_env() -> Result<crate::sync::SyncConfig, String> {
    let d = crate::sync::SyncConfig::default();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let accounts = var("SYNC_ACCOUNTS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| closeflow_domain::AccountId::parse(a).map_err(|e| format!("SYNC_ACCOUNTS: `{a}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let adopt = match var("SYNC_ADOPT").as_deref().map(str::trim) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => return Err(format!("SYNC_ADOPT: `{other}` is not true or false")),
    };
    let price_tolerance = match var("SYNC_PRICE_TOLERANCE") {
        None => d.policy.price_tolerance,
        Some(t) => t
            .trim()
            .parse::<rust_decimal::Decimal>()
            .ok()
            .filter(|v| !v.is_sign_negative())
            .ok_or_else(|| format!("SYNC_PRICE_TOLERANCE: `{t}` is not a non-negative decimal (0.01 = 1 %)"))?,
    };
    Ok(crate::sync::SyncConfig {
        accounts,
        policy: closeflow_domain::sync::SyncPolicy { adopt, price_tolerance },
        max_broker_calls: env_number("SYNC_MAX_BROKER_CALLS", d.max_broker_calls)?,
    })
}

/// The simulated broker's settings, read the same way by every stack that runs it
/// (`make run`, `make run-aws-local`, `make invoke`, the paper broker):
/// `SIM_BROKER_SCENARIOS` (behaviour per symbol), `SIM_BROKER_PRICES` (fill price per
/// symbol), `SIM_BROKER_POSITIONS` (what each account holds at the start) and
/// `SIM_BROKER_EQUITY` (every account's equity, default 100000). Each error names its
/// variable and the bad entry.
pub fn sim_scenarios_from_env() -> Result<crate::SimScenarios, String> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    crate::SimScenarios::parse(&var("SIM_BROKER_SCENARIOS"))
        .map_err(|e| format!("SIM_BROKER_SCENARIOS: {e}"))?
        .with_prices(&var("SIM_BROKER_PRICES"))
        .map_err(|e| format!("SIM_BROKER_PRICES: {e}"))?
        .with_positions(&var("SIM_BROKER_POSITIONS"))
        .map_err(|e| format!("SIM_BROKER_POSITIONS: {e}"))?
        .with_equity(&var("SIM_BROKER_EQUITY"))
        .map_err(|e| format!("SIM_BROKER_EQUITY: {e}"))
}

/// `SYNC_EVERY`: the embedded stack's sync timer. Unset: 5 minutes when there are holdings
/// to compare (`has_holdings`: a real broker, or seeded simulated holdings), otherwise off.
/// The drawdown guard's settings: `DRAWDOWN_WARN_PCT` and `DRAWDOWN_LIQUIDATE_PCT` (percent;
/// each off unless set), the accounts of `DRAWDOWN_ACCOUNTS` (else `SYNC_ACCOUNTS`).
pub fn drawdown_config_from_env(max_retries: u32) -> Result<crate::drawdown::DrawdownConfig, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let pct = |name: &str| -> Result<Option<rust_decimal::Decimal>, String> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<rust_decimal::Decimal>()
                    .map_err(|_| format!("{name}: `{v}` is not a decimal percentage (5 = 5 %)"))
            })
            .transpose()
    };
    let policy = closeflow_domain::DrawdownPolicy {
        warn_pct: pct("DRAWDOWN_WARN_PCT")?,
        liquidate_pct: pct("DRAWDOWN_LIQUIDATE_PCT")?,
    };
    policy
        .validate()
        .map_err(|e| format!("DRAWDOWN_WARN_PCT / DRAWDOWN_LIQUIDATE_PCT: {e}"))?;
    let (name, list) = match var("DRAWDOWN_ACCOUNTS") {
        Some(l) => ("DRAWDOWN_ACCOUNTS", l),
        None => ("SYNC_ACCOUNTS", var("SYNC_ACCOUNTS").unwrap_or_default()),
    };
    let accounts = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| closeflow_domain::AccountId::parse(a).map_err(|e| format!("{name}: `{a}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::drawdown::DrawdownConfig {
        accounts,
        policy,
        max_retries,
    })
}

pub fn sync_every_from_env(has_holdings: bool) -> Result<Option<TimeDelta>, String> {
    sync_every(std::env::var("SYNC_EVERY").ok().as_deref(), has_holdings)
}

/// `SYNC_EVERY`'s value (`None` or empty: unset) read as [`sync_every_from_env`] reads it.
pub fn sync_every(value: Option<&str>, has_holdings: bool) -> Result<Option<TimeDelta>, String> {
    match value {
        Some(v) if !v.is_empty() => parse_duration(v).map(Some).map_err(|e| format!("SYNC_EVERY: {e}")),
        _ => Ok(has_holdings.then(|| TimeDelta::minutes(5))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_is_off_against_a_broker_holding_nothing_unless_asked_for() {
        assert_eq!(sync_every(None, false), Ok(None), "an empty simulated broker");
        assert_eq!(sync_every(Some(""), false), Ok(None));
        assert_eq!(
            sync_every(None, true),
            Ok(Some(TimeDelta::minutes(5))),
            "seeded or Alpaca"
        );
        assert_eq!(sync_every(Some("10s"), false), Ok(Some(TimeDelta::seconds(10))));
        assert!(sync_every(Some("soon"), true).unwrap_err().starts_with("SYNC_EVERY: "));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("2s"), Ok(TimeDelta::seconds(2)));
        assert_eq!(parse_duration("500ms"), Ok(TimeDelta::milliseconds(500)));
        assert_eq!(parse_duration("10m"), Ok(TimeDelta::minutes(10)));
        assert_eq!(parse_duration("3d"), Ok(TimeDelta::days(3)));
        for bad in ["", "2", "s", "2w", "-1s", "0s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
