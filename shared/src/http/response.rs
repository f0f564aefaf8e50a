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
    /// Status code.
    pub status: StatusCode,
    /// The body and its content type, if any.
    pub body: Option<(Vec<u8>, &'static str)>,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// A JSON body.
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

    /// An HTML page.
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

    /// Adds a header.
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
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Always `0.00` for a new account.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// Registration time.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
}

/// `GET me/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Staff flag.
    pub is_staff: bool,
    /// Registration time.
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

/// `POST login/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginView {
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime, seconds.
    pub expires_in: i64,
}

/// `POST token/refresh/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshView {
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

/// One session in `GET sessions/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: SessionId,
    /// Login time.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub created_at: Timestamp,
    /// Last use.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub last_used_at: Timestamp,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Client address.
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
    /// The items.
    pub results: Vec<T>,
}

/// A page: `{"results": [...], "next_cursor": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub results: Vec<T>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// `GET /api/balance/v1/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// Current balance.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// Configured currency.
    pub currency: String,
    /// Last change.
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T07:00:00.123Z")]
    pub updated_at: Timestamp,
}

/// The other account of a transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounterpartyView {
    /// Their id.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Their username.
    pub username: String,
}

/// An operation as every endpoint shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    /// Id.
    pub id: String,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: OperationKind,
    /// Amount.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub amount: Money,
    /// Balance right after.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance_after: Money,
    /// Transfers only.
    pub counterparty: Option<CounterpartyView>,
    /// Transfers only.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub transfer_id: Option<TransferId>,
    /// Client text.
    pub description: Option<String>,
    /// When.
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
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Staff flag.
    pub is_staff: bool,
    /// Whether they may log in and receive transfers.
    pub is_active: bool,
    /// Balance.
    #[schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{2}$", example = "125.00")]
    pub balance: Money,
    /// Registration time.
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
    /// Their id.
    #[schema(value_type = String, format = Uuid)]
    pub id: UserId,
    /// Their username at the time.
    pub username: String,
}

/// One audit trail entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Id.
    pub id: String,
    /// Who.
    pub actor: PartyView,
    /// What (`users.list`, `user.view`, `user.history`, `user.deactivate`, `user.reactivate`,
    /// `audit.list`).
    pub action: &'static str,
    /// Whom, if anyone.
    pub target: Option<PartyView>,
    /// When.
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

/// `GET /api/health/`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`.
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
