//! Request rate limiting per caller for the embedded stack (in AWS, API Gateway throttles;
//! see `template.yaml`). A caller is its bearer token when the token is a known one, else
//! its peer address: unknown tokens cannot mint fresh allowances.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::auth::Auth;
use crate::error::ApiError;

/// Sustained requests per second and burst allowed per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Default of `make run`: generous for people and scripts, a wall for floods.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 50,
        burst: 100,
    };

    /// `RATE_LIMIT_PER_SECOND` (0 turns limiting off) and `RATE_LIMIT_BURST` (default: twice
    /// the rate). `None` when limiting is off.
    pub fn from_env() -> Result<Option<RateLimit>, String> {
        let read = |name: &str| -> Result<Option<u32>, String> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name} must be a whole number, got `{v}`")),
                _ => Ok(None),
            }
        };
        let per_second = read("RATE_LIMIT_PER_SECOND")?.unwrap_or(Self::DEFAULT.per_second);
        if per_second == 0 {
            return Ok(None);
        }
        let burst = read("RATE_LIMIT_BURST")?.unwrap_or(per_second.saturating_mul(2));
        if burst == 0 {
            return Err("RATE_LIMIT_BURST must be at least 1".into());
        }
        Ok(Some(RateLimit { per_second, burst }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    Token(String),
    Peer(IpAddr),
    /// In-process calls carry no peer address; they share one allowance.
    Local,
}

/// Keys requests by caller (see the module docs).
#[derive(Clone)]
struct ByCaller {
    tokens: Option<Arc<HashMap<String, crate::auth::Grant>>>,
}

impl KeyExtractor for ByCaller {
    type Key = CallerKey;

    fn extract<T>(&self, req: &Request<T>) -> Result<CallerKey, GovernorError> {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let (Some(token), Some(tokens)) = (token, &self.tokens) {
            if tokens.contains_key(token) {
                return Ok(CallerKey::Token(token.to_string()));
            }
        }
        Ok(match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => CallerKey::Peer(addr.ip()),
            None => CallerKey::Local,
        })
    }
}

/// How often idle callers' state is dropped, so the key map does not grow without bound.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

/// Wraps `router` in a per-caller limit: over it, 429 `rate_limited` with `Retry-After`.
/// Must be called inside a Tokio runtime (a task forgets idle callers; it ends with the
/// router).
pub fn rate_limited(router: Router, limit: RateLimit, auth: &Auth) -> Router {
    let tokens = match auth {
        Auth::Tokens(t) => Some(t.clone()),
        Auth::Jwt { .. } => None,
    };
    let period = Duration::from_nanos(1_000_000_000 / u64::from(limit.per_second.max(1)));
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst.max(1))
        .key_extractor(ByCaller { tokens })
        .finish()
        .expect("period and burst are non-zero");
    let limiter: Weak<_> = Arc::downgrade(config.limiter());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FORGET_IDLE_EVERY).await;
            let Some(limiter) = limiter.upgrade() else { return };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
    router.layer(GovernorLayer::new(config).error_handler(|e| {
        use axum::response::IntoResponse;
        match e {
            GovernorError::TooManyRequests { wait_time, .. } => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests from this caller; retry after the Retry-After delay",
                );
                err.retry_after_ms = Some(wait_time.max(1).saturating_mul(1000));
                err.into_response()
            }
            other => {
                tracing::error!(error = %other, "rate limiter failed");
                ApiError::internal().into_response()
            }
        }
    }))
}
