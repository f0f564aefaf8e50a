//! Registration, login, token refresh, logout, the caller's profile and sessions.

use secrecy::SecretString;

use crate::app::App;
use crate::auth::{TokenError, TokenType, VerifiedToken};
use crate::domain::password::NewPassword;
use crate::domain::{Email, SessionId, Timestamp, TokenId, UserId, Username, username_key};
use crate::error::ApiError;
use crate::store::{
    Account, Attempt, NewUser, RotateOutcome, Rotation, SessionRecord, SessionUse, ThrottlePolicy,
    UserRecord,
};

/// Sessions record use at most this often, so authenticated reads do not each cost a write.
const TOUCH_INTERVAL_SECONDS: i64 = 60;
/// Longest `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 512;

/// Who is calling: a verified access token whose session is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The user the token was issued to (its `sub`).
    pub user: UserId,
    /// The session the token belongs to.
    pub session: SessionId,
}

/// Where a request came from, kept with the session it opens.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The caller's IP address: API Gateway's source IP, or the TCP peer locally.
    pub ip: Option<String>,
    /// The `User-Agent` header, if sent; cut to 512 characters when kept.
    pub user_agent: Option<String>,
}

/// A fresh pair of tokens.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// A signed access token, for `Authorization: Bearer`.
    pub access: String,
    /// A signed single-use refresh token of the same session.
    pub refresh: String,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
}

/// What registration needs, already parsed.
#[derive(Debug)]
pub struct Registration {
    /// The username, kept in the letter case given.
    pub username: Username,
    /// The email address, validated and lower-cased.
    pub email: Email,
    /// Chosen password, already checked against the policy for this username and email.
    pub password: NewPassword,
    /// Staff flag (only `create-superuser` sets it).
    pub is_staff: bool,
}

/// Creates a user and their account (balance 0) atomically.
#[tracing::instrument(skip_all, fields(username = %input.username))]
pub async fn register(app: &App, input: Registration) -> Result<UserRecord, ApiError> {
    let password_hash = app.passwords.hash(input.password.into_secret()).await?;
    let user = app
        .store
        .create_user(&NewUser {
            id: UserId::new(),
            username: input.username,
            email: input.email,
            password_hash,
            is_staff: input.is_staff,
            now: app.clock.now(),
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(user)
}

/// Checks credentials under the per-username throttle and opens a session.
#[tracing::instrument(skip_all)]
pub async fn login(
    app: &App,
    username: &str,
    password: SecretString,
    client: ClientInfo,
) -> Result<TokenPair, ApiError> {
    let now = app.clock.now();
    let key = username_key(username);
    // Text that cannot be a username cannot log in; it still pays for a hash so the answer
    // takes as long as any other failure, but it gets no throttle record.
    if Username::parse(username).is_err() {
        app.passwords.verify(password, None).await;
        return Err(ApiError::InvalidCredentials);
    }
    // The attempt is counted before the password is checked, atomically, so a burst of
    // parallel guesses cannot get more than the limit through.
    let policy = ThrottlePolicy {
        max_attempts: app.config.login_max_attempts,
        window_seconds: app.config.login_window_seconds,
    };
    if let Attempt::Limited { retry_after } =
        app.store.take_login_attempt(&key, policy, now).await?
    {
        return Err(ApiError::RateLimited { retry_after });
    }
    let user = app.store.user_by_username(&key).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = app.passwords.verify(password, hash).await;
    let user = match user {
        Some(u) if verified && u.is_active => u,
        _ => return Err(ApiError::InvalidCredentials),
    };
    app.store.clear_login_attempts(&key).await?;
    let deadline = session_deadline(app, now);
    let session = SessionRecord {
        id: SessionId::new(),
        user: user.id,
        created_at: now,
        last_used_at: now,
        expires_at: now
            .plus_seconds(app.config.refresh_ttl_seconds)
            .min(deadline),
        refresh_jti: TokenId::new(),
        user_agent: client
            .user_agent
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
        ip: client.ip,
        revoked_at: None,
    };
    if !app.store.create_session(&session).await? {
        // Deactivated between the password check and now.
        return Err(ApiError::InvalidCredentials);
    }
    tracing::info!(user_id = %user.id, session_id = %session.id, "logged in");
    issue_pair(app, user.id, session.id, session.refresh_jti, now, deadline)
}

/// When a session opened at `created_at` ends, however recently it was refreshed.
fn session_deadline(app: &App, created_at: Timestamp) -> Timestamp {
    created_at.plus_seconds(app.config.session_max_lifetime_seconds)
}

/// Live for its owner: not revoked, not expired, and within its maximum lifetime (a session
/// stored before that lifetime existed may still carry a later expiry).
fn is_live(app: &App, session: &SessionRecord, now: Timestamp) -> bool {
    session.is_active(now) && now < session_deadline(app, session.created_at)
}

/// A token lifetime from `now`, cut so that the token's `exp` (whole seconds) is no later
/// than the session's deadline.
fn lifetime_until(now: Timestamp, ttl_seconds: i64, deadline: Timestamp) -> i64 {
    ttl_seconds.min(deadline.unix_seconds() - now.unix_seconds())
}

fn issue_pair(
    app: &App,
    user: UserId,
    session: SessionId,
    refresh_jti: TokenId,
    now: Timestamp,
    deadline: Timestamp,
) -> Result<TokenPair, ApiError> {
    let access_ttl = lifetime_until(now, app.config.access_ttl_seconds, deadline);
    // Both tokens of a pair are signed with the same key, even across a key re-read.
    let signing = app.signing();
    let access = signing
        .tokens
        .issue(
            TokenType::Access,
            user,
            session,
            TokenId::new(),
            now,
            access_ttl,
        )
        .map_err(ApiError::internal)?;
    let refresh = signing
        .tokens
        .issue(
            TokenType::Refresh,
            user,
            session,
            refresh_jti,
            now,
            lifetime_until(now, app.config.refresh_ttl_seconds, deadline),
        )
        .map_err(ApiError::internal)?;
    Ok(TokenPair {
        access,
        refresh,
        expires_in: access_ttl.max(0),
    })
}

/// Spends a refresh token for a new pair; a spent token revokes its whole session.
#[tracing::instrument(skip_all)]
pub async fn refresh(app: &App, refresh_token: &str) -> Result<TokenPair, ApiError> {
    let now = app.clock.now();
    let token = verify(app, refresh_token, TokenType::Refresh, now).await?;
    let next = TokenId::new();
    let outcome = app
        .store
        .rotate_session(&Rotation {
            user: token.user,
            session: token.session,
            presented: token.id,
            next,
            expires_at: now.plus_seconds(app.config.refresh_ttl_seconds),
            max_lifetime_seconds: app.config.session_max_lifetime_seconds,
            now,
        })
        .await?;
    match outcome {
        RotateOutcome::Rotated { created_at } => issue_pair(
            app,
            token.user,
            token.session,
            next,
            now,
            session_deadline(app, created_at),
        ),
        RotateOutcome::Reused => {
            tracing::warn!(user_id = %token.user, session_id = %token.session,
                "spent refresh token presented again; session revoked");
            Err(ApiError::TokenReused)
        }
        RotateOutcome::Inactive => Err(ApiError::InvalidToken),
    }
}

/// Checks a token with the key its `kid` names. A well-formed `kid` this process does not know
/// may name a key a rotation has just made current elsewhere: the keys are read again (when
/// they come from somewhere that changes, at most once per 30 s) and the token checked once more.
async fn verify(
    app: &App,
    token: &str,
    typ: TokenType,
    now: Timestamp,
) -> Result<VerifiedToken, ApiError> {
    let signing = app.signing();
    let mut checked = signing.tokens.verify(token, typ, now);
    if matches!(checked, Err(TokenError::UnknownKeyId)) {
        app.keys.reread(now).await;
        // Read again by this request or by one it waited for.
        let reread = app.signing();
        if !std::sync::Arc::ptr_eq(&signing, &reread) {
            checked = reread.tokens.verify(token, typ, now);
        }
    }
    checked.map_err(|e| {
        tracing::info!(reason = %e, "token rejected");
        ApiError::InvalidToken
    })
}

/// The principal an access token names, from its signature, claims and type alone: its session
/// is not looked at. Only for the money movements, which hand the session to the store to be
/// checked inside the movement's own atomic step ([`session_use`]); everything else uses
/// [`authenticate`].
pub async fn verify_access(app: &App, access_token: &str) -> Result<Principal, ApiError> {
    let token = verify(app, access_token, TokenType::Access, app.clock.now()).await?;
    Ok(Principal {
        user: token.user,
        session: token.session,
    })
}

/// The principal's session as a money movement carries it to the store: checked there, and its
/// use recorded at most once per touch interval.
pub fn session_use(principal: Principal, now: Timestamp) -> SessionUse {
    SessionUse {
        id: principal.session,
        touch_before: Timestamp::from_millis(now.millis() - TOUCH_INTERVAL_SECONDS * 1000),
    }
}

/// Resolves an access token to a principal: the signature, claims and type must hold and its
/// session must be live and belong to the token's user.
pub async fn authenticate(app: &App, access_token: &str) -> Result<Principal, ApiError> {
    let now = app.clock.now();
    let token = verify(app, access_token, TokenType::Access, now).await?;
    let session = app.store.session(token.user, token.session).await?;
    accept_session(app, &token, session, now).await
}

/// Like [`authenticate`], and the caller's account read in the same step (one round trip on
/// DynamoDB), for a request that needs its version.
pub async fn authenticate_with_account(
    app: &App,
    access_token: &str,
) -> Result<(Principal, Option<Account>), ApiError> {
    let now = app.clock.now();
    let token = verify(app, access_token, TokenType::Access, now).await?;
    let (session, account) = app
        .store
        .session_with_account(token.user, token.session)
        .await?;
    let principal = accept_session(app, &token, session, now).await?;
    Ok((principal, account))
}

/// The principal of a verified access token whose session, as read, is the caller's and live.
async fn accept_session(
    app: &App,
    token: &VerifiedToken,
    session: Option<SessionRecord>,
    now: Timestamp,
) -> Result<Principal, ApiError> {
    let session = session
        .filter(|s| s.user == token.user && is_live(app, s, now))
        .ok_or(ApiError::InvalidToken)?;
    if now.millis() - session.last_used_at.millis() > TOUCH_INTERVAL_SECONDS * 1000 {
        // Best effort: failing to record use must not fail the request.
        if let Err(e) = app.store.touch_session(session.user, session.id, now).await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "could not record session use");
        }
    }
    Ok(Principal {
        user: token.user,
        session: token.session,
    })
}

/// Revokes the caller's session. A refresh token given alongside must belong to it.
pub async fn logout(
    app: &App,
    principal: Principal,
    refresh_token: Option<&str>,
) -> Result<(), ApiError> {
    let now = app.clock.now();
    if let Some(token) = refresh_token {
        let same_session = verify(app, token, TokenType::Refresh, now)
            .await
            .is_ok_and(|t| t.session == principal.session && t.user == principal.user);
        if !same_session {
            return Err(ApiError::field(
                "refresh",
                "This refresh token does not belong to the current session.",
            ));
        }
    }
    app.store
        .revoke_session(principal.user, principal.session, now)
        .await?;
    tracing::info!(user_id = %principal.user, session_id = %principal.session, "logged out");
    Ok(())
}

/// The caller's user record.
pub async fn me(app: &App, principal: Principal) -> Result<UserRecord, ApiError> {
    app.store
        .user_by_id(principal.user)
        .await?
        .ok_or(ApiError::InvalidToken)
}

/// The caller's live sessions, newest first.
pub async fn sessions(app: &App, principal: Principal) -> Result<Vec<SessionRecord>, ApiError> {
    let now = app.clock.now();
    let mut sessions = app.store.active_sessions(principal.user, now).await?;
    sessions.retain(|s| is_live(app, s, now));
    Ok(sessions)
}

/// Revokes one of the caller's sessions; someone else's (or an unknown) id is `not_found`.
pub async fn revoke_session(
    app: &App,
    principal: Principal,
    session: SessionId,
) -> Result<(), ApiError> {
    if app
        .store
        .revoke_session(principal.user, session, app.clock.now())
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}
