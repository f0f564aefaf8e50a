//! What a real deploy needs beyond the routes, checked on the transformed template (see
//! `transformed`) and the files the deploy uses: `samconfig.toml` (no wizard),
//! `stack-policy.json` (the table is never replaced), aliases and CodeDeploy rollouts, tracing
//! and log levels, the alarms, the dashboard and the access log.

use std::collections::BTreeSet;
use std::process::Command;

use lighttech::http::Function;
use serde_json::{Value, json};

use super::transformed::{resources, transformed};
use super::{logical_id, read, root};

/// The money functions: deployed as a canary, watched for their duration.
const MONEY: [Function; 3] = [Function::Deposit, Function::Withdraw, Function::Transfer];

/// Every DynamoDB operation the functions call (their IAM actions, with `TransactWriteItems`
/// for the transactions that IAM authorises item by item).
const OPERATIONS: [&str; 7] = [
    "GetItem",
    "BatchGetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "TransactWriteItems",
];

fn resource(id: &str) -> &'static Value {
    transformed()["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("the transformed template has no resource {id}"))
}

fn r#ref(id: &str) -> Value {
    json!({ "Ref": id })
}

fn parameter_default(name: &str) -> Value {
    transformed()["Parameters"][name]["Default"].clone()
}

fn samconfig() -> Value {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/template/toml2json.py"))
        .arg(root().join("samconfig.toml"))
        .output()
        .expect("run tests/template/toml2json.py with .venv/bin/python (tests/venv)");
    assert!(
        out.status.success(),
        "samconfig.toml is not TOML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn every_function_publishes_a_live_alias_that_the_api_invokes_and_codedeploy_shifts() {
    assert_eq!(parameter_default("DeploymentType"), "AllAtOnce");
    assert!(
        parameter_default("MoneyDeploymentType")
            .as_str()
            .is_some_and(|t| t.starts_with("Canary")),
        "the money functions shift as a canary by default"
    );
    for function in Function::ALL {
        let id = logical_id(function);
        let alias = resource(&format!("{id}Aliaslive"));
        assert_eq!(alias["Type"], "AWS::Lambda::Alias");
        assert_eq!(alias["Properties"]["FunctionName"], r#ref(&id));
        let group_id = format!("{id}DeploymentGroup");
        assert_eq!(
            alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"],
            r#ref(&group_id),
            "{id}: its alias moves through CodeDeploy"
        );
        let group = &resource(&group_id)["Properties"];
        let config = &group["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"];
        let expected = if MONEY.contains(&function) {
            parameter_default("MoneyDeploymentType")
        } else {
            parameter_default("DeploymentType")
        };
        assert_eq!(*config, expected, "{id}: deployment type");
        // Rolled back on the alias's own errors, and on nothing that names the API (an API
        // metric in a deployment group's alarm is a dependency cycle, cfn-lint's E3004).
        let alarm_id = format!("{}AliasErrorsAlarm", id.trim_end_matches("Function"));
        assert_eq!(group["AlarmConfiguration"]["Enabled"], true);
        assert_eq!(
            group["AlarmConfiguration"]["Alarms"],
            json!([{ "Name": r#ref(&alarm_id) }]),
            "{id}"
        );
        let events = group["AutoRollbackConfiguration"]["Events"].to_string();
        assert!(
            events.contains("DEPLOYMENT_STOP_ON_ALARM"),
            "{id}: {events}"
        );
        let alarm = &resource(&alarm_id)["Properties"];
        assert_eq!(
            (&alarm["Namespace"], &alarm["MetricName"]),
            (&json!("AWS/Lambda"), &json!("Errors"))
        );
        assert!(
            alarm["Dimensions"]
                .as_array()
                .expect("Dimensions")
                .contains(
                    &json!({"Name": "Resource", "Value": {"Fn::Sub": format!("${{{id}}}:live")}})
                ),
            "{alarm_id} watches the live alias: {alarm}"
        );
        assert!(!alarm.to_string().contains("HttpApi"), "{alarm_id}");
    }
    // The API invokes the aliases, so traffic follows the shift.
    let api = resources("AWS::ApiGatewayV2::Api");
    let body = api.values().next().expect("the HTTP API")["Properties"]["Body"].to_string();
    for function in Function::ALL {
        let id = logical_id(function);
        assert!(
            body.contains(&format!("${{{id}Aliaslive}}")),
            "{id}: the API invokes its live alias"
        );
    }
}

#[test]
fn every_function_traces_and_logs_json_at_the_chosen_level() {
    for function in Function::ALL {
        let id = logical_id(function);
        let p = &resource(&id)["Properties"];
        assert_eq!(p["TracingConfig"]["Mode"], "Active", "{id}");
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON", "{id}");
        assert_eq!(
            p["LoggingConfig"]["ApplicationLogLevel"],
            r#ref("LogLevel"),
            "{id}: the level reaches the function as AWS_LAMBDA_LOG_LEVEL"
        );
        assert!(
            p["Environment"]["Variables"].get("RUST_LOG").is_none(),
            "{id}: RUST_LOG would override LogLevel"
        );
        let reserved = &p["ReservedConcurrentExecutions"];
        if matches!(function, Function::Login | Function::Register) {
            assert_eq!(
                *reserved,
                json!({"Fn::If": ["ReservesPasswordHashingConcurrency",
                    r#ref("PasswordHashingReservedConcurrency"), r#ref("AWS::NoValue")]}),
                "{id}"
            );
        } else {
            assert!(reserved.is_null(), "{id}: no reserved concurrency");
        }
    }
    assert_eq!(parameter_default("LogLevel"), "INFO");
    assert_eq!(
        parameter_default("PasswordHashingReservedConcurrency"),
        -1,
        "no reservation unless asked: a new account's quota may not allow one"
    );
}

/// Every alarm, by logical id.
fn alarms() -> std::collections::BTreeMap<String, &'static Value> {
    resources("AWS::CloudWatch::Alarm")
}

/// The metrics an alarm watches: (namespace, metric name, its dimensions as JSON).
fn watched(alarm: &Value) -> Vec<(String, String, Value)> {
    let p = &alarm["Properties"];
    if let Some(metrics) = p["Metrics"].as_array() {
        metrics
            .iter()
            .filter_map(|m| {
                let metric = &m["MetricStat"]["Metric"];
                metric["MetricName"].as_str().map(|name| {
                    (
                        metric["Namespace"].as_str().unwrap_or_default().to_owned(),
                        name.to_owned(),
                        metric["Dimensions"].clone(),
                    )
                })
            })
            .collect()
    } else {
        vec![(
            p["Namespace"].as_str().unwrap_or_default().to_owned(),
            p["MetricName"].as_str().unwrap_or_default().to_owned(),
            p["Dimensions"].clone(),
        )]
    }
}

#[test]
fn alarms_watch_the_api_the_functions_the_table_and_error_lines_and_all_notify_the_topic() {
    let alarms = alarms();
    assert_eq!(resource("AlarmTopic")["Type"], "AWS::SNS::Topic");
    let subscription = resource("AlarmEmailSubscription");
    assert_eq!(subscription["Condition"], "HasAlarmEmail");
    assert_eq!(subscription["Properties"]["Endpoint"], r#ref("AlarmEmail"));
    assert_eq!(parameter_default("AlarmEmail"), "");
    for (id, alarm) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(
                alarm["Properties"][actions],
                json!([r#ref("AlarmTopic")]),
                "{id}: {actions} notify the topic"
            );
        }
    }
    let any = |namespace: &str, metric: &str, dimension: &Value| {
        alarms.values().any(|a| {
            watched(a).iter().any(|(n, m, d)| {
                n == namespace && m == metric && d.as_array().is_some_and(|d| d.contains(dimension))
            })
        })
    };
    let api = json!({"Name": "ApiId", "Value": r#ref("HttpApi")});
    assert!(
        any("AWS/ApiGateway", "5xx", &api),
        "an alarm on the API's 5xx"
    );
    assert!(
        alarms
            .values()
            .any(|a| a["Properties"]["MetricName"] == "Latency"
                && a["Properties"]["ExtendedStatistic"] == "p99"),
        "an alarm on the API's p99 latency"
    );
    for function in Function::ALL {
        let id = logical_id(function);
        let dimension = json!({"Name": "FunctionName", "Value": r#ref(&id)});
        for metric in ["Errors", "Throttles"] {
            assert!(
                any("AWS/Lambda", metric, &dimension),
                "{id}: no {metric} alarm"
            );
        }
        let is_money = MONEY.contains(&function);
        let duration = alarms.values().any(|a| {
            a["Properties"]["MetricName"] == "Duration"
                && a["Properties"]["ExtendedStatistic"] == "p99"
                && watched(a)
                    .iter()
                    .any(|(_, _, d)| d.as_array().is_some_and(|d| d.contains(&dimension)))
        });
        assert_eq!(
            duration, is_money,
            "{id}: a p99 duration alarm exactly for the money functions"
        );
        // Its "level":"ERROR" lines are counted, but not its metric lines (EMF, with `_aws`),
        // which carry the configured level to pass Lambda's filter.
        let group = format!("{}LogGroup", id.trim_end_matches("Function"));
        let filter = resources("AWS::Logs::MetricFilter")
            .into_values()
            .find(|f| f["Properties"]["LogGroupName"] == r#ref(&group))
            .unwrap_or_else(|| panic!("{id}: no metric filter on {group}"));
        assert_eq!(
            filter["Properties"]["FilterPattern"],
            r#"{ $.level = "ERROR" && $._aws NOT EXISTS }"#
        );
        assert_eq!(
            filter["Properties"]["MetricTransformations"][0]["MetricName"],
            "ErrorLogLines"
        );
    }
    assert!(
        alarms
            .values()
            .any(|a| a["Properties"]["MetricName"] == "ErrorLogLines"),
        "an alarm on the ERROR lines"
    );
    for metric in ["ThrottledRequests", "SystemErrors"] {
        for operation in OPERATIONS {
            let op = json!({"Name": "Operation", "Value": operation});
            assert!(
                any("AWS/DynamoDB", metric, &op),
                "no alarm on DynamoDB {metric} of {operation}"
            );
        }
    }
}

#[test]
fn the_dashboard_shows_every_alarm_and_the_metrics_they_watch() {
    let body = resource("Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody: !Sub of JSON");
    let dashboard: Value = serde_json::from_str(body).expect("the dashboard body is JSON");
    let widgets = dashboard["widgets"].as_array().expect("widgets");
    let shown: BTreeSet<String> = widgets
        .iter()
        .filter(|w| w["type"] == "alarm")
        .flat_map(|w| {
            w["properties"]["alarms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let every: BTreeSet<String> = alarms().keys().map(|id| format!("${{{id}.Arn}}")).collect();
    assert_eq!(shown, every, "the alarm widget lists every alarm");
    let metrics = widgets
        .iter()
        .filter(|w| w["type"] == "metric")
        .map(|w| w["properties"]["metrics"].to_string())
        .collect::<String>();
    for metric in [
        "\"5xx\"",
        "\"Latency\"",
        "\"Errors\"",
        "\"Throttles\"",
        "\"Duration\"",
        "\"ThrottledRequests\"",
        "\"SystemErrors\"",
        "\"ErrorLogLines\"",
        "\"TransactionConflicts\"",
        "\"Retries\"",
        "\"ServiceUnavailable\"",
    ] {
        assert!(metrics.contains(metric), "the dashboard shows no {metric}");
    }
}

#[test]
fn the_access_log_names_the_request_the_invocation_the_route_and_both_statuses() {
    let stage = resources("AWS::ApiGatewayV2::Stage")
        .into_values()
        .next()
        .expect("the stage");
    let format = stage["Properties"]["AccessLogSettings"]["Format"]
        .as_str()
        .expect("an access log format");
    let line: Value = serde_json::from_str(format).expect("each access log line is JSON");
    for variable in [
        "$context.requestId",
        "$context.integration.requestId",
        "$context.httpMethod",
        "$context.path",
        "$context.routeKey",
        "$context.status",
        "$context.integration.integrationStatus",
        "$context.integration.status",
    ] {
        assert!(
            line.as_object()
                .expect("an object")
                .values()
                .any(|v| v == variable),
            "the access log lacks {variable}"
        );
    }
}

#[test]
fn samconfig_answers_every_question_of_a_deploy_with_parameters_the_template_has() {
    let config = samconfig();
    assert_eq!(config["version"], 0.1);
    assert!(
        config["default"]["global"]["parameters"]["stack_name"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    // The Rust build method is a SAM beta feature: opted in, or `sam build` asks first.
    for command in ["build", "sync"] {
        assert_eq!(
            config["default"][command]["parameters"]["beta_features"], true,
            "sam {command} opts in to rust-cargolambda"
        );
    }
    let deploy = &config["default"]["deploy"]["parameters"];
    let capabilities = deploy["capabilities"].to_string();
    assert!(capabilities.contains("CAPABILITY_IAM"), "{capabilities}");
    assert_eq!(deploy["resolve_s3"], true, "no bucket to name by hand");
    assert!(
        deploy["confirm_changeset"].is_boolean(),
        "confirm_changeset is answered"
    );
    let overrides = deploy["parameter_overrides"]
        .as_str()
        .expect("parameter_overrides");
    let parameters = &transformed()["Parameters"];
    for pair in overrides.split_whitespace() {
        let (name, value) = pair.split_once('=').expect("Name=value");
        let declared = parameters
            .get(name)
            .unwrap_or_else(|| panic!("samconfig.toml sets {name}, which template.yaml lacks"));
        if let Some(allowed) = declared["AllowedValues"].as_array() {
            assert!(
                allowed.iter().any(|a| a.as_str() == Some(value)
                    || a.as_i64().is_some_and(|n| n.to_string() == value)),
                "{name}={value} is not among {allowed:?}"
            );
        }
        assert_eq!(
            declared["Default"].to_string().trim_matches('"'),
            value,
            "samconfig.toml writes out the template's default of {name}"
        );
    }
}

#[test]
fn the_table_is_kept_and_the_deploy_refuses_to_replace_it() {
    let table = resource("Table");
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    assert_eq!(table["Properties"]["DeletionProtectionEnabled"], true);
    let policy: Value =
        serde_json::from_str(&read("stack-policy.json")).expect("stack-policy.json is JSON");
    let statements = policy["Statement"].as_array().expect("Statement");
    let denies = |action: &str| {
        statements.iter().any(|s| {
            s["Effect"] == "Deny"
                && s["Resource"]
                    .to_string()
                    .contains("LogicalResourceId/Table")
                && s["Action"].to_string().contains(action)
        })
    };
    assert!(denies("Update:Replace") && denies("Update:Delete"));
    assert!(
        statements
            .iter()
            .any(|s| s["Effect"] == "Allow" && s["Action"] == "Update:*"),
        "everything else may still be updated"
    );
    let deploy = read("local/deploy.sh");
    assert!(deploy.contains("stack-policy.json") && deploy.contains("sam deploy"));
    for page in ["README.md", "docs/deploy.md"] {
        assert!(
            read(page).contains("local/deploy.sh"),
            "{page}: the deploy command is local/deploy.sh"
        );
    }
}

#[test]
fn the_deploy_guide_says_why_there_is_no_api_gateway_authorizer() {
    for page in ["README.md", "docs/deploy.md"] {
        assert!(
            read(page).contains("no API Gateway authorizer"),
            "{page}: say why no authorizer is configured"
        );
    }
}
