//! The PostgreSQL store against the machine's real server (a fresh database per test): the
//! conformance and API suites, plus migrations and the local server on PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use lighttech::domain::{ChangeKind, Money, OperationId, SessionId, Timestamp, TransferId, UserId};
use lighttech::store::postgres::PgStore;
use lighttech::store::{
    Applied, AuditAction, AuditEntry, AuditParty, BalanceChange, SessionUse, StatusChange, Store,
    StoreError, TransferCommand, UserRecord,
};
use lighttech::{App, StartOptions};
use lighttech_tests::wire::{Server, request};
use lighttech_tests::{
    PASSWORD, PgDatabase, conformance, conformance_user, postgres_fixture, test_config,
};
use rand::RngExt;
use serde_json::json;

lighttech_tests::store_conformance_suite!(postgres_fixture);
lighttech_tests::api_suite!(postgres_fixture);

mod hot_recipient;

fn options(init: bool) -> StartOptions {
    StartOptions {
        init,
        generate_key: false,
        check_store: true,
    }
}

#[tokio::test]
async fn an_empty_or_outdated_schema_stops_the_start_until_init_migrates_it() {
    let db = PgDatabase::create().await;
    let config = test_config(&[("DATABASE_URL", db.url.as_str())]);
    let err = App::start_with(config.clone(), options(false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 0"), "{err}");
    assert!(err.contains("--init"), "{err}");
    App::start_with(config.clone(), options(true))
        .await
        .unwrap();
    // Migrating again is a no-op; a normal start now passes the check.
    App::start_with(config.clone(), options(true))
        .await
        .unwrap();
    App::start_with(config, options(false)).await.unwrap();
    let store = PgStore::connect(&db.url).unwrap();
    assert_eq!(
        store.schema_version().await.unwrap(),
        PgStore::required_version()
    );
}

#[tokio::test]
async fn a_newer_schema_stops_the_start() {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url).unwrap();
    store.migrate().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO lighttech_schema (version) VALUES (99)")
        .await
        .unwrap();
    let text = lighttech::telemetry::error_chain(&store.check_schema().await.unwrap_err());
    assert!(text.contains("newer than this build"), "{text}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_start_up_error() {
    // Port 1 on loopback: nothing listens there.
    let config = test_config(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")]);
    let err = App::start_with(config, options(false))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("store: "), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_on_postgres_keeps_everything_across_a_restart() {
    let db = PgDatabase::create().await;
    let config = test_config(&[("DATABASE_URL", db.url.as_str())]);
    let server = Server::spawn(Arc::new(
        App::start_with(config.clone(), options(true))
            .await
            .unwrap(),
    ))
    .await;
    let addr = server.addr;
    let json_ct = ("Content-Type", "application/json");
    for name in ["alice", "bob"] {
        let body =
            json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
        let r = request(
            addr,
            "POST",
            "/api/auth/v1/register/",
            &[json_ct],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let login = json!({"username": "alice", "password": PASSWORD});
    let r = request(
        addr,
        "POST",
        "/api/auth/v1/login/",
        &[json_ct],
        login.to_string().as_bytes(),
    )
    .await;
    let auth = format!("Bearer {}", r.json()["access"].as_str().unwrap());
    let with_key = [
        json_ct,
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", "k1"),
    ];
    let first = request(
        addr,
        "POST",
        "/api/balance/v1/deposit/",
        &with_key,
        br#"{"amount": 40}"#,
    )
    .await;
    let again = request(
        addr,
        "POST",
        "/api/balance/v1/deposit/",
        &with_key,
        br#"{"amount": "40.00"}"#,
    )
    .await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(first.body, again.body);
    let r = request(
        addr,
        "POST",
        "/api/balance/v1/transfer/",
        &[json_ct, ("Authorization", auth.as_str())],
        br#"{"to": "Bob", "amount": "15.50"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    server.stop().await;

    let server = Server::spawn(Arc::new(
        App::start_with(config, options(false)).await.unwrap(),
    ))
    .await;
    let r = request(
        server.addr,
        "GET",
        "/api/balance/v1/",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["balance"], "24.50");
    server.stop().await;
}

/// Opposite transfers between the same two accounts, racing, plus random ones across all
/// accounts: with READ COMMITTED and the ordered row locks they queue, so no transfer meets a
/// serialization failure or a deadlock (the store counts every one it retries), and money is
/// conserved. The database's default isolation is SERIALIZABLE here, which would turn the same
/// contention into serialization failures: the store must set READ COMMITTED itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contended_opposite_transfers_conserve_money_without_serialization_failures() {
    let db = PgDatabase::create().await;
    let (admin, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
            db.name
        ))
        .await
        .unwrap();
    // A plain new connection now gets SERIALIZABLE.
    let (plain, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let isolation: String = plain
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "serializable");

    let pg = Arc::new(PgStore::connect(&db.url).unwrap());
    pg.migrate().await.unwrap();
    let store: Arc<dyn Store> = pg.clone();
    const OPENING: i64 = 50_000;
    let names = ["acc0", "acc1", "acc2", "acc3", "acc4", "acc5"];
    let mut ids: Vec<UserId> = Vec::new();
    for name in names {
        let id = conformance_user(&store, name).await;
        let opening = BalanceChange {
            user: id,
            kind: ChangeKind::Deposit,
            amount: Money::from_minor(OPENING),
            description: None,
            operation_id: OperationId::new(),
            now: Timestamp::now(),
            idempotency: None,
            session: None,
        };
        assert!(matches!(
            store.apply_change(&opening).await.unwrap(),
            Applied::Done(_)
        ));
        ids.push(id);
    }

    const WORKERS: usize = 16;
    const TRANSFERS: usize = 50;
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let store = Arc::clone(&store);
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = lighttech_tests::seeded_rng("postgres_transfers", worker as u64);
            let (mut done, mut refused) = (0u32, 0u32);
            for _ in 0..TRANSFERS {
                // Workers 0-7 hammer two pairs of accounts in both directions (0<->1, 2<->3);
                // the rest pick any two accounts.
                let (from, to) = if worker < 8 {
                    let pair = 2 * ((worker / 2) % 2);
                    if worker % 2 == 0 {
                        (pair, pair + 1)
                    } else {
                        (pair + 1, pair)
                    }
                } else {
                    let from = rng.random_range(0..ids.len());
                    (from, (from + rng.random_range(1..ids.len())) % ids.len())
                };
                let transfer = TransferCommand {
                    from: ids[from],
                    to_username_key: names[to].to_owned(),
                    amount: Money::from_minor(rng.random_range(1..=3_000)),
                    description: None,
                    transfer_id: TransferId::new(),
                    out_operation_id: OperationId::new(),
                    in_operation_id: OperationId::new(),
                    now: Timestamp::now(),
                    idempotency: None,
                    session: None,
                };
                match store.transfer(&transfer).await {
                    Ok(Applied::Done(_)) => done += 1,
                    Err(StoreError::InsufficientFunds { .. }) => refused += 1,
                    other => panic!("worker {worker}: {other:?}"),
                }
            }
            (done, refused)
        }));
    }
    let (mut done, mut refused) = (0u32, 0u32);
    for task in tasks {
        let (d, r) = task.await.unwrap();
        done += d;
        refused += r;
    }
    assert_eq!((done + refused) as usize, WORKERS * TRANSFERS);

    let mut total = 0;
    let mut sides: HashMap<TransferId, u32> = HashMap::new();
    for id in &ids {
        let balance = store.account(*id).await.unwrap().unwrap().balance.minor();
        assert!(balance >= 0, "a negative balance: {balance}");
        total += balance;
        // Contiguous sequence, each balance_after from the one before, the newest the balance.
        lighttech_tests::conformance::assert_ledger_consistent(&store, *id).await;
        for op in lighttech_tests::conformance::all_history(&store, *id).await {
            if let Some(t) = op.transfer_id {
                *sides.entry(t).or_default() += 1;
            }
        }
    }
    assert_eq!(
        total,
        OPENING * names.len() as i64,
        "money was created or destroyed"
    );
    assert_eq!(
        sides.len(),
        done as usize,
        "one transfer id per applied transfer"
    );
    assert!(
        sides.values().all(|n| *n == 2),
        "a transfer has one side only"
    );
    assert_eq!(
        pg.serialization_failures(),
        0,
        "serialization failures or deadlocks were retried"
    );
    eprintln!(
        "postgres contention: {done} transfers applied, {refused} refused for funds, total {total} \
         conserved, 0 serialization failures or deadlocks"
    );
}

/// A staff member's status change of `target`, with its audit entry.
fn status_change(staff: &UserRecord, target: &UserRecord, active: bool) -> StatusChange {
    let party = |u: &UserRecord| AuditParty {
        id: u.id,
        username: u.username.to_string(),
    };
    StatusChange {
        user: target.id,
        active,
        now: Timestamp::now(),
        audit: AuditEntry {
            id: uuid::Uuid::new_v4(),
            actor: party(staff),
            action: if active {
                AuditAction::Reactivate
            } else {
                AuditAction::Deactivate
            },
            target: Some(party(target)),
            detail: None,
            at: Timestamp::now(),
        },
    }
}

fn transfer_command(
    from: UserId,
    to: &str,
    minor: i64,
    session: Option<SessionId>,
) -> TransferCommand {
    TransferCommand {
        from,
        to_username_key: to.to_owned(),
        amount: Money::from_minor(minor),
        description: None,
        transfer_id: TransferId::new(),
        out_operation_id: OperationId::new(),
        in_operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: session.map(|id| SessionUse {
            id,
            touch_before: Timestamp::now(),
        }),
    }
}

/// Backends of this test's database waiting for a row lock.
async fn lock_waiters(monitor: &tokio_postgres::Client) -> i64 {
    monitor
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls `done` every 10 ms for up to ten seconds.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The recipient's active flag is read under a lock that a deactivation must wait for. A
/// transfer to bob has read bob's user row and is held up on bob's account row (locked here by
/// a transaction of the test's own) when bob is deactivated. Either the deactivation waits for
/// the transfer, which then commits its credit before bob is inactive, or the deactivation
/// commits first and the transfer, going on afterwards, must refuse the credit. Reading the flag
/// without a lock, the transfer credited bob after his deactivation had committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_in_flight_never_credits_a_recipient_whose_deactivation_committed_first() {
    let db = PgDatabase::create().await;
    let pg = Arc::new(PgStore::connect(&db.url).unwrap());
    pg.migrate().await.unwrap();
    let store: Arc<dyn Store> = pg.clone();
    let root = conformance::create_user(&store, "root").await;
    let alice = conformance::create_user(&store, "alice").await;
    let bob = conformance::create_user(&store, "bob").await;
    conformance::deposit(&store, alice.id, 10_000).await;

    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let monitor = connect().await;
    let mut holder = connect().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE",
        &[&bob.id.0],
    )
    .await
    .unwrap();

    let transfer = tokio::spawn({
        let store = Arc::clone(&store);
        let command = transfer_command(alice.id, "bob", 2_500, None);
        async move { store.transfer(&command).await }
    });
    eventually("the transfer waits for bob's account row", async || {
        lock_waiters(&monitor).await == 1
    })
    .await;

    let deactivation = tokio::spawn({
        let store = Arc::clone(&store);
        let change = status_change(&root, &bob, false);
        async move { store.set_user_active(&change).await }
    });
    // The deactivation either commits (nothing in its way) or waits for the transfer.
    eventually("the deactivation commits or waits", async || {
        deactivation.is_finished() || lock_waiters(&monitor).await == 2
    })
    .await;
    let deactivated_first = deactivation.is_finished();
    hold.commit().await.unwrap();

    let transferred = transfer.await.unwrap();
    let deactivated = deactivation.await.unwrap().unwrap().unwrap();
    assert!(!deactivated.is_active);
    let bob_balance = store
        .account(bob.id)
        .await
        .unwrap()
        .unwrap()
        .balance
        .minor();
    if deactivated_first {
        assert!(
            matches!(transferred, Err(StoreError::RecipientNotFound)),
            "bob's deactivation had committed, yet the transfer went on to: {transferred:?}"
        );
        assert_eq!(bob_balance, 0, "bob was credited after his deactivation");
    } else {
        assert!(
            matches!(transferred, Ok(Applied::Done(_))),
            "{transferred:?}"
        );
        assert_eq!(bob_balance, 2_500);
    }
    conformance::assert_ledger_consistent(&store, bob.id).await;
    conformance::assert_ledger_consistent(&store, alice.id).await;
    // From now on, bob is no recipient at all.
    assert!(matches!(
        store
            .transfer(&transfer_command(alice.id, "bob", 100, None))
            .await,
        Err(StoreError::RecipientNotFound)
    ));
}

/// Transfers in both directions, each under a live session, racing the deactivations of both
/// parties. A deactivation locks the user row and then the user's sessions; a transfer takes its
/// recipient's user row before its own session, so no set of these transactions can wait in a
/// circle: nothing deadlocks (the store counts every deadlock it retries) and money is
/// conserved. With the recipient's row taken after the session instead, this test met
/// deadlocks in every one of several runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_racing_the_deactivation_of_both_parties_never_deadlock() {
    let pg = race_transfers_and_deactivations(2, 150).await;
    assert_eq!(pg.batched_transfers(), 0, "two at a time each run alone");
}

/// The same race with four transfers each way per round: those past the store's two in flight
/// per recipient go to the database as batches (migration 10), which take the recipient's user
/// row, the accounts and then the senders' sessions in the same order: still no deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_transfers_racing_the_deactivation_of_both_parties_never_deadlock() {
    let pg = race_transfers_and_deactivations(4, 100).await;
    assert!(pg.batched_transfers() > 0, "no transfer was batched");
}

/// `rounds` rounds of `per_direction` transfers from alice to bob and as many back, each under
/// a live session, racing the deactivation of both; the store, for its counters.
async fn race_transfers_and_deactivations(per_direction: usize, rounds: usize) -> Arc<PgStore> {
    let db = PgDatabase::create().await;
    let pg = Arc::new(PgStore::connect(&db.url).unwrap());
    pg.migrate().await.unwrap();
    let store: Arc<dyn Store> = pg.clone();
    let root = conformance::create_user(&store, "root").await;
    let alice = conformance::create_user(&store, "alice").await;
    let bob = conformance::create_user(&store, "bob").await;
    const OPENING: i64 = 1_000_000;
    for user in [&alice, &bob] {
        conformance::deposit(&store, user.id, OPENING).await;
    }
    let (mut done, mut refused) = (0u32, 0u32);
    for _ in 0..rounds {
        let mut sessions = Vec::new();
        for user in [&alice, &bob] {
            let session = conformance::session(user.id, Timestamp::now());
            assert!(store.create_session(&session).await.unwrap());
            sessions.push(session.id);
        }
        let directions = [
            (alice.id, "bob", sessions[0]),
            (bob.id, "alice", sessions[1]),
        ];
        let transfers: Vec<_> = (0..per_direction)
            .flat_map(|_| directions)
            .map(|(from, to, session)| {
                let store = Arc::clone(&store);
                let command = transfer_command(from, to, 100, Some(session));
                tokio::spawn(async move { store.transfer(&command).await })
            })
            .collect();
        let deactivations = [&alice, &bob].map(|user| {
            let store = Arc::clone(&store);
            let change = status_change(&root, user, false);
            tokio::spawn(async move { store.set_user_active(&change).await })
        });
        for transfer in transfers {
            match transfer.await.unwrap() {
                Ok(Applied::Done(_)) => done += 1,
                Err(StoreError::RecipientNotFound | StoreError::SessionNotLive) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        for deactivation in deactivations {
            assert!(deactivation.await.unwrap().unwrap().is_some());
        }
        for user in [&alice, &bob] {
            store
                .set_user_active(&status_change(&root, user, true))
                .await
                .unwrap();
        }
    }
    let mut total = 0;
    for user in [&alice, &bob] {
        total += store
            .account(user.id)
            .await
            .unwrap()
            .unwrap()
            .balance
            .minor();
        conformance::assert_ledger_consistent(&store, user.id).await;
    }
    assert_eq!(total, 2 * OPENING, "money was created or destroyed");
    assert_eq!(
        pg.serialization_failures(),
        0,
        "deadlocks or serialization failures were retried"
    );
    eprintln!(
        "{per_direction} transfers each way racing deactivations: \
         {done} applied, {refused} refused, no deadlock"
    );
    pg
}

/// A database at schema version 6 is migrated by `--init`: every user gets the folded key of
/// their address, computed in Rust inside the migration's transaction. Two users whose addresses
/// fold alike (registered while uniqueness was by `email`) both keep working; the older holds
/// the key, and a new registration of any spelling of it is refused.
#[tokio::test]
async fn migration_7_backfills_email_keys() {
    use lighttech_tests::conformance::user_with_email;

    let db = PgDatabase::create().await;
    let pg = PgStore::connect(&db.url).unwrap();
    pg.migrate().await.unwrap();
    let older = user_with_email("older", "ΣΑΣ@EXAMPLE.COM");
    let bob = user_with_email("bob", "Bob@Example.com");
    pg.create_user(&older).await.unwrap();
    pg.create_user(&bob).await.unwrap();
    // Back to version 6's shape, plus what version 6 let in: the same address, folded.
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "ALTER TABLE users DROP COLUMN email_key, \
                 ADD CONSTRAINT users_email_unique UNIQUE (email); \
             DROP INDEX login_attempts_by_window; \
             DROP FUNCTION lighttech_transfer_batch; \
             DELETE FROM lighttech_schema WHERE version >= 7;",
        )
        .await
        .unwrap();
    let younger = user_with_email("younger", "σασ@example.com");
    client
        .execute(
            "INSERT INTO users (id, username, username_key, email, password_hash, is_staff, \
             is_active, created_at) VALUES ($1, 'younger', 'younger', $2, 'x', false, true, $3)",
            &[
                &younger.id.0,
                &younger.email.as_str(),
                &(older.now.millis() + 1),
            ],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES ($1, 0, 0, 0)",
            &[&younger.id.0],
        )
        .await
        .unwrap();
    assert_eq!(pg.schema_version().await.unwrap(), 6);

    pg.migrate().await.unwrap();
    pg.check_schema().await.unwrap();
    let key_of = async |name: &str| -> Option<String> {
        client
            .query_one("SELECT email_key FROM users WHERE username = $1", &[&name])
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(key_of("older").await.as_deref(), Some("σασ@example.com"));
    assert_eq!(key_of("bob").await.as_deref(), Some("bob@example.com"));
    assert_eq!(
        key_of("younger").await,
        None,
        "the older account holds the key"
    );
    let read = pg.user_by_username("younger").await.unwrap().unwrap();
    assert_eq!(read.email.as_str(), "σασ@example.com");
    for (name, email) in [
        ("third", "σας@example.com"),
        ("fourth", "ΣΑΣ@example.com"),
        ("fifth", "BOB@example.com"),
    ] {
        assert!(
            matches!(
                pg.create_user(&user_with_email(name, email)).await,
                Err(StoreError::EmailTaken)
            ),
            "{email}"
        );
    }
    pg.create_user(&user_with_email("carol", "carol@example.com"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_usernames_leave_no_expired_throttle_rows() {
    let db = PgDatabase::create().await;
    let store = PgStore::connect(&db.url).unwrap();
    store.migrate().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let client = Arc::new(client);
    let rows = |floor: Timestamp| {
        let client = Arc::clone(&client);
        async move {
            let row = client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE window_start <= $1) \
                     FROM login_attempts",
                    &[&floor.millis()],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize)
        }
    };
    conformance::made_up_usernames_leave_no_expired_throttle_rows(Arc::new(store), rows).await;
}
