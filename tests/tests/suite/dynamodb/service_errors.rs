//! What DynamoDB answers that moto never does, put in front of moto by a [`DynamoProxy`]: the
//! refusal of an empty key range, a plain write meeting a transaction in flight on its item,
//! throttling and server errors — and what clients see of each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lighttech::auth::{CursorCodec, CursorKind, derive_key};
use lighttech::config::SecretKey;
use lighttech::domain::{ChangeKind, Money, OperationId, SessionId, Timestamp, TokenId, UserId};
use lighttech::store::dynamo::DynamoStore;
use lighttech::store::{
    BalanceChange, HistoryQuery, RotateOutcome, Rotation, SessionRecord, Store, StoreError,
};
use lighttech_tests::dynamo_proxy::{
    Call, DynamoProxy, Verdict, dynamodb_cancelled, dynamodb_error,
};
use lighttech_tests::{Resp, StoreFixture, TestApp, TestUser, dynamo_store};
use serde_json::json;

/// An app whose store reaches a fresh table through `proxy` with the SDK's standard retries,
/// as in service, and a handle on the same table that goes straight to moto.
async fn app_through(proxy: &DynamoProxy) -> (TestApp, DynamoStore) {
    let direct = dynamo_store().await;
    let store = proxy.retrying_store(direct.table());
    let app = TestApp::new(StoreFixture::new(Arc::new(store), ())).await;
    (app, direct)
}

fn user_id(user: &TestUser) -> UserId {
    UserId::parse(&user.id).expect("a user id")
}

/// Follows `path`'s cursors to the end: every page must be empty and answered `200`.
async fn pages_of_nothing(t: &TestApp, path: &str, token: &str) -> usize {
    let mut url = path.to_owned();
    let mut pages = 0;
    loop {
        let r = t.get(&url, Some(token)).await;
        r.expect(200, "");
        let page = r.json();
        assert_eq!(page["results"], json!([]), "{url}");
        pages += 1;
        assert!(pages <= 5, "the pages of {path} never end");
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => return pages,
        }
    }
}

/// A type filter that matches nothing over exactly one page's worth of reads (1,000 deposits,
/// ten queries of 100): the page stops at the user's first operation, where DynamoDB still
/// names a last evaluated key. It ends the history; a cursor below it would ask DynamoDB for
/// `BETWEEN OP#…01 AND OP#…00`, which it refuses (`ValidationException`, a `500`). Forged but
/// validly signed positions at or below the first operation read as an empty last page too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_nothing_ends_without_an_empty_key_range() {
    let proxy = DynamoProxy::strict().await;
    let (t, direct) = app_through(&proxy).await;
    let staff = t.staff("admin").await;
    let alice = t.user("alice").await;
    super::seed_deposits(
        &direct,
        user_id(&alice),
        Timestamp::from_millis(1_700_000_000_000),
        1_000,
    )
    .await;
    let own = "/api/balance/v1/operations/?limit=20&type=transfer_in".to_owned();
    let admin = format!(
        "/api/admin/v1/users/{}/operations/?limit=20&type=transfer_in",
        alice.id
    );
    assert_eq!(pages_of_nothing(&t, &own, &alice.access).await, 1);
    assert_eq!(pages_of_nothing(&t, &admin, &staff.access).await, 1);

    let cursors = CursorCodec::new(derive_key(
        &SecretKey::new(t.secret.clone().into_bytes()).expect("a test key"),
        "cursor",
    ));
    for position in [0u64, 1] {
        for (kind, path, token) in [
            (CursorKind::History, &own, &alice.access),
            (CursorKind::AdminHistory, &admin, &staff.access),
        ] {
            for path in [path.clone(), path.replace("&type=transfer_in", "")] {
                let cursor =
                    cursors.encode_position(kind, user_id(&alice), &position.to_be_bytes());
                let r = t.get(&format!("{path}&cursor={cursor}"), Some(token)).await;
                r.expect(200, "");
                assert_eq!(
                    r.json(),
                    json!({"results": [], "next_cursor": null}),
                    "{path} at {position}"
                );
            }
        }
    }
    assert_eq!(proxy.refusals(), 0, "a call DynamoDB refuses was made");
}

/// Injects `TransactionConflictException` — a transaction in flight on the item, as DynamoDB
/// reports it to a plain write — on the calls `targets` picks, while `left` allows.
fn conflicts_on(
    targets: fn(&Call) -> bool,
    left: Arc<AtomicUsize>,
    met: Arc<AtomicUsize>,
) -> impl Fn(&Call) -> Verdict {
    move |call| {
        if targets(call)
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            met.fetch_add(1, Ordering::SeqCst);
            Verdict::Answer(dynamodb_error(
                "400 Bad Request",
                "TransactionConflictException",
            ))
        } else {
            Verdict::Forward
        }
    }
}

fn session_update(call: &Call) -> bool {
    call.operation == "updateitem" && call.writes_item("SESSION#")
}

fn revocation(call: &Call) -> bool {
    session_update(call) && call.update_expression().contains("revoked_at")
}

#[track_caller]
fn unavailable(r: &Resp) {
    r.expect(503, "service_unavailable");
    let after = r.header("retry-after").expect("a Retry-After header");
    assert!(after.parse::<u64>().is_ok_and(|s| s > 0), "{after}");
}

async fn logout(t: &TestApp, user: &TestUser) -> Resp {
    t.post("/api/auth/v1/logout/", Some(&user.access), &json!({}), &[])
        .await
}

async fn refresh(t: &TestApp, token: &str) -> Resp {
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({"refresh": token}),
        &[],
    )
    .await
}

async fn delete_session(t: &TestApp, user: &TestUser, id: &str) -> Resp {
    t.send(
        http::Method::DELETE,
        &format!("/api/auth/v1/sessions/{id}/"),
        &[("authorization", &format!("Bearer {}", user.access))],
        None,
    )
    .await
}

/// The ids of the user's live sessions other than the caller's own.
async fn other_sessions(t: &TestApp, user: &TestUser) -> Vec<String> {
    let r = t.get("/api/auth/v1/sessions/", Some(&user.access)).await;
    r.expect(200, "");
    r.json()["results"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|s| s["current"] == false)
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Every money movement puts the caller's session in its transaction, so a refresh, a logout
/// or a revocation may meet one in flight on that item: DynamoDB refuses the plain
/// `UpdateItem` with `TransactionConflictException`, which the SDK does not retry. The store
/// sends it again with backoff; the client sees the call succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_writes_that_meet_a_transaction_are_sent_again() {
    let (left, met) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = DynamoProxy::start(conflicts_on(session_update, left.clone(), met.clone())).await;
    let (t, _direct) = app_through(&proxy).await;
    let alice = t.user("alice").await;

    // A refresh.
    left.store(3, Ordering::SeqCst);
    let r = refresh(&t, &alice.refresh).await;
    r.expect(200, "");
    assert_eq!(met.swap(0, Ordering::SeqCst), 3);

    // Logout: 204, and the session is revoked.
    left.store(3, Ordering::SeqCst);
    logout(&t, &alice).await.expect(204, "");
    assert_eq!(met.swap(0, Ordering::SeqCst), 3);
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");

    // Revoking another session by id.
    let (access, refresh_token) = t.login("alice").await;
    let phone = TestUser {
        access,
        refresh: refresh_token,
        ..alice.clone()
    };
    let (access, refresh_token) = t.login("alice").await;
    let laptop = TestUser {
        access,
        refresh: refresh_token,
        ..alice.clone()
    };
    let ids = other_sessions(&t, &laptop).await;
    assert_eq!(ids.len(), 1);
    left.store(3, Ordering::SeqCst);
    delete_session(&t, &laptop, &ids[0]).await.expect(204, "");
    assert_eq!(met.swap(0, Ordering::SeqCst), 3);
    t.get("/api/auth/v1/me/", Some(&phone.access))
        .await
        .expect(401, "invalid_token");
    t.get("/api/auth/v1/me/", Some(&laptop.access))
        .await
        .expect(200, "");
}

/// Conflicts that outlast the retries: `503` with `Retry-After`, nothing applied, and the same
/// request succeeds once they pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_writes_that_keep_meeting_transactions_are_503_and_retryable() {
    let (left, met) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = DynamoProxy::start(conflicts_on(session_update, left.clone(), met.clone())).await;
    let (t, _direct) = app_through(&proxy).await;
    let alice = t.user("alice").await;

    left.store(usize::MAX, Ordering::SeqCst);
    unavailable(&logout(&t, &alice).await);
    let retries = met.load(Ordering::SeqCst);
    assert!((2..=100).contains(&retries), "{retries} calls");
    left.store(0, Ordering::SeqCst);
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(200, "");
    logout(&t, &alice).await.expect(204, "");
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");

    // A refresh: the presented token is not spent by the failed attempt.
    let bob = t.user("bob").await;
    left.store(usize::MAX, Ordering::SeqCst);
    unavailable(&refresh(&t, &bob.refresh).await);
    left.store(0, Ordering::SeqCst);
    refresh(&t, &bob.refresh).await.expect(200, "");

    // Revoking a session by id.
    let (access, refresh_token) = t.login("bob").await;
    let other = TestUser {
        access,
        refresh: refresh_token,
        ..bob.clone()
    };
    let ids = other_sessions(&t, &other).await;
    assert_eq!(ids.len(), 1);
    left.store(usize::MAX, Ordering::SeqCst);
    unavailable(&delete_session(&t, &other, &ids[0]).await);
    left.store(0, Ordering::SeqCst);
    delete_session(&t, &other, &ids[0]).await.expect(204, "");
    t.get("/api/auth/v1/me/", Some(&bob.access))
        .await
        .expect(401, "invalid_token");
}

/// A spent refresh token presented again revokes the session; when that revocation meets a
/// transaction in flight it is sent again, and while it cannot be made the client gets `503`,
/// never `token_reused` over a session left alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_never_leaves_its_session_alive() {
    let (left, met) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = DynamoProxy::start(conflicts_on(revocation, left.clone(), met.clone())).await;
    let (t, _direct) = app_through(&proxy).await;

    for persistent in [false, true] {
        let name = if persistent { "bob" } else { "alice" };
        let user = t.user(name).await;
        let r = refresh(&t, &user.refresh).await;
        r.expect(200, "");
        let (access, newest) = (
            r.json()["access"].as_str().unwrap().to_owned(),
            r.json()["refresh"].as_str().unwrap().to_owned(),
        );
        if persistent {
            left.store(usize::MAX, Ordering::SeqCst);
            unavailable(&refresh(&t, &user.refresh).await);
            left.store(0, Ordering::SeqCst);
            met.store(0, Ordering::SeqCst);
        } else {
            left.store(3, Ordering::SeqCst);
        }
        refresh(&t, &user.refresh).await.expect(401, "token_reused");
        if !persistent {
            assert_eq!(met.swap(0, Ordering::SeqCst), 3);
        }
        t.get("/api/auth/v1/me/", Some(&access))
            .await
            .expect(401, "invalid_token");
        let again = refresh(&t, &newest).await;
        assert_eq!(again.status, 401, "{:?}", again.json());
    }
}

/// Answers every call of `operation` with `answer`.
async fn answering(operation: &'static str, answer: Vec<u8>) -> DynamoProxy {
    DynamoProxy::start(move |call| {
        if call.operation == operation {
            Verdict::Answer(answer.clone())
        } else {
            Verdict::Forward
        }
    })
    .await
}

/// Every error DynamoDB may answer on the calls the store makes, persistently, through a client
/// that does not retry by itself: the transient ones end as `Unavailable` (`503` with
/// `Retry-After`), after the store's own bounded resends where it makes them; the rest as
/// `Internal` (`500`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dynamodb_error_is_classified_as_transient_or_not() {
    const BAD: &str = "400 Bad Request";
    let healthy = Arc::new(dynamo_store().await);
    let user =
        lighttech_tests::conformance_user(&(healthy.clone() as Arc<dyn Store>), "alice").await;
    let now = Timestamp::now();
    let session = SessionRecord {
        id: SessionId::new(),
        user,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_seconds(3600),
        refresh_jti: TokenId::new(),
        user_agent: None,
        ip: None,
        revoked_at: None,
    };
    assert!(healthy.create_session(&session).await.unwrap());

    // (operation, HTTP status, code, whether it is transient)
    let errors: &[(&str, &str, &str, bool)] = &[
        (
            "getitem",
            BAD,
            "ProvisionedThroughputExceededException",
            true,
        ),
        ("getitem", BAD, "RequestLimitExceeded", true),
        ("getitem", BAD, "ThrottlingException", true),
        (
            "getitem",
            "500 Internal Server Error",
            "InternalServerError",
            true,
        ),
        (
            "getitem",
            "503 Service Unavailable",
            "ServiceUnavailable",
            true,
        ),
        // A 5xx under a code DynamoDB does not document is the service's failure all the same.
        (
            "getitem",
            "500 Internal Server Error",
            "InternalFailure",
            true,
        ),
        ("getitem", BAD, "ResourceNotFoundException", false),
        ("query", BAD, "ThrottlingException", true),
        ("query", BAD, "ValidationException", false),
        ("updateitem", BAD, "TransactionConflictException", true),
        ("updateitem", BAD, "ReplicatedWriteConflictException", true),
        (
            "updateitem",
            BAD,
            "ProvisionedThroughputExceededException",
            true,
        ),
        (
            "updateitem",
            BAD,
            "ItemCollectionSizeLimitExceededException",
            false,
        ),
        ("putitem", BAD, "TransactionConflictException", true),
        ("deleteitem", BAD, "TransactionConflictException", true),
        (
            "transactwriteitems",
            BAD,
            "TransactionInProgressException",
            true,
        ),
        ("transactwriteitems", BAD, "RequestLimitExceeded", true),
        (
            "transactwriteitems",
            "500 Internal Server Error",
            "InternalServerError",
            true,
        ),
        (
            "transactwriteitems",
            BAD,
            "IdempotentParameterMismatchException",
            false,
        ),
    ];
    // (operation, answer, what the failure must name, whether it is transient)
    let mut cases: Vec<(&str, Vec<u8>, &str, bool)> = errors
        .iter()
        .map(|&(operation, status, code, transient)| {
            (operation, dynamodb_error(status, code), code, transient)
        })
        .collect();
    // A transaction cancelled for one item's throttling is tried again like a conflict, then
    // given up as unavailable; one cancelled as invalid is a failure.
    for (reason, shows, transient) in [
        ("ThrottlingError", "kept changing", true),
        ("ProvisionedThroughputExceeded", "kept changing", true),
        ("TransactionConflict", "kept changing", true),
        ("ValidationError", "ValidationError", false),
    ] {
        let answer = dynamodb_cancelled(&[reason, "None"]);
        cases.push(("transactwriteitems", answer, shows, transient));
    }
    let mut misclassified = Vec::new();
    for (operation, answer, code, transient) in cases {
        let proxy = answering(operation, answer).await;
        let store = proxy.store(healthy.table());
        let result: Result<(), StoreError> = match operation {
            "getitem" => store.account(user).await.map(drop),
            "query" => store
                .history(&HistoryQuery {
                    user,
                    limit: 5,
                    before_seq: None,
                    kinds: vec![],
                    since: None,
                    until: None,
                })
                .await
                .map(drop),
            "updateitem" => {
                store
                    .touch_session(user, session.id, Timestamp::now())
                    .await
            }
            "putitem" => {
                store
                    .append_audit(&lighttech::store::AuditEntry {
                        id: uuid::Uuid::new_v4(),
                        actor: lighttech::store::AuditParty {
                            id: user,
                            username: "alice".into(),
                        },
                        action: lighttech::store::AuditAction::ListUsers,
                        target: None,
                        detail: None,
                        at: Timestamp::now(),
                    })
                    .await
            }
            "deleteitem" => store.clear_login_attempts("alice").await,
            _ => store
                .apply_change(&BalanceChange {
                    user,
                    kind: ChangeKind::Deposit,
                    amount: Money::from_minor(100),
                    description: None,
                    operation_id: OperationId::new(),
                    now: Timestamp::now(),
                    idempotency: None,
                    session: None,
                })
                .await
                .map(drop),
        };
        let text = match &result {
            Ok(()) => "applied".to_owned(),
            Err(e) => lighttech::telemetry::error_chain(e),
        };
        let classified = matches!(
            (transient, &result),
            (true, Err(StoreError::Unavailable(_))) | (false, Err(StoreError::Internal(_)))
        );
        if !classified || !text.contains(code) {
            misclassified.push(format!("{code} on {operation}: {text}"));
        }
    }
    assert_eq!(misclassified, Vec::<String>::new());
    let account = healthy.account(user).await.unwrap().unwrap();
    assert_eq!(account.version, 0, "nothing was applied");
}

/// A plain write's conflicts are sent again a bounded number of times, and counted.
#[tokio::test]
async fn a_plain_write_is_sent_again_through_transient_conflicts_and_counted() {
    let healthy = Arc::new(dynamo_store().await);
    let user =
        lighttech_tests::conformance_user(&(healthy.clone() as Arc<dyn Store>), "alice").await;
    let now = Timestamp::now();
    let session = SessionRecord {
        id: SessionId::new(),
        user,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_seconds(3600),
        refresh_jti: TokenId::new(),
        user_agent: None,
        ip: None,
        revoked_at: None,
    };
    assert!(healthy.create_session(&session).await.unwrap());
    let (left, met) = (Arc::new(AtomicUsize::new(5)), Arc::new(AtomicUsize::new(0)));
    let proxy = DynamoProxy::start(conflicts_on(session_update, left, met.clone())).await;
    let store = proxy.store(healthy.table());
    let next = TokenId::new();
    let rotated = store
        .rotate_session(&Rotation {
            user,
            session: session.id,
            presented: session.refresh_jti,
            next,
            expires_at: now.plus_seconds(7200),
            now,
            max_lifetime_seconds: 30 * 24 * 3600,
        })
        .await
        .unwrap();
    assert_eq!(rotated, RotateOutcome::Rotated { created_at: now });
    assert_eq!(met.load(Ordering::SeqCst), 5);
    assert_eq!(store.stats.conflict_retries.load(Ordering::Relaxed), 5);
    let current = healthy.session(user, session.id).await.unwrap().unwrap();
    assert_eq!(current.refresh_jti, next);
}
