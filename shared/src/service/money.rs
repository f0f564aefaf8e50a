//! Balance, deposits, withdrawals, transfers and history.

use crate::app::App;
use crate::domain::{
    ChangeKind, IdempotencyKey, Money, OperationId, RequestFingerprint, Timestamp, TransferId,
    UserId, username_key,
};
use crate::error::ApiError;
use crate::service::auth::{Principal, session_use};
use crate::store::{
    Account, Applied, BalanceChange, IdempotencyStamp, IdempotentRecord, Operation, SessionUse,
    StoreError, TransferCommand,
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

/// What every money request carries besides where the money goes, already checked.
#[derive(Debug, Clone)]
pub struct MoneyTerms {
    /// The amount to move, already checked to be 0.01 to 1000000000.00.
    pub amount: Money,
    /// The client's text, at most 255 characters; `None` when not sent.
    pub description: Option<String>,
    /// The `Idempotency-Key` header, if sent; it binds this request to its first answer.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl MoneyTerms {
    /// What an `Idempotency-Key` is bound to: the request's own `head` (its kind, or its
    /// recipient), then amount and description (its absence too).
    fn fingerprint(&self, head: &[&str]) -> RequestFingerprint {
        let amount = self.amount.minor().to_string();
        let tail = [Some(amount.as_str()), self.description.as_deref()];
        RequestFingerprint::of_parts(head.iter().map(|part| Some(*part)).chain(tail))
    }
}

/// A deposit or withdrawal request, parsed.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// A deposit or a withdrawal.
    pub kind: ChangeKind,
    /// Amount, description and key.
    pub terms: MoneyTerms,
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
    let fingerprint = request.terms.fingerprint(&[request.kind.as_str()]);
    let start = Start::new(app, principal, request.terms.idempotency_key, fingerprint);
    let change = BalanceChange {
        user: principal.user,
        kind: request.kind,
        amount: request.terms.amount,
        description: request.terms.description,
        operation_id: OperationId::new(),
        now: start.now,
        idempotency: start.stamp.clone(),
        session: Some(start.session),
    };
    start.settle(app.store.apply_change(&change).await, request.terms.amount)
}

/// A transfer request, parsed.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    /// Recipient's username as given.
    pub to: String,
    /// Amount, description and key.
    pub terms: MoneyTerms,
}

/// Moves money from the caller to another active user, both sides in one atomic step, if the
/// caller's session is live.
#[tracing::instrument(skip_all)]
pub async fn transfer(
    app: &App,
    principal: Principal,
    request: TransferRequest,
) -> Result<Movement, ApiError> {
    // The recipient is bound case-insensitively, as it is looked up.
    let to_key = username_key(&request.to);
    let fingerprint = request.terms.fingerprint(&["transfer", &to_key]);
    let start = Start::new(app, principal, request.terms.idempotency_key, fingerprint);
    let transfer = TransferCommand {
        from: principal.user,
        to_username_key: to_key,
        amount: request.terms.amount,
        description: request.terms.description,
        transfer_id: TransferId::new(),
        out_operation_id: OperationId::new(),
        in_operation_id: OperationId::new(),
        now: start.now,
        idempotency: start.stamp.clone(),
        session: Some(start.session),
    };
    start.settle(app.store.transfer(&transfer).await, request.terms.amount)
}

/// What the service settles for a movement before the store applies it.
struct Start {
    now: Timestamp,
    /// The key's record to write with the movement, when a key was sent.
    stamp: Option<IdempotencyStamp>,
    /// The caller's session, checked (and its use recorded) inside the movement.
    session: SessionUse,
}

impl Start {
    fn new(
        app: &App,
        principal: Principal,
        key: Option<IdempotencyKey>,
        fingerprint: RequestFingerprint,
    ) -> Start {
        let now = app.clock.now();
        Start {
            now,
            stamp: key.map(|key| IdempotencyStamp {
                key,
                fingerprint,
                expires_at: now.plus_seconds(app.config.idempotency_ttl_seconds),
            }),
            session: session_use(principal, now),
        }
    }

    /// The store's answer as the service gives it: a movement, a replay, or a refusal (naming
    /// the amount asked for when funds were short).
    fn settle(
        self,
        applied: Result<Applied, StoreError>,
        amount: Money,
    ) -> Result<Movement, ApiError> {
        match (applied.map_err(|e| with_amount(e, amount))?, self.stamp) {
            (Applied::Done(operation), _) => Ok(Movement {
                operation,
                replayed: false,
            }),
            // The key was recorded by an earlier request (or a racing one that committed first).
            (Applied::AlreadyRecorded(record), Some(stamp)) => replay(record, &stamp),
            (Applied::AlreadyRecorded(_), None) => Err(ApiError::internal(
                "store reported a recorded key for a request without one",
            )),
        }
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
        let terms = |description: Option<&str>| MoneyTerms {
            amount: Money::from_minor(500),
            description: description.map(str::to_owned),
            idempotency_key: None,
        };
        let change = |description| terms(description).fingerprint(&["deposit"]);
        let transfer = |description| terms(description).fingerprint(&["transfer", "bob"]);
        for text in ["\0", ""] {
            assert_ne!(change(None), change(Some(text)));
            assert_ne!(transfer(None), transfer(Some(text)));
        }
        assert_eq!(change(None), change(None));
    }
}
