//! Administration: staff look users up, read their history, deactivate and reactivate them,
//! and read the audit trail. Every call that is served is written to the audit trail before its
//! result is returned, so no administrator reads or changes anything unrecorded; a refused call
//! (bad parameters or cursor, an unknown user, a self-deactivation) is not an action and is not
//! recorded.

use crate::app::App;
use crate::auth::CursorKind;
use crate::domain::UserId;
use crate::error::ApiError;
use crate::service::auth::Principal;
use crate::store::{
    AuditAction, AuditEntry, AuditParty, StatusChange, UserQuery, UserRecord, UserSummary,
};

/// The caller as a staff member; anyone else is `forbidden`.
pub async fn require_staff(app: &App, principal: Principal) -> Result<UserRecord, ApiError> {
    match app.store.user_by_id(principal.user).await? {
        Some(user) if user.is_staff && user.is_active => Ok(user),
        Some(_) => Err(ApiError::Forbidden),
        None => Err(ApiError::InvalidToken),
    }
}

fn party(user: &UserRecord) -> AuditParty {
    AuditParty {
        id: user.id,
        username: user.username.to_string(),
    }
}

fn entry(
    app: &App,
    staff: &UserRecord,
    action: AuditAction,
    target: Option<&UserRecord>,
    detail: Option<String>,
) -> AuditEntry {
    AuditEntry {
        // Time-ordered, and monotonic within a process: entries made in the same millisecond
        // keep their order in stores that sort by it.
        id: uuid::Uuid::now_v7(),
        actor: party(staff),
        action,
        target: target.map(party),
        detail,
        at: app.clock.now(),
    }
}

/// The position a page `cursor` of `kind` holds, when one was sent; one that is not this staff
/// member's, or not of this kind, is an invalid `cursor` field.
fn position(
    app: &App,
    staff: &UserRecord,
    kind: CursorKind,
    cursor: Option<&str>,
) -> Result<Option<Vec<u8>>, ApiError> {
    cursor
        .map(|c| {
            app.signing()
                .cursors
                .decode_position(kind, staff.id, c)
                .ok_or_else(invalid_cursor)
        })
        .transpose()
}

/// The cursor of the page after `position`, for this staff member only.
fn cursor_at(app: &App, staff: &UserRecord, kind: CursorKind, position: &[u8]) -> String {
    app.signing()
        .cursors
        .encode_position(kind, staff.id, position)
}

fn invalid_cursor() -> ApiError {
    ApiError::field("cursor", "Invalid cursor.")
}

/// A page of users, by lower-cased username, optionally searched.
pub async fn list_users(
    app: &App,
    staff: &UserRecord,
    search: Option<String>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<(Vec<UserSummary>, Option<String>), ApiError> {
    let after = position(app, staff, CursorKind::Users, cursor)?
        .map(|bytes| String::from_utf8(bytes).map_err(|_| invalid_cursor()))
        .transpose()?;
    let page = app
        .store
        .list_users(&UserQuery {
            search: search.clone(),
            limit,
            after,
        })
        .await?;
    app.store
        .append_audit(&entry(app, staff, AuditAction::ListUsers, None, search))
        .await?;
    let next = page
        .next_after
        .map(|after| cursor_at(app, staff, CursorKind::Users, after.as_bytes()));
    Ok((page.users, next))
}

async fn summary(app: &App, id: UserId) -> Result<UserSummary, ApiError> {
    let user = app.store.user_by_id(id).await?.ok_or(ApiError::NotFound)?;
    let account = app.store.account(id).await?.ok_or(ApiError::NotFound)?;
    Ok(UserSummary {
        user,
        balance: account.balance,
    })
}

/// One user with their balance.
pub async fn user_detail(
    app: &App,
    staff: &UserRecord,
    id: UserId,
) -> Result<UserSummary, ApiError> {
    let found = summary(app, id).await?;
    app.store
        .append_audit(&entry(
            app,
            staff,
            AuditAction::ViewUser,
            Some(&found.user),
            None,
        ))
        .await?;
    Ok(found)
}

/// The user an admin route names; `not_found` for unknown users.
pub async fn target(app: &App, id: UserId) -> Result<UserRecord, ApiError> {
    app.store.user_by_id(id).await?.ok_or(ApiError::NotFound)
}

/// Records that a staff member read `user`'s history. Called once the page has been read, so a
/// request refused for its parameters or cursor, or one the store could not answer, is not
/// recorded: it read nothing.
pub async fn audit_history_read(
    app: &App,
    staff: &UserRecord,
    user: &UserRecord,
) -> Result<(), ApiError> {
    app.store
        .append_audit(&entry(
            app,
            staff,
            AuditAction::ViewHistory,
            Some(user),
            None,
        ))
        .await?;
    Ok(())
}

/// Deactivates or reactivates a user. Deactivation revokes all their sessions in the same
/// step; a staff member cannot deactivate themselves.
pub async fn set_active(
    app: &App,
    staff: &UserRecord,
    id: UserId,
    active: bool,
) -> Result<UserSummary, ApiError> {
    if !active && id == staff.id {
        return Err(ApiError::SelfDeactivation);
    }
    let target = app.store.user_by_id(id).await?.ok_or(ApiError::NotFound)?;
    let action = if active {
        AuditAction::Reactivate
    } else {
        AuditAction::Deactivate
    };
    let changed = app
        .store
        .set_user_active(&StatusChange {
            user: id,
            active,
            now: app.clock.now(),
            audit: entry(app, staff, action, Some(&target), None),
        })
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(actor = %staff.id, target = %id, action = action.as_str(), "administrator changed a user's status");
    let account = app.store.account(id).await?.ok_or(ApiError::NotFound)?;
    Ok(UserSummary {
        user: changed,
        balance: account.balance,
    })
}

/// A page of the audit trail, newest first.
pub async fn audit_log(
    app: &App,
    staff: &UserRecord,
    limit: u32,
    cursor: Option<&str>,
) -> Result<(Vec<AuditEntry>, Option<String>), ApiError> {
    let before = position(app, staff, CursorKind::Audit, cursor)?;
    let page = app.store.audit_log(limit, before.as_deref()).await?;
    // Reading the trail is an admin action too. Recorded after the page was read, so the page
    // does not list the read that fetched it (the next one does), and a refused or failed read
    // is not recorded.
    app.store
        .append_audit(&entry(app, staff, AuditAction::ListAudit, None, None))
        .await?;
    let next = page
        .next_before
        .map(|b| cursor_at(app, staff, CursorKind::Audit, &b));
    Ok((page.entries, next))
}
