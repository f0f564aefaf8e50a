//! The DynamoDB store: one table, conditional writes and `TransactWriteItems`.
//!
//! # Single-table design
//!
//! Key attributes `PK`, `SK` (strings); one global secondary index `GSI1` (`GSI1PK`, `GSI1SK`,
//! projection `GSI1_PROJECTED`: the profile fields the admin list reads, no password hash) that
//! lists users for administration; TTL attribute `ttl` (epoch seconds).
//! Billing is on demand.
//!
//! | item | `PK` | `SK` | attributes |
//! |---|---|---|---|
//! | user profile | `USER#<id>` | `PROFILE` | username, username_key, email, password_hash, is_staff, is_active, created_at; `GSI1PK=USERS`, `GSI1SK=<username_key>` |
//! | account | `USER#<id>` | `ACCOUNT` | balance, version, updated_at, active, username, session_epoch, sessions_revoked_at |
//! | operation | `USER#<id>` | `OP#<seq, 20 digits>` | id, kind, amount, balance_after, counterparty_id/_username, transfer_id, description, created_at |
//! | idempotency record | `USER#<id>` | `IDEM#<key>` | fingerprint, expires_at, ttl, op (the operation, embedded) |
//! | session | `USER#<id>` | `SESSION#<id>` | epoch, created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at, ttl |
//! | username guard | `USERNAME#<lower-cased>` | `USERNAME` | user_id |
//! | email guard | `EMAIL#<email key>` | `EMAIL` | user_id |
//! | login throttle | `LOGIN#<lower-cased username>` | `LOGIN` | attempts, window_start, ttl |
//! | audit entry | `AUDIT` | `<at, 15 digits>#<id>` | actor_id, actor_username, action, target_id, target_username, detail, at |
//!
//! A user's account, history, keys and sessions share the user's partition, so a history page
//! is one `Query` and every session check is one strongly consistent `BatchGetItem` of the
//! session and the account.
//!
//! # Email guards written before the key
//!
//! Emails are unique by their folded key (`Email::key`); earlier builds wrote the guard under
//! the lower-cased address. For an ASCII address (and any whose lower-cased form is already
//! its key) that is the same item, so those guards keep working unchanged. The guard of another
//! address (`σας`, key `σασ`) sits where the key does not look. A registration whose
//! lower-cased address differs from its key therefore also checks that no guard exists under
//! the lower-cased address: an address registered before cannot be registered again as it is.
//! A spelling that folds alike but lower-cases to something else (`σασ` after an older `σας`)
//! is not caught: nothing writes the older user's guard under the key (the table has no
//! migrations); it would take a pass over the profiles.
//!
//! # Deactivation and the session epoch
//!
//! A user may have more live sessions than one transaction can revoke (100 items), so
//! deactivation does not touch the sessions at all. The account carries `session_epoch` (absent
//! means 0); every session copies the epoch current when it was created (`epoch`), and a session
//! is live only while its epoch equals the account's and the account is active. Deactivation
//! bumps the epoch in the same transaction that clears `is_active`/`active` and writes the audit
//! entry, so every session of the user dies in that one step, however many there are, and stays
//! dead after a reactivation (the epoch never goes back). What each check costs:
//!
//! - an authenticated request reads the session and the account in one strongly consistent
//!   `BatchGetItem` (one round trip, one more read unit than the session alone; a profile flag
//!   would cost the same read, but could not keep old sessions dead after a reactivation);
//! - a money movement already reads the mover's account and conditions its update on the version
//!   read: the update is also conditioned on the epoch, which costs nothing extra;
//! - a login reads the account for its epoch and puts the session next to a `ConditionCheck`
//!   that the account is still active at that epoch;
//! - a refresh reads the account, then rotates the session on the condition that its epoch is the
//!   one read; a deactivation that commits in between orders after the refresh, and the new
//!   tokens die with the rest.
//!
//! Operations get `created_at = max(now, the account's updated_at)`, so within an account
//! `created_at` never decreases with `seq` even across servers whose clocks differ: history can
//! stop reading at the first operation older than `since`, and find where `until` falls by
//! bisecting the sequence.
//!
//! # Atomicity
//!
//! Money moves in one `TransactWriteItems`: the account update(s) — conditioned on the version
//! read just before (`version = :v`) *and* on the business rule (`balance >= :amount`, the
//! ceiling, the recipient `active`) — with the operation record(s) and, when a key was given,
//! the idempotency record (`attribute_not_exists(PK) OR expires_at <= :now`). The version
//! condition makes the write a compare-and-swap: if anything changed the account since the
//! read, the transaction is cancelled and the primitive re-reads and re-checks before trying
//! again, a bounded number of times with jittered backoff. Nothing is ever written blind.
//!
//! A call DynamoDB applied but whose answer was lost (the SDK resends it after a reset
//! connection, and the resend fails on the conditions the first sending satisfied; or the loss
//! reaches the store) is recognised, never applied again: a movement finds its own operation id
//! at a sequence number it tried (see `Attempts`); the other writes find the item under their
//! own fresh random id (user, session, audit entry) or their own mark (the rotated token id, the
//! revocation's call id).
//! DynamoDB deletes TTL-expired items only eventually, so every read checks expiry itself.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ScalarAttributeType, SseSpecification, TimeToLiveSpecification, TransactWriteItem, Update,
};
use rand::RngExt;

use super::{
    Account, Applied, Attempt, AuditAction, AuditEntry, AuditPage, AuditParty, BalanceChange,
    Counterparty, FIRST_SEQ, HistoryPage, HistoryQuery, IdempotencyStamp, IdempotentRecord,
    NewUser, Operation, RotateOutcome, Rotation, SessionRecord, SessionUse, StatusChange, Store,
    StoreError, ThrottlePolicy, TransferCommand, UserPage, UserQuery, UserRecord, UserSummary,
};
use crate::domain::{
    Email, IdempotencyKey, Money, OperationId, OperationKind, RequestFingerprint, SessionId,
    Timestamp, TokenId, TransferId, UserId, Username,
};

type Item = HashMap<String, AttributeValue>;

/// Name of the TTL attribute.
pub const TTL_ATTRIBUTE: &str = "ttl";
/// Name of the user-listing index.
pub const GSI1: &str = "GSI1";

/// What `GSI1` holds besides the keys: the profile attributes the admin user list reads (and
/// searches), nothing else — never the password hash, which would otherwise be copied into
/// the index for every user.
pub const GSI1_PROJECTED: [&str; 7] = [
    "user_id",
    "username",
    "username_key",
    "email",
    "is_staff",
    "is_active",
    "created_at",
];
/// Attempts at a conditional write before giving up with `Unavailable` (safe to retry). Each
/// attempt re-reads and re-checks; with the jittered backoff below this rides out heavy
/// contention on one account for about two seconds.
const MAX_ATTEMPTS: u32 = 40;
/// Query round trips a filtered history page may take before returning what it has.
const MAX_HISTORY_QUERIES: usize = 10;
/// Times one call is sent again after DynamoDB refused it whole as throttled (the SDK has
/// already retried it with its own backoff by then).
const MAX_THROTTLED_CALLS: u32 = 5;
/// Sessions and login counters linger this long past expiry before TTL may delete them.
const TTL_GRACE_SECONDS: i64 = 86_400;

/// Counters of what the store had to absorb, for tests and logs.
#[derive(Debug, Default)]
pub struct DynamoStats {
    /// Writes retried after a version conflict, a `TransactionConflict` in a transaction, or a
    /// plain write's conflict (`TransactionConflictException`).
    pub conflict_retries: std::sync::atomic::AtomicU64,
    /// Retries after throttling: of one item in a cancelled transaction, or of a whole call.
    pub throttle_retries: std::sync::atomic::AtomicU64,
    /// DynamoDB round trips made by history reads (queries and bisection probes).
    pub history_reads: std::sync::atomic::AtomicU64,
}

/// The DynamoDB-backed [`Store`].
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// What the store retried so far.
    pub stats: DynamoStats,
    fault: Option<FaultInjector>,
    /// How long `create_table` waits for the table to become `ACTIVE`.
    table_wait: Duration,
}

/// Test hook: makes a fraction of transactions fail with `TransactionConflict` before they
/// reach DynamoDB (emulators never produce it), so the retry path is exercised for real.
#[derive(Debug, Clone, Copy)]
pub struct FaultInjector {
    /// Probability in `0.0..=1.0` that a transaction attempt is cancelled as conflicting.
    pub conflict_rate: f64,
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("PK".into(), s(pk)), ("SK".into(), s(sk))])
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn user_pk(id: UserId) -> String {
    format!("USER#{id}")
}

fn op_sk(seq: u64) -> String {
    format!("OP#{seq:020}")
}

/// The sort keys of operations `FIRST_SEQ..=top` (every operation when `None`) as the bounds of
/// a `BETWEEN`; `None` when the range is empty, which DynamoDB refuses as a
/// `ValidationException` rather than answering with nothing.
fn op_range(top: Option<u64>) -> Option<(String, String)> {
    let top = top.unwrap_or(u64::MAX / 2);
    (top >= FIRST_SEQ).then(|| (op_sk(FIRST_SEQ), op_sk(top)))
}

fn bad(what: &str) -> StoreError {
    StoreError::internal(format!("stored item has a malformed {what}"))
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(bad(name)),
    }
}

fn opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        _ => Err(bad(name)),
    }
}

fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| bad(name)),
        _ => Err(bad(name)),
    }
}

fn opt_n(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| bad(name)),
        _ => Err(bad(name)),
    }
}

fn get_bool(item: &Item, name: &str) -> Result<bool, StoreError> {
    match item.get(name) {
        Some(AttributeValue::Bool(v)) => Ok(*v),
        _ => Err(bad(name)),
    }
}

fn get_u64(item: &Item, name: &str) -> Result<u64, StoreError> {
    u64::try_from(get_n(item, name)?).map_err(|_| bad(name))
}

fn parse_id<T>(text: &str, what: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| bad(what))
}

/// Maps an SDK failure: connectivity, throttling, conflicts and server errors are
/// `Unavailable` (the client may retry); anything else is internal. The full error context goes
/// into the source, because `SdkError`'s own `Display` says only "service error".
fn sdk_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unavailable = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        // A 5xx is the service's own failure whatever its code says (or when it names none).
        SdkError::ServiceError(e) => is_transient(err.code()) || e.raw().status().is_server_error(),
        _ => false,
    };
    let text = crate::aws::describe(&err);
    if unavailable {
        StoreError::unavailable(text)
    } else {
        StoreError::internal(text)
    }
}

/// DynamoDB refusing a whole call for capacity or request rate: nothing was evaluated.
fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
        )
    )
}

/// A plain write (`PutItem`, `UpdateItem`, `DeleteItem`) refused because its item is part of a
/// transaction in flight, or (a multi-Region global table) being written in another Region:
/// nothing was applied, and the same call may well pass a moment later. Reads never meet it:
/// DynamoDB orders them against transactions instead.
fn is_write_conflict(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("TransactionConflictException" | "ReplicatedWriteConflictException")
    )
}

fn is_transient(code: Option<&str>) -> bool {
    is_throttle(code)
        || is_write_conflict(code)
        || matches!(
            code,
            Some("InternalServerError" | "ServiceUnavailable" | "TransactionInProgressException")
        )
}

/// A write that ended without an answer (`Unavailable`: a timeout, a connection lost after
/// sending) may have been applied all the same: `Ok` when `applied` finds the call's own work
/// in the table, `err` otherwise (also when that check fails). Any other error stands as is,
/// and `applied` is never run for it.
async fn applied_despite(
    err: StoreError,
    applied: impl std::future::Future<Output = Result<bool, StoreError>>,
) -> Result<(), StoreError> {
    if matches!(err, StoreError::Unavailable(_)) && matches!(applied.await, Ok(true)) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Why a transaction was cancelled, per item, as DynamoDB reports it.
#[derive(Debug)]
enum Cancelled {
    /// `CancellationReasons`, one code per item in order (`None` when that item was fine).
    Reasons(Vec<Option<String>>),
    /// A failure that is not a cancellation.
    Other(StoreError),
    /// The whole call was refused as throttled (only as a reason to back off; `transact`
    /// retries it itself).
    Throttled,
}

impl Cancelled {
    /// A conflict with another write, as a reason to back off.
    fn conflict() -> Self {
        Cancelled::Reasons(vec![Some("TransactionConflict".into())])
    }

    fn failed(&self, index: usize) -> bool {
        matches!(self, Cancelled::Reasons(r) if r.get(index).is_some_and(|c| c.as_deref() == Some("ConditionalCheckFailed")))
    }

    /// A conflict, throttling or condition on a version: re-read and try again.
    fn retryable(&self) -> bool {
        match self {
            Cancelled::Reasons(r) => r.iter().any(|c| {
                matches!(
                    c.as_deref(),
                    Some(
                        "ConditionalCheckFailed"
                            | "TransactionConflict"
                            | "ThrottlingError"
                            | "ProvisionedThroughputExceeded"
                    )
                )
            }),
            Cancelled::Throttled => true,
            Cancelled::Other(_) => false,
        }
    }

    fn throttled(&self) -> bool {
        match self {
            Cancelled::Reasons(r) => r.iter().any(|c| {
                matches!(
                    c.as_deref(),
                    Some("ThrottlingError" | "ProvisionedThroughputExceeded")
                )
            }),
            Cancelled::Throttled => true,
            Cancelled::Other(_) => false,
        }
    }
}

impl DynamoStore {
    /// A store over an existing client and table name.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            stats: DynamoStats::default(),
            fault: None,
            table_wait: Duration::from_secs(60),
        }
    }

    /// How long `create_table` waits for the table to become `ACTIVE` before failing.
    pub fn with_table_wait(mut self, wait: Duration) -> Self {
        self.table_wait = wait;
        self
    }

    /// Enables injected transaction conflicts (tests).
    pub fn with_fault_injector(mut self, fault: FaultInjector) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table exactly as `template.yaml` declares it, if it does not exist yet,
    /// waits until it is `ACTIVE` and makes sure TTL is on (for an existing table too). Point-in-time recovery is an account-level setting the template owns.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(StoreError::internal)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(StoreError::internal)
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key_el("GSI1PK", KeyType::Hash)?)
            .key_schema(key_el("GSI1SK", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(
                        GSI1_PROJECTED.iter().map(|a| (*a).to_owned()).collect(),
                    ))
                    .build(),
            )
            .build()
            .map_err(StoreError::internal)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("PK")?)
            .attribute_definitions(attr("SK")?)
            .attribute_definitions(attr("GSI1PK")?)
            .attribute_definitions(attr("GSI1SK")?)
            .key_schema(key_el("PK", KeyType::Hash)?)
            .key_schema(key_el("SK", KeyType::Range)?)
            .global_secondary_indexes(gsi)
            .sse_specification(SseSpecification::builder().enabled(true).build())
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Already there, or being created by another start right now: either way it must
            // become ACTIVE and have TTL on before this start may serve.
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(sdk_error(e)),
        }
        self.wait_until_active().await?;
        self.ensure_ttl().await
    }

    /// Waits until the table is `ACTIVE`, failing clearly after [`Self::with_table_wait`]'s
    /// limit (60 s unless set).
    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.table_wait;
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(sdk_error)?;
            let status = described
                .table()
                .and_then(|t| t.table_status())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "of unknown status".into());
            if status == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::unavailable(format!(
                    "DynamoDB table {:?} is still {status} after {} s; it must be ACTIVE",
                    self.table,
                    self.table_wait.as_secs_f64()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Turns TTL on (attribute [`TTL_ATTRIBUTE`]) unless it is already on or being turned on;
    /// TTL on another attribute, or being turned off, is an error to resolve by hand.
    async fn ensure_ttl(&self) -> Result<(), StoreError> {
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(sdk_error)?;
        let description = described.time_to_live_description();
        let status = description
            .and_then(|d| d.time_to_live_status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "DISABLED".into());
        let attribute = description.and_then(|d| d.attribute_name());
        match status.as_str() {
            "ENABLED" | "ENABLING" if attribute == Some(TTL_ATTRIBUTE) => return Ok(()),
            "DISABLED" => {}
            _ => {
                return Err(StoreError::internal(format!(
                    "DynamoDB table {:?} has TTL {status} on attribute {:?}; it must be enabled on {TTL_ATTRIBUTE:?}",
                    self.table,
                    attribute.unwrap_or("")
                )));
            }
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// Fails with a clear message when the table does not exist.
    pub async fn check_table(&self) -> Result<(), StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                Err(StoreError::unavailable(format!(
                    "DynamoDB table {:?} does not exist (create it with `lighttech-local --init` or deploy template.yaml)",
                    self.table
                )))
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item().cloned())
    }

    /// Sends one transaction. A whole call refused as throttled (not one cancelled item, which
    /// the callers' loops handle) was rejected before any condition was evaluated, so the same
    /// items are sent again ([`Self::resend_refused`]) before it ends as `Unavailable`.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Cancelled> {
        if let Some(fault) = self.fault
            && rand::rng().random_bool(fault.conflict_rate.clamp(0.0, 1.0))
        {
            return Err(Cancelled::Reasons(vec![
                Some("TransactionConflict".into());
                items.len()
            ]));
        }
        let request = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items));
        let err = match self.resend_refused(|| request.clone().send()).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(e)) =
            err.as_service_error()
        {
            return Err(Cancelled::Reasons(
                e.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_owned))
                    .collect(),
            ));
        }
        Err(Cancelled::Other(sdk_error(err)))
    }

    /// Sends a call, and sends it again while DynamoDB refuses it whole, which applies nothing
    /// of it: throttled (up to [`MAX_THROTTLED_CALLS`] more times, the SDK having retried it
    /// with its own backoff already), or a plain write in conflict with another write of its
    /// item ([`is_write_conflict`], which the SDK does not retry: up to [`MAX_ATTEMPTS`] times,
    /// as the store retries a transaction's conflicts). Each resend waits the usual backoff and
    /// is counted; the last refusal stands, and [`sdk_error`] makes it `Unavailable`.
    async fn resend_refused<T, E, F>(&self, send: impl Fn() -> F) -> Result<T, SdkError<E>>
    where
        F: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata,
    {
        let (mut throttled, mut conflicts) = (0, 0);
        loop {
            let err = match send().await {
                Ok(out) => return Ok(out),
                Err(err) => err,
            };
            let (why, attempt) = if is_throttle(err.code()) && throttled < MAX_THROTTLED_CALLS {
                throttled += 1;
                (Cancelled::Throttled, throttled)
            } else if is_write_conflict(err.code()) && conflicts < MAX_ATTEMPTS {
                conflicts += 1;
                (Cancelled::conflict(), conflicts)
            } else {
                return Err(err);
            };
            self.backoff(attempt - 1, &why).await;
        }
    }

    /// The newest sequence number at or below `top` (the whole history when `None`) whose
    /// operation was created at or before `until`; `None` when there is none. One read when
    /// `top` is already old enough (a later page), about log2(n) strongly consistent reads of
    /// one attribute otherwise — far fewer than filtering out every newer operation.
    async fn last_seq_until(
        &self,
        user: UserId,
        until: Timestamp,
        top: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let version = match top {
            Some(top) => top,
            None => match self.account(user).await? {
                Some(account) => account.version,
                None => return Ok(None),
            },
        };
        // Invariant: `low` is 0 or at/before `until`; every sequence above `high` is after it.
        let (mut low, mut high) = (0, version);
        if high == 0 {
            return Ok(None);
        }
        match self.operation_time(user, high).await? {
            Some(at) if at <= until => return Ok(Some(high)),
            Some(_) => high -= 1,
            // Beyond the newest operation (a stale position): bisect the rest.
            None => high -= 1,
        }
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            match self.operation_time(user, mid).await? {
                Some(at) if at <= until => low = mid,
                _ => high = mid - 1,
            }
        }
        Ok((low > 0).then_some(low))
    }

    /// When operation `seq` of `user` was created; `None` if there is no such operation.
    async fn operation_time(
        &self,
        user: UserId,
        seq: u64,
    ) -> Result<Option<Timestamp>, StoreError> {
        use std::sync::atomic::Ordering;
        self.stats.history_reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &op_sk(seq))))
            .projection_expression("created_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item()
            .map(|item| get_n(item, "created_at").map(Timestamp::from_millis))
            .transpose()
    }

    /// Sleeps before retry `attempt` (full jitter, capped) and counts why.
    async fn backoff(&self, attempt: u32, why: &Cancelled) {
        use std::sync::atomic::Ordering;
        crate::metrics::retried(why.throttled());
        if why.throttled() {
            self.stats.throttle_retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.conflict_retries.fetch_add(1, Ordering::Relaxed);
        }
        let cap_ms = (2u64 << attempt.min(6)).min(100);
        let ms = rand::rng().random_range(0..=cap_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn account_item(&self, user: UserId) -> Result<Option<Item>, StoreError> {
        self.get(key(user_pk(user), "ACCOUNT")).await
    }

    async fn session_exists(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let sk = format!("SESSION#{}", session.id);
        Ok(self.get(key(user_pk(session.user), &sk)).await?.is_some())
    }

    /// Whether session `id` was revoked by the call marked `call`.
    async fn revoked_by(
        &self,
        user: UserId,
        id: SessionId,
        call: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        let item = self
            .get(key(user_pk(user), &format!("SESSION#{id}")))
            .await?;
        Ok(item.is_some_and(|i| {
            opt_s(&i, "revoked_by").ok().flatten() == Some(call.to_string().as_str())
        }))
    }

    async fn audit_exists(&self, entry: &AuditEntry) -> Result<bool, StoreError> {
        let item = audit_item(entry);
        let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
            (item.get("PK"), item.get("SK"))
        else {
            return Err(StoreError::internal("an audit entry without a key"));
        };
        Ok(self.get(key(pk.clone(), sk)).await?.is_some())
    }

    /// A session item and its user's account, in one strongly consistent `BatchGetItem`.
    async fn session_and_account(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<(Option<Item>, Option<AccountState>), StoreError> {
        let session_sk = format!("SESSION#{id}");
        let mut wanted = vec![
            key(user_pk(user), &session_sk),
            key(user_pk(user), "ACCOUNT"),
        ];
        let (mut session, mut account) = (None, None);
        for attempt in 0..MAX_ATTEMPTS {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut wanted)))
                .consistent_read(true)
                .build()
                .map_err(StoreError::internal)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                if get_s(item, "SK")? == "ACCOUNT" {
                    account = Some(account_state(item)?);
                } else {
                    session = Some(item.clone());
                }
            }
            // Keys DynamoDB left unprocessed (throttling) are asked for again.
            wanted = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if wanted.is_empty() {
                return Ok((session, account));
            }
            self.backoff(attempt, &Cancelled::Throttled).await;
        }
        Err(StoreError::unavailable("session read kept being throttled"))
    }

    async fn idempotency_item(
        &self,
        user: UserId,
        key_text: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let Some(item) = self
            .get(key(user_pk(user), &format!("IDEM#{key_text}")))
            .await?
        else {
            return Ok(None);
        };
        if get_n(&item, "expires_at")? <= now.millis() {
            return Ok(None);
        }
        let op = match item.get("op") {
            Some(AttributeValue::M(m)) => operation_from_item(m)?,
            _ => return Err(bad("op")),
        };
        Ok(Some(IdempotentRecord {
            fingerprint: RequestFingerprint::from_stored(get_s(&item, "fingerprint")?.to_owned()),
            operation: op,
        }))
    }

    /// A domain failure about to be returned — unless the key was recorded meanwhile, which
    /// takes precedence (a retry must replay, not fail).
    async fn unless_recorded(
        &self,
        user: UserId,
        stamp: Option<&IdempotencyStamp>,
        now: Timestamp,
        err: StoreError,
    ) -> Result<Applied, StoreError> {
        if let Some(stamp) = stamp
            && let Some(record) = self.idempotency_item(user, stamp.key.as_str(), now).await?
        {
            return Ok(Applied::AlreadyRecorded(record));
        }
        Err(err)
    }

    fn idempotency_put(
        &self,
        user: UserId,
        stamp: &IdempotencyStamp,
        op: &Operation,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(user_pk(user), &format!("IDEM#{}", stamp.key.as_str()));
        item.insert("fingerprint".into(), s(stamp.fingerprint.as_str()));
        item.insert("expires_at".into(), n(stamp.expires_at.millis()));
        item.insert(TTL_ATTRIBUTE.into(), n(stamp.expires_at.unix_seconds() + 1));
        item.insert("op".into(), AttributeValue::M(operation_item(op)));
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK) OR expires_at <= :now")
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }

    fn operation_put(&self, op: &Operation) -> Result<TransactWriteItem, StoreError> {
        let mut item = operation_item(op);
        item.insert("PK".into(), s(user_pk(op.user)));
        item.insert("SK".into(), s(op_sk(op.seq)));
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }

    /// Reads a movement's session (strongly consistent), to be judged by [`live_session`]
    /// against the mover's account; `None` for a movement without a session.
    async fn read_session(
        &self,
        user: UserId,
        session: Option<&SessionUse>,
    ) -> Result<Option<SessionRead>, StoreError> {
        let Some(session) = session else {
            return Ok(None);
        };
        let item = self
            .get(key(user_pk(user), &format!("SESSION#{}", session.id)))
            .await?;
        Ok(Some(SessionRead {
            id: session.id,
            touch_before: session.touch_before,
            item,
        }))
    }

    /// Appends the session's part of a movement's transaction (when it has a session) and
    /// returns its position: the condition that the session is still live (a revocation
    /// committed after the read cancels the movement), as an `Update` recording its use when
    /// that is due (a condition check costs the same capacity as the update).
    fn guard_session(
        &self,
        items: &mut Vec<TransactWriteItem>,
        user: UserId,
        session: Option<&LiveSession>,
        now: Timestamp,
    ) -> Result<Option<usize>, StoreError> {
        const LIVE: &str =
            "attribute_exists(PK) AND attribute_not_exists(revoked_at) AND expires_at > :now";
        let Some(session) = session else {
            return Ok(None);
        };
        let session_key = key(user_pk(user), &format!("SESSION#{}", session.id));
        let item = TransactWriteItem::builder();
        let item = if session.touch {
            item.update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(session_key))
                    .update_expression("SET last_used_at = :now")
                    .condition_expression(LIVE)
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
        } else {
            item.condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(session_key))
                    .condition_expression(LIVE)
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
        };
        items.push(item.build());
        Ok(Some(items.len() - 1))
    }

    /// Commits a money movement's transaction. `Some` ends the primitive (done, or the key was
    /// already recorded); `None` asks for another attempt after a conflict. `items[0]` is the
    /// mover's account update; `key` is the stamp with the position of its idempotency `Put`
    /// among `items`, `session_item` the position of the session guard, whose failure comes
    /// first.
    ///
    /// A call that ended without an answer (a timeout, a connection lost after sending) may have
    /// been applied: the mover's account is read once more, and the movement is done if the
    /// operation is there, tried again if the version shows the attempt can no longer apply,
    /// and otherwise answered `Unavailable` — the attempt may still be in flight, and only a
    /// retry with the same `Idempotency-Key` can settle it.
    #[allow(clippy::too_many_arguments)]
    async fn commit_movement(
        &self,
        items: Vec<TransactWriteItem>,
        op: &Operation,
        attempts: &mut Attempts,
        key: Option<(&IdempotencyStamp, usize)>,
        session_item: Option<usize>,
        attempt: u32,
        what: &str,
    ) -> Result<Option<Applied>, StoreError> {
        attempts.tried(op.seq);
        let cancelled = match self.transact(items).await {
            Ok(()) => return Ok(Some(Applied::Done(op.clone()))),
            Err(Cancelled::Other(e @ StoreError::Unavailable(_))) => {
                let Ok(Some(account)) = self.account_item(op.user).await else {
                    return Err(e);
                };
                let version = account_state(&account)?.version;
                if version < op.seq {
                    return Err(e);
                }
                if let Some(done) = self.applied_before(attempts, version).await? {
                    return Ok(Some(Applied::Done(done)));
                }
                return Ok(None);
            }
            Err(Cancelled::Other(e)) => return Err(e),
            Err(cancelled) => cancelled,
        };
        if session_item.is_some_and(|i| cancelled.failed(i)) {
            return Err(StoreError::SessionNotLive);
        }
        if session_item.is_some() && cancelled.failed(0) {
            // The mover's account changed since the read — perhaps a deactivation, which ends
            // the session and must win over a recorded key: re-read before deciding anything.
            self.backoff(attempt, &cancelled).await;
            return Ok(None);
        }
        if let Some((stamp, key_item)) = key
            && cancelled.failed(key_item)
        {
            if let Some(record) = self
                .idempotency_item(op.user, stamp.key.as_str(), op.created_at)
                .await?
            {
                // This very movement, applied by an earlier sending of the call, is not a replay.
                if record.operation.id == op.id {
                    return Ok(Some(Applied::Done(record.operation)));
                }
                return Ok(Some(Applied::AlreadyRecorded(record)));
            }
            // The record expired in between: the next attempt may take the key.
        } else if !cancelled.retryable() {
            return Err(StoreError::internal(format!(
                "{what} cancelled: {cancelled:?}"
            )));
        }
        self.backoff(attempt, &cancelled).await;
        Ok(None)
    }

    /// The operation an earlier attempt of this movement wrote, now that the mover's account is at
    /// `version` (see [`Attempts`]); the attempts this settles are forgotten.
    async fn applied_before(
        &self,
        attempts: &mut Attempts,
        version: u64,
    ) -> Result<Option<Operation>, StoreError> {
        let (settled, open): (Vec<u64>, Vec<u64>) =
            attempts.seqs.iter().partition(|&&seq| seq <= version);
        attempts.seqs = open;
        for seq in settled {
            let Some(item) = self.get(key(user_pk(attempts.user), &op_sk(seq))).await? else {
                continue;
            };
            let op = operation_from_item(&item)?;
            if op.id == attempts.id {
                return Ok(Some(op));
            }
        }
        Ok(None)
    }

    /// The account update, conditioned on the version read and on the business rule, and for
    /// the mover of a movement made in a session on the session epoch read.
    #[allow(clippy::too_many_arguments)]
    fn account_update(
        &self,
        user: UserId,
        read: &AccountState,
        new_balance: Money,
        rule: &str,
        amount: Money,
        now: Timestamp,
        session: Option<&LiveSession>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut condition = format!("version = :version AND {rule}");
        if let Some(session) = session {
            condition = format!(
                "{condition} AND {}",
                epoch_is("session_epoch", session.epoch)
            );
        }
        let update = "SET balance = :balance, version = :next, updated_at = :now";
        // DynamoDB refuses values that no expression uses: only the rule's own go in.
        let mut values: Item = HashMap::from([
            (":balance".into(), n(new_balance.minor())),
            (":next".into(), n(read.version as i64 + 1)),
            (":version".into(), n(read.version as i64)),
            (":now".into(), n(now.millis())),
        ]);
        let optional = [
            (":amount", n(amount.minor())),
            (":ceiling", n(Money::MAX_BALANCE.minor() - amount.minor())),
            (":active", AttributeValue::Bool(true)),
            (":epoch", n(session.map_or(0, |s| s.epoch))),
        ];
        for (name, value) in optional {
            if condition.contains(name) {
                values.insert(name.into(), value);
            }
        }
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user), "ACCOUNT")))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }
}

/// The attempts of one money movement: where each tried to write the mover's operation. An
/// attempt that wrote `OP#<seq>` was conditioned on the account's version being `seq - 1`; once
/// the version reaches `seq`, that item is either this movement's — the attempt was applied
/// though its answer was lost, for instance when the SDK sent the call again after losing the
/// answer and the resend failed on the version the first sending had bumped — or another
/// movement's, and then the attempt can never be applied.
#[derive(Debug)]
struct Attempts {
    user: UserId,
    id: OperationId,
    seqs: Vec<u64>,
}

impl Attempts {
    fn new(user: UserId, id: OperationId) -> Self {
        Self {
            user,
            id,
            seqs: Vec::new(),
        }
    }

    fn tried(&mut self, seq: u64) {
        if !self.seqs.contains(&seq) {
            self.seqs.push(seq);
        }
    }
}

/// A movement's session as read before its transaction: live, whether its use is due to be
/// recorded, and the account epoch it belongs to (the mover's account update is conditioned on
/// it, so a deactivation committed after the read cancels the movement).
#[derive(Debug, Clone, Copy)]
struct LiveSession {
    id: SessionId,
    touch: bool,
    epoch: i64,
}

/// A movement's session item as read, not yet judged.
#[derive(Debug)]
struct SessionRead {
    id: SessionId,
    touch_before: Timestamp,
    item: Option<Item>,
}

/// `SessionNotLive` unless the movement's session is the mover's own, not revoked, not expired
/// and of the current epoch of the mover's account, which is active; `None` for a movement
/// without a session.
fn live_session(
    user: UserId,
    read: Option<SessionRead>,
    account: Option<&AccountState>,
    now: Timestamp,
) -> Result<Option<LiveSession>, StoreError> {
    let Some(read) = read else {
        return Ok(None);
    };
    let (Some(item), Some(account)) = (read.item.as_ref(), account) else {
        return Err(StoreError::SessionNotLive);
    };
    let record = effective_session(item, Some(account))?;
    if record.user != user || !record.is_active(now) {
        return Err(StoreError::SessionNotLive);
    }
    Ok(Some(LiveSession {
        id: read.id,
        touch: record.last_used_at < read.touch_before,
        epoch: account.session_epoch,
    }))
}

/// What a primitive read of an account before its conditional write.
#[derive(Debug, Clone)]
struct AccountState {
    balance: Money,
    version: u64,
    active: bool,
    username: String,
    updated_at: Timestamp,
    /// Sessions of other epochs are dead (see the module documentation).
    session_epoch: i64,
    /// When the last deactivation ended the sessions of the epochs before.
    sessions_revoked_at: Option<Timestamp>,
}

fn account_state(item: &Item) -> Result<AccountState, StoreError> {
    Ok(AccountState {
        balance: Money::from_minor(get_n(item, "balance")?),
        version: get_u64(item, "version")?,
        active: get_bool(item, "active")?,
        username: get_s(item, "username")?.to_owned(),
        updated_at: Timestamp::from_millis(get_n(item, "updated_at")?),
        session_epoch: opt_n(item, "session_epoch")?.unwrap_or(0),
        sessions_revoked_at: opt_n(item, "sessions_revoked_at")?.map(Timestamp::from_millis),
    })
}

/// The condition that an item's epoch attribute (`session_epoch` on the account, `epoch` on a
/// session) equals `:epoch`. Items written before epochs existed lack the attribute, which
/// counts as epoch 0; a later epoch is always written explicitly.
fn epoch_is(attribute: &str, epoch: i64) -> String {
    if epoch == 0 {
        format!("(attribute_not_exists({attribute}) OR {attribute} = :epoch)")
    } else {
        format!("{attribute} = :epoch")
    }
}

/// A session as its account sees it: one of an inactive user, or from before the user's last
/// deactivation (another epoch), is revoked as of that deactivation whatever its own item says.
fn effective_session(
    item: &Item,
    account: Option<&AccountState>,
) -> Result<SessionRecord, StoreError> {
    let mut record = session_from_item(item)?;
    let epoch = opt_n(item, "epoch")?.unwrap_or(0);
    let current = account.is_some_and(|a| a.active && a.session_epoch == epoch);
    if !current && record.revoked_at.is_none() {
        record.revoked_at = Some(
            account
                .and_then(|a| a.sessions_revoked_at)
                .unwrap_or(record.last_used_at),
        );
    }
    Ok(record)
}

/// Both business rules, phrased for the condition expression (`:amount`, `:ceiling`).
const DEBIT_RULE: &str = "balance >= :amount";
const CREDIT_RULE: &str = "balance <= :ceiling AND active = :active";

fn operation_item(op: &Operation) -> Item {
    let mut item = HashMap::from([
        ("user_id".into(), s(op.user.to_string())),
        ("seq".into(), n(op.seq as i64)),
        ("id".into(), s(op.id.to_string())),
        ("kind".into(), s(op.kind.as_str())),
        ("amount".into(), n(op.amount.minor())),
        ("balance_after".into(), n(op.balance_after.minor())),
        ("created_at".into(), n(op.created_at.millis())),
    ]);
    if let Some(c) = &op.counterparty {
        item.insert("counterparty_id".into(), s(c.id.to_string()));
        item.insert("counterparty_username".into(), s(c.username.clone()));
    }
    if let Some(t) = op.transfer_id {
        item.insert("transfer_id".into(), s(t.to_string()));
    }
    if let Some(d) = &op.description {
        item.insert("description".into(), s(d.clone()));
    }
    item
}

fn operation_from_item(item: &Item) -> Result<Operation, StoreError> {
    let counterparty = match opt_s(item, "counterparty_id")? {
        Some(id) => Some(Counterparty {
            id: parse_id(id, "counterparty_id", UserId::parse)?,
            username: get_s(item, "counterparty_username")?.to_owned(),
        }),
        None => None,
    };
    Ok(Operation {
        id: parse_id(get_s(item, "id")?, "id", OperationId::parse)?,
        user: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        seq: get_u64(item, "seq")?,
        kind: OperationKind::parse(get_s(item, "kind")?).ok_or_else(|| bad("kind"))?,
        amount: Money::from_minor(get_n(item, "amount")?),
        balance_after: Money::from_minor(get_n(item, "balance_after")?),
        counterparty,
        transfer_id: opt_s(item, "transfer_id")?
            .map(|t| parse_id(t, "transfer_id", TransferId::parse))
            .transpose()?,
        description: opt_s(item, "description")?.map(str::to_owned),
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
    })
}

fn user_from_item(item: &Item) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        password_hash: get_s(item, "password_hash")?.to_owned(),
        ..user_from_index_item(item)?
    })
}

/// A profile as `GSI1` projects it ([`GSI1_PROJECTED`]): everything but the password hash,
/// which stays empty (the admin list, its only reader, never needs it).
fn user_from_index_item(item: &Item) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        username: Username::parse(get_s(item, "username")?).map_err(|_| bad("username"))?,
        email: Email::from_stored(get_s(item, "email")?).map_err(|_| bad("email"))?,
        password_hash: String::new(),
        is_staff: get_bool(item, "is_staff")?,
        is_active: get_bool(item, "is_active")?,
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
    })
}

fn session_item(sess: &SessionRecord, epoch: i64) -> Item {
    let mut item = key(user_pk(sess.user), &format!("SESSION#{}", sess.id));
    item.insert("id".into(), s(sess.id.to_string()));
    item.insert("epoch".into(), n(epoch));
    item.insert("user_id".into(), s(sess.user.to_string()));
    item.insert("created_at".into(), n(sess.created_at.millis()));
    item.insert("last_used_at".into(), n(sess.last_used_at.millis()));
    item.insert("expires_at".into(), n(sess.expires_at.millis()));
    item.insert(
        TTL_ATTRIBUTE.into(),
        n(sess.expires_at.unix_seconds() + TTL_GRACE_SECONDS),
    );
    item.insert("refresh_jti".into(), s(sess.refresh_jti.to_string()));
    if let Some(ua) = &sess.user_agent {
        item.insert("user_agent".into(), s(ua.clone()));
    }
    if let Some(ip) = &sess.ip {
        item.insert("ip".into(), s(ip.clone()));
    }
    if let Some(r) = sess.revoked_at {
        item.insert("revoked_at".into(), n(r.millis()));
    }
    item
}

fn session_from_item(item: &Item) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: parse_id(get_s(item, "id")?, "id", SessionId::parse)?,
        user: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
        last_used_at: Timestamp::from_millis(get_n(item, "last_used_at")?),
        expires_at: Timestamp::from_millis(get_n(item, "expires_at")?),
        refresh_jti: parse_id(get_s(item, "refresh_jti")?, "refresh_jti", TokenId::parse)?,
        user_agent: opt_s(item, "user_agent")?.map(str::to_owned),
        ip: opt_s(item, "ip")?.map(str::to_owned),
        revoked_at: opt_n(item, "revoked_at")?.map(Timestamp::from_millis),
    })
}

fn audit_item(e: &AuditEntry) -> Item {
    let mut item = key("AUDIT".into(), &format!("{:015}#{}", e.at.millis(), e.id));
    item.insert("id".into(), s(e.id.to_string()));
    item.insert("actor_id".into(), s(e.actor.id.to_string()));
    item.insert("actor_username".into(), s(e.actor.username.clone()));
    item.insert("action".into(), s(e.action.as_str()));
    if let Some(t) = &e.target {
        item.insert("target_id".into(), s(t.id.to_string()));
        item.insert("target_username".into(), s(t.username.clone()));
    }
    if let Some(d) = &e.detail {
        item.insert("detail".into(), s(d.clone()));
    }
    item.insert("at".into(), n(e.at.millis()));
    item
}

fn audit_from_item(item: &Item) -> Result<AuditEntry, StoreError> {
    let target = match opt_s(item, "target_id")? {
        Some(id) => Some(AuditParty {
            id: parse_id(id, "target_id", UserId::parse)?,
            username: get_s(item, "target_username")?.to_owned(),
        }),
        None => None,
    };
    Ok(AuditEntry {
        id: uuid::Uuid::try_parse(get_s(item, "id")?).map_err(|_| bad("id"))?,
        actor: AuditParty {
            id: parse_id(get_s(item, "actor_id")?, "actor_id", UserId::parse)?,
            username: get_s(item, "actor_username")?.to_owned(),
        },
        action: AuditAction::parse(get_s(item, "action")?).ok_or_else(|| bad("action"))?,
        target,
        detail: opt_s(item, "detail")?.map(str::to_owned),
        at: Timestamp::from_millis(get_n(item, "at")?),
    })
}

fn put_item(table: &str, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression(condition)
                .build()
                .map_err(StoreError::internal)?,
        )
        .build())
}

#[async_trait]
impl Store for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.get(key("HEALTH".into(), "HEALTH")).await.map(|_| ())
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        let pk = user_pk(user.id);
        let mut profile = key(pk.clone(), "PROFILE");
        profile.insert("user_id".into(), s(user.id.to_string()));
        profile.insert("username".into(), s(user.username.as_str()));
        profile.insert("username_key".into(), s(user.username.key()));
        profile.insert("email".into(), s(user.email.as_str()));
        profile.insert("password_hash".into(), s(user.password_hash.clone()));
        profile.insert("is_staff".into(), AttributeValue::Bool(user.is_staff));
        profile.insert("is_active".into(), AttributeValue::Bool(true));
        profile.insert("created_at".into(), n(user.now.millis()));
        profile.insert("GSI1PK".into(), s("USERS"));
        profile.insert("GSI1SK".into(), s(user.username.key()));
        let mut account = key(pk, "ACCOUNT");
        account.insert("balance".into(), n(0));
        account.insert("version".into(), n(0));
        account.insert("updated_at".into(), n(user.now.millis()));
        account.insert("active".into(), AttributeValue::Bool(true));
        account.insert("username".into(), s(user.username.as_str()));
        account.insert("session_epoch".into(), n(0));
        let mut username_guard = key(format!("USERNAME#{}", user.username.key()), "USERNAME");
        username_guard.insert("user_id".into(), s(user.id.to_string()));
        let email_key = user.email.key();
        let mut email_guard = key(format!("EMAIL#{email_key}"), "EMAIL");
        email_guard.insert("user_id".into(), s(user.id.to_string()));
        let fresh = "attribute_not_exists(PK)";
        let mut items = vec![
            put_item(&self.table, profile, fresh)?,
            put_item(&self.table, account, fresh)?,
            put_item(&self.table, username_guard, fresh)?,
            put_item(&self.table, email_guard, fresh)?,
        ];
        // An earlier build's guard of this very address (see "Email guards written before the
        // key" above).
        if user.email.as_str() != email_key {
            items.push(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(format!("EMAIL#{}", user.email), "EMAIL")))
                            .condition_expression(fresh)
                            .build()
                            .map_err(StoreError::internal)?,
                    )
                    .build(),
            );
        }
        let record = UserRecord {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            is_staff: user.is_staff,
            is_active: true,
            created_at: user.now,
        };
        // The id is new and random: a profile already under it was written by an earlier
        // sending of this same call (whose answer was lost), unless it belongs to someone else.
        let written_before = || async {
            let profile = self.get(key(user_pk(user.id), "PROFILE")).await?;
            Ok::<_, StoreError>(profile.is_some_and(|p| {
                get_s(&p, "username_key").is_ok_and(|k| k == user.username.key())
                    && get_s(&p, "password_hash").is_ok_and(|h| h == user.password_hash)
            }))
        };
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact(items.clone()).await {
                Ok(()) => return Ok(record),
                Err(c) if c.failed(0) => {
                    return if written_before().await? {
                        Ok(record)
                    } else {
                        Err(StoreError::internal("user id collision"))
                    };
                }
                Err(c) if c.failed(2) => return Err(StoreError::UsernameTaken),
                Err(c) if c.failed(3) || c.failed(4) => return Err(StoreError::EmailTaken),
                Err(c) if c.failed(1) => {
                    return Err(StoreError::internal("user id collision"));
                }
                Err(Cancelled::Other(e)) => {
                    return applied_despite(e, written_before()).await.map(|()| record);
                }
                Err(c) if c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!(
                        "registration cancelled: {c:?}"
                    )));
                }
            }
        }
        Err(StoreError::unavailable("registration kept conflicting"))
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(guard) = self
            .get(key(format!("USERNAME#{username_key}"), "USERNAME"))
            .await?
        else {
            return Ok(None);
        };
        let id = parse_id(get_s(&guard, "user_id")?, "user_id", UserId::parse)?;
        self.user_by_id(id).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.get(key(user_pk(id), "PROFILE"))
            .await?
            .map(|item| user_from_item(&item))
            .transpose()
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        // The session takes the account's current epoch, and is put only next to a check that
        // the account is still active at that epoch: a deactivation committed in between (even
        // one followed by a reactivation) cancels it.
        for attempt in 0..MAX_ATTEMPTS {
            let Some(account) = self.account_item(session.user).await? else {
                return Ok(false);
            };
            let account = account_state(&account)?;
            if !account.active {
                return Ok(false);
            }
            let check = TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(session.user), "ACCOUNT")))
                        .condition_expression(format!(
                            "active = :yes AND {}",
                            epoch_is("session_epoch", account.session_epoch)
                        ))
                        .expression_attribute_values(":yes", AttributeValue::Bool(true))
                        .expression_attribute_values(":epoch", n(account.session_epoch))
                        .build()
                        .map_err(StoreError::internal)?,
                )
                .build();
            let put = put_item(
                &self.table,
                session_item(session, account.session_epoch),
                "attribute_not_exists(PK)",
            )?;
            match self.transact(vec![check, put]).await {
                Ok(()) => return Ok(true),
                // The session's id is new and random: an item under it was put by an earlier
                // sending of this same call, whose answer was lost.
                Err(c) if c.failed(1) => return Ok(true),
                Err(Cancelled::Other(e)) => {
                    return applied_despite(e, self.session_exists(session))
                        .await
                        .map(|()| true);
                }
                // The status changed since the read: read it again.
                Err(c) if c.failed(0) || c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!("session not created: {c:?}")));
                }
            }
        }
        Err(StoreError::unavailable("session creation kept conflicting"))
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (session, account) = self.session_and_account(user, id).await?;
        session
            .map(|item| effective_session(&item, account.as_ref()))
            .transpose()
    }

    async fn rotate_session(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        // The account and the session first, in one round trip: the rotation is conditioned on
        // the session being of the epoch read, so a deactivation committing after this read
        // orders after the rotation, and the new tokens die with the session (see the module
        // documentation). The session's login time, which never changes, gives its new end
        // (`Rotation::session_end`); the condition checks its maximum lifetime again.
        let (session, account) = self.session_and_account(r.user, r.session).await?;
        let (Some(session), Some(account)) = (session, account) else {
            return Ok(RotateOutcome::Inactive);
        };
        if !account.active {
            return Ok(RotateOutcome::Inactive);
        }
        let created_at = Timestamp::from_millis(get_n(&session, "created_at")?);
        let ends = r.session_end(created_at);
        let session_key = key(user_pk(r.user), &format!("SESSION#{}", r.session));
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key.clone()))
            .update_expression(
                "SET refresh_jti = :next, last_used_at = :now, expires_at = :expires, #ttl = :ttl",
            )
            .condition_expression(format!(
                "refresh_jti = :presented AND attribute_not_exists(revoked_at) AND expires_at > :now \
                 AND created_at > :created_after AND {}",
                epoch_is("epoch", account.session_epoch)
            ))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":next", s(r.next.to_string()))
            .expression_attribute_values(":presented", s(r.presented.to_string()))
            .expression_attribute_values(":now", n(r.now.millis()))
            .expression_attribute_values(":created_after", n(r.created_after().millis()))
            .expression_attribute_values(":expires", n(ends.millis()))
            .expression_attribute_values(":ttl", n(ends.unix_seconds() + TTL_GRACE_SECONDS))
            .expression_attribute_values(":epoch", n(account.session_epoch));
        let rotated = self.resend_refused(|| request.clone().send()).await;
        match rotated {
            Ok(_) => return Ok(RotateOutcome::Rotated { created_at }),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
            Err(e) => {
                // Rotated all the same if the session now holds this rotation's fresh token id.
                let rotated = async {
                    let (current, _) = self.session_and_account(r.user, r.session).await?;
                    Ok(current.is_some_and(|c| {
                        get_s(&c, "refresh_jti").is_ok_and(|j| j == r.next.to_string())
                    }))
                };
                applied_despite(sdk_error(e), rotated).await?;
                return Ok(RotateOutcome::Rotated { created_at });
            }
        }
        let (current, account) = self.session_and_account(r.user, r.session).await?;
        let Some(current) = current else {
            return Ok(RotateOutcome::Inactive);
        };
        let current = effective_session(&current, account.as_ref())?;
        if !r.admits(&current) {
            return Ok(RotateOutcome::Inactive);
        }
        // The SDK resends a call whose answer it lost; if the first sending rotated the
        // session, the resend fails its condition. The token id it set is this rotation's own
        // fresh one, which nothing else can have written: that is this rotation, not a reuse.
        if current.refresh_jti == r.next {
            return Ok(RotateOutcome::Rotated {
                created_at: current.created_at,
            });
        }
        // A validly signed token of this session that is no longer current was spent before:
        // revoke the session. Losing this race to another revocation changes nothing.
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key))
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(r.now.millis()));
        let revoked = self.resend_refused(|| request.clone().send()).await;
        match revoked {
            Ok(_) => Ok(RotateOutcome::Reused),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Ok(RotateOutcome::Reused)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &format!("SESSION#{id}"))))
            .update_expression("SET last_used_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(now.millis()));
        let touched = self.resend_refused(|| request.clone().send()).await;
        match touched {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        // A session of an older epoch is already inactive: it is not revoked again.
        let Some(account) = self.account_item(user).await? else {
            return Ok(false);
        };
        let account = account_state(&account)?;
        if !account.active {
            return Ok(false);
        }
        // Marks this call's revocation, to recognise it should the answer be lost.
        let call = uuid::Uuid::new_v4();
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &format!("SESSION#{id}"))))
            .update_expression("SET revoked_at = :now, revoked_by = :call")
            .condition_expression(format!(
                "attribute_exists(PK) AND attribute_not_exists(revoked_at) AND expires_at > :now AND {}",
                epoch_is("epoch", account.session_epoch)
            ))
            .expression_attribute_values(":now", n(now.millis()))
            .expression_attribute_values(":call", s(call.to_string()))
            .expression_attribute_values(":epoch", n(account.session_epoch));
        let revoked = self.resend_refused(|| request.clone().send()).await;
        match revoked {
            Ok(_) => Ok(true),
            // Perhaps revoked by an earlier sending of this same call, whose answer was lost.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                self.revoked_by(user, id, call).await
            }
            Err(e) => applied_despite(sdk_error(e), self.revoked_by(user, id, call))
                .await
                .map(|()| true),
        }
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let account = self
            .account_item(user)
            .await?
            .as_ref()
            .map(account_state)
            .transpose()?;
        let mut sessions = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", s(user_pk(user)))
                .expression_attribute_values(":prefix", s("SESSION#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out.items() {
                let sess = effective_session(item, account.as_ref())?;
                if sess.is_active(now) {
                    sessions.push(sess);
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        sessions.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(sessions)
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let item_key = key(format!("LOGIN#{username_key}"), "LOGIN");
        let window_ms = policy.window_seconds * 1000;
        let floor = now.millis() - window_ms;
        for attempt in 0..MAX_ATTEMPTS {
            // Count the attempt inside a live window that still has room.
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key.clone()))
                .update_expression("SET attempts = attempts + :one")
                .condition_expression(
                    "attribute_exists(PK) AND window_start > :floor AND attempts < :max",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":floor", n(floor))
                .expression_attribute_values(":max", n(i64::from(policy.max_attempts)));
            let counted = self.resend_refused(|| request.clone().send()).await;
            match counted {
                Ok(_) => return Ok(Attempt::Allowed),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
                Err(e) => return Err(sdk_error(e)),
            }
            let current = self.get(item_key.clone()).await?;
            let live = match &current {
                Some(item) => {
                    let start = get_n(item, "window_start")?;
                    (start > floor).then_some((start, get_n(item, "attempts")?))
                }
                None => None,
            };
            match live {
                Some((start, attempts)) if attempts >= i64::from(policy.max_attempts) => {
                    let remaining_ms = (start + window_ms - now.millis()).max(0);
                    return Ok(Attempt::Limited {
                        retry_after: u64::try_from((remaining_ms + 999) / 1000)
                            .unwrap_or(1)
                            .max(1),
                    });
                }
                // Room appeared (a clear raced us): count again.
                Some(_) => continue,
                None => {
                    // No live window: open one, unless someone else just did.
                    let mut item = item_key.clone();
                    item.insert("attempts".into(), n(1));
                    item.insert("window_start".into(), n(now.millis()));
                    item.insert(
                        TTL_ATTRIBUTE.into(),
                        n(now.unix_seconds() + policy.window_seconds + TTL_GRACE_SECONDS),
                    );
                    let request = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(PK) OR window_start <= :floor")
                        .expression_attribute_values(":floor", n(floor));
                    let opened = self.resend_refused(|| request.clone().send()).await;
                    match opened {
                        Ok(_) => return Ok(Attempt::Allowed),
                        Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                            self.backoff(attempt, &Cancelled::conflict()).await;
                        }
                        Err(e) => return Err(sdk_error(e)),
                    }
                }
            }
        }
        Err(StoreError::unavailable("login throttle kept conflicting"))
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("LOGIN#{username_key}"), "LOGIN")));
        self.resend_refused(|| request.clone().send())
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let Some(item) = self.account_item(user).await? else {
            return Ok(None);
        };
        Ok(Some(Account {
            user,
            balance: Money::from_minor(get_n(&item, "balance")?),
            version: get_u64(&item, "version")?,
            updated_at: Timestamp::from_millis(get_n(&item, "updated_at")?),
        }))
    }

    async fn apply_change(&self, c: &BalanceChange) -> Result<Applied, StoreError> {
        let stamp = c.idempotency.as_ref();
        let mut attempts = Attempts::new(c.user, c.operation_id);
        for attempt in 0..MAX_ATTEMPTS {
            let (session, item) = tokio::try_join!(
                self.read_session(c.user, c.session.as_ref()),
                self.account_item(c.user)
            )?;
            let read = item.as_ref().map(account_state).transpose()?;
            if let Some(read) = &read
                && let Some(done) = self.applied_before(&mut attempts, read.version).await?
            {
                return Ok(Applied::Done(done));
            }
            let session = live_session(c.user, session, read.as_ref(), c.now)?;
            let Some(read) = read else {
                return Err(StoreError::AccountNotFound);
            };
            let (after, rule) = match c.kind {
                OperationKind::Deposit => match read.balance.checked_credit(c.amount) {
                    Some(after) => (after, "balance <= :ceiling"),
                    None => {
                        return self
                            .unless_recorded(c.user, stamp, c.now, StoreError::BalanceLimitExceeded)
                            .await;
                    }
                },
                OperationKind::Withdrawal => match read.balance.checked_debit(c.amount) {
                    Some(after) => (after, DEBIT_RULE),
                    None => {
                        let err = StoreError::InsufficientFunds {
                            balance: read.balance,
                        };
                        return self.unless_recorded(c.user, stamp, c.now, err).await;
                    }
                },
                other => {
                    return Err(StoreError::internal(format!(
                        "{} is not a balance change",
                        other.as_str()
                    )));
                }
            };
            let op = Operation {
                id: c.operation_id,
                user: c.user,
                seq: read.version + 1,
                kind: c.kind,
                amount: c.amount,
                balance_after: after,
                counterparty: None,
                transfer_id: None,
                description: c.description.clone(),
                // Never before the account's previous operation (see the module documentation).
                created_at: c.now.max(read.updated_at),
            };
            let mut items = vec![
                self.account_update(
                    c.user,
                    &read,
                    after,
                    rule,
                    c.amount,
                    op.created_at,
                    session.as_ref(),
                )?,
                self.operation_put(&op)?,
            ];
            if let Some(stamp) = stamp {
                items.push(self.idempotency_put(c.user, stamp, &op, c.now)?);
            }
            let session_item = self.guard_session(&mut items, c.user, session.as_ref(), c.now)?;
            if let Some(applied) = self
                .commit_movement(
                    items,
                    &op,
                    &mut attempts,
                    stamp.map(|s| (s, 2)),
                    session_item,
                    attempt,
                    "balance change",
                )
                .await?
            {
                return Ok(applied);
            }
        }
        Err(StoreError::unavailable(
            "the account kept changing; nothing was applied",
        ))
    }

    async fn transfer(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        let stamp = t.idempotency.as_ref();
        // The sender's account is read with the session: the session is judged against it,
        // before anything about the recipient.
        let (session_read, guard, mut sender_item) = tokio::try_join!(
            self.read_session(t.from, t.session.as_ref()),
            self.get(key(format!("USERNAME#{}", t.to_username_key), "USERNAME")),
            self.account_item(t.from)
        )?;
        let sender_read = sender_item.as_ref().map(account_state).transpose()?;
        let mut session = live_session(t.from, session_read, sender_read.as_ref(), t.now)?;
        let recipient = match guard {
            Some(guard) => parse_id(get_s(&guard, "user_id")?, "user_id", UserId::parse)?,
            None => {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                    .await;
            }
        };
        if recipient == t.from {
            return self
                .unless_recorded(t.from, stamp, t.now, StoreError::SelfTransfer)
                .await;
        }
        let mut recipient_item = self.account_item(recipient).await?;
        let mut attempts = Attempts::new(t.from, t.out_operation_id);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // Another attempt: the session may have been revoked (or the sender
                // deactivated) meanwhile.
                let (reread, sender_now, recipient_now) = tokio::try_join!(
                    self.read_session(t.from, t.session.as_ref()),
                    self.account_item(t.from),
                    self.account_item(recipient)
                )?;
                let sender_read = sender_now.as_ref().map(account_state).transpose()?;
                if let Some(read) = &sender_read
                    && let Some(done) = self.applied_before(&mut attempts, read.version).await?
                {
                    return Ok(Applied::Done(done));
                }
                session = live_session(t.from, reread, sender_read.as_ref(), t.now)?;
                (sender_item, recipient_item) = (sender_now, recipient_now);
            }
            let Some(sender_item) = sender_item.as_ref() else {
                return Err(StoreError::AccountNotFound);
            };
            let sender = account_state(sender_item)?;
            let recipient_state = match recipient_item.as_ref() {
                Some(item) => account_state(item)?,
                None => {
                    return self
                        .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                        .await;
                }
            };
            if !recipient_state.active {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                    .await;
            }
            let Some(sender_after) = sender.balance.checked_debit(t.amount) else {
                let err = StoreError::InsufficientFunds {
                    balance: sender.balance,
                };
                return self.unless_recorded(t.from, stamp, t.now, err).await;
            };
            let Some(recipient_after) = recipient_state.balance.checked_credit(t.amount) else {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::BalanceLimitExceeded)
                    .await;
            };
            // Never before either account's previous operation (see the module documentation).
            let at = t.now.max(sender.updated_at).max(recipient_state.updated_at);
            let out = Operation {
                id: t.out_operation_id,
                user: t.from,
                seq: sender.version + 1,
                kind: OperationKind::TransferOut,
                amount: t.amount,
                balance_after: sender_after,
                counterparty: Some(Counterparty {
                    id: recipient,
                    username: recipient_state.username.clone(),
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: at,
            };
            let incoming = Operation {
                id: t.in_operation_id,
                user: recipient,
                seq: recipient_state.version + 1,
                kind: OperationKind::TransferIn,
                amount: t.amount,
                balance_after: recipient_after,
                counterparty: Some(Counterparty {
                    id: t.from,
                    username: sender.username.clone(),
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: at,
            };
            let mut items = vec![
                self.account_update(
                    t.from,
                    &sender,
                    sender_after,
                    DEBIT_RULE,
                    t.amount,
                    at,
                    session.as_ref(),
                )?,
                self.account_update(
                    recipient,
                    &recipient_state,
                    recipient_after,
                    CREDIT_RULE,
                    t.amount,
                    at,
                    None,
                )?,
                self.operation_put(&out)?,
                self.operation_put(&incoming)?,
            ];
            if let Some(stamp) = stamp {
                items.push(self.idempotency_put(t.from, stamp, &out, t.now)?);
            }
            let session_item = self.guard_session(&mut items, t.from, session.as_ref(), t.now)?;
            if let Some(applied) = self
                .commit_movement(
                    items,
                    &out,
                    &mut attempts,
                    stamp.map(|s| (s, 4)),
                    session_item,
                    attempt,
                    "transfer",
                )
                .await?
            {
                return Ok(applied);
            }
        }
        Err(StoreError::unavailable(
            "the accounts kept changing; nothing was applied",
        ))
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        self.idempotency_item(user, key.as_str(), now).await
    }

    async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        use std::sync::atomic::Ordering;
        let empty = HistoryPage {
            operations: vec![],
            next_before: None,
        };
        if q.below_everything() {
            return Ok(empty);
        }
        let mut top = q.before_seq.map(|before| before - 1);
        if let Some(until) = q.until {
            // The sort key is the sequence, not the time; but `created_at` never decreases with
            // it, so the newest operation at or before `until` is found by bisection and the
            // query starts there instead of filtering out everything newer.
            match self.last_seq_until(q.user, until, top).await? {
                Some(seq) => top = Some(seq),
                None => return Ok(empty),
            }
        }
        let Some((lo, hi)) = op_range(top) else {
            return Ok(empty);
        };
        let mut filters = Vec::new();
        let mut values: Item = HashMap::from([
            (":pk".into(), s(user_pk(q.user))),
            (":lo".into(), s(lo)),
            (":hi".into(), s(hi)),
        ]);
        let mut names = HashMap::new();
        if !q.kinds.is_empty() && q.kinds.len() < OperationKind::ALL.len() {
            let placeholders: Vec<String> = q
                .kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    values.insert(format!(":k{i}"), s(k.as_str()));
                    format!(":k{i}")
                })
                .collect();
            names.insert("#kind".to_owned(), "kind".to_owned());
            filters.push(format!("#kind IN ({})", placeholders.join(", ")));
        }
        if let Some(until) = q.until {
            // Kept although the bisection already placed the start: it costs no read.
            values.insert(":until".into(), n(until.millis()));
            filters.push("created_at <= :until".into());
        }
        let filtered = !filters.is_empty();
        let mut filter = filters.join(" AND ");
        if let Some(since) = q.since {
            // Reading newest first, the first operation older than `since` ends the history:
            // the filter lets it through so that the loop sees it and stops.
            if filtered {
                values.insert(":since".into(), n(since.millis()));
                filter = format!("({filter}) OR created_at < :since");
            }
        }
        let wanted = q.limit as usize + 1;
        // Unfiltered, a page is exactly one round trip; filtered, read in larger steps.
        let step = if filtered {
            (wanted as i32).max(100)
        } else {
            wanted as i32
        };
        let mut collected: Vec<Operation> = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        let mut last_evaluated: Option<u64> = None;
        let mut exhausted = false;
        for _ in 0..MAX_HISTORY_QUERIES {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(step)
                .set_exclusive_start_key(start.take());
            if filtered {
                query = query.filter_expression(filter.clone());
            }
            if !names.is_empty() {
                query = query.set_expression_attribute_names(Some(names.clone()));
            }
            self.stats.history_reads.fetch_add(1, Ordering::Relaxed);
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                let op = operation_from_item(item)?;
                if q.since.is_some_and(|since| op.created_at < since) {
                    exhausted = true;
                    break;
                }
                collected.push(op);
                if collected.len() == wanted {
                    break;
                }
            }
            last_evaluated = match out.last_evaluated_key() {
                Some(k) => {
                    start = Some(k.clone());
                    let sk = get_s(k, "SK")?;
                    Some(
                        sk.strip_prefix("OP#")
                            .and_then(|d| d.parse().ok())
                            .ok_or_else(|| bad("SK"))?,
                    )
                }
                None => None,
            };
            if exhausted || collected.len() >= wanted || last_evaluated.is_none() {
                break;
            }
        }
        Ok(match last_evaluated {
            // A filtered scan that ran out of round trips: resume where it stopped. DynamoDB
            // names the last item a query evaluated whenever it hit its `Limit`, also when that
            // is the first operation and nothing lies below.
            Some(last) if collected.len() < wanted && !exhausted => {
                HistoryPage::cut_short(collected, last)
            }
            _ => HistoryPage::from_fetched(collected, q.limit),
        })
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        // The index is eventually consistent: a list may lag a just-made change by a moment;
        // balances come from the accounts themselves, read strongly.
        let wanted = q.limit as usize + 1;
        let mut values: Item = HashMap::from([(":users".into(), s("USERS"))]);
        // DynamoDB refuses an empty string in a key condition: no cursor, no lower bound.
        let key_condition = match &q.after {
            Some(after) => {
                values.insert(":after".into(), s(after.clone()));
                "GSI1PK = :users AND GSI1SK > :after"
            }
            None => "GSI1PK = :users",
        };
        let filter = q.search.as_ref().map(|text| {
            values.insert(":q".into(), s(text.clone()));
            "contains(username_key, :q) OR contains(email, :q)"
        });
        let mut profiles: Vec<Item> = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression(key_condition)
                .set_expression_attribute_values(Some(values.clone()))
                .limit(if filter.is_some() { 100 } else { wanted as i32 })
                .set_exclusive_start_key(start.take());
            if let Some(f) = filter {
                query = query.filter_expression(f);
            }
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                profiles.push(item.clone());
                if profiles.len() == wanted {
                    break;
                }
            }
            match out.last_evaluated_key() {
                Some(k) if profiles.len() < wanted => start = Some(k.clone()),
                _ => break,
            }
        }
        let next_after = if profiles.len() > q.limit as usize {
            profiles.truncate(q.limit as usize);
            profiles
                .last()
                .map(|p| get_s(p, "username_key").map(str::to_owned))
                .transpose()?
        } else {
            None
        };
        let mut users = Vec::with_capacity(profiles.len());
        for profile in &profiles {
            let user = user_from_index_item(profile)?;
            let account = self
                .account(user.id)
                .await?
                .ok_or(StoreError::AccountNotFound)?;
            users.push(UserSummary {
                balance: account.balance,
                user,
            });
        }
        Ok(UserPage { users, next_after })
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let Some(profile) = self.get(key(user_pk(change.user), "PROFILE")).await? else {
            return Ok(None);
        };
        let flag = AttributeValue::Bool(change.active);
        let profile_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(change.user), "PROFILE")))
            .update_expression("SET is_active = :flag")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":flag", flag.clone())
            .build()
            .map_err(StoreError::internal)?;
        // Deactivation also starts a new session epoch: every session of the user, however
        // many, is dead from this transaction on, and stays dead after a reactivation.
        let mut account_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(change.user), "ACCOUNT")))
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":flag", flag);
        account_update = if change.active {
            account_update.update_expression("SET active = :flag")
        } else {
            account_update
                .update_expression(
                    "SET active = :flag, session_epoch = if_not_exists(session_epoch, :zero) + :one, \
                     sessions_revoked_at = :now",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(change.now.millis()))
        };
        let items = vec![
            TransactWriteItem::builder().update(profile_update).build(),
            TransactWriteItem::builder()
                .update(account_update.build().map_err(StoreError::internal)?)
                .build(),
            put_item(
                &self.table,
                audit_item(&change.audit),
                "attribute_not_exists(PK)",
            )?,
        ];
        for attempt in 0..MAX_ATTEMPTS {
            let changed = || {
                let mut user = user_from_item(&profile)?;
                user.is_active = change.active;
                Ok(Some(user))
            };
            match self.transact(items.clone()).await {
                Ok(()) => return changed(),
                // The audit entry's id is new and random: it was put, with the rest, by an
                // earlier sending of this same call, whose answer was lost.
                Err(c) if c.failed(2) => return changed(),
                Err(Cancelled::Other(e)) => {
                    applied_despite(e, self.audit_exists(&change.audit)).await?;
                    return changed();
                }
                Err(c) if c.failed(0) || c.failed(1) => return Ok(None),
                Err(c) if c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!(
                        "status change cancelled: {c:?}"
                    )));
                }
            }
        }
        Err(StoreError::unavailable(
            "the status change kept conflicting",
        ))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)))
            .condition_expression("attribute_not_exists(PK)");
        let put = self.resend_refused(|| request.clone().send()).await;
        match put {
            Ok(_) => Ok(()),
            // The entry's id is new and random: an earlier sending of this call put it.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => applied_despite(sdk_error(e), self.audit_exists(entry)).await,
        }
    }

    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        let upper = match before {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| StoreError::internal("malformed audit position"))?,
            // Sorts after every "<15 digits>#…" key.
            None => "9".repeat(16),
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :audit AND SK < :upper")
            .expression_attribute_values(":audit", s("AUDIT"))
            .expression_attribute_values(":upper", s(upper))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit as i32 + 1)
            .send()
            .await
            .map_err(sdk_error)?;
        let mut items: Vec<&Item> = out.items().iter().collect();
        let next_before = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items
                .last()
                .map(|i| get_s(i, "SK").map(|sk| sk.as_bytes().to_vec()))
                .transpose()?
        } else {
            None
        };
        Ok(AuditPage {
            entries: items
                .into_iter()
                .map(audit_from_item)
                .collect::<Result<_, _>>()?,
            next_before,
        })
    }
}
