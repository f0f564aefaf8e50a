//! The DynamoDB store: one table, conditional writes and `TransactWriteItems`.
//!
//! # Single-table design
//!
//! Key attributes `PK`, `SK` (strings); one global secondary index `GSI1` (`GSI1PK`, `GSI1SK`,
//! projection ALL) that lists users for administration; TTL attribute `ttl` (epoch seconds).
//! Billing is on demand.
//!
//! | item | `PK` | `SK` | attributes |
//! |---|---|---|---|
//! | user profile | `USER#<id>` | `PROFILE` | username, username_key, email, password_hash, is_staff, is_active, created_at; `GSI1PK=USERS`, `GSI1SK=<username_key>` |
//! | account | `USER#<id>` | `ACCOUNT` | balance, version, updated_at, active, username |
//! | operation | `USER#<id>` | `OP#<seq, 20 digits>` | id, kind, amount, balance_after, counterparty_id/_username, transfer_id, description, created_at |
//! | idempotency record | `USER#<id>` | `IDEM#<key>` | fingerprint, expires_at, ttl, op (the operation, embedded) |
//! | session | `USER#<id>` | `SESSION#<id>` | created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at, ttl |
//! | username guard | `USERNAME#<lower-cased>` | `USERNAME` | user_id |
//! | email guard | `EMAIL#<email>` | `EMAIL` | user_id |
//! | login throttle | `LOGIN#<lower-cased username>` | `LOGIN` | attempts, window_start, ttl |
//! | audit entry | `AUDIT` | `<at, 15 digits>#<id>` | actor_id, actor_username, action, target_id, target_username, detail, at |
//!
//! A user's account, history, keys and sessions share the user's partition, so a history page
//! is one `Query` and every session check is one strongly consistent `GetItem`.
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
//! DynamoDB deletes TTL-expired items only eventually, so every read checks expiry itself.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    SseSpecification, TimeToLiveSpecification, TransactWriteItem, Update,
};
use rand::RngExt;

use super::{
    Account, Applied, Attempt, AuditAction, AuditEntry, AuditPage, AuditParty, BalanceChange,
    Counterparty, HistoryPage, HistoryQuery, IdempotencyStamp, IdempotentRecord, NewUser,
    Operation, RotateOutcome, Rotation, SessionRecord, SessionUse, StatusChange, Store, StoreError,
    ThrottlePolicy, TransferCommand, UserPage, UserQuery, UserRecord, UserSummary,
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
/// Attempts at a conditional write before giving up with `Unavailable` (safe to retry). Each
/// attempt re-reads and re-checks; with the jittered backoff below this rides out heavy
/// contention on one account for about two seconds.
const MAX_ATTEMPTS: u32 = 40;
/// Query round trips a filtered history page may take before returning what it has.
const MAX_HISTORY_QUERIES: usize = 10;
/// Items per `TransactWriteItems` (DynamoDB's limit).
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Sessions and login counters linger this long past expiry before TTL may delete them.
const TTL_GRACE_SECONDS: i64 = 86_400;

/// Counters of what the store had to absorb, for tests and logs.
#[derive(Debug, Default)]
pub struct DynamoStats {
    /// Conditional writes retried after a version conflict or `TransactionConflict`.
    pub conflict_retries: std::sync::atomic::AtomicU64,
    /// Retries after throttling.
    pub throttle_retries: std::sync::atomic::AtomicU64,
}

/// The DynamoDB-backed [`Store`].
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// What the store retried so far.
    pub stats: DynamoStats,
    fault: Option<FaultInjector>,
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

/// Maps an SDK failure: connectivity, throttling and server errors are `Unavailable` (the
/// client may retry); anything else is internal. The full error context goes into the source,
/// because `SdkError`'s own `Display` says only "service error".
fn sdk_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unavailable = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => is_transient(err.code()),
        _ => false,
    };
    let text = crate::aws::describe(&err);
    if unavailable {
        StoreError::unavailable(text)
    } else {
        StoreError::internal(text)
    }
}

fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "TransactionInProgressException"
        )
    )
}

/// Why a transaction was cancelled, per item, as DynamoDB reports it.
#[derive(Debug)]
enum Cancelled {
    /// `CancellationReasons`, one code per item in order (`None` when that item was fine).
    Reasons(Vec<Option<String>>),
    /// A failure that is not a cancellation.
    Other(StoreError),
}

impl Cancelled {
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
            Cancelled::Other(StoreError::Unavailable(_)) => false,
            Cancelled::Other(_) => false,
        }
    }

    fn throttled(&self) -> bool {
        matches!(self, Cancelled::Reasons(r) if r.iter().any(|c| matches!(c.as_deref(), Some("ThrottlingError" | "ProvisionedThroughputExceeded"))))
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
        }
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
    /// and turns on TTL. Point-in-time recovery is an account-level setting the template owns.
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
                    .projection_type(ProjectionType::All)
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
            Err(e) if e.code() == Some("ResourceInUseException") => return Ok(()),
            Err(e) => return Err(sdk_error(e)),
        }
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(sdk_error)?;
            let active = described
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| s.as_str() == "ACTIVE");
            if active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
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

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Cancelled> {
        if let Some(fault) = self.fault
            && rand::rng().random_bool(fault.conflict_rate.clamp(0.0, 1.0))
        {
            return Err(Cancelled::Reasons(vec![
                Some("TransactionConflict".into());
                items.len()
            ]));
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                    Err(Cancelled::Reasons(
                        e.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().map(str::to_owned))
                            .collect(),
                    ))
                }
                _ => Err(Cancelled::Other(sdk_error(err))),
            },
        }
    }

    /// Sleeps before retry `attempt` (full jitter, capped) and counts why.
    async fn backoff(&self, attempt: u32, why: &Cancelled) {
        use std::sync::atomic::Ordering;
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

    /// Reads a movement's session (strongly consistent): `SessionNotLive` unless it is live;
    /// `None` for a movement without a session.
    async fn live_session(
        &self,
        user: UserId,
        session: Option<&SessionUse>,
        now: Timestamp,
    ) -> Result<Option<LiveSession>, StoreError> {
        let Some(session) = session else {
            return Ok(None);
        };
        let record = self
            .get(key(user_pk(user), &format!("SESSION#{}", session.id)))
            .await?
            .map(|item| session_from_item(&item))
            .transpose()?
            .filter(|s| s.user == user && s.is_active(now))
            .ok_or(StoreError::SessionNotLive)?;
        Ok(Some(LiveSession {
            id: session.id,
            touch: record.last_used_at < session.touch_before,
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
    /// already recorded); `None` asks for another attempt after a conflict. `key` is the stamp
    /// with the position of its idempotency `Put` among `items`, `session_item` the position of
    /// the session guard, whose failure comes first.
    async fn commit_movement(
        &self,
        items: Vec<TransactWriteItem>,
        op: &Operation,
        key: Option<(&IdempotencyStamp, usize)>,
        session_item: Option<usize>,
        attempt: u32,
        what: &str,
    ) -> Result<Option<Applied>, StoreError> {
        let cancelled = match self.transact(items).await {
            Ok(()) => return Ok(Some(Applied::Done(op.clone()))),
            Err(Cancelled::Other(e)) => return Err(e),
            Err(cancelled) => cancelled,
        };
        if session_item.is_some_and(|i| cancelled.failed(i)) {
            return Err(StoreError::SessionNotLive);
        }
        if let Some((stamp, key_item)) = key
            && cancelled.failed(key_item)
        {
            if let Some(record) = self
                .idempotency_item(op.user, stamp.key.as_str(), op.created_at)
                .await?
            {
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

    /// The account update, conditioned on the version read and on the business rule.
    fn account_update(
        &self,
        user: UserId,
        read: &AccountState,
        new_balance: Money,
        rule: &str,
        amount: Money,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user), "ACCOUNT")))
                    .update_expression("SET balance = :balance, version = :next, updated_at = :now")
                    .condition_expression(format!("version = :version AND {rule}"))
                    .expression_attribute_values(":balance", n(new_balance.minor()))
                    .expression_attribute_values(":next", n(read.version as i64 + 1))
                    .expression_attribute_values(":version", n(read.version as i64))
                    .expression_attribute_values(":now", n(now.millis()))
                    .expression_attribute_values(":amount", n(amount.minor()))
                    .expression_attribute_values(
                        ":ceiling",
                        n(Money::MAX_BALANCE.minor() - amount.minor()),
                    )
                    .expression_attribute_values(":active", AttributeValue::Bool(true))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }
}

/// A movement's session as read before its transaction: live, and whether its use is due to be
/// recorded.
#[derive(Debug, Clone, Copy)]
struct LiveSession {
    id: SessionId,
    touch: bool,
}

/// What a primitive read of an account before its conditional write.
#[derive(Debug, Clone)]
struct AccountState {
    balance: Money,
    version: u64,
    active: bool,
    username: String,
}

fn account_state(item: &Item) -> Result<AccountState, StoreError> {
    Ok(AccountState {
        balance: Money::from_minor(get_n(item, "balance")?),
        version: get_u64(item, "version")?,
        active: get_bool(item, "active")?,
        username: get_s(item, "username")?.to_owned(),
    })
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
        id: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        username: Username::parse(get_s(item, "username")?).map_err(|_| bad("username"))?,
        email: Email::parse(get_s(item, "email")?).map_err(|_| bad("email"))?,
        password_hash: get_s(item, "password_hash")?.to_owned(),
        is_staff: get_bool(item, "is_staff")?,
        is_active: get_bool(item, "is_active")?,
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
    })
}

fn session_item(sess: &SessionRecord) -> Item {
    let mut item = key(user_pk(sess.user), &format!("SESSION#{}", sess.id));
    item.insert("id".into(), s(sess.id.to_string()));
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
        let mut username_guard = key(format!("USERNAME#{}", user.username.key()), "USERNAME");
        username_guard.insert("user_id".into(), s(user.id.to_string()));
        let mut email_guard = key(format!("EMAIL#{}", user.email.as_str()), "EMAIL");
        email_guard.insert("user_id".into(), s(user.id.to_string()));
        let fresh = "attribute_not_exists(PK)";
        let items = vec![
            put_item(&self.table, profile, fresh)?,
            put_item(&self.table, account, fresh)?,
            put_item(&self.table, username_guard, fresh)?,
            put_item(&self.table, email_guard, fresh)?,
        ];
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact(items.clone()).await {
                Ok(()) => {
                    return Ok(UserRecord {
                        id: user.id,
                        username: user.username.clone(),
                        email: user.email.clone(),
                        password_hash: user.password_hash.clone(),
                        is_staff: user.is_staff,
                        is_active: true,
                        created_at: user.now,
                    });
                }
                Err(c) if c.failed(2) => return Err(StoreError::UsernameTaken),
                Err(c) if c.failed(3) => return Err(StoreError::EmailTaken),
                Err(c) if c.failed(0) || c.failed(1) => {
                    return Err(StoreError::internal("user id collision"));
                }
                Err(Cancelled::Other(e)) => return Err(e),
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
        // The profile's `is_active` is checked in the same transaction that puts the session;
        // a deactivation sweeps sessions again after its own transaction commits.
        let check = TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(session.user), "PROFILE")))
                    .condition_expression("is_active = :yes")
                    .expression_attribute_values(":yes", AttributeValue::Bool(true))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build();
        let put = put_item(
            &self.table,
            session_item(session),
            "attribute_not_exists(PK)",
        )?;
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact(vec![check.clone(), put.clone()]).await {
                Ok(()) => return Ok(true),
                Err(c) if c.failed(0) => return Ok(false),
                Err(Cancelled::Other(e)) => return Err(e),
                Err(c) if c.retryable() => self.backoff(attempt, &c).await,
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
        self.get(key(user_pk(user), &format!("SESSION#{id}")))
            .await?
            .map(|item| session_from_item(&item))
            .transpose()
    }

    async fn rotate_session(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        let session_key = key(user_pk(r.user), &format!("SESSION#{}", r.session));
        let rotated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key.clone()))
            .update_expression(
                "SET refresh_jti = :next, last_used_at = :now, expires_at = :expires, #ttl = :ttl",
            )
            .condition_expression(
                "refresh_jti = :presented AND attribute_not_exists(revoked_at) AND expires_at > :now",
            )
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":next", s(r.next.to_string()))
            .expression_attribute_values(":presented", s(r.presented.to_string()))
            .expression_attribute_values(":now", n(r.now.millis()))
            .expression_attribute_values(":expires", n(r.expires_at.millis()))
            .expression_attribute_values(
                ":ttl",
                n(r.expires_at.unix_seconds() + TTL_GRACE_SECONDS),
            )
            .send()
            .await;
        match rotated {
            Ok(_) => return Ok(RotateOutcome::Rotated),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
            Err(e) => return Err(sdk_error(e)),
        }
        let Some(current) = self.get(session_key.clone()).await? else {
            return Ok(RotateOutcome::Inactive);
        };
        if !session_from_item(&current)?.is_active(r.now) {
            return Ok(RotateOutcome::Inactive);
        }
        // A validly signed token of this session that is no longer current was spent before:
        // revoke the session. Losing this race to another revocation changes nothing.
        let revoked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key))
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(r.now.millis()))
            .send()
            .await;
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
        let touched = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &format!("SESSION#{id}"))))
            .update_expression("SET last_used_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(now.millis()))
            .send()
            .await;
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
        let revoked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &format!("SESSION#{id}"))))
            .update_expression("SET revoked_at = :now")
            .condition_expression(
                "attribute_exists(PK) AND attribute_not_exists(revoked_at) AND expires_at > :now",
            )
            .expression_attribute_values(":now", n(now.millis()))
            .send()
            .await;
        match revoked {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
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
                let sess = session_from_item(item)?;
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
            let counted = self
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
                .expression_attribute_values(":max", n(i64::from(policy.max_attempts)))
                .send()
                .await;
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
                    let opened = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(PK) OR window_start <= :floor")
                        .expression_attribute_values(":floor", n(floor))
                        .send()
                        .await;
                    match opened {
                        Ok(_) => return Ok(Attempt::Allowed),
                        Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                            let why = Cancelled::Reasons(vec![Some("TransactionConflict".into())]);
                            self.backoff(attempt, &why).await;
                        }
                        Err(e) => return Err(sdk_error(e)),
                    }
                }
            }
        }
        Err(StoreError::unavailable("login throttle kept conflicting"))
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("LOGIN#{username_key}"), "LOGIN")))
            .send()
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
        for attempt in 0..MAX_ATTEMPTS {
            let (session, item) = tokio::try_join!(
                self.live_session(c.user, c.session.as_ref(), c.now),
                self.account_item(c.user)
            )?;
            let Some(item) = item else {
                return Err(StoreError::AccountNotFound);
            };
            let read = account_state(&item)?;
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
                created_at: c.now,
            };
            let mut items = vec![
                self.account_update(c.user, &read, after, rule, c.amount, c.now)?,
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
        let (mut session, guard) = tokio::try_join!(
            self.live_session(t.from, t.session.as_ref(), t.now),
            self.get(key(format!("USERNAME#{}", t.to_username_key), "USERNAME"))
        )?;
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
        for attempt in 0..MAX_ATTEMPTS {
            let (sender_item, recipient_item) = if attempt == 0 {
                tokio::try_join!(self.account_item(t.from), self.account_item(recipient))?
            } else {
                // Another attempt: the session may have been revoked meanwhile.
                let (reread, sender_item, recipient_item) = tokio::try_join!(
                    self.live_session(t.from, t.session.as_ref(), t.now),
                    self.account_item(t.from),
                    self.account_item(recipient)
                )?;
                session = reread;
                (sender_item, recipient_item)
            };
            let Some(sender_item) = sender_item else {
                return Err(StoreError::AccountNotFound);
            };
            let sender = account_state(&sender_item)?;
            let recipient_state = match recipient_item {
                Some(item) => account_state(&item)?,
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
                created_at: t.now,
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
                created_at: t.now,
            };
            let mut items = vec![
                self.account_update(t.from, &sender, sender_after, DEBIT_RULE, t.amount, t.now)?,
                self.account_update(
                    recipient,
                    &recipient_state,
                    recipient_after,
                    CREDIT_RULE,
                    t.amount,
                    t.now,
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
        let upper = match q.before_seq {
            Some(0) => {
                return Ok(HistoryPage {
                    operations: vec![],
                    next_before: None,
                });
            }
            Some(before) => op_sk(before - 1),
            None => op_sk(u64::MAX / 2),
        };
        let mut filters = Vec::new();
        let mut values: Item = HashMap::from([
            (":pk".into(), s(user_pk(q.user))),
            (":lo".into(), s(op_sk(1))),
            (":hi".into(), s(upper)),
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
        if let Some(since) = q.since {
            values.insert(":since".into(), n(since.millis()));
            filters.push("created_at >= :since".into());
        }
        if let Some(until) = q.until {
            values.insert(":until".into(), n(until.millis()));
            filters.push("created_at <= :until".into());
        }
        let wanted = q.limit as usize + 1;
        // Unfiltered, a page is exactly one round trip; filtered, read in larger steps.
        let step = if filters.is_empty() {
            wanted as i32
        } else {
            (wanted as i32).max(100)
        };
        let mut collected: Vec<Operation> = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        let mut last_evaluated: Option<u64> = None;
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
            if !filters.is_empty() {
                query = query.filter_expression(filters.join(" AND "));
            }
            if !names.is_empty() {
                query = query.set_expression_attribute_names(Some(names.clone()));
            }
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                collected.push(operation_from_item(item)?);
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
            if collected.len() >= wanted || last_evaluated.is_none() {
                break;
            }
        }
        let next_before = if collected.len() > q.limit as usize {
            collected.truncate(q.limit as usize);
            collected.last().map(|o| o.seq)
        } else {
            // A filtered scan that ran out of round trips: resume where it stopped.
            last_evaluated
        };
        Ok(HistoryPage {
            operations: collected,
            next_before,
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
            let user = user_from_item(profile)?;
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
        let update = |sk: &str, attribute: &str| -> Result<TransactWriteItem, StoreError> {
            Ok(TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(change.user), sk)))
                        .update_expression(format!("SET {attribute} = :flag"))
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":flag", flag.clone())
                        .build()
                        .map_err(StoreError::internal)?,
                )
                .build())
        };
        let mut items = vec![
            update("PROFILE", "is_active")?,
            update("ACCOUNT", "active")?,
            put_item(
                &self.table,
                audit_item(&change.audit),
                "attribute_not_exists(PK)",
            )?,
        ];
        let mut revocations = Vec::new();
        if !change.active {
            for session in self.active_sessions(change.user, change.now).await? {
                revocations.push(
                    TransactWriteItem::builder()
                        .update(
                            Update::builder()
                                .table_name(&self.table)
                                .set_key(Some(key(
                                    user_pk(change.user),
                                    &format!("SESSION#{}", session.id),
                                )))
                                .update_expression(
                                    "SET revoked_at = if_not_exists(revoked_at, :now)",
                                )
                                .expression_attribute_values(":now", n(change.now.millis()))
                                .build()
                                .map_err(StoreError::internal)?,
                        )
                        .build(),
                );
            }
        }
        // The status, the audit entry and (nearly always all) the session revocations in one
        // transaction; a user with more live sessions than fit has the rest revoked right after.
        let room = MAX_TRANSACTION_ITEMS - items.len();
        let rest = revocations.split_off(revocations.len().min(room));
        items.extend(revocations);
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact(items.clone()).await {
                Ok(()) => break,
                Err(Cancelled::Other(e)) => return Err(e),
                Err(c) if c.failed(0) || c.failed(1) => return Ok(None),
                Err(c) if c.retryable() && attempt + 1 < MAX_ATTEMPTS => {
                    self.backoff(attempt, &c).await
                }
                Err(c) => {
                    return Err(StoreError::unavailable(format!(
                        "status change cancelled: {c:?}"
                    )));
                }
            }
        }
        for chunk in rest.chunks(MAX_TRANSACTION_ITEMS) {
            self.transact(chunk.to_vec()).await.map_err(|c| match c {
                Cancelled::Other(e) => e,
                other => {
                    StoreError::unavailable(format!("session revocation cancelled: {other:?}"))
                }
            })?;
        }
        if !change.active {
            // A login that passed its check just before the deactivation committed may have put
            // a session the first sweep did not see; none can be put from now on.
            for session in self.active_sessions(change.user, change.now).await? {
                self.revoke_session(change.user, session.id, change.now)
                    .await?;
            }
        }
        let mut user = user_from_item(&profile)?;
        user.is_active = change.active;
        Ok(Some(user))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
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
