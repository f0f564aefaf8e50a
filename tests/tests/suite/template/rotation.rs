//! The signing key's rotation in `template.yaml`: one function built from its own binary, a
//! policy on this secret alone, Secrets Manager's permission to invoke it, and a schedule whose
//! period is a parameter longer than a refresh token lives. That the policy allows exactly what
//! the binary calls is checked by `tests/lambda/rotation.rs`.

use super::{all_functions, list, read, resources_of, template, text};
use lighttech::aws_rotation::FUNCTION;

#[test]
fn the_rotation_function_may_rotate_the_signing_key_and_nothing_else() {
    let template = template();
    let functions = all_functions(&template);
    let (id, function) = functions
        .get(FUNCTION)
        .unwrap_or_else(|| panic!("no SAM function builds the binary {FUNCTION}"));
    assert!(
        read("functions/Cargo.toml").contains(&format!("name = \"{FUNCTION}\"")),
        "functions/Cargo.toml has no [[bin]] named {FUNCTION}"
    );
    assert!(
        function["Properties"]["Events"].is_badvalue(),
        "{id}: Secrets Manager invokes it; no route does"
    );
    let policies = function["Properties"]["Policies"]
        .as_vec()
        .unwrap_or_else(|| panic!("{id}: Policies is a list"));
    let mut actions = Vec::new();
    for policy in policies {
        for statement in policy["Statement"].as_vec().expect("Statement list") {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{id}");
            assert_eq!(list(&statement["Resource"]), ["SigningKey"], "{id}");
            actions.extend(list(&statement["Action"]));
        }
    }
    actions.sort();
    assert_eq!(
        actions,
        [
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:UpdateSecretVersionStage",
        ],
        "{id}: the four calls of the rotation steps, nothing more"
    );

    let permissions = resources_of(&template, "AWS::Lambda::Permission");
    let invoke: Vec<_> = permissions
        .values()
        .filter(|p| text(&p["Properties"]["FunctionName"]) == format!("{id}.Arn"))
        .collect();
    assert_eq!(invoke.len(), 1, "one permission to invoke {id}");
    let invoke = &invoke[0]["Properties"];
    assert_eq!(text(&invoke["Action"]), "lambda:InvokeFunction");
    assert_eq!(text(&invoke["Principal"]), "secretsmanager.amazonaws.com");
    assert_eq!(
        text(&invoke["SourceArn"]),
        "SigningKey",
        "for this secret only"
    );
    assert_eq!(text(&invoke["SourceAccount"]), "AWS::AccountId");
}

#[test]
fn the_signing_key_rotates_on_a_schedule_longer_than_a_refresh_token_lives() {
    let template = template();
    let schedules = resources_of(&template, "AWS::SecretsManager::RotationSchedule");
    assert_eq!(schedules.len(), 1, "one rotation schedule");
    let (id, schedule) = schedules.into_iter().next().expect("schedule");
    let properties = &schedule["Properties"];
    assert_eq!(text(&properties["SecretId"]), "SigningKey", "{id}");
    let (function_id, _) = &all_functions(&template)[FUNCTION];
    assert_eq!(
        text(&properties["RotationLambdaARN"]),
        format!("{function_id}.Arn")
    );
    assert_eq!(
        properties["RotateImmediatelyOnUpdate"].as_bool(),
        Some(false),
        "{id}: a deploy changes no key"
    );
    assert_eq!(
        text(&properties["RotationRules"]["ScheduleExpression"]),
        "rate(${SigningKeyRotationDays} days)"
    );
    // Secrets Manager checks it may invoke the function when the schedule is created.
    assert!(
        list(&schedule["DependsOn"]).iter().any(|d| resources_of(
            &template,
            "AWS::Lambda::Permission"
        )
        .contains_key(d)),
        "{id} depends on the invoke permission"
    );

    let days = template["Parameters"]["SigningKeyRotationDays"]["Default"]
        .as_i64()
        .expect("SigningKeyRotationDays has a numeric default");
    assert_eq!(days, 30);
    let refresh_minutes = template["Parameters"]["RefreshTokenLifetimeMinutes"]["Default"]
        .as_i64()
        .expect("RefreshTokenLifetimeMinutes default");
    let access_minutes = template["Parameters"]["AccessTokenLifetimeMinutes"]["Default"]
        .as_i64()
        .expect("AccessTokenLifetimeMinutes default");
    assert!(
        days * 24 * 60 > refresh_minutes.max(access_minutes),
        "a rotation every {days} days must outlast a refresh token ({refresh_minutes} min): \
         tokens of the previous key still verify, so one rotation logs no one out"
    );
    let minimum = template["Parameters"]["SigningKeyRotationDays"]["MinValue"]
        .as_i64()
        .expect("MinValue");
    let maximum = template["Parameters"]["SigningKeyRotationDays"]["MaxValue"]
        .as_i64()
        .expect("MaxValue");
    assert!(
        minimum >= 1 && maximum <= 1000,
        "Secrets Manager rotates every 1 to 1000 days"
    );
}
