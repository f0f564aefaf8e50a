//! The PostgreSQL store against the machine's real server (a fresh database per test): the
//! conformance and API suites, plus migrations and the local server on PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use lighttech::domain::{Money, OperationId, OperationKind, Timestamp, TransferId, UserId};
use lighttech::store::postgres::PgStore;
use lighttech::store::{Applied, BalanceChange, Store, StoreError, TransferCommand};
use lighttech::{App, StartOptions};
use lighttech_tests::wire::{Server, request};
use lighttech_tests::{PASSWORD, PgDatabase, conformance_user, postgres_fixture, test_config};
use rand::RngExt;
use serde_json::json;

lighttech_tests::store_conformance_suite!(postgres_fixture);
lighttech_tests::api_suite!(postgres_fixture);

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
            kind: OperationKind::Deposit,
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
            let mut rng: rand::rngs::StdRng = rand::make_rng();
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
