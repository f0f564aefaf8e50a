//! `Idempotency-Key`: replays, mismatched bodies, key validation and racing requests that
//! share one key.

use std::collections::HashSet;

use http::Method;
use serde_json::{Value, json};

use crate::{TestApp, post_json};

pub async fn idempotent_requests_replay_and_mismatches_are_refused(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let post = |path: &'static str, body: Value, key: &'static str| {
        let t = t.clone();
        let token = alice.access.clone();
        async move {
            t.post(path, Some(&token), &body, &[("idempotency-key", key)])
                .await
        }
    };
    let first = post("/api/balance/v1/deposit/", json!({"amount": "10"}), "dep-1").await;
    first.expect(201, "");
    assert!(first.header("idempotent-replayed").is_none());
    let again = post("/api/balance/v1/deposit/", json!({"amount": 10}), "dep-1").await;
    again.expect(201, "");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body, "the same response body");
    assert_eq!(t.balance(&alice).await, "10.00");

    post("/api/balance/v1/deposit/", json!({"amount": "11"}), "dep-1")
        .await
        .expect(422, "idempotency_key_mismatch");
    post(
        "/api/balance/v1/deposit/",
        json!({"amount": "10", "description": "x"}),
        "dep-1",
    )
    .await
    .expect(422, "idempotency_key_mismatch");
    post(
        "/api/balance/v1/withdraw/",
        json!({"amount": "10"}),
        "dep-1",
    )
    .await
    .expect(422, "idempotency_key_mismatch");
    assert_eq!(t.balance(&alice).await, "10.00");

    // Transfers replay too, and a replay answers even when the balance no longer covers it.
    let t1 = post(
        "/api/balance/v1/transfer/",
        json!({"to": "bob", "amount": "10"}),
        "tr-1",
    )
    .await;
    t1.expect(201, "");
    let t2 = post(
        "/api/balance/v1/transfer/",
        json!({"to": "BOB", "amount": "10.00"}),
        "tr-1",
    )
    .await;
    t2.expect(201, "");
    assert_eq!(t2.body, t1.body);
    assert_eq!(t2.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(t.balance(&alice).await, "0.00");
    assert_eq!(t.balance(&bob).await, "10.00");

    // A failed request records nothing: the same key runs afresh once it can succeed.
    post("/api/balance/v1/withdraw/", json!({"amount": "5"}), "wd-1")
        .await
        .expect(422, "insufficient_funds");
    t.deposit(&alice, "5").await;
    let w = post("/api/balance/v1/withdraw/", json!({"amount": "5"}), "wd-1").await;
    w.expect(201, "");
    assert!(w.header("idempotent-replayed").is_none());
    assert_eq!(t.balance(&alice).await, "0.00");

    // Keys belong to their user: Bob's "dep-1" is his own.
    let r = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&bob.access),
            &json!({"amount": "1"}),
            &[("idempotency-key", "dep-1")],
        )
        .await;
    r.expect(201, "");
    assert!(r.header("idempotent-replayed").is_none());
    assert_eq!(t.balance(&bob).await, "11.00");

    // Past the retention window the key is free again.
    t.clock.advance_seconds(24 * 3600 + 1);
    let (fresh_access, _) = t.login("alice").await;
    let late = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&fresh_access),
            &json!({"amount": "11"}),
            &[("idempotency-key", "dep-1")],
        )
        .await;
    late.expect(201, "");
    assert!(late.header("idempotent-replayed").is_none());
}

pub async fn idempotency_keys_are_validated(t: TestApp) {
    let alice = t.user("alice").await;
    let long = "k".repeat(256);
    let longest = "k".repeat(255);
    for key in [long.as_str(), "tab\there"] {
        t.post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1"}),
            &[("idempotency-key", key)],
        )
        .await
        .expect(400, "validation_error");
    }
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri("/api/balance/v1/deposit/")
        .header("authorization", format!("Bearer {}", alice.access))
        .header("content-type", "application/json")
        .body(lambda_http::Body::Binary(br#"{"amount":"1"}"#.to_vec()))
        .unwrap();
    request.headers_mut().insert(
        "idempotency-key",
        http::HeaderValue::from_bytes("ключ".as_bytes()).unwrap(),
    );
    let r = lighttech::http::handle(&t.app, request, lighttech::http::Scope::All).await;
    assert_eq!(r.status(), 400, "a non-ASCII key is refused");
    t.post(
        "/api/balance/v1/deposit/",
        Some(&alice.access),
        &json!({"amount": "1"}),
        &[("idempotency-key", longest.as_str())],
    )
    .await
    .expect(201, "");
    assert_eq!(t.balance(&alice).await, "1.00");
}

pub async fn racing_idempotent_requests_move_money_once(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "10").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let app = t.app.clone();
        let token = alice.access.clone();
        tasks.push(tokio::spawn(async move {
            // Half deposit, half use the amount as a number: the same request either way.
            let amount = if i % 2 == 0 { json!("7") } else { json!(7) };
            post_json(
                &app,
                "/api/balance/v1/withdraw/",
                Some(&token),
                &json!({ "amount": amount }),
                &[("idempotency-key", "race-key")],
            )
            .await
        }));
    }
    let mut fresh = 0;
    let mut bodies = HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        r.expect(201, "");
        if r.header("idempotent-replayed").is_none() {
            fresh += 1;
        }
        bodies.insert(r.body);
    }
    assert_eq!(fresh, 1, "exactly one request moved money");
    assert_eq!(bodies.len(), 1, "every response carries the same operation");
    assert_eq!(t.balance(&alice).await, "3.00");
}
