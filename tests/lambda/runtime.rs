//! Every function binary, run as a Lambda: started the way the Lambda service starts a
//! `provided.al2023` bootstrap, against a stand-in Runtime API on loopback
//! (`support/runtime_api.rs`), fed API Gateway v2 events — the ones in `local/events/`, which
//! are thereby proven to work — on the embedded SQLite store.
//!
//! Which functions and routes exist comes from the code (`Function::ALL`, `ROUTES`): a function
//! added there without a happy path and an error path in `support/scenario.rs` fails
//! `every_function_binary_serves_its_routes_through_the_runtime_api`.

use std::path::{Path, PathBuf};

use crate::support::runtime_api::{Event, Lambda, Outcome, binary_dir, binary_path};
use crate::support::scenario::{
    Fleet, assert_every_function_covered, event_for, every_endpoint, route_key,
};
use lighttech::http::Function;
use serde_json::json;

fn bin_dir() -> PathBuf {
    binary_dir(env!("CARGO_BIN_EXE_health"))
}

/// Starts `function`'s binary against a Runtime API of its own.
async fn start(function: Function, env: &[(String, String)], dir: &Path) -> Lambda {
    Lambda::start(
        &binary_path(&bin_dir(), function.name()),
        function.name(),
        env,
        dir,
    )
    .await
}

fn fleet_env(dir: &Path) -> Vec<(String, String)> {
    [
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("lighttech.db").display()),
        ),
        (
            "SECRET_KEY",
            "runtime-api-test-signing-key-0123456789abcdef".to_owned(),
        ),
        // Not the defaults, so the answers prove each binary reads its environment.
        ("CURRENCY", "EUR".to_owned()),
        ("ACCESS_TOKEN_LIFETIME_MINUTES", "7".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_binary_serves_its_routes_through_the_runtime_api() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = fleet_env(dir.path());
    let mut fleet = Fleet::start(&bin_dir(), dir.path(), |_| env.clone()).await;
    let config = lighttech::Config::from_map(&env.iter().cloned().collect())
        .expect("the functions' configuration");
    let app = lighttech::App::start_with(config, lighttech::StartOptions::default())
        .await
        .expect("open the functions' store in this process");
    every_endpoint(&mut fleet, &app).await;
    assert_every_function_covered(&fleet);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_without_a_signing_key_reports_its_init_error_and_exits_unless_it_needs_none() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env: Vec<(String, String)> = fleet_env(dir.path())
        .into_iter()
        .filter(|(k, _)| k != "SECRET_KEY")
        .collect();
    for function in Function::ALL {
        let mut lambda = start(function, &env, dir.path()).await;
        if !function.needs_signing_key() {
            // The documentation, the admin page and health need no key: they start and serve.
            // The first route (docs has several GET routes): the schema, the admin page, or
            // health, which answers 200 from the store.
            let route = function.routes().next().expect("a route");
            let event = Event::new(&route_key(route), route.pattern);
            let response = lambda.invoke(&event.to_json()).await;
            assert_eq!(response.status, 200, "{}", function.name());
            assert!(lambda.init_errors().is_empty(), "{}", function.name());
            lambda.stop().await;
            continue;
        }
        let status = lambda.exit_status().await;
        assert!(
            !status.success(),
            "{} started without a key",
            function.name()
        );
        let lines = lambda.stderr_lines();
        let expected = format!(
            "{}: cannot start: signing key: neither SECRET_KEY nor SECRET_KEY_ARN is set",
            function.name()
        );
        assert_eq!(
            lines.len(),
            1,
            "{}: one line on stderr, got {lines:?}",
            function.name()
        );
        assert!(
            lines[0].starts_with(&expected),
            "{}: {lines:?}",
            function.name()
        );
        let reported = lambda.init_errors();
        assert_eq!(
            reported.len(),
            1,
            "{}: one /runtime/init/error report, got {reported:?}",
            function.name()
        );
        assert_eq!(reported[0].error_type.as_deref(), Some("Runtime.InitError"));
        assert_eq!(reported[0].body["errorMessage"], lines[0].as_str());
        assert_eq!(reported[0].body["errorType"], "Runtime.InitError");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_setting_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut env = fleet_env(dir.path());
    env.retain(|(k, _)| k != "CURRENCY");
    env.push(("CURRENCY".into(), "euro".into()));
    let function = Function::Balance;
    let mut lambda = start(function, &env, dir.path()).await;
    assert!(!lambda.exit_status().await.success());
    let lines = lambda.stderr_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("balance: cannot start: CURRENCY:"),
        "{lines:?}"
    );
    assert_eq!(lambda.init_errors().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_function_with_an_invalid_debug_setting_reports_it_and_exits() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = vec![("DEBUG".to_owned(), "perhaps".to_owned())];
    for function in Function::ALL.into_iter().filter(|f| f.stateless()) {
        let mut lambda = start(function, &env, dir.path()).await;
        assert!(!lambda.exit_status().await.success(), "{function:?}");
        let lines = lambda.stderr_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let expected = format!("{}: cannot start: DEBUG:", function.name());
        assert!(lines[0].starts_with(&expected), "{lines:?}");
        let reported = lambda.init_errors();
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert_eq!(reported[0].body["errorMessage"], lines[0].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_is_not_from_api_gateway_is_reported_as_an_invocation_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let env = fleet_env(dir.path());
    let function = Function::Health;
    let mut lambda = start(function, &env, dir.path()).await;
    lambda.initialized().await;
    match lambda.invoke_raw(&json!("not an event")).await {
        Outcome::Error { body, error_type } => {
            assert!(error_type.is_some(), "{body}");
            assert!(body["errorMessage"].is_string(), "{body}");
        }
        Outcome::Response(body) => panic!("answered a non-event: {body}"),
    }
    // The runtime keeps serving after a bad event.
    let response = lambda.invoke(&event_for(function, "GET").to_json()).await;
    assert_eq!(response.status, 200, "{response:?}");
    lambda.stop().await;
}

/// A `503` is reported to CloudWatch as an embedded metric line of the invocation, named by the
/// Lambda function's name; `AWS_LAMBDA_LOG_LEVEL` (the template's `LogLevel`) sets the level when
/// `RUST_LOG` is not given, so at `ERROR` the request's INFO line and the WARN about the store
/// stay out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_becomes_an_embedded_metric_and_the_lambda_log_level_filters_the_log() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // health on a DynamoDB endpoint nothing listens on: its ping fails, it answers 503.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", "dynamodb://lighttech".to_owned()),
        ("AWS_ENDPOINT_URL", format!("http://{closed}")),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_MAX_ATTEMPTS", "1".to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "ERROR".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut lambda = start(Function::Health, &env, dir.path()).await;
    let response = lambda
        .invoke(&event_for(Function::Health, "GET").to_json())
        .await;
    assert_eq!(response.status, 503, "{response:?}");
    // A second invocation that counts nothing writes no metric line.
    let quiet = lambda
        .invoke(&Event::unrouted("GET", "/api/no-such-path").to_json())
        .await;
    assert_eq!(quiet.status, 404, "{quiet:?}");
    let lines = lambda.stderr_lines();
    lambda.stop().await;
    let metrics: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(metrics.len(), 1, "one metric line, for the 503: {lines:#?}");
    let line = &metrics[0];
    assert_eq!(line["FunctionName"], "lighttech-health");
    assert_eq!(line["ServiceUnavailable"], 1);
    // Lambda drops lines below ApplicationLogLevel and reads a line with no level as INFO.
    assert_eq!(line["level"], "ERROR", "the metric line passes the filter");
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        lighttech::metrics::NAMESPACE
    );
    for level in ["\"level\":\"INFO\"", "\"level\":\"WARN\""] {
        assert!(
            !lines.iter().any(|l| l.contains(level)),
            "AWS_LAMBDA_LOG_LEVEL=ERROR lets no {level} line through: {lines:#?}"
        );
    }
}
