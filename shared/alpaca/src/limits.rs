//! One key pair's request budget and circuit breaker.
//!
//! - Pacing: a `governor` limiter (GCRA) spends the budget evenly, `BROKER_RATE_LIMIT`
//!   requests per window (Alpaca's 200 a minute by default). A request waits for its turn
//!   up to `BROKER_RATE_LIMIT_WAIT`; a longer wait is answered at once with
//!   `RateLimited` (the work is delayed: the message comes back, the lookup runs later).
//! - The broker's word: `X-RateLimit-Remaining: 0` (or a 429) pauses every request of the
//!   key pair until `X-RateLimit-Reset` (or `Retry-After`), however many processes share
//!   the key pair.
//! - Circuit breaker (seed 002): `BROKER_BREAKER_FAILURES` ambiguous failures (timeouts,
//!   transport errors, 5xx) within `BROKER_BREAKER_WINDOW` open it; for
//!   `BROKER_BREAKER_COOL_DOWN` no request is sent (`Unavailable`), then the next request
//!   tries again. Closes wait in flight, and an alert says the broker is unreachable.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use closeflow_pipeline::BrokerError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests allowed per `window`.
    pub requests: u32,
    pub window: Duration,
    /// The longest a request waits for its turn before answering `RateLimited`.
    pub max_wait: Duration,
    /// Ambiguous failures within `breaker_window` that open the breaker.
    pub breaker_failures: u32,
    pub breaker_window: Duration,
    /// How long an open breaker leaves the broker alone.
    pub cool_down: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 200,
            window: Duration::from_secs(60),
            max_wait: Duration::from_secs(10),
            breaker_failures: 5,
            breaker_window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// `200/min`, `10/s`, `1000/h`, `5/10s`; a bare number counts per minute.
pub fn parse_rate(spec: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{spec}`: expected REQUESTS/WINDOW, e.g. 200/min, 10/s or 5/10s");
    let (n, per) = spec.trim().split_once('/').unwrap_or((spec.trim(), "min"));
    let requests: u32 = n.trim().parse().map_err(|_| bad())?;
    let window = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => closeflow_pipeline::sim_broker::parse_duration(other).ok_or_else(bad)?,
    };
    if requests == 0 || window.is_zero() {
        return Err(bad());
    }
    Ok((requests, window))
}

impl Limits {
    /// `BROKER_RATE_LIMIT` (200/min), `BROKER_RATE_LIMIT_WAIT` (10s),
    /// `BROKER_BREAKER_FAILURES` (5), `BROKER_BREAKER_WINDOW` (60s),
    /// `BROKER_BREAKER_COOL_DOWN` (30s).
    pub fn from_env() -> Result<Limits, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let duration = |k: &str, default: Duration| -> Result<Duration, String> {
            env(k).map_or(Ok(default), |v| {
                closeflow_pipeline::sim_broker::parse_duration(&v)
                    .ok_or_else(|| format!("{k}: `{v}` is not a duration (500ms, 2s, 1m)"))
            })
        };
        let d = Limits::default();
        let (requests, window) = match env("BROKER_RATE_LIMIT") {
            Some(v) => parse_rate(&v).map_err(|e| format!("BROKER_RATE_LIMIT: {e}"))?,
            None => (d.requests, d.window),
        };
        let breaker_failures = match env("BROKER_BREAKER_FAILURES") {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("BROKER_BREAKER_FAILURES: `{v}` must be a whole number > 0"))?,
            None => d.breaker_failures,
        };
        Ok(Limits {
            requests,
            window,
            max_wait: duration("BROKER_RATE_LIMIT_WAIT", d.max_wait)?,
            breaker_failures,
            breaker_window: duration("BROKER_BREAKER_WINDOW", d.breaker_window)?,
            cool_down: duration("BROKER_BREAKER_COOL_DOWN", d.cool_down)?,
        })
    }
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
}

pub(crate) struct Guard {
    limits: Limits,
    pacer: DefaultDirectRateLimiter,
    /// The broker said the budget is spent until then.
    paused_until: Mutex<Option<Instant>>,
    breaker: Mutex<BreakerState>,
}

impl Guard {
    pub(crate) fn new(limits: Limits) -> Guard {
        let requests = NonZeroU32::new(limits.requests).unwrap_or(NonZeroU32::MIN);
        let period = limits.window / requests.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(requests);
        Guard {
            limits,
            pacer: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(BreakerState::default()),
        }
    }

    pub(crate) fn breaker_open(&self) -> bool {
        let b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        b.open_until.is_some_and(|t| t > Instant::now())
    }

    /// Before a request: the breaker, the broker's pause, then our own pacing. Waits when
    /// the wait is short; says "try later" when it is not.
    pub(crate) async fn before(&self) -> Result<(), BrokerError> {
        {
            let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
            match b.open_until {
                Some(t) if t > Instant::now() => {
                    return Err(BrokerError::Unavailable {
                        retry_after: t - Instant::now(),
                    })
                }
                Some(_) => {
                    // Cool-down over: the next answers decide (half-open).
                    b.open_until = None;
                    b.failures.clear();
                    tracing::info!("broker circuit breaker half-open: trying the broker again");
                }
                None => {}
            }
        }
        let paused = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = paused {
            let now = Instant::now();
            if until > now {
                let wait = until - now;
                if wait > self.limits.max_wait {
                    return Err(BrokerError::RateLimited { retry_after: wait });
                }
                tokio::time::sleep(wait).await;
            }
        }
        loop {
            match self.pacer.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if wait > self.limits.max_wait {
                        return Err(BrokerError::RateLimited { retry_after: wait });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Reads the answer's rate-limit headers; returns how long the key pair now pauses
    /// (at least a second after a 429 that names no time).
    pub(crate) fn read_headers(
        &self,
        remaining: Option<String>,
        reset: Option<String>,
        retry_after: Option<String>,
        too_many: bool,
    ) -> Duration {
        let remaining: Option<u64> = remaining.and_then(|r| r.trim().parse().ok());
        let until_reset = reset.and_then(|r| r.trim().parse::<u64>().ok()).map(|reset| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            // Unix seconds: the window ends at the start of that second; one more second
            // covers our clock's distance from the broker's.
            Duration::from_secs(reset.saturating_sub(now.as_secs()) + 1)
                .saturating_sub(Duration::from_nanos(u64::from(now.subsec_nanos())))
        });
        let retry_after = retry_after
            .and_then(|r| r.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let pause = if too_many {
            Some(
                retry_after
                    .or(until_reset)
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(100)),
            )
        } else if remaining == Some(0) {
            until_reset
        } else {
            None
        };
        let Some(pause) = pause.map(|p| p.min(self.limits.window.max(Duration::from_secs(1)) * 2)) else {
            return Duration::ZERO;
        };
        let until = Instant::now() + pause;
        let mut p = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
        if too_many {
            tracing::warn!(
                alert = closeflow_domain::trouble::RATE_LIMITED.as_str(),
                pause_ms = pause.as_millis() as u64,
                "broker answered 429: requests paused"
            );
        }
        pause
    }

    /// An ambiguous failure (timeout, transport, 5xx): counted toward the breaker.
    pub(crate) fn failed(&self) {
        let now = Instant::now();
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        b.failures.push_back(now);
        while b
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limits.breaker_window)
        {
            b.failures.pop_front();
        }
        if b.failures.len() >= self.limits.breaker_failures as usize && b.open_until.is_none() {
            b.open_until = Some(now + self.limits.cool_down);
            tracing::error!(
                alert = closeflow_domain::trouble::UNREACHABLE.as_str(),
                failures = b.failures.len(),
                cool_down_ms = self.limits.cool_down.as_millis() as u64,
                "broker unreachable: circuit breaker open, closes wait in flight"
            );
        }
    }

    /// The broker answered: the failure streak is over.
    pub(crate) fn answered(&self) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if !b.failures.is_empty() {
            b.failures.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("200/min"), Ok((200, Duration::from_secs(60))));
        assert_eq!(parse_rate("200"), Ok((200, Duration::from_secs(60))));
        assert_eq!(parse_rate("5/10s"), Ok((5, Duration::from_secs(10))));
        for bad in ["", "0/min", "x", "5/fortnight"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_breaker_opens_after_the_failures_and_closes_after_the_cool_down() {
        let g = Guard::new(Limits {
            breaker_failures: 3,
            cool_down: Duration::from_millis(100),
            ..Limits::default()
        });
        for _ in 0..2 {
            g.failed();
        }
        assert!(g.before().await.is_ok(), "two failures: still closed");
        g.answered();
        for _ in 0..2 {
            g.failed();
        }
        assert!(!g.breaker_open(), "an answer ended the streak");
        g.failed();
        assert!(g.breaker_open());
        assert!(matches!(g.before().await, Err(BrokerError::Unavailable { .. })));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(g.before().await.is_ok(), "cool-down over: tried again");
        assert!(!g.breaker_open());
    }

    #[tokio::test]
    async fn a_spent_budget_waits_when_short_and_says_try_later_when_long() {
        let g = Guard::new(Limits {
            requests: 2,
            window: Duration::from_secs(60),
            max_wait: Duration::from_millis(50),
            ..Limits::default()
        });
        assert!(g.before().await.is_ok());
        assert!(g.before().await.is_ok());
        let Err(BrokerError::RateLimited { retry_after }) = g.before().await else {
            panic!("budget spent")
        };
        assert!(retry_after > Duration::from_secs(20), "{retry_after:?}");
    }
}
