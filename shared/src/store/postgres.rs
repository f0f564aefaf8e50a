//! The PostgreSQL store (also Aurora PostgreSQL): one transaction per primitive.
//!
//! Isolation is READ COMMITTED — set by the store on every connection, whatever the server's,
//! database's or role's default — with the conditions inside the writes and explicit row locks:
//! a balance change is one `UPDATE … WHERE balance >= $amount RETURNING …` (PostgreSQL
//! re-checks the `WHERE` against the newest row version after waiting for a concurrent
//! writer, so two withdrawals can never both pass); a transfer first locks both account rows
//! with `SELECT … FOR UPDATE` in user-id order, so two opposite transfers wait for each other
//! instead of deadlocking. SERIALIZABLE would give the same outcomes but answer contention on a
//! busy account with aborts to retry; row locks make it wait instead. A racing request with the
//! same idempotency key blocks on the key's unique index until the first commits, then sees it.
//! Serialization and deadlock failures (which the design should never produce) are still
//! retried a bounded number of times, and counted ([`PgStore::serialization_failures`]).
//! Migrations are embedded and applied by `--init`; every start checks the schema version.
//!
//! The money movements (deposit, withdrawal, transfer) run as server-side functions
//! (`migrations/postgres/0003_money_functions.sql`): the same statements, in the same order,
//! but sent as one prepared call, so each is one round trip and one implicit transaction
//! instead of BEGIN, three to seven statements and COMMIT, each waiting for the last. A
//! refusal comes back as an error with a LightTech SQLSTATE, which also undoes the key claim.
//! Their first step checks and locks the caller's session (migration 4), so the request needs
//! no read of it beforehand and a revocation cannot slip between the check and the movement. A
//! transfer reads its recipient's active flag under a share lock of the recipient's user row,
//! taken before anything else (migration 6): a deactivation, which updates that row, either
//! committed first and is seen, or waits until the transfer has committed.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, NoTls, Row};
use uuid::Uuid;

use super::{
    Account, Applied, Attempt, AuditAction, AuditEntry, AuditPage, AuditParty, BalanceChange,
    Counterparty, EXPIRED_ATTEMPTS_PRUNED, HistoryPage, HistoryQuery, IdempotencyStamp,
    IdempotentRecord, NewUser, Operation, RotateOutcome, Rotation, SessionRecord, SessionUse,
    StatusChange, Store, StoreError, ThrottlePolicy, TransferCommand, UserPage, UserQuery,
    UserRecord, UserSummary,
};
use crate::domain::{
    Email, IdempotencyKey, Money, OperationId, OperationKind, RequestFingerprint, SessionId,
    Timestamp, TokenId, TransferId, UserId, Username,
};

/// Embedded migrations, applied in order; the schema version is the count applied.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (2, include_str!("../../migrations/postgres/0002_admin.sql")),
    (
        3,
        include_str!("../../migrations/postgres/0003_money_functions.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_movement_sessions.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_movement_foreign_keys.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_transfer_recipient_lock.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_email_key.sql"),
    ),
    (
        8,
        include_str!("../../migrations/postgres/0008_login_attempts_by_window.sql"),
    ),
];

/// The migration after which [`backfill_email_keys`] runs.
const EMAIL_KEY_VERSION: i32 = 7;

/// Attempts at a transaction that failed with a serialization failure or deadlock.
const MAX_ATTEMPTS: u32 = 5;

/// The session's transaction isolation, as a server option of the startup packet (the space
/// escaped as PostgreSQL's option syntax wants).
const READ_COMMITTED: &str = r"-c default_transaction_isolation=read\ committed";

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs `$step(&tx)` (an async fn returning `Result<T, Failure>`) in a READ COMMITTED
/// transaction, committing on success and retrying the whole transaction on serialization
/// failure or deadlock. A macro, not a higher-order fn: the step borrows the transaction.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $step:expr) => {{
        let mut attempt = 0u32;
        loop {
            let mut client = $store.client().await?;
            let $tx = client.transaction().await.map_err(map_pg)?;
            let outcome = match $step.await {
                Ok(value) => match $tx.commit().await {
                    Ok(()) => break Ok(value),
                    Err(e) => Failure::from(e),
                },
                Err(failure) => failure,
            };
            match outcome {
                Failure::Fail(e) => break Err(e),
                Failure::Retry(e) => {
                    $store.retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        break Err(map_pg(e));
                    }
                    tracing::warn!(attempt, error = %e, "retrying a transaction");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
            }
        }
    }};
}

/// Runs `$step(&client)`, one statement in its own implicit transaction, retrying it on
/// serialization failure or deadlock like [`in_tx!`].
macro_rules! in_statement {
    ($store:expr, |$client:ident| $step:expr) => {{
        let mut attempt = 0u32;
        loop {
            let $client = $store.client().await?;
            match $step.await {
                Ok(value) => break Ok(value),
                Err(Failure::Fail(e)) => break Err(e),
                Err(Failure::Retry(e)) => {
                    $store.retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        break Err(map_pg(e));
                    }
                    tracing::warn!(attempt, error = %e, "retrying a statement");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
            }
        }
    }};
}

/// The PostgreSQL-backed [`Store`].
#[derive(Debug)]
pub struct PgStore {
    pool: Pool,
    /// `host:port/db`, to name the server in connection errors (never the password).
    target: String,
    /// Serialization failures and deadlocks met so far; see [`PgStore::serialization_failures`].
    retried: AtomicU64,
}

fn map_pg(e: tokio_postgres::Error) -> StoreError {
    let transient = e.is_closed()
        || match e.code() {
            None => e.as_db_error().is_none(),
            Some(code) => {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
            }
        };
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => crate::telemetry::error_chain(&e),
    };
    if transient {
        StoreError::unavailable(text)
    } else {
        StoreError::internal(text)
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A transaction step failed: retry the whole transaction, or give up with this error.
enum Failure {
    Retry(tokio_postgres::Error),
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_retryable(&e) {
            Failure::Retry(e)
        } else {
            Failure::Fail(map_pg(e))
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fail(e)
    }
}

/// Maps a unique violation to the domain error its constraint stands for.
fn on_constraint(e: tokio_postgres::Error) -> Failure {
    let constraint = e.as_db_error().and_then(|db| db.constraint());
    match (e.code(), constraint) {
        (Some(c), Some("users_username_key_unique")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Fail(StoreError::UsernameTaken)
        }
        (Some(c), Some("users_email_key_unique")) if *c == SqlState::UNIQUE_VIOLATION => {
            Failure::Fail(StoreError::EmailTaken)
        }
        _ => Failure::from(e),
    }
}

fn bad(what: &str) -> StoreError {
    StoreError::internal(format!("stored row has a malformed {what}"))
}

fn version_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| bad("version"))
}

fn user_from_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(row.try_get("id").map_err(map_pg)?),
        username: Username::parse(row.try_get("username").map_err(map_pg)?)
            .map_err(|_| bad("username"))?,
        email: Email::from_stored(row.try_get("email").map_err(map_pg)?)
            .map_err(|_| bad("email"))?,
        password_hash: row.try_get("password_hash").map_err(map_pg)?,
        is_staff: row.try_get("is_staff").map_err(map_pg)?,
        is_active: row.try_get("is_active").map_err(map_pg)?,
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
    })
}

const USER_COLUMNS: &str = "id, username, email, password_hash, is_staff, is_active, created_at";

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at";

fn session_from_row(row: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: SessionId(row.try_get("id").map_err(map_pg)?),
        user: UserId(row.try_get("user_id").map_err(map_pg)?),
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
        last_used_at: Timestamp::from_millis(row.try_get("last_used_at").map_err(map_pg)?),
        expires_at: Timestamp::from_millis(row.try_get("expires_at").map_err(map_pg)?),
        refresh_jti: TokenId(row.try_get("refresh_jti").map_err(map_pg)?),
        user_agent: row.try_get("user_agent").map_err(map_pg)?,
        ip: row.try_get("ip").map_err(map_pg)?,
        revoked_at: row
            .try_get::<_, Option<i64>>("revoked_at")
            .map_err(map_pg)?
            .map(Timestamp::from_millis),
    })
}

const OPERATION_COLUMNS: &str = "o.user_id, o.seq, o.id, o.kind, o.amount, o.balance_after, \
     o.counterparty_id, o.counterparty_username, o.transfer_id, o.description, o.created_at";

fn operation_from_row(row: &Row) -> Result<Operation, StoreError> {
    let kind: String = row.try_get("kind").map_err(map_pg)?;
    let counterparty = match row
        .try_get::<_, Option<Uuid>>("counterparty_id")
        .map_err(map_pg)?
    {
        Some(id) => Some(Counterparty {
            id: UserId(id),
            username: row.try_get("counterparty_username").map_err(map_pg)?,
        }),
        None => None,
    };
    Ok(Operation {
        id: OperationId(row.try_get("id").map_err(map_pg)?),
        user: UserId(row.try_get("user_id").map_err(map_pg)?),
        seq: version_of(row.try_get("seq").map_err(map_pg)?)?,
        kind: OperationKind::parse(&kind).ok_or_else(|| bad("kind"))?,
        amount: Money::from_minor(row.try_get("amount").map_err(map_pg)?),
        balance_after: Money::from_minor(row.try_get("balance_after").map_err(map_pg)?),
        counterparty,
        transfer_id: row
            .try_get::<_, Option<Uuid>>("transfer_id")
            .map_err(map_pg)?
            .map(TransferId),
        description: row.try_get("description").map_err(map_pg)?,
        created_at: Timestamp::from_millis(row.try_get("created_at").map_err(map_pg)?),
    })
}

impl PgStore {
    /// Connects a pool (nothing is opened until first use).
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::internal(format!("invalid DATABASE_URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        config.application_name("lighttech");
        // The locking design (see the module documentation) assumes READ COMMITTED: under
        // REPEATABLE READ or SERIALIZABLE a writer that waited for a row lock would fail with a
        // serialization error instead of re-checking the newest row. It is set in the startup
        // packet, so it costs no round trip and holds for the money functions' implicit
        // transactions too, whatever default the server, database or role has (a client
        // setting outranks those). Any `options` the URL gives are kept; this one comes last.
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {READ_COMMITTED}"),
            _ => READ_COMMITTED.to_owned(),
        };
        config.options(&options);
        let target = format!(
            "{}:{}/{}",
            config
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .unwrap_or_default(),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or_default(),
        );
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(StoreError::internal)?;
        Ok(PgStore {
            pool,
            target,
            retried: AtomicU64::new(0),
        })
    }

    /// How many serialization failures and deadlocks this store has met (each one retried, or
    /// the last one given up on). With READ COMMITTED and the ordered row locks they should not
    /// happen at all, so the PostgreSQL tests assert that this stays 0 under contention.
    pub fn serialization_failures(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let reason = match e {
                deadpool_postgres::PoolError::Backend(e) => match map_pg(e) {
                    StoreError::Unavailable(source) | StoreError::Internal(source) => {
                        crate::telemetry::error_chain(source.as_ref())
                    }
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            StoreError::unavailable(format!(
                "cannot use PostgreSQL at {}: {reason}",
                self.target
            ))
        })
    }

    /// The schema version applied to this database (0 for an empty database).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'lighttech_schema')",
                &[],
            )
            .await
            .map_err(map_pg)?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let version: Option<i32> = client
            .query_one("SELECT max(version) FROM lighttech_schema", &[])
            .await
            .map_err(map_pg)?
            .get(0);
        Ok(version.unwrap_or(0))
    }

    /// The version this build needs.
    pub fn required_version() -> i32 {
        MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    /// Applies every pending migration in one transaction, so a failing one leaves the schema
    /// where it was (none of the batch applied), serialised across processes by an advisory
    /// lock held by that transaction.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_pg)?;
        tx.execute("SELECT pg_advisory_xact_lock(7202611280)", &[])
            .await
            .map_err(map_pg)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS lighttech_schema (\
                 version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(map_pg)?;
        let current: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM lighttech_schema",
                &[],
            )
            .await
            .map_err(map_pg)?
            .get(0);
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await.map_err(map_pg)?;
            if *version == EMAIL_KEY_VERSION {
                backfill_email_keys(&tx).await?;
            }
            tx.execute(
                "INSERT INTO lighttech_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(map_pg)?;
            tracing::info!(version, "applied database migration");
        }
        tx.commit().await.map_err(map_pg)?;
        Ok(())
    }

    /// Fails with a clear message unless the schema is exactly what this build needs.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let have = self.schema_version().await?;
        let need = Self::required_version();
        match have.cmp(&need) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(StoreError::unavailable(format!(
                "the database schema is at version {have}, this build needs {need}: \
                 run `lighttech-local --init` to migrate"
            ))),
            std::cmp::Ordering::Greater => Err(StoreError::unavailable(format!(
                "the database schema is at version {have}, newer than this build ({need})"
            ))),
        }
    }
}

/// Gives every existing user the key of their address, computed in Rust
/// ([`super::email_keys`] says who keeps none), in one statement.
async fn backfill_email_keys(tx: &Tx<'_>) -> Result<(), StoreError> {
    let users = tx
        .query("SELECT id, email FROM users ORDER BY created_at, id", &[])
        .await
        .map_err(map_pg)?
        .iter()
        .map(|row| Ok((row.try_get::<_, Uuid>(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(Uuid, String)>, tokio_postgres::Error>>()
        .map_err(map_pg)?;
    let (ids, keys): (Vec<Uuid>, Vec<String>) = super::email_keys::keys_to_backfill(users)
        .into_iter()
        .unzip();
    tx.execute(
        "UPDATE users SET email_key = k.key \
         FROM unnest($1::uuid[], $2::text[]) AS k(id, key) WHERE users.id = k.id",
        &[&ids, &keys],
    )
    .await
    .map_err(map_pg)?;
    Ok(())
}

async fn find_record(
    client: &deadpool_postgres::Object,
    user: UserId,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotentRecord>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT k.fingerprint, {OPERATION_COLUMNS} FROM idempotency_keys k \
             JOIN operations o ON o.id = k.operation_id \
             WHERE k.user_id = $1 AND k.key = $2 AND k.expires_at > $3"
        ))
        .await
        .map_err(map_pg)?;
    let row = client
        .query_opt(&stmt, &[&user.0, &key, &now.millis()])
        .await
        .map_err(map_pg)?;
    row.map(|r| {
        Ok(IdempotentRecord {
            fingerprint: RequestFingerprint::from_stored(r.try_get("fingerprint").map_err(map_pg)?),
            operation: operation_from_row(&r)?,
        })
    })
    .transpose()
}

async fn create_user_tx(tx: &Tx<'_>, user: &NewUser) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO users (id, username, username_key, email, email_key, password_hash, \
             is_staff, is_active, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)",
        &[
            &user.id.0,
            &user.username.as_str(),
            &user.username.key(),
            &user.email.as_str(),
            &user.email.key(),
            &user.password_hash,
            &user.is_staff,
            &user.now.millis(),
        ],
    )
    .await
    .map_err(on_constraint)?;
    tx.execute(
        "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES ($1, 0, 0, $2)",
        &[&user.id.0, &user.now.millis()],
    )
    .await?;
    Ok(())
}

async fn rotate_session_tx(tx: &Tx<'_>, r: &Rotation) -> Result<RotateOutcome, Failure> {
    // The session ends at the new token's expiry or its maximum lifetime, whichever comes
    // first (`Rotation::session_end`, computed here from the stored login time).
    let rotated = tx
        .query_opt(
            "UPDATE sessions SET refresh_jti = $1, last_used_at = $2, \
                 expires_at = LEAST($3, created_at + $7) \
                 WHERE id = $4 AND user_id = $5 AND refresh_jti = $6 \
                 AND revoked_at IS NULL AND expires_at > $2 AND created_at > $8 \
                 RETURNING created_at",
            &[
                &r.next.0,
                &r.now.millis(),
                &r.expires_at.millis(),
                &r.session.0,
                &r.user.0,
                &r.presented.0,
                &r.max_lifetime_seconds.saturating_mul(1000),
                &r.created_after().millis(),
            ],
        )
        .await?;
    if let Some(row) = rotated {
        return Ok(RotateOutcome::Rotated {
            created_at: Timestamp::from_millis(row.try_get(0).map_err(map_pg)?),
        });
    }
    let current = tx
        .query_opt(
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2 FOR UPDATE"
            ),
            &[&r.session.0, &r.user.0],
        )
        .await?;
    match current.map(|row| session_from_row(&row)).transpose()? {
        // This very rotation already applied (a resend): its fresh token id is current.
        Some(s) if r.admits(&s) && s.refresh_jti == r.next => Ok(RotateOutcome::Rotated {
            created_at: s.created_at,
        }),
        Some(s) if r.admits(&s) => {
            tx.execute(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2",
                &[&r.now.millis(), &r.session.0],
            )
            .await?;
            Ok(RotateOutcome::Reused)
        }
        _ => Ok(RotateOutcome::Inactive),
    }
}

async fn take_login_attempt_tx(
    tx: &Tx<'_>,
    username_key: &str,
    policy: ThrottlePolicy,
    now: Timestamp,
    floor: i64,
    max: i32,
) -> Result<Attempt, Failure> {
    // One statement: open a window, or count inside a live one that has room. The row
    // lock taken by ON CONFLICT serialises racing attempts. Alongside, a bounded batch of
    // other usernames' rows whose window has passed is deleted (rows another attempt holds
    // are skipped, never waited for), so the table holds about the live windows only.
    let counted = tx
        .query_opt(
            "WITH pruned AS (\
                 DELETE FROM login_attempts WHERE username_key IN (\
                     SELECT username_key FROM login_attempts \
                     WHERE window_start <= $3 AND username_key <> $1 \
                     LIMIT $5 FOR UPDATE SKIP LOCKED)) \
                 INSERT INTO login_attempts (username_key, attempts, window_start) \
                 VALUES ($1, 1, $2) \
                 ON CONFLICT (username_key) DO UPDATE SET \
                   attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 \
                                   ELSE login_attempts.attempts + 1 END, \
                   window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 \
                                       ELSE login_attempts.window_start END \
                 WHERE login_attempts.window_start <= $3 OR login_attempts.attempts < $4 \
                 RETURNING attempts",
            &[
                &username_key,
                &now.millis(),
                &floor,
                &max,
                &(EXPIRED_ATTEMPTS_PRUNED as i64),
            ],
        )
        .await?;
    if counted.is_some() {
        return Ok(Attempt::Allowed);
    }
    let start: i64 = tx
        .query_one(
            "SELECT window_start FROM login_attempts WHERE username_key = $1",
            &[&username_key],
        )
        .await?
        .get(0);
    let remaining_ms = (start + policy.window_seconds * 1000 - now.millis()).max(0);
    Ok(Attempt::Limited {
        retry_after: u64::try_from((remaining_ms + 999) / 1000)
            .unwrap_or(1)
            .max(1),
    })
}

/// `lighttech_apply_change` (migrations 3 and 4): the session check and the whole balance
/// change in one statement.
const APPLY_CHANGE: &str = "SELECT outcome, balance_after, seq FROM lighttech_apply_change(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// `lighttech_transfer` (migrations 3, 4 and 6): the recipient's share lock, the session check
/// and the whole transfer in one statement.
const TRANSFER: &str = "SELECT outcome, balance_after, seq, recipient_id, recipient_username \
     FROM lighttech_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// A refusal raised by the money functions (their `LT` SQLSTATEs), or the error as it is.
fn refusal(e: tokio_postgres::Error) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure::from(e);
    };
    let refused = match db.code().code() {
        "LT001" => match db.detail().and_then(|d| d.parse::<i64>().ok()) {
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
        _ => return Failure::from(e),
    };
    Failure::Fail(refused)
}

/// The session as the money functions take it: id and touch threshold (both NULL without).
fn session_params(session: Option<&SessionUse>) -> (Option<Uuid>, Option<i64>) {
    match session {
        Some(s) => (Some(s.id.0), Some(s.touch_before.millis())),
        None => (None, None),
    }
}

/// The key's stamp as the money functions take it: key, fingerprint, expiry (all NULL without).
fn stamp_params(stamp: Option<&IdempotencyStamp>) -> (Option<&str>, Option<&str>, Option<i64>) {
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
enum Called {
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
async fn call_money_function(
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

async fn apply_change_once(
    client: &deadpool_postgres::Object,
    c: &BalanceChange,
) -> Result<Applied, Failure> {
    if !matches!(c.kind, OperationKind::Deposit | OperationKind::Withdrawal) {
        return Err(
            StoreError::internal(format!("{} is not a balance change", c.kind.as_str())).into(),
        );
    }
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
    Ok(Applied::Done(Operation {
        id: c.operation_id,
        user: c.user,
        seq,
        kind: c.kind,
        amount: c.amount,
        balance_after,
        counterparty: None,
        transfer_id: None,
        description: c.description.clone(),
        created_at: c.now,
    }))
}

async fn transfer_once(
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
    let (row, balance_after, seq) = match called {
        Called::Done {
            row,
            balance_after,
            seq,
        } => (row, balance_after, seq),
        Called::Recorded(record) => return Ok(Applied::AlreadyRecorded(record)),
    };
    Ok(Applied::Done(Operation {
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
    }))
}

async fn insert_audit(
    client: &impl GenericClient,
    e: &AuditEntry,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO audit_log (id, actor_id, actor_username, action, target_id, \
             target_username, detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &e.id,
                &e.actor.id.0,
                &e.actor.username,
                &e.action.as_str(),
                &e.target.as_ref().map(|t| t.id.0),
                &e.target.as_ref().map(|t| t.username.as_str()),
                &e.detail,
                &e.at.millis(),
            ],
        )
        .await?;
    Ok(())
}

fn audit_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    let action: String = row.try_get("action").map_err(map_pg)?;
    let target = match row
        .try_get::<_, Option<Uuid>>("target_id")
        .map_err(map_pg)?
    {
        Some(id) => Some(AuditParty {
            id: UserId(id),
            username: row.try_get("target_username").map_err(map_pg)?,
        }),
        None => None,
    };
    Ok(AuditEntry {
        id: row.try_get("id").map_err(map_pg)?,
        actor: AuditParty {
            id: UserId(row.try_get("actor_id").map_err(map_pg)?),
            username: row.try_get("actor_username").map_err(map_pg)?,
        },
        action: AuditAction::parse(&action).ok_or_else(|| bad("action"))?,
        target,
        detail: row.try_get("detail").map_err(map_pg)?,
        at: Timestamp::from_millis(row.try_get("at").map_err(map_pg)?),
    })
}

/// The user row is share-locked while the session is inserted: a concurrent deactivation
/// (which updates that row) waits for this insert, then revokes the new session with the rest.
async fn create_session_tx(tx: &Tx<'_>, s: &SessionRecord) -> Result<bool, Failure> {
    let active = tx
        .query_opt(
            "SELECT is_active FROM users WHERE id = $1 FOR SHARE",
            &[&s.user.0],
        )
        .await?
        .is_some_and(|row| row.get::<_, bool>(0));
    if !active {
        return Ok(false);
    }
    tx.execute(
        &format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &s.id.0,
            &s.user.0,
            &s.created_at.millis(),
            &s.last_used_at.millis(),
            &s.expires_at.millis(),
            &s.refresh_jti.0,
            &s.user_agent,
            &s.ip,
            &s.revoked_at.map(Timestamp::millis),
        ],
    )
    .await?;
    Ok(true)
}

/// The UPDATE of the user row conflicts with the share lock a transfer in flight holds on its
/// recipient's row (migration 6): a deactivation waits for such a transfer, and a transfer that
/// starts after it committed finds the recipient inactive.
async fn set_user_active_tx(
    tx: &Tx<'_>,
    change: &StatusChange,
) -> Result<Option<UserRecord>, Failure> {
    let updated = tx
        .query_opt(
            &format!("UPDATE users SET is_active = $1 WHERE id = $2 RETURNING {USER_COLUMNS}"),
            &[&change.active, &change.user.0],
        )
        .await?;
    let Some(row) = updated else {
        return Ok(None);
    };
    if !change.active {
        tx.execute(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            &[&change.now.millis(), &change.user.0],
        )
        .await?;
    }
    insert_audit(&**tx, &change.audit).await?;
    Ok(Some(user_from_row(&row)?))
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        in_tx!(self, |tx| create_user_tx(&tx, user))?;
        Ok(UserRecord {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            is_staff: user.is_staff,
            is_active: true,
            created_at: user.now,
        })
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username_key = $1"
            ))
            .await
            .map_err(map_pg)?;
        client
            .query_opt(&stmt, &[&username_key])
            .await
            .map_err(map_pg)?
            .map(|r| user_from_row(&r))
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .await
            .map_err(map_pg)?;
        client
            .query_opt(&stmt, &[&id.0])
            .await
            .map_err(map_pg)?
            .map(|r| user_from_row(&r))
            .transpose()
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<bool, StoreError> {
        in_tx!(self, |tx| create_session_tx(&tx, s))
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2"
            ))
            .await
            .map_err(map_pg)?;
        client
            .query_opt(&stmt, &[&id.0, &user.0])
            .await
            .map_err(map_pg)?
            .map(|r| session_from_row(&r))
            .transpose()
    }

    async fn rotate_session(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        in_tx!(self, |tx| rotate_session_tx(&tx, r))
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sessions SET last_used_at = $1 \
                 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                &[&now.millis(), &id.0, &user.0],
            )
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sessions SET revoked_at = $1 \
                 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
                &[&now.millis(), &id.0, &user.0],
            )
            .await
            .map_err(map_pg)?;
        Ok(n == 1)
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC, id DESC"
                ),
                &[&user.0, &now.millis()],
            )
            .await
            .map_err(map_pg)?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let floor = now.millis() - policy.window_seconds * 1000;
        let max = i32::try_from(policy.max_attempts).unwrap_or(i32::MAX);
        in_tx!(self, |tx| take_login_attempt_tx(
            &tx,
            username_key,
            policy,
            now,
            floor,
            max
        ))
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM login_attempts WHERE username_key = $1",
                &[&username_key],
            )
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT balance, version, updated_at FROM accounts WHERE user_id = $1")
            .await
            .map_err(map_pg)?;
        client
            .query_opt(&stmt, &[&user.0])
            .await
            .map_err(map_pg)?
            .map(|r| {
                Ok(Account {
                    user,
                    balance: Money::from_minor(r.get(0)),
                    version: version_of(r.get(1))?,
                    updated_at: Timestamp::from_millis(r.get(2)),
                })
            })
            .transpose()
    }

    async fn apply_change(&self, c: &BalanceChange) -> Result<Applied, StoreError> {
        in_statement!(self, |client| apply_change_once(&client, c))
    }

    async fn transfer(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        in_statement!(self, |client| transfer_once(&client, t))
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let client = self.client().await?;
        find_record(&client, user, key.as_str(), now).await
    }

    async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        if q.below_everything() {
            return Ok(HistoryPage::from_fetched(vec![], q.limit));
        }
        let kinds: Vec<&str> = if q.kinds.is_empty() {
            OperationKind::ALL.iter().map(|k| k.as_str()).collect()
        } else {
            q.kinds.iter().map(|k| k.as_str()).collect()
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {OPERATION_COLUMNS} FROM operations o \
                 WHERE o.user_id = $1 AND o.seq < $2 AND o.kind = ANY($3) \
                 AND o.created_at >= $4 AND o.created_at <= $5 \
                 ORDER BY o.seq DESC LIMIT $6"
            ))
            .await
            .map_err(map_pg)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &q.user.0,
                    &q.before_seq
                        .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)),
                    &kinds,
                    &q.since.map_or(i64::MIN, Timestamp::millis),
                    &q.until.map_or(i64::MAX, Timestamp::millis),
                    &(i64::from(q.limit) + 1),
                ],
            )
            .await
            .map_err(map_pg)?;
        let ops = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage::from_fetched(ops, q.limit))
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.id, u.username, u.email, u.password_hash, u.is_staff, u.is_active, \
                 u.created_at, u.username_key, a.balance \
                 FROM users u JOIN accounts a ON a.user_id = u.id \
                 WHERE u.username_key COLLATE \"C\" > $1 \
                 AND ($2::text IS NULL OR strpos(u.username_key, $2) > 0 OR strpos(u.email, $2) > 0) \
                 ORDER BY u.username_key COLLATE \"C\" LIMIT $3",
                &[
                    &q.after.clone().unwrap_or_default(),
                    &q.search,
                    &(i64::from(q.limit) + 1),
                ],
            )
            .await
            .map_err(map_pg)?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            users.push((
                UserSummary {
                    user: user_from_row(row)?,
                    balance: Money::from_minor(row.try_get("balance").map_err(map_pg)?),
                },
                row.try_get::<_, String>("username_key").map_err(map_pg)?,
            ));
        }
        let next_after = if users.len() > q.limit as usize {
            users.truncate(q.limit as usize);
            users.last().map(|(_, key)| key.clone())
        } else {
            None
        };
        Ok(UserPage {
            users: users.into_iter().map(|(u, _)| u).collect(),
            next_after,
        })
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        in_tx!(self, |tx| set_user_active_tx(&tx, change))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert_audit(&**client, entry).await.map_err(map_pg)
    }

    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        let before = match before {
            Some(bytes) => i64::from_be_bytes(
                bytes
                    .try_into()
                    .map_err(|_| StoreError::internal("malformed audit position"))?,
            ),
            None => i64::MAX,
        };
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, id, actor_id, actor_username, action, target_id, target_username, \
                 detail, at FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                &[&before, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(map_pg)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.push((
                audit_from_row(row)?,
                row.try_get::<_, i64>("seq").map_err(map_pg)?,
            ));
        }
        let next_before = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|(_, seq)| seq.to_be_bytes().to_vec())
        } else {
            None
        };
        Ok(AuditPage {
            entries: entries.into_iter().map(|(e, _)| e).collect(),
            next_before,
        })
    }
}
