//! The DynamoDB store against a real DynamoDB-protocol server (moto, started by `tests/run`):
//! the same conformance and API suites as every backend, plus what is DynamoDB's own —
//! the table schema, conflict retries, Secrets Manager and the local server on a table.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lighttech::domain::{Money, OperationId, OperationKind, Timestamp};
use lighttech::store::dynamo::{DynamoStore, FaultInjector};
use lighttech::store::{Applied, BalanceChange, Store, StoreError};
use lighttech::{App, Config, StartOptions};
use lighttech_tests::{
    StoreFixture, dynamo_fixture, dynamo_store, dynamodb_endpoint, emulator_sdk_config,
};

lighttech_tests::store_conformance_suite!(dynamo_fixture);
lighttech_tests::api_suite!(dynamo_fixture);

/// A store whose transactions fail with `TransactionConflict` a third of the time.
async fn conflicting_fixture() -> StoreFixture {
    let store = dynamo_store()
        .await
        .with_fault_injector(FaultInjector { conflict_rate: 0.3 });
    StoreFixture::new(Arc::new(store), ())
}

mod under_injected_conflicts {
    use super::*;
    lighttech_tests::store_conformance_suite!(conflicting_fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_conflicts_are_retried_and_counted() {
    let store = Arc::new(
        dynamo_store()
            .await
            .with_fault_injector(FaultInjector { conflict_rate: 0.5 }),
    );
    let user = lighttech_tests::conformance_user(&(store.clone() as Arc<dyn Store>), "alice").await;
    let mut applied = 0;
    for _ in 0..20 {
        let change = BalanceChange {
            user,
            kind: OperationKind::Deposit,
            amount: Money::from_minor(100),
            description: None,
            operation_id: OperationId::new(),
            now: Timestamp::now(),
            idempotency: None,
            session: None,
        };
        match store.apply_change(&change).await {
            Ok(Applied::Done(_)) => applied += 1,
            other => panic!("{other:?}"),
        }
    }
    let retries = store.stats.conflict_retries.load(Ordering::Relaxed);
    eprintln!("20 deposits at a 50% injected conflict rate: {retries} conflict retries");
    assert_eq!(applied, 20);
    assert!(retries > 0, "the injector never fired");
    let account = store.account(user).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (2_000, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bank_workload_under_real_contention_counts_its_retries() {
    let store = Arc::new(dynamo_store().await);
    lighttech_tests::conformance::random_transfers_conserve_the_total(store.clone()).await;
    eprintln!(
        "DynamoDB bank workload: {} conflict retries, {} throttle retries",
        store.stats.conflict_retries.load(Ordering::Relaxed),
        store.stats.throttle_retries.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn endless_conflicts_end_as_unavailable_with_nothing_applied() {
    let healthy = Arc::new(dynamo_store().await);
    let as_store: Arc<dyn Store> = healthy.clone();
    let user = lighttech_tests::conformance_user(&as_store, "alice").await;
    // A second handle on the same table whose every transaction conflicts.
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let failing = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), healthy.table())
        .with_fault_injector(FaultInjector { conflict_rate: 1.0 });
    let change = BalanceChange {
        user,
        kind: OperationKind::Deposit,
        amount: Money::from_minor(100),
        description: None,
        operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: None,
    };
    assert!(matches!(
        failing.apply_change(&change).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(failing.stats.conflict_retries.load(Ordering::Relaxed) > 0);
    let account = healthy.account(user).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (0, 0));
}

#[tokio::test]
async fn the_table_is_created_with_the_documented_schema() {
    let store = dynamo_store().await;
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = client
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    let t = table.table().unwrap();
    let keys: Vec<(String, String)> = t
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [("PK".into(), "HASH".into()), ("SK".into(), "RANGE".into())]
    );
    let gsi = &t.global_secondary_indexes()[0];
    assert_eq!(gsi.index_name(), Some("GSI1"));
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("ttl")
    );
    // Creating it again is a no-op, and the check passes.
    store.create_table().await.unwrap();
    store.check_table().await.unwrap();
}

#[tokio::test]
async fn a_missing_table_is_a_clear_start_up_error() {
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "no-such-table");
    let err = store.check_table().await.unwrap_err();
    let text = lighttech::telemetry::error_chain(&err);
    assert!(text.contains("does not exist"), "{text}");
    assert!(text.contains("--init"), "{text}");
}

#[tokio::test]
async fn the_signing_key_is_read_from_secrets_manager_once_at_start() {
    let key = "k".repeat(48);
    let arn = lighttech_tests::create_emulated_secret(
        &format!("lt-key-{}", uuid::Uuid::new_v4().simple()),
        &key,
    )
    .await;
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let fetched = lighttech::aws::fetch_secret_key(&sdk, &arn).await.unwrap();
    assert_eq!(fetched.expose(), key.as_bytes());

    // Through the whole start-up path: DATABASE_URL on DynamoDB, key from SECRET_KEY_ARN.
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());
    let database_url = format!("dynamodb://{table}");
    let config = lighttech_tests::test_config(&[
        ("DATABASE_URL", database_url.as_str()),
        ("SECRET_KEY_ARN", arn.as_str()),
    ]);
    let config = Config {
        secret_key: None,
        ..config
    };
    let app = App::start_with_aws(
        config,
        StartOptions {
            init: true,
            generate_key: false,
            check_store: true,
        },
        Some(sdk),
    )
    .await
    .unwrap();
    let t = lighttech_tests::TestApp::from_app(app, key);
    let alice = t.user("alice").await;
    t.deposit(&alice, "5").await;
    assert_eq!(t.balance(&alice).await, "5.00");
}

#[tokio::test]
async fn a_short_or_missing_secret_fails_the_start_clearly() {
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let arn = lighttech_tests::create_emulated_secret(
        &format!("lt-short-{}", uuid::Uuid::new_v4().simple()),
        "too-short",
    )
    .await;
    let err = lighttech::aws::fetch_secret_key(&sdk, &arn)
        .await
        .unwrap_err();
    assert!(err.contains("at least 32"), "{err}");
    let err = lighttech::aws::fetch_secret_key(&sdk, "no-such-secret")
        .await
        .unwrap_err();
    assert!(err.contains("cannot read secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_server_on_a_table_keeps_everything_across_a_restart() {
    use lighttech_tests::wire::{Server, request};
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());
    let database_url = format!("dynamodb://{table}");
    let config = lighttech_tests::test_config(&[("DATABASE_URL", database_url.as_str())]);
    let start = |init: bool| {
        let config = config.clone();
        async move {
            App::start_with_aws(
                config,
                StartOptions {
                    init,
                    generate_key: false,
                    check_store: true,
                },
                Some(emulator_sdk_config(&dynamodb_endpoint())),
            )
            .await
        }
    };
    // Without --init the missing table stops the start.
    let err = start(false).await.unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");

    let server = Server::spawn(Arc::new(start(true).await.unwrap())).await;
    let addr = server.addr;
    let json = ("Content-Type", "application/json");
    for name in ["alice", "bob"] {
        let body = serde_json::json!({
            "username": name, "email": format!("{name}@example.com"),
            "password": lighttech_tests::PASSWORD,
        });
        let r = request(
            addr,
            "POST",
            "/api/auth/v1/register/",
            &[json],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let login = serde_json::json!({"username": "alice", "password": lighttech_tests::PASSWORD});
    let r = request(
        addr,
        "POST",
        "/api/auth/v1/login/",
        &[json],
        login.to_string().as_bytes(),
    )
    .await;
    let auth = format!("Bearer {}", r.json()["access"].as_str().unwrap());
    let headers = [
        json,
        ("Authorization", auth.as_str()),
        ("Idempotency-Key", "k1"),
    ];
    let deposit = br#"{"amount": "40.00"}"#;
    let first = request(addr, "POST", "/api/balance/v1/deposit/", &headers, deposit).await;
    let again = request(addr, "POST", "/api/balance/v1/deposit/", &headers, deposit).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.body, again.body);
    let transfer = br#"{"to": "BOB", "amount": "15.50"}"#;
    let r = request(
        addr,
        "POST",
        "/api/balance/v1/transfer/",
        &[json, ("Authorization", auth.as_str())],
        transfer,
    )
    .await;
    assert_eq!(r.status, 201);
    server.stop().await;

    let server = Server::spawn(Arc::new(start(false).await.unwrap())).await;
    let r = request(
        server.addr,
        "GET",
        "/api/balance/v1/",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "the session is in the table");
    assert_eq!(r.json()["balance"], "24.50");
    let r = request(
        server.addr,
        "GET",
        "/api/balance/v1/operations/?type=transfer_out,deposit",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    let balances: Vec<_> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["balance_after"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(balances, ["24.50", "40.00"]);
    server.stop().await;
}
