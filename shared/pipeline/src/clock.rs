//! Time and randomness as ports: handlers never read the clock or the RNG directly.

use std::sync::Mutex;

use chrono::{DurationRound, TimeDelta, Utc};
use closeflow_domain::Timestamp;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// Wall clock, truncated to the millisecond precision every store keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = Utc::now();
        now.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(now)
    }
}

/// A clock that only moves when told to: tests of time-dependent behaviour need no sleeping.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Source of the random bits in new ids.
pub trait RandomSource: Send + Sync {
    fn random_bytes(&self) -> [u8; 16];
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn random_bytes(&self) -> [u8; 16] {
        uuid::Uuid::new_v4().into_bytes()
    }
}
