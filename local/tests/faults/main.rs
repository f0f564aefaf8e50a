//! Fault tolerance: crashes and outages under load lose nothing and split no transfer.
//!
//! Each scenario runs the bank workload (deposits, withdrawals, transfers and reads, every write
//! with its own `Idempotency-Key`) against a real `lighttech-local` process while something
//! breaks, and clients retry every request whose answer they did not get — and every `503` —
//! with the same key. At the end the books must balance:
//!
//! - the sum of balances equals the initial deposits plus acknowledged deposits minus
//!   acknowledged withdrawals;
//! - every acknowledged operation is in its owner's history exactly once, and nothing else is;
//! - every transfer has both sides (its id appears exactly twice) or neither;
//! - each account's newest `balance_after` equals its balance.
//!
//! Reads are checked too: they answer `200`, or `503` with `Retry-After` — never anything else.
//! A response marked `Idempotent-Replayed: true` is counted; it must be a `201`, and where the
//! server does not retry internally it must answer a retry (an earlier attempt of the same
//! request went unanswered or got `503`), since every request has a fresh key.
//!
//! Scenarios: SIGKILL of the server several times (SQLite, PostgreSQL); a PostgreSQL restart
//! (requests during the outage get `503` with `Retry-After`, the server recovers by itself);
//! a request the server received and applied but whose client hung up before reading the
//! answer, retried with the same key: the retry replays the original answer (SQLite,
//! PostgreSQL); start-up faults (one clear line, no panic); DynamoDB throttling, 500s and
//! answers lost after moto applied the call, injected by a proxy in front of moto.
//!
//! `LIGHTTECH_FAULT_OPS` (default 40) sets the operations per client; `tests/run --test faults`
//! uses the default, `LIGHTTECH_FAULT_OPS=400 tests/run --test faults` is the longer run.
//!
//! The scenarios are here; `server` holds the processes they break (and the DynamoDB fault
//! proxy), `workload` the clients, what they saw and the check of the books.

mod server;
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lighttech_tests::{PgDatabase, PrivateCluster, dynamodb_endpoint};
use rand::RngExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use server::{FaultProxy, ServerProcess, get, refuses_to_start};
use workload::{
    Background, Tally, all_operations, assert_clean, balances, check_books, open_bank,
    run_workload, until_answered,
};

/// Scenarios share machine-wide things (ports they free and take again): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The workload while the server is SIGKILLed `kills` times at random moments.
async fn kills_lose_nothing(extra_env: &[(&str, &str)], backend: &str) {
    let mut server = ServerProcess::start(extra_env, true).await;
    let mut workload = Background::start(server.addr, 4).await;
    let tally = Arc::clone(&workload.tally);
    let kills = 5;
    let mut done = 0;
    // The kill schedule replays with the printed seed (what the server was doing when it died
    // depends on the scheduler too).
    let mut schedule = lighttech_tests::seeded_rng("kill schedule", 1000);
    while done < kills {
        let wait = schedule.random_range(150..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill().await;
        let down = schedule.random_range(50..300);
        tokio::time::sleep(Duration::from_millis(down)).await;
        server.spawn(false).await;
        done += 1;
    }
    let summary = workload.finish().await;
    eprintln!(
        "{backend}: survived {done} SIGKILLs; {}; {summary}",
        tally.summary()
    );
    assert!(
        tally.unanswered.load(Ordering::Relaxed) > 0,
        "no request was ever cut off"
    );
    assert_clean(&tally, &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_repeated_sigkills() {
    let _serial = SERIAL.lock().await;
    kills_lose_nothing(&[], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_repeated_sigkills() {
    let _serial = SERIAL.lock().await;
    let db = PgDatabase::create().await;
    kills_lose_nothing(&[("DATABASE_URL", db.url.as_str())], "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_answers_503_and_the_server_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let cluster = PrivateCluster::create();
    let db = PgDatabase::create_on(cluster.admin_url()).await;
    let server = ServerProcess::start(&[("DATABASE_URL", db.url.as_str())], true).await;
    let mut workload = Background::start(server.addr, 4).await;
    let tally = Arc::clone(&workload.tally);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.ctl("stop"), "could not stop PostgreSQL");
    // While it is down, the API says so with the contract's code.
    let during = get(
        server.addr,
        "/api/balance/v1/",
        Some(&workload.bank.tokens[0]),
    )
    .await
    .expect("the server answers while the database is down");
    assert_eq!(during.status, 503, "{}", during.json());
    assert_eq!(during.json()["code"], "service_unavailable");
    assert!(during.header("retry-after").is_some());
    let health = get(server.addr, "/api/health/", None).await.unwrap();
    assert_eq!(health.status, 503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.ctl("start"), "could not start PostgreSQL");
    // Back by itself: no restart of the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(server.addr, "/api/health/", None)
            .await
            .is_some_and(|r| r.status == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And not only its health: money moves again.
    let before = tally.acknowledged.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.acknowledged.load(Ordering::Relaxed) < before + 20 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = workload.finish().await;
    eprintln!("postgres restart: {}; {summary}", tally.summary());
    assert!(
        tally.unavailable.load(Ordering::Relaxed) > 0,
        "no client saw the outage"
    );
    assert_clean(&tally, &server);
}

/// A deposit and a transfer, each sent in full over a raw connection whose client hangs up at
/// once, without reading a byte of the answer: the way a client times out after its request
/// went through. The server still carries the request to its end (the balances come to show
/// it; a hang-up must not cancel a movement halfway). The retry with the same key must replay
/// the original result (the very operation now in the history) with `Idempotent-Replayed:
/// true`, and the money must have moved once.
async fn a_cut_off_request_is_replayed_to_its_retry(extra_env: &[(&str, &str)], backend: &str) {
    let server = ServerProcess::start(extra_env, true).await;
    let tally = Tally::default();
    let bank = open_bank(server.addr, &tally).await;

    // Twenty deposits whose clients hang up as soon as they are sent: every one is applied.
    const HUNG_UP: i64 = 20;
    let start = balances(&bank).await[0];
    let auth = format!("Bearer {}", bank.tokens[0]);
    for n in 0..HUNG_UP {
        let key = format!("hung-up-{n}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key.as_str()),
        ];
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(&lighttech_tests::wire::request_bytes(
                server.addr,
                "POST",
                "/api/balance/v1/deposit/",
                &headers,
                br#"{"amount": "1.00"}"#,
            ))
            .await
            .unwrap();
        drop(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while balances(&bank).await[0] != start + HUNG_UP * 100 {
        assert!(
            Instant::now() < deadline,
            "deposits whose clients hung up were not all applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cases = [
        (
            "/api/balance/v1/deposit/",
            0,
            json!({"amount": "7.00"}),
            [(0, 700)].as_slice(),
        ),
        (
            "/api/balance/v1/transfer/",
            1,
            json!({"to": bank.names[2], "amount": "3.00"}),
            [(1, -300), (2, 300)].as_slice(),
        ),
    ];
    for (n, (path, user, body, moves)) in cases.into_iter().enumerate() {
        let key = format!("cut-off-{n}");
        let before = balances(&bank).await;
        let mut expected = before.clone();
        for (who, delta) in moves {
            expected[*who] += delta;
        }
        let auth = format!("Bearer {}", bank.tokens[user]);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key.as_str()),
        ];
        let mut cut_off = TcpStream::connect(server.addr).await.unwrap();
        cut_off
            .write_all(&lighttech_tests::wire::request_bytes(
                server.addr,
                "POST",
                path,
                &headers,
                body.to_string().as_bytes(),
            ))
            .await
            .unwrap();
        // The client gives up: the answer is never read.
        drop(cut_off);
        let deadline = Instant::now() + Duration::from_secs(30);
        while balances(&bank).await != expected {
            assert!(
                Instant::now() < deadline,
                "{path}: the cut-off request was never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let retry = until_answered(
            server.addr,
            path,
            &bank.tokens[user],
            &body,
            Some(&key),
            &tally,
        )
        .await;
        assert_eq!(retry.status, 201, "{}", retry.json());
        assert_eq!(
            retry.header("idempotent-replayed"),
            Some("true"),
            "{path}: the retry was not answered as a replay"
        );
        let history = all_operations(server.addr, &bank.tokens[user]).await;
        let original = history
            .iter()
            .find(|op| op["id"] == retry.json()["id"])
            .unwrap_or_else(|| panic!("the replayed operation is not in the history"));
        assert_eq!(&retry.json(), original, "the replay is the original result");
        assert_eq!(
            balances(&bank).await,
            expected,
            "{path}: the money moved more than once"
        );
        let matching = history
            .iter()
            .filter(|op| op["amount"] == body["amount"])
            .count();
        assert_eq!(matching, 1, "{path}: one operation, not {matching}");
    }
    assert_eq!(server.errors_logged(), Vec::<String>::new());
    eprintln!(
        "{backend}: {} cut-off requests applied once, replayed to their retries",
        tally.replayed.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replays_a_cut_off_request_to_its_retry() {
    let _serial = SERIAL.lock().await;
    a_cut_off_request_is_replayed_to_its_retry(&[], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replays_a_cut_off_request_to_its_retry() {
    let _serial = SERIAL.lock().await;
    let db = PgDatabase::create().await;
    a_cut_off_request_is_replayed_to_its_retry(&[("DATABASE_URL", db.url.as_str())], "postgres")
        .await;
}

#[tokio::test]
async fn start_up_faults_exit_non_zero_with_one_clear_line() {
    let _serial = SERIAL.lock().await;
    refuses_to_start(
        &[("DATABASE_URL", "postgres://lighttech@127.0.0.1:1/lighttech")],
        &[],
        &["store", "127.0.0.1:1"],
    )
    .await;
    refuses_to_start(
        &[(
            "DATABASE_URL",
            "postgres://no_such_role:secret@127.0.0.1:5432/postgres",
        )],
        &[],
        &["store", "no_such_role"],
    )
    .await;
    let db = PgDatabase::create().await;
    refuses_to_start(
        &[("DATABASE_URL", db.url.as_str())],
        &[],
        &["version 0", "--init"],
    )
    .await;
    let aws = [
        ("AWS_ENDPOINT_URL", dynamodb_endpoint()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ];
    let table = format!("dynamodb://lt-missing-{}", uuid::Uuid::new_v4().simple());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("DATABASE_URL", &table));
    refuses_to_start(&env, &[], &["does not exist", "--init"]).await;
    refuses_to_start(&[("SECRET_KEY", "too-short")], &[], &["SECRET_KEY", "32"]).await;
    // Secrets Manager unreachable: nothing listens where it should be.
    let dead = format!("http://127.0.0.1:{}", lighttech_tests::wire::free_port());
    refuses_to_start(
        &[
            ("SECRET_KEY_ARN", "lighttech/signing-key"),
            ("AWS_ENDPOINT_URL", &dead),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        &[],
        &["signing key", "Secrets Manager"],
    )
    .await;
    // Secrets Manager (moto) answers, but the secret is not there...
    let moto = dynamodb_endpoint();
    fn with_secret<'a>(arn: &'a str, endpoint: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("SECRET_KEY_ARN", arn),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
    }
    let missing = format!("lt-no-such-key-{}", uuid::Uuid::new_v4().simple());
    refuses_to_start(
        &with_secret(&missing, &moto),
        &[],
        &["signing key", &missing, "ResourceNotFoundException"],
    )
    .await;
    // ...or it holds a key too short to sign with (whose value must not be printed).
    let short = "short-signing-key-value";
    let arn = lighttech_tests::create_emulated_secret(
        &format!("lt-short-key-{}", uuid::Uuid::new_v4().simple()),
        short,
    )
    .await;
    let line = refuses_to_start(
        &with_secret(&arn, &moto),
        &[],
        &["signing key", &arn, "at least 32"],
    )
    .await;
    assert!(
        !line.contains(short),
        "the secret's value is printed: {line}"
    );
    refuses_to_start(&[("DATABASE_URL", "mysql://x")], &[], &["DATABASE_URL"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_dynamodb_throttling_500s_and_lost_answers_are_absorbed() {
    let _serial = SERIAL.lock().await;
    let moto: SocketAddr = dynamodb_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback moto address");
    let proxy = FaultProxy::start(moto, 0.15).await;
    let endpoint = format!("http://{}", proxy.addr);
    let table = format!("dynamodb://lt-fault-{}", uuid::Uuid::new_v4().simple());
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", table.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        true,
    )
    .await;
    let tally = Arc::new(Tally::default());
    let bank = Arc::new(open_bank(server.addr, &tally).await);
    let acked = run_workload(
        Arc::clone(&bank),
        Arc::clone(&tally),
        3,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    // The books are read back without faults: what is checked is what was stored.
    proxy.faulty.store(false, Ordering::SeqCst);
    let summary = check_books(&bank, &acked).await;
    let (injected, dropped) = (
        proxy.injected.load(Ordering::Relaxed),
        proxy.dropped.load(Ordering::Relaxed),
    );
    eprintln!(
        "dynamodb: {injected} errors injected and {dropped} answers dropped after moto applied \
         the call, in {} calls; {}; {summary}",
        injected + dropped + proxy.forwarded.load(Ordering::Relaxed),
        tally.summary(),
    );
    assert!(injected > 10, "too few errors injected");
    assert!(dropped > 5, "too few answers dropped");
    assert_eq!(server.errors_logged(), Vec::<String>::new());
}
