//! Cases of the API suite for signing-key rotation: a process restarted with
//! `SECRET_KEY`/`SECRET_KEY_PREVIOUS` still accepts what the previous key signed (tokens,
//! cursors) and signs anew with the current one; after a second rotation the oldest key's
//! tokens and cursors are refused. They run on every backend with the rest of
//! [`crate::api_suite`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lighttech::App;
use lighttech::config::{Config, SecretKey};
use serde_json::{Value, json};

use crate::{Resp, TestApp, TestUser};

/// The same store (and the same clock), restarted with `SECRET_KEY=current` and
/// `SECRET_KEY_PREVIOUS=previous`.
fn restarted(t: &TestApp, current: &str, previous: Option<&str>) -> TestApp {
    let key = |k: &str| SecretKey::new(k.as_bytes().to_vec()).expect("a test key");
    let config = Config {
        secret_key: Some(key(current)),
        secret_key_previous: previous.map(key),
        ..t.app.config.clone()
    };
    let keys = config.key_set().expect("SECRET_KEY is set");
    TestApp {
        app: Arc::new(App::new(config, t.app.store.clone(), keys).with_clock(t.clock.clone())),
        secret: current.to_owned(),
        ..t.clone()
    }
}

fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap_or_default())
        .unwrap_or(Value::Null);
    header["kid"].as_str().unwrap_or_default().to_owned()
}

async fn me(t: &TestApp, access: &str) -> Resp {
    t.get("/api/auth/v1/me/", Some(access)).await
}

async fn refresh(t: &TestApp, refresh: &str) -> Resp {
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({ "refresh": refresh }),
        &[],
    )
    .await
}

async fn deposit(t: &TestApp, access: &str) -> Resp {
    t.post(
        "/api/balance/v1/deposit/",
        Some(access),
        &json!({"amount": "1"}),
        &[],
    )
    .await
}

async fn page(t: &TestApp, access: &str, cursor: Option<&str>, etag: Option<&str>) -> Resp {
    let path = match cursor {
        Some(c) => format!("/api/balance/v1/operations/?limit=1&cursor={c}"),
        None => "/api/balance/v1/operations/?limit=1".to_owned(),
    };
    let auth = format!("Bearer {access}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(tag) = etag {
        headers.push(("if-none-match", tag));
    }
    t.send(http::Method::GET, &path, &headers, None).await
}

fn next_cursor(r: &Resp) -> String {
    r.json()["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned()
}

pub async fn a_rotation_keeps_the_previous_keys_tokens_and_cursors_until_the_next(t: TestApp) {
    let (a, b, c) = (t.secret.clone(), crate::test_secret(), crate::test_secret());
    let alice: TestUser = t.user("alice").await;
    for _ in 0..3 {
        deposit(&t, &alice.access).await.expect(201, "");
    }
    let first = page(&t, &alice.access, None, None).await;
    first.expect(200, "");
    let (old_cursor, old_etag) = (next_cursor(&first), first.header("etag").unwrap());
    let old_kid = kid(&alice.access);
    assert_eq!(kid(&alice.refresh), old_kid);

    page(&t, &alice.access, None, Some(&old_etag))
        .await
        .expect(304, "");

    // Restarted after a rotation: b signs, a still verifies.
    let rotated = restarted(&t, &b, Some(&a));
    me(&rotated, &alice.access).await.expect(200, "");
    // An ETag from before the rotation is no error: the unchanged page comes whole, with
    // cursors of the current key.
    let again = page(&rotated, &alice.access, None, Some(&old_etag)).await;
    again.expect(200, "");
    assert_eq!(again.json()["results"], first.json()["results"]);
    // A cursor from before the rotation goes on where it stopped.
    let second = page(&rotated, &alice.access, Some(&old_cursor), None).await;
    second.expect(200, "");
    assert_eq!(second.json()["results"][0]["amount"], "1.00");
    deposit(&rotated, &alice.access).await.expect(201, "");
    let new_cursor = next_cursor(&again);
    let fresh = refresh(&rotated, &alice.refresh).await;
    fresh.expect(200, "");
    let (access, refresh_token) = (
        fresh.json()["access"].as_str().unwrap().to_owned(),
        fresh.json()["refresh"].as_str().unwrap().to_owned(),
    );
    let new_kid = kid(&access);
    assert_ne!(new_kid, old_kid, "new tokens name the new key");
    assert_eq!(kid(&refresh_token), new_kid);
    let (login_access, _) = rotated.login("alice").await;
    assert_eq!(kid(&login_access), new_kid);
    // The process that has not rotated does not know the new key.
    me(&t, &access).await.expect(401, "invalid_token");

    // A token naming the previous key but signed with the current one.
    let claims = alice.access.split('.').nth(1).unwrap();
    let header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"HS256","typ":"JWT","kid":"{old_kid}"}}"#
    ));
    let jwt_b =
        lighttech::auth::derive_key(&SecretKey::new(b.clone().into_bytes()).unwrap(), "jwt");
    let mismatched = {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&jwt_b).unwrap();
        mac.update(format!("{header}.{claims}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{claims}.{sig}")
    };
    me(&rotated, &mismatched).await.expect(401, "invalid_token");

    // Restarted after a second rotation: c signs, b verifies, a is retired.
    let retired = restarted(&t, &c, Some(&b));
    me(&retired, &access).await.expect(200, "");
    page(&retired, &access, Some(&new_cursor), None)
        .await
        .expect(200, "");
    me(&retired, &login_access).await.expect(200, "");
    page(&retired, &access, Some(&old_cursor), None)
        .await
        .expect(400, "validation_error");
    let (newest, _) = retired.login("alice").await;
    assert!(![old_kid.as_str(), new_kid.as_str()].contains(&kid(&newest).as_str()));
    // Every token a signed: refused everywhere it goes.
    me(&retired, &alice.access)
        .await
        .expect(401, "invalid_token");
    deposit(&retired, &alice.access)
        .await
        .expect(401, "invalid_token");
    let logout_of_a = retired
        .post("/api/auth/v1/logout/", Some(&alice.access), &json!({}), &[])
        .await;
    logout_of_a.expect(401, "invalid_token");
    // The refresh token a signed was spent above; a fresh pair signed by a is refused.
    let (a_access, a_refresh) = restarted(&t, &a, None).login("alice").await;
    assert_eq!(kid(&a_access), old_kid);
    refresh(&retired, &a_refresh)
        .await
        .expect(401, "invalid_token");
    refresh(&retired, &refresh_token).await.expect(200, "");
}
