//! The rotation steps (`lighttech::aws_rotation`) against moto's Secrets Manager, run as
//! Secrets Manager runs them: create, set, test, finish, each with the rotation's token. After
//! one rotation the old key is `AWSPREVIOUS` and tokens it signed still work in a process
//! started then, which signs with the new key; after a second, the oldest key's tokens are
//! refused. Retried steps change nothing; a step out of order is refused.

use aws_sdk_secretsmanager::Client;
use lighttech::aws_rotation::{Step, rotate};
use lighttech_tests::{app_with_secret_keys, dynamodb_endpoint, emulator_sdk_config};

fn client() -> Client {
    Client::new(&emulator_sdk_config(&dynamodb_endpoint()))
}

async fn rotation(arn: &str) -> String {
    let token = uuid::Uuid::new_v4().to_string();
    for step in [
        Step::Create,
        Step::Create,
        Step::Set,
        Step::Test,
        Step::Finish,
        Step::Finish,
    ] {
        rotate(&client(), arn, &token, step)
            .await
            .unwrap_or_else(|e| panic!("{step:?}: {e}"));
    }
    token
}

#[tokio::test]
async fn rotating_twice_keeps_one_generation_of_tokens_and_retires_the_older() {
    let first = lighttech_tests::test_secret();
    let name = format!("lt-rotation-{}", uuid::Uuid::new_v4().simple());
    let arn = lighttech_tests::create_emulated_secret(&name, &first).await;
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());
    let before = app_with_secret_keys(&table, &arn, String::new()).await;
    let alice = before.user("alice").await;

    // A step out of order (no pending version yet) is refused.
    let early = rotate(
        &client(),
        &arn,
        &uuid::Uuid::new_v4().to_string(),
        Step::Finish,
    )
    .await;
    assert!(early.is_err());

    rotation(&arn).await;
    let keys = lighttech::aws::fetch_key_set(&emulator_sdk_config(&dynamodb_endpoint()), &arn)
        .await
        .unwrap();
    assert_eq!(keys.previous.unwrap().expose(), first.as_bytes());
    assert_ne!(keys.current.expose(), first.as_bytes());
    let after = app_with_secret_keys(&table, &arn, String::new()).await;
    assert_eq!(
        after
            .get("/api/auth/v1/me/", Some(&alice.access))
            .await
            .status,
        200
    );
    let (newer, _) = after.login("alice").await;
    assert_ne!(
        newer.split('.').next(),
        alice.access.split('.').next(),
        "another kid"
    );

    rotation(&arn).await;
    let latest = app_with_secret_keys(&table, &arn, String::new()).await;
    latest
        .get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    latest
        .get("/api/auth/v1/me/", Some(&newer))
        .await
        .expect(200, "");
}
