//! Faults injected into a group of deposits on a real store: whatever SQLite does with the
//! failing statement or commit, every deposit's answer matches the database afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use rusqlite::ffi;
use rusqlite::functions::FunctionFlags;

use super::super::{SqliteStore, map_err};
use super::{commit_group, job};
use crate::domain::{ChangeKind, Email, Money, OperationId, Timestamp, UserId, Username};
use crate::store::{Applied, BalanceChange, HistoryQuery, NewUser, Store, StoreError};

/// Deposits in the faulty group; deposit `k` is of `amount(k)` minor units.
const JOBS: usize = 5;

fn amount(k: usize) -> i64 {
    (k as i64 + 1) * 100
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Deposit `k`'s operation insert fails with this SQLite result code.
    Job(usize, i32),
    /// The group's COMMIT fails (a commit hook turns it into a rollback).
    Commit,
}

/// What the group's answers were: per deposit, applied or not.
struct Outcome {
    applied: Vec<bool>,
}

/// Runs `JOBS` deposits as one group on a fresh store with `fault` injected, checks that each
/// deposit's answer matches the balance and the history afterwards, and that the store goes on
/// working; returns which deposits were applied.
async fn group_with(fault: Fault) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_with(dir.path().join("test.db"), 64)
            .await
            .unwrap(),
    );
    let user = UserId::new();
    store
        .create_user(&NewUser {
            id: user,
            username: Username::parse("alice").unwrap(),
            email: Email::parse("alice@example.com").unwrap(),
            password_hash: "$argon2id$not-a-real-hash".into(),
            is_staff: false,
            now: Timestamp::now(),
        })
        .await
        .unwrap();

    // The fault, installed on the writer's own connection: a trigger on the operations table
    // calls a function that fails with the given code for one amount (SQLite then does with
    // the statement and its transaction whatever it does for that code), and a commit hook
    // that turns the n-th commit from when it is armed into a rollback.
    let failing = match fault {
        Fault::Job(k, code) => Some((amount(k), code)),
        Fault::Commit => None,
    };
    let commits_until_fault = Arc::new(AtomicUsize::new(0));
    let countdown = Arc::clone(&commits_until_fault);
    store
        .write(move |conn| {
            conn.create_scalar_function(
                "lighttech_test_fault",
                1,
                FunctionFlags::SQLITE_UTF8,
                move |ctx| {
                    let amount: i64 = ctx.get(0)?;
                    match failing {
                        // No message: rusqlite would report the error as a plain SQLITE_ERROR.
                        Some((a, code)) if a == amount => {
                            Err(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
                        }
                        _ => Ok(false),
                    }
                },
            )
            .map_err(map_err)?;
            conn.execute_batch(
                "CREATE TEMP TRIGGER lighttech_test_fault AFTER INSERT ON main.operations \
                 WHEN lighttech_test_fault(NEW.amount) BEGIN SELECT 1; END",
            )
            .map_err(map_err)?;
            conn.commit_hook(Some(move || {
                countdown
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok_and(|n| n == 1)
            }))
            .map_err(map_err)?;
            Ok(())
        })
        .await
        .unwrap();

    // Hold the writer with one job until every deposit waits in its queue, so that they all
    // run as the next group.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .write(move |_| {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                    Ok(())
                })
                .await
        })
    };
    started_rx.await.unwrap();
    if matches!(fault, Fault::Commit) {
        // The holder's commit passes; the deposits' commit fails.
        commits_until_fault.store(2, Ordering::SeqCst);
    }
    let changes: Vec<BalanceChange> = (0..JOBS)
        .map(|k| BalanceChange {
            user,
            kind: ChangeKind::Deposit,
            amount: Money::from_minor(amount(k)),
            description: None,
            operation_id: OperationId::new(),
            now: Timestamp::now(),
            idempotency: None,
            session: None,
        })
        .collect();
    let mut deposits: Vec<_> = changes.iter().map(|c| store.apply_change(c)).collect();
    // One poll each puts each job in the queue, in order.
    std::future::poll_fn(|cx| {
        for d in &mut deposits {
            assert!(d.as_mut().poll(cx).is_pending(), "the writer is held");
        }
        Poll::Ready(())
    })
    .await;
    release_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let mut results = Vec::new();
    for d in deposits {
        results.push(d.await);
    }

    // Every answer matches the database.
    let account = store.account(user).await.unwrap().unwrap();
    let history = store
        .history(&HistoryQuery {
            user,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: None,
            until: None,
        })
        .await
        .unwrap();
    let mut applied = Vec::new();
    for (k, (change, result)) in changes.iter().zip(&results).enumerate() {
        let recorded = history
            .operations
            .iter()
            .find(|o| o.id == change.operation_id);
        match result {
            Ok(Applied::Done(op)) => {
                assert_eq!(recorded, Some(op), "{fault:?}: deposit {k} told applied");
                applied.push(true);
            }
            Ok(other) => panic!("{fault:?}: deposit {k}: {other:?}"),
            Err(e) => {
                assert!(
                    recorded.is_none(),
                    "{fault:?}: deposit {k} told {e:?}, but it is in the history"
                );
                applied.push(false);
            }
        }
    }
    let total: i64 = (0..JOBS).filter(|&k| applied[k]).map(amount).sum();
    let count = applied.iter().filter(|&&a| a).count();
    assert_eq!(
        account.balance,
        Money::from_minor(total),
        "{fault:?}: balance"
    );
    assert_eq!(account.version, count as u64, "{fault:?}: version");
    assert_eq!(history.operations.len(), count, "{fault:?}: history");
    // A deposit told it failed was told it is safe to retry (`503`), unless the failure was its
    // own statement's, with an error that says nothing about the store's health.
    for (k, result) in results.iter().enumerate() {
        if let Err(e) = result
            && !matches!(fault, Fault::Job(j, ffi::SQLITE_CONSTRAINT_CHECK) if j == k)
        {
            assert!(
                matches!(e, StoreError::Unavailable(_)),
                "{fault:?}: {k}: {e:?}"
            );
        }
    }

    // The writer goes on.
    let after = BalanceChange {
        operation_id: OperationId::new(),
        amount: Money::from_minor(1),
        ..changes[0].clone()
    };
    assert!(matches!(
        store.apply_change(&after).await,
        Ok(Applied::Done(_))
    ));
    assert_eq!(
        store.account(user).await.unwrap().unwrap().balance,
        Money::from_minor(total + 1)
    );
    Outcome { applied }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_mid_group_fails_exactly_the_writes_it_undid() {
    // SQLite rolls the whole transaction back on an I/O error: every deposit run in it so far
    // is undone and told so; the ones after it run in a transaction of their own.
    for k in [0, JOBS / 2, JOBS - 1] {
        let outcome = group_with(Fault::Job(k, ffi::SQLITE_IOERR_WRITE)).await;
        let expected: Vec<bool> = (0..JOBS).map(|j| j > k).collect();
        assert_eq!(outcome.applied, expected, "I/O error at deposit {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_mid_group_leaves_every_answer_true() {
    // Whether SQLite undoes the statement or the whole transaction, the deposit that met the
    // full disk is not applied and those after it are.
    for k in [0, JOBS / 2, JOBS - 1] {
        let outcome = group_with(Fault::Job(k, ffi::SQLITE_FULL)).await;
        assert!(!outcome.applied[k], "full disk at deposit {k}");
        assert!(outcome.applied[k + 1..].iter().all(|&a| a), "after {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statement_fails_only_its_own_write() {
    // An error SQLite answers by undoing the statement alone: the savepoint takes care of it.
    for k in [0, JOBS / 2, JOBS - 1] {
        let outcome = group_with(Fault::Job(k, ffi::SQLITE_CONSTRAINT_CHECK)).await;
        let expected: Vec<bool> = (0..JOBS).map(|j| j != k).collect();
        assert_eq!(
            outcome.applied, expected,
            "failing statement at deposit {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_applies_nothing_and_says_so() {
    let outcome = group_with(Fault::Commit).await;
    assert_eq!(outcome.applied, vec![false; JOBS]);
}

#[test]
fn a_savepoint_that_cannot_be_closed_abandons_its_transaction() {
    // A job that releases its own savepoint leaves it impossible to close: what the
    // transaction then holds is not what the answers would say, so it is rolled back.
    let dir = tempfile::tempdir().unwrap();
    let mut conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
    let insert = |n: i64| {
        job(move |c| {
            c.execute("INSERT INTO t VALUES (?1)", [n])
                .map_err(map_err)?;
            Ok(n)
        })
    };
    let (first, first_answer) = insert(1);
    let (rogue, rogue_answer) = job(|c| {
        c.execute("INSERT INTO t VALUES (2)", []).map_err(map_err)?;
        c.execute_batch("RELEASE primitive").map_err(map_err)?;
        Ok(2)
    });
    let (last, last_answer) = insert(3);
    commit_group(&mut conn, vec![first, rogue, last]);
    let unavailable = |r: Result<i64, StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    assert!(unavailable(first_answer.blocking_recv().unwrap()));
    assert!(unavailable(rogue_answer.blocking_recv().unwrap()));
    assert_eq!(last_answer.blocking_recv().unwrap().unwrap(), 3);
    let rows: Vec<i64> = conn
        .prepare("SELECT n FROM t ORDER BY n")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [3]);
}
