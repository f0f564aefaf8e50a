//! What each route looks like in the document: tag, summary, access, body, parameters and
//! the error codes beyond the common ones.

use super::*;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Public,
    User,
    Staff,
}

/// What one route looks like in the document.
pub(super) struct Describe {
    pub(super) tag: &'static str,
    pub(super) summary: &'static str,
    pub(super) description: &'static str,
    pub(super) access: Access,
    /// Request body schema name, and whether it is required.
    pub(super) body: Option<(&'static str, bool)>,
    pub(super) success: u16,
    pub(super) success_description: &'static str,
    /// What the success response's body is.
    pub(super) success_body: Body,
    /// Codes beyond the ones every operation (or every authenticated/body operation) may give.
    pub(super) errors: &'static [&'static str],
    pub(super) params: Vec<Param>,
    pub(super) idempotent_money: bool,
    pub(super) cached_history: bool,
}

pub(super) enum Body {
    /// `application/json` described by one of the document's component schemas.
    Schema(&'static str),
    /// `application/json`: an object of a shape this document does not describe (the OpenAPI
    /// document itself).
    JsonObject,
    /// A file served as it is, in one of these media types (which one the `Content-Type` says).
    Raw(&'static [&'static str]),
    None,
}

pub(super) enum Param {
    Query(&'static str, &'static str, RefOr<Schema>),
    Path(&'static str, &'static str),
    Header(&'static str, &'static str, RefOr<Schema>),
}

pub(super) fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

pub(super) fn history_params() -> Vec<Param> {
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

pub(super) fn page_params(search: bool) -> Vec<Param> {
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

pub(super) fn idempotency_key() -> Param {
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
pub(super) fn describe(route: &Route) -> Describe {
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
