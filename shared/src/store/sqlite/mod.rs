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
//! automatic threshold, where every write waiting behind that commit would wait for the
//! checkpoint too. Commits are exactly as durable either way: a commit is synced to the WAL before it is
//! answered, and a checkpoint only moves what the WAL already holds.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{self, Connection, ErrorCode, OptionalExtension, Row, named_params, params};
use tokio::sync::oneshot;

mod files;
mod group;
mod history;
mod rows;
mod schema;
mod steps;
mod store;

use self::group::{Job, commit_group};
use self::history::*;
use self::rows::*;
use self::schema::*;
use self::steps::*;
use super::backend::*;

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

    /// At most one row of a bounded lookup, read by `from_row`: the shape of every point read.
    async fn query_opt<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params + Send,
        from_row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T> + Send,
    ) -> Result<Option<T>, StoreError> {
        self.read_bounded(|c| {
            c.prepare_cached(sql)
                .and_then(|mut s| s.query_row(params, from_row).optional())
                .map_err(map_err)
        })
        .await
    }

    /// One statement, written on its own; the number of rows it changed.
    async fn execute(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params + Send + 'static,
    ) -> Result<usize, StoreError> {
        self.write(move |txn| txn.execute(sql, params).map_err(map_err))
            .await
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
