//! Row codecs, and PostgreSQL's failures translated into [`StoreError`] and [`Failure`].

use super::*;

pub(super) fn map_pg(e: tokio_postgres::Error) -> StoreError {
    let transient = e.is_closed()
        || match e.code() {
            None => e.as_db_error().is_none(),
            Some(code) => {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
            }
        };
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => crate::telemetry::error_chain(&e),
    };
    if transient {
        StoreError::unavailable(text)
    } else {
        StoreError::internal(text)
    }
}

pub(super) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A transaction step failed: retry the whole transaction, or give up with this error.
pub(super) enum Failure {
    Retry(tokio_postgres::Error),
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_retryable(&e) {
            Failure::Retry(e)
        } else {
            Failure::Fail(map_pg(e))
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fail(e)
    }
}

/// Maps a unique violation to the domain error its constraint stands for.
pub(super) fn on_constraint(e: tokio_postgres::Error) -> Failure {
    let constraint = e.as_db_error().and_then(|db| db.constraint());
    match (e.code(), constraint) {
        (Some(c), Some("users_username_key_unique")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Fail(StoreError::UsernameTaken)
        }
        (Some(c), Some("users_email_key_unique")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Fail(StoreError::EmailTaken)
        }
        _ => Failure::from(e),
    }
}

pub(super) fn bad(what: &str) -> StoreError {
    StoreError::internal(format!("stored row has a malformed {what}"))
}

pub(super) fn version_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| bad("version"))
}

pub(super) fn user_from_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(row.try_get("id").map_err(map_pg)?),
        username: Username::parse(row.try_get("username").map_err(map_pg)?)
            .map_err(|_| bad("username"))?,
        email: Email::from_stored(row.try_get("email").map_err(map_pg)?)
            .map_err(|_| bad("email"))?,
        password_hash: row.try_get("password_hash").map_err(map_pg)?,
        is_staff: row.try_get("is_staff").map_err(map_pg)?,
        is_active: row.try_get("is_active").map_err(map_pg)?,
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
    })
}

pub(super) const USER_COLUMNS: &str =
    "id, username, email, password_hash, is_staff, is_active, created_at";

pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at";

pub(super) fn session_from_row(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: SessionId(row.try_get("id").map_err(map_pg)?),
        user: UserId(row.try_get("user_id").map_err(map_pg)?),
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
        last_used_at: Timestamp::from_millis(row.try_get("last_used_at").map_err(map_pg)?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at").map_err(map_pg)?),
        refresh_jti: TokenId(row.try_get("refresh_jti").map_err(map_pg)?),
        user_agent: row.try_get("user_agent").map_err(map_pg)?,
        ip: row.try_get("ip").map_err(map_pg)?,
        revoked_at: row
            .try_get::<_, Option<i64>>("revoked_at")
            .map_err(map_pg)?
            .map(Timestamp::from_millis),
    })
}

/// The user an optional pair of columns names (a counterparty, an audit target), if any.
fn named_user(row: &Row, id: &str, username: &str) -> Result<Option<(UserId, String)>, StoreError> {
    match row.try_get::<_, Option<Uuid>>(id).map_err(map_pg)? {
        Some(uuid) => Ok(Some((UserId(uuid), row.try_get(username).map_err(map_pg)?))),
        None => Ok(None),
    }
}

pub(super) const OPERATION_COLUMNS: &str = "o.user_id, o.seq, o.id, o.kind, o.amount, o.balance_after, \
     o.counterparty_id, o.counterparty_username, o.transfer_id, o.description, o.created_at";

pub(super) fn operation_from_row(row: &Row) -> Result<Operation, StoreError> {
    let kind: String = row.try_get("kind").map_err(map_pg)?;
    let counterparty = named_user(row, "counterparty_id", "counterparty_username")?
        .map(|(id, username)| Counterparty { id, username });
    Ok(Operation {
        id: OperationId(row.try_get("id").map_err(map_pg)?),
        user: UserId(row.try_get("user_id").map_err(map_pg)?),
        seq: version_of(row.try_get("seq").map_err(map_pg)?)?,
        kind: OperationKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        amount: Money::from_minor(row.try_get("amount").map_err(map_pg)?),
        balance_after: Money::from_minor(row.try_get("balance_after").map_err(map_pg)?),
        counterparty,
        transfer_id: row
            .try_get::<_, Option<Uuid>>("transfer_id")
            .map_err(map_pg)?
            .map(TransferId),
        description: row.try_get("description").map_err(map_pg)?,
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
    })
}

pub(super) fn audit_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    let action: String = row.try_get("action").map_err(map_pg)?;
    let target = named_user(row, "target_id", "target_username")?
        .map(|(id, username)| AuditParty { id, username });
    Ok(AuditEntry {
        id: row.try_get("id").map_err(map_pg)?,
        actor: AuditParty {
            id: UserId(row.try_get("actor_id").map_err(map_pg)?),
            username: row.try_get("actor_username").map_err(map_pg)?,
        },
        action: AuditAction::parse(&action).ok_or_else(|| bad("action"))?,
        target,
        detail: row.try_get("detail").map_err(map_pg)?,
        at: Timestamp::from_millis(row.try_get("at").map_err(map_pg)?),
    })
}
