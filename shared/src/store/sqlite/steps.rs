//! The steps the write primitives are made of, each run inside the caller's transaction: an
//! operation row, a session's use, an idempotency record, a debit or credit, an audit entry.

use super::*;

pub(super) fn insert_operation(txn: &Connection, op: &Operation) -> Result<(), StoreError> {
    txn.prepare_cached(
        "INSERT INTO operations (user_id, seq, id, kind, amount, balance_after, counterparty_id, \
         counterparty_username, transfer_id, description, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            op.user.to_string(),
            op.seq as i64,
            op.id.to_string(),
            op.kind.as_str(),
            op.amount.minor(),
            op.balance_after.minor(),
            op.counterparty.as_ref().map(|c| c.id.to_string()),
            op.counterparty.as_ref().map(|c| c.username.clone()),
            op.transfer_id.map(|t| t.to_string()),
            op.description,
            op.created_at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// A money movement inside the caller's transaction, in the order every movement follows: the
/// session must be live (its use recorded); a key already recorded answers instead; otherwise
/// `apply` makes the mover's operation (and, for a transfer, the recipient's), which are written
/// with the key's record pointing at the mover's.
pub(super) fn movement(
    txn: &Connection,
    m: &impl Movement,
    apply: impl FnOnce() -> Result<(Operation, Option<Operation>), StoreError>,
) -> Result<Applied, StoreError> {
    let (user, stamp, now) = (m.mover(), m.stamp(), m.now());
    use_session(txn, user, m.session().as_ref(), now)?;
    if let Some(stamp) = stamp
        && let Some(existing) = find_idempotent(txn, user, stamp.key.as_str(), now)?
    {
        return Ok(Applied::AlreadyRecorded(existing));
    }
    let (op, other) = apply()?;
    insert_operation(txn, &op)?;
    if let Some(other) = &other {
        insert_operation(txn, other)?;
    }
    if let Some(stamp) = stamp {
        record_idempotency(txn, user, stamp, op.id)?;
    }
    Ok(Applied::Done(op))
}

/// Refuses a movement whose session is not live (`SessionNotLive`) and records its use when due;
/// runs first in the movement's transaction.
pub(super) fn use_session(
    conn: &Connection,
    user: UserId,
    session: Option<&SessionUse>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let Some(session) = session else {
        return Ok(());
    };
    let last_used: Option<i64> = conn
        .prepare_cached(
            "SELECT last_used_at FROM sessions \
             WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![session.id.to_string(), user.to_string(), now.millis()],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(map_err)?;
    match last_used {
        None => Err(StoreError::SessionNotLive),
        Some(used) if used < session.touch_before.millis() => {
            conn.prepare_cached("UPDATE sessions SET last_used_at = ?1 WHERE id = ?2")
                .and_then(|mut s| s.execute(params![now.millis(), session.id.to_string()]))
                .map_err(map_err)?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// The unexpired record for a key, read inside the caller's transaction or connection.
pub(super) fn find_idempotent(
    conn: &Connection,
    user: UserId,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotentRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT k.fingerprint, {OPERATION_COLUMNS} FROM idempotency_keys k \
         JOIN operations o ON o.id = k.operation_id \
         WHERE k.user_id = ?1 AND k.key = ?2 AND k.expires_at > ?3"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![user.to_string(), key, now.millis()], |row| {
            Ok(IdempotentRecord {
                fingerprint: RequestFingerprint::from_stored(row.get("fingerprint")?),
                operation: operation_from_row(row)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

pub(super) fn record_idempotency(
    txn: &Connection,
    user: UserId,
    stamp: &IdempotencyStamp,
    operation: OperationId,
) -> Result<(), StoreError> {
    // An expired record for the same key is replaced: the key may be used afresh.
    txn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (user_id, key, fingerprint, operation_id, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            user.to_string(),
            stamp.key.as_str(),
            stamp.fingerprint.as_str(),
            operation.to_string(),
            stamp.expires_at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// Debits (`Withdrawal`) an account when the balance covers the amount, or credits
/// (`Deposit`) it when the result stays under the ceiling; returns (balance_after, version). A
/// transfer is its sender's withdrawal and its recipient's deposit.
pub(super) fn move_balance(
    txn: &Connection,
    user: UserId,
    kind: ChangeKind,
    amount: Money,
    now: Timestamp,
) -> Result<(Money, u64), StoreError> {
    let (amount, now, id) = (amount.minor(), now.millis(), user.to_string());
    let ceiling = Money::MAX_BALANCE.minor();
    let (sql, params): (&str, &[&dyn rusqlite::ToSql]) = match kind {
        ChangeKind::Withdrawal => (
            "UPDATE accounts SET balance = balance - ?1, version = version + 1, updated_at = ?2 \
             WHERE user_id = ?3 AND balance >= ?1 RETURNING balance, version",
            params![amount, now, id],
        ),
        ChangeKind::Deposit => (
            "UPDATE accounts SET balance = balance + ?1, version = version + 1, updated_at = ?2 \
             WHERE user_id = ?3 AND balance <= ?4 - ?1 RETURNING balance, version",
            params![amount, now, id, ceiling],
        ),
    };
    let updated = txn
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_row(params, |r| {
                Ok((Money::from_minor(r.get(0)?), version_of(r.get(1)?)?))
            })
            .optional()
        })
        .map_err(map_err)?;
    match updated {
        Some(v) => Ok(v),
        // The rule held no row: say which, unless there is no account at all.
        None => match (current_balance(txn, user)?, kind) {
            (None, _) => Err(StoreError::AccountNotFound),
            (Some(balance), ChangeKind::Withdrawal) => {
                Err(StoreError::InsufficientFunds { balance })
            }
            (Some(_), ChangeKind::Deposit) => Err(StoreError::BalanceLimitExceeded),
        },
    }
}

pub(super) fn current_balance(
    conn: &Connection,
    user: UserId,
) -> Result<Option<Money>, StoreError> {
    conn.prepare_cached("SELECT balance FROM accounts WHERE user_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([user.to_string()], |r| Ok(Money::from_minor(r.get(0)?)))
                .optional()
        })
        .map_err(map_err)
}

pub(super) fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (id, actor_id, actor_username, action, target_id, target_username, detail, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            e.id.to_string(),
            e.actor.id.to_string(),
            e.actor.username,
            e.action.as_str(),
            e.target.as_ref().map(|t| t.id.to_string()),
            e.target.as_ref().map(|t| t.username.clone()),
            e.detail,
            e.at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}
