//! Sessions: their maximum lifetime, logout and revocation (a revoked session moves no money),
//! the caller's profile and the list of their own sessions.

use http::Method;
use lighttech::clock::Clock;
use lighttech::domain::UserId;
use serde_json::{Value, json};

use super::auth::{exp_of, refresh};
use super::is_rfc3339_millis_z;
use crate::{PASSWORD, TestApp};

pub async fn a_session_ends_at_its_maximum_lifetime_however_often_it_is_refreshed(t: TestApp) {
    const DAY: i64 = 86_400;
    t.register("alice").await;
    let login_at = t.clock.now();
    let (_, mut refresh_token) = t.login("alice").await;
    let deadline = login_at.plus_seconds(30 * DAY);
    let last = deadline.plus_seconds(-60);
    // Refreshed every six hours, it lives on until a minute before its deadline.
    let mut refreshes = 0;
    while t.clock.now().plus_seconds(6 * 3600) < last {
        t.clock.advance_seconds(6 * 3600);
        let r = refresh(&t, &refresh_token).await;
        r.expect(200, "");
        refresh_token = r.json()["refresh"].as_str().unwrap().to_owned();
        refreshes += 1;
    }
    assert!(refreshes >= 100, "{refreshes}");
    t.clock.set(last);
    let r = refresh(&t, &refresh_token).await;
    r.expect(200, "");
    let (access, refresh_token) = (
        r.json()["access"].as_str().unwrap().to_owned(),
        r.json()["refresh"].as_str().unwrap().to_owned(),
    );
    // The tokens issued then expire no later than the deadline.
    assert!(exp_of(&access) <= deadline, "the access token outlives it");
    assert!(
        exp_of(&refresh_token) <= deadline,
        "the refresh token outlives it"
    );
    t.get("/api/auth/v1/me/", Some(&access))
        .await
        .expect(200, "");
    // Another login, late in the first one's life, to watch the list from.
    let (other, _) = t.login("alice").await;
    let listed = t.get("/api/auth/v1/sessions/", Some(&other)).await;
    listed.expect(200, "");
    assert_eq!(listed.json()["results"].as_array().unwrap().len(), 2);

    // A second past the deadline the session has ended, however recently it was refreshed.
    t.clock.set(deadline.plus_seconds(1));
    refresh(&t, &refresh_token)
        .await
        .expect(401, "invalid_token");
    t.get("/api/auth/v1/me/", Some(&access))
        .await
        .expect(401, "invalid_token");
    t.post(
        "/api/balance/v1/deposit/",
        Some(&access),
        &json!({"amount": "1"}),
        &[],
    )
    .await
    .expect(401, "invalid_token");
    let listed = t.get("/api/auth/v1/sessions/", Some(&other)).await;
    listed.expect(200, "");
    assert_eq!(
        listed.json()["results"].as_array().unwrap().len(),
        1,
        "an ended session is not listed"
    );

    // A refresh lifetime longer than the maximum is cut to it, at login already.
    let secret = crate::test_secret();
    let config = crate::test_config(&[
        ("SECRET_KEY", secret.as_str()),
        ("SESSION_MAX_LIFETIME_DAYS", "1"),
        ("REFRESH_TOKEN_LIFETIME_MINUTES", "4320"),
    ]);
    let key = config.secret_key.clone().unwrap();
    let short = TestApp::from_app(
        lighttech::App::new(config, t.app.store.clone(), &key),
        secret,
    );
    let login_at = short.clock.now();
    let (_, refresh_token) = short.login("alice").await;
    let deadline = login_at.plus_seconds(DAY);
    assert!(exp_of(&refresh_token) <= deadline);
    assert!(exp_of(&refresh_token) > deadline.plus_seconds(-2));
    short.clock.set(deadline.plus_seconds(-1));
    let r = refresh(&short, &refresh_token).await;
    r.expect(200, "");
    short.clock.set(deadline);
    let refresh_token = r.json()["refresh"].as_str().unwrap().to_owned();
    refresh(&short, &refresh_token)
        .await
        .expect(401, "invalid_token");
}

pub async fn logout_revokes_the_session_and_its_tokens(t: TestApp) {
    let alice = t.user("alice").await;
    let (other_access, _) = t.login("alice").await;
    let r = t
        .post(
            "/api/auth/v1/logout/",
            Some(&alice.access),
            &json!({"refresh": alice.refresh}),
            &[],
        )
        .await;
    r.expect(204, "");
    assert!(r.body.is_empty());
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    refresh(&t, &alice.refresh)
        .await
        .expect(401, "invalid_token");
    t.get("/api/auth/v1/me/", Some(&other_access))
        .await
        .expect(200, "");
    // Logout without a body works too.
    let r = t
        .send(
            Method::POST,
            "/api/auth/v1/logout/",
            &[("authorization", &format!("Bearer {other_access}"))],
            None,
        )
        .await;
    r.expect(204, "");
    t.get("/api/auth/v1/me/", Some(&other_access))
        .await
        .expect(401, "invalid_token");
}

pub async fn a_revoked_session_moves_no_money_and_hears_invalid_token_first(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "50").await;
    let key = [("idempotency-key", "before-logout")];
    t.post(
        "/api/balance/v1/withdraw/",
        Some(&alice.access),
        &json!({"amount": "5"}),
        &key,
    )
    .await
    .expect(201, "");
    t.post("/api/auth/v1/logout/", Some(&alice.access), &json!({}), &[])
        .await
        .expect(204, "");
    // Whatever the request, the revoked session's answer is `invalid_token`: a valid movement,
    // a replay of a key it recorded, one the balance refuses, and requests that fail validation.
    let long_key = "k".repeat(256);
    type Request<'a> = (&'a str, Value, &'a [(&'a str, &'a str)]);
    let refused: [Request; 7] = [
        ("deposit", json!({"amount": "1"}), &[]),
        ("withdraw", json!({"amount": "5"}), &key),
        ("withdraw", json!({"amount": "1000"}), &[]),
        ("transfer", json!({"to": "bob", "amount": "1"}), &[]),
        ("transfer", json!({"to": "alice", "amount": "1"}), &[]),
        ("deposit", json!({"amount": "-1", "extra": true}), &[]),
        (
            "transfer",
            json!({"to": "bob", "amount": "1"}),
            &[("idempotency-key", long_key.as_str())],
        ),
    ];
    for (path, body, headers) in refused {
        let r = t
            .post(
                &format!("/api/balance/v1/{path}/"),
                Some(&alice.access),
                &body,
                headers,
            )
            .await;
        assert!(
            r.status == 401 && r.json()["code"] == "invalid_token",
            "{path} {body}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = t
        .send(
            Method::POST,
            "/api/balance/v1/deposit/",
            &[
                ("authorization", &format!("Bearer {}", alice.access)),
                ("content-type", "application/json"),
            ],
            Some(b"{not json".to_vec()),
        )
        .await;
    r.expect(401, "invalid_token");
    // Nothing moved; a new session works and sees the one withdrawal.
    let (access, _) = t.login("alice").await;
    let r = t.get("/api/balance/v1/", Some(&access)).await;
    r.expect(200, "");
    assert_eq!(r.json()["balance"], "45.00");
    assert_eq!(t.balance(&bob).await, "0.00");
    let r = t.get("/api/balance/v1/operations/", Some(&access)).await;
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 2);
}

pub async fn logout_with_another_sessions_refresh_token_is_refused(t: TestApp) {
    let alice = t.user("alice").await;
    let (_, other_refresh) = t.login("alice").await;
    let bob = t.user("bob").await;
    for token in [
        other_refresh.as_str(),
        bob.refresh.as_str(),
        "garbage",
        alice.access.as_str(),
    ] {
        t.post(
            "/api/auth/v1/logout/",
            Some(&alice.access),
            &json!({ "refresh": token }),
            &[],
        )
        .await
        .expect(400, "validation_error");
    }
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(200, "");
    t.post("/api/auth/v1/logout/", None, &json!({}), &[])
        .await
        .expect(401, "not_authenticated");
}

pub async fn me_returns_the_profile(t: TestApp) {
    let alice = t.user("Alice").await;
    let r = t.get("/api/auth/v1/me/", Some(&alice.access)).await;
    r.expect(200, "");
    let j = r.json();
    assert_eq!(j["id"], alice.id.as_str());
    assert_eq!(j["username"], "Alice");
    assert_eq!(j["email"], "alice@example.com");
    assert_eq!(j["is_staff"], false);
    assert!(is_rfc3339_millis_z(&j["created_at"]));
    assert_eq!(j.as_object().unwrap().len(), 5);
}

pub async fn sessions_are_listed_and_revoked_by_their_owner(t: TestApp) {
    let alice = t.user("alice").await;
    t.clock.advance_seconds(1);
    let r = t
        .post(
            "/api/auth/v1/login/",
            None,
            &json!({"username": "alice", "password": PASSWORD}),
            &[("user-agent", "phone/1.0")],
        )
        .await;
    r.expect(200, "");
    let phone_access = r.json()["access"].as_str().unwrap().to_owned();
    let bob = t.user("bob").await;

    let list = t.get("/api/auth/v1/sessions/", Some(&alice.access)).await;
    list.expect(200, "");
    let results = list.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["user_agent"], "phone/1.0", "newest first");
    assert_eq!(results[0]["current"], false);
    assert_eq!(results[1]["current"], true);
    for s in &results {
        for field in [
            "id",
            "created_at",
            "last_used_at",
            "user_agent",
            "ip",
            "current",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s}");
        }
        assert!(is_rfc3339_millis_z(&s["created_at"]));
    }
    let phone_id = results[0]["id"].as_str().unwrap().to_owned();

    // Someone else's session, an unknown one and a malformed id are all not found.
    let bob_sessions = t.get("/api/auth/v1/sessions/", Some(&bob.access)).await;
    let bob_sid = bob_sessions.json()["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = |token: String, id: String| {
        let t = t.clone();
        async move {
            t.send(
                Method::DELETE,
                &format!("/api/auth/v1/sessions/{id}/"),
                &[("authorization", &format!("Bearer {token}"))],
                None,
            )
            .await
        }
    };
    delete(alice.access.clone(), bob_sid)
        .await
        .expect(404, "not_found");
    delete(alice.access.clone(), UserId::new().to_string())
        .await
        .expect(404, "not_found");
    delete(alice.access.clone(), "not-a-uuid".into())
        .await
        .expect(404, "not_found");
    t.get("/api/auth/v1/me/", Some(&bob.access))
        .await
        .expect(200, "");

    delete(alice.access.clone(), phone_id.clone())
        .await
        .expect(204, "");
    t.get("/api/auth/v1/me/", Some(&phone_access))
        .await
        .expect(401, "invalid_token");
    let list = t.get("/api/auth/v1/sessions/", Some(&alice.access)).await;
    assert_eq!(list.json()["results"].as_array().unwrap().len(), 1);
    delete(alice.access.clone(), phone_id)
        .await
        .expect(404, "not_found");
}
