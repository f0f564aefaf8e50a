//! Group commit: the writer thread runs every primitive waiting in its queue (up to a bound) in
//! one `BEGIN IMMEDIATE` transaction, each in a savepoint of its own, commits once, and only
//! then answers them all.
//!
//! An answer must say exactly what happened to that primitive. A primitive that fails rolls back
//! to its savepoint and leaves the others alone. But SQLite answers some failures of a statement
//! (an I/O error, a full disk, an interrupt) by rolling back the whole transaction, not just the
//! statement: every primitive run in it so far is undone, whatever it was told, and a statement
//! run after that would open a transaction of its own and commit alone. So the group checks the
//! transaction after each primitive. Once it is gone, or a savepoint could not be closed (what
//! the transaction holds is then unknown, so it is rolled back), the primitives run in it are
//! told it failed — none of their changes is in the database — and the rest of the group, which
//! never ran, goes on in a fresh transaction.

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::map_err;
use crate::store::StoreError;

/// Delivers a primitive's result once its transaction is committed (or failed to commit).
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A primitive, run inside the group's transaction.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// What running a primitive left behind.
pub(super) struct Ran {
    /// Delivers its result once its transaction's fate is known.
    complete: Completion,
    /// Its savepoint was closed (released, or rolled back to): the transaction holds exactly
    /// the changes of the primitives that succeeded. When `false` it must not commit.
    settled: bool,
}

/// Wraps `f` as a job for the writer, and the receiver of its answer. `f` runs in a savepoint of
/// its own inside the group's transaction; its changes are kept on `Ok`, undone on `Err`, and
/// its result is delivered once the transaction's fate is known: committed, or `Unavailable`
/// with nothing of it applied. A job dropped without running drops the sender instead.
pub(super) fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let (result, settled) = in_savepoint(conn, f);
        Ran {
            complete: Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.and(result));
            }),
            settled,
        }
    });
    (job, rx)
}

/// Runs `f` between `SAVEPOINT` and `RELEASE`, rolling back to the savepoint when it fails.
/// The flag says whether the savepoint was closed (see [`Ran::settled`]).
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    // Outside a transaction a savepoint would open one of its own, which its RELEASE commits:
    // a primitive never runs outside its group's transaction.
    if conn.is_autocommit() {
        return (
            Err(StoreError::unavailable("no write transaction is open")),
            true,
        );
    }
    if let Err(e) = conn.execute_batch("SAVEPOINT primitive") {
        // Nothing of this primitive ran; the transaction is as it was, or gone.
        return (Err(map_err(e)), true);
    }
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE primitive"
    } else {
        "ROLLBACK TO primitive; RELEASE primitive"
    };
    match conn.execute_batch(end) {
        Ok(()) => (result, true),
        // The usual cause: SQLite rolled the whole transaction back, savepoints and all. If it
        // is still open, whether it holds this primitive's changes is unknown.
        Err(e) => (Err(map_err(e)), conn.is_autocommit()),
    }
}

/// Runs a group of primitives and delivers every result after its transaction's commit (or
/// failure): as many transactions as it takes, each picking up where a lost one stopped.
pub(super) fn commit_group(conn: &mut Connection, group: Vec<Job>) {
    let mut pending = group.into_iter();
    while pending.len() > 0 {
        commit_some(conn, &mut pending);
    }
}

/// Runs pending jobs in one transaction until none is left or the transaction is lost, then
/// commits it (unless lost) and delivers the results of the jobs that ran in it.
fn commit_some(conn: &mut Connection, pending: &mut std::vec::IntoIter<Job>) {
    if !conn.is_autocommit() {
        // Left open by a rollback that failed before: BEGIN would fail for ever after.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "cannot roll back a write transaction left open");
        }
    }
    let txn = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(txn) => txn,
        Err(e) => {
            // None of the jobs ran; dropping them tells each waiting request (as `503`).
            tracing::error!(error = %e, "cannot begin a write transaction");
            pending.for_each(drop);
            return;
        }
    };
    let mut completions: Vec<Completion> = Vec::new();
    let mut lost = false;
    for job in pending.by_ref() {
        let ran = job(&txn);
        completions.push(ran.complete);
        if !ran.settled || txn.is_autocommit() {
            lost = true;
            break;
        }
    }
    let committed = if lost {
        tracing::error!(
            writes = completions.len(),
            "a group's transaction was rolled back mid-group; none of the writes run in it was \
             applied"
        );
        // Still open when a savepoint could not be closed: roll it back (on drop).
        drop(txn);
        Err(StoreError::unavailable(
            "the write transaction was rolled back",
        ))
    } else {
        txn.commit().map_err(|e| {
            tracing::error!(error = %e, "a group commit failed; nothing in it was applied");
            map_err(e)
        })
    };
    for complete in completions {
        let outcome = match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::unavailable(e.to_string())),
        };
        complete(outcome);
    }
}

#[cfg(test)]
mod tests;
