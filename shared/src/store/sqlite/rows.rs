//! Row codecs: stored rows to domain records, and SQLite's failures to [`StoreError`].

use super::*;

pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // A full disk or an I/O error undoes what the statement (or its transaction) did: the
        // request applied nothing and may be retried, which is what `503` says.
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::unavailable(e),
        _ => StoreError::internal(e),
    }
}

pub(super) fn bad_row(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("stored {what} is malformed"))
}

pub(super) fn get_id<T>(
    row: &Row<'_>,
    idx: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| bad_row(idx))
}

pub(super) fn opt_id<T>(
    row: &Row<'_>,
    idx: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse(&t).ok_or_else(|| bad_row(idx)))
        .transpose()
}

pub(super) fn version_of(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| bad_row("version"))
}

pub(super) const USER_COLUMNS: &str =
    "id, username, email, password_hash, is_staff, is_active, created_at";

pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let username: String = row.get("username")?;
    let email: String = row.get("email")?;
    Ok(UserRecord {
        id: get_id(row, "id", UserId::parse)?,
        username: Username::parse(&username).map_err(|_| bad_row("username"))?,
        email: Email::from_stored(&email).map_err(|_| bad_row("email"))?,
        password_hash: row.get("password_hash")?,
        is_staff: row.get("is_staff")?,
        is_active: row.get("is_active")?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
    })
}

pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at";

pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: get_id(row, "id", SessionId::parse)?,
        user: get_id(row, "user_id", UserId::parse)?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
        last_used_at: Timestamp::from_millis(row.get("last_used_at")?),
        expires_at: Timestamp::from_millis(row.get("expires_at")?),
        refresh_jti: get_id(row, "refresh_jti", TokenId::parse)?,
        user_agent: row.get("user_agent")?,
        ip: row.get("ip")?,
        revoked_at: row
            .get::<_, Option<i64>>("revoked_at")?
            .map(Timestamp::from_millis),
    })
}

/// The user an optional pair of columns names (a counterparty, an audit target), if any.
fn named_user(
    row: &Row<'_>,
    id: &str,
    username: &str,
) -> rusqlite::Result<Option<(UserId, String)>> {
    match opt_id(row, id, UserId::parse)? {
        Some(user) => Ok(Some((user, row.get(username)?))),
        None => Ok(None),
    }
}

pub(super) const OPERATION_COLUMNS: &str = "o.user_id, o.seq, o.id, o.kind, o.amount, o.balance_after, \
     o.counterparty_id, o.counterparty_username, o.transfer_id, o.description, o.created_at";
/// Positions in `OPERATION_COLUMNS` of the columns a history page filters on.
pub(super) const OPERATION_SEQ: usize = 1;
pub(super) const OPERATION_KIND: usize = 3;
pub(super) const OPERATION_CREATED_AT: usize = 10;

pub(super) fn operation_from_row(row: &Row<'_>) -> rusqlite::Result<Operation> {
    let kind: String = row.get("kind")?;
    let counterparty = named_user(row, "counterparty_id", "counterparty_username")?
        .map(|(id, username)| Counterparty { id, username });
    Ok(Operation {
        id: get_id(row, "id", OperationId::parse)?,
        user: get_id(row, "user_id", UserId::parse)?,
        seq: version_of(row.get("seq")?)?,
        kind: OperationKind::parse(&kind).ok_or_else(|| bad_row("kind"))?,
        amount: Money::from_minor(row.get("amount")?),
        balance_after: Money::from_minor(row.get("balance_after")?),
        counterparty,
        transfer_id: opt_id(row, "transfer_id", TransferId::parse)?,
        description: row.get("description")?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
    })
}

pub(super) fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let action: String = row.get("action")?;
    let target = named_user(row, "target_id", "target_username")?
        .map(|(id, username)| AuditParty { id, username });
    Ok(AuditEntry {
        id: get_id(row, "id", |t| uuid::Uuid::try_parse(t).ok())?,
        actor: AuditParty {
            id: get_id(row, "actor_id", UserId::parse)?,
            username: row.get("actor_username")?,
        },
        action: AuditAction::parse(&action).ok_or_else(|| bad_row("action"))?,
        target,
        detail: row.get("detail")?,
        at: Timestamp::from_millis(row.get("at")?),
    })
}

pub(super) fn load_user(conn: &Connection, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.to_string()], user_from_row).optional())
        .map_err(map_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_positions_name_their_columns() {
        let columns: Vec<&str> = OPERATION_COLUMNS.split(", ").collect();
        assert_eq!(columns[OPERATION_SEQ], "o.seq");
        assert_eq!(columns[OPERATION_KIND], "o.kind");
        assert_eq!(columns[OPERATION_CREATED_AT], "o.created_at");
    }
}
