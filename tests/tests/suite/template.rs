//! `template.yaml` (the AWS SAM template) and `local/events/` (the API Gateway events for
//! `cargo lambda invoke`) checked against the code: the functions (`Function::ALL`), the routes
//! (`ROUTES`), the configuration (`VARIABLES`) and the table `DynamoStore::create_table`
//! creates. When a function or a route is added to the code, these tests say what to add here.
//!
//! The template's short-form tags (`!Ref X`, `!GetAtt X.Arn`, `!Sub "…"`) read as plain strings
//! here (`X`, `X.Arn`, `…`); `cfn-lint` and `sam validate` (in `.ci/run`) check their use.
//! That each function's policy allows exactly what its code calls is checked by running the
//! binaries on DynamoDB: `tests/lambda/iam.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lighttech::config::{SecretKey, VARIABLES};
use lighttech::http::{Function, ROUTES, Route, gateway, match_route};
use lighttech::store::dynamo::{GSI1, GSI1_PROJECTED, TTL_ATTRIBUTE};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

#[path = "template/deploy.rs"]
mod deploy;
#[path = "template/rotation.rs"]
mod rotation;
#[path = "template/transformed.rs"]
mod transformed;

const TEMPLATE: &str = "template.yaml";
const EVENTS: &str = "local/events";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path} at the workspace root: {e}"))
}

fn template() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(TEMPLATE))
        .unwrap_or_else(|e| panic!("{TEMPLATE} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{TEMPLATE} holds one YAML document");
    docs.remove(0)
}

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("{other:?} is not a scalar"),
    }
}

fn list(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items.iter().map(text).collect(),
        Yaml::BadValue => Vec::new(),
        scalar => vec![text(scalar)],
    }
}

fn keys(y: &Yaml) -> Vec<String> {
    y.as_hash()
        .map(|h| h.keys().map(text).collect())
        .unwrap_or_default()
}

/// Resources of one type, by logical id.
fn resources_of<'a>(template: &'a Yaml, kind: &str) -> BTreeMap<String, &'a Yaml> {
    template["Resources"]
        .as_hash()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(k, r)| (text(k), r))
        .collect()
}

/// The SAM functions serving routes, by the binary they build: all but the key rotation.
fn functions(template: &Yaml) -> BTreeMap<String, (String, &Yaml)> {
    let mut all = all_functions(template);
    all.remove(lighttech::aws_rotation::FUNCTION);
    all
}

/// Every SAM function, by the binary it builds.
fn all_functions(template: &Yaml) -> BTreeMap<String, (String, &Yaml)> {
    let mut by_binary = BTreeMap::new();
    for (id, resource) in resources_of(template, "AWS::Serverless::Function") {
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{id}: Metadata.BuildMethod must be rust-cargolambda"
        );
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: Metadata.BuildProperties.Binary names its binary"))
            .to_owned();
        let previous = by_binary.insert(binary.clone(), (id.clone(), resource));
        assert!(previous.is_none(), "two functions build binary {binary}");
    }
    by_binary
}

/// The path API Gateway routes for a pattern: the one without the trailing slash (the other
/// form reaches `$default`, which redirects it there).
fn routed_paths(route: &Route) -> [String; 1] {
    [gateway::routed_path(route.pattern).to_owned()]
}

fn logical_id(function: Function) -> String {
    let camel: String = function
        .name()
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{camel}Function")
}

#[test]
fn every_function_is_one_arm64_sam_function_built_from_its_own_binary() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(list(&globals["Architectures"]), ["arm64"]);
    assert_eq!(globals["Handler"].as_str(), Some("bootstrap"));
    assert_eq!(
        globals["CodeUri"].as_str(),
        Some("functions/"),
        "the functions package"
    );
    let manifest = read("functions/Cargo.toml");
    let functions = functions(&template);
    for function in Function::ALL {
        let name = function.name();
        let routes: Vec<String> = function
            .routes()
            .flat_map(|r| routed_paths(r).map(|p| format!("{} {p}", r.method)))
            .collect();
        let (id, resource) = functions.get(name).unwrap_or_else(|| {
            panic!(
                "{TEMPLATE} has no function for `{name}`: add `{}` (like HealthFunction: \
                 Metadata.BuildProperties.Binary: {name}, a LogGroup and a policy of its own) \
                 with HttpApi events for {routes:?}",
                logical_id(function)
            )
        });
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "functions/Cargo.toml has no [[bin]] named {name}"
        );
        for property in ["Runtime", "Architectures", "Handler", "CodeUri"] {
            assert!(
                resource["Properties"][property].is_badvalue(),
                "{id}: {property} comes from Globals"
            );
        }
    }
    let known: BTreeSet<&str> = Function::ALL.iter().map(|f| f.name()).collect();
    for binary in functions.keys() {
        assert!(
            known.contains(binary.as_str()),
            "{TEMPLATE} builds `{binary}`, which is no lighttech::http::Function"
        );
    }
}

#[test]
fn every_route_is_routed_once_without_its_trailing_slash_and_the_rest_to_the_fallback() {
    let template = template();
    let mut routed: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut fallback = None;
    for (binary, (id, resource)) in functions(&template) {
        for (event_name, event) in resource["Properties"]["Events"]
            .as_hash()
            .unwrap_or_else(|| panic!("{id} has no Events"))
        {
            let event_name = text(event_name);
            assert_eq!(event["Type"].as_str(), Some("HttpApi"), "{id}.{event_name}");
            assert_eq!(
                event["Properties"]["ApiId"].as_str(),
                Some("HttpApi"),
                "{id}.{event_name}: ApiId: !Ref HttpApi"
            );
            let (method, path) = (&event["Properties"]["Method"], &event["Properties"]["Path"]);
            if method.is_badvalue() && path.is_badvalue() {
                // SAM's form of the `$default` route.
                if let Some(other) = fallback.replace(binary.clone()) {
                    panic!("$default is routed twice ({other} and {binary})");
                }
                continue;
            }
            let key = (text(method).to_ascii_uppercase(), text(path));
            if let Some(other) = routed.insert(key.clone(), binary.clone()) {
                panic!("{} {} is routed twice ({other} and {binary})", key.0, key.1);
            }
        }
    }
    let mut expected = BTreeMap::new();
    for route in ROUTES {
        for path in routed_paths(route) {
            expected.insert(
                (route.method.to_string(), path),
                route.function.name().to_owned(),
            );
        }
    }
    let missing: Vec<String> = expected
        .iter()
        .filter(|(k, v)| routed.get(*k) != Some(*v))
        .map(|((m, p), f)| format!("{m} {p} -> {f}"))
        .collect();
    let extra: Vec<String> = routed
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .map(|((m, p), f)| format!("{m} {p} -> {f}"))
        .collect();
    assert_eq!(
        fallback.as_deref(),
        Some(Function::FALLBACK.name()),
        "the $default route (an HttpApi event without Path and Method) goes to Function::FALLBACK"
    );
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{TEMPLATE} routes differ from lighttech::http::ROUTES (each route is routed once, \
         without its trailing slash). Add HttpApi events: {missing:?}. Remove: {extra:?}"
    );
}

#[test]
fn login_is_throttled_tighter_than_the_rest_of_the_api() {
    let template = template();
    let api = &resources_of(&template, "AWS::Serverless::HttpApi")["HttpApi"]["Properties"];
    let default_of = |parameter: &str| -> i64 {
        template["Parameters"][parameter]["Default"]
            .as_i64()
            .unwrap_or_else(|| panic!("parameter {parameter} has a numeric default"))
    };
    let defaults = &api["DefaultRouteSettings"];
    let stage_rate = default_of(&text(&defaults["ThrottlingRateLimit"]));
    let stage_burst = default_of(&text(&defaults["ThrottlingBurstLimit"]));
    for route in Function::Login.routes() {
        for path in routed_paths(route) {
            let key = format!("{} {path}", route.method);
            let settings = &api["RouteSettings"][key.as_str()];
            assert!(settings.as_hash().is_some(), "no RouteSettings for {key}");
            assert!(default_of(&text(&settings["ThrottlingRateLimit"])) < stage_rate);
            assert!(default_of(&text(&settings["ThrottlingBurstLimit"])) < stage_burst);
        }
    }
    let mut routed = BTreeSet::new();
    for route in ROUTES {
        for path in routed_paths(route) {
            routed.insert(format!("{} {path}", route.method));
        }
    }
    for key in keys(&api["RouteSettings"]) {
        assert!(
            routed.contains(&key),
            "RouteSettings names {key}, which is no route"
        );
    }
}

#[test]
fn functions_get_only_variables_the_configuration_reads_and_never_the_key_itself() {
    let template = template();
    let known: BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    let mut all = vec![("Globals".to_owned(), globals)];
    for (_, (id, resource)) in functions(&template) {
        all.push((id, &resource["Properties"]["Environment"]["Variables"]));
    }
    for (owner, variables) in all {
        for name in keys(variables) {
            assert!(
                known.contains(name.as_str()),
                "{owner} sets {name}, which shared/src/config.rs does not read"
            );
            assert_ne!(
                name, "SECRET_KEY",
                "{owner}: functions get SECRET_KEY_ARN, never the key"
            );
        }
    }
    assert_eq!(
        globals["DATABASE_URL"].as_str(),
        Some("dynamodb://${Table}")
    );
    assert_eq!(globals["SECRET_KEY_ARN"].as_str(), Some("SigningKey"));
    for (variable, parameter) in [
        (
            "ACCESS_TOKEN_LIFETIME_MINUTES",
            "AccessTokenLifetimeMinutes",
        ),
        (
            "REFRESH_TOKEN_LIFETIME_MINUTES",
            "RefreshTokenLifetimeMinutes",
        ),
        ("SESSION_MAX_LIFETIME_DAYS", "SessionMaxLifetimeDays"),
        ("CURRENCY", "Currency"),
    ] {
        assert_eq!(globals[variable].as_str(), Some(parameter));
        let default = text(&template["Parameters"][parameter]["Default"]);
        let documented = VARIABLES
            .iter()
            .find(|v| v.name == variable)
            .and_then(|v| v.default);
        assert_eq!(
            Some(default.as_str()),
            documented,
            "parameter {parameter} defaults to what the code defaults {variable} to"
        );
    }
}

#[test]
fn the_signing_key_is_generated_long_enough_and_only_its_arn_is_passed() {
    let template = template();
    let secret = &resources_of(&template, "AWS::SecretsManager::Secret")["SigningKey"];
    let generate = &secret["Properties"]["GenerateSecretString"];
    let length = generate["PasswordLength"].as_i64().expect("PasswordLength");
    assert!(length >= SecretKey::MIN_LEN as i64, "{length}");
    assert!(
        generate["SecretStringTemplate"].is_badvalue(),
        "the secret's value is the key itself, not a JSON document"
    );
    assert!(secret["Properties"]["SecretString"].is_badvalue());
}

#[test]
fn each_function_has_a_policy_of_its_own_on_this_table_and_this_secret_only() {
    let template = template();
    // Item-level actions only: each is limited to partitions by `dynamodb:LeadingKeys`
    // (`BatchGetItem` per key, as IAM checks it).
    let allowed_actions: BTreeSet<&str> = [
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:ConditionCheckItem",
    ]
    .into();
    for (binary, (id, resource)) in functions(&template) {
        let function = Function::ALL
            .into_iter()
            .find(|f| f.name() == binary)
            .unwrap_or_else(|| panic!("{id}: no function is called {binary}"));
        if function.stateless() {
            assert!(
                resource["Properties"]["Policies"].is_badvalue(),
                "{id} ({binary}) is stateless: no policy beyond logging"
            );
            continue;
        }
        let policies = resource["Properties"]["Policies"]
            .as_vec()
            .unwrap_or_else(|| panic!("{id}: Policies is a list"));
        let mut reads_secret = false;
        for policy in policies {
            if let Some(p) = policy["AWSSecretsManagerGetSecretValuePolicy"].as_hash() {
                assert_eq!(
                    p.get(&Yaml::String("SecretArn".into())).map(text),
                    Some("SigningKey".to_owned()),
                    "{id}: the signing key only"
                );
                reads_secret = true;
                continue;
            }
            for statement in policy["Statement"]
                .as_vec()
                .unwrap_or_else(|| panic!("{id}: a policy is the secret template or Statements"))
            {
                assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{id}");
                for action in list(&statement["Action"]) {
                    assert!(
                        allowed_actions.contains(action.as_str()),
                        "{id}: {action} is not an item-level DynamoDB action"
                    );
                }
                for resource in list(&statement["Resource"]) {
                    assert!(
                        resource == "Table.Arn" || resource.starts_with("${Table.Arn}/index/"),
                        "{id}: {resource} is not the table or one of its indexes"
                    );
                }
                let resources = list(&statement["Resource"]);
                let leading = list(
                    &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
                );
                // A statement on the table names the partitions it may touch; one on an index
                // alone (whose partition key is not the table's) may not.
                let index_only = resources
                    .iter()
                    .all(|r| r.starts_with("${Table.Arn}/index/"));
                assert!(
                    index_only || (!leading.is_empty() && leading.iter().all(|k| k != "*")),
                    "{id}: every statement on the table names the partitions it may touch"
                );
            }
        }
        assert_eq!(
            reads_secret,
            function.needs_signing_key(),
            "{id} ({binary}): a function may read the signing key exactly when it needs it \
             (Function::needs_signing_key)"
        );
    }
}

#[test]
fn every_function_logs_to_a_group_with_a_retention() {
    let template = template();
    let groups = resources_of(&template, "AWS::Logs::LogGroup");
    for (_, (id, resource)) in all_functions(&template) {
        let config = &resource["Properties"]["LoggingConfig"];
        let group = config["LogGroup"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: LoggingConfig.LogGroup: !Ref <its log group>"));
        let group = groups
            .get(group)
            .unwrap_or_else(|| panic!("{id}: {group} is no AWS::Logs::LogGroup"));
        assert_eq!(
            group["Properties"]["RetentionInDays"].as_str(),
            Some("LogRetentionDays"),
            "{id}"
        );
    }
    let api = &resources_of(&template, "AWS::Serverless::HttpApi")["HttpApi"];
    assert!(
        api["Properties"]["AccessLogSettings"]["DestinationArn"]
            .as_str()
            .is_some()
    );
    assert!(
        template["Outputs"]["ApiUrl"]["Value"]
            .as_str()
            .is_some_and(|v| v.starts_with("https://${HttpApi}.execute-api.")),
        "the API URL is an output"
    );
}

fn attribute_pairs(definitions: &[(String, String)]) -> BTreeSet<(String, String)> {
    definitions.iter().cloned().collect()
}

#[tokio::test]
async fn the_table_is_the_one_the_dynamodb_store_creates() {
    let template = template();
    let table = &resources_of(&template, "AWS::DynamoDB::Table")["Table"]["Properties"];
    let store = lighttech_tests::dynamo_store().await;
    let sdk = lighttech_tests::emulator_sdk_config(&lighttech_tests::dynamodb_endpoint());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let described = client
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .expect("describe the table create_table made");
    let created = described.table().expect("table description");

    let key_schema = |y: &Yaml| -> Vec<(String, String)> {
        y.as_vec()
            .expect("KeySchema")
            .iter()
            .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
            .collect()
    };
    let created_keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        k.iter()
            .map(|e| {
                (
                    e.attribute_name().to_owned(),
                    e.key_type().as_str().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        key_schema(&table["KeySchema"]),
        created_keys(created.key_schema())
    );
    let declared: Vec<(String, String)> = table["AttributeDefinitions"]
        .as_vec()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| (text(&a["AttributeName"]), text(&a["AttributeType"])))
        .collect();
    let made: Vec<(String, String)> = created
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(attribute_pairs(&declared), attribute_pairs(&made));

    let indexes = table["GlobalSecondaryIndexes"]
        .as_vec()
        .expect("GlobalSecondaryIndexes");
    let made_indexes = created.global_secondary_indexes();
    assert_eq!(indexes.len(), made_indexes.len());
    for index in indexes {
        let name = text(&index["IndexName"]);
        let made = made_indexes
            .iter()
            .find(|i| i.index_name() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("create_table makes no index {name}"));
        assert_eq!(
            key_schema(&index["KeySchema"]),
            created_keys(made.key_schema())
        );
        assert_eq!(
            index["Projection"]["ProjectionType"].as_str(),
            made.projection()
                .and_then(|p| p.projection_type())
                .map(|t| t.as_str())
        );
        let declared: BTreeSet<String> = list(&index["Projection"]["NonKeyAttributes"])
            .into_iter()
            .collect();
        let projected: BTreeSet<String> = made
            .projection()
            .map(|p| p.non_key_attributes().to_vec())
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert_eq!(declared, projected, "{name}: NonKeyAttributes");
        if name == GSI1 {
            assert_eq!(
                declared,
                GSI1_PROJECTED.iter().map(|a| (*a).to_owned()).collect(),
                "{name} projects what the admin list reads"
            );
            assert!(
                !declared.contains("password_hash"),
                "{name} must not copy password hashes"
            );
        }
    }
    assert!(
        indexes
            .iter()
            .any(|i| i["IndexName"].as_str() == Some(GSI1))
    );

    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        created
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|m| m.as_str()),
        Some("PAY_PER_REQUEST")
    );
    assert_eq!(
        table["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
    assert!(
        created.sse_description().is_some(),
        "create_table turns encryption on too"
    );

    let ttl = client
        .describe_time_to_live()
        .table_name(store.table())
        .send()
        .await
        .expect("describe TTL");
    let made_ttl = ttl
        .time_to_live_description()
        .and_then(|d| d.attribute_name())
        .map(str::to_owned);
    assert_eq!(made_ttl.as_deref(), Some(TTL_ATTRIBUTE));
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(TTL_ATTRIBUTE)
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
}

/// Every event file: (file name, event).
fn event_files() -> Vec<(String, Value)> {
    let dir = root().join(EVENTS);
    let mut files: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("read event");
            let event = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{EVENTS}/{name} is not JSON: {e}"));
            (name, event)
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn every_route_has_an_api_gateway_event_for_cargo_lambda_invoke() {
    let mut covered: BTreeMap<String, String> = BTreeMap::new();
    for (file, event) in event_files() {
        assert_eq!(event["version"], "2.0", "{file}: payload format 2.0");
        let route_key = event["routeKey"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no routeKey"));
        let route = ROUTES
            .iter()
            .find(|r| gateway::route_key(r) == route_key)
            .unwrap_or_else(|| panic!("{file}: routeKey {route_key:?} is no route of ROUTES"));
        let stem = file.trim_end_matches(".json");
        let function = route.function.name();
        assert!(
            stem == function || stem.starts_with(&format!("{function}-")),
            "{file} is for {function}: name it {function}.json or {function}-<what>.json"
        );
        let context = &event["requestContext"];
        assert_eq!(context["routeKey"], route_key, "{file}");
        assert_eq!(context["http"]["method"], route.method.as_str(), "{file}");
        assert!(
            context["requestId"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{file}: requestContext.requestId"
        );
        let raw_path = event["rawPath"].as_str().expect("rawPath");
        assert_eq!(context["http"]["path"], raw_path, "{file}");
        // Placeholders stand for values the caller fills in (see docs/local-development.md).
        let concrete = raw_path
            .replace("{{SESSION_ID}}", "00000000-0000-4000-8000-000000000000")
            .replace("{{USER_ID}}", "00000000-0000-4000-8000-000000000000");
        let matched = match_route(&route.method, &concrete)
            .unwrap_or_else(|| panic!("{file}: rawPath {raw_path} matches no route"));
        assert_eq!(
            gateway::route_key(matched.route),
            route_key,
            "{file}: rawPath and routeKey disagree"
        );
        for (name, _) in &matched.params {
            assert!(
                event["pathParameters"][name].is_string(),
                "{file}: pathParameters.{name}"
            );
        }
        if let Some(previous) = covered.insert(route_key.to_owned(), file.clone()) {
            panic!("{route_key} has two events: {previous} and {file}");
        }
    }
    let missing: Vec<String> = ROUTES
        .iter()
        .map(gateway::route_key)
        .filter(|k| !covered.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an event in {EVENTS}/ (add <function>[-<what>].json, like \
         health.json): {missing:?}"
    );
}
