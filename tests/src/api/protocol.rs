//! What every request meets whatever its endpoint: routing (`404`, `405`, trailing slashes),
//! the headers every response carries, health, malformed input, and store outages or failures
//! answered without details.

use std::collections::HashSet;

use http::Method;
use rand::RngExt;
use serde_json::{Value, json};

use super::history::history;
use super::{login_with, move_money};
use crate::TestApp;

pub async fn routing_answers_404_405_and_ignores_the_trailing_slash(t: TestApp) {
    let alice = t.user("alice").await;
    t.get("/api/nothing/here/", None)
        .await
        .expect(404, "not_found");
    t.get("/", None).await.expect(404, "not_found");
    t.get("/api/balance/v1/deposit/x/", Some(&alice.access))
        .await
        .expect(404, "not_found");
    let r = t.get("/api/balance/v1/deposit/", Some(&alice.access)).await;
    r.expect(405, "method_not_allowed");
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let r = t
        .send(Method::DELETE, "/api/auth/v1/sessions/", &[], None)
        .await;
    r.expect(405, "method_not_allowed");
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
    let r = t.send(Method::PUT, "/api/health", &[], None).await;
    r.expect(405, "method_not_allowed");
    t.get("/api/balance/v1", Some(&alice.access))
        .await
        .expect(200, "");
    t.get("/api/auth/v1/me", Some(&alice.access))
        .await
        .expect(200, "");
    let r = t
        .post(
            "/api/balance/v1/deposit",
            Some(&alice.access),
            &json!({"amount": "1"}),
            &[],
        )
        .await;
    r.expect(201, "");
}

pub async fn every_response_carries_a_request_id(t: TestApp) {
    let alice = t.user("alice").await;
    let responses = vec![
        t.get("/api/health/", None).await,
        t.get("/api/nowhere/", None).await,
        t.get("/api/balance/v1/", Some(&alice.access)).await,
        t.get("/api/balance/v1/", Some("bad")).await,
        login_with(&t, json!({})).await,
        t.send(Method::PATCH, "/api/balance/v1/", &[], None).await,
    ];
    let mut ids = HashSet::new();
    for r in responses {
        let id = r
            .header("x-request-id")
            .expect("X-Request-Id on every response");
        assert!(!id.is_empty());
        ids.insert(id);
    }
    assert_eq!(ids.len(), 6, "each request has its own id");
}

/// `docs/api.md`: every response carries `X-Content-Type-Options: nosniff`, successes, problems and
/// bodiless answers alike.
pub async fn every_response_carries_nosniff(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "5").await;
    let auth = format!("Bearer {}", alice.access);
    let page = history(&t, &alice, "?limit=5", None).await;
    let etag = page.header("etag").expect("an ETag");
    let big = format!("{{\"description\": \"{}\"}}", "x".repeat(17 * 1024));
    let responses = vec![
        (200, t.get("/api/health/", None).await),
        (200, t.get("/api/balance/v1/", Some(&alice.access)).await),
        (200, page),
        (304, history(&t, &alice, "?limit=5", Some(&etag)).await),
        (201, move_money(&t, &alice, "deposit", "1").await),
        (200, t.get("/admin/", None).await),
        (200, t.get("/api/schema/", None).await),
        (404, t.get("/api/nowhere/", None).await),
        (
            405,
            t.send(Method::PATCH, "/api/balance/v1/", &[], None).await,
        ),
        (401, t.get("/api/balance/v1/", None).await),
        (401, t.get("/api/balance/v1/", Some("bad")).await),
        (400, login_with(&t, json!({})).await),
        (
            413,
            t.send(
                Method::POST,
                "/api/balance/v1/deposit/",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(big.into_bytes()),
            )
            .await,
        ),
        (
            415,
            t.send(
                Method::POST,
                "/api/balance/v1/deposit/",
                &[("authorization", &auth), ("content-type", "text/plain")],
                Some(b"{}".to_vec()),
            )
            .await,
        ),
    ];
    for (status, r) in responses {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "a {status} answer"
        );
    }
}

pub async fn health_answers_ok(t: TestApp) {
    let r = t.get("/api/health/", None).await;
    r.expect(200, "");
    assert_eq!(r.json(), json!({"status": "ok"}));
}

pub async fn malformed_input_never_causes_a_server_error(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "100").await;
    let auth = format!("Bearer {}", alice.access);
    let mut rng = crate::seeded_rng("malformed_input_never_causes_a_server_error", 0);
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!("x"),
        json!(""),
        json!("\u{0}"),
        json!("💸"),
        json!([]),
        json!({}),
        json!("9".repeat(400)),
        json!(u64::MAX),
        json!(i64::MIN),
    ];
    let fields = [
        "amount",
        "to",
        "description",
        "username",
        "email",
        "password",
        "refresh",
        "",
    ];
    let paths = [
        "/api/auth/v1/register/",
        "/api/auth/v1/login/",
        "/api/auth/v1/token/refresh/",
        "/api/auth/v1/logout/",
        "/api/balance/v1/deposit/",
        "/api/balance/v1/withdraw/",
        "/api/balance/v1/transfer/",
    ];
    for round in 0..400 {
        let path = paths[round % paths.len()];
        let body: Vec<u8> = match round % 4 {
            0 => {
                let mut obj = serde_json::Map::new();
                for _ in 0..rng.random_range(0..4) {
                    let f = fields[rng.random_range(0..fields.len())];
                    obj.insert(f.into(), values[rng.random_range(0..values.len())].clone());
                }
                serde_json::to_vec(&Value::Object(obj)).unwrap()
            }
            1 => (0..rng.random_range(0..64))
                .map(|_| rng.random::<u8>())
                .collect(),
            2 => {
                let depth = rng.random_range(1..2000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            }
            _ => format!(
                r#"{{"amount": {}, "to": "bob", "description": "\ud800"}}"#,
                ["1", "\"1\"", "0.1e1", "1.", ".1", "01", "-0", "1e-2"][rng.random_range(0..8)]
            )
            .into_bytes(),
        };
        let r = t
            .send(
                Method::POST,
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(body.clone()),
            )
            .await;
        assert!(
            r.status < 500,
            "{path} answered {} to {:?}: {}",
            r.status,
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&r.body)
        );
        if r.status >= 400 {
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/problem+json")
            );
        }
    }
    // Odd query strings and paths.
    for path in [
        "/api/balance/v1/operations/?limit=%FF",
        "/api/balance/v1/operations/?type=%00",
        "/api/balance/v1/operations/?since=%",
        "/api/balance/v1/operations/?cursor=%2F%2F%2F",
        "/api/auth/v1/sessions/%00/",
        "/api/auth/v1/sessions/../../",
    ] {
        let r = t
            .send(Method::GET, path, &[("authorization", &auth)], None)
            .await;
        assert!(r.status < 500, "{path}: {}", r.status);
        let r = t
            .send(Method::DELETE, path, &[("authorization", &auth)], None)
            .await;
        assert!(r.status < 500, "{path}: {}", r.status);
    }
}

pub async fn store_outages_answer_503_and_failures_500_without_details(t: TestApp) {
    use crate::faulty::{FaultyStore, Mode};
    use std::sync::Arc;

    let faulty = Arc::new(FaultyStore::new(t.app.store.clone()));
    let key = lighttech::config::SecretKey::new(t.secret.clone().into_bytes()).unwrap();
    let app = lighttech::App::new(t.app.config.clone(), faulty.clone(), &key);
    let t = TestApp {
        app: Arc::new(app),
        ..t
    };
    let alice = t.user("alice").await;
    t.deposit(&alice, "10").await;

    faulty.set(Mode::Unavailable);
    for r in [
        t.post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1"}),
            &[("idempotency-key", "outage-1")],
        )
        .await,
        t.get("/api/balance/v1/", Some(&alice.access)).await,
        t.get("/api/health/", None).await,
    ] {
        r.expect(503, "service_unavailable");
        assert!(r.header("retry-after").is_some());
    }

    faulty.set(Mode::Broken);
    let r = move_money(&t, &alice, "withdraw", "1").await;
    r.expect(500, "internal_error");
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!body.contains("SECRET-INTERNAL-DETAIL"), "{body}");
    assert!(!body.contains("injected"), "{body}");
    // Health answers 200 or 503 and nothing else: a ping that fails for any reason is 503.
    let health = t.get("/api/health/", None).await;
    health.expect(503, "service_unavailable");
    assert!(health.header("retry-after").is_some());
    let body = String::from_utf8_lossy(&health.body).into_owned();
    assert!(!body.contains("SECRET-INTERNAL-DETAIL"), "{body}");

    // Back up: nothing was applied, and the key used during the outage runs afresh.
    faulty.set(Mode::Healthy);
    let retry = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1"}),
            &[("idempotency-key", "outage-1")],
        )
        .await;
    retry.expect(201, "");
    assert!(retry.header("idempotent-replayed").is_none());
    assert_eq!(t.balance(&alice).await, "11.00");
}
