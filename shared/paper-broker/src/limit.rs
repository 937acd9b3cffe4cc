//! `PAPER_RATE_LIMIT`: requests per window for the whole account, as Alpaca counts them
//! (200 a minute by default there), answered past the limit with 429 and
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds).

use std::sync::Mutex;
use std::time::Duration;

use chrono::TimeDelta;
use closeflow_domain::Timestamp;
use closeflow_pipeline::sim_broker::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// `200/min`, `10/s`, `1000/h`, or a window as a duration: `5/10s`.
    pub fn parse(spec: &str) -> Result<RateLimit, String> {
        let bad = || format!("`{spec}`: expected REQUESTS/WINDOW, e.g. 200/min, 10/s or 5/10s");
        let (n, per) = spec.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let window = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => parse_duration(other).ok_or_else(bad)?,
        };
        if requests == 0 || window.is_zero() {
            return Err(bad());
        }
        Ok(RateLimit { requests, window })
    }
}

/// What one request may do, and the headers that say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When the window resets, in unix seconds.
    pub reset: i64,
}

/// A fixed window from the first request in it: simple, and what the headers describe.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    window: Mutex<Option<(Timestamp, u32)>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            window: Mutex::new(None),
        }
    }

    pub fn check(&self, now: Timestamp) -> Decision {
        let span = TimeDelta::from_std(self.limit.window).unwrap_or(TimeDelta::MAX);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (start, used) = match *w {
            Some((start, used)) if now < start + span => (start, used),
            _ => (now, 0),
        };
        let allowed = used < self.limit.requests;
        let used = if allowed { used + 1 } else { used };
        *w = Some((start, used));
        Decision {
            allowed,
            limit: self.limit.requests,
            remaining: self.limit.requests - used,
            reset: (start + span).timestamp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn specs_parse() {
        assert_eq!(
            RateLimit::parse("200/min"),
            Ok(RateLimit {
                requests: 200,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(RateLimit::parse("10/s").unwrap().window, Duration::from_secs(1));
        assert_eq!(RateLimit::parse("5/10s").unwrap().window, Duration::from_secs(10));
        for bad in ["", "200", "0/min", "x/min", "200/fortnight", "200/0s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_window_counts_down_refuses_past_the_limit_and_resets() {
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let l = Limiter::new(RateLimit::parse("2/min").unwrap());
        let reset = (t0 + TimeDelta::seconds(60)).timestamp();
        assert_eq!(
            l.check(t0),
            Decision {
                allowed: true,
                limit: 2,
                remaining: 1,
                reset
            }
        );
        assert_eq!(l.check(t0 + TimeDelta::seconds(30)).remaining, 0);
        let refused = l.check(t0 + TimeDelta::seconds(59));
        assert_eq!((refused.allowed, refused.remaining, refused.reset), (false, 0, reset));
        let next = l.check(t0 + TimeDelta::seconds(60));
        assert_eq!((next.allowed, next.remaining), (true, 1));
    }
}
