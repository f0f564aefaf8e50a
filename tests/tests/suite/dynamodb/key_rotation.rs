//! The signing keys in Secrets Manager (moto): a process reads the secret's `AWSCURRENT` and
//! `AWSPREVIOUS` versions at start; after a rotation a freshly started one accepts the old
//! key's tokens and signs with the new key, and a warm one that meets the new key's `kid`
//! reads the secret again — at most once per 30 seconds — and then accepts it. After a second
//! rotation the oldest key's tokens are refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lighttech_tests::{TestApp, app_with_secret_keys, dynamodb_endpoint, emulator_sdk_config};

/// What a rotation's last step leaves: a new `AWSCURRENT` version, the old one `AWSPREVIOUS`.
async fn rotate(arn: &str, value: &str) {
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    aws_sdk_secretsmanager::Client::new(&sdk)
        .put_secret_value()
        .secret_id(arn)
        .secret_string(value)
        .send()
        .await
        .expect("put a new version of the secret");
}

fn kid(token: &str) -> String {
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn me(t: &TestApp, token: &str) -> u16 {
    t.get("/api/auth/v1/me/", Some(token)).await.status
}

#[tokio::test]
async fn processes_follow_a_rotation_of_the_secret_without_logging_anyone_out() {
    let (a, b, c) = (
        lighttech_tests::test_secret(),
        lighttech_tests::test_secret(),
        lighttech_tests::test_secret(),
    );
    let name = format!("lt-rotated-{}", uuid::Uuid::new_v4().simple());
    let arn = lighttech_tests::create_emulated_secret(&name, &a).await;
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());

    let warm = app_with_secret_keys(&table, &arn, a.clone()).await;
    let alice = warm.user("alice").await;
    let kid_a = kid(&alice.access);

    // A process started after the rotation: a still verifies, b signs.
    rotate(&arn, &b).await;
    let fresh = app_with_secret_keys(&table, &arn, b.clone()).await;
    assert_eq!(me(&fresh, &alice.access).await, 200);
    let (token_b, _) = fresh.login("alice").await;
    let kid_b = kid(&token_b);
    assert_ne!(kid_b, kid_a);

    // The warm process has not read the secret since its start: within 30 s of that it does
    // not read it again, after them the unknown kid makes it read the secret once.
    assert_eq!(me(&warm, &token_b).await, 401);
    warm.clock.advance_seconds(31);
    assert_eq!(me(&warm, &token_b).await, 200);
    assert_eq!(
        me(&warm, &alice.access).await,
        200,
        "a is the previous key now"
    );
    let (signed_now, _) = warm.login("alice").await;
    assert_eq!(kid(&signed_now), kid_b, "and it signs with b");

    // A second rotation: the next read comes no sooner than 30 s after the last.
    rotate(&arn, &c).await;
    let newest = app_with_secret_keys(&table, &arn, c.clone()).await;
    let (token_c, _) = newest.login("alice").await;
    warm.clock.advance_seconds(10);
    assert_eq!(me(&warm, &token_c).await, 401, "read 10 s ago");
    warm.clock.advance_seconds(20);
    assert_eq!(me(&warm, &token_c).await, 200);

    // a is retired everywhere; b still verifies.
    for process in [&newest, &warm] {
        assert_eq!(me(process, &alice.access).await, 401);
        let r = process.get("/api/auth/v1/me/", Some(&alice.access)).await;
        r.expect(401, "invalid_token");
        assert_eq!(me(process, &token_b).await, 200);
    }
}
