//! The closeflow HTTP API: one axum [`Router`], served by `lambda_http` behind API Gateway
//! and directly by the embedded stack (`make run`).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{get, post, put, MethodRouter};
use axum::Router;
use closeflow_store::CloseStore;

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod bulk;
pub mod console;
pub mod error;
mod extract;
mod handlers;
pub mod limits;
pub mod openapi;
pub mod rate_limit;
pub mod server;
mod strategy_close;
mod views;

pub use closeflow_pipeline::clock::{self, Clock, ManualClock, RandomSource, SystemClock, SystemRandom};
pub use error::ApiError;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Automatic retries a close request may use (seed 000 `max_retries`).
    pub max_retries: u32,
    pub poll_interval_ms: u64,
    /// Suggested wait after a `position_locked` answer.
    pub retry_after_ms: u64,
    /// Live (not yet closed) positions one account may hold: bounds what one caller stores.
    pub max_positions_per_account: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_retries: 3,
            poll_interval_ms: 1000,
            retry_after_ms: 1000,
            max_positions_per_account: 10_000,
        }
    }
}

impl ApiConfig {
    /// Defaults, with `MAX_POSITIONS_PER_ACCOUNT` from the environment.
    pub fn from_env() -> Result<ApiConfig, String> {
        let mut cfg = ApiConfig::default();
        if let Ok(v) = std::env::var("MAX_POSITIONS_PER_ACCOUNT") {
            if !v.is_empty() {
                cfg.max_positions_per_account = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("MAX_POSITIONS_PER_ACCOUNT: `{v}` is not a positive number"))?;
            }
        }
        Ok(cfg)
    }
}

/// Everything a handler needs, built once at start-up (in Lambda: once per cold start).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn CloseStore>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
    pub config: ApiConfig,
    /// HMAC secret of the broker webhook. Empty: every webhook call is refused (401).
    pub webhook_secret: Arc<Vec<u8>>,
    pub auth: auth::Auth,
    /// The broker, for what the API asks of it directly: canceling a close's working orders.
    pub broker: Arc<dyn closeflow_pipeline::Broker>,
    /// The pipeline's work queue: long work (a bulk close's fan-out) is handed to it, never
    /// done inside a request.
    pub queue: Arc<dyn closeflow_pipeline::OrderQueue>,
}

impl AppState {
    /// Maps a store failure to the API's answer (busy -> 409 with this state's retry hint).
    pub fn store_error(&self) -> impl Fn(closeflow_store::StoreError) -> ApiError {
        let retry_after_ms = self.config.retry_after_ms;
        move |e| ApiError::from_store(e, retry_after_ms)
    }

    pub fn new(store: Arc<dyn CloseStore>) -> Self {
        AppState {
            store,
            clock: Arc::new(SystemClock),
            random: Arc::new(SystemRandom),
            config: ApiConfig::default(),
            webhook_secret: Arc::new(Vec::new()),
            // Secure by default: no token is valid until one is configured.
            auth: auth::Auth::Tokens(Arc::new(Default::default())),
            broker: Arc::new(NoBroker),
            queue: Arc::new(NoQueue),
        }
    }

    /// The same state with this work queue.
    pub fn with_queue(mut self, queue: Arc<dyn closeflow_pipeline::OrderQueue>) -> Self {
        self.queue = queue;
        self
    }

    /// The same state with this broker.
    pub fn with_broker(mut self, broker: Arc<dyn closeflow_pipeline::Broker>) -> Self {
        self.broker = broker;
        self
    }
}

/// A state without a broker answers every broker call as unreachable: a cancel is then
/// refused (`broker_unavailable`), never assumed.
struct NoBroker;

#[async_trait::async_trait]
impl closeflow_pipeline::Broker for NoBroker {
    async fn submit_order(
        &self,
        _: &closeflow_domain::OrderIntent,
    ) -> Result<closeflow_pipeline::BrokerOrder, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn get_order_by_client_id(
        &self,
        _: &closeflow_domain::AccountId,
        _: &closeflow_domain::ClientOrderId,
    ) -> Result<closeflow_pipeline::BrokerOrder, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn cancel_order(
        &self,
        _: &closeflow_domain::AccountId,
        _: &str,
    ) -> Result<(), closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn list_positions(
        &self,
        _: &closeflow_domain::AccountId,
    ) -> Result<Vec<closeflow_pipeline::broker::BrokerPosition>, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn open_orders(
        &self,
        _: &closeflow_domain::AccountId,
        _: &str,
    ) -> Result<Vec<closeflow_pipeline::broker::OpenOrder>, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn account_equity(
        &self,
        _: &closeflow_domain::AccountId,
    ) -> Result<rust_decimal::Decimal, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
    async fn account_open_orders(
        &self,
        _: &closeflow_domain::AccountId,
    ) -> Result<Vec<closeflow_pipeline::broker::OpenOrder>, closeflow_pipeline::BrokerError> {
        Err(no_broker())
    }
}

/// A state without a queue refuses long work (`queue_unavailable`) rather than drop it.
struct NoQueue;

#[async_trait::async_trait]
impl closeflow_pipeline::OrderQueue for NoQueue {
    async fn send(&self, _: &closeflow_pipeline::QueueMessage) -> Result<(), closeflow_pipeline::QueueError> {
        Err(closeflow_pipeline::QueueError::Unavailable(
            "no work queue configured".into(),
        ))
    }
}

fn no_broker() -> closeflow_pipeline::BrokerError {
    closeflow_pipeline::BrokerError::Ambiguous("no broker configured".into())
}

/// Which routes a router serves. Each Lambda function serves only its own: the http-api
/// function has no webhook route (and no webhook secret), the broker-webhook function
/// nothing else. The embedded stack (`make run`) serves both on one router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    pub close_api: bool,
    pub broker_webhook: bool,
}

impl Routes {
    pub const CLOSE_API: Routes = Routes {
        close_api: true,
        broker_webhook: false,
    };
    pub const BROKER_WEBHOOK: Routes = Routes {
        close_api: false,
        broker_webhook: true,
    };
    pub const ALL: Routes = Routes {
        close_api: true,
        broker_webhook: true,
    };
}

/// The close API (positions and close requests), without the broker webhook.
pub fn router(state: AppState) -> Router {
    router_for(state, Routes::CLOSE_API)
}

/// `POST /webhooks/broker` alone: the broker-webhook function's router.
pub fn webhook_router(state: AppState) -> Router {
    router_for(state, Routes::BROKER_WEBHOOK)
}

/// Every route a router for `routes` serves, with its handler. The router is built from this
/// list only, and the OpenAPI test compares the list with the document, so a route cannot be
/// added without being documented.
fn route_table(routes: Routes) -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    let mut table = Vec::new();
    if routes.close_api {
        table.extend([
            (Method::PUT, "/positions/{position_id}", put(handlers::put_position)),
            (Method::GET, "/positions/{position_id}", get(handlers::get_position)),
            (
                Method::POST,
                "/positions/{position_id}/close",
                post(handlers::close_position),
            ),
            (
                Method::GET,
                "/close-requests/{close_request_id}",
                get(handlers::get_close_request),
            ),
            (
                Method::GET,
                "/positions/{position_id}/audit",
                get(audit::get_position_audit),
            ),
            (
                Method::GET,
                "/accounts/{account_id}/audit",
                get(audit::get_account_audit),
            ),
            (Method::GET, "/accounts/{account_id}", get(accounts::get_account)),
            (
                Method::POST,
                "/accounts/{account_id}/resume",
                post(accounts::resume_account),
            ),
            (Method::POST, "/accounts/{account_id}/close-all", post(bulk::close_all)),
            (Method::POST, "/accounts/{account_id}/liquidate", post(bulk::liquidate)),
            (Method::POST, "/guards/events", post(bulk::guard_event)),
            (Method::GET, "/bulk-closes/{bulk_close_id}", get(bulk::get_bulk_close)),
            (
                Method::POST,
                "/bulk-closes/{bulk_close_id}/retry-failed",
                post(bulk::retry_failed),
            ),
            (Method::GET, "/positions", get(handlers::list_positions)),
            (Method::GET, "/strategies/{strategy_id}", get(handlers::get_strategy)),
            (
                Method::POST,
                "/strategies/{strategy_id}/close",
                post(strategy_close::close_strategy),
            ),
            (
                Method::GET,
                "/strategy-closes/{strategy_close_id}",
                get(strategy_close::get_strategy_close),
            ),
            (
                Method::POST,
                "/strategy-closes/{strategy_close_id}/cancel",
                post(strategy_close::cancel_strategy_close),
            ),
            (
                Method::POST,
                "/close-requests/{close_request_id}/cancel",
                post(handlers::cancel_close_request),
            ),
            (
                Method::POST,
                "/close-requests/{close_request_id}/retry",
                post(handlers::retry_close_request),
            ),
            // Public: the contract and its page describe the API and change nothing.
            (Method::GET, openapi::OPENAPI_PATH, get(openapi::openapi_json)),
        ]);
    }
    if routes.broker_webhook {
        table.push((Method::POST, "/webhooks/broker", post(handlers::broker_webhook)));
    }
    table
}

/// The routes a router for `routes` serves, as (method, path template). `GET /docs` (with its
/// assets under `/docs/`) is served alongside the close API.
pub fn served_routes(routes: Routes) -> Vec<(Method, &'static str)> {
    let mut served: Vec<_> = route_table(routes).into_iter().map(|(m, p, _)| (m, p)).collect();
    if routes.close_api {
        served.push((Method::GET, openapi::DOCS_PATH));
        served.push((Method::GET, console::CONSOLE_PATH));
    }
    served
}

pub fn router_for(state: AppState, routes: Routes) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in route_table(routes) {
        // Routes on one path merge their methods.
        r = r.route(path, handler);
    }
    if routes.close_api {
        r = r.merge(openapi::docs_page_routes()).merge(console::console_routes());
    }
    r.fallback(handlers::route_not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(limits::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(limits::limit_headers))
        .with_state(state)
}
