//! The DynamoDB store against a real DynamoDB-protocol server (moto, started by `tests/run`):
//! the same conformance and API suites as every backend, plus what is DynamoDB's own —
//! the table schema, conflict retries, Secrets Manager and the local server on a table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lighttech::domain::{ChangeKind, Money, OperationId, OperationKind, Timestamp};
use lighttech::store::dynamo::{DynamoStore, FaultInjector, GSI1_PROJECTED};
use lighttech::store::{Applied, BalanceChange, Store, StoreError};
use lighttech::{App, Config, StartOptions};
use lighttech_tests::dynamo_proxy::{DynamoProxy, Verdict, dynamodb_error, dynamodb_ok};
use lighttech_tests::{
    StoreFixture, dynamo_fixture, dynamo_store, dynamodb_endpoint, emulator_sdk_config,
};

mod capacity;
mod hot_account;
mod hot_simulation;
mod key_rotation;
mod round_trips;
mod secret_rotation;
mod service_errors;
mod user_index;

lighttech_tests::store_conformance_suite!(dynamo_fixture);
lighttech_tests::api_suite!(dynamo_fixture);

/// A store whose transactions fail with `TransactionConflict` a third of the time.
async fn conflicting_fixture() -> StoreFixture {
    let store = dynamo_store().await.with_fault_injector(FaultInjector {
        conflict_rate: 0.3,
        seed: lighttech_tests::fault_seed(),
    });
    StoreFixture::new(Arc::new(store), ())
}

mod under_injected_conflicts {
    use super::*;
    lighttech_tests::store_conformance_suite!(conflicting_fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_conflicts_are_retried_and_counted() {
    let store = Arc::new(dynamo_store().await.with_fault_injector(FaultInjector {
        conflict_rate: 0.5,
        seed: lighttech_tests::fault_seed(),
    }));
    let user = lighttech_tests::conformance_user(&(store.clone() as Arc<dyn Store>), "alice").await;
    let mut applied = 0;
    for _ in 0..20 {
        let change = BalanceChange {
            user,
            kind: ChangeKind::Deposit,
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
        .with_fault_injector(FaultInjector {
            conflict_rate: 1.0,
            seed: lighttech_tests::fault_seed(),
        });
    let change = BalanceChange {
        user,
        kind: ChangeKind::Deposit,
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
    let projection = gsi.projection().expect("GSI1 projection");
    assert_eq!(
        projection.projection_type().map(|t| t.as_str()),
        Some("INCLUDE")
    );
    assert_eq!(projection.non_key_attributes(), GSI1_PROJECTED);
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
    let fetched = lighttech::aws::fetch_key_set(&sdk, &arn).await.unwrap();
    assert_eq!(fetched.current.expose(), key.as_bytes());
    assert!(fetched.previous.is_none(), "no rotation yet");

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
    let err = lighttech::aws::fetch_key_set(&sdk, &arn).await.unwrap_err();
    assert!(err.contains("at least 32"), "{err}");
    let err = lighttech::aws::fetch_key_set(&sdk, "no-such-secret")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_call_throttles_of_a_transaction_are_retried_and_counted() {
    use std::sync::atomic::AtomicUsize;
    let healthy = Arc::new(dynamo_store().await);
    let user =
        lighttech_tests::conformance_user(&(healthy.clone() as Arc<dyn Store>), "alice").await;
    // The next `throttles` transactions are refused whole, cycling through the three codes.
    let throttles = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (left, count) = (Arc::clone(&throttles), Arc::clone(&refused));
    let proxy = DynamoProxy::start(move |call| {
        if call.operation != "transactwriteitems"
            || left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Verdict::Forward;
        }
        let kind = [
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
        ][count.fetch_add(1, Ordering::SeqCst) % 3];
        Verdict::Answer(dynamodb_error("400 Bad Request", kind))
    })
    .await;
    let store = proxy.store(healthy.table());
    let deposit = || BalanceChange {
        user,
        kind: ChangeKind::Deposit,
        amount: Money::from_minor(100),
        description: None,
        operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: None,
    };

    // Three refusals in a row: retried, counted, then applied once.
    throttles.store(3, Ordering::SeqCst);
    assert!(matches!(
        store.apply_change(&deposit()).await,
        Ok(Applied::Done(_))
    ));
    assert_eq!(refused.load(Ordering::SeqCst), 3);
    assert_eq!(store.stats.throttle_retries.load(Ordering::Relaxed), 3);
    let account = healthy.account(user).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (100, 1));

    // Refused for good: a bounded number of retries, then `Unavailable` with nothing applied.
    throttles.store(usize::MAX, Ordering::SeqCst);
    assert!(matches!(
        store.apply_change(&deposit()).await,
        Err(StoreError::Unavailable(_))
    ));
    let retried = store.stats.throttle_retries.load(Ordering::Relaxed) - 3;
    assert!((1..=10).contains(&retried), "{retried} retries");
    let account = healthy.account(user).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (100, 1));
}

#[tokio::test]
async fn init_on_an_existing_table_turns_ttl_on_and_checks_it() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let bare_table = |name: String| {
        let client = client.clone();
        async move {
            let mut create = client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest);
            for (attribute, kind) in [("PK", KeyType::Hash), ("SK", KeyType::Range)] {
                create = create
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(attribute)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .unwrap(),
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(attribute)
                            .key_type(kind)
                            .build()
                            .unwrap(),
                    );
            }
            create.send().await.unwrap();
            name
        }
    };
    let ttl_of = |name: String| {
        let client = client.clone();
        async move {
            let d = client
                .describe_time_to_live()
                .table_name(name)
                .send()
                .await
                .unwrap();
            let d = d.time_to_live_description();
            (
                d.and_then(|d| d.time_to_live_status())
                    .map(|s| s.as_str().to_owned()),
                d.and_then(|d| d.attribute_name()).map(str::to_owned),
            )
        }
    };

    // A table created elsewhere without TTL: `--init` turns it on, and again is a no-op.
    let table = bare_table(format!("lt-{}", uuid::Uuid::new_v4().simple())).await;
    assert_ne!(ttl_of(table.clone()).await.0.as_deref(), Some("ENABLED"));
    let store = DynamoStore::new(client.clone(), &table);
    store.create_table().await.unwrap();
    assert_eq!(
        ttl_of(table.clone()).await,
        (Some("ENABLED".into()), Some("ttl".into()))
    );
    store.create_table().await.unwrap();

    // TTL on some other attribute is not silently accepted.
    let other = bare_table(format!("lt-{}", uuid::Uuid::new_v4().simple())).await;
    client
        .update_time_to_live()
        .table_name(&other)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let err = DynamoStore::new(client.clone(), &other)
        .create_table()
        .await
        .unwrap_err();
    let text = lighttech::telemetry::error_chain(&err);
    assert!(text.contains("TTL") && text.contains("expires"), "{text}");
}

#[tokio::test]
async fn init_fails_clearly_when_the_table_never_becomes_active() {
    let proxy = DynamoProxy::start(|call| match call.operation.as_str() {
        "createtable" => {
            Verdict::Answer(dynamodb_error("400 Bad Request", "ResourceInUseException"))
        }
        "describetable" => Verdict::Answer(dynamodb_ok(
            r#"{"Table":{"TableName":"stuck","TableStatus":"CREATING"}}"#,
        )),
        _ => Verdict::Answer(dynamodb_error(
            "500 Internal Server Error",
            "InternalServerError",
        )),
    })
    .await;
    let store = proxy
        .store("stuck")
        .with_table_wait(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    let err = store.create_table().await.unwrap_err();
    let text = lighttech::telemetry::error_chain(&err);
    assert!(text.contains("still CREATING"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Writes `count` deposits of 0.01 straight into a user's partition, one second apart from
/// `t0 + 1 s`, and brings the account to match: far quicker on moto than one transaction each.
async fn seed_deposits(
    store: &DynamoStore,
    user: lighttech::domain::UserId,
    t0: Timestamp,
    count: u64,
) {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let s = |v: String| AttributeValue::S(v);
    let n = |v: i64| AttributeValue::N(v.to_string());
    let at = |seq: u64| t0.plus_seconds(seq as i64).millis();
    let seqs: Vec<u64> = (1..=count).collect();
    for chunk in seqs.chunks(25) {
        let writes = chunk
            .iter()
            .map(|&seq| {
                let item = std::collections::HashMap::from([
                    ("PK".to_owned(), s(format!("USER#{user}"))),
                    ("SK".to_owned(), s(format!("OP#{seq:020}"))),
                    ("user_id".to_owned(), s(user.to_string())),
                    ("seq".to_owned(), n(seq as i64)),
                    ("id".to_owned(), s(OperationId::new().to_string())),
                    ("kind".to_owned(), s("deposit".into())),
                    ("amount".to_owned(), n(1)),
                    ("balance_after".to_owned(), n(seq as i64)),
                    ("created_at".to_owned(), n(at(seq))),
                ]);
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        let out = client
            .batch_write_item()
            .request_items(store.table(), writes)
            .send()
            .await
            .unwrap();
        assert!(
            out.unprocessed_items().is_none_or(|u| u.is_empty()),
            "moto left items unprocessed"
        );
    }
    client
        .update_item()
        .table_name(store.table())
        .key("PK", s(format!("USER#{user}")))
        .key("SK", s("ACCOUNT".into()))
        .update_expression("SET balance = :n, version = :n, updated_at = :at")
        .expression_attribute_values(":n", n(count as i64))
        .expression_attribute_values(":at", n(at(count)))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn time_bounded_history_skips_what_cannot_match_instead_of_filtering_it() {
    use lighttech::store::HistoryQuery;
    const OPS: u64 = 1_500;
    let store = Arc::new(dynamo_store().await);
    let as_store: Arc<dyn Store> = store.clone();
    let user = lighttech_tests::conformance_user(&as_store, "alice").await;
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    seed_deposits(&store, user, t0, OPS).await;
    let at = |seq: u64| t0.plus_seconds(seq as i64);
    let reads = || store.stats.history_reads.load(Ordering::Relaxed);
    let query = |limit, before_seq, kinds, since, until| HistoryQuery {
        user,
        limit,
        before_seq,
        kinds,
        since,
        until,
    };
    let seqs = |page: &lighttech::store::HistoryPage| -> Vec<u64> {
        page.operations.iter().map(|o| o.seq).collect()
    };

    // `until` near the start: the query begins there, even with more than ten queries' worth
    // of newer operations above it.
    let before = reads();
    let page = store
        .history(&query(3, None, vec![], None, Some(at(5))))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [5, 4, 3]);
    assert_eq!(page.next_before, Some(3));
    let used = reads() - before;
    assert!(used <= 14, "{used} round trips");
    let page = store
        .history(&query(3, Some(3), vec![], None, Some(at(5))))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [2, 1]);
    assert_eq!(page.next_before, None);
    // Before every operation: empty, no cursor.
    let page = store
        .history(&query(3, None, vec![], None, Some(at(0))))
        .await
        .unwrap();
    assert!(page.operations.is_empty() && page.next_before.is_none());

    // `since` near the end, with a kind nothing matches: one query, the end of the history.
    let before = reads();
    let page = store
        .history(&query(
            20,
            None,
            vec![OperationKind::Withdrawal],
            Some(at(OPS - 5)),
            None,
        ))
        .await
        .unwrap();
    assert!(page.operations.is_empty() && page.next_before.is_none());
    assert_eq!(reads() - before, 1);
    // Matching ones: exactly those, and no cursor once `since` is passed.
    let page = store
        .history(&query(
            100,
            None,
            vec![OperationKind::Deposit],
            Some(at(OPS - 9)),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(seqs(&page), ((OPS - 9)..=OPS).rev().collect::<Vec<_>>());
    assert_eq!(page.next_before, None);

    // A window in the middle, both bounds inclusive, in pages.
    let before = reads();
    let mut window = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .history(&query(4, cursor, vec![], Some(at(700)), Some(at(710))))
            .await
            .unwrap();
        window.extend(seqs(&page));
        match page.next_before {
            Some(b) => cursor = Some(b),
            None => break,
        }
    }
    assert_eq!(window, (700..=710).rev().collect::<Vec<_>>());
    let used = reads() - before;
    assert!(used <= 24, "{used} round trips");
}

/// Every write of the store that DynamoDB applies but whose answer never arrives is applied
/// once and answered as done, with the SDK's standard retries as in service: both when the
/// connection is reset, which the SDK meets by sending the call again (the resend fails on the
/// conditions the first sending satisfied), and when it is closed, which the SDK passes on to
/// the store. No `Idempotency-Key` is needed for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_answer_is_lost_are_applied_once() {
    for reset in [true, false] {
        writes_with_lost_answers(reset).await;
    }
}

async fn writes_with_lost_answers(reset: bool) {
    use std::sync::Mutex;

    use lighttech::domain::{
        Email, IdempotencyKey, RequestFingerprint, SessionId, TokenId, TransferId, UserId, Username,
    };
    use lighttech::store::{
        AuditAction, AuditEntry, AuditParty, IdempotencyStamp, NewUser, RotateOutcome, Rotation,
        SessionRecord, StatusChange, TransferCommand,
    };

    let healthy = dynamo_store().await;
    // The operation whose next call has its answer lost, and every call the proxy saw.
    let lose: Arc<Mutex<Option<&'static str>>> = Arc::default();
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let (next, seen) = (Arc::clone(&lose), Arc::clone(&calls));
    let proxy = DynamoProxy::start(move |call| {
        seen.lock().unwrap().push(call.operation.clone());
        let mut next = next.lock().unwrap();
        if next.is_some_and(|op| op == call.operation) {
            *next = None;
            Verdict::LoseAnswer { reset }
        } else {
            Verdict::Forward
        }
    })
    .await;
    let store = proxy.retrying_store(healthy.table());
    let lose_next = |operation: &'static str| {
        calls.lock().unwrap().clear();
        *lose.lock().unwrap() = Some(operation);
    };
    // The answer to `operation` was lost, and after a reset the SDK sent the call again.
    let was_lost = |operation: &str| {
        assert!(lose.lock().unwrap().is_none(), "no answer was lost");
        if reset {
            let calls = calls.lock().unwrap();
            let lost = calls.iter().position(|c| c == operation).unwrap();
            assert_eq!(
                calls.get(lost + 1).map(String::as_str),
                Some(operation),
                "the SDK did not send the call again: {calls:?}"
            );
        }
    };
    let balance = |user| {
        let healthy = &healthy;
        async move {
            let a = healthy.account(user).await.unwrap().unwrap();
            (a.balance.minor(), a.version)
        }
    };
    let new_user = |name: &str| NewUser {
        id: UserId::new(),
        username: Username::parse(name).unwrap(),
        email: Email::parse(&format!("{name}@example.com")).unwrap(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        is_staff: false,
        now: Timestamp::now(),
    };
    let audit = |action, target: Option<UserId>| AuditEntry {
        id: uuid::Uuid::new_v4(),
        actor: AuditParty {
            id: UserId::new(),
            username: "admin".into(),
        },
        action,
        target: target.map(|id| AuditParty {
            id,
            username: "bob".into(),
        }),
        detail: None,
        at: Timestamp::now(),
    };

    // Registration: the user exists once, and the caller is told it was created.
    lose_next("transactwriteitems");
    let alice = store.create_user(&new_user("alice")).await.unwrap();
    was_lost("transactwriteitems");
    let found = healthy.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(found.id, alice.id);
    let bob = healthy.create_user(&new_user("bob")).await.unwrap();

    // A session.
    let now = Timestamp::now();
    let session = SessionRecord {
        id: SessionId::new(),
        user: alice.id,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_seconds(3600),
        refresh_jti: TokenId::new(),
        user_agent: None,
        ip: None,
        revoked_at: None,
    };
    lose_next("transactwriteitems");
    assert!(store.create_session(&session).await.unwrap());
    was_lost("transactwriteitems");
    assert!(
        healthy
            .session(alice.id, session.id)
            .await
            .unwrap()
            .is_some()
    );

    // A deposit without a key.
    let change = |kind, minor, idempotency| BalanceChange {
        user: alice.id,
        kind,
        amount: Money::from_minor(minor),
        description: None,
        operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency,
        session: None,
    };
    lose_next("transactwriteitems");
    match store
        .apply_change(&change(ChangeKind::Deposit, 1000, None))
        .await
        .unwrap()
    {
        Applied::Done(op) => assert_eq!(op.balance_after.minor(), 1000),
        other => panic!("the deposit was not answered as done: {other:?}"),
    }
    was_lost("transactwriteitems");
    assert_eq!(balance(alice.id).await, (1000, 1));

    // A withdrawal with a key: done, not a replay of itself.
    let stamp = IdempotencyStamp {
        key: IdempotencyKey::parse(b"lost-answer-withdrawal").unwrap(),
        fingerprint: RequestFingerprint::of(&["withdraw 1.00"]),
        expires_at: Timestamp::now().plus_seconds(86_400),
    };
    lose_next("transactwriteitems");
    match store
        .apply_change(&change(ChangeKind::Withdrawal, 100, Some(stamp)))
        .await
        .unwrap()
    {
        Applied::Done(op) => assert_eq!(op.balance_after.minor(), 900),
        other => panic!("the withdrawal was not answered as done: {other:?}"),
    }
    was_lost("transactwriteitems");
    assert_eq!(balance(alice.id).await, (900, 2));

    // A transfer without a key.
    lose_next("transactwriteitems");
    let transfer = TransferCommand {
        from: alice.id,
        to_username_key: "bob".into(),
        amount: Money::from_minor(200),
        description: None,
        transfer_id: TransferId::new(),
        out_operation_id: OperationId::new(),
        in_operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: None,
    };
    match store.transfer(&transfer).await.unwrap() {
        Applied::Done(op) => assert_eq!(op.balance_after.minor(), 700),
        other => panic!("the transfer was not answered as done: {other:?}"),
    }
    was_lost("transactwriteitems");
    assert_eq!(balance(alice.id).await, (700, 3));
    assert_eq!(balance(bob.id).await, (200, 1));

    // An audit entry, and a deactivation with its own.
    lose_next("putitem");
    store
        .append_audit(&audit(AuditAction::Deactivate, None))
        .await
        .unwrap();
    was_lost("putitem");
    lose_next("transactwriteitems");
    let changed = store
        .set_user_active(&StatusChange {
            user: bob.id,
            active: false,
            now: Timestamp::now(),
            audit: audit(AuditAction::Deactivate, Some(bob.id)),
        })
        .await
        .unwrap()
        .expect("bob exists");
    was_lost("transactwriteitems");
    assert!(!changed.is_active);
    assert!(!healthy.user_by_id(bob.id).await.unwrap().unwrap().is_active);
    assert_eq!(healthy.audit_log(10, None).await.unwrap().entries.len(), 2);

    // A refresh: the session rotates once, and the caller is told it did.
    let next = TokenId::new();
    lose_next("updateitem");
    let rotated = store
        .rotate_session(&Rotation {
            user: alice.id,
            session: session.id,
            presented: session.refresh_jti,
            next,
            expires_at: Timestamp::now().plus_seconds(3600),
            max_lifetime_seconds: 30 * 86_400,
            now: Timestamp::now(),
        })
        .await
        .unwrap();
    was_lost("updateitem");
    assert_eq!(
        rotated,
        RotateOutcome::Rotated {
            created_at: session.created_at
        }
    );
    let current = healthy
        .session(alice.id, session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((current.refresh_jti, current.revoked_at), (next, None));

    // Logging out.
    lose_next("updateitem");
    assert!(
        store
            .revoke_session(alice.id, session.id, Timestamp::now())
            .await
            .unwrap()
    );
    was_lost("updateitem");
    let revoked = healthy
        .session(alice.id, session.id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
}

/// Guards written before the email key sit under the lower-cased address (see the store's
/// module documentation). For an ASCII address that is the key's own item; for another the
/// store also checks the old item, so the very address registered before is still refused.
/// A spelling that folds alike but lower-cases otherwise is not caught by an old guard.
#[tokio::test]
async fn email_guards_written_before_the_key_still_hold_their_address() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use lighttech_tests::conformance::user_with_email;

    let store = dynamo_store().await;
    let client = aws_sdk_dynamodb::Client::new(&emulator_sdk_config(&dynamodb_endpoint()));
    let guard = |email: &str| {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S(format!("EMAIL#{email}"))),
            ("SK".to_owned(), AttributeValue::S("EMAIL".into())),
        ])
    };
    let guard_exists = async |email: &str| {
        client
            .get_item()
            .table_name(store.table())
            .set_key(Some(guard(email)))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item()
            .is_some()
    };

    let bob = user_with_email("bob", "Bob@Example.com");
    store.create_user(&bob).await.unwrap();
    assert!(
        guard_exists("bob@example.com").await,
        "old and new are one item"
    );

    // An earlier build registered ΣΑΣ@EXAMPLE.COM under its lower-cased form, σας.
    let legacy = user_with_email("legacy", "ΣΑΣ@EXAMPLE.COM");
    store.create_user(&legacy).await.unwrap();
    assert!(guard_exists("σασ@example.com").await);
    client
        .delete_item()
        .table_name(store.table())
        .set_key(Some(guard("σασ@example.com")))
        .send()
        .await
        .unwrap();
    let mut old = guard("σας@example.com");
    old.insert("user_id".into(), AttributeValue::S(legacy.id.to_string()));
    client
        .put_item()
        .table_name(store.table())
        .set_item(Some(old))
        .send()
        .await
        .unwrap();

    for (name, email) in [
        ("again", "ΣΑΣ@example.com"),
        ("again2", "σας@example.com"),
        ("bob2", "BOB@example.com"),
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
        .create_user(&user_with_email("variant", "σασ@example.com"))
        .await
        .unwrap();
}
