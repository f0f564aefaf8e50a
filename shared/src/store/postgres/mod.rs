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
//! committed first and is seen, or waits until the transfer has committed. Transfers into one
//! recipient that arrive while one is in flight are applied together, in one transaction
//! (migration 9, [`batch`]): a hot recipient's row is locked and committed once per batch.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row};
use uuid::Uuid;

use super::backend::*;

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
                    if let Err(e) = $store.before_retry(&mut attempt, e, "a transaction").await {
                        break Err(e);
                    }
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
                    if let Err(e) = $store.before_retry(&mut attempt, e, "a statement").await {
                        break Err(e);
                    }
                }
            }
        }
    }};
}

// After the macros: the modules use `in_tx!` and `in_statement!`.
mod batch;
mod money;
mod rows;
mod schema;
mod steps;
mod store;

use self::money::*;
use self::rows::*;
use self::schema::*;
use self::steps::*;

/// The PostgreSQL-backed [`Store`]. Its clones share the pool, the counters and the transfer
/// queues (a batch is applied by a task holding a clone).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
    /// `host:port/db`, to name the server in connection errors (never the password).
    target: Arc<str>,
    /// Serialization failures and deadlocks met so far; see [`PgStore::serialization_failures`].
    retried: Arc<AtomicU64>,
    /// Transfers waiting for the batch of their recipient ([`batch`]).
    queues: Arc<batch::Queues>,
    /// Most transfers applied together (`POSTGRES_TRANSFER_BATCH`).
    transfer_batch: usize,
    /// Transfers applied in a batch of more than one; see [`PgStore::batched_transfers`].
    batched: Arc<AtomicU64>,
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
            target: target.into(),
            retried: Arc::new(AtomicU64::new(0)),
            queues: Arc::default(),
            transfer_batch: crate::store::MAX_TRANSFER_BATCH,
            batched: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many serialization failures and deadlocks this store has met (each one retried, or
    /// the last one given up on). With READ COMMITTED and the ordered row locks they should not
    /// happen at all, so the PostgreSQL tests assert that this stays 0 under contention.
    pub fn serialization_failures(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// How many transfers this store has applied in a batch of more than one.
    pub fn batched_transfers(&self) -> u64 {
        self.batched.load(Ordering::Relaxed)
    }

    /// The retry step of [`in_tx!`] and [`in_statement!`]: counts the serialization failure or
    /// deadlock and waits a growing moment, or gives up (`Err`) after `MAX_ATTEMPTS`.
    async fn before_retry(
        &self,
        attempt: &mut u32,
        e: tokio_postgres::Error,
        what: &str,
    ) -> Result<(), StoreError> {
        self.retried.fetch_add(1, Ordering::Relaxed);
        *attempt += 1;
        if *attempt >= MAX_ATTEMPTS {
            return Err(map_pg(e));
        }
        tracing::warn!(attempt = *attempt, error = %e, "retrying {what}");
        tokio::time::sleep(Duration::from_millis(5 << *attempt)).await;
        Ok(())
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

    /// At most one row of a cached statement, read by `from_row`: the shape of every lookup.
    async fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        from_row: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(map_pg)?;
        client
            .query_opt(&stmt, params)
            .await
            .map_err(map_pg)?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// One statement in its own implicit transaction; the number of rows it changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client.execute(sql, params).await.map_err(map_pg)
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
