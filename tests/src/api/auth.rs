//! Logging in and tokens: bearer pairs, uniform failures, the per-username throttle, refresh
//! rotation and its reuse detection, token expiry and the strict checks on the `Authorization`
//! header (forged, tampered and malformed tokens).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Method;
use lighttech::clock::Clock;
use lighttech::domain::{Timestamp, UserId};
use serde_json::{Value, json};

use super::login_with;
use crate::{PASSWORD, Resp, TestApp};

pub async fn login_returns_a_bearer_pair(t: TestApp) {
    t.register("Alice").await;
    let r = login_with(&t, json!({"username": "aLiCe", "password": PASSWORD})).await;
    r.expect(200, "");
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 600);
    assert!(j["access"].as_str().unwrap().split('.').count() == 3);
    assert!(j["refresh"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let me = t.get("/api/auth/v1/me/", j["access"].as_str()).await;
    me.expect(200, "");
    assert_eq!(me.json()["username"], "Alice");
}

pub async fn login_failures_look_the_same_whether_or_not_the_user_exists(t: TestApp) {
    t.register("alice").await;
    let wrong = login_with(
        &t,
        json!({"username": "alice", "password": "wrong-password-1"}),
    )
    .await;
    let unknown = login_with(
        &t,
        json!({"username": "nobody", "password": "wrong-password-1"}),
    )
    .await;
    let invalid_name = login_with(
        &t,
        json!({"username": "no body!", "password": "wrong-password-1"}),
    )
    .await;
    wrong.expect(401, "invalid_credentials");
    unknown.expect(401, "invalid_credentials");
    invalid_name.expect(401, "invalid_credentials");
    assert_eq!(wrong.json(), unknown.json());
    assert_eq!(wrong.json(), invalid_name.json());
    login_with(&t, json!({"username": "alice"}))
        .await
        .expect(400, "validation_error");
}

pub async fn login_is_throttled_per_username(t: TestApp) {
    t.register("alice").await;
    t.register("bob").await;
    let attempt = |user: &'static str, password: &'static str| {
        let t = t.clone();
        async move { login_with(&t, json!({"username": user, "password": password})).await }
    };
    for _ in 0..5 {
        attempt("alice", "wrong-password-1")
            .await
            .expect(401, "invalid_credentials");
    }
    let limited = attempt("ALICE", PASSWORD).await;
    limited.expect(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    // Another username is not affected.
    attempt("bob", PASSWORD).await.expect(200, "");
    // Unknown usernames are throttled the same way.
    for _ in 0..5 {
        attempt("ghost", "wrong-password-1")
            .await
            .expect(401, "invalid_credentials");
    }
    attempt("ghost", "wrong-password-1")
        .await
        .expect(429, "rate_limited");
    // The window passes.
    t.clock.advance_seconds(901);
    attempt("alice", PASSWORD).await.expect(200, "");
    // A success forgets the earlier failures.
    for _ in 0..4 {
        attempt("alice", "wrong-password-1")
            .await
            .expect(401, "invalid_credentials");
    }
    attempt("alice", PASSWORD).await.expect(200, "");
    for _ in 0..4 {
        attempt("alice", "wrong-password-1")
            .await
            .expect(401, "invalid_credentials");
    }
    attempt("alice", PASSWORD).await.expect(200, "");
}

pub(super) async fn refresh(t: &TestApp, token: &str) -> Resp {
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({ "refresh": token }),
        &[],
    )
    .await
}

pub async fn refresh_rotates_and_reuse_revokes_the_session(t: TestApp) {
    let alice = t.user("alice").await;
    let r = refresh(&t, &alice.refresh).await;
    r.expect(200, "");
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), 2);
    let (access2, refresh2) = (
        j["access"].as_str().unwrap().to_owned(),
        j["refresh"].as_str().unwrap().to_owned(),
    );
    assert_ne!(refresh2, alice.refresh);
    t.get("/api/auth/v1/me/", Some(&access2))
        .await
        .expect(200, "");
    // The spent token again: reuse detected, the whole session revoked.
    refresh(&t, &alice.refresh)
        .await
        .expect(401, "token_reused");
    refresh(&t, &refresh2).await.expect(401, "invalid_token");
    t.get("/api/auth/v1/me/", Some(&access2))
        .await
        .expect(401, "invalid_token");
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    // Other sessions of the same user are untouched.
    let (access3, _) = t.login("alice").await;
    t.get("/api/auth/v1/me/", Some(&access3))
        .await
        .expect(200, "");
}

pub async fn refresh_rejects_access_tokens_and_garbage(t: TestApp) {
    let alice = t.user("alice").await;
    refresh(&t, &alice.access)
        .await
        .expect(401, "invalid_token");
    refresh(&t, "garbage").await.expect(401, "invalid_token");
    refresh(&t, "").await.expect(401, "invalid_token");
    t.post("/api/auth/v1/token/refresh/", None, &json!({}), &[])
        .await
        .expect(400, "validation_error");
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({"refresh": 5}),
        &[],
    )
    .await
    .expect(400, "validation_error");
    // None of that spent the real token.
    refresh(&t, &alice.refresh).await.expect(200, "");
}

pub async fn racing_refreshes_let_exactly_one_win(t: TestApp) {
    let alice = t.user("alice").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let t = t.clone();
        let token = alice.refresh.clone();
        tasks.push(tokio::spawn(async move { refresh(&t, &token).await }));
    }
    let mut statuses = HashMap::new();
    for task in tasks {
        let r = task.await.unwrap();
        *statuses.entry((r.status, r.code())).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&(200, String::new())),
        Some(&1),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.values().sum::<i32>(),
        8,
        "every request answered: {statuses:?}"
    );
    assert!(
        statuses
            .keys()
            .all(|(s, c)| *s == 200 || (*s == 401 && (c == "token_reused" || c == "invalid_token"))),
        "{statuses:?}"
    );
}

/// A token's `exp` claim, as an instant.
pub(super) fn exp_of(token: &str) -> Timestamp {
    Timestamp::from_millis(claims_of(token)["exp"].as_i64().unwrap() * 1000)
}

pub async fn tokens_are_refused_from_their_expiry_on(t: TestApp) {
    t.register("alice").await;
    // A second before its `exp` a token still works; at its `exp` and after, it does not.
    for (offset_ms, works) in [(-1000, true), (0, false), (1000, false)] {
        // Logged in at a time with a fraction of a second, so `exp` (whole seconds) falls
        // before the session's own end, which is kept to the millisecond.
        let now = t.clock.now();
        t.clock
            .set(Timestamp::from_millis(now.unix_seconds() * 1000 + 1500));
        let (access, refresh_token) = t.login("alice").await;

        t.clock
            .set(Timestamp::from_millis(exp_of(&access).millis() + offset_ms));
        let me = t.get("/api/auth/v1/me/", Some(&access)).await;
        let r = t
            .post(
                "/api/balance/v1/deposit/",
                Some(&access),
                &json!({"amount": "1"}),
                &[],
            )
            .await;
        if works {
            me.expect(200, "");
            r.expect(201, "");
        } else {
            me.expect(401, "invalid_token");
            r.expect(401, "invalid_token");
        }

        t.clock.set(Timestamp::from_millis(
            exp_of(&refresh_token).millis() + offset_ms,
        ));
        let r = refresh(&t, &refresh_token).await;
        if works {
            r.expect(200, "");
        } else {
            r.expect(401, "invalid_token");
        }
    }
}

fn forge(header: &str, claims: &Value, key: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let h = URL_SAFE_NO_PAD.encode(header);
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn header_of(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

pub async fn the_authorization_header_is_checked_strictly(t: TestApp) {
    let alice = t.user("alice").await;
    let me = |auth: Option<String>| {
        let t = t.clone();
        async move {
            let headers: Vec<(&str, &str)> = match &auth {
                Some(a) => vec![("authorization", a.as_str())],
                None => vec![],
            };
            t.send(Method::GET, "/api/auth/v1/me/", &headers, None)
                .await
        }
    };
    let r = me(None).await;
    r.expect(401, "not_authenticated");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    for garbled in [
        format!("Basic {}", alice.access),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {} extra", alice.access),
        alice.access.clone(),
    ] {
        me(Some(garbled)).await.expect(401, "not_authenticated");
    }
    me(Some(format!("bearer {}", alice.access)))
        .await
        .expect(200, "");

    let key = lighttech::auth::derive_key(
        &lighttech::config::SecretKey::new(t.secret.clone().into_bytes()).unwrap(),
        "jwt",
    );
    let claims = claims_of(&alice.access);
    // The issued token names its key; a forgery naming the same key with the right key is
    // accepted, so the checks below fail for their own reason.
    let kid = header_of(&alice.access)["kid"]
        .as_str()
        .expect("every token names its key")
        .to_owned();
    assert_eq!(header_of(&alice.refresh)["kid"], kid.as_str());
    let header = &format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
    me(Some(format!("Bearer {}", forge(header, &claims, &key))))
        .await
        .expect(200, "");
    let with_kid = |kid: &str| format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
    let mut invalid = vec![
        "garbage".to_owned(),
        forge(header, &claims, b"another-key-another-key-another-key"),
        forge(&header.replace("HS256", "HS512"), &claims, &key),
        // No kid, an unknown one, one of the wrong shape or length.
        forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, &key),
        forge(&with_kid(&"A".repeat(kid.len())), &claims, &key),
        forge(&with_kid(&kid[1..]), &claims, &key),
        forge(&with_kid(&format!("{kid}A")), &claims, &key),
        forge(&with_kid(&"A".repeat(2000)), &claims, &key),
        forge(&with_kid(&kid.replace(|_: char| true, "%")), &claims, &key),
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
        alice.refresh.clone(),
    ];
    for (claim, value) in [
        ("typ", json!("refresh")),
        ("iss", json!("someone-else")),
        ("sub", json!(UserId::new().to_string())),
        ("sid", json!(UserId::new().to_string())),
        ("exp", json!(Timestamp::now().unix_seconds() - 60)),
        ("iat", json!(Timestamp::now().unix_seconds() + 3600)),
    ] {
        let mut c = claims.clone();
        c[claim] = value;
        invalid.push(forge(header, &c, &key));
    }
    for claim in ["sub", "sid", "jti", "typ", "iat", "exp", "iss"] {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().remove(claim);
        invalid.push(forge(header, &c, &key));
    }
    for token in invalid {
        let r = me(Some(format!("Bearer {token}"))).await;
        r.expect(401, "invalid_token");
        assert!(r.header("www-authenticate").is_some());
    }
    // An access token that expired by the clock of the server that issued it.
    t.clock.advance_seconds(-3600);
    let (old_access, _) = t.login("alice").await;
    t.clock.advance_seconds(3600);
    me(Some(format!("Bearer {old_access}")))
        .await
        .expect(401, "invalid_token");
}
