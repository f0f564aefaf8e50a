//! Least privilege, checked against the code: every function binary runs the whole pass of
//! `support/scenario.rs` on DynamoDB (moto) with the signing key in Secrets Manager, each
//! behind a recording proxy of its own (`support/recorder.rs`). Every call a binary makes must
//! be allowed by its policy in `template.yaml` — action, table, partition
//! (`dynamodb:LeadingKeys`) — and every permission the policy grants must have been needed.
//!
//! A function added to the code fails here until its pass is in `support/scenario.rs` and its
//! policy in `template.yaml`; a store change that calls DynamoDB differently fails here until the
//! policies follow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::recorder::{Need, Recorder};
use crate::support::runtime_api::{Event, binary_dir};
use crate::support::scenario::{
    Fleet, assert_every_function_covered, concrete_path, event_for, every_endpoint, route_key,
};
use lighttech::http::Function;
use serde_json::json;
use yaml_rust2::{Yaml, YamlLoader};

fn bin_dir() -> PathBuf {
    binary_dir(env!("CARGO_BIN_EXE_health"))
}

/// One action a policy statement grants, on one resource, for some partitions.
#[derive(Debug)]
struct Grant {
    statement: usize,
    action: String,
    /// `Table.Arn` (the table) or `${Table.Arn}/index/NAME`, as the template writes them.
    resource: String,
    /// `dynamodb:LeadingKeys` patterns (`StringLike`).
    leading_keys: Vec<String>,
}

#[derive(Debug, Default)]
struct Policy {
    reads_secret: bool,
    grants: Vec<Grant>,
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(str::to_owned)
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Each function's policy, by binary name, as template.yaml declares it.
fn policies() -> BTreeMap<String, Policy> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let template = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("template.yaml is not YAML: {e}"))
        .remove(0);
    let mut policies = BTreeMap::new();
    for (_, resource) in template["Resources"].as_hash().expect("Resources") {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let Some(binary) = resource["Metadata"]["BuildProperties"]["Binary"].as_str() else {
            continue;
        };
        let mut policy = Policy::default();
        let mut statement_index = 0;
        for entry in resource["Properties"]["Policies"]
            .as_vec()
            .into_iter()
            .flatten()
        {
            if entry["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"].as_str()
                == Some("SigningKey")
            {
                policy.reads_secret = true;
                continue;
            }
            for statement in entry["Statement"].as_vec().into_iter().flatten() {
                statement_index += 1;
                if statement["Effect"].as_str() != Some("Allow") {
                    continue;
                }
                let mut leading_keys = strings(
                    &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
                );
                if leading_keys.is_empty() {
                    // No condition: any partition.
                    leading_keys.push("*".to_owned());
                }
                for action in strings(&statement["Action"]) {
                    for resource in strings(&statement["Resource"]) {
                        policy.grants.push(Grant {
                            statement: statement_index,
                            action: action.clone(),
                            resource,
                            leading_keys: leading_keys.clone(),
                        });
                    }
                }
            }
        }
        policies.insert(binary.to_owned(), policy);
    }
    policies
}

/// IAM `StringLike`: `*` any run of characters, `?` any one.
fn like(pattern: &str, value: &str) -> bool {
    fn go(p: &[char], v: &[char]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], v) || (!v.is_empty() && go(p, &v[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    go(&p, &v)
}

fn resource_matches(granted: &str, needed: &str, table: &str) -> bool {
    match granted.strip_prefix("${Table.Arn}/index/") {
        Some(index) => needed == format!("{table}/index/{index}"),
        None => granted == "Table.Arn" && needed == table,
    }
}

/// Makes the session look idle for two minutes, so the next authenticated request records its
/// use (`touch_session`, an `UpdateItem`), as it does in production.
async fn age_session(client: &aws_sdk_dynamodb::Client, table: &str, user: &str, session: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 120_000;
    client
        .update_item()
        .table_name(table)
        .key("PK", AttributeValue::S(format!("USER#{user}")))
        .key("SK", AttributeValue::S(format!("SESSION#{session}")))
        .update_expression("SET last_used_at = :old")
        .expression_attribute_values(":old", AttributeValue::N(old.to_string()))
        .send()
        .await
        .expect("age the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_policy_allows_exactly_what_its_binary_calls() {
    let endpoint = lighttech_tests::dynamodb_endpoint();
    let store = lighttech_tests::dynamo_store().await;
    let table = store.table().to_owned();
    let sdk = lighttech_tests::emulator_sdk_config(&endpoint);
    let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("lt-iam-{}", uuid::Uuid::new_v4().simple()))
        .secret_string("iam-test-signing-key-0123456789abcdef0123456789abcdef")
        .send()
        .await
        .expect("create the signing key secret in the emulator")
        .arn()
        .expect("secret ARN")
        .to_owned();

    let mut recorders = BTreeMap::new();
    for function in Function::ALL {
        recorders.insert(function.name(), Recorder::start(&endpoint).await);
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let env_for = |function: Function| -> Vec<(String, String)> {
        [
            ("DATABASE_URL", format!("dynamodb://{table}")),
            ("SECRET_KEY_ARN", secret_arn.clone()),
            ("AWS_ENDPOINT_URL", recorders[function.name()].endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("CURRENCY", "EUR".to_owned()),
            ("ACCESS_TOKEN_LIFETIME_MINUTES", "7".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let mut fleet = Fleet::start(&bin_dir(), dir.path(), env_for).await;
    let config = lighttech::Config::from_map(
        &[
            ("DATABASE_URL".to_owned(), format!("dynamodb://{table}")),
            (
                "SECRET_KEY".to_owned(),
                "in-process-app-key-only-creates-users-0123456789".to_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    )
    .expect("configuration");
    let app = lighttech::App::start_with_aws(
        config,
        lighttech::StartOptions::default(),
        Some(sdk.clone()),
    )
    .await
    .expect("open the table in this process");
    every_endpoint(&mut fleet, &app).await;
    assert_every_function_covered(&fleet);

    // Once more through every route with a session idle long enough to be stamped as used.
    let (access, _) = fleet.login("alice").await;
    let user = fleet
        .call(Function::Me, event_for(Function::Me, "GET").bearer(&access))
        .await
        .json()["id"]
        .as_str()
        .expect("user id")
        .to_owned();
    let sessions = fleet
        .call(
            Function::Sessions,
            event_for(Function::Sessions, "GET").bearer(&access),
        )
        .await
        .json();
    let session = sessions["results"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["current"] == true))
        .and_then(|s| s["id"].as_str())
        .expect("the current session")
        .to_owned();
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let mut order: Vec<Function> = Function::ALL
        .into_iter()
        .filter(|f| *f != Function::Logout)
        .collect();
    order.push(Function::Logout);
    for function in order {
        for route in function.routes() {
            age_session(&dynamo, &table, &user, &session).await;
            let mut event = Event::new(&route_key(route), &concrete_path(route)).bearer(&access);
            if route.method == http::Method::POST {
                event = event.json(&json!({}));
            }
            fleet.call(function, event).await;
        }
    }
    fleet.stop().await;

    let policies = policies();
    let mut problems = Vec::new();
    for function in Function::ALL {
        let name = function.name();
        let Some(policy) = policies.get(name) else {
            problems.push(format!("{name}: no function in template.yaml"));
            continue;
        };
        let needs: BTreeSet<Need> = recorders[name].needs().into_iter().collect();
        let mut used: BTreeSet<(usize, String, String)> = BTreeSet::new();
        let mut read_secret = false;
        for need in &needs {
            if need.action == "secretsmanager:GetSecretValue" {
                read_secret = true;
                if !policy.reads_secret || need.resource != secret_arn {
                    problems.push(format!(
                        "{name} reads secret {} but its policy does not allow it",
                        need.resource
                    ));
                }
                continue;
            }
            let mut allowed = false;
            for grant in &policy.grants {
                if grant.action != need.action
                    || !resource_matches(&grant.resource, &need.resource, &table)
                {
                    continue;
                }
                let key = need.leading_key.as_deref().unwrap_or_default();
                for pattern in &grant.leading_keys {
                    if need.leading_key.is_some() && like(pattern, key) {
                        allowed = true;
                        used.insert((grant.statement, grant.action.clone(), pattern.clone()));
                    }
                }
            }
            if !allowed {
                problems.push(format!(
                    "{name} calls {} on {} (partition {:?}), which its policy does not allow",
                    need.action, need.resource, need.leading_key
                ));
            }
        }
        if policy.reads_secret && !read_secret {
            problems.push(format!("{name} may read the signing key but never did"));
        }
        for grant in &policy.grants {
            for pattern in &grant.leading_keys {
                if !used.contains(&(grant.statement, grant.action.clone(), pattern.clone())) {
                    problems.push(format!(
                        "{name}'s policy grants {} on partitions {pattern:?} (statement {}), \
                         which its binary never needed",
                        grant.action, grant.statement
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "template.yaml's policies and what the binaries call disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn string_like_matches_as_iam_does() {
    assert!(like("USER#*", "USER#0193"));
    assert!(like("USER#*", "USER#"));
    assert!(!like("USER#*", "USERNAME#bob"));
    assert!(like("USERNAME#*", "USERNAME#bob"));
    assert!(like("HEALTH", "HEALTH"));
    assert!(!like("HEALTH", "HEALTHY"));
    assert!(like("L?GIN#*", "LOGIN#x"));
}
