//! The operator console: one static page (HTML, CSS, JS compiled into the binary) served by
//! the same router as the API, so it works wherever the API does, offline included. It
//! talks only to this origin's API with the bearer token the operator pastes.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub const CONSOLE_PATH: &str = "/console";

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Nothing but this origin: no CDN, no third-party script, not framed by another site.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// `GET /console` and its two assets.
pub fn console_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(CONSOLE_PATH, get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_another_host() {
        for (name, text) in [("index.html", INDEX), ("console.js", SCRIPT), ("console.css", STYLE)] {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "{name} refers to `{scheme}`");
            }
        }
        assert!(INDEX.contains(r#"src="/console/console.js""#));
        assert!(INDEX.contains(r#"href="/console/console.css""#));
    }
}
