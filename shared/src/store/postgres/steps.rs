//! The transactional steps the non-money primitives are made of, each run inside the
//! transaction [`in_tx!`] gives it.

use super::*;

pub(super) async fn find_record(
    client: &deadpool_postgres::Object,
    user: UserId,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotentRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT k.fingerprint, {OPERATION_COLUMNS} FROM idempotency_keys k \
             JOIN operations o ON o.id = k.operation_id \
             WHERE k.user_id = $1 AND k.key = $2 AND k.expires_at > $3"
        ))
        .await
        .map_err(map_pg)?;
    let row = client
        .query_opt(&stmt, &[&user.0, &key, &now.millis()])
        .await
        .map_err(map_pg)?;
    row.map(|r| {
        Ok(IdempotentRecord {
            fingerprint: RequestFingerprint::from_stored(r.try_get("fingerprint").map_err(map_pg)?),
            operation: operation_from_row(&r)?,
        })
    })
    .transpose()
}

pub(super) async fn create_user_tx(tx: &Tx<'_>, user: &NewUser) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash, \
             is_staff, is_active, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)",
        &[
            &user.id.0,
            &user.username.as_str(),
            &user.username.key(),
            &user.email.as_str(),
            &user.email.key(),
            &user.password_hash,
            &user.is_staff,
            &user.now.millis(),
        ],
    )
    .await
    .map_err(on_constraint)?;
    tx.execute(
        "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES ($1, 0, 0, $2)",
        &[&user.id.0, &user.now.millis()],
    )
    .await?;
    Ok(())
}

pub(super) async fn rotate_session_tx(tx: &Tx<'_>, r: &Rotation) -> Result<RotateOutcome, Failure> {
    // The session ends at the new token's expiry or its maximum lifetime, whichever comes
    // first (`Rotation::session_end`, computed here from the stored login time).
    let rotated = tx
        .query_opt(
            "UPDATE sessions SET refresh_jti = $1, last_used_at = $2, \
                 expires_at = LEAST($3, created_at + $7) \
                 WHERE id = $4 AND user_id = $5 AND refresh_jti = $6 \
                 AND revoked_at IS NULL AND expires_at > $2 AND created_at > $8 \
                 RETURNING created_at",
            &[
                &r.next.0,
                &r.now.millis(),
                &r.expires_at.millis(),
                &r.session.0,
                &r.user.0,
                &r.presented.0,
                &r.max_lifetime_seconds.saturating_mul(1000),
                &r.created_after().millis(),
            ],
        )
        .await?;
    if let Some(row) = rotated {
        return Ok(RotateOutcome::Rotated {
            created_at: Timestamp::from_millis(row.try_get(0).map_err(map_pg)?),
        });
    }
    let current = tx
        .query_opt(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2 FOR UPDATE"
            ),
            &[&r.session.0, &r.user.0],
        )
        .await?;
    match current.map(|row| session_from_row(&row)).transpose()? {
        // This very rotation already applied (a resend): its fresh token id is current.
        Some(s) if r.admits(&s) && s.refresh_jti == r.next => Ok(RotateOutcome::Rotated {
            created_at: s.created_at,
        }),
        Some(s) if r.admits(&s) => {
            tx.execute(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2",
                &[&r.now.millis(), &r.session.0],
            )
            .await?;
            Ok(RotateOutcome::Reused)
        }
        _ => Ok(RotateOutcome::Inactive),
    }
}

pub(super) async fn take_login_attempt_tx(
    tx: &Tx<'_>,
    username_key: &str,
    policy: ThrottlePolicy,
    now: Timestamp,
    floor: i64,
    max: i32,
) -> Result<Attempt, Failure> {
    // One statement: open a window, or count inside a live one that has room. The row
    // lock taken by ON CONFLICT serialises racing attempts. Alongside, a bounded batch of
    // other usernames' rows whose window has passed is deleted (rows another attempt holds
    // are skipped, never waited for), so the table holds about the live windows only.
    let counted = tx
        .query_opt(
            "WITH pruned AS (\
                 DELETE FROM login_attempts WHERE username_key IN (\
                     SELECT username_key FROM login_attempts \
                     WHERE window_start <= $3 AND username_key <> $1 \
                     LIMIT $5 FOR UPDATE SKIP LOCKED)) \
                 INSERT INTO login_attempts (username_key, attempts, window_start) \
                 VALUES ($1, 1, $2) \
                 ON CONFLICT (username_key) DO UPDATE SET \
                   attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 \
                                   ELSE login_attempts.attempts + 1 END, \
                   window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 \
                                       ELSE login_attempts.window_start END \
                 WHERE login_attempts.window_start <= $3 OR login_attempts.attempts < $4 \
                 RETURNING attempts",
            &[
                &username_key,
                &now.millis(),
                &floor,
                &max,
                &(EXPIRED_ATTEMPTS_PRUNED as i64),
            ],
        )
        .await?;
    if counted.is_some() {
        return Ok(Attempt::Allowed);
    }
    let start: i64 = tx
        .query_one(
            "SELECT window_start FROM login_attempts WHERE username_key = $1",
            &[&username_key],
        )
        .await?
        .get(0);
    let remaining_ms = (start + policy.window_seconds * 1000 - now.millis()).max(0);
    Ok(Attempt::Limited {
        retry_after: u64::try_from((remaining_ms + 999) / 1000)
            .unwrap_or(1)
            .max(1),
    })
}

pub(super) async fn insert_audit(
    client: &impl GenericClient,
    e: &AuditEntry,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO audit_log (id, actor_id, actor_username, action, target_id, \
             target_username, detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &e.id,
                &e.actor.id.0,
                &e.actor.username,
                &e.action.as_str(),
                &e.target.as_ref().map(|t| t.id.0),
                &e.target.as_ref().map(|t| t.username.as_str()),
                &e.detail,
                &e.at.millis(),
            ],
        )
        .await?;
    Ok(())
}

/// The user row is share-locked while the session is inserted: a concurrent deactivation
/// (which updates that row) waits for this insert, then revokes the new session with the rest.
pub(super) async fn create_session_tx(tx: &Tx<'_>, s: &SessionRecord) -> Result<bool, Failure> {
    let active = tx
        .query_opt(
            "SELECT is_active FROM users WHERE id = $1 FOR SHARE",
            &[&s.user.0],
        )
        .await?
        .is_some_and(|row| row.get::<_, bool>(0));
    if !active {
        return Ok(false);
    }
    tx.execute(
        &format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &s.id.0,
            &s.user.0,
            &s.created_at.millis(),
            &s.last_used_at.millis(),
            &s.expires_at.millis(),
            &s.refresh_jti.0,
            &s.user_agent,
            &s.ip,
            &s.revoked_at.map(Timestamp::millis),
        ],
    )
    .await?;
    Ok(true)
}

/// The UPDATE of the user row conflicts with the share lock a transfer in flight holds on its
/// recipient's row (migration 6): a deactivation waits for such a transfer, and a transfer that
/// starts after it committed finds the recipient inactive.
pub(super) async fn set_user_active_tx(
    tx: &Tx<'_>,
    change: &StatusChange,
) -> Result<Option<UserRecord>, Failure> {
    let updated = tx
        .query_opt(
            &format!("UPDATE users SET is_active = $1 WHERE id = $2 RETURNING {USER_COLUMNS}"),
            &[&change.active, &change.user.0],
        )
        .await?;
    let Some(row) = updated else {
        return Ok(None);
    };
    if !change.active {
        tx.execute(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            &[&change.now.millis(), &change.user.0],
        )
        .await?;
    }
    insert_audit(&**tx, &change.audit).await?;
    Ok(Some(user_from_row(&row)?))
}
