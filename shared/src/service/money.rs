//! Balance, deposits, withdrawals, transfers and history.

use crate::app::App;
use crate::domain::{
    ChangeKind, IdempotencyKey, Money, OperationId, RequestFingerprint, Timestamp, TransferId,
    UserId, username_key,
};
use crate::error::ApiError;
use crate::service::auth::{Principal, session_use};
use crate::store::{
    Account, Applied, BalanceChange, IdempotencyStamp, IdempotentRecord, Operation, StoreError,
    TransferCommand,
};

/// A money movement's result: the caller's operation, and whether it is a replay of an earlier
/// request with the same `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Movement {
    /// The caller's side of the movement.
    pub operation: Operation,
    /// `true` when nothing moved now because the key was already recorded.
    pub replayed: bool,
}

/// The caller's account.
pub async fn balance(app: &App, user: UserId) -> Result<Account, ApiError> {
    app.store.account(user).await?.ok_or(ApiError::InvalidToken)
}

/// A deposit or withdrawal request, parsed.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// A deposit or a withdrawal.
    pub kind: ChangeKind,
    /// The amount to move, already checked to be 0.01 to 1000000000.00.
    pub amount: Money,
    /// The client's text, at most 255 characters; `None` when not sent.
    pub description: Option<String>,
    /// The `Idempotency-Key` header, if sent; it binds this request to its first answer.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl ChangeRequest {
    /// What an `Idempotency-Key` is bound to: kind, amount and description (its absence too).
    fn fingerprint(&self) -> RequestFingerprint {
        RequestFingerprint::of_parts([
            Some(self.kind.as_str()),
            Some(&self.amount.minor().to_string()),
            self.description.as_deref(),
        ])
    }
}

/// Deposits into or withdraws from the caller's account, if their session is live.
///
/// A retry with a recorded key is answered by the store's atomic step itself (the key is
/// claimed there first), so the common case of a fresh key costs no extra read.
#[tracing::instrument(skip_all, fields(kind = request.kind.as_str()))]
pub async fn change_balance(
    app: &App,
    principal: Principal,
    request: ChangeRequest,
) -> Result<Movement, ApiError> {
    let now = app.clock.now();
    let user = principal.user;
    let fingerprint = request.fingerprint();
    let stamp = stamp(app, request.idempotency_key, fingerprint, now);
    let applied = app
        .store
        .apply_change(&BalanceChange {
            user,
            kind: request.kind,
            amount: request.amount,
            description: request.description,
            operation_id: OperationId::new(),
            now,
            idempotency: stamp.clone(),
            session: Some(session_use(principal, now)),
        })
        .await
        .map_err(|e| with_amount(e, request.amount))?;
    settle(applied, stamp.as_ref())
}

/// A transfer request, parsed.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// Recipient's username as given.
    pub to: String,
    /// The amount to move, already checked to be 0.01 to 1000000000.00.
    pub amount: Money,
    /// The client's text, at most 255 characters; `None` when not sent.
    pub description: Option<String>,
    /// The `Idempotency-Key` header, if sent; it binds this request to its first answer.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl TransferRequest {
    /// What an `Idempotency-Key` is bound to: recipient (case-insensitively), amount and
    /// description (its absence too).
    fn fingerprint(&self) -> RequestFingerprint {
        RequestFingerprint::of_parts([
            Some("transfer"),
            Some(&username_key(&self.to)),
            Some(&self.amount.minor().to_string()),
            self.description.as_deref(),
        ])
    }
}

/// Moves money from the caller to another active user, both sides in one atomic step, if the
/// caller's session is live.
#[tracing::instrument(skip_all)]
pub async fn transfer(
    app: &App,
    principal: Principal,
    request: TransferRequest,
) -> Result<Movement, ApiError> {
    let now = app.clock.now();
    let user = principal.user;
    let to_key = username_key(&request.to);
    let fingerprint = request.fingerprint();
    let stamp = stamp(app, request.idempotency_key, fingerprint, now);
    let applied = app
        .store
        .transfer(&TransferCommand {
            from: user,
            to_username_key: to_key,
            amount: request.amount,
            description: request.description,
            transfer_id: TransferId::new(),
            out_operation_id: OperationId::new(),
            in_operation_id: OperationId::new(),
            now,
            idempotency: stamp.clone(),
            session: Some(session_use(principal, now)),
        })
        .await
        .map_err(|e| with_amount(e, request.amount))?;
    settle(applied, stamp.as_ref())
}

fn stamp(
    app: &App,
    key: Option<IdempotencyKey>,
    fingerprint: RequestFingerprint,
    now: Timestamp,
) -> Option<IdempotencyStamp> {
    key.map(|key| IdempotencyStamp {
        key,
        fingerprint,
        expires_at: now.plus_seconds(app.config.idempotency_ttl_seconds),
    })
}

fn settle(applied: Applied, stamp: Option<&IdempotencyStamp>) -> Result<Movement, ApiError> {
    match (applied, stamp) {
        (Applied::Done(operation), _) => Ok(Movement {
            operation,
            replayed: false,
        }),
        // The key was recorded by an earlier request (or a racing one that committed first).
        (Applied::AlreadyRecorded(record), Some(stamp)) => replay(record, stamp),
        (Applied::AlreadyRecorded(_), None) => Err(ApiError::internal(
            "store reported a recorded key for a request without one",
        )),
    }
}

fn replay(record: IdempotentRecord, stamp: &IdempotencyStamp) -> Result<Movement, ApiError> {
    if record.fingerprint != stamp.fingerprint {
        return Err(ApiError::IdempotencyKeyMismatch);
    }
    Ok(Movement {
        operation: record.operation,
        replayed: true,
    })
}

fn with_amount(e: StoreError, amount: Money) -> ApiError {
    match e {
        StoreError::InsufficientFunds { balance } => {
            ApiError::InsufficientFunds { balance, amount }
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_binds_to_whether_a_description_was_given() {
        let change = |description: Option<&str>| ChangeRequest {
            kind: ChangeKind::Deposit,
            amount: Money::from_minor(500),
            description: description.map(str::to_owned),
            idempotency_key: None,
        };
        let transfer = |description: Option<&str>| TransferRequest {
            to: "Bob".into(),
            amount: Money::from_minor(500),
            description: description.map(str::to_owned),
            idempotency_key: None,
        };
        for text in ["\0", ""] {
            assert_ne!(change(None).fingerprint(), change(Some(text)).fingerprint());
            assert_ne!(
                transfer(None).fingerprint(),
                transfer(Some(text)).fingerprint()
            );
        }
        assert_eq!(change(None).fingerprint(), change(None).fingerprint());
        let mut to_bob = transfer(None);
        to_bob.to = "BOB".into();
        assert_eq!(to_bob.fingerprint(), transfer(None).fingerprint());
    }
}
