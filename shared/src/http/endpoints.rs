//! One function per route: parse the request, call the service, render the result.

use http::StatusCode;
use secrecy::SecretString;

use super::request::{Req, json_amount, json_string, json_string_max};
use super::response::{
    AdminUserView, AuditView, BalanceView, HealthView, LoginView, MeView, OperationView, Page,
    RefreshView, RegisteredView, Reply, Results, SessionView,
};

use crate::app::App;
use crate::auth::CursorKind;
use crate::domain::password::{self, NewPassword};
use crate::domain::{
    ChangeKind, Email, Money, OperationKind, SessionId, Timestamp, UserId, Username,
};
use crate::error::{ApiError, FieldErrors};
use crate::service::admin;
use crate::service::auth::{self, Principal, Registration};
use crate::service::history::{
    self, HistoryQuery, HistoryRead, HistoryRequest, HistoryResult, Outcome,
};
use crate::service::money::{self, ChangeRequest, MoneyTerms, Movement, TransferRequest};
use crate::store::Store;

/// Longest description kept with an operation.
const MAX_DESCRIPTION: usize = 255;
/// Longest password text looked at (the policy allows 128; more is only worth an error).
const MAX_PASSWORD_INPUT: usize = 4096;

/// Authenticates the caller and records them on the request's span.
async fn principal(app: &App, req: &Req) -> Result<Principal, ApiError> {
    let token = req.bearer()?;
    let principal = auth::authenticate(app, token).await?;
    record_user(principal.user);
    Ok(principal)
}

/// The caller of a money movement: the token is verified here, its session by the store inside
/// the movement's own atomic step (one read fewer per movement, and no moment between the check
/// and the movement in which a revocation could slip). A request refused before it reaches the
/// store is first given the session's own verdict by [`session_first`], so a revoked session
/// still hears `invalid_token` before anything about its request.
async fn mover(app: &App, req: &Req) -> Result<Principal, ApiError> {
    let principal = auth::verify_access(app, req.bearer()?).await?;
    record_user(principal.user);
    Ok(principal)
}

fn record_user(user: UserId) {
    tracing::Span::current().record("user_id", tracing::field::display(user));
}

/// `refused`, unless the caller's session is not live: then that answer comes first.
async fn session_first(app: &App, req: &Req, refused: ApiError) -> ApiError {
    match principal(app, req).await {
        Ok(_) => refused,
        Err(e) => e,
    }
}

fn missing_after_check() -> ApiError {
    ApiError::internal("a field passed validation but has no value")
}

pub(super) async fn register(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let mut body = req.json_object(false)?;
    let username = body.required("username", |raw| Username::parse(&json_string(raw)?));
    let email = body.required("email", |raw| Email::parse(&json_string(raw)?));
    let password = body.required("password", |raw| {
        json_string_max(raw, MAX_PASSWORD_INPUT).map(SecretString::from)
    });
    // The password policy joins the field errors, so one answer names every failing field. Its
    // similarity rule compares with the username and email that did parse; only a password
    // checked against both becomes the registration's `NewPassword`.
    let password = match (&username, &email, password) {
        (Some(username), Some(email), Some(password)) => {
            NewPassword::check(password, username, email)
                .map_err(|problems| {
                    for problem in problems {
                        body.reject("password", problem);
                    }
                })
                .ok()
        }
        (username, email, Some(password)) => {
            for problem in password::validate(&password, username.as_ref(), email.as_ref()) {
                body.reject("password", problem);
            }
            None
        }
        (_, _, None) => None,
    };
    body.finish()?;
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(missing_after_check());
    };
    let user = auth::register(
        app,
        Registration {
            username,
            email,
            password,
            is_staff: false,
        },
    )
    .await?;
    Reply::json(
        StatusCode::CREATED,
        &RegisteredView {
            id: user.id,
            username: user.username.to_string(),
            email: user.email.to_string(),
            balance: Money::ZERO,
            created_at: user.created_at,
        },
    )
}

pub(super) async fn login(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let mut body = req.json_object(false)?;
    let username = body.required("username", json_string);
    let password = body.required("password", |raw| {
        json_string_max(raw, MAX_PASSWORD_INPUT).map(SecretString::from)
    });
    body.finish()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(missing_after_check());
    };
    let pair = auth::login(app, &username, password, req.client.clone()).await?;
    Reply::json(
        StatusCode::OK,
        &LoginView {
            access: pair.access,
            refresh: pair.refresh,
            token_type: "Bearer",
            expires_in: pair.expires_in,
        },
    )
}

pub(super) async fn refresh(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let mut body = req.json_object(false)?;
    let token = body.required("refresh", json_string);
    body.finish()?;
    let Some(token) = token else {
        return Err(missing_after_check());
    };
    let pair = auth::refresh(app, &token).await?;
    Reply::json(
        StatusCode::OK,
        &RefreshView {
            access: pair.access,
            refresh: pair.refresh,
        },
    )
}

pub(super) async fn logout(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = principal(app, req).await?;
    let mut body = req.json_object(true)?;
    let token = body.optional("refresh", json_string);
    body.finish()?;
    let Some(token) = token else {
        return Err(missing_after_check());
    };
    auth::logout(app, principal, token.as_deref()).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub(super) async fn me(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = principal(app, req).await?;
    let user = auth::me(app, principal).await?;
    Reply::json(StatusCode::OK, &MeView::from(&user))
}

pub(super) async fn list_sessions(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = principal(app, req).await?;
    let sessions = auth::sessions(app, principal).await?;
    Reply::json(
        StatusCode::OK,
        &Results {
            results: sessions
                .iter()
                .map(|s| SessionView::new(s, principal.session))
                .collect(),
        },
    )
}

pub(super) async fn revoke_session(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = principal(app, req).await?;
    let id = req
        .param("id")
        .and_then(SessionId::parse)
        .ok_or(ApiError::NotFound)?;
    auth::revoke_session(app, principal, id).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub(super) async fn balance(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = principal(app, req).await?;
    let account = money::balance(app, principal.user).await?;
    Reply::json(
        StatusCode::OK,
        &BalanceView {
            balance: account.balance,
            currency: app.config.currency.clone(),
            updated_at: account.updated_at,
        },
    )
}

fn movement_reply(movement: Movement) -> Result<Reply, ApiError> {
    let reply = Reply::json(
        StatusCode::CREATED,
        &OperationView::from(&movement.operation),
    )?;
    Ok(if movement.replayed {
        reply.with_header("idempotent-replayed", "true")
    } else {
        reply
    })
}

async fn change(app: &App, req: &Req, kind: ChangeKind) -> Result<Reply, ApiError> {
    let principal = mover(app, req).await?;
    let request = match change_request(req, kind) {
        Ok(request) => request,
        Err(refused) => return Err(session_first(app, req, refused).await),
    };
    let movement = money::change_balance(app, principal, request).await?;
    movement_reply(movement)
}

fn change_request(req: &Req, kind: ChangeKind) -> Result<ChangeRequest, ApiError> {
    let idempotency_key = req.idempotency_key()?;
    let mut body = req.json_object(false)?;
    let amount = body.required("amount", json_amount);
    let description = body.optional("description", |raw| json_string_max(raw, MAX_DESCRIPTION));
    body.finish()?;
    let (Some(amount), Some(description)) = (amount, description) else {
        return Err(missing_after_check());
    };
    Ok(ChangeRequest {
        kind,
        terms: MoneyTerms {
            amount,
            description,
            idempotency_key,
        },
    })
}

pub(super) async fn deposit(app: &App, req: &Req) -> Result<Reply, ApiError> {
    change(app, req, ChangeKind::Deposit).await
}

pub(super) async fn withdraw(app: &App, req: &Req) -> Result<Reply, ApiError> {
    change(app, req, ChangeKind::Withdrawal).await
}

pub(super) async fn transfer(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let principal = mover(app, req).await?;
    let request = match transfer_request(req) {
        Ok(request) => request,
        Err(refused) => return Err(session_first(app, req, refused).await),
    };
    let movement = money::transfer(app, principal, request).await?;
    movement_reply(movement)
}

fn transfer_request(req: &Req) -> Result<TransferRequest, ApiError> {
    let idempotency_key = req.idempotency_key()?;
    let mut body = req.json_object(false)?;
    let to = body.required("to", |raw| {
        let to = json_string(raw)?;
        if to.is_empty() || to.chars().count() > Username::MAX_LEN {
            return Err(format!(
                "Ensure this field has 1 to {} characters.",
                Username::MAX_LEN
            ));
        }
        Ok(to)
    });
    let amount = body.required("amount", json_amount);
    let description = body.optional("description", |raw| json_string_max(raw, MAX_DESCRIPTION));
    body.finish()?;
    let (Some(to), Some(amount), Some(description)) = (to, amount, description) else {
        return Err(missing_after_check());
    };
    Ok(TransferRequest {
        to,
        terms: MoneyTerms {
            amount,
            description,
            idempotency_key,
        },
    })
}

/// Parses `limit`, `cursor`, `type`, `since`, `until`; unknown parameters are ignored.
fn history_request(req: &Req) -> Result<HistoryRequest, ApiError> {
    let mut request = HistoryRequest {
        limit: 20,
        ..HistoryRequest::default()
    };
    let mut errors = FieldErrors::new();
    for (name, value) in req.query_params()? {
        match name.as_str() {
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => request.limit = n,
                _ => errors.add(
                    "limit",
                    "Ensure this value is a whole number from 1 to 100.",
                ),
            },
            "cursor" => request.cursor = Some(value),
            "type" => {
                for part in value.split(',') {
                    match OperationKind::parse(part.trim()) {
                        Some(kind) if !request.kinds.contains(&kind) => request.kinds.push(kind),
                        Some(_) => {}
                        None => errors.add(
                            "type",
                            format!(
                                "{part:?} is not one of deposit, withdrawal, transfer_in, transfer_out."
                            ),
                        ),
                    }
                }
            }
            "since" | "until" => match Timestamp::parse_rfc3339(&value) {
                Some(t) if name == "since" => request.since = Some(t),
                Some(t) => request.until = Some(t),
                None => errors.add(name.clone(), "Enter an RFC 3339 date-time."),
            },
            _ => {}
        }
    }
    if let (Some(since), Some(until)) = (request.since, request.until)
        && since > until
    {
        errors.add("since", "since must not be after until.");
    }
    errors.into_result()?;
    Ok(request)
}

/// `GET /api/balance/v1/operations/`: the caller's session and account in one read, then the
/// page through the cached history read.
pub(super) async fn operations(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let (principal, account) = auth::authenticate_with_account(app, req.bearer()?).await?;
    record_user(principal.user);
    let query = HistoryQuery::check(
        app,
        CursorKind::History,
        principal.user,
        history_request(req)?,
    )?;
    let read = history::read_at(app, &query, account, if_none_match(req), render_history).await?;
    Ok(history_reply(read))
}

fn if_none_match(req: &Req) -> Option<&str> {
    req.headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
}

/// A history page as the client receives it (and the cache keeps it).
fn render_history(page: &HistoryResult) -> Result<bytes::Bytes, ApiError> {
    serde_json::to_vec(&Page {
        results: page.operations.iter().map(OperationView::from).collect(),
        next_cursor: page.next_cursor.clone(),
    })
    .map(bytes::Bytes::from)
    .map_err(ApiError::internal)
}

fn history_reply(read: HistoryRead) -> Reply {
    let (reply, cache) = match read.outcome {
        Outcome::NotModified => (Reply::empty(StatusCode::NOT_MODIFIED), "hit"),
        Outcome::Hit(body) => (Reply::raw_json(StatusCode::OK, body), "hit"),
        Outcome::Miss(body) => (Reply::raw_json(StatusCode::OK, body), "miss"),
    };
    tracing::Span::current().record("cache", cache);
    // Revalidate every time: the ETag answers in one point read.
    reply
        .with_header_value("etag", &read.etag)
        .with_header("x-cache", cache)
        .with_header("cache-control", "private, no-cache")
}

/// `GET /api/health/`: the store alone, so the `health` function starts without a signing key.
/// Any failure to answer the ping, an internal one included, is `503 service_unavailable` (with
/// `Retry-After`): docs/api.md has health answer `200` or `503`, nothing else. The failure's
/// source goes to the log with the request's id like every `503`'s.
pub(super) async fn health(store: &dyn Store, _req: &Req) -> Result<Reply, ApiError> {
    store
        .ping()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(Box::new(e)))?;
    Reply::json(StatusCode::OK, &HealthView { status: "ok" })
}

/// The caller, who must be staff.
async fn staff(app: &App, req: &Req) -> Result<crate::store::UserRecord, ApiError> {
    let principal = principal(app, req).await?;
    admin::require_staff(app, principal).await
}

/// The `{id}` of an admin route; anything that is not a user id is not found.
fn target_user(req: &Req) -> Result<UserId, ApiError> {
    req.param("id")
        .and_then(UserId::parse)
        .ok_or(ApiError::NotFound)
}

/// `limit` (1–100, default 20) and `cursor`, plus `q` where `with_search`.
fn admin_page_params(
    req: &Req,
    with_search: bool,
) -> Result<(u32, Option<String>, Option<String>), ApiError> {
    let mut limit = 20;
    let mut cursor = None;
    let mut search = None;
    let mut errors = FieldErrors::new();
    for (name, value) in req.query_params()? {
        match name.as_str() {
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                _ => errors.add(
                    "limit",
                    "Ensure this value is a whole number from 1 to 100.",
                ),
            },
            "cursor" => cursor = Some(value),
            "q" if with_search => {
                let q = value.trim().to_lowercase();
                if q.chars().count() > 254 {
                    errors.add("q", "Ensure this field has no more than 254 characters.");
                } else if !q.is_empty() {
                    search = Some(q);
                }
            }
            _ => {}
        }
    }
    errors.into_result()?;
    Ok((limit, cursor, search))
}

pub(super) async fn admin_list_users(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let staff = staff(app, req).await?;
    let (limit, cursor, search) = admin_page_params(req, true)?;
    let (users, next_cursor) =
        admin::list_users(app, &staff, search, limit, cursor.as_deref()).await?;
    Reply::json(
        StatusCode::OK,
        &Page {
            results: users.iter().map(AdminUserView::from).collect(),
            next_cursor,
        },
    )
}

pub(super) async fn admin_user(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let staff = staff(app, req).await?;
    let id = target_user(req)?;
    let found = admin::user_detail(app, &staff, id).await?;
    Reply::json(StatusCode::OK, &AdminUserView::from(&found))
}

pub(super) async fn admin_user_operations(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let staff = staff(app, req).await?;
    let id = target_user(req)?;
    let target = admin::target(app, id).await?;
    let query = HistoryQuery::check(app, CursorKind::AdminHistory, id, history_request(req)?)?;
    // Recorded only once the page (or its `304`) is ready: a refused request read nothing.
    let read = history::read(app, &query, if_none_match(req), render_history).await?;
    admin::audit_history_read(app, &staff, &target).await?;
    Ok(history_reply(read))
}

async fn admin_set_active(app: &App, req: &Req, active: bool) -> Result<Reply, ApiError> {
    let staff = staff(app, req).await?;
    let id = target_user(req)?;
    req.json_object(true)?.finish()?;
    let changed = admin::set_active(app, &staff, id, active).await?;
    Reply::json(StatusCode::OK, &AdminUserView::from(&changed))
}

pub(super) async fn admin_deactivate(app: &App, req: &Req) -> Result<Reply, ApiError> {
    admin_set_active(app, req, false).await
}

pub(super) async fn admin_reactivate(app: &App, req: &Req) -> Result<Reply, ApiError> {
    admin_set_active(app, req, true).await
}

pub(super) async fn admin_audit(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let staff = staff(app, req).await?;
    let (limit, cursor, _) = admin_page_params(req, false)?;
    let (entries, next_cursor) = admin::audit_log(app, &staff, limit, cursor.as_deref()).await?;
    Reply::json(
        StatusCode::OK,
        &Page {
            results: entries.iter().map(AuditView::from).collect(),
            next_cursor,
        },
    )
}
