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

/// Calls the money function `sql` (its outcome, balance after and sequence number first) for
/// the movement `m`.
async fn call_money_function(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    m: &impl Movement,
) -> Result<Called, Failure> {
    let (user, stamp, now) = (m.mover(), m.stamp(), m.now());
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

/// A movement as its money function takes it; the parameters both share are [`Movement`]'s.
pub(super) trait MoneyFunction: Movement + Sync {
    /// The function's call.
    const SQL: &'static str;
    /// What the movement names after its mover: its kind, or its recipient's username key.
    fn target(&self) -> &str;
    /// The ids it gives what it writes (the transfer's own id first, for a transfer).
    fn ids(&self) -> Vec<Uuid>;
    /// The mover's operation, from the function's row.
    fn done(&self, row: &Row, balance_after: Money, seq: u64) -> Result<Operation, Failure>;
}

impl MoneyFunction for BalanceChange {
    const SQL: &'static str = APPLY_CHANGE;
    fn target(&self) -> &str {
        self.kind.as_str()
    }
    fn ids(&self) -> Vec<Uuid> {
        vec![self.operation_id.0]
    }
    fn done(&self, _row: &Row, balance_after: Money, seq: u64) -> Result<Operation, Failure> {
        Ok(self.operation(seq, balance_after, self.now))
    }
}

impl MoneyFunction for TransferCommand {
    const SQL: &'static str = TRANSFER;
    fn target(&self) -> &str {
        &self.to_username_key
    }
    fn ids(&self) -> Vec<Uuid> {
        vec![
            self.transfer_id.0,
            self.out_operation_id.0,
            self.in_operation_id.0,
        ]
    }
    fn done(&self, row: &Row, balance_after: Money, seq: u64) -> Result<Operation, Failure> {
        sent(self, row, balance_after, seq)
    }
}

/// One call of `m`'s money function, in a statement of its own. Both functions take the session,
/// the mover, the target, amount, ceiling and moment, the ids, the description and the key's
/// stamp, in that order (migrations 3 and 4).
pub(super) async fn money_once<M: MoneyFunction>(
    client: &deadpool_postgres::Object,
    m: &M,
) -> Result<Applied, Failure> {
    let (session, touch_before) = session_params(m.session().as_ref());
    let (key, fingerprint, key_expires) = stamp_params(m.stamp());
    let (mover, target, ids) = (m.mover().0, m.target(), m.ids());
    let (amount, ceiling, now) = (
        m.amount().minor(),
        Money::MAX_BALANCE.minor(),
        m.now().millis(),
    );
    let description = m.description();
    let head: [&(dyn ToSql + Sync); 7] = [
        &session,
        &touch_before,
        &mover,
        &target,
        &amount,
        &ceiling,
        &now,
    ];
    let tail: [&(dyn ToSql + Sync); 4] = [&description, &key, &fingerprint, &key_expires];
    let ids = ids.iter().map(|id| id as &(dyn ToSql + Sync));
    let params: Vec<_> = head.into_iter().chain(ids).chain(tail).collect();
    match call_money_function(client, M::SQL, &params, m).await? {
        Called::Done {
            row,
            balance_after,
            seq,
        } => Ok(Applied::Done(m.done(&row, balance_after, seq)?)),
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
    let recipient = Counterparty {
        id: UserId(row.try_get("recipient_id")?),
        username: row.try_get("recipient_username")?,
    };
    let applied = (balance_after, seq);
    Ok(t.side(
        OperationKind::TransferOut,
        t.from,
        applied,
        recipient,
        t.now,
    ))
}
