//! A store wrapper that fails on demand, to test what clients see when the store is down
//! (`503 service_unavailable`) or broken (`500 internal_error`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use lighttech::domain::{IdempotencyKey, SessionId, Timestamp, UserId};
use lighttech::store::{
    Account, Applied, Attempt, AuditEntry, AuditPage, BalanceChange, HistoryPage, HistoryQuery,
    IdempotentRecord, NewUser, RotateOutcome, Rotation, SessionRecord, StatusChange, Store,
    StoreError, ThrottlePolicy, TransferCommand, UserPage, UserQuery, UserRecord,
};

/// How the wrapper behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pass everything through.
    Healthy = 0,
    /// Money movements, reads of accounts and the ping fail as unreachable.
    Unavailable = 1,
    /// Money movements, reads of accounts and the ping fail with an internal error.
    Broken = 2,
    /// Every primitive fails as unreachable, users, sessions and login attempts included.
    Down = 3,
}

/// Delegates to an inner store; account and money primitives fail per [`Mode`]. Sessions keep
/// working so requests get past authentication and reach the failure, except in [`Mode::Down`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    mode: AtomicU8,
}

impl FaultyStore {
    /// Wraps a store, healthy.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            mode: AtomicU8::new(Mode::Healthy as u8),
        }
    }

    /// Changes the behaviour.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            1 | 3 => Err(StoreError::unavailable("connection refused (injected)")),
            2 => Err(StoreError::internal(
                "SECRET-INTERNAL-DETAIL constraint xyz violated (injected)",
            )),
            _ => Ok(()),
        }
    }

    /// The users, sessions and login-attempt primitives fail only when the store is down.
    fn check_auth(&self) -> Result<(), StoreError> {
        if self.mode.load(Ordering::SeqCst) == Mode::Down as u8 {
            return Err(StoreError::unavailable("connection refused (injected)"));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        self.check()?;
        self.inner.create_user(user).await
    }
    async fn user_by_username(&self, key: &str) -> Result<Option<UserRecord>, StoreError> {
        self.check_auth()?;
        self.inner.user_by_username(key).await
    }
    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.check_auth()?;
        self.inner.user_by_id(id).await
    }
    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        self.check_auth()?;
        self.inner.create_session(session).await
    }
    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.check_auth()?;
        self.inner.session(user, id).await
    }
    async fn rotate_session(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.check_auth()?;
        self.inner.rotate_session(rotation).await
    }
    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.check_auth()?;
        self.inner.touch_session(user, id, now).await
    }
    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check_auth()?;
        self.inner.revoke_session(user, id, now).await
    }
    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.check_auth()?;
        self.inner.active_sessions(user, now).await
    }
    async fn take_login_attempt(
        &self,
        key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        self.check_auth()?;
        self.inner.take_login_attempt(key, policy, now).await
    }
    async fn clear_login_attempts(&self, key: &str) -> Result<(), StoreError> {
        self.check_auth()?;
        self.inner.clear_login_attempts(key).await
    }
    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.check()?;
        self.inner.account(user).await
    }
    async fn apply_change(&self, change: &BalanceChange) -> Result<Applied, StoreError> {
        self.check()?;
        self.inner.apply_change(change).await
    }
    async fn transfer(&self, transfer: &TransferCommand) -> Result<Applied, StoreError> {
        self.check()?;
        self.inner.transfer(transfer).await
    }
    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        self.check()?;
        self.inner.idempotent_record(user, key, now).await
    }
    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.check()?;
        self.inner.history(query).await
    }
    async fn list_users(&self, query: &UserQuery) -> Result<UserPage, StoreError> {
        self.check()?;
        self.inner.list_users(query).await
    }
    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.check()?;
        self.inner.set_user_active(change).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_audit(entry).await
    }
    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        self.check()?;
        self.inner.audit_log(limit, before).await
    }
}
