//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the response types in [`crate::views`], served at `GET /openapi.json` with a Swagger UI
//! page at `GET /docs` (assets compiled into the binary).
//!
//! What cannot be derived from a Rust type is built here from the code's own lists: the
//! status enums from the domain's `ALL` constants, and each operation's error codes per
//! status (checked against the handlers by the example test and by schemathesis, which
//! fails on any `error` value the document does not list).

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use closeflow_domain::{CloseRequestStatus, OrderStatus, PositionStatus};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, KnownFormat, Ref, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::handlers;

/// Where the document and the docs page are served. Both are public.
pub const OPENAPI_PATH: &str = "/openapi.json";
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "closeflow",
        description = "Closes trading positions safely: one close request per click, exactly one broker order per attempt, \
always ending `closed` or `close_failed`.\n\n\
Every error is `{\"error\": \"<stable code>\", \"message\": \"…\"}` (plus the fields named in its schema); each \
response lists the `error` values it can carry. Decimals (quantities, prices) are JSON strings in answers; \
requests accept a string or a JSON number in the same exact grammar, never rounded.\n\n\
Authentication: `Authorization: Bearer <token>` (a JWT verified by API Gateway in AWS; a token from \
`API_TOKENS` in the embedded stack). The broker webhook is signed instead (`X-Closeflow-Signature`).",
        license(name = "MIT")
    ),
    paths(
        handlers::put_position,
        handlers::get_position,
        handlers::close_position,
        handlers::get_close_request,
        handlers::list_positions,
        handlers::get_strategy,
        crate::strategy_close::close_strategy,
        crate::strategy_close::get_strategy_close,
        crate::strategy_close::cancel_strategy_close,
        handlers::cancel_close_request,
        handlers::retry_close_request,
        handlers::broker_webhook,
        crate::audit::get_position_audit,
        crate::audit::get_account_audit,
        crate::accounts::get_account,
        crate::accounts::resume_account,
        crate::bulk::close_all,
        crate::bulk::get_bulk_close,
        crate::bulk::retry_failed,
        crate::bulk::liquidate,
        crate::bulk::guard_event,
        openapi_json,
        docs_page,
        console_page,
    ),
    components(schemas(ErrorBody, Decimal, DecimalInput, NonNegativeDecimalInput)),
    modifiers(&Security, &OptionalCloseBody),
    tags(
        (name = "positions", description = "Register and read positions"),
        (name = "closes", description = "Close a position and follow its close request"),
        (name = "accounts", description = "An account's trading state: active, liquidating or halted"),
        (name = "bulk", description = "Close many positions at once, each with its own close request and outcome"),
        (name = "audit", description = "Who changed what, when and why: kept beyond the positions themselves"),
        (name = "webhooks", description = "Broker order updates (HMAC-signed, no bearer token)"),
        (name = "docs", description = "This document and its page (public)"),
    )
)]
pub struct ApiDoc;

/// The document served at [`OPENAPI_PATH`].
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub const BEARER: &str = "bearerAuth";
pub const WEBHOOK_SIGNATURE: &str = "webhookSignature";

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (AWS) or an API_TOKENS token (embedded stack)")
                    .description(Some(
                        "In AWS, API Gateway's JWT authorizer verifies the token and the caller's accounts come \
from its `accounts` claim. In the embedded stack, `API_TOKENS=\"token=acct1,acct2;other=*\"`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            WEBHOOK_SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Closeflow-Signature",
                "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`: the timestamp within ±300 s, \
up to 4 `v1` entries (a secret rotation), at most 1 KiB.",
            ))),
        );
    }
}

/// The close body may be left out (it then counts as `{}`), but `null` is not an object:
/// `required: false` rather than the nullable schema an `Option` body would document.
struct OptionalCloseBody;

impl Modify for OptionalCloseBody {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in [
            "/positions/{position_id}/close",
            "/close-requests/{close_request_id}/retry",
            "/strategies/{strategy_id}/close",
        ] {
            let body = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
                .and_then(|op| op.request_body.as_mut())
                .expect("the operation has a documented body");
            if let RefOr::T(body) = body {
                body.required = Some(Required::False);
            }
        }
    }
}

// ---- Schemas that no Rust type carries as such ----

/// JSON Schema pattern of a decimal in answers: plain digits, never an exponent.
pub const DECIMAL_OUT_PATTERN: &str = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$";
/// The one grammar every decimal input follows (JSON's number syntax; see
/// `closeflow_domain::Quantity`).
pub const DECIMAL_IN_PATTERN: &str = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$";
const UNSIGNED_DECIMAL_IN_PATTERN: &str = r"^(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$";

/// An exact decimal as answered: a JSON string.
pub struct Decimal;

impl PartialSchema for Decimal {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(DECIMAL_OUT_PATTERN))
            .description(Some("An exact decimal as a string (never a binary float)"))
            .examples(["10", "-2.5"])
            .into()
    }
}

impl ToSchema for Decimal {
    fn name() -> Cow<'static, str> {
        "Decimal".into()
    }
}

fn decimal_input(pattern: &str, minimum: Option<f64>, what: &str) -> RefOr<Schema> {
    let mut number = ObjectBuilder::new().schema_type(Type::Number);
    if let Some(m) = minimum {
        number = number.minimum(Some(m));
    }
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern)),
        )
        .item(number)
        .description(Some(format!(
            "{what}: a string or a JSON number, read exactly from its text in JSON's number grammar. A value that \
cannot be held exactly (more than 28 decimal places or 28 significant digits) is refused (400 `invalid_body`), never rounded."
        )))
        .examples([json!("10"), json!(2.5)])
        .into()
}

/// A decimal in a request: string or number, one exact grammar.
pub struct DecimalInput;

impl PartialSchema for DecimalInput {
    fn schema() -> RefOr<Schema> {
        decimal_input(DECIMAL_IN_PATTERN, None, "An exact decimal")
    }
}

impl ToSchema for DecimalInput {
    fn name() -> Cow<'static, str> {
        "DecimalInput".into()
    }
}

/// A decimal in a request that must not be negative (prices, fills).
pub struct NonNegativeDecimalInput;

impl PartialSchema for NonNegativeDecimalInput {
    fn schema() -> RefOr<Schema> {
        decimal_input(UNSIGNED_DECIMAL_IN_PATTERN, Some(0.0), "An exact, non-negative decimal")
    }
}

impl ToSchema for NonNegativeDecimalInput {
    fn name() -> Cow<'static, str> {
        "NonNegativeDecimalInput".into()
    }
}

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().collect::<Vec<_>>()))
        .into()
}

macro_rules! enum_schema {
    ($name:ident, $title:literal, $values:expr) => {
        pub struct $name;
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($values)
            }
        }
        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                $title.into()
            }
        }
    };
}

enum_schema!(
    PositionStatusSchema,
    "PositionStatus",
    PositionStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(PositionSourceSchema, "PositionSource", ["api", "broker"]);
enum_schema!(
    SyncStatusSchema,
    "SyncStatus",
    ["unchecked", "in_sync", "missing_at_broker", "conflict"]
);
enum_schema!(
    CloseRequestStatusSchema,
    "CloseRequestStatus",
    CloseRequestStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(
    OrderStatusSchema,
    "OrderStatus",
    OrderStatus::ALL.iter().map(|s| s.as_str())
);
enum_schema!(AssetTypeSchema, "AssetType", ["equity", "option"]);
enum_schema!(
    OrderTypeSchema,
    "OrderType",
    closeflow_domain::OrderType::ALL.iter().map(|t| t.as_str())
);
enum_schema!(
    TimeInForceSchema,
    "TimeInForce",
    closeflow_domain::TimeInForce::ALL.iter().map(|t| t.as_str())
);
enum_schema!(SideSchema, "Side", ["buy", "sell"]);
enum_schema!(
    TradingStateSchema,
    "TradingState",
    closeflow_domain::TradingState::ALL.iter().map(|t| t.as_str())
);
enum_schema!(
    PnlUnknownSchema,
    "PnlUnknown",
    closeflow_domain::pnl::PnlUnknown::ALL.iter().map(|u| u.code())
);
enum_schema!(CloseWarningSchema, "CloseWarning", ["leaves_other_legs_open"]);
enum_schema!(StrategyCloseModeSchema, "StrategyCloseMode", ["mleg", "legs"]);
enum_schema!(
    StrategyCloseStatusSchema,
    "StrategyCloseStatus",
    ["pending", "success", "partial", "error"]
);
enum_schema!(
    BulkStatusSchema,
    "BulkCloseStatus",
    ["running", "completed", "completed_with_errors"]
);
enum_schema!(GuardActionSchema, "GuardAction", ["close", "liquidate"]);
enum_schema!(BulkKindSchema, "BulkCloseKind", ["close_all", "liquidation"]);
enum_schema!(
    LiquidationPhaseSchema,
    "LiquidationPhase",
    ["cancel_orders", "sync", "close_shorts", "close_longs", "verify", "done"]
);
enum_schema!(
    BulkRowStatusSchema,
    "BulkCloseRowStatus",
    ["pending", "succeeded", "failed", "skipped"]
);
enum_schema!(
    StrategyStatusSchema,
    "StrategyStatus",
    closeflow_domain::StrategyStatus::ALL.iter().map(|s| s.as_str())
);

/// Every error answer. `error` is a stable code; each response narrows it to the codes that
/// status can carry on that operation.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: String,
    /// For people; wording may change.
    pub message: String,
    /// `position_locked`: suggested wait before retrying (also `Retry-After`, in seconds).
    #[schema(minimum = 0)]
    pub retry_after_ms: Option<u64>,
    /// `position_already_closing`: the close request in flight (null when unknown).
    #[schema(format = Uuid)]
    pub active_close_request_id: Option<Option<String>>,
    /// `quota_exceeded`: the account's limit of live positions.
    #[schema(minimum = 0)]
    pub limit: Option<u64>,
    /// `strategy_not_closable`: the leg that is not open.
    pub position_id: Option<String>,
    /// `invalid_state`, `position_not_open`, `not_retryable`, `strategy_not_closable`: the
    /// position's status.
    #[schema(value_type = Option<PositionStatusSchema>)]
    pub position_status: Option<String>,
}

/// What each stable error code means; the description of every error response.
pub const ERROR_CODES: &[(&str, &str)] = &[
    ("invalid_path", "the path is not UTF-8 once percent-decoded"),
    (
        "invalid_position_id",
        "position_id: 1 to 128 letters, digits, '.', '_', ':' or '-'",
    ),
    ("invalid_close_request_id", "not a close request id (a UUID)"),
    (
        "invalid_account_id",
        "account_id: 1 to 64 letters, digits, '.', '_', ':' or '-'",
    ),
    (
        "invalid_query",
        "an unknown, repeated or invalid query parameter, or bad form encoding (listings: account_id, status, strategy_id, limit 1 to 100)",
    ),
    ("invalid_limit", "limit: an integer from 1 to 500"),
    (
        "invalid_cursor",
        "cursor: only a next_cursor this API answered for the same listing or trail",
    ),
    ("invalid_since", "since: an RFC 3339 time"),
    (
        "invalid_body",
        "malformed JSON, a repeated or unknown key, a missing or invalid field",
    ),
    ("missing_idempotency_key", "the Idempotency-Key header is required"),
    (
        "invalid_idempotency_key",
        "Idempotency-Key: 1 to 255 printable ASCII characters",
    ),
    ("zero_quantity", "the position already has zero quantity"),
    (
        "invalid_qty",
        "qty must be greater than 0 and at most the position's absolute quantity",
    ),
    (
        "invalid_limit_price",
        "limit_price is required for a limit order (> 0) and refused for a market order",
    ),
    (
        "invalid_time_in_force",
        "time_in_force must be `day` or `gtc`; option orders are `day` only",
    ),
    (
        "invalid_extended_hours",
        "extended_hours is only for limit orders with time_in_force day",
    ),
    (
        "account_id_required",
        "the caller may act on every account: name one with account_id (or a strategy_id)",
    ),
    ("invalid_strategy_id", "strategy_id: 1 to 128 printable characters"),
    (
        "strategy_not_found",
        "no position of the caller's accounts carries this strategy_id",
    ),
    (
        "strategy_not_closable",
        "a leg of the strategy is not open (`position_id`, `position_status`); nothing was closed",
    ),
    (
        "too_many_legs",
        "a strategy close takes at most 99 legs (one atomic write)",
    ),
    (
        "mleg_not_available",
        "mode `mleg` was asked for and cannot be (the broker takes no multi-leg orders, or the strategy is not 2 to 4 option legs); nothing was closed",
    ),
    (
        "account_halted",
        "the account is `liquidating` or `halted` (`trading_state`): nothing that adds exposure is accepted until it is resumed",
    ),
    (
        "liquidation_in_progress",
        "the account is still liquidating (`trading_state`); resume it once the liquidation has ended",
    ),
    ("invalid_strategy_close_id", "not a strategy close id (a UUID)"),
    ("invalid_bulk_close_id", "not a bulk close id (a UUID)"),
    ("bulk_close_not_found", "no such bulk close (also: another account's)"),
    (
        "bulk_close_running",
        "the bulk close is still reaching its positions (or changed meanwhile); retry its failed rows once it has",
    ),
    ("nothing_to_retry", "no row of this bulk close has failed"),
    (
        "liquidation_not_retryable",
        "a liquidation retries by itself until the account is flat; liquidate again to go on",
    ),
    (
        "invalid_guard_event",
        "a guard event field is missing or invalid (`field` names it)",
    ),
    (
        "confirmation_required",
        "the body's `confirm` must be exactly `LIQUIDATE <account_id>`",
    ),
    (
        "queue_unavailable",
        "the request is recorded but its work could not be handed to the pipeline (`bulk_close_id`); send the same request again",
    ),
    (
        "strategy_close_not_found",
        "no such strategy close (also: another account's)",
    ),
    ("not_cancelable", "nothing of this close is working at the broker"),
    (
        "not_retryable",
        "only a failed close (position `close_failed`, nothing working) can be retried (`position_status`)",
    ),
    (
        "broker_unavailable",
        "the broker did not confirm the cancel; the order may still be working, ask again",
    ),
    (
        "invalid_state",
        "the position's status does not allow a close (`position_status` says which)",
    ),
    (
        "invalid_fill",
        "the broker reports more filled than the order was for; nothing written, alerted",
    ),
    ("unauthorized", "no, or an unknown, bearer token"),
    (
        "invalid_signature",
        "missing, malformed, expired or wrong X-Closeflow-Signature (or no secret configured)",
    ),
    ("forbidden", "the caller does not hold the account named in the body"),
    (
        "position_not_found",
        "no such position (also: another account's position)",
    ),
    (
        "close_request_not_found",
        "no such close request (also: another account's)",
    ),
    (
        "position_not_open",
        "only an open position can be changed (`position_status` says which it is)",
    ),
    ("position_id_unavailable", "the position id is held by another account"),
    (
        "position_id_collision",
        "the id's storage key collides with another position's; use another id",
    ),
    (
        "quota_exceeded",
        "the account already holds its limit of live positions (`limit`)",
    ),
    (
        "position_locked",
        "the position is being written; retry after `retry_after_ms` (nothing was written)",
    ),
    (
        "position_already_closing",
        "another close request is in flight (`active_close_request_id`)",
    ),
    (
        "idempotency_key_reused",
        "this Idempotency-Key was used on this position with a different body",
    ),
    ("body_too_large", "the body is over 64 KiB"),
    (
        "rate_limited",
        "too many requests from this caller (embedded stack; API Gateway throttles in AWS)",
    ),
    ("headers_too_large", "over 100 header fields or 16 KiB of headers"),
    (
        "internal_error",
        "a store failure; nothing was changed if the request was refused",
    ),
];

fn describe(code: &str) -> &'static str {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("error code `{code}` has no entry in ERROR_CODES"))
}

/// One documented error status of an operation: its codes and, optionally, an example.
pub struct ErrorStatus {
    pub status: StatusCode,
    pub codes: &'static [&'static str],
    pub example: Option<fn() -> Value>,
}

const fn err(status: StatusCode, codes: &'static [&'static str]) -> ErrorStatus {
    ErrorStatus {
        status,
        codes,
        example: None,
    }
}

const fn err_ex(status: StatusCode, codes: &'static [&'static str], example: fn() -> Value) -> ErrorStatus {
    ErrorStatus {
        status,
        codes,
        example: Some(example),
    }
}

fn retry_after_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1.0))))
        .description(Some(
            "Seconds to wait before retrying (`position_locked`, `rate_limited`)",
        ))
        .build()
}

fn error_responses(list: &[ErrorStatus]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|e| {
            let schema = AllOfBuilder::new().item(Ref::from_schema_name("Error")).item(
                ObjectBuilder::new()
                    .property("error", string_enum(e.codes.iter().copied()))
                    .required("error"),
            );
            let mut content = ContentBuilder::new().schema(Some(schema));
            if let Some(example) = e.example {
                content =
                    content.examples_from_iter([(e.codes[0], ExampleBuilder::new().value(Some(example())).build())]);
            }
            let description = e
                .codes
                .iter()
                .map(|c| format!("`{c}`: {}", describe(c)))
                .collect::<Vec<_>>()
                .join("; ");
            let mut response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content.build());
            if e.codes.iter().any(|c| matches!(*c, "position_locked" | "rate_limited")) {
                response = response.header("Retry-After", retry_after_header());
            }
            (e.status.as_u16().to_string(), response.build().into())
        })
        .collect()
}

/// Errors any request can meet before or around its handler.
const fn rate_limited() -> ErrorStatus {
    err(StatusCode::TOO_MANY_REQUESTS, &["rate_limited"])
}
const fn headers_too_large() -> ErrorStatus {
    err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &["headers_too_large"])
}
const fn body_too_large() -> ErrorStatus {
    err(StatusCode::PAYLOAD_TOO_LARGE, &["body_too_large"])
}
const fn internal() -> ErrorStatus {
    err(StatusCode::INTERNAL_SERVER_ERROR, &["internal_error"])
}

macro_rules! errors {
    ($name:ident, [$($e:expr),+ $(,)?]) => {
        pub struct $name;
        impl $name {
            pub fn list() -> Vec<ErrorStatus> {
                vec![$($e),+]
            }
        }
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&Self::list())
            }
        }
    };
}

errors!(
    PutPositionErrors,
    [
        err_ex(
            StatusCode::BAD_REQUEST,
            &["invalid_body", "invalid_path", "invalid_position_id"],
            || json!({"error": "invalid_body", "message": "asset_type must be `equity` or `option`"})
        ),
        err_ex(
            StatusCode::UNAUTHORIZED,
            &["unauthorized"],
            || json!({"error": "unauthorized", "message": "An Authorization: Bearer token is required"})
        ),
        err_ex(
            StatusCode::FORBIDDEN,
            &["forbidden"],
            || json!({"error": "forbidden", "message": "The caller may not act on this position's account"})
        ),
        err_ex(
            StatusCode::CONFLICT,
            &[
                "position_id_unavailable",
                "position_not_open",
                "position_id_collision",
                "quota_exceeded",
                "account_halted",
                "position_locked"
            ],
            || json!({"error": "position_id_unavailable", "message": "This position id is not available; register the position under another id"})
        ),
        body_too_large(),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    GetPositionErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_position_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err_ex(
            StatusCode::NOT_FOUND,
            &["position_not_found"],
            || json!({"error": "position_not_found", "message": "Position not found"})
        ),
        err(StatusCode::CONFLICT, &["position_locked"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    PositionAuditErrors,
    [
        err(
            StatusCode::BAD_REQUEST,
            &[
                "invalid_path",
                "invalid_position_id",
                "invalid_query",
                "invalid_limit",
                "invalid_cursor"
            ]
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["position_not_found"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    AccountAuditErrors,
    [
        err(
            StatusCode::BAD_REQUEST,
            &[
                "invalid_path",
                "invalid_account_id",
                "invalid_query",
                "invalid_limit",
                "invalid_cursor",
                "invalid_since"
            ]
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    GetAccountErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_account_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    ResumeAccountErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_account_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        err(StatusCode::CONFLICT, &["liquidation_in_progress"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    ClosePositionErrors,
    [
        err_ex(
            StatusCode::BAD_REQUEST,
            &[
                "missing_idempotency_key",
                "invalid_idempotency_key",
                "invalid_body",
                "invalid_path",
                "invalid_position_id",
                "zero_quantity",
                "invalid_state",
                "invalid_qty",
                "invalid_limit_price",
                "invalid_time_in_force",
                "invalid_extended_hours",
            ],
            || json!({"error": "missing_idempotency_key", "message": "The Idempotency-Key header is required"})
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err_ex(
            StatusCode::NOT_FOUND,
            &["position_not_found"],
            || json!({"error": "position_not_found", "message": "Position not found"})
        ),
        err_ex(
            StatusCode::CONFLICT,
            &["position_already_closing", "position_locked"],
            || json!({"error": "position_already_closing", "message": "Position is being closed by another request",
                      "active_close_request_id": "0b9d5d8a-9c33-8e61-8000-000000000000"})
        ),
        body_too_large(),
        err_ex(
            StatusCode::UNPROCESSABLE_ENTITY,
            &["idempotency_key_reused"],
            || json!({"error": "idempotency_key_reused", "message": "This Idempotency-Key was already used on this position with a different request body"})
        ),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    GetCloseRequestErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_close_request_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err_ex(
            StatusCode::NOT_FOUND,
            &["close_request_not_found"],
            || json!({"error": "close_request_not_found", "message": "Close request not found"})
        ),
        err(StatusCode::CONFLICT, &["position_locked"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    BrokerWebhookErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_body", "invalid_fill"]),
        err_ex(
            StatusCode::UNAUTHORIZED,
            &["invalid_signature"],
            || json!({"error": "invalid_signature", "message": "missing X-Closeflow-Signature header"})
        ),
        err(StatusCode::CONFLICT, &["position_locked"]),
        body_too_large(),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    ListPositionsErrors,
    [
        err(
            StatusCode::BAD_REQUEST,
            &["invalid_query", "invalid_cursor", "account_id_required"]
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        err(StatusCode::CONFLICT, &["position_locked"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    GetStrategyErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_strategy_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["strategy_not_found"]),
        err(StatusCode::CONFLICT, &["position_locked"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    CancelErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_close_request_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["close_request_not_found"]),
        err(StatusCode::CONFLICT, &["not_cancelable", "position_locked"]),
        body_too_large(),
        rate_limited(),
        headers_too_large(),
        err(StatusCode::BAD_GATEWAY, &["broker_unavailable"]),
        internal(),
    ]
);

errors!(
    RetryErrors,
    [
        err(
            StatusCode::BAD_REQUEST,
            &[
                "missing_idempotency_key",
                "invalid_idempotency_key",
                "invalid_body",
                "invalid_path",
                "invalid_close_request_id",
                "invalid_limit_price",
                "invalid_time_in_force",
                "invalid_extended_hours",
            ]
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["close_request_not_found"]),
        err(StatusCode::CONFLICT, &["not_retryable", "position_locked"]),
        body_too_large(),
        err(StatusCode::UNPROCESSABLE_ENTITY, &["idempotency_key_reused"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    CloseStrategyErrors,
    [
        err(
            StatusCode::BAD_REQUEST,
            &[
                "missing_idempotency_key",
                "invalid_idempotency_key",
                "invalid_body",
                "invalid_path",
                "invalid_strategy_id",
                "invalid_qty",
                "invalid_limit_price",
                "too_many_legs",
            ]
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["strategy_not_found"]),
        err_ex(
            StatusCode::CONFLICT,
            &["strategy_not_closable", "position_locked", "mleg_not_available"],
            || json!({"error": "strategy_not_closable",
                      "message": "Leg `ic-1-put-short` is `closing`: every leg must be open; nothing was closed",
                      "position_id": "ic-1-put-short", "position_status": "closing"})
        ),
        body_too_large(),
        err(StatusCode::UNPROCESSABLE_ENTITY, &["idempotency_key_reused"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    CancelStrategyCloseErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_strategy_close_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["strategy_close_not_found"]),
        err(StatusCode::CONFLICT, &["not_cancelable", "position_locked"]),
        body_too_large(),
        rate_limited(),
        headers_too_large(),
        err(StatusCode::BAD_GATEWAY, &["broker_unavailable"]),
        internal(),
    ]
);

errors!(
    GetStrategyCloseErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_strategy_close_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["strategy_close_not_found"]),
        err(StatusCode::CONFLICT, &["position_locked"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    CloseAllErrors,
    [
        err_ex(
            StatusCode::BAD_REQUEST,
            &[
                "missing_idempotency_key",
                "invalid_idempotency_key",
                "invalid_body",
                "invalid_path",
                "invalid_account_id",
                "invalid_time_in_force",
            ],
            || json!({"error": "invalid_body", "message": "asset_type must be `equity` or `option`"})
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        body_too_large(),
        err(StatusCode::UNPROCESSABLE_ENTITY, &["idempotency_key_reused"]),
        rate_limited(),
        headers_too_large(),
        internal(),
        err(StatusCode::SERVICE_UNAVAILABLE, &["queue_unavailable"]),
    ]
);

errors!(
    GuardEventErrors,
    [
        err_ex(
            StatusCode::BAD_REQUEST,
            &["invalid_body", "invalid_guard_event"],
            || json!({"error": "invalid_guard_event", "message": "`symbols` and `position_ids` exclude each other; give at most one",
                      "field": "position_ids"})
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        body_too_large(),
        err(StatusCode::UNPROCESSABLE_ENTITY, &["idempotency_key_reused"]),
        rate_limited(),
        headers_too_large(),
        internal(),
        err(StatusCode::SERVICE_UNAVAILABLE, &["queue_unavailable"]),
    ]
);

errors!(
    LiquidateErrors,
    [
        err_ex(
            StatusCode::BAD_REQUEST,
            &[
                "missing_idempotency_key",
                "invalid_idempotency_key",
                "invalid_body",
                "invalid_path",
                "invalid_account_id",
                "confirmation_required",
            ],
            || json!({"error": "confirmation_required",
                      "message": "A liquidation closes every position of the account: confirm with \"confirm\": \"LIQUIDATE acct-1\""})
        ),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::FORBIDDEN, &["forbidden"]),
        body_too_large(),
        err(StatusCode::UNPROCESSABLE_ENTITY, &["idempotency_key_reused"]),
        rate_limited(),
        headers_too_large(),
        internal(),
        err(StatusCode::SERVICE_UNAVAILABLE, &["queue_unavailable"]),
    ]
);

errors!(
    GetBulkCloseErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_bulk_close_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["bulk_close_not_found"]),
        rate_limited(),
        headers_too_large(),
        internal(),
    ]
);

errors!(
    RetryFailedErrors,
    [
        err(StatusCode::BAD_REQUEST, &["invalid_path", "invalid_bulk_close_id"]),
        err(StatusCode::UNAUTHORIZED, &["unauthorized"]),
        err(StatusCode::NOT_FOUND, &["bulk_close_not_found"]),
        err_ex(
            StatusCode::CONFLICT,
            &["bulk_close_running", "nothing_to_retry", "liquidation_not_retryable"],
            || json!({"error": "nothing_to_retry", "message": "No row of this bulk close has failed"})
        ),
        body_too_large(),
        rate_limited(),
        headers_too_large(),
        internal(),
        err(StatusCode::SERVICE_UNAVAILABLE, &["queue_unavailable"]),
    ]
);

errors!(DocsErrors, [rate_limited(), headers_too_large()]);

// ---- Parameters ----

fn path_param(name: &str, description: &str, schema: ObjectBuilder, example: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .example(Some(json!(example)))
        .build()
}

/// Pattern of position ids (`closeflow_domain::PositionId`).
pub const POSITION_ID_PATTERN: &str = r"^[A-Za-z0-9._:-]{1,128}$";

pub struct PositionIdParam;

impl IntoParams for PositionIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "position_id",
            "The client's id of the position: 1 to 128 letters, digits, '.', '_', ':' or '-'.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(POSITION_ID_PATTERN)),
            "pos-1",
        )]
    }
}

/// Pattern of account ids (`closeflow_domain::AccountId`).
pub const ACCOUNT_ID_PATTERN: &str = r"^[A-Za-z0-9._:-]{1,64}$";

pub struct AccountIdParam;

impl IntoParams for AccountIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "account_id",
            "An account the caller holds: 1 to 64 letters, digits, '.', '_', ':' or '-'.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(ACCOUNT_ID_PATTERN)),
            "acct-1",
        )]
    }
}

pub struct CloseRequestIdParam;

impl IntoParams for CloseRequestIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "close_request_id",
            "A close request id as answered by the close call (`close_request_id`, also in `poll_url`).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            "0b9d5d8a-9c33-8e61-8000-000000000000",
        )]
    }
}

pub struct StrategyIdParam;

impl IntoParams for StrategyIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "strategy_id",
            "The strategy_id its legs were registered with: 1 to 128 printable characters.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some(r"^[^\x00-\x1F\x7F-\x9F]+$")),
            "ic-1",
        )]
    }
}

pub struct BulkCloseIdParam;

impl IntoParams for BulkCloseIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "bulk_close_id",
            "A bulk close id as answered by close-all (`bulk_close_id`, also in `poll_url`).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            "5f0c2a4e-1b7d-8c3e-9a61-2f4b8d0e7c13",
        )]
    }
}

pub struct StrategyCloseIdParam;

impl IntoParams for StrategyCloseIdParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param(
            "strategy_close_id",
            "A strategy close id as answered by the strategy close (`strategy_close_id`, also in `poll_url`).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            "0b9d5d8a-9c33-8e61-8000-000000000000",
        )]
    }
}

fn query_param(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    query_param_builder(name, description, schema).build()
}

/// An optional query parameter, to finish (e.g. with an example) or build.
pub(crate) fn query_param_builder(name: &str, description: &str, schema: ObjectBuilder) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
}

/// The query of `GET /positions`; other parameters are refused (`invalid_query`).
pub struct ListPositionsParams;

impl IntoParams for ListPositionsParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_param(
                "account_id",
                "One of the caller's accounts (another: 403 `forbidden`). Without it, all of the caller's; a caller holding every account must name one (or a strategy_id).",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[A-Za-z0-9._:-]{1,64}$")),
            ),
            query_param(
                "status",
                "Only positions in this status (a filtered page may hold fewer than `limit` and still have a next_cursor).",
                ObjectBuilder::new().schema_type(Type::String).enum_values(Some(
                    PositionStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                )),
            ),
            query_param(
                "strategy_id",
                "Only the legs of this strategy.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(128))
                    .pattern(Some(r"^[^\x00-\x1F\x7F-\x9F]+$")),
            ),
            query_param(
                "limit",
                "Page size, 1 to 100 (default 50).",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1.0))
                    .maximum(Some(100.0)),
            ),
            query_param(
                "cursor",
                "The `next_cursor` of the previous page.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^([0-9a-f]{2})+$")),
            ),
        ]
    }
}

pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(
                "Chosen by the client, scoped to the position: a retry with the same key and body replays the \
close request (200) instead of creating another.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255))
                    .pattern(Some(r"^[\x20-\x7E]+$")),
            ))
            .example(Some(json!("6f1c-close-1")))
            .build()]
    }
}

// ---- Request and answer shapes documented here rather than derived ----

/// Body of `POST /positions/{position_id}/close`; empty and `{}` are the same request.
/// Mirrors the handler's `CLOSE_BODY_FIELDS` (a unit test compares them).
#[derive(ToSchema)]
#[schema(as = CloseBody)]
#[allow(dead_code)] // only its schema is used: the handler reads the body as JSON to fingerprint it
pub struct CloseBody {
    /// When the symbol's open orders at the broker hold the quantity to close, cancel
    /// them (closeflow's own orders excepted), wait for the broker to confirm, and close.
    /// Without it such a close fails with `blocked_by_open_orders`. Default `false`.
    pub cancel_open_orders: Option<bool>,
    /// Only for `limit` orders: may trade outside regular hours.
    pub extended_hours: Option<bool>,
    /// Required for (and only for) `order_type: limit`; every attempt keeps it.
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    pub limit_price: Option<String>,
    /// `market` (default) or `limit`.
    #[schema(inline, value_type = Option<OrderTypeSchema>)]
    pub order_type: Option<String>,
    /// Close only this much (0 < qty <= |quantity|): the rest stays open once it filled.
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    pub qty: Option<String>,
    /// Why the position is closed (kept on the close request).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub reason: Option<String>,
    /// `day` (default) or `gtc`; option orders are `day` only.
    #[schema(inline, value_type = Option<TimeInForceSchema>)]
    pub time_in_force: Option<String>,
}

/// Body of `POST /strategies/{strategy_id}/close`; empty and `{}` are the same request.
/// Mirrors `STRATEGY_CLOSE_BODY_FIELDS` (a unit test compares them).
#[derive(ToSchema)]
#[schema(as = StrategyCloseBody)]
#[allow(dead_code)] // only its schema is used
pub struct StrategyCloseBody {
    /// Net price of a multi-leg (`mleg`) limit order, sent as the order's `limit_price`:
    /// positive a debit (paid), negative a credit (received); 0 is refused (400
    /// `invalid_limit_price`). Refused in `legs` mode, where no one price fits every leg.
    #[schema(value_type = Option<DecimalInput>)]
    pub limit_price: Option<String>,
    /// `mleg` (one multi-leg order per attempt, `order_class: mleg`, each leg's fill shown
    /// on its own; the default for 2-4 option legs when the broker adapter places
    /// multi-leg orders) or `legs` (one order per leg). Where the broker cannot, `mleg`
    /// runs as `legs`; the answer's `mode` says what is done.
    #[schema(inline, value_type = Option<StrategyCloseModeSchema>)]
    pub mode: Option<String>,
    /// `market` (default) or `limit` (`mleg` only).
    #[schema(inline, value_type = Option<OrderTypeSchema>)]
    pub order_type: Option<String>,
    /// In strategy units (a whole number up to the greatest common divisor of the legs'
    /// quantities); each leg closes its share, keeping the ratios.
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    pub qty: Option<String>,
    /// Why the strategy is closed (kept on every leg's close request).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub reason: Option<String>,
}

/// Body of `POST /accounts/{account_id}/close-all`; empty and `{}` close every position of
/// the account. Every filter given must match. Mirrors `BULK_BODY_FIELDS` (a unit test
/// compares them).
#[derive(ToSchema)]
#[schema(as = BulkCloseBody)]
#[allow(dead_code)] // only its schema is used
pub struct BulkCloseBody {
    // Only `equity` or only `option` positions.
    #[schema(inline, value_type = Option<AssetTypeSchema>)]
    pub asset_type: Option<String>,
    /// Cancel a symbol's open orders when they hold the quantity to close (as on a single close).
    pub cancel_open_orders: Option<bool>,
    /// Why (kept on every close request it opens).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub reason: Option<String>,
    /// Only the legs of these strategies (each closes as a whole strategy).
    #[schema(min_items = 1, max_items = 500)]
    pub strategy_ids: Option<Vec<String>>,
    /// Only positions in these symbols. A leg of a strategy closes with its whole strategy.
    #[schema(min_items = 1, max_items = 500)]
    pub symbols: Option<Vec<String>>,
    // `day` (default) or `gtc` of every market order it places (option orders are `day`
    // only: an option position then fails its row with `invalid_time_in_force`).
    #[schema(inline, value_type = Option<TimeInForceSchema>)]
    pub time_in_force: Option<String>,
}

/// Body of `POST /guards/events`: a guard event's detail plus its `event_id`. Unknown
/// fields are refused (a misspelt `symbols` would otherwise widen a close to the account).
#[derive(ToSchema)]
#[schema(as = GuardEventBody)]
#[allow(dead_code)] // only its schema is used; the handler parses the raw bytes
pub struct GuardEventBody {
    /// Names the event: it starts its closes once (`guard:<event_id>` is their key).
    #[schema(min_length = 1, max_length = 128)]
    pub event_id: String,
    #[schema(min_length = 1, max_length = 64)]
    pub guard_id: String,
    /// `drawdown`, `market_gap`, `liquidity` or a custom name.
    #[schema(min_length = 1, max_length = 32)]
    pub guard: String,
    pub account_id: String,
    /// Only the positions in these symbols (`close` only; not with `position_ids`).
    #[schema(min_items = 1, max_items = 500)]
    pub symbols: Option<Vec<String>>,
    /// Only these positions (`close` only; not with `symbols`).
    #[schema(min_items = 1, max_items = 500)]
    pub position_ids: Option<Vec<String>>,
    // `close` (what the event scopes; the whole account without a scope) or `liquidate`.
    #[schema(inline, value_type = GuardActionSchema)]
    pub action: String,
    #[schema(value_type = Decimal)]
    pub observed: String,
    #[schema(value_type = Decimal)]
    pub threshold: String,
    /// The guard's own words, kept in every close's reason.
    #[schema(min_length = 1, max_length = 256)]
    pub reason: Option<String>,
}

/// Body of `POST /accounts/{account_id}/liquidate`. Mirrors `LIQUIDATE_BODY_FIELDS`.
#[derive(ToSchema)]
#[schema(as = LiquidateBody)]
#[allow(dead_code)] // only its schema is used
pub struct LiquidateBody {
    /// Exactly `LIQUIDATE <account_id>`: a liquidation is never started by accident.
    pub confirm: String,
    /// Why (kept on every close request it opens and on the account's trading state).
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub reason: Option<String>,
}

/// Body of `POST /close-requests/{close_request_id}/retry`: new order options for this and
/// later attempts (empty: the close's own). Mirrors the handler's `RETRY_BODY_FIELDS`.
#[derive(ToSchema)]
#[schema(as = RetryBody)]
#[allow(dead_code)] // only its schema is used
pub struct RetryBody {
    pub extended_hours: Option<bool>,
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    pub limit_price: Option<String>,
    #[schema(inline, value_type = Option<OrderTypeSchema>)]
    pub order_type: Option<String>,
    #[schema(inline, value_type = Option<TimeInForceSchema>)]
    pub time_in_force: Option<String>,
}

/// Body of `POST /webhooks/broker` (`closeflow_pipeline::webhook::WebhookBody`, which refuses
/// unknown fields; a test checks this mirror's fields and which are required against it).
#[derive(ToSchema)]
#[schema(as = BrokerUpdate)]
#[allow(dead_code)] // only its schema is used; the handler parses the raw, signed bytes
pub struct WebhookBodyDoc {
    /// `{close_request_id}-{attempt}`. An id closeflow did not mint is answered 202 `unknown_order`.
    pub client_order_id: String,
    pub broker_order_id: Option<String>,
    #[schema(inline, value_type = OrderStatusSchema)]
    pub status: String,
    /// Cumulative filled quantity.
    #[schema(value_type = NonNegativeDecimalInput)]
    pub filled_qty: String,
    #[schema(value_type = Option<NonNegativeDecimalInput>)]
    pub filled_avg_price: Option<String>,
    /// The broker's sequence number; an update not newer than the last applied is ignored.
    #[schema(schema_with = unsigned_64)]
    pub seq: Option<u64>,
    /// A repeated execution id is ignored.
    pub execution_id: Option<String>,
    /// RFC 3339; absent: the time of receipt.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// Answer of the broker webhook when the update was read.
#[derive(Serialize, ToSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
#[schema(as = WebhookResult)]
#[allow(dead_code)] // the handler builds these with json!; the example test and schemathesis check them
pub enum WebhookResult {
    /// The update changed the order; the position and close request are now as given.
    Applied {
        #[schema(inline, value_type = PositionStatusSchema)]
        position_status: String,
        #[schema(inline, value_type = CloseRequestStatusSchema)]
        close_request_status: String,
    },
    /// Nothing to apply (`StaleSeq`, `DuplicateExecution` or `NoChange`).
    Ignored {
        #[schema(inline, value_type = IgnoredReasonSchema)]
        reason: String,
    },
}

/// Any u64 (utoipa's default `int64` format would cap it at i64::MAX, below what is accepted).
fn unsigned_64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Integer,
            Type::Null,
        ]))
        .minimum(Some(0.0))
        .maximum(Some(u64::MAX as f64))
}

enum_schema!(
    IgnoredReasonSchema,
    "IgnoredReason",
    ["StaleSeq", "DuplicateExecution", "NoChange"]
);

/// Answer of the broker webhook for an order closeflow does not know.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookUnknownOrder)]
#[allow(dead_code)] // see WebhookResult
pub struct WebhookUnknownOrder {
    #[schema(inline, value_type = UnknownOrderResult)]
    pub result: String,
}

enum_schema!(UnknownOrderResult, "UnknownOrderResult", ["unknown_order"]);

// ---- The document's own routes ----

/// The OpenAPI document (this one).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "docs",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        DocsErrors,
    )
)]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    // Built once: the document is fixed for the life of the process.
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = JSON.get_or_init(|| document().to_json().expect("the document serialises"));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

/// The Swagger UI page for this document. Its assets are served under `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "getDocs",
    tag = "docs",
    security(()),
    responses(
        (status = 200, description = "HTML page", content_type = "text/html", body = String),
        (status = 303, description = "Redirect to `/docs/`, the page itself"),
        DocsErrors,
    )
)]
#[allow(dead_code)] // documents the route utoipa-swagger-ui serves
fn docs_page() {}

/// The operator console (`crate::console`): one page whose script calls this API with the
/// bearer token pasted into it. Its script and style are `/console/console.js` and
/// `/console/console.css`.
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "getConsole",
    tag = "docs",
    security(()),
    responses(
        (status = 200, description = "HTML page", content_type = "text/html", body = String),
        DocsErrors,
    )
)]
#[allow(dead_code)] // documents the route crate::console serves
fn console_page() {}

/// The docs page (`/docs`, redirecting to `/docs/`) and its assets, compiled into the binary.
pub fn docs_page_routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    utoipa_swagger_ui::SwaggerUi::new(DOCS_PATH)
        .config(
            utoipa_swagger_ui::Config::new([OPENAPI_PATH])
                // No badge fetched from the public validator: the page works offline.
                .validator_url("none"),
        )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_body_schema_lists_the_fields_the_handler_takes() {
        let doc = serde_json::to_value(document()).unwrap();
        let props: Vec<&str> = doc["components"]["schemas"]["CloseBody"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, handlers::CLOSE_BODY_FIELDS);
        let props: Vec<&str> = doc["components"]["schemas"]["RetryBody"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, handlers::RETRY_BODY_FIELDS);
        let props: Vec<&str> = doc["components"]["schemas"]["StrategyCloseBody"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, crate::strategy_close::STRATEGY_CLOSE_BODY_FIELDS);
        let props: Vec<&str> = doc["components"]["schemas"]["BulkCloseBody"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, crate::bulk::BULK_BODY_FIELDS);
        let props: Vec<&str> = doc["components"]["schemas"]["LiquidateBody"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(props, crate::bulk::LIQUIDATE_BODY_FIELDS);
        let mut sorted = handlers::CLOSE_BODY_FIELDS.to_vec();
        sorted.sort();
        assert_eq!(sorted, handlers::CLOSE_BODY_FIELDS, "kept alphabetical");
    }
}
