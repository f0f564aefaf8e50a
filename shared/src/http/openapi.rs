//! The OpenAPI 3.1 document, generated from the route table and the Rust types.
//!
//! Every route in [`ROUTES`] is described here, or the document cannot be built (a test checks
//! it both ways): the operation's metadata lives in [`describe`], its schemas come from the
//! response and request types through `utoipa::ToSchema`, and the error responses are derived
//! from the contract's error codes each operation can produce. Headers every response carries
//! (`X-Request-Id`, `X-Content-Type-Options`) and the problem+json schema are added uniformly, so they cannot be
//! forgotten on one route.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::Method;
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ComponentsBuilder, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, KnownFormat, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
};
use utoipa::{PartialSchema, ToSchema};

use super::response::{
    AdminUserView, AuditView, BalanceView, CounterpartyView, HealthView, LoginView, MeView,
    OperationView, PartyView, RefreshView, RegisteredView, SessionView,
};
use super::{ROUTES, Route};
use crate::domain::{Money, OperationKind};
use crate::error::{ApiError, FieldErrors};

/// Registration body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// 3–150 characters of `A-Z a-z 0-9 @ . + - _`; unique case-insensitively.
    #[schema(
        min_length = 3,
        max_length = 150,
        pattern = r"^[A-Za-z0-9@.+_-]+$",
        example = "alice"
    )]
    username: String,
    /// A valid address, unique case-insensitively; stored lower-cased. Uniqueness compares
    /// Unicode case folding with compatibility normalisation (`ß` matches `ss`, `ſ` and
    /// fullwidth `ｓ` match `s`), and that folded form may have at most 254 characters.
    #[schema(format = Email, max_length = 254, example = "alice@example.com")]
    email: String,
    /// 8–128 characters; not entirely numeric, not too similar to the username or email, not a
    /// commonly used password.
    #[schema(min_length = 8, max_length = 128, example = "Correct-Horse-Battery-9")]
    password: String,
}

/// Login body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// Matched case-insensitively.
    #[schema(example = "alice")]
    username: String,
    #[schema(example = "Correct-Horse-Battery-9")]
    password: String,
}

/// Refresh body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RefreshRequest {
    /// The current refresh token of the session.
    refresh: String,
}

/// Logout body (optional).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LogoutRequest {
    /// If given, it must be a refresh token of the session being closed.
    refresh: Option<String>,
}

/// Deposit or withdrawal body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct MoneyRequest {
    amount: AmountInput,
    /// Free text, at most 255 characters.
    #[schema(max_length = 255, example = "salary")]
    description: Option<String>,
}

/// Transfer body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TransferRequest {
    /// The recipient's username (case-insensitive).
    #[schema(min_length = 1, max_length = 150, example = "bob")]
    to: String,
    amount: AmountInput,
    /// Free text, at most 255 characters; both sides see it.
    #[schema(max_length = 255, example = "rent")]
    description: Option<String>,
}

/// An amount on input: a decimal string or a JSON number with at most two fraction digits,
/// more than 0 and at most 1000000000.00, parsed exactly (never through binary floating point).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct AmountInput(serde_json::Value);

/// Strings from 0.01 to 1000000000.00 with at most two fraction digits (leading zeros allowed).
const AMOUNT_PATTERN: &str =
    r"^(0*[1-9][0-9]{0,8}(\.[0-9]{1,2})?|0*1000000000(\.0{1,2})?|0+\.(0[1-9]|[1-9][0-9]?))$";

impl PartialSchema for AmountInput {
    fn schema() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(AMOUNT_PATTERN))
            .examples([json!("10.50")]);
        let number = ObjectBuilder::new()
            .schema_type(Type::Number)
            .exclusive_minimum(Some(0))
            .maximum(Some(1_000_000_000))
            .multiple_of(Some(0.01))
            .examples([json!(10.5)]);
        OneOfBuilder::new()
            .item(text)
            .item(number)
            .description(Some(
                "A decimal string or a JSON number with at most two fraction digits, more than \
                 0 and at most 1000000000.00; exponents, NaN and Infinity are refused.",
            ))
            .into()
    }
}

impl ToSchema for AmountInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AmountInput")
    }
}

/// Every error code of API.md.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ErrorCode {
    InvalidJson,
    ValidationError,
    NotAuthenticated,
    InvalidToken,
    TokenReused,
    InvalidCredentials,
    Forbidden,
    NotFound,
    RecipientNotFound,
    MethodNotAllowed,
    UsernameTaken,
    EmailTaken,
    PayloadTooLarge,
    UnsupportedMediaType,
    InsufficientFunds,
    SelfTransfer,
    BalanceLimitExceeded,
    IdempotencyKeyMismatch,
    SelfDeactivation,
    RateLimited,
    InternalError,
    ServiceUnavailable,
}

/// An RFC 9457 problem.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: String,
    #[schema(example = "Insufficient funds")]
    title: String,
    #[schema(example = 422)]
    status: u16,
    #[schema(example = "Balance 10.00 is less than 25.00")]
    detail: String,
    code: ErrorCode,
    /// Only for `validation_error`: field name → messages.
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>)]
    errors: Option<BTreeMap<String, Vec<String>>>,
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    User,
    Staff,
}

/// What one route looks like in the document.
struct Describe {
    tag: &'static str,
    summary: &'static str,
    description: &'static str,
    access: Access,
    /// Request body schema name, and whether it is required.
    body: Option<(&'static str, bool)>,
    success: u16,
    success_description: &'static str,
    /// What the success response's body is.
    success_body: Body,
    /// Codes beyond the ones every operation (or every authenticated/body operation) may give.
    errors: &'static [&'static str],
    params: Vec<Param>,
    idempotent_money: bool,
    cached_history: bool,
}

enum Body {
    /// `application/json` described by one of the document's component schemas.
    Schema(&'static str),
    /// `application/json`: an object of a shape this document does not describe (the OpenAPI
    /// document itself).
    JsonObject,
    /// A file served as it is, in one of these media types (which one the `Content-Type` says).
    Raw(&'static [&'static str]),
    None,
}

enum Param {
    Query(&'static str, &'static str, RefOr<Schema>),
    Path(&'static str, &'static str),
    Header(&'static str, &'static str, RefOr<Schema>),
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn history_params() -> Vec<Param> {
    vec![
        Param::Query(
            "limit",
            "Page size, 1–100 (default 20): the most a page holds. Under a `type`, `since` or \
             `until` filter that matches rarely, a page may hold fewer and still carry a \
             `next_cursor`; the history ends where `next_cursor` is null.",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100))
                .into(),
        ),
        Param::Query(
            "cursor",
            "The `next_cursor` of the previous page; usable only by the user it was issued to.",
            string().pattern(Some("^[A-Za-z0-9_-]+$")).into(),
        ),
        Param::Query(
            "type",
            "Comma-separated kinds: deposit, withdrawal, transfer_in, transfer_out.",
            string()
                .pattern(Some(
                    "^(deposit|withdrawal|transfer_in|transfer_out)(,(deposit|withdrawal|transfer_in|transfer_out))*$",
                ))
                .into(),
        ),
        Param::Query(
            "since",
            "Only operations created at or after this instant (RFC 3339).",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into(),
        ),
        Param::Query(
            "until",
            "Only operations created at or before this instant (RFC 3339); not before `since`.",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into(),
        ),
        Param::Header(
            "If-None-Match",
            "An `ETag` of this page: answered `304` with no body while it is current.",
            string().into(),
        ),
    ]
}

fn page_params(search: bool) -> Vec<Param> {
    let mut params = vec![
        Param::Query(
            "limit",
            "Page size, 1–100 (default 20).",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100))
                .into(),
        ),
        Param::Query(
            "cursor",
            "The `next_cursor` of the previous page; usable only by the staff member it was issued to.",
            string().pattern(Some("^[A-Za-z0-9_-]+$")).into(),
        ),
    ];
    if search {
        params.push(Param::Query(
            "q",
            "Case-insensitive substring of the username or the email.",
            string().max_length(Some(254)).into(),
        ));
    }
    params
}

fn idempotency_key() -> Param {
    Param::Header(
        "Idempotency-Key",
        "1–255 printable ASCII characters, scoped to the caller and kept at least 24 hours. The \
         same key with the same body replays the first `201` (with `Idempotent-Replayed: true`) \
         and moves no money again; with a different body it is `422 idempotency_key_mismatch`.",
        string()
            .min_length(Some(1))
            .max_length(Some(255))
            .pattern(Some("^[ -~]+$"))
            .into(),
    )
}

/// The metadata of one route. Every route must have an entry.
fn describe(route: &Route) -> Describe {
    let base = |tag, summary, description, access| Describe {
        tag,
        summary,
        description,
        access,
        body: None,
        success: 200,
        success_description: "OK",
        success_body: Body::None,
        errors: &[],
        params: Vec::new(),
        idempotent_money: false,
        cached_history: false,
    };
    match (route.method.as_str(), route.pattern) {
        ("POST", "/api/auth/v1/register/") => Describe {
            body: Some(("RegisterRequest", true)),
            success: 201,
            success_description: "The user and their account (balance 0.00), created atomically.",
            success_body: Body::Schema("RegisteredView"),
            errors: &["username_taken", "email_taken"],
            ..base(
                "auth",
                "Register",
                "Creates a user and their account.",
                Access::Public,
            )
        },
        ("POST", "/api/auth/v1/login/") => Describe {
            body: Some(("LoginRequest", true)),
            success_description: "A new session's access and refresh tokens.",
            success_body: Body::Schema("LoginView"),
            errors: &["invalid_credentials", "rate_limited"],
            ..base(
                "auth",
                "Log in",
                "Opens a session. Fails the same way whether or not the user exists; after too \
                 many failed attempts for a username within the window, answers 429.",
                Access::Public,
            )
        },
        ("POST", "/api/auth/v1/token/refresh/") => Describe {
            body: Some(("RefreshRequest", true)),
            success_description: "A new pair; the presented refresh token is spent.",
            success_body: Body::Schema("RefreshView"),
            errors: &["invalid_token", "token_reused"],
            ..base(
                "auth",
                "Refresh tokens",
                "Rotates the refresh token. Presenting a spent one again revokes the session. \
                 A session ends at the latest SESSION_MAX_LIFETIME_DAYS (default 30) after \
                 login, however recently it was refreshed: no token is issued past that \
                 moment, and a refresh after it answers 401 invalid_token.",
                Access::Public,
            )
        },
        ("POST", "/api/auth/v1/logout/") => Describe {
            body: Some(("LogoutRequest", false)),
            success: 204,
            success_description: "The session is revoked.",
            ..base(
                "auth",
                "Log out",
                "Revokes the caller's session.",
                Access::User,
            )
        },
        ("GET", "/api/auth/v1/me/") => Describe {
            success_body: Body::Schema("MeView"),
            ..base("auth", "Who am I", "The caller's profile.", Access::User)
        },
        ("GET", "/api/auth/v1/sessions/") => Describe {
            success_body: Body::Schema("SessionList"),
            ..base(
                "auth",
                "List sessions",
                "The caller's active sessions, newest first.",
                Access::User,
            )
        },
        ("DELETE", "/api/auth/v1/sessions/{id}/") => Describe {
            success: 204,
            success_description: "The session is revoked.",
            errors: &["not_found"],
            params: vec![Param::Path("id", "A session id of the caller.")],
            ..base(
                "auth",
                "Revoke a session",
                "Revokes one of the caller's sessions; another user's is not found.",
                Access::User,
            )
        },
        ("GET", "/api/balance/v1/") => Describe {
            success_body: Body::Schema("BalanceView"),
            ..base("balance", "Balance", "The caller's balance.", Access::User)
        },
        ("POST", "/api/balance/v1/deposit/") => Describe {
            body: Some(("MoneyRequest", true)),
            success: 201,
            success_description: "The deposit (or, with a recorded Idempotency-Key, its replay).",
            success_body: Body::Schema("OperationView"),
            errors: &["balance_limit_exceeded", "idempotency_key_mismatch"],
            params: vec![idempotency_key()],
            idempotent_money: true,
            ..base(
                "balance",
                "Deposit",
                "Adds money to the caller's account.",
                Access::User,
            )
        },
        ("POST", "/api/balance/v1/withdraw/") => Describe {
            body: Some(("MoneyRequest", true)),
            success: 201,
            success_description: "The withdrawal (or, with a recorded Idempotency-Key, its replay).",
            success_body: Body::Schema("OperationView"),
            errors: &["insufficient_funds", "idempotency_key_mismatch"],
            params: vec![idempotency_key()],
            idempotent_money: true,
            ..base(
                "balance",
                "Withdraw",
                "Takes money from the caller's account; never below zero.",
                Access::User,
            )
        },
        ("POST", "/api/balance/v1/transfer/") => Describe {
            body: Some(("TransferRequest", true)),
            success: 201,
            success_description: "The sender's `transfer_out` (the recipient gets a `transfer_in` with the same `transfer_id`).",
            success_body: Body::Schema("OperationView"),
            errors: &[
                "self_transfer",
                "recipient_not_found",
                "insufficient_funds",
                "balance_limit_exceeded",
                "idempotency_key_mismatch",
            ],
            params: vec![idempotency_key()],
            idempotent_money: true,
            ..base(
                "balance",
                "Transfer",
                "Moves money to another active user; both balances and both operations change in one atomic step or not at all.",
                Access::User,
            )
        },
        ("GET", "/api/balance/v1/operations/") => Describe {
            success_body: Body::Schema("OperationPage"),
            params: history_params(),
            cached_history: true,
            ..base(
                "balance",
                "History",
                "The caller's operations, newest first, through the cached read path (never stale).",
                Access::User,
            )
        },
        ("GET", "/api/health/") => Describe {
            success_body: Body::Schema("HealthView"),
            ..base(
                "health",
                "Health",
                "`200` once the store answers; `503` otherwise.",
                Access::Public,
            )
        },
        ("GET", "/api/admin/v1/users/") => Describe {
            success_body: Body::Schema("AdminUserPage"),
            params: page_params(true),
            ..base(
                "admin",
                "List users",
                "Users with their balances, by lower-cased username; `q` searches username and email.",
                Access::Staff,
            )
        },
        ("GET", "/api/admin/v1/users/{id}/") => Describe {
            success_body: Body::Schema("AdminUserView"),
            errors: &["not_found"],
            params: vec![Param::Path("id", "A user id.")],
            ..base(
                "admin",
                "One user",
                "A user with their balance.",
                Access::Staff,
            )
        },
        ("GET", "/api/admin/v1/users/{id}/operations/") => Describe {
            success_body: Body::Schema("OperationPage"),
            errors: &["not_found"],
            params: {
                let mut p = vec![Param::Path("id", "A user id.")];
                p.extend(history_params());
                p
            },
            cached_history: true,
            ..base(
                "admin",
                "A user's history",
                "Same query and shape as the user's own history. A page served (or revalidated \
                 with `304`) is recorded in the audit trail; a refused request is not.",
                Access::Staff,
            )
        },
        ("POST", "/api/admin/v1/users/{id}/deactivate/") => Describe {
            success_body: Body::Schema("AdminUserView"),
            errors: &["not_found", "self_deactivation"],
            params: vec![Param::Path("id", "A user id.")],
            body: Some(("EmptyObject", false)),
            ..base(
                "admin",
                "Deactivate a user",
                "Revokes all the user's sessions at once, blocks login and makes them an invalid \
                 transfer recipient; balance and history are kept.",
                Access::Staff,
            )
        },
        ("POST", "/api/admin/v1/users/{id}/reactivate/") => Describe {
            success_body: Body::Schema("AdminUserView"),
            errors: &["not_found"],
            params: vec![Param::Path("id", "A user id.")],
            body: Some(("EmptyObject", false)),
            ..base(
                "admin",
                "Reactivate a user",
                "Lets the user log in again.",
                Access::Staff,
            )
        },
        ("GET", "/api/admin/v1/audit/") => Describe {
            success_body: Body::Schema("AuditPage"),
            params: page_params(false),
            ..base(
                "admin",
                "Audit trail",
                "Every admin action, newest first: searches, views of a user or their history, \
                 status changes and reads of this trail (`audit.list`, recorded once its page \
                 is read, so a page lists the reads before it). Refused requests are not \
                 actions and are not recorded.",
                Access::Staff,
            )
        },
        ("GET", "/admin/") => Describe {
            success_body: Body::Raw(&["text/html"]),
            ..base(
                "admin",
                "Admin page",
                "The embedded admin web page.",
                Access::Public,
            )
        },
        ("GET", "/api/schema/") => Describe {
            success_body: Body::JsonObject,
            ..base("docs", "OpenAPI document", "This document.", Access::Public)
        },
        ("GET", "/api/docs/") => Describe {
            success_body: Body::Raw(&["text/html"]),
            ..base(
                "docs",
                "Swagger UI",
                "Interactive documentation, served offline.",
                Access::Public,
            )
        },
        ("GET", "/api/docs/{file}") => Describe {
            success_body: Body::Raw(&["text/html", "text/css", "text/javascript", "image/png"]),
            errors: &["not_found"],
            params: vec![Param::Path(
                "file",
                "A file of the embedded Swagger UI, such as `swagger-ui.css`, \
                 `swagger-ui-bundle.js` or `favicon-32x32.png`.",
            )],
            ..base(
                "docs",
                "Swagger UI asset",
                "Files of the embedded Swagger UI, each served with the media type of its \
                 extension: `.html` as `text/html`, `.css` as `text/css`, `.js` as \
                 `text/javascript`, `.png` as `image/png`.",
                Access::Public,
            )
        },
        ("GET", "/api/redoc/") => Describe {
            success_body: Body::Raw(&["text/html"]),
            ..base(
                "docs",
                "ReDoc",
                "Reference documentation, served offline.",
                Access::Public,
            )
        },
        ("GET", "/api/redoc/redoc.standalone.js") => Describe {
            success_body: Body::Raw(&["text/javascript"]),
            ..base(
                "docs",
                "ReDoc bundle",
                "The embedded ReDoc bundle.",
                Access::Public,
            )
        },
        (method, pattern) => panic!("{method} {pattern} is not described in the OpenAPI document"),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Invalid JSON or a validation error",
        401 => "Not authenticated, or an invalid token",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict",
        413 => "Payload too large",
        415 => "Unsupported media type",
        422 => "Refused by a business rule",
        429 => "Too many failed logins",
        500 => "Internal error",
        503 => "Service unavailable; safe to retry (with the same Idempotency-Key)",
        _ => "Error",
    }
}

fn code_status(code: &str) -> u16 {
    match code {
        "invalid_json" | "validation_error" => 400,
        "not_authenticated" | "invalid_token" | "token_reused" | "invalid_credentials" => 401,
        "forbidden" => 403,
        "not_found" | "recipient_not_found" => 404,
        "method_not_allowed" => 405,
        "username_taken" | "email_taken" => 409,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "rate_limited" => 429,
        "internal_error" => 500,
        "service_unavailable" => 503,
        _ => 422,
    }
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(string()))
        .description(Some(description))
        .build()
}

fn response_with_id(builder: ResponseBuilder) -> ResponseBuilder {
    builder
        .header(
            "X-Request-Id",
            header("The request id (API Gateway's in AWS); also in the logs."),
        )
        .header(
            "X-Content-Type-Options",
            header("Always `nosniff`: the body is only ever what its Content-Type says."),
        )
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn page_schema(item: &str) -> Schema {
    ObjectBuilder::new()
        .property("results", ArrayBuilder::new().items(schema_ref(item)))
        .required("results")
        .property(
            "next_cursor",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some("^[A-Za-z0-9_-]+$"))
                .description(Some("Cursor of the next page, or null on the last page.")),
        )
        .required("next_cursor")
        .into()
}

fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

fn components() -> utoipa::openapi::Components {
    let mut schemas = Vec::new();
    add::<RegisterRequest>(&mut schemas);
    add::<LoginRequest>(&mut schemas);
    add::<RefreshRequest>(&mut schemas);
    add::<LogoutRequest>(&mut schemas);
    add::<MoneyRequest>(&mut schemas);
    add::<TransferRequest>(&mut schemas);
    add::<AmountInput>(&mut schemas);
    add::<ErrorCode>(&mut schemas);
    add::<Problem>(&mut schemas);
    add::<RegisteredView>(&mut schemas);
    add::<LoginView>(&mut schemas);
    add::<RefreshView>(&mut schemas);
    add::<MeView>(&mut schemas);
    add::<SessionView>(&mut schemas);
    add::<BalanceView>(&mut schemas);
    add::<OperationView>(&mut schemas);
    add::<CounterpartyView>(&mut schemas);
    add::<OperationKind>(&mut schemas);
    add::<HealthView>(&mut schemas);
    add::<AdminUserView>(&mut schemas);
    add::<AuditView>(&mut schemas);
    add::<PartyView>(&mut schemas);
    schemas.push((
        "SessionList".into(),
        ObjectBuilder::new()
            .property(
                "results",
                ArrayBuilder::new().items(schema_ref("SessionView")),
            )
            .required("results")
            .into(),
    ));
    schemas.push(("OperationPage".into(), page_schema("OperationView").into()));
    schemas.push(("AdminUserPage".into(), page_schema("AdminUserView").into()));
    schemas.push(("AuditPage".into(), page_schema("AuditView").into()));
    schemas.push((
        "EmptyObject".into(),
        ObjectBuilder::new()
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::<Schema>::FreeForm(false),
            ))
            .description(Some("An empty JSON object; the body may also be omitted."))
            .into(),
    ));
    let mut builder = ComponentsBuilder::new().schemas_from_iter(schemas);
    builder = builder.security_scheme(
        "bearerAuth",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An access token from `login/` or `token/refresh/` (HS256 JWT).",
                ))
                .build(),
        ),
    );
    builder.build()
}

/// The error an example shows for `code`: the real error, with data that reads naturally.
fn example_error(code: &str, field: &str) -> Option<ApiError> {
    let error = ApiError::one_of_each()
        .into_iter()
        .find(|e| e.code() == code)?;
    Some(match error {
        ApiError::Validation(_) => {
            let mut errors = FieldErrors::new();
            errors.add(field, "This field is invalid.");
            ApiError::Validation(errors)
        }
        ApiError::InsufficientFunds { .. } => ApiError::InsufficientFunds {
            balance: Money::from_minor(1_000),
            amount: Money::from_minor(2_500),
        },
        ApiError::MethodNotAllowed(_) => ApiError::MethodNotAllowed(vec![Method::GET]),
        other => other,
    })
}

/// The problem body the API renders for an error (as `response::problem` does).
fn problem_body(error: &ApiError) -> serde_json::Value {
    let mut body = json!({
        "type": "about:blank",
        "title": error.title(),
        "status": error.status(),
        "detail": error.detail(),
        "code": error.code(),
    });
    if let ApiError::Validation(errors) = error {
        body["errors"] = json!(errors.as_map());
    }
    body
}

/// One error response: the problem schema with `code` narrowed to the codes this operation can
/// answer with this status, and one named example per code. `field` names the field a
/// `validation_error` example points at.
fn problem_response(status: u16, codes: &[&str], field: &str) -> utoipa::openapi::Response {
    let mut description = format!("{}: {}.", status_text(status), codes.join(", "));
    description = description.replace(": .", ".");
    let schema = AllOfBuilder::new().item(schema_ref("Problem")).item(
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().copied())),
        ),
    );
    let examples = codes.iter().filter_map(|code| {
        let error = example_error(code, field)?;
        Some((
            (*code).to_owned(),
            ExampleBuilder::new()
                .summary(error.title())
                .value(Some(problem_body(&error)))
                .build(),
        ))
    });
    let mut builder = response_with_id(ResponseBuilder::new().description(description)).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(schema))
            .examples_from_iter(examples)
            .build(),
    );
    builder = match status {
        401 => builder.header(
            "WWW-Authenticate",
            header("`Bearer` (or `Bearer error=\"invalid_token\"`)."),
        ),
        405 => builder.header("Allow", header("The methods the route allows.")),
        429 | 503 => builder.header("Retry-After", header("Seconds to wait before retrying.")),
        _ => builder,
    };
    builder.build()
}

const EXAMPLE_USER_ID: &str = "0192f5c1-7a3e-7c2b-9d41-5b8e2f6a1c30";
const EXAMPLE_OTHER_ID: &str = "0192f5c1-9b20-7e11-8a52-3f4d6c7b8e90";
const EXAMPLE_AT: &str = "2026-11-28T07:00:00.123Z";
const EXAMPLE_JWT: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwMTkyZjVjMSJ9.c2lnbmF0dXJl";
const EXAMPLE_CURSOR: &str = "AQGSFcF6PnwrnUFbjiFqHDAAAAAAAAAAAw8n2Hc5T3Gm";

fn example_operation() -> serde_json::Value {
    json!({
        "id": "0192f5c2-0a11-7f00-b2c3-4d5e6f708192",
        "type": "transfer_out",
        "amount": "25.00",
        "balance_after": "75.00",
        "counterparty": {"id": EXAMPLE_OTHER_ID, "username": "bob"},
        "transfer_id": "0192f5c2-0a11-7f00-b2c3-4d5e6f708193",
        "description": "rent",
        "created_at": EXAMPLE_AT,
    })
}

fn example_admin_user() -> serde_json::Value {
    json!({
        "id": EXAMPLE_USER_ID,
        "username": "alice",
        "email": "alice@example.com",
        "is_staff": false,
        "is_active": true,
        "balance": "125.00",
        "created_at": EXAMPLE_AT,
    })
}

/// An example body of a success response with the named schema.
fn success_example(schema: &str) -> serde_json::Value {
    match schema {
        "RegisteredView" => json!({
            "id": EXAMPLE_USER_ID,
            "username": "alice",
            "email": "alice@example.com",
            "balance": "0.00",
            "created_at": EXAMPLE_AT,
        }),
        "LoginView" => json!({
            "access": EXAMPLE_JWT,
            "refresh": EXAMPLE_JWT,
            "token_type": "Bearer",
            "expires_in": 600,
        }),
        "RefreshView" => json!({"access": EXAMPLE_JWT, "refresh": EXAMPLE_JWT}),
        "MeView" => json!({
            "id": EXAMPLE_USER_ID,
            "username": "alice",
            "email": "alice@example.com",
            "is_staff": false,
            "created_at": EXAMPLE_AT,
        }),
        "SessionList" => json!({"results": [{
            "id": "0192f5c1-7b00-7a00-8000-0123456789ab",
            "created_at": EXAMPLE_AT,
            "last_used_at": EXAMPLE_AT,
            "user_agent": "curl/8.5.0",
            "ip": "203.0.113.7",
            "current": true,
        }]}),
        "BalanceView" => json!({"balance": "125.00", "currency": "RUB", "updated_at": EXAMPLE_AT}),
        "OperationView" => example_operation(),
        "OperationPage" => json!({"results": [example_operation()], "next_cursor": EXAMPLE_CURSOR}),
        "HealthView" => json!({"status": "ok"}),
        "AdminUserView" => example_admin_user(),
        "AdminUserPage" => json!({"results": [example_admin_user()], "next_cursor": null}),
        "AuditPage" => json!({"results": [{
            "id": "0192f5c3-1c22-7d00-a1b2-c3d4e5f60718",
            "actor": {"id": EXAMPLE_OTHER_ID, "username": "root"},
            "action": "user.deactivate",
            "target": {"id": EXAMPLE_USER_ID, "username": "alice"},
            "at": EXAMPLE_AT,
        }], "next_cursor": EXAMPLE_CURSOR}),
        other => panic!("no example for the success body {other}"),
    }
}

/// An example of the OpenAPI document (abridged).
fn document_example() -> serde_json::Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "LightTech API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {"/api/health/": {"get": {"summary": "Health", "operationId": "get_api_health"}}},
    })
}

/// An example of a text file served as-is, by route and media type.
fn raw_example(pattern: &str, content_type: &str) -> serde_json::Value {
    match (pattern, content_type) {
        (_, "text/html") => json!("<!doctype html><html lang=\"en\">…</html>"),
        (_, "text/css") => json!(".swagger-ui{…}"),
        ("/api/redoc/redoc.standalone.js", "text/javascript") => {
            json!("/*! For license information please see redoc.standalone.js.LICENSE.txt */…")
        }
        (_, "text/javascript") => json!("window.onload = function () {…};"),
        _ => json!("…"),
    }
}

/// An example of a binary file served as-is: a real one, by its address.
fn binary_example(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "/api/docs/favicon-32x32.png",
        other => panic!("no example for the binary media type {other}"),
    }
}

/// The name of an operation's success example: its summary in snake case.
fn example_name(summary: &str) -> String {
    summary
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .map(|c| {
            if c == ' ' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The field a `validation_error` example of this operation names.
fn validation_field(d: &Describe) -> &'static str {
    match d.body {
        Some(("RegisterRequest" | "LoginRequest", _)) => "username",
        Some(("RefreshRequest" | "LogoutRequest", _)) => "refresh",
        Some(("MoneyRequest" | "TransferRequest", _)) => "amount",
        Some(_) => "reason",
        None => d
            .params
            .iter()
            .find_map(|p| match p {
                Param::Query(name, ..) => Some(*name),
                _ => None,
            })
            .unwrap_or("body"),
    }
}

fn operation(route: &Route, d: &Describe) -> utoipa::openapi::path::Operation {
    // Which codes can this operation answer?
    let mut codes: Vec<&str> = vec![
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "internal_error",
        "service_unavailable",
    ];
    if d.body.is_some() {
        codes.extend(["invalid_json", "validation_error", "unsupported_media_type"]);
    }
    // Path parameters are matched, not validated (a bad id is `not_found`); query and header
    // parameters are.
    if d.params.iter().any(|p| !matches!(p, Param::Path(..))) {
        codes.push("validation_error");
    }
    if d.access != Access::Public {
        codes.extend(["not_authenticated", "invalid_token"]);
    }
    if d.access == Access::Staff {
        codes.push("forbidden");
    }
    codes.extend(d.errors.iter().copied());
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code_status(code)).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }

    let mut success = response_with_id(ResponseBuilder::new().description(d.success_description));
    match &d.success_body {
        Body::Schema(name) => {
            success = success.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema_ref(name)))
                    .examples_from_iter([(
                        example_name(d.summary),
                        ExampleBuilder::new()
                            .summary(d.summary)
                            .value(Some(success_example(name)))
                            .build(),
                    )])
                    .build(),
            );
        }
        Body::JsonObject => {
            success = success.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .examples_from_iter([(
                        example_name(d.summary),
                        ExampleBuilder::new()
                            .summary(d.summary)
                            .value(Some(document_example()))
                            .build(),
                    )])
                    .build(),
            );
        }
        Body::Raw(content_types) => {
            for content_type in content_types.iter().copied() {
                let example = ExampleBuilder::new().summary(d.summary);
                // A text file is a string; a binary one (OpenAPI 3.1: no schema) is shown by
                // the address of a real one.
                let content = if content_type.starts_with("image/") {
                    ContentBuilder::new().examples_from_iter([(
                        example_name(d.summary),
                        example.external_value(binary_example(content_type)).build(),
                    )])
                } else {
                    ContentBuilder::new()
                        .schema(Some(string()))
                        .examples_from_iter([(
                            example_name(d.summary),
                            example
                                .value(Some(raw_example(route.pattern, content_type)))
                                .build(),
                        )])
                };
                success = success.content(content_type, content.build());
            }
        }
        Body::None => {}
    }
    if d.idempotent_money {
        success = success.header(
            "Idempotent-Replayed",
            header("`true` when this is the replay of an earlier request with the same Idempotency-Key."),
        );
    }
    if d.cached_history {
        success = success
            .header(
                "X-Cache",
                header("`hit` or `miss`: whether the page came from the cache."),
            )
            .header(
                "ETag",
                header("Derived from the account version and the query."),
            )
            .header("Cache-Control", header("`private, no-cache`."));
    }
    let mut responses = ResponsesBuilder::new().response(d.success.to_string(), success.build());
    if d.cached_history {
        responses = responses.response(
            "304",
            response_with_id(
                ResponseBuilder::new()
                    .description("Not modified: the `If-None-Match` ETag is current."),
            )
            .header("ETag", header("The current ETag."))
            .header("X-Cache", header("`hit`."))
            .build(),
        );
    }
    for (status, codes) in &by_status {
        responses = responses.response(
            status.to_string(),
            problem_response(*status, codes, validation_field(d)),
        );
    }

    let mut op = OperationBuilder::new()
        .tag(d.tag)
        .summary(Some(d.summary))
        .description(Some(d.description))
        .operation_id(Some(format!(
            "{}_{}",
            route.method.as_str().to_lowercase(),
            route
                .pattern
                .trim_matches('/')
                .replace(['/', '.', '-'], "_")
                .replace(['{', '}'], "")
        )))
        .responses(responses.build());
    if d.access != Access::Public {
        op = op.security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()));
    }
    if let Some((schema, required)) = d.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(schema_ref(schema)))
                        .build(),
                )
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .description(Some("JSON, at most 16 KiB; unknown fields are refused."))
                .build(),
        ));
    }
    for param in &d.params {
        let built = match param {
            Param::Query(name, description, schema) => ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(schema.clone())),
            Param::Path(name, description) => ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(*description))
                .schema(Some(string())),
            Param::Header(name, description, schema) => ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(*description))
                .schema(Some(schema.clone())),
        };
        op = op.parameter(built);
    }
    op.build()
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// Builds the document from the route table.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in ROUTES {
        let d = describe(route);
        paths = paths.path(
            route.pattern,
            PathItem::new(http_method(&route.method), operation(route, &d)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("LightTech API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Accounts and money: register, log in, hold a balance, deposit, withdraw, \
                     transfer and read history. Amounts are decimal strings with two fraction \
                     digits; every error is `application/problem+json` with a `code`; every \
                     response carries `X-Request-Id` and `X-Content-Type-Options: nosniff`. Paths are listed with their trailing slash; \
                     the same path without it is served identically, except the two \
                     documentation pages: `/api/docs` and `/api/redoc` answer `308 Permanent \
                     Redirect` to `/api/docs/` and `/api/redoc/`, where the pages' relative links \
                     to their assets resolve.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components()))
        .tags(Some(
            [
                ("auth", "Registration, login, tokens and sessions"),
                ("balance", "Balance, money movements and history"),
                ("admin", "Administration (staff only)"),
                ("docs", "This documentation"),
                ("health", "Liveness"),
            ]
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(name)
                    .description(Some(description))
                    .build()
            }),
        ))
        .build()
}

/// The document as served, built once.
pub static DOCUMENT_JSON: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&document()).unwrap_or_default());

/// The codes of [`ErrorCode`], for the test that keeps it in step with `ApiError`.
pub fn documented_codes() -> Vec<String> {
    let schema = serde_json::to_value(ErrorCode::schema()).unwrap_or_default();
    schema["enum"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
