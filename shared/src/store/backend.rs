//! What a backend is written in: the [`Store`] trait, the records its methods take and give,
//! and the domain types inside them. Each backend imports it whole, so a record added to the
//! trait is named here once, not in every backend's import list.

pub(super) use super::{
    Account, Applied, Attempt, AuditAction, AuditEntry, AuditPage, AuditParty, BalanceChange,
    Counterparty, FIRST_SEQ, HistoryPage, HistoryQuery, IdempotencyStamp, IdempotentRecord,
    Movement, NewUser, Operation, RotateOutcome, Rotation, SessionRecord, SessionUse, StatusChange,
    Store, StoreError, ThrottlePolicy, TransferCommand, UserPage, UserQuery, UserRecord,
    UserSummary, page_of,
};
pub(super) use crate::domain::{
    ChangeKind, Email, IdempotencyKey, Money, OperationId, OperationKind, RequestFingerprint,
    SessionId, Timestamp, TokenId, TransferId, UserId, Username,
};

/// The SQL stores' own: DynamoDB expires throttle rows with its TTL and pages its audit trail
/// by key.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(super) use super::{EXPIRED_ATTEMPTS_PRUNED, audit_seq_before};
