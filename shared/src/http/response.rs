//! Building responses: JSON bodies, problem+json errors and the views clients see.

use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use lambda_http::Body;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Money, OperationKind, SessionId, Timestamp, TransferId, UserId};
use crate::error::ApiError;
use crate::store::{Operation, SessionRecord, UserRecord};

/// A successful answer before the common headers are added.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// The body and its content type, if any.
    pub body: Option<(Vec<u8>, &'static str)>,
    /// Headers beyond `Content-Type`; those every answer carries are added last.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A reply with `value` serialized as `application/json`.
    pub fn json(status: StatusCode, value: &impl Serialize) -> Result<Reply, ApiError> {
        Ok(Reply {
            status,
            body: Some((
                serde_json::to_vec(value).map_err(ApiError::internal)?,
                "application/json",
            )),
            headers: Vec::new(),
        })
    }

    /// No body (`204`).
    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Already-serialized JSON (a cached page).
    pub fn raw_json(status: StatusCode, body: bytes::Bytes) -> Reply {
        Reply {
            status,
            body: Some((body.to_vec(), "application/json")),
            headers: Vec::new(),
        }
    }

    /// A `200` with a static page as `text/html; charset=utf-8`.
    pub fn html(body: &'static str) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Some((body.as_bytes().to_vec(), "text/html; charset=utf-8")),
            headers: Vec::new(),
        }
    }

    /// Sets the content type of the body.
    pub fn with_content_type(mut self, content_type: &str) -> Reply {
        if let Some((_, ct)) = &mut self.body {
            // Content types here are a fixed set; leak-free static mapping keeps `Reply` simple.
            *ct = match content_type {
                t if t.starts_with("text/html") => "text/html; charset=utf-8",
                t if t.starts_with("text/css") => "text/css; charset=utf-8",
                t if t.contains("javascript") => "text/javascript; charset=utf-8",
                t if t.starts_with("application/json") => "application/json",
                t if t.starts_with("image/png") => "image/png",
                t if t.starts_with("image/svg") => "image/svg+xml",
                _ => "application/octet-stream",
            };
        }
        self
    }

    /// Adds a header whose value is computed.
    pub fn with_header_value(mut self, name: &'static str, value: &str) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), v));
        }
        self
    }

    /// Adds a header with a static value.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        if let Some((_, content_type)) = &self.body {
            builder = builder.header(header::CONTENT_TYPE, *content_type);
        }
        let mut response = builder
            .body(
                self.body
                    .map_or(Body::Empty, |(bytes, _)| Body::Binary(bytes)),
            )
            .unwrap_or_default();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        finish_headers(headers, request_id);
        response
    }
}

/// The headers every answer carries (docs/api.md, Headers), stamped last so no handler can
/// forget them.
fn finish_headers(headers: &mut http::HeaderMap, request_id: &str) {
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    // Browsers must take each body for the type it is labelled with, never guess a script or
    // a page out of JSON.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
}

/// Renders an error as `application/problem+json` with its status and headers.
pub fn problem(error: &ApiError, request_id: &str) -> Response<Body> {
    let status = error.status();
    let body = Problem {
        kind: "about:blank",
        title: error.title(),
        status,
        detail: error.detail(),
        code: error.code(),
        errors: match error {
            ApiError::Validation(e) => Some(e.as_map()),
            _ => None,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/problem+json")
        .body(Body::Binary(bytes))
        .unwrap_or_default();
    let headers = response.headers_mut();
    match error {
        ApiError::NotAuthenticated => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        ApiError::InvalidToken | ApiError::TokenReused => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        ApiError::MethodNotAllowed(methods) => {
            let allow = methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                headers.insert(header::ALLOW, v);
            }
        }
        ApiError::RateLimited { retry_after } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        ApiError::ServiceUnavailable(_) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    finish_headers(headers, request_id);
    response
}

/// A user as registration returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredView {
    /// The new user's id, a UUID.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// The username in the letter case it was registered with.
    pub username: String,
    /// The email address, lower-cased as stored.
    pub email: String,
    /// Always `0.00` for a new account.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// When the user registered.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
}

/// The caller's profile, from `GET /api/auth/v1/me/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The caller's user id, a UUID.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// The username in the letter case it was registered with.
    pub username: String,
    /// The email address, lower-cased as stored.
    pub email: String,
    /// Whether the caller is staff and may use the admin API and `/admin/`.
    pub is_staff: bool,
    /// When the caller registered.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
}

impl From<&UserRecord> for MeView {
    fn from(u: &UserRecord) -> Self {
        MeView {
            id: u.id,
            username: u.username.to_string(),
            email: u.email.to_string(),
            is_staff: u.is_staff,
            created_at: u.created_at,
        }
    }
}

/// The tokens of a new session, from `POST /api/auth/v1/login/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginView {
    /// An access token (a JWT) for `Authorization: Bearer`; valid for `expires_in` seconds.
    pub access: String,
    /// A single-use refresh token (a JWT) for `token/refresh/` and `logout/`.
    pub refresh: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// The access token's lifetime in seconds; shorter than configured near the session's end.
    pub expires_in: i64,
}

/// A new token pair, from `POST /api/auth/v1/token/refresh/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshView {
    /// A new access token (a JWT) to send as `Authorization: Bearer`.
    pub access: String,
    /// The session's next refresh token; the one sent is now spent.
    pub refresh: String,
}

/// One session in `GET sessions/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session's id, a UUID; `DELETE sessions/{id}/` takes it.
    #[schema(value_type = String, format = Uuid)]
    pub id: SessionId,
    /// When the login that opened the session happened.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
    /// The last login, refresh or use of the session; updated at most once a minute.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub last_used_at: Timestamp,
    /// The login's `User-Agent`, at most 512 characters; null if none was sent.
    pub user_agent: Option<String>,
    /// The IP address the login came from; null when it is not known.
    pub ip: Option<String>,
    /// Whether this is the caller's own session.
    pub current: bool,
}

impl SessionView {
    /// Renders a session relative to the caller's.
    pub fn new(s: &SessionRecord, current: SessionId) -> Self {
        SessionView {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            current: s.id == current,
        }
    }
}

/// A list wrapper: `{"results": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Results<T> {
    /// Every item; the list is not paginated.
    pub results: Vec<T>,
}

/// A page: `{"results": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// At most `limit` items; a page may hold fewer and still have a next one.
    pub results: Vec<T>,
    /// Cursor of the next page; `None` (JSON `null`) on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's balance, from `GET /api/balance/v1/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// The caller's balance: a decimal string with two fraction digits, never negative.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// The deployment's ISO 4217 currency code, the same for every account (default `RUB`).
    pub currency: String,
    /// When the balance last changed, or when the account was opened if it never has.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub updated_at: Timestamp,
}

/// The other account of a transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounterpartyView {
    /// The other user's id, a UUID.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// The other user's username at the time of the transfer.
    pub username: String,
}

/// An operation as every endpoint shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    /// The operation's id, a UUID.
    #[schema(format = Uuid)]
    pub id: String,
    /// What the operation did to this account, which gives `amount` its direction.
    #[serde(rename = "type")]
    pub kind: OperationKind,
    /// How much moved: a decimal string with two fraction digits, always positive.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub amount: Money,
    /// This account's balance right after the operation.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance_after: Money,
    /// The other account of a transfer; null for deposits and withdrawals.
    pub counterparty: Option<CounterpartyView>,
    /// A UUID shared by both sides of a transfer; null for deposits and withdrawals.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub transfer_id: Option<TransferId>,
    /// The client's text, up to 255 characters (a transfer's is the sender's); null if none.
    pub description: Option<String>,
    /// When the operation was applied.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
}

impl From<&Operation> for OperationView {
    fn from(op: &Operation) -> Self {
        OperationView {
            id: op.id.to_string(),
            kind: op.kind,
            amount: op.amount,
            balance_after: op.balance_after,
            counterparty: op.counterparty.as_ref().map(|c| CounterpartyView {
                id: c.id,
                username: c.username.clone(),
            }),
            transfer_id: op.transfer_id,
            description: op.description.clone(),
            created_at: op.created_at,
        }
    }
}

/// A user as administrators see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    /// The user's id, a UUID.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// The username in the letter case it was registered with.
    pub username: String,
    /// The email address, lower-cased as stored.
    pub email: String,
    /// Whether the user is staff; staff who are also active may use the admin API.
    pub is_staff: bool,
    /// Whether they may log in and receive transfers.
    pub is_active: bool,
    /// The user's current balance: a decimal string with two fraction digits.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// When the user registered.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
}

impl From<&crate::store::UserSummary> for AdminUserView {
    fn from(s: &crate::store::UserSummary) -> Self {
        AdminUserView {
            id: s.user.id,
            username: s.user.username.to_string(),
            email: s.user.email.to_string(),
            is_staff: s.user.is_staff,
            is_active: s.user.is_active,
            balance: s.balance,
            created_at: s.user.created_at,
        }
    }
}

/// Someone named in the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartyView {
    /// The user's id, a UUID.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Their username at the time.
    pub username: String,
}

/// One audit trail entry: who did what to whom, and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// The entry's id, a UUID.
    #[schema(format = Uuid)]
    pub id: String,
    /// The staff member who acted.
    pub actor: PartyView,
    /// What (`users.list`, `user.view`, `user.history`, `user.deactivate`, `user.reactivate`,
    /// `audit.list`).
    pub action: &'static str,
    /// The user acted on; null for `users.list` and `audit.list`.
    pub target: Option<PartyView>,
    /// When the action was served.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub at: Timestamp,
}

impl From<&crate::store::AuditEntry> for AuditView {
    fn from(e: &crate::store::AuditEntry) -> Self {
        AuditView {
            id: e.id.to_string(),
            actor: PartyView {
                id: e.actor.id,
                username: e.actor.username.clone(),
            },
            action: e.action.as_str(),
            target: e.target.as_ref().map(|t| PartyView {
                id: t.id,
                username: t.username.clone(),
            }),
            at: e.at,
        }
    }
}

/// The health check's answer, from `GET /api/health/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// Always `ok`: a store that does not answer gives `503` instead.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nosniff(response: &Response<Body>) -> Option<&str> {
        response
            .headers()
            .get(header::X_CONTENT_TYPE_OPTIONS)
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn every_reply_and_every_problem_says_nosniff() {
        let replies = [
            Reply::json(StatusCode::OK, &HealthView { status: "ok" }).unwrap(),
            Reply::empty(StatusCode::NO_CONTENT),
            Reply::empty(StatusCode::NOT_MODIFIED),
            Reply::html("<p>hi</p>"),
        ];
        for reply in replies {
            let status = reply.status;
            let response = reply.into_response("req-1");
            assert_eq!(nosniff(&response), Some("nosniff"), "{status}");
        }
        for error in [
            ApiError::NotFound,
            ApiError::NotAuthenticated,
            ApiError::MethodNotAllowed(vec![http::Method::GET]),
            ApiError::PayloadTooLarge,
            ApiError::field("Host", "bad"),
        ] {
            let response = problem(&error, "req-2");
            assert_eq!(nosniff(&response), Some("nosniff"), "{error:?}");
        }
    }
}
