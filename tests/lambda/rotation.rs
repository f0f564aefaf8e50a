//! The signing key's rotation function (`rotate-signing-key`) as Secrets Manager runs it: its
//! binary under the stand-in Runtime API, invoked once per step, against moto's Secrets Manager
//! behind a recording proxy. After one rotation the tokens signed before it still work and new
//! ones name another key; after a second, the oldest key's tokens are refused. Every call the
//! binary makes must be one its policy in `template.yaml` grants, and every grant must be used.

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::recorder::Recorder;
use crate::support::runtime_api::{Lambda, Outcome, binary_dir, binary_path};
use lighttech::aws_rotation::FUNCTION;
use lighttech_tests::{app_with_secret_keys, dynamodb_endpoint};
use serde_json::json;
use yaml_rust2::{Yaml, YamlLoader};

/// The actions the rotation function's policy grants, each on the signing key alone.
fn granted_actions() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml");
    let template = YamlLoader::load_from_str(&text).expect("YAML").remove(0);
    let resource = template["Resources"]
        .as_hash()
        .expect("Resources")
        .values()
        .find(|r| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(FUNCTION))
        .unwrap_or_else(|| panic!("template.yaml builds no function from {FUNCTION}"));
    let mut actions = BTreeSet::new();
    for policy in resource["Properties"]["Policies"]
        .as_vec()
        .expect("Policies")
    {
        for statement in policy["Statement"].as_vec().expect("Statement") {
            assert_eq!(statement["Resource"].as_str(), Some("SigningKey"));
            let listed = match &statement["Action"] {
                Yaml::Array(items) => items.iter().filter_map(Yaml::as_str).collect(),
                other => vec![other.as_str().expect("an action")],
            };
            actions.extend(listed.into_iter().map(str::to_owned));
        }
    }
    actions
}

/// One rotation: the four steps, each invoked as Secrets Manager does, the first and last
/// twice (Secrets Manager retries a step whose answer it did not see).
async fn rotate(lambda: &mut Lambda, arn: &str) {
    let token = uuid::Uuid::new_v4().to_string();
    for step in [
        "createSecret",
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
        "finishSecret",
    ] {
        let event = json!({"SecretId": arn, "ClientRequestToken": token, "Step": step});
        match lambda.invoke_raw(&event).await {
            Outcome::Response(_) => {}
            Outcome::Error { body, .. } => {
                panic!("{step} failed: {body}; stderr:\n{}", lambda.stderr())
            }
        }
    }
}

/// A token's JOSE header (base64url): tokens of one key share it, since it differs by `kid` alone.
fn header(token: &str) -> &str {
    token.split('.').next().expect("a JWT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_function_rotates_the_key_with_only_the_calls_its_policy_grants() {
    let endpoint = dynamodb_endpoint();
    let name = format!("lt-rotate-{}", uuid::Uuid::new_v4().simple());
    let arn = lighttech_tests::create_emulated_secret(&name, &lighttech_tests::test_secret()).await;
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());
    let recorder = Recorder::start(&endpoint).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", recorder.endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let binary = binary_path(&binary_dir(env!("CARGO_BIN_EXE_health")), FUNCTION);
    let mut lambda = Lambda::start(&binary, FUNCTION, &env, dir.path()).await;
    lambda.initialized().await;

    // An unknown step fails the invocation and changes nothing.
    let bad = json!({"SecretId": arn, "ClientRequestToken": "t", "Step": "dropSecret"});
    assert!(matches!(
        lambda.invoke_raw(&bad).await,
        Outcome::Error { .. }
    ));

    let before = app_with_secret_keys(&table, &arn, String::new()).await;
    let alice = before.user("alice").await;
    rotate(&mut lambda, &arn).await;

    let after = app_with_secret_keys(&table, &arn, String::new()).await;
    after
        .get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(200, "");
    let (newer, _) = after.login("alice").await;
    assert_ne!(
        header(&newer),
        header(&alice.access),
        "new tokens name the new key"
    );

    rotate(&mut lambda, &arn).await;
    let latest = app_with_secret_keys(&table, &arn, String::new()).await;
    latest
        .get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    latest
        .get("/api/auth/v1/me/", Some(&newer))
        .await
        .expect(200, "");
    lambda.stop().await;

    let called: BTreeSet<String> = recorder
        .needs()
        .into_iter()
        .map(|need| {
            assert_eq!(need.resource, arn, "{} on another secret", need.action);
            need.action
        })
        .collect();
    assert_eq!(
        called,
        granted_actions(),
        "what {FUNCTION} calls and what template.yaml grants it differ"
    );
}
