//! The storage boundary: a trait of atomic primitives shaped for DynamoDB.
//!
//! Each method is one atomic step in every backend — one `TransactWriteItems` (or conditional
//! write) in DynamoDB, one transaction in PostgreSQL and SQLite. Nothing above this trait ever
//! reads a value, changes it and writes it back: the conditions (enough funds, balance ceiling,
//! key not yet used, refresh token still current) are checked by the store inside the same
//! step that applies the change. Every change to an account bumps its `version`; each history
//! entry carries the version it produced as its `seq`, so history is ordered exactly as the
//! account changed and the history cache can key on the version.

mod backend;
pub mod dynamo;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod email_keys;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;

use crate::domain::{
    ChangeKind, Email, IdempotencyKey, Money, OperationId, OperationKind, RequestFingerprint,
    SessionId, Timestamp, TokenId, TransferId, UserId, Username,
};
use crate::error::Source;

/// A user as stored, password hash included (it never leaves the service layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user's id, fixed at registration.
    pub id: UserId,
    /// The spelling the user chose.
    pub username: Username,
    /// Lower-cased address.
    pub email: Email,
    /// PHC-format argon2id hash.
    pub password_hash: String,
    /// Staff may use the admin API.
    pub is_staff: bool,
    /// Inactive users cannot log in or receive transfers.
    pub is_active: bool,
    /// When the user registered.
    pub created_at: Timestamp,
}

/// A user's account: one per user, created with the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// The user who owns it.
    pub user: UserId,
    /// The balance now; never negative, never above `Money::MAX_BALANCE`.
    pub balance: Money,
    /// Bumped by every change; the newest operation's `seq` equals it.
    pub version: u64,
    /// When the balance last changed (or the account was opened).
    pub updated_at: Timestamp,
}

/// The other side of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterparty {
    /// Their user id.
    pub id: UserId,
    /// Their username at the time of the transfer.
    pub username: String,
}

/// One entry of an account's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The operation's id, unique across all accounts.
    pub id: OperationId,
    /// The account it belongs to.
    pub user: UserId,
    /// The account version this operation produced: history is ordered by it.
    pub seq: u64,
    /// Deposit, withdrawal, or one side of a transfer.
    pub kind: OperationKind,
    /// Always positive; `kind` says in which direction.
    pub amount: Money,
    /// The balance right after this operation.
    pub balance_after: Money,
    /// For transfers, the other account.
    pub counterparty: Option<Counterparty>,
    /// For transfers, shared by both sides.
    pub transfer_id: Option<TransferId>,
    /// Free text from the client.
    pub description: Option<String>,
    /// When it was applied.
    pub created_at: Timestamp,
}

/// The idempotency record to write in the same atomic step as a money movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyStamp {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// What the request asked for.
    pub fingerprint: RequestFingerprint,
    /// After this instant the key may be used afresh.
    pub expires_at: Timestamp,
}

/// A key already recorded for this user, with the operation it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRecord {
    /// What the original request asked for.
    pub fingerprint: RequestFingerprint,
    /// The operation the original request produced (its `201` body).
    pub operation: Operation,
}

/// The result of a money movement that carried an idempotency key or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The movement happened; this is the caller's operation.
    Done(Operation),
    /// The key was already recorded (unexpired); nothing moved. The caller compares fingerprints.
    AlreadyRecorded(IdempotentRecord),
}

/// The session a money movement is made in. The store checks, inside the movement's atomic
/// step and before anything else (a recorded key included), that it is the mover's own, not
/// revoked and not expired — so a session revoked or a user deactivated before the movement
/// commits cannot move money, and a refused session learns nothing about the account — and
/// records its use when it was last used before `touch_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionUse {
    /// The session of the caller's access token.
    pub id: SessionId,
    /// Record the use (`last_used_at` = the movement's time) if the last one is older.
    pub touch_before: Timestamp,
}

/// A deposit or a withdrawal.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    /// The account to change (its owner's id).
    pub user: UserId,
    /// A deposit or a withdrawal.
    pub kind: ChangeKind,
    /// How much to move; positive, the direction is `kind`'s.
    pub amount: Money,
    /// The client's text, stored with the operation.
    pub description: Option<String>,
    /// Id for the new operation.
    pub operation_id: OperationId,
    /// The moment of the change.
    pub now: Timestamp,
    /// Recorded atomically with the change when present.
    pub idempotency: Option<IdempotencyStamp>,
    /// The session the request came in (`None` only for callers acting without one, such as
    /// tests seeding balances): the change happens only while it is live.
    pub session: Option<SessionUse>,
}

impl BalanceChange {
    /// The operation this change records, once applied as the account's `seq`-th, leaving
    /// `balance_after`.
    pub fn operation(&self, seq: u64, balance_after: Money, created_at: Timestamp) -> Operation {
        Operation {
            id: self.operation_id,
            user: self.user,
            seq,
            kind: self.kind.operation_kind(),
            amount: self.amount,
            balance_after,
            counterparty: None,
            transfer_id: None,
            description: self.description.clone(),
            created_at,
        }
    }
}

/// A transfer between two accounts.
#[derive(Debug, Clone)]
pub struct TransferCommand {
    /// The sender's user id: the account debited.
    pub from: UserId,
    /// The recipient's username, lower-cased.
    pub to_username_key: String,
    /// How much to move; positive.
    pub amount: Money,
    /// Client text, copied to both sides.
    pub description: Option<String>,
    /// Links both sides.
    pub transfer_id: TransferId,
    /// Id of the sender's `transfer_out`.
    pub out_operation_id: OperationId,
    /// Id of the recipient's `transfer_in`.
    pub in_operation_id: OperationId,
    /// The moment of the transfer.
    pub now: Timestamp,
    /// Recorded atomically with the transfer when present.
    pub idempotency: Option<IdempotencyStamp>,
    /// The sender's session (`None` only for callers acting without one): the transfer
    /// happens only while it is live.
    pub session: Option<SessionUse>,
}

impl TransferCommand {
    /// One side of this transfer once applied: `kind` is `TransferOut` for the sender's,
    /// `TransferIn` for the recipient's; `applied` is what it left `account` with, the balance
    /// and the version it made (its `seq`); `other` is the account on the other side. Both
    /// sides share the transfer's id, text and moment.
    pub fn side(
        &self,
        kind: OperationKind,
        account: UserId,
        (balance_after, seq): (Money, u64),
        other: Counterparty,
        created_at: Timestamp,
    ) -> Operation {
        Operation {
            id: match kind {
                OperationKind::TransferOut => self.out_operation_id,
                _ => self.in_operation_id,
            },
            user: account,
            seq,
            kind,
            amount: self.amount,
            balance_after,
            counterparty: Some(other),
            transfer_id: Some(self.transfer_id),
            description: self.description.clone(),
            created_at,
        }
    }
}

/// What both money movements carry under the same names, so that a backend checks the session,
/// claims the key and writes the operations of either the same way.
pub trait Movement {
    /// The account the movement is made from: the changed one, or the sender's.
    fn mover(&self) -> UserId;
    /// How much moves; positive.
    fn amount(&self) -> Money;
    /// The client's text, stored with the operations.
    fn description(&self) -> Option<&str>;
    /// The moment of the movement.
    fn now(&self) -> Timestamp;
    /// The key's record to write with the movement, when the request sent a key.
    fn stamp(&self) -> Option<&IdempotencyStamp>;
    /// The session the movement is made in, when it is made in one.
    fn session(&self) -> Option<SessionUse>;
}

/// [`Movement`] for a command: the two differ only in the name of the mover's field.
macro_rules! movement {
    ($command:ty, $mover:ident) => {
        impl Movement for $command {
            fn mover(&self) -> UserId {
                self.$mover
            }
            fn amount(&self) -> Money {
                self.amount
            }
            fn description(&self) -> Option<&str> {
                self.description.as_deref()
            }
            fn now(&self) -> Timestamp {
                self.now
            }
            fn stamp(&self) -> Option<&IdempotencyStamp> {
                self.idempotency.as_ref()
            }
            fn session(&self) -> Option<SessionUse> {
                self.session
            }
        }
    };
}

movement!(BalanceChange, user);
movement!(TransferCommand, from);

/// A new user and the facts the store must keep unique.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The id chosen for the new user.
    pub id: UserId,
    /// The spelling the user chose; uniqueness is by its lower-cased key.
    pub username: Username,
    /// Lower-cased email.
    pub email: Email,
    /// argon2id hash.
    pub password_hash: String,
    /// Staff flag (superusers).
    pub is_staff: bool,
    /// The registration moment, stored as `created_at`.
    pub now: Timestamp,
}

/// A login session: the chain of refresh tokens issued since one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id (`sid` claim).
    pub id: SessionId,
    /// The user who logged in.
    pub user: UserId,
    /// When the login created the session.
    pub created_at: Timestamp,
    /// Last login, refresh or (at most once a minute) authenticated request.
    pub last_used_at: Timestamp,
    /// When the newest refresh token expires; the session ends with it.
    pub expires_at: Timestamp,
    /// The `jti` of the only refresh token that may still be spent.
    pub refresh_jti: TokenId,
    /// Client `User-Agent` at login.
    pub user_agent: Option<String>,
    /// Client address at login.
    pub ip: Option<String>,
    /// Set once the session is revoked; it never comes back.
    pub revoked_at: Option<Timestamp>,
}

impl SessionRecord {
    /// Live: not revoked and not expired.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Spend the presented refresh token and make a new one current.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The session's owner.
    pub user: UserId,
    /// The session whose refresh token is rotated.
    pub session: SessionId,
    /// The presented token's `jti`: it must still be the current one.
    pub presented: TokenId,
    /// The replacement's `jti`.
    pub next: TokenId,
    /// The replacement's expiry (the session's new end), unless the session's maximum lifetime
    /// ends it sooner.
    pub expires_at: Timestamp,
    /// How long a session may live after its login, in seconds (`SESSION_MAX_LIFETIME_DAYS`).
    /// The store checks it inside the rotation's atomic step: a session created that long
    /// before `now` (or longer) is not rotated (`Inactive`), and the session's new end is
    /// [`Rotation::session_end`], never later than `created_at` plus this.
    pub max_lifetime_seconds: i64,
    /// The moment of the rotation.
    pub now: Timestamp,
}

impl Rotation {
    /// Only a session created after this instant may still be rotated.
    pub fn created_after(&self) -> Timestamp {
        self.now.plus_seconds(-self.max_lifetime_seconds)
    }

    /// The end a rotation gives a session created at `created_at`: the replacement's expiry,
    /// cut to the session's maximum lifetime.
    pub fn session_end(&self, created_at: Timestamp) -> Timestamp {
        self.expires_at
            .min(created_at.plus_seconds(self.max_lifetime_seconds))
    }

    /// Whether a session as stored may still be rotated (or its rotation recognised): not
    /// revoked, not expired, and within its maximum lifetime.
    pub fn admits(&self, session: &SessionRecord) -> bool {
        session.is_active(self.now) && session.created_at > self.created_after()
    }
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented token was current and is now spent. The session's login time comes
    /// back with it: the new tokens must not outlive the session's maximum lifetime.
    Rotated {
        /// When the session was opened.
        created_at: Timestamp,
    },
    /// The presented token was already spent: the store revoked the session in the same step.
    Reused,
    /// The session does not exist, is revoked, has expired or has reached its maximum lifetime.
    Inactive,
}

/// A per-username login throttle decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt was counted and may proceed.
    Allowed,
    /// The window is full; retry after this many seconds.
    Limited {
        /// Seconds until the window passes.
        retry_after: u64,
    },
}

/// Throttle rows whose window has passed that a SQL store deletes, at most, along with each
/// attempt it counts: more than the one row an attempt can add, so the table holds little beyond
/// the live windows, and bounded, so no attempt does unbounded work. (DynamoDB expires them with
/// its TTL instead.)
pub const EXPIRED_ATTEMPTS_PRUNED: usize = 16;

/// Most transfers into one recipient the PostgreSQL store applies in one transaction
/// (`POSTGRES_TRANSFER_BATCH`): each runs in a subtransaction, and past 64 of them in one
/// transaction PostgreSQL's snapshots in every other session get slower (a backend's cache of
/// subtransactions overflows).
pub const MAX_TRANSFER_BATCH: usize = 32;

/// Login throttle limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Attempts allowed per window.
    pub max_attempts: u32,
    /// Window length in seconds, counted from the first attempt.
    pub window_seconds: i64,
}

/// A page request for an account's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The account owner whose history is read.
    pub user: UserId,
    /// Page size, 1–100.
    pub limit: u32,
    /// Only entries with `seq` below this (the cursor's position); `None` starts at the newest.
    pub before_seq: Option<u64>,
    /// Only these kinds; empty means all.
    pub kinds: Vec<OperationKind>,
    /// Only entries created at or after this instant.
    pub since: Option<Timestamp>,
    /// Only entries created at or before this instant.
    pub until: Option<Timestamp>,
}

/// The `seq` of every account's first operation: nothing lies below it.
pub const FIRST_SEQ: u64 = 1;

impl HistoryQuery {
    /// Whether the cursor's position leaves nothing to read (at or below [`FIRST_SEQ`]): such a
    /// page is empty without asking the backend, which might refuse the empty range it makes.
    pub fn below_everything(&self) -> bool {
        self.before_seq.is_some_and(|before| before <= FIRST_SEQ)
    }

    /// Whether an entry of this kind, created at `at`, passes the query's filters.
    pub fn admits(&self, kind: OperationKind, at: Timestamp) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self.since.is_none_or(|since| at >= since)
            && self.until.is_none_or(|until| at <= until)
    }
}

/// A page from `rows`, read as up to `limit + 1` in page order: the first `limit` of them, and
/// when there was a row beyond the limit (so there is more), the cursor of the last row kept.
pub(crate) fn page_of<T, C>(
    mut rows: Vec<T>,
    limit: u32,
    cursor: impl FnOnce(&T) -> C,
) -> (Vec<T>, Option<C>) {
    if rows.len() <= limit as usize {
        return (rows, None);
    }
    rows.truncate(limit as usize);
    let next = rows.last().map(cursor);
    (rows, next)
}

/// Where an audit page of a SQL store starts: below the `seq` its position holds (big-endian
/// bytes, as the page before handed it out), or at the top.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn audit_seq_before(before: Option<&[u8]>) -> Result<i64, StoreError> {
    match before {
        Some(bytes) => bytes
            .try_into()
            .map(i64::from_be_bytes)
            .map_err(|_| StoreError::internal("malformed audit position")),
        None => Ok(i64::MAX),
    }
}

/// One page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Up to `limit` operations, newest first.
    pub operations: Vec<Operation>,
    /// Where the next page starts (`before_seq`), when there may be more.
    pub next_before: Option<u64>,
}

impl HistoryPage {
    /// The page of `limit` entries from `fetched`, up to `limit + 1` rows read newest first: a
    /// row beyond the limit only tells that there is more, after the page's last entry.
    pub fn from_fetched(fetched: Vec<Operation>, limit: u32) -> HistoryPage {
        match page_of(fetched, limit, |o| o.seq) {
            (operations, Some(last)) => HistoryPage::cut_short(operations, last),
            (operations, None) => HistoryPage {
                operations,
                next_before: None,
            },
        }
    }

    /// A page that stopped at `last_looked_at`, the oldest position it looked at, before it knew
    /// whether more lies below (a full page, or a store's bound on what one page passes over):
    /// the next page resumes below it — unless that is the first operation, and the history
    /// ends here. No cursor ever points at an empty range.
    pub fn cut_short(operations: Vec<Operation>, last_looked_at: u64) -> HistoryPage {
        HistoryPage {
            operations,
            next_before: (last_looked_at > FIRST_SEQ).then_some(last_looked_at),
        }
    }
}

/// A user with their balance, as administrators list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// The user, as stored.
    pub user: UserRecord,
    /// Their account's balance now.
    pub balance: Money,
}

/// A page request for the administrators' user list, ordered by lower-cased username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Lower-cased text that the username or the email must contain; `None` lists everyone.
    pub search: Option<String>,
    /// Page size, 1–100.
    pub limit: u32,
    /// Only users whose lower-cased username sorts after this (the cursor's position).
    pub after: Option<String>,
}

/// One page of users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// The users, by lower-cased username.
    pub users: Vec<UserSummary>,
    /// Where the next page starts (`after`), when there may be more.
    pub next_after: Option<String>,
}

/// What an administrator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// Listed or searched users.
    ListUsers,
    /// Viewed one user.
    ViewUser,
    /// Read one user's history.
    ViewHistory,
    /// Deactivated a user.
    Deactivate,
    /// Reactivated a user.
    Reactivate,
    /// Read a page of the audit trail.
    ListAudit,
}

impl AuditAction {
    /// Every action, for parsing and exhaustive checks.
    pub const ALL: [AuditAction; 6] = [
        AuditAction::ListUsers,
        AuditAction::ViewUser,
        AuditAction::ViewHistory,
        AuditAction::Deactivate,
        AuditAction::Reactivate,
        AuditAction::ListAudit,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ListUsers => "users.list",
            AuditAction::ViewUser => "user.view",
            AuditAction::ViewHistory => "user.history",
            AuditAction::Deactivate => "user.deactivate",
            AuditAction::Reactivate => "user.reactivate",
            AuditAction::ListAudit => "audit.list",
        }
    }

    /// Parses the storage name.
    pub fn parse(text: &str) -> Option<AuditAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Someone named in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditParty {
    /// Their user id.
    pub id: UserId,
    /// Their username at the time.
    pub username: String,
}

/// One entry of the audit trail: who did what to whom, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The entry's id.
    pub id: uuid::Uuid,
    /// The staff member who acted.
    pub actor: AuditParty,
    /// What they did.
    pub action: AuditAction,
    /// The user it concerned, if one.
    pub target: Option<AuditParty>,
    /// Extra context (a search text), if any.
    pub detail: Option<String>,
    /// When the action happened.
    pub at: Timestamp,
}

/// One page of the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// Up to `limit` entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts: an opaque position the same store understands.
    pub next_before: Option<Vec<u8>>,
}

/// Deactivate or reactivate a user, with the audit entry recorded in the same step.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The user to deactivate or reactivate.
    pub user: UserId,
    /// The new state.
    pub active: bool,
    /// The moment of the change, also the audit entry's time.
    pub now: Timestamp,
    /// The entry saying who did it.
    pub audit: AuditEntry,
}

/// Failures of the store itself, plus the domain outcomes its conditions detect.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lower-cased username already exists.
    #[error("username taken")]
    UsernameTaken,
    /// The email already exists.
    #[error("email taken")]
    EmailTaken,
    /// A withdrawal or transfer above the balance; carries the balance seen by the check.
    #[error("insufficient funds")]
    InsufficientFunds {
        /// Balance at the check.
        balance: Money,
    },
    /// The credit would pass [`Money::MAX_BALANCE`].
    #[error("balance limit exceeded")]
    BalanceLimitExceeded,
    /// No active user with the recipient's username.
    #[error("recipient not found")]
    RecipientNotFound,
    /// The recipient is the sender.
    #[error("self transfer")]
    SelfTransfer,
    /// The account does not exist.
    #[error("account not found")]
    AccountNotFound,
    /// The movement's session is revoked, expired or not the mover's; nothing was applied.
    #[error("session not live")]
    SessionNotLive,
    /// The store cannot be reached or is overloaded; nothing was applied.
    #[error("store unavailable")]
    Unavailable(#[source] Source),
    /// Anything else; logged, shown to clients as `internal_error`.
    #[error("store failure")]
    Internal(#[source] Source),
}

impl StoreError {
    /// Wraps an unexpected backend failure.
    pub fn internal(source: impl Into<Source>) -> Self {
        StoreError::Internal(source.into())
    }

    /// Wraps a connectivity or overload failure.
    pub fn unavailable(source: impl Into<Source>) -> Self {
        StoreError::Unavailable(source.into())
    }
}

/// The storage primitives. See the module documentation for the atomicity each one promises.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Answers when the store is reachable (health checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the user, their account (balance 0, version 0) and the username/email uniqueness
    /// guards in one step. Fails with `UsernameTaken` or `EmailTaken`.
    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError>;

    /// Looks a user up by lower-cased username.
    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Looks a user up by id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Stores a new session if its user is active, atomically with that check, so a session
    /// can never be opened for a user being deactivated at the same moment. `false` when the
    /// user is inactive or gone.
    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError>;

    /// Reads one of a user's sessions (strongly consistent); `None` when it is not theirs.
    /// Tokens carry both ids, which lets DynamoDB keep sessions in the user's partition.
    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Spends the presented refresh token with a conditional write: of two racing rotations of
    /// the same token exactly one gets `Rotated`. A token that is no longer current revokes the
    /// session in the same step (`Reused`). A session past its maximum lifetime is `Inactive`
    /// in that same step, and a rotated one ends at [`Rotation::session_end`].
    async fn rotate_session(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;

    /// Records use of a live session (`last_used_at`); a no-op for inactive sessions.
    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Revokes one of the user's sessions; `false` when it is not theirs or already inactive.
    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The user's active sessions, newest first.
    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Counts a login attempt for a username inside the policy's window, atomically: of many
    /// racing attempts at most `max_attempts` are `Allowed` per window. Records whose window has
    /// passed are removed as it goes (at most [`EXPIRED_ATTEMPTS_PRUNED`] per attempt in the SQL
    /// stores; by TTL in DynamoDB).
    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError>;

    /// Forgets the attempts of a username after a successful login.
    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError>;

    /// Reads an account (strongly consistent).
    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError>;

    /// Reads one of a user's sessions, as [`Store::session`], and their account, as
    /// [`Store::account`], both strongly consistent. A request that needs both (a history
    /// read: the caller's session, then the version that keys the cache) asks once, and
    /// DynamoDB answers in one round trip.
    async fn session_with_account(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<(Option<SessionRecord>, Option<Account>), StoreError> {
        Ok((self.session(user, id).await?, self.account(user).await?))
    }

    /// Applies a deposit or withdrawal with its operation record and idempotency record in one
    /// conditional step. A session that is not live (`SessionNotLive`) wins over every other
    /// condition; then an unexpired key already recorded: the result is `AlreadyRecorded` and
    /// nothing moves.
    async fn apply_change(&self, change: &BalanceChange) -> Result<Applied, StoreError>;

    /// Applies a transfer — both balances, both operation records, the idempotency record — in
    /// one conditional step, with the same precedence of the session and of a recorded key as
    /// `apply_change`.
    async fn transfer(&self, transfer: &TransferCommand) -> Result<Applied, StoreError>;

    /// Reads an unexpired idempotency record.
    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError>;

    /// One page of history, newest first, filters applied by the store so pages stay full. A
    /// store may bound the entries a filtered page passes over (SQLite: `HISTORY_SCAN_ROWS`;
    /// DynamoDB: its round trips): a page that reaches the bound comes back shorter, with a
    /// cursor below the last entry looked at.
    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;

    /// One page of users with their balances, by lower-cased username, optionally only those
    /// whose username or email contains the search text.
    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, StoreError>;

    /// Activates or deactivates a user and records the audit entry, in one step. Deactivation
    /// also revokes every live session of the user in that step (so their access tokens stop
    /// working at once), blocks login and makes them an invalid transfer recipient; balance and
    /// history stay. `None` when the user does not exist.
    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError>;

    /// Records an administrator's read in the audit trail.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// One page of the audit trail, newest first, below an opaque position from a previous page.
    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(seq: u64) -> Operation {
        Operation {
            id: OperationId::new(),
            user: UserId::new(),
            seq,
            kind: OperationKind::Deposit,
            amount: Money::from_minor(1),
            balance_after: Money::from_minor(seq as i64),
            counterparty: None,
            transfer_id: None,
            description: None,
            created_at: Timestamp::from_millis(1_700_000_000_000),
        }
    }

    #[test]
    fn a_page_cut_short_resumes_below_its_last_position_unless_that_is_the_first() {
        assert_eq!(HistoryPage::cut_short(vec![], 2).next_before, Some(2));
        assert_eq!(HistoryPage::cut_short(vec![], FIRST_SEQ).next_before, None);
        assert_eq!(HistoryPage::cut_short(vec![], 0).next_before, None);
    }

    #[test]
    fn a_full_page_resumes_below_its_last_entry() {
        let page = HistoryPage::from_fetched((1..=3).rev().map(operation).collect(), 2);
        assert_eq!(page.operations.len(), 2);
        assert_eq!(page.next_before, Some(2));
        let page = HistoryPage::from_fetched((1..=2).rev().map(operation).collect(), 2);
        assert_eq!(page.next_before, None);
    }

    #[test]
    fn a_position_at_or_below_the_first_operation_leaves_nothing_to_read() {
        let query = |before_seq| HistoryQuery {
            user: UserId::new(),
            limit: 20,
            before_seq,
            kinds: vec![],
            since: None,
            until: None,
        };
        assert!(query(Some(0)).below_everything());
        assert!(query(Some(FIRST_SEQ)).below_everything());
        assert!(!query(Some(2)).below_everything());
        assert!(!query(None).below_everything());
    }
}
