//! The test kit's own logic: how test processes spread over the moto servers, and what the
//! DynamoDB proxy refuses in DynamoDB's stead (`tests/src/`).

use lighttech_tests::dynamo_proxy::{Call, refusal};
use lighttech_tests::pick_endpoint;

#[test]
fn processes_spread_over_every_listed_endpoint() {
    let all = "http://127.0.0.1:1, http://127.0.0.1:2,http://127.0.0.1:3";
    let picked: std::collections::BTreeSet<&str> =
        (100..106).map(|pid| pick_endpoint(all, pid)).collect();
    assert_eq!(picked.len(), 3, "{picked:?}");
    assert_eq!(
        pick_endpoint("http://127.0.0.1:9", 12345),
        "http://127.0.0.1:9"
    );
    assert_eq!(pick_endpoint(all, 7), pick_endpoint(all, 7));
}

fn query(lower: &str, upper: &str) -> Call {
    Call {
        operation: "query".into(),
        body: serde_json::json!({
            "KeyConditionExpression": "PK = :pk AND SK BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": "USER#1"}, ":lo": {"S": lower}, ":hi": {"S": upper},
            },
        }),
    }
}

#[test]
fn an_inverted_between_is_refused_as_dynamodb_refuses_it() {
    let refused = refusal(&query("OP#01", "OP#00")).expect("refused");
    let text = String::from_utf8(refused).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.contains("com.amazonaws.dynamodb.v20120810#ValidationException"),
        "{text}"
    );
    assert!(text.contains("upper bound to be greater than or equal to lower bound"));
}

#[test]
fn a_between_in_order_or_of_one_key_passes() {
    assert!(refusal(&query("OP#00", "OP#01")).is_none());
    assert!(refusal(&query("OP#01", "OP#01")).is_none());
    let mut other = query("OP#01", "OP#00");
    other.body["KeyConditionExpression"] = "PK = :pk AND SK < :hi".into();
    assert!(refusal(&other).is_none());
}
