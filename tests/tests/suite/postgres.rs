//! The PostgreSQL store against the machine's real server (a fresh database per test): the
//! conformance and API suites, plus migrations and the local server on PostgreSQL.

use std::sync::Arc;

use lighttech::store::postgres::PgStore;
use lighttech::{App, StartOptions};
use lighttech_tests::wire::{Server, request};
use lighttech_tests::{PASSWORD, PgDatabase, postgres_fixture, test_config};
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
