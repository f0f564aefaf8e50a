//! The embedded store: one SQLite file in WAL mode, full durability.
//!
//! Writes go to one dedicated thread that owns the only writing connection: writers never
//! contend for SQLite's lock inside this process, so no `database is locked` can reach a client,
//! and every condition (funds, ceiling, key, token) is checked inside the transaction that
//! applies the change. The thread commits in groups: it takes every primitive waiting in its
//! queue (up to a bound), runs each in its own savepoint inside one `BEGIN IMMEDIATE`
//! transaction — a primitive that fails rolls back to its savepoint and leaves the others alone —
//! commits once, and only then answers them all (`group`, which also keeps every answer true
//! when SQLite rolls a whole group back). Each answer still means "durably committed"
//! (WAL, `synchronous=FULL`); the group shares one fsync instead of paying one each.
//! Reads use a pool of read-only connections, which WAL lets run beside the writer (no liveness
//! query per checkout: a local file connection does not go stale). A read of bounded cost (a
//! primary-key lookup, a history page, which passes over at most [`HISTORY_SCAN_ROWS`] entries)
//! runs right on the requesting task's thread; one whose cost grows with the data (the
//! administrators' listings) runs on the blocking pool.
//! Checkpoints (copying the WAL back into the database file, with an fsync of that file) run on
//! a thread of their own, beside the writer, instead of inside whichever commit crosses SQLite's
//! automatic threshold: every write waiting behind that commit used to wait for the checkpoint
//! too. Commits are exactly as durable either way: a commit is synced to the WAL before it is
//! answered, and a checkpoint only moves what the WAL already holds.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{self, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;

mod files;
mod group;

use self::group::{Job, commit_group};
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

/// The schema version this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 4;

/// A schema change: its SQL, then, where it needs values SQL cannot compute, a step in Rust,
/// both in the transaction that sets the new version.
type Migration = (
    &'static str,
    Option<fn(&Connection) -> rusqlite::Result<()>>,
);

/// Schema changes in order: version N is reached by applying `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[Migration] = &[
    (SCHEMA, None),
    (ADMIN, None),
    (EMAIL_KEY, Some(backfill_email_keys)),
    (LOGIN_ATTEMPTS_BY_WINDOW, None),
];

/// Finds throttle rows whose window has passed without a scan (each attempt prunes a few).
const LOGIN_ATTEMPTS_BY_WINDOW: &str =
    "CREATE INDEX login_attempts_by_window ON login_attempts(window_start);";

/// Emails are unique by their folded key (`Email::key`), not by the lower-cased address. The
/// old `email UNIQUE` stays (SQLite drops a constraint only by rebuilding the table); equal
/// addresses have equal keys, so it never refuses what the key admits. Rows from before the key
/// get theirs from [`backfill_email_keys`].
const EMAIL_KEY: &str = r#"
ALTER TABLE users ADD COLUMN email_key TEXT;
CREATE UNIQUE INDEX users_by_email_key ON users(email_key);
"#;

const ADMIN: &str = r#"
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    actor_id        TEXT NOT NULL,
    actor_username  TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_id       TEXT,
    target_username TEXT,
    detail          TEXT,
    at              INTEGER NOT NULL
);
"#;

const SCHEMA: &str = r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_staff      INTEGER NOT NULL,
    is_active     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE accounts (
    user_id    TEXT PRIMARY KEY REFERENCES users(id),
    balance    INTEGER NOT NULL CHECK (balance BETWEEN 0 AND 999999999999999),
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE operations (
    user_id               TEXT NOT NULL REFERENCES accounts(user_id),
    seq                   INTEGER NOT NULL,
    id                    TEXT NOT NULL UNIQUE,
    kind                  TEXT NOT NULL,
    amount                INTEGER NOT NULL CHECK (amount > 0),
    balance_after         INTEGER NOT NULL,
    counterparty_id       TEXT,
    counterparty_username TEXT,
    transfer_id           TEXT,
    description           TEXT,
    created_at            INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    operation_id TEXT NOT NULL REFERENCES operations(id),
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    refresh_jti  TEXT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    revoked_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
CREATE TABLE login_attempts (
    username_key TEXT PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Durability is not negotiable: WAL with `synchronous=FULL` syncs every commit.
const PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
     PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;";

/// Read-only connections.
const READERS: usize = 8;

/// WAL pages at which the writer checkpoints by itself (SQLite's default is 1000): the bound on
/// the WAL should the checkpoint thread fall behind. At 16 connections of deposits the WAL file
/// was seen to reach this size (80 MiB), so it is also about the most disk the WAL takes.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// Pause after each background checkpoint: under load, at most one checkpoint a second. Each
/// checkpoint ends with an fsync of the database file, and every commit's WAL sync that falls
/// in it waits longer; measured at 16 connections (deposits, transfers), write p99 fell as the
/// pause grew from 5 ms to 1 s (BENCHMARKS.md, profile section), while the WAL stays bounded
/// by `WRITER_AUTOCHECKPOINT_PAGES`.
const CHECKPOINT_PAUSE: Duration = Duration::from_secs(1);

/// Entries of a user's history one page passes over at most. Unfiltered, a page reads only its
/// own `limit + 1` rows; a kind or time filter may have to pass over many more to fill a page,
/// and this bound (as many rows as ten full pages) keeps every history read short enough for the
/// requesting task's thread. A page that reaches it comes back shorter than `limit`, with a
/// cursor below the last entry looked at, as DynamoDB's store does after its round trips.
pub const HISTORY_SCAN_ROWS: usize = 1_000;

/// Primitives committed together at most, by default.
pub const DEFAULT_WRITE_BATCH: usize = 64;

/// The SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<Job>,
    readers: deadpool::unmanaged::Pool<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: impl Into<PathBuf>) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, DEFAULT_WRITE_BATCH).await
    }

    /// Like [`SqliteStore::open`], committing at most `write_batch` primitives together
    /// (1: one transaction each).
    pub async fn open_with(
        path: impl Into<PathBuf>,
        write_batch: usize,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.into();
        files::prepare(&path)?;
        let writer = Self::spawn_writer(path.clone(), write_batch.max(1)).await?;
        let readers = deadpool::unmanaged::Pool::from_config(&deadpool::unmanaged::PoolConfig {
            max_size: READERS,
            timeout: Some(Duration::from_secs(5)),
            runtime: Some(deadpool::Runtime::Tokio1),
        });
        for _ in 0..READERS {
            let conn = Connection::open(&path)
                .and_then(|c| {
                    c.execute_batch("PRAGMA busy_timeout=5000; PRAGMA query_only=ON;")?;
                    Ok(c)
                })
                .map_err(|e| {
                    StoreError::unavailable(format!("cannot open SQLite database: {e}"))
                })?;
            readers
                .try_add(conn)
                .map_err(|(_, e)| StoreError::internal(e.to_string()))?;
        }
        Ok(SqliteStore {
            path,
            writer,
            readers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn spawn_writer(
        path: PathBuf,
        write_batch: usize,
    ) -> Result<mpsc::Sender<Job>, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let opened = Connection::open(&path)
                    .and_then(|mut c| {
                        c.execute_batch(PRAGMAS)?;
                        c.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
                        migrate(&mut c)?;
                        Ok(c)
                    })
                    .map_err(|e| format!("cannot open SQLite database: {e}"))
                    .and_then(|c| Ok((c, spawn_checkpointer(&path)?)));
                let (mut conn, checkpoints) = match opened {
                    Ok(opened) => {
                        let _ = ready_tx.send(Ok(()));
                        opened
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Runs until the store (and with it every sender) is dropped; dropping
                // `checkpoints` then ends the checkpoint thread.
                while let Ok(first) = job_rx.recv() {
                    let mut group = vec![first];
                    while group.len() < write_batch {
                        match job_rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    commit_group(&mut conn, group);
                    // A checkpoint is due; if one is already pending, this commit joins it.
                    let _ = checkpoints.try_send(());
                }
            })
            .map_err(StoreError::internal)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(job_tx),
            Ok(Err(e)) => Err(StoreError::unavailable(e)),
            Err(_) => Err(StoreError::internal("SQLite writer thread died")),
        }
    }

    /// Runs `f` on the writer thread inside a group transaction (in a savepoint of its own);
    /// answers once the group is committed. `f`'s changes are kept on `Ok`, undone on `Err`.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = group::job(f);
        self.writer
            .send(job)
            .map_err(|_| StoreError::internal("SQLite writer thread stopped"))?;
        answer.await.map_err(|_| {
            StoreError::unavailable("the write could not run: the database is busy or failing")
        })?
    }

    /// Runs `f` on a pooled read-only connection, on the blocking pool: for reads whose cost
    /// grows with the data (the administrators' listings).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.reader().await?;
        tokio::task::spawn_blocking(move || f(&conn))
            .await
            .map_err(|e| StoreError::internal(e.to_string()))?
    }

    /// Runs `f` on a pooled read-only connection right here, on the calling task's thread: for
    /// reads of bounded cost, a primary-key lookup or one index range of at most a page. Such a
    /// read takes microseconds and, in WAL mode, never waits for the writer; handing it to the
    /// blocking pool and back cost more than the read (two thread switches).
    async fn read_bounded<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.reader().await?;
        f(&conn)
    }

    async fn reader(&self) -> Result<deadpool::unmanaged::Object<Connection>, StoreError> {
        self.readers
            .get()
            .await
            .map_err(|e| StoreError::unavailable(format!("no free database connection: {e}")))
    }
}

/// Starts the thread that checkpoints the WAL after commits, on a connection of its own; commits
/// nudge it through the returned channel (one pending nudge stands for any number of commits).
/// A passive checkpoint never blocks the writer or a reader: it copies what no reader still
/// needs, and the next one copies the rest.
fn spawn_checkpointer(path: &Path) -> Result<mpsc::SyncSender<()>, String> {
    let conn = Connection::open(path)
        .and_then(|c| c.execute_batch("PRAGMA busy_timeout=5000;").map(|()| c))
        .map_err(|e| format!("cannot open SQLite database: {e}"))?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while nudged.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "a background WAL checkpoint failed");
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        })
        .map_err(|e| format!("cannot start the SQLite checkpoint thread: {e}"))?;
    Ok(nudge)
}

/// One page of `q`'s history, newest first: the user's entries below the cursor, read newest
/// first and filtered here, until the page is full or [`HISTORY_SCAN_ROWS`] entries were looked
/// at.
fn history_page(c: &Connection, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
    if q.below_everything() {
        return Ok(HistoryPage::from_fetched(vec![], q.limit));
    }
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations o \
                 WHERE o.user_id = ?1 AND o.seq < ?2 ORDER BY o.seq DESC LIMIT ?3"
        ))
        .map_err(map_err)?;
    let mut rows = stmt
        .query(params![
            q.user.to_string(),
            q.before_seq
                .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            // One more than the bound: whether anything lies beyond it.
            HISTORY_SCAN_ROWS as i64 + 1,
        ])
        .map_err(map_err)?;
    let wanted = q.limit as usize + 1;
    let mut ops: Vec<Operation> = Vec::with_capacity(wanted.min(HISTORY_SCAN_ROWS));
    let mut looked_at = 0;
    let mut last_seq = 0;
    while let Some(row) = rows.next().map_err(map_err)? {
        if looked_at == HISTORY_SCAN_ROWS {
            // More lies beyond the bound: this page ends below the last entry looked at.
            return Ok(HistoryPage::cut_short(ops, last_seq));
        }
        looked_at += 1;
        // The filter's columns first: decoding a whole operation costs more than twice as much,
        // and a page that matches rarely passes over up to the bound.
        let seq: i64 = row.get(OPERATION_SEQ).map_err(map_err)?;
        last_seq = version_of(seq).map_err(map_err)?;
        let kind = row
            .get_ref(OPERATION_KIND)
            .ok()
            .and_then(|k| k.as_str().ok())
            .and_then(OperationKind::parse)
            .ok_or_else(|| map_err(bad_row("kind")))?;
        let at = Timestamp::from_millis(row.get(OPERATION_CREATED_AT).map_err(map_err)?);
        if q.admits(kind, at) {
            ops.push(operation_from_row(row).map_err(map_err)?);
            if ops.len() == wanted {
                break;
            }
        }
    }
    Ok(HistoryPage::from_fetched(ops, q.limit))
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this build ({SCHEMA_VERSION})"
        )));
    }
    for (index, (sql, then)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        txn.execute_batch(sql)?;
        if let Some(step) = then {
            step(&txn)?;
        }
        txn.execute_batch(&format!("PRAGMA user_version={}", index + 1))?;
        txn.commit()?;
    }
    Ok(())
}

/// Gives every existing user the key of their address, computed in Rust
/// ([`super::email_keys`] says who keeps none).
fn backfill_email_keys(txn: &Connection) -> rusqlite::Result<()> {
    let users: Vec<(String, String)> = txn
        .prepare("SELECT id, email FROM users ORDER BY created_at, id")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set = txn.prepare("UPDATE users SET email_key = ?2 WHERE id = ?1")?;
    for (id, key) in super::email_keys::keys_to_backfill(users) {
        set.execute(params![id, key])?;
    }
    Ok(())
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // A full disk or an I/O error undoes what the statement (or its transaction) did: the
        // request applied nothing and may be retried, which is what `503` says.
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::unavailable(e),
        _ => StoreError::internal(e),
    }
}

fn bad_row(what: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnName(format!("stored {what} is malformed"))
}

fn get_id<T>(row: &Row<'_>, idx: &str, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).ok_or_else(|| bad_row(idx))
}

fn opt_id<T>(
    row: &Row<'_>,
    idx: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse(&t).ok_or_else(|| bad_row(idx)))
        .transpose()
}

fn version_of(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| bad_row("version"))
}

const USER_COLUMNS: &str = "id, username, email, password_hash, is_staff, is_active, created_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    let username: String = row.get("username")?;
    let email: String = row.get("email")?;
    Ok(UserRecord {
        id: get_id(row, "id", UserId::parse)?,
        username: Username::parse(&username).map_err(|_| bad_row("username"))?,
        email: Email::from_stored(&email).map_err(|_| bad_row("email"))?,
        password_hash: row.get("password_hash")?,
        is_staff: row.get("is_staff")?,
        is_active: row.get("is_active")?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
    })
}

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, refresh_jti, user_agent, ip, revoked_at";

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: get_id(row, "id", SessionId::parse)?,
        user: get_id(row, "user_id", UserId::parse)?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
        last_used_at: Timestamp::from_millis(row.get("last_used_at")?),
        expires_at: Timestamp::from_millis(row.get("expires_at")?),
        refresh_jti: get_id(row, "refresh_jti", TokenId::parse)?,
        user_agent: row.get("user_agent")?,
        ip: row.get("ip")?,
        revoked_at: row
            .get::<_, Option<i64>>("revoked_at")?
            .map(Timestamp::from_millis),
    })
}

const OPERATION_COLUMNS: &str = "o.user_id, o.seq, o.id, o.kind, o.amount, o.balance_after, \
     o.counterparty_id, o.counterparty_username, o.transfer_id, o.description, o.created_at";
/// Positions in `OPERATION_COLUMNS` of the columns a history page filters on.
const OPERATION_SEQ: usize = 1;
const OPERATION_KIND: usize = 3;
const OPERATION_CREATED_AT: usize = 10;

fn operation_from_row(row: &Row<'_>) -> rusqlite::Result<Operation> {
    let kind: String = row.get("kind")?;
    let counterparty = match opt_id(row, "counterparty_id", UserId::parse)? {
        Some(id) => Some(Counterparty {
            id,
            username: row.get("counterparty_username")?,
        }),
        None => None,
    };
    Ok(Operation {
        id: get_id(row, "id", OperationId::parse)?,
        user: get_id(row, "user_id", UserId::parse)?,
        seq: version_of(row.get("seq")?)?,
        kind: OperationKind::parse(&kind).ok_or_else(|| bad_row("kind"))?,
        amount: Money::from_minor(row.get("amount")?),
        balance_after: Money::from_minor(row.get("balance_after")?),
        counterparty,
        transfer_id: opt_id(row, "transfer_id", TransferId::parse)?,
        description: row.get("description")?,
        created_at: Timestamp::from_millis(row.get("created_at")?),
    })
}

fn insert_operation(txn: &Connection, op: &Operation) -> Result<(), StoreError> {
    txn.prepare_cached(
        "INSERT INTO operations (user_id, seq, id, kind, amount, balance_after, counterparty_id, \
         counterparty_username, transfer_id, description, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            op.user.to_string(),
            op.seq as i64,
            op.id.to_string(),
            op.kind.as_str(),
            op.amount.minor(),
            op.balance_after.minor(),
            op.counterparty.as_ref().map(|c| c.id.to_string()),
            op.counterparty.as_ref().map(|c| c.username.clone()),
            op.transfer_id.map(|t| t.to_string()),
            op.description,
            op.created_at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// The unexpired record for a key, read inside the caller's transaction or connection.
/// Refuses a movement whose session is not live (`SessionNotLive`) and records its use when due;
/// runs first in the movement's transaction.
fn use_session(
    conn: &Connection,
    user: UserId,
    session: Option<&SessionUse>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let Some(session) = session else {
        return Ok(());
    };
    let last_used: Option<i64> = conn
        .prepare_cached(
            "SELECT last_used_at FROM sessions \
             WHERE id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![session.id.to_string(), user.to_string(), now.millis()],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(map_err)?;
    match last_used {
        None => Err(StoreError::SessionNotLive),
        Some(used) if used < session.touch_before.millis() => {
            conn.prepare_cached("UPDATE sessions SET last_used_at = ?1 WHERE id = ?2")
                .and_then(|mut s| s.execute(params![now.millis(), session.id.to_string()]))
                .map_err(map_err)?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

fn find_idempotent(
    conn: &Connection,
    user: UserId,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotentRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT k.fingerprint, {OPERATION_COLUMNS} FROM idempotency_keys k \
         JOIN operations o ON o.id = k.operation_id \
         WHERE k.user_id = ?1 AND k.key = ?2 AND k.expires_at > ?3"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![user.to_string(), key, now.millis()], |row| {
            Ok(IdempotentRecord {
                fingerprint: RequestFingerprint::from_stored(row.get("fingerprint")?),
                operation: operation_from_row(row)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

fn record_idempotency(
    txn: &Connection,
    user: UserId,
    stamp: &IdempotencyStamp,
    operation: OperationId,
) -> Result<(), StoreError> {
    // An expired record for the same key is replaced: the key may be used afresh.
    txn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (user_id, key, fingerprint, operation_id, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            user.to_string(),
            stamp.key.as_str(),
            stamp.fingerprint.as_str(),
            operation.to_string(),
            stamp.expires_at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// Debits an account when the balance covers the amount; returns (balance_after, version).
fn debit(
    txn: &Connection,
    user: UserId,
    amount: Money,
    now: Timestamp,
) -> Result<(Money, u64), StoreError> {
    let updated = txn
        .prepare_cached(
            "UPDATE accounts SET balance = balance - ?1, version = version + 1, updated_at = ?2 \
             WHERE user_id = ?3 AND balance >= ?1 RETURNING balance, version",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![amount.minor(), now.millis(), user.to_string()],
                |r| Ok((Money::from_minor(r.get(0)?), version_of(r.get(1)?)?)),
            )
            .optional()
        })
        .map_err(map_err)?;
    match updated {
        Some(v) => Ok(v),
        None => match current_balance(txn, user)? {
            Some(balance) => Err(StoreError::InsufficientFunds { balance }),
            None => Err(StoreError::AccountNotFound),
        },
    }
}

/// Credits an account when the result stays under the ceiling; returns (balance_after, version).
fn credit(
    txn: &Connection,
    user: UserId,
    amount: Money,
    now: Timestamp,
) -> Result<(Money, u64), StoreError> {
    let updated = txn
        .prepare_cached(
            "UPDATE accounts SET balance = balance + ?1, version = version + 1, updated_at = ?2 \
             WHERE user_id = ?3 AND balance <= ?4 - ?1 RETURNING balance, version",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    amount.minor(),
                    now.millis(),
                    user.to_string(),
                    Money::MAX_BALANCE.minor()
                ],
                |r| Ok((Money::from_minor(r.get(0)?), version_of(r.get(1)?)?)),
            )
            .optional()
        })
        .map_err(map_err)?;
    match updated {
        Some(v) => Ok(v),
        None => match current_balance(txn, user)? {
            Some(_) => Err(StoreError::BalanceLimitExceeded),
            None => Err(StoreError::AccountNotFound),
        },
    }
}

fn current_balance(conn: &Connection, user: UserId) -> Result<Option<Money>, StoreError> {
    conn.prepare_cached("SELECT balance FROM accounts WHERE user_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([user.to_string()], |r| Ok(Money::from_minor(r.get(0)?)))
                .optional()
        })
        .map_err(map_err)
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (id, actor_id, actor_username, action, target_id, target_username, detail, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            e.id.to_string(),
            e.actor.id.to_string(),
            e.actor.username,
            e.action.as_str(),
            e.target.as_ref().map(|t| t.id.to_string()),
            e.target.as_ref().map(|t| t.username.clone()),
            e.detail,
            e.at.millis(),
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let action: String = row.get("action")?;
    let target = match opt_id(row, "target_id", UserId::parse)? {
        Some(id) => Some(AuditParty {
            id,
            username: row.get("target_username")?,
        }),
        None => None,
    };
    Ok(AuditEntry {
        id: get_id(row, "id", |t| uuid::Uuid::try_parse(t).ok())?,
        actor: AuditParty {
            id: get_id(row, "actor_id", UserId::parse)?,
            username: row.get("actor_username")?,
        },
        action: AuditAction::parse(&action).ok_or_else(|| bad_row("action"))?,
        target,
        detail: row.get("detail")?,
        at: Timestamp::from_millis(row.get("at")?),
    })
}

fn load_user(conn: &Connection, id: UserId) -> Result<Option<UserRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.to_string()], user_from_row).optional())
        .map_err(map_err)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read_bounded(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        let user = user.clone();
        self.write(move |txn| {
            let taken = |sql: &str, value: &str| -> Result<bool, StoreError> {
                txn.prepare_cached(sql)
                    .and_then(|mut s| s.exists([value]))
                    .map_err(map_err)
            };
            // The IMMEDIATE transaction holds the write lock, so these checks cannot race; the
            // UNIQUE constraints stay as the last line of defence.
            if taken(
                "SELECT 1 FROM users WHERE username_key = ?1",
                &user.username.key(),
            )? {
                return Err(StoreError::UsernameTaken);
            }
            let email_key = user.email.key();
            if taken("SELECT 1 FROM users WHERE email_key = ?1", &email_key)? {
                return Err(StoreError::EmailTaken);
            }
            txn.execute(
                "INSERT INTO users (id, username, username_key, email, email_key, password_hash, is_staff, is_active, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)",
                params![
                    user.id.to_string(),
                    user.username.as_str(),
                    user.username.key(),
                    user.email.as_str(),
                    email_key,
                    user.password_hash,
                    user.is_staff,
                    user.now.millis(),
                ],
            )
            .map_err(map_err)?;
            txn.execute(
                "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES (?1, 0, 0, ?2)",
                params![user.id.to_string(), user.now.millis()],
            )
            .map_err(map_err)?;
            Ok(UserRecord {
                id: user.id,
                username: user.username,
                email: user.email,
                password_hash: user.password_hash,
                is_staff: user.is_staff,
                is_active: true,
                created_at: user.now,
            })
        })
        .await
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = username_key.to_owned();
        self.read_bounded(move |c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1"
            ))
            .and_then(|mut s| s.query_row([key], user_from_row).optional())
            .map_err(map_err)
        })
        .await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read_bounded(move |c| {
            c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id.to_string()], user_from_row).optional())
                .map_err(map_err)
        })
        .await
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let s = session.clone();
        self.write(move |txn| {
            let inserted = txn
                .execute(
                    &format!(
                        "INSERT INTO sessions ({SESSION_COLUMNS}) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND is_active)"
                    ),
                    params![
                        s.id.to_string(),
                        s.user.to_string(),
                        s.created_at.millis(),
                        s.last_used_at.millis(),
                        s.expires_at.millis(),
                        s.refresh_jti.to_string(),
                        s.user_agent,
                        s.ip,
                        s.revoked_at.map(Timestamp::millis),
                    ],
                )
                .map_err(map_err)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read_bounded(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND user_id = ?2"
            ))
            .and_then(|mut s| {
                s.query_row([id.to_string(), user.to_string()], session_from_row)
                    .optional()
            })
            .map_err(map_err)
        })
        .await
    }

    async fn rotate_session(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let r = rotation.clone();
        self.write(move |txn| {
            // The session ends at the new token's expiry or its maximum lifetime, whichever
            // comes first (`Rotation::session_end`, computed here from the stored login time).
            let rotated: Option<i64> = txn
                .query_row(
                    "UPDATE sessions SET refresh_jti = ?1, last_used_at = ?2, \
                     expires_at = MIN(?3, created_at + ?7) \
                     WHERE id = ?4 AND user_id = ?6 AND refresh_jti = ?5 AND revoked_at IS NULL \
                     AND expires_at > ?2 AND created_at > ?8 \
                     RETURNING created_at",
                    params![
                        r.next.to_string(),
                        r.now.millis(),
                        r.expires_at.millis(),
                        r.session.to_string(),
                        r.presented.to_string(),
                        r.user.to_string(),
                        r.max_lifetime_seconds.saturating_mul(1000),
                        r.created_after().millis(),
                    ],
                    |row| row.get(0),
                )
                .optional()
                .map_err(map_err)?;
            if let Some(created_at) = rotated {
                return Ok(RotateOutcome::Rotated {
                    created_at: Timestamp::from_millis(created_at),
                });
            }
            let current = txn
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND user_id = ?2"
                    ),
                    [r.session.to_string(), r.user.to_string()],
                    session_from_row,
                )
                .optional()
                .map_err(map_err)?;
            match current {
                // This very rotation already applied (a resend): its fresh token id is current.
                Some(s) if r.admits(&s) && s.refresh_jti == r.next => Ok(RotateOutcome::Rotated {
                    created_at: s.created_at,
                }),
                Some(s) if r.admits(&s) => {
                    // A validly signed token for this session that is not the current one was
                    // spent before: whoever holds it may have stolen it. End the session.
                    txn.execute(
                        "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2",
                        params![r.now.millis(), r.session.to_string()],
                    )
                    .map_err(map_err)?;
                    Ok(RotateOutcome::Reused)
                }
                _ => Ok(RotateOutcome::Inactive),
            }
        })
        .await
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.execute(
                "UPDATE sessions SET last_used_at = ?1 \
                 WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL",
                params![now.millis(), id.to_string(), user.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |txn| {
            let n = txn
                .execute(
                    "UPDATE sessions SET revoked_at = ?1 \
                     WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?1",
                    params![now.millis(), id.to_string(), user.to_string()],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                 ORDER BY created_at DESC, id DESC"
            ))
            .and_then(|mut s| {
                s.query_map(params![user.to_string(), now.millis()], session_from_row)?
                    .collect()
            })
            .map_err(map_err)
        })
        .await
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let key = username_key.to_owned();
        self.write(move |txn| {
            let window_ms = policy.window_seconds * 1000;
            // A bounded batch of rows whose window has passed leaves with each attempt, so
            // made-up usernames cannot grow the table for ever (one index probe when none has).
            txn.prepare_cached(
                "DELETE FROM login_attempts WHERE username_key IN (\
                 SELECT username_key FROM login_attempts WHERE window_start <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    now.millis() - window_ms,
                    EXPIRED_ATTEMPTS_PRUNED as i64
                ])
            })
            .map_err(map_err)?;
            let current: Option<(i64, i64)> = txn
                .query_row(
                    "SELECT attempts, window_start FROM login_attempts WHERE username_key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            let (attempts, start) = match current {
                Some((attempts, start)) if start + window_ms > now.millis() => (attempts, start),
                _ => (0, now.millis()),
            };
            if attempts >= i64::from(policy.max_attempts) {
                let remaining_ms = (start + window_ms - now.millis()).max(0);
                return Ok(Attempt::Limited {
                    retry_after: u64::try_from((remaining_ms + 999) / 1000).unwrap_or(1).max(1),
                });
            }
            txn.execute(
                "INSERT INTO login_attempts (username_key, attempts, window_start) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (username_key) DO UPDATE SET attempts = excluded.attempts, window_start = excluded.window_start",
                params![key, attempts + 1, start],
            )
            .map_err(map_err)?;
            Ok(Attempt::Allowed)
        })
        .await
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        let key = username_key.to_owned();
        self.write(move |txn| {
            txn.execute("DELETE FROM login_attempts WHERE username_key = ?1", [key])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.read_bounded(move |c| {
            c.prepare_cached("SELECT balance, version, updated_at FROM accounts WHERE user_id = ?1")
                .and_then(|mut s| {
                    s.query_row([user.to_string()], |r| {
                        Ok(Account {
                            user,
                            balance: Money::from_minor(r.get(0)?),
                            version: version_of(r.get(1)?)?,
                            updated_at: Timestamp::from_millis(r.get(2)?),
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn apply_change(&self, change: &BalanceChange) -> Result<Applied, StoreError> {
        let c = change.clone();
        self.write(move |txn| {
            use_session(txn, c.user, c.session.as_ref(), c.now)?;
            if let Some(stamp) = &c.idempotency
                && let Some(existing) = find_idempotent(txn, c.user, stamp.key.as_str(), c.now)?
            {
                return Ok(Applied::AlreadyRecorded(existing));
            }
            let (balance_after, version) = match c.kind {
                OperationKind::Deposit => credit(txn, c.user, c.amount, c.now)?,
                OperationKind::Withdrawal => debit(txn, c.user, c.amount, c.now)?,
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
                seq: version,
                kind: c.kind,
                amount: c.amount,
                balance_after,
                counterparty: None,
                transfer_id: None,
                description: c.description.clone(),
                created_at: c.now,
            };
            insert_operation(txn, &op)?;
            if let Some(stamp) = &c.idempotency {
                record_idempotency(txn, c.user, stamp, op.id)?;
            }
            Ok(Applied::Done(op))
        })
        .await
    }

    async fn transfer(&self, transfer: &TransferCommand) -> Result<Applied, StoreError> {
        let t = transfer.clone();
        self.write(move |txn| {
            use_session(txn, t.from, t.session.as_ref(), t.now)?;
            if let Some(stamp) = &t.idempotency
                && let Some(existing) = find_idempotent(txn, t.from, stamp.key.as_str(), t.now)?
            {
                return Ok(Applied::AlreadyRecorded(existing));
            }
            let recipient: Option<(String, String, bool)> = txn
                .prepare_cached("SELECT id, username, is_active FROM users WHERE username_key = ?1")
                .and_then(|mut s| {
                    s.query_row([&t.to_username_key], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()
                })
                .map_err(map_err)?;
            let (recipient_id, recipient_name) = match recipient {
                Some((id, name, true)) => (
                    UserId::parse(&id).ok_or_else(|| StoreError::internal(bad_row("id")))?,
                    name,
                ),
                _ => return Err(StoreError::RecipientNotFound),
            };
            if recipient_id == t.from {
                return Err(StoreError::SelfTransfer);
            }
            let sender_name: String = txn
                .prepare_cached("SELECT username FROM users WHERE id = ?1")
                .and_then(|mut s| s.query_row([t.from.to_string()], |r| r.get(0)).optional())
                .map_err(map_err)?
                .ok_or(StoreError::AccountNotFound)?;
            let (sender_after, sender_version) = debit(txn, t.from, t.amount, t.now)?;
            let (recipient_after, recipient_version) = credit(txn, recipient_id, t.amount, t.now)?;
            let out = Operation {
                id: t.out_operation_id,
                user: t.from,
                seq: sender_version,
                kind: OperationKind::TransferOut,
                amount: t.amount,
                balance_after: sender_after,
                counterparty: Some(Counterparty {
                    id: recipient_id,
                    username: recipient_name,
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: t.now,
            };
            let incoming = Operation {
                id: t.in_operation_id,
                user: recipient_id,
                seq: recipient_version,
                kind: OperationKind::TransferIn,
                amount: t.amount,
                balance_after: recipient_after,
                counterparty: Some(Counterparty {
                    id: t.from,
                    username: sender_name,
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: t.now,
            };
            insert_operation(txn, &out)?;
            insert_operation(txn, &incoming)?;
            if let Some(stamp) = &t.idempotency {
                record_idempotency(txn, t.from, stamp, out.id)?;
            }
            Ok(Applied::Done(out))
        })
        .await
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let key = key.as_str().to_owned();
        self.read_bounded(move |c| find_idempotent(c, user, &key, now))
            .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.read_bounded(|c| history_page(c, query)).await
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        let q = q.clone();
        self.read(move |c| {
            let mut rows: Vec<(UserSummary, String)> = c
                .prepare_cached(
                    "SELECT u.id, u.username, u.email, u.password_hash, u.is_staff, u.is_active, \
                     u.created_at, u.username_key, a.balance \
                     FROM users u JOIN accounts a ON a.user_id = u.id \
                     WHERE u.username_key > ?1 \
                     AND (?2 IS NULL OR instr(u.username_key, ?2) > 0 OR instr(u.email, ?2) > 0) \
                     ORDER BY u.username_key LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            q.after.clone().unwrap_or_default(),
                            q.search,
                            i64::from(q.limit) + 1
                        ],
                        |row| {
                            Ok((
                                UserSummary {
                                    user: user_from_row(row)?,
                                    balance: Money::from_minor(row.get("balance")?),
                                },
                                row.get::<_, String>("username_key")?,
                            ))
                        },
                    )?
                    .collect()
                })
                .map_err(map_err)?;
            let next_after = if rows.len() > q.limit as usize {
                rows.truncate(q.limit as usize);
                rows.last().map(|(_, key)| key.clone())
            } else {
                None
            };
            Ok(UserPage {
                users: rows.into_iter().map(|(u, _)| u).collect(),
                next_after,
            })
        })
        .await
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let change = change.clone();
        self.write(move |txn| {
            let updated = txn
                .execute(
                    "UPDATE users SET is_active = ?1 WHERE id = ?2",
                    params![change.active, change.user.to_string()],
                )
                .map_err(map_err)?;
            if updated == 0 {
                return Ok(None);
            }
            if !change.active {
                txn.execute(
                    "UPDATE sessions SET revoked_at = ?1 WHERE user_id = ?2 AND revoked_at IS NULL",
                    params![change.now.millis(), change.user.to_string()],
                )
                .map_err(map_err)?;
            }
            insert_audit(txn, &change.audit)?;
            load_user(txn, change.user)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.write(move |txn| insert_audit(txn, &entry)).await
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
        self.read(move |c| {
            let mut rows: Vec<(AuditEntry, i64)> = c
                .prepare_cached(
                    "SELECT seq, id, actor_id, actor_username, action, target_id, target_username, detail, at \
                     FROM audit_log WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![before, i64::from(limit) + 1], |row| {
                        Ok((audit_from_row(row)?, row.get("seq")?))
                    })?
                    .collect()
                })
                .map_err(map_err)?;
            let next_before = if rows.len() > limit as usize {
                rows.truncate(limit as usize);
                rows.last().map(|(_, seq)| seq.to_be_bytes().to_vec())
            } else {
                None
            };
            Ok(AuditPage {
                entries: rows.into_iter().map(|(e, _)| e).collect(),
                next_before,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_positions_name_their_columns() {
        let columns: Vec<&str> = OPERATION_COLUMNS.split(", ").collect();
        assert_eq!(columns[OPERATION_SEQ], "o.seq");
        assert_eq!(columns[OPERATION_KIND], "o.kind");
        assert_eq!(columns[OPERATION_CREATED_AT], "o.created_at");
    }
}
