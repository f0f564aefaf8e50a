//! The embedded SQLite store: the conformance and API suites, plus what only a file-backed
//! store and the local server in front of it can show (restarts, the wire).

use std::sync::Arc;

use lighttech::store::sqlite::SqliteStore;
use lighttech::{App, StartOptions};
use lighttech_tests::wire::{Server, raw, request};
use lighttech_tests::{PASSWORD, TestApp, sqlite_fixture, test_config};
use serde_json::json;

lighttech_tests::store_conformance_suite!(sqlite_fixture);
lighttech_tests::api_suite!(sqlite_fixture);

mod wire;

/// The same primitives with group commit turned off (`SQLITE_WRITE_BATCH=1`).
mod unbatched {
    use lighttech_tests::sqlite_unbatched_fixture;
    lighttech_tests::store_conformance_suite!(sqlite_unbatched_fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_users_balances_sessions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bank.db");
    let db_url = format!("sqlite://{}", db.display());
    let data_dir = dir.path().display().to_string();
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("LIGHTTECH_DATA_DIR", data_dir.as_str()),
    ];
    let start = || async {
        let mut config = test_config(&env);
        config.secret_key = None; // use the key the server generates and keeps
        App::start_with(
            config,
            StartOptions {
                init: false,
                generate_key: true,
                check_store: true,
            },
        )
        .await
        .unwrap()
    };

    let app = Arc::new(start().await);
    let server = Server::spawn(app.clone()).await;
    let t = server.addr;
    let post = |path: &'static str, token: Option<String>, body: serde_json::Value| async move {
        let auth = token.map(|tk| format!("Bearer {tk}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        request(t, "POST", path, &headers, body.to_string().as_bytes()).await
    };
    for name in ["alice", "bob"] {
        let r = post(
            "/api/auth/v1/register/",
            None,
            json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let login = post(
        "/api/auth/v1/login/",
        None,
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    let access = login.json()["access"].as_str().unwrap().to_owned();
    let refresh = login.json()["refresh"].as_str().unwrap().to_owned();
    assert_eq!(
        post(
            "/api/balance/v1/deposit/",
            Some(access.clone()),
            json!({"amount": "50"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        post(
            "/api/balance/v1/transfer/",
            Some(access.clone()),
            json!({"to": "bob", "amount": "20"})
        )
        .await
        .status,
        201
    );
    server.stop().await;
    drop(app);

    // A new process on the same data directory.
    let app = Arc::new(start().await);
    let server = Server::spawn(app.clone()).await;
    let auth = format!("Bearer {access}");
    let balance = request(
        server.addr,
        "GET",
        "/api/balance/v1/",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(balance.status, 200, "the session survived the restart");
    assert_eq!(balance.json()["balance"], "30.00");
    let ops = request(
        server.addr,
        "GET",
        "/api/balance/v1/operations/",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    let types: Vec<_> = ops.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["transfer_out", "deposit"]);
    let refreshed = request(
        server.addr,
        "POST",
        "/api/auth/v1/token/refresh/",
        &[("Content-Type", "application/json")],
        json!({ "refresh": refresh }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(refreshed.status, 200, "the refresh token survived too");
    let bob = request(
        server.addr,
        "POST",
        "/api/auth/v1/login/",
        &[("Content-Type", "application/json")],
        json!({"username": "bob", "password": PASSWORD})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(bob.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_checks_hosts_and_bounds_bodies_without_crashing() {
    let t = TestApp::new(sqlite_fixture().await).await;
    let server = Server::spawn(t.app.clone()).await;
    let addr = server.addr;

    let ok = request(addr, "GET", "/api/health/", &[], b"").await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("x-request-id").is_some());
    for host in ["localhost:8000", "LOCALHOST", "[::1]:8000"] {
        let r = request(addr, "GET", "/api/health", &[("Host", host)], b"").await;
        assert_eq!(r.status, 200, "{host}");
    }
    for host in ["evil.example.com", "a b", "localhost:99999", ""] {
        let r = request(addr, "GET", "/api/health/", &[("Host", host)], b"").await;
        assert_eq!(r.status, 400, "{host:?}");
        assert_eq!(r.json()["code"], "validation_error");
    }
    // A spoofed scheme header must not reach lambda_http's URL building.
    let r = request(
        addr,
        "GET",
        "/api/health/",
        &[("X-Forwarded-Proto", "not a scheme://")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);

    // A huge declared body is refused after reading just past the limit.
    let mut head = format!(
        "POST /api/auth/v1/register/ HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    )
    .into_bytes();
    head.extend(std::iter::repeat_n(b'x', 40 * 1024));
    let r = raw(addr, &head).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], "payload_too_large");

    // Non-UTF-8 bodies travel base64-encoded, as API Gateway sends them, and are rejected as JSON.
    let r = request(
        addr,
        "POST",
        "/api/auth/v1/login/",
        &[("Content-Type", "application/json")],
        &[0xff, 0xfe, 0x00, 0x7b],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_json");

    // Garbage on the socket gets an HTTP error or a closed connection, never a dead server.
    let _ = raw(addr, b"\x00\x01\x02 nonsense\r\n\r\n").await;
    let after = request(addr, "GET", "/api/health/", &[], b"").await;
    assert_eq!(after.status, 200, "still serving");
    server.stop().await;
}

#[tokio::test]
async fn a_newer_schema_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        drop(store);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        lighttech::telemetry::error_chain(&err).contains("newer than this build"),
        "{}",
        lighttech::telemetry::error_chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_revalidates_over_the_wire_with_its_etag() {
    let t = TestApp::new(sqlite_fixture().await).await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "12.50").await;
    let server = Server::spawn(t.app.clone()).await;
    let addr = server.addr;
    let auth = format!("Bearer {}", alice.access);
    let path = "/api/balance/v1/operations/?limit=5";
    let get = |extra: Vec<(&'static str, String)>| {
        let auth = auth.clone();
        async move {
            let mut headers = vec![("Authorization", auth.as_str())];
            headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            request(addr, "GET", path, &headers, b"").await
        }
    };

    let first = get(vec![]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    let etag = first.header("etag").expect("an ETag").to_owned();
    let again = get(vec![("If-None-Match", etag.clone())]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty(), "{:?}", again.body);
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // Money moves: the old ETag no longer matches, and the page comes back in full.
    t.deposit(&alice, "1.00").await;
    let changed = get(vec![("If-None-Match", etag.clone())]).await;
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(changed.json()["results"][0]["balance_after"], "13.50");
    server.stop().await;
}

/// A history page passes over at most `HISTORY_SCAN_ROWS` entries, which keeps every history
/// read short enough for the requesting task's thread: where a filter's matches are sparse, a
/// page comes back short with a cursor below the last entry looked at, and following the
/// cursors finds every match exactly once, newest first. Unfiltered pages stay full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_filter_pages_within_the_scan_bound() {
    use lighttech::domain::{ChangeKind, Money, OperationId, OperationKind, Timestamp, UserId};
    use lighttech::store::sqlite::HISTORY_SCAN_ROWS;
    use lighttech::store::{Applied, BalanceChange, HistoryQuery, Store};

    fn change(user: UserId, kind: ChangeKind) -> BalanceChange {
        BalanceChange {
            user,
            kind,
            amount: Money::from_minor(if kind == ChangeKind::Deposit { 100 } else { 1 }),
            description: None,
            operation_id: OperationId::new(),
            now: Timestamp::now(),
            idempotency: None,
            session: None,
        }
    }
    async fn apply(store: &Arc<dyn Store>, change: BalanceChange) -> u64 {
        match store.apply_change(&change).await.unwrap() {
            Applied::Done(op) => op.seq,
            other => panic!("not applied: {other:?}"),
        }
    }

    let fixture = lighttech_tests::sqlite_fixture().await;
    let store = fixture.store();
    let alice = lighttech_tests::conformance::create_user(&store, "alice")
        .await
        .id;
    apply(&store, change(alice, ChangeKind::Deposit)).await;
    let first = apply(&store, change(alice, ChangeKind::Withdrawal)).await;
    // More deposits than one page may pass over, committed concurrently (in groups).
    let mut deposits = tokio::task::JoinSet::new();
    for _ in 0..HISTORY_SCAN_ROWS + 250 {
        let store = Arc::clone(&store);
        deposits.spawn(async move { apply(&store, change(alice, ChangeKind::Deposit)).await });
    }
    while let Some(done) = deposits.join_next().await {
        done.unwrap();
    }
    let last = apply(&store, change(alice, ChangeKind::Withdrawal)).await;

    let query = |kinds: Vec<OperationKind>, limit: u32, before_seq: Option<u64>| HistoryQuery {
        user: alice,
        limit,
        before_seq,
        kinds,
        since: None,
        until: None,
    };
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(&query(vec![OperationKind::Withdrawal], 10, before))
            .await
            .unwrap();
        pages.push(page.operations.iter().map(|o| o.seq).collect::<Vec<_>>());
        match page.next_before {
            Some(b) => {
                assert!(before.is_none_or(|prev| b < prev), "the cursor moves down");
                before = Some(b);
            }
            None => break,
        }
        assert!(pages.len() < 10, "the pages never end: {pages:?}");
    }
    // The first page stopped at the bound with one match; the second found the other.
    assert_eq!(pages, [vec![last], vec![first]]);

    let full = store.history(&query(vec![], 100, None)).await.unwrap();
    assert_eq!(full.operations.len(), 100);
    assert_eq!(full.operations[0].seq, last);
    assert_eq!(full.next_before, Some(last - 99));
}

/// A database from before the email key (schema version 2) is migrated on open: every user gets
/// the folded key of their address, computed in Rust. Two users whose addresses fold alike
/// (registered while uniqueness was by `to_lowercase`) both keep working; the older holds the
/// key, and a new registration of any spelling of it is refused.
#[tokio::test]
async fn opening_a_version_2_database_backfills_email_keys() {
    use lighttech::store::{Store, StoreError};
    use lighttech_tests::conformance::user_with_email;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let older = user_with_email("older", "ΣΑΣ@EXAMPLE.COM");
    let bob = user_with_email("bob", "Bob@Example.com");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_user(&older).await.unwrap();
        store.create_user(&bob).await.unwrap();
    }
    // Back to version 2's shape, plus what version 2 let in: the same address, folded.
    let younger = user_with_email("younger", "σασ@example.com");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch(
        "DROP INDEX users_by_email_key; ALTER TABLE users DROP COLUMN email_key; \
         DROP INDEX login_attempts_by_window; PRAGMA user_version = 2;",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO users (id, username, username_key, email, password_hash, is_staff, \
         is_active, created_at) VALUES (?1, 'younger', 'younger', ?2, 'x', 0, 1, ?3)",
        rusqlite::params![
            younger.id.to_string(),
            younger.email.as_str(),
            older.now.millis() + 1
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES (?1, 0, 0, 0)",
        [younger.id.to_string()],
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    let key_of = |name: &str| -> Option<String> {
        conn.query_row(
            "SELECT email_key FROM users WHERE username = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(key_of("older").as_deref(), Some("σασ@example.com"));
    assert_eq!(key_of("bob").as_deref(), Some("bob@example.com"));
    assert_eq!(key_of("younger"), None, "the older account holds the key");
    let read = store.user_by_username("younger").await.unwrap().unwrap();
    assert_eq!(read.email.as_str(), "σασ@example.com");
    for (name, email) in [
        ("third", "σας@example.com"),
        ("fourth", "ΣΑΣ@example.com"),
        ("fifth", "BOB@example.com"),
    ] {
        assert!(
            matches!(
                store.create_user(&user_with_email(name, email)).await,
                Err(StoreError::EmailTaken)
            ),
            "{email}"
        );
    }
    store
        .create_user(&user_with_email("carol", "carol@example.com"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_usernames_leave_no_expired_throttle_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let rows = |floor: lighttech::domain::Timestamp| {
        let counted = rusqlite::Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE window_start <= ?1) FROM login_attempts",
                [floor.millis()],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
            )
            .unwrap();
        async move { counted }
    };
    lighttech_tests::conformance::made_up_usernames_leave_no_expired_throttle_rows(
        Arc::new(store),
        rows,
    )
    .await;
}

/// A hot recipient's writes refused by SQLite: another connection holds the database's write
/// lock for longer than the store waits for it (`busy_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hot.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let t = TestApp::new(lighttech_tests::StoreFixture::new(Arc::new(store), ())).await;
    let holder = rusqlite::Connection::open(&path).unwrap();
    let refuse = async { holder.execute_batch("BEGIN IMMEDIATE").unwrap() };
    let allow = async { holder.execute_batch("ROLLBACK").unwrap() };
    lighttech_tests::hot::a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once(
        &t, &t, refuse, allow,
    )
    .await;
    drop(dir);
}
