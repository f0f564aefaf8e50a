//! Deposits, withdrawals and transfers: one call of a server-side function each
//! (`migrations/postgres/0003_money_functions.sql`).

use super::*;

/// `lighttech_apply_change` (migrations 3 and 4): the session check and the whole balance
/// change in one statement.
pub(super) const APPLY_CHANGE: &str = "SELECT outcome, balance_after, seq FROM lighttech_apply_change(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// `lighttech_transfer` (migrations 3, 4 and 6): the recipient's share lock, the session check
/// and the whole transfer in one statement.
pub(super) const TRANSFER: &str = "SELECT outcome, balance_after, seq, recipient_id, recipient_username \
     FROM lighttech_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// A refusal raised by the money functions (their `LT` SQLSTATEs), or the error as it is.
pub(super) fn refusal(e: tokio_postgres::Error) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure::from(e);
    };
    match refused(db.code().code(), db.detail()) {
        Some(refused) => Failure::Fail(refused),
        None => Failure::from(e),
    }
}

/// The refusal a money function's SQLSTATE (and detail) stands for, if it is one of theirs.
pub(super) fn refused(code: &str, detail: Option<&str>) -> Option<StoreError> {
    Some(match code {
        "LT001" => match detail.and_then(|d| d.parse::<i64>().ok()) {
            Some(balance) => StoreError::InsufficientFunds {
                balance: Money::from_minor(balance),
            },
            None => StoreError::internal("insufficient funds reported without a balance"),
        },
        "LT002" => StoreError::BalanceLimitExceeded,
        "LT003" => StoreError::AccountNotFound,
        "LT004" => StoreError::RecipientNotFound,
        "LT005" => StoreError::SelfTransfer,
        "LT006" => StoreError::SessionNotLive,
        _ => return None,
    })
}

/// The session as the money functions take it: id and touch threshold (both NULL without).
pub(super) fn session_params(session: Option<&SessionUse>) -> (Option<Uuid>, Option<i64>) {
    match session {
        Some(s) => (Some(s.id.0), Some(s.touch_before.millis())),
        None => (None, None),
    }
}

/// The key's stamp as the money functions take it: key, fingerprint, expiry (all NULL without).
pub(super) fn stamp_params(
    stamp: Option<&IdempotencyStamp>,
) -> (Option<&str>, Option<&str>, Option<i64>) {
    match stamp {
        Some(s) => (
            Some(s.key.as_str()),
            Some(s.fingerprint.as_str()),
            Some(s.expires_at.millis()),
        ),
        None => (None, None, None),
    }
}

/// What a call of a money function came to.
pub(super) enum Called {
    /// The movement was applied: the function's row, with the (first) operation's balance
    /// after and sequence number.
    Done {
        row: Row,
        balance_after: Money,
        seq: u64,
    },
    /// The key was already recorded (a racing request with it committed first): its record.
    Recorded(IdempotentRecord),
}

/// Calls the money function `sql` (its outcome, balance after and sequence number first), for
/// `user`'s request under `stamp`.
pub(super) async fn call_money_function(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    user: UserId,
    stamp: Option<&IdempotencyStamp>,
    now: Timestamp,
) -> Result<Called, Failure> {
    let stmt = client.prepare_cached(sql).await?;
    let row = client.query_one(&stmt, params).await.map_err(refusal)?;
    let outcome: String = row.try_get("outcome")?;
    match (outcome.as_str(), stamp) {
        ("done", _) => Ok(Called::Done {
            balance_after: Money::from_minor(row.try_get("balance_after")?),
            seq: version_of(row.try_get("seq")?)?,
            row,
        }),
        ("recorded", Some(stamp)) => find_record(client, user, stamp.key.as_str(), now)
            .await?
            .map(Called::Recorded)
            .ok_or_else(|| StoreError::internal("claimed key vanished").into()),
        (other, _) => Err(StoreError::internal(format!(
            "unexpected money outcome {other:?} (key given: {})",
            stamp.is_some()
        ))
        .into()),
    }
}

pub(super) async fn apply_change_once(
    client: &deadpool_postgres::Object,
    c: &BalanceChange,
) -> Result<Applied, Failure> {
    let (session, touch_before) = session_params(c.session.as_ref());
    let (key, fingerprint, key_expires) = stamp_params(c.idempotency.as_ref());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
        &session,
        &touch_before,
        &c.user.0,
        &c.kind.as_str(),
        &c.amount.minor(),
        &Money::MAX_BALANCE.minor(),
        &c.now.millis(),
        &c.operation_id.0,
        &c.description.as_deref(),
        &key,
        &fingerprint,
        &key_expires,
    ];
    let called = call_money_function(
        client,
        APPLY_CHANGE,
        &params,
        c.user,
        c.idempotency.as_ref(),
        c.now,
    )
    .await?;
    let (balance_after, seq) = match called {
        Called::Done {
            balance_after, seq, ..
        } => (balance_after, seq),
        Called::Recorded(record) => return Ok(Applied::AlreadyRecorded(record)),
    };
    Ok(Applied::Done(c.operation(seq, balance_after, c.now)))
}

pub(super) async fn transfer_once(
    client: &deadpool_postgres::Object,
    t: &TransferCommand,
) -> Result<Applied, Failure> {
    let (session, touch_before) = session_params(t.session.as_ref());
    let (key, fingerprint, key_expires) = stamp_params(t.idempotency.as_ref());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
        &session,
        &touch_before,
        &t.from.0,
        &t.to_username_key,
        &t.amount.minor(),
        &Money::MAX_BALANCE.minor(),
        &t.now.millis(),
        &t.transfer_id.0,
        &t.out_operation_id.0,
        &t.in_operation_id.0,
        &t.description.as_deref(),
        &key,
        &fingerprint,
        &key_expires,
    ];
    let called = call_money_function(
        client,
        TRANSFER,
        &params,
        t.from,
        t.idempotency.as_ref(),
        t.now,
    )
    .await?;
    match called {
        Called::Done {
            row,
            balance_after,
            seq,
        } => Ok(Applied::Done(sent(t, &row, balance_after, seq)?)),
        Called::Recorded(record) => Ok(Applied::AlreadyRecorded(record)),
    }
}

/// The sender's `transfer_out` of `t`, from the row its function returned.
pub(super) fn sent(
    t: &TransferCommand,
    row: &Row,
    balance_after: Money,
    seq: u64,
) -> Result<Operation, Failure> {
    Ok(Operation {
        id: t.out_operation_id,
        user: t.from,
        seq,
        kind: OperationKind::TransferOut,
        amount: t.amount,
        balance_after,
        counterparty: Some(Counterparty {
            id: UserId(row.try_get("recipient_id")?),
            username: row.try_get("recipient_username")?,
        }),
        transfer_id: Some(t.transfer_id),
        description: t.description.clone(),
        created_at: t.now,
    })
}
