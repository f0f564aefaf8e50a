//! `template.yaml` as SAM's transform turns it into CloudFormation (`tests/template/sam_transform.py`,
//! cfn-lint's own transform, run with `.venv/bin/python`): what API Gateway and CloudFormation
//! receive, checked where the source template cannot show it — the HTTP API's route keys in
//! the OpenAPI body SAM writes, the stage's `RouteSettings`, the aliases and deployment groups.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use lighttech::http::{Function, ROUTES, gateway};
use serde_json::Value;

use super::{TEMPLATE, logical_id, root};

/// The transformed template (transformed once per test binary: the transform takes seconds).
pub(super) fn transformed() -> &'static Value {
    static TRANSFORMED: OnceLock<Value> = OnceLock::new();
    TRANSFORMED.get_or_init(|| {
        let python = root().join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run tests/venv (tests/run does) to install cfn-lint and samtranslator",
            python.display()
        );
        let out = Command::new(&python)
            .arg(root().join("tests/template/sam_transform.py"))
            .arg(root().join(TEMPLATE))
            .output()
            .expect("run tests/template/sam_transform.py");
        assert!(
            out.status.success(),
            "SAM's transform refused {TEMPLATE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the transformed template is JSON")
    })
}

/// Resources of one CloudFormation type, by logical id.
pub(super) fn resources(kind: &str) -> BTreeMap<String, &'static Value> {
    transformed()["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.clone(), r))
        .collect()
}

/// A route path API Gateway accepts in an HTTP API route key: `/`, or segments of
/// `[A-Za-z0-9._~-]` or one `{name}` each (a greedy `{name+}` only last), never an empty
/// segment, never a trailing `/` (docs/deploy.md gives the sources).
fn route_path_is_valid(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    segments.iter().enumerate().all(|(i, s)| {
        let variable = s
            .strip_prefix('{')
            .and_then(|v| v.strip_suffix('}'))
            .map(|v| (v.strip_suffix('+'), v));
        match variable {
            Some((Some(greedy), _)) => {
                i == segments.len() - 1
                    && !greedy.is_empty()
                    && greedy
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            Some((None, name)) => {
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            None => {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
            }
        }
    })
}

/// The SAM function an integration invokes, by logical id (`…/functions/${XFunction.Arn}/…`,
/// or `${XFunctionAliaslive}` once the function publishes an alias).
fn integration_function(operation: &Value) -> String {
    let uri = &operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"];
    let uri = uri
        .as_str()
        .unwrap_or_else(|| panic!("integration uri: {operation}"));
    let start = uri.find("functions/${").expect("a Lambda integration") + "functions/${".len();
    let reference = &uri[start..start + uri[start..].find('}').expect("}")];
    let id = reference.split('.').next().unwrap_or(reference);
    match id.find("Alias") {
        Some(at) => id[..at].to_owned(),
        None => id.to_owned(),
    }
}

/// Route key → logical id of the function it invokes, from the API's OpenAPI body.
fn route_keys() -> BTreeMap<String, String> {
    let apis = resources("AWS::ApiGatewayV2::Api");
    let (_, api) = apis.iter().next().expect("one HTTP API");
    assert_eq!(apis.len(), 1, "one HTTP API");
    let mut keys = BTreeMap::new();
    for (path, operations) in api["Properties"]["Body"]["paths"]
        .as_object()
        .expect("the HTTP API's OpenAPI paths")
    {
        for (method, operation) in operations.as_object().expect("operations") {
            let key = if path == "/$default" {
                assert_eq!(method, "x-amazon-apigateway-any-method", "$default is ANY");
                assert_eq!(operation["isDefaultRoute"], true);
                "$default".to_owned()
            } else {
                let method = match method.as_str() {
                    "x-amazon-apigateway-any-method" => "ANY".to_owned(),
                    m => m.to_ascii_uppercase(),
                };
                format!("{method} {path}")
            };
            keys.insert(key, integration_function(operation));
        }
    }
    keys
}

#[test]
fn every_route_key_is_one_api_gateway_accepts_and_reaches_its_function() {
    let apis = resources("AWS::ApiGatewayV2::Api");
    for (id, api) in &apis {
        assert_eq!(
            api["Properties"]["FailOnWarnings"], true,
            "{id}: FailOnWarnings, so a route API Gateway would drop fails the deploy"
        );
    }
    let keys = route_keys();
    let methods: BTreeSet<&str> = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
    ]
    .into();
    for key in keys.keys().filter(|k| *k != "$default") {
        let (method, path) = key.split_once(' ').expect("METHOD /path");
        assert!(methods.contains(method), "{key}: unknown method");
        assert!(
            route_path_is_valid(path),
            "route key {key:?}: API Gateway refuses this path (a trailing slash, an empty segment \
             or a character it does not take)"
        );
    }
    let mut expected: BTreeMap<String, String> = ROUTES
        .iter()
        .map(|r| (gateway::route_key(r), logical_id(r.function)))
        .collect();
    expected.insert("$default".to_owned(), logical_id(Function::FALLBACK));
    assert_eq!(
        keys, expected,
        "the transformed template's routes are exactly one per route of ROUTES, in its routed \
         form, to its function, and $default to Function::FALLBACK"
    );
}

#[test]
fn every_route_setting_names_a_route_and_login_is_throttled() {
    let keys = route_keys();
    let stages = resources("AWS::ApiGatewayV2::Stage");
    assert_eq!(stages.len(), 1, "one stage");
    for (id, stage) in stages {
        let settings = stage["Properties"]["RouteSettings"]
            .as_object()
            .unwrap_or_else(|| panic!("{id}: RouteSettings"));
        for key in settings.keys() {
            assert!(
                keys.contains_key(key),
                "{id}: RouteSettings names {key:?}, which is no route: the deploy would fail"
            );
        }
        for route in Function::Login.routes() {
            assert!(
                settings.contains_key(&gateway::route_key(route)),
                "{id}: no RouteSettings for the login route"
            );
        }
    }
}

#[test]
fn the_route_path_check_refuses_what_api_gateway_refuses() {
    for good in [
        "/",
        "/api/health",
        "/api/docs/{file}",
        "/x/{proxy+}",
        "/api/redoc/redoc.standalone.js",
    ] {
        assert!(route_path_is_valid(good), "{good}");
    }
    for bad in [
        "",
        "api",
        "/api/health/",
        "/api//health",
        "/x/{proxy+}/y",
        "/x/{}",
        "/x y",
        "/x/{a-b}",
    ] {
        assert!(!route_path_is_valid(bad), "{bad}");
    }
}
