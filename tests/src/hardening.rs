//! Cases of the API suite for hostile input, outages and races: control characters in every
//! text field, a store that is down for the authentication primitives too, and requests racing
//! on one `Idempotency-Key`. They run on every backend with the rest of [`crate::api_suite`].

use std::sync::Arc;

use serde_json::{Value, json};

use crate::faulty::{FaultyStore, Mode};
use crate::{PASSWORD, Resp, TestApp, TestUser};

/// Asserts a `400 validation_error` whose `errors` name `field`.
#[track_caller]
fn refused_naming(r: &Resp, field: &str) {
    r.expect(400, "validation_error");
    assert!(
        r.json()["errors"].get(field).is_some(),
        "the errors do not name {field}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Every user the staff member can list, by username.
async fn usernames(t: &TestApp, staff: &TestUser) -> Vec<String> {
    let r = t
        .get("/api/admin/v1/users/?limit=100", Some(&staff.access))
        .await;
    r.expect(200, "");
    r.json()["results"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u["username"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn control_characters_are_refused_in_every_text_field(t: TestApp) {
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    t.user("bob").await;
    t.deposit(&alice, "10").await;
    let bodies_before = t.all_operations(&alice).await;
    let users_before = usernames(&t, &root).await;

    for bad in ["\u{0}", "\u{1}", "\u{9}", "\u{a}", "\u{1f}", "\u{7f}"] {
        let text = |s: &str| format!("{s}{bad}x");
        let registration = json!({
            "username": "carol",
            "email": "carol@example.com",
            "password": PASSWORD,
        });
        for field in ["username", "email", "password"] {
            let mut body = registration.clone();
            body[field] = json!(text(body[field].as_str().unwrap_or_default()));
            let r = t.post("/api/auth/v1/register/", None, &body, &[]).await;
            refused_naming(&r, field);
        }
        for (field, body) in [
            (
                "username",
                json!({"username": text("alice"), "password": PASSWORD}),
            ),
            (
                "password",
                json!({"username": "alice", "password": text(PASSWORD)}),
            ),
        ] {
            let r = t.post("/api/auth/v1/login/", None, &body, &[]).await;
            refused_naming(&r, field);
        }
        let r = t
            .post(
                "/api/auth/v1/token/refresh/",
                None,
                &json!({"refresh": text(&alice.refresh)}),
                &[],
            )
            .await;
        refused_naming(&r, "refresh");
        let r = t
            .post(
                "/api/auth/v1/logout/",
                Some(&alice.access),
                &json!({"refresh": text(&alice.refresh)}),
                &[],
            )
            .await;
        refused_naming(&r, "refresh");

        for (path, body, field) in [
            (
                "deposit",
                json!({"amount": "1", "description": text("d")}),
                "description",
            ),
            (
                "withdraw",
                json!({"amount": "1", "description": text("w")}),
                "description",
            ),
            ("transfer", json!({"amount": "1", "to": text("bob")}), "to"),
            (
                "transfer",
                json!({"amount": "1", "to": "bob", "description": text("t")}),
                "description",
            ),
        ] {
            let r = t
                .post(
                    &format!("/api/balance/v1/{path}/"),
                    Some(&alice.access),
                    &body,
                    &[("idempotency-key", "ctl-1")],
                )
                .await;
            refused_naming(&r, field);
        }

        let encoded: String = form_encode(&text("q"));
        for (path, field) in [
            (
                format!("/api/balance/v1/operations/?cursor={encoded}"),
                "cursor",
            ),
            (
                format!("/api/balance/v1/operations/?type={encoded}"),
                "type",
            ),
            (
                format!("/api/balance/v1/operations/?unknown={encoded}"),
                "unknown",
            ),
        ] {
            refused_naming(&t.get(&path, Some(&alice.access)).await, field);
        }
        for path in [
            format!("/api/admin/v1/users/?q={encoded}"),
            format!(
                "/api/admin/v1/users/{}/operations/?cursor={encoded}",
                alice.id
            ),
            format!("/api/admin/v1/audit/?cursor={encoded}"),
        ] {
            let field = if path.contains("?q=") { "q" } else { "cursor" };
            refused_naming(&t.get(&path, Some(&root.access)).await, field);
        }
        // A query string is text on every endpoint, also where no parameter is read: the
        // request is refused before its valid body moves money, opens or ends a session.
        let query = format!("?note={encoded}");
        for (path, body) in [
            ("/api/balance/v1/deposit/", json!({"amount": "1"})),
            ("/api/balance/v1/withdraw/", json!({"amount": "1"})),
            (
                "/api/balance/v1/transfer/",
                json!({"amount": "1", "to": "bob"}),
            ),
            ("/api/auth/v1/logout/", json!({"refresh": alice.refresh})),
            (
                "/api/auth/v1/login/",
                json!({"username": "alice", "password": PASSWORD}),
            ),
            (
                "/api/auth/v1/register/",
                json!({"username": "carol", "email": "carol@example.com", "password": PASSWORD}),
            ),
        ] {
            let r = t
                .post(&format!("{path}{query}"), Some(&alice.access), &body, &[])
                .await;
            refused_naming(&r, "note");
        }
        for path in ["/api/balance/v1/", "/api/auth/v1/me/"] {
            let r = t.get(&format!("{path}{query}"), Some(&alice.access)).await;
            refused_naming(&r, "note");
        }
    }

    // Nothing was read into an answer or written: no user, no operation, no revoked session.
    assert_eq!(usernames(&t, &root).await, users_before);
    assert_eq!(t.balance(&alice).await, "10.00");
    assert_eq!(t.all_operations(&alice).await, bodies_before);
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(200, "");
    // The same key, without the control character, was never recorded.
    let r = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1", "description": "d"}),
            &[("idempotency-key", "ctl-1")],
        )
        .await;
    r.expect(201, "");
    assert!(r.header("idempotent-replayed").is_none());
}

/// Percent-encodes every byte outside `A-Z a-z 0-9`, as a form would.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The app under test, on a store that fails on demand.
fn with_faulty_store(t: TestApp) -> (TestApp, Arc<FaultyStore>) {
    let faulty = Arc::new(FaultyStore::new(t.app.store.clone()));
    let key = lighttech::config::SecretKey::new(t.secret.clone().into_bytes())
        .expect("the test key is valid");
    let app =
        lighttech::App::new(t.app.config.clone(), faulty.clone(), &key).with_clock(t.clock.clone());
    (
        TestApp {
            app: Arc::new(app),
            ..t
        },
        faulty,
    )
}

#[track_caller]
fn unavailable(r: &Resp, what: &str) {
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "service_unavailable"),
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.header("retry-after").is_some(), "{what}: no Retry-After");
}

pub async fn an_outage_during_authentication_answers_503_never_401(t: TestApp) {
    let (t, faulty) = with_faulty_store(t);
    let alice = t.user("alice").await;
    let (other_access, other_refresh) = t.login("alice").await;
    let sessions = t
        .get("/api/auth/v1/sessions/", Some(&alice.access))
        .await
        .json();
    let other_session = sessions["results"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["current"] == json!(false)))
        .and_then(|s| s["id"].as_str())
        .expect("the second session is listed")
        .to_owned();

    faulty.set(Mode::Down);
    let registration =
        json!({"username": "dave", "email": "dave@example.com", "password": PASSWORD});
    let login = json!({"username": "alice", "password": PASSWORD});
    let wrong = json!({"username": "alice", "password": "not-the-password"});
    let refresh = json!({"refresh": alice.refresh});
    for (what, r) in [
        (
            "register",
            t.post("/api/auth/v1/register/", None, &registration, &[])
                .await,
        ),
        (
            "login",
            t.post("/api/auth/v1/login/", None, &login, &[]).await,
        ),
        (
            "login with a wrong password",
            t.post("/api/auth/v1/login/", None, &wrong, &[]).await,
        ),
        (
            "refresh",
            t.post("/api/auth/v1/token/refresh/", None, &refresh, &[])
                .await,
        ),
        ("me", t.get("/api/auth/v1/me/", Some(&alice.access)).await),
        (
            "sessions",
            t.get("/api/auth/v1/sessions/", Some(&alice.access)).await,
        ),
        (
            "revoke a session",
            t.send(
                http::Method::DELETE,
                &format!("/api/auth/v1/sessions/{other_session}/"),
                &[("authorization", &format!("Bearer {}", alice.access))],
                None,
            )
            .await,
        ),
        (
            "logout",
            t.post("/api/auth/v1/logout/", Some(&other_access), &json!({}), &[])
                .await,
        ),
        (
            "balance",
            t.get("/api/balance/v1/", Some(&alice.access)).await,
        ),
        (
            "deposit",
            t.post(
                "/api/balance/v1/deposit/",
                Some(&alice.access),
                &json!({"amount": "1"}),
                &[],
            )
            .await,
        ),
    ] {
        unavailable(&r, what);
    }

    // Back up: nothing happened during the outage. The refresh token was not spent, the other
    // session was neither revoked nor logged out, dave does not exist, and no failed login was
    // counted against alice.
    faulty.set(Mode::Healthy);
    let r = t
        .post("/api/auth/v1/token/refresh/", None, &refresh, &[])
        .await;
    r.expect(200, "");
    t.get("/api/auth/v1/me/", Some(&other_access))
        .await
        .expect(200, "");
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({"refresh": other_refresh}),
        &[],
    )
    .await
    .expect(200, "");
    t.register("dave").await;
    for _ in 0..t.app.config.login_max_attempts.saturating_sub(1) {
        t.post("/api/auth/v1/login/", None, &wrong, &[])
            .await
            .expect(401, "invalid_credentials");
    }
    t.login("alice").await;
    assert_eq!(t.balance(&alice).await, "0.00");
}

pub async fn different_bodies_racing_on_one_key_move_money_once(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "100").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = t.app.clone();
        let token = alice.access.clone();
        tasks.push(tokio::spawn(async move {
            // Two different requests under one key: 7.00 and 9.00.
            let amount = if i % 2 == 0 { "7" } else { "9" };
            let r = crate::post_json(
                &app,
                "/api/balance/v1/withdraw/",
                Some(&token),
                &json!({ "amount": amount }),
                &[("idempotency-key", "race-two-bodies")],
            )
            .await;
            (amount, r)
        }));
    }
    let mut fresh = Vec::new();
    let mut replayed = Vec::new();
    let mut mismatched = Vec::new();
    for task in tasks {
        let (amount, r) = task.await.expect("the request task ran");
        match (r.status, r.code().as_str()) {
            (201, "") if r.header("idempotent-replayed").is_some() => replayed.push((amount, r)),
            (201, "") => fresh.push((amount, r)),
            (422, "idempotency_key_mismatch") => mismatched.push(amount),
            _ => panic!("unexpected answer: {r:?}"),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one request moved money");
    let (winner, first) = &fresh[0];
    for (amount, r) in &replayed {
        assert_eq!(amount, winner, "only the same body replays");
        assert_eq!(r.body, first.body);
    }
    assert!(
        mismatched.iter().all(|amount| amount != winner),
        "the same body is never refused as a mismatch"
    );
    assert_eq!(replayed.len() + mismatched.len(), 15);
    let expected = format!("{}.00", 100 - winner.parse::<i64>().unwrap_or_default());
    assert_eq!(t.balance(&alice).await, expected);
    let withdrawals = t
        .all_operations(&alice)
        .await
        .into_iter()
        .filter(|op| op["type"] == "withdrawal")
        .count();
    assert_eq!(withdrawals, 1, "one operation recorded");
}

pub async fn a_key_replays_until_its_retention_ends_and_an_empty_key_is_refused(t: TestApp) {
    let alice = t.user("alice").await;
    let deposit = |key: &'static str, token: String| {
        let t = t.clone();
        async move {
            t.post(
                "/api/balance/v1/deposit/",
                Some(&token),
                &json!({"amount": "5"}),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let empty = deposit("", alice.access.clone()).await;
    refused_naming(&empty, "Idempotency-Key");
    assert_eq!(t.balance(&alice).await, "0.00");

    let first = deposit("day-key", alice.access.clone()).await;
    first.expect(201, "");
    t.clock
        .advance_seconds(t.app.config.idempotency_ttl_seconds - 1);
    // The access token has long expired; a fresh login is the same user.
    let (access, _) = t.login("alice").await;
    let replay = deposit("day-key", access.clone()).await;
    replay.expect(201, "");
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(balance_of(&t, &access).await, json!("5.00"));
}

async fn balance_of(t: &TestApp, access: &str) -> Value {
    let r = t.get("/api/balance/v1/", Some(access)).await;
    r.expect(200, "");
    r.json()["balance"].clone()
}

pub async fn an_idempotency_key_tells_no_description_from_any_description(t: TestApp) {
    use lighttech::domain::{ChangeKind, IdempotencyKey, Money};
    use lighttech::service::money::{ChangeRequest, MoneyTerms, change_balance};

    let alice = t.user("alice").await;
    let principal = lighttech::service::auth::verify_access(&t.app, &alice.access)
        .await
        .expect("alice's access token verifies");
    let request = |description: Option<&str>| ChangeRequest {
        kind: ChangeKind::Deposit,
        terms: MoneyTerms {
            amount: Money::from_minor(500),
            description: description.map(str::to_owned),
            idempotency_key: Some(IdempotencyKey::parse(b"presence").expect("a valid key")),
        },
    };
    // The service is called directly: the HTTP layer refuses control characters before they
    // get this far (PostgreSQL would refuse a NUL too), so the empty text stands for any text.
    let first = change_balance(&t.app, principal, request(None))
        .await
        .expect("the first deposit applies");
    assert!(!first.replayed);
    for description in ["", " "] {
        let again = change_balance(&t.app, principal, request(Some(description))).await;
        assert!(
            matches!(again, Err(lighttech::ApiError::IdempotencyKeyMismatch)),
            "{description:?} was taken for no description: {again:?}"
        );
    }
    let replay = change_balance(&t.app, principal, request(None))
        .await
        .expect("the same request replays");
    assert!(replay.replayed);
    assert_eq!(t.balance(&alice).await, "5.00");
}
