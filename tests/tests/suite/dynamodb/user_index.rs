//! The admin user list's index, `GSI1`: it projects only what the list reads, so no password
//! hash is ever copied into it, and the list still works from what it holds.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use lighttech::store::Store;
use lighttech_tests::{dynamo_store, dynamodb_endpoint, emulator_sdk_config};

#[tokio::test]
async fn the_user_index_holds_no_password_hash_and_still_serves_the_admin_list() {
    let store = dynamo_store().await;
    let table = store.table().to_owned();
    let shared: Arc<dyn Store> = Arc::new(store);
    let id = lighttech_tests::conformance_user(&shared, "indexed").await;
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let page = client
        .query()
        .table_name(table)
        .index_name(lighttech::store::dynamo::GSI1)
        .key_condition_expression("GSI1PK = :users")
        .expression_attribute_values(":users", AttributeValue::S("USERS".into()))
        .send()
        .await
        .unwrap();
    let item = page
        .items()
        .iter()
        .find(|i| i.get("user_id") == Some(&AttributeValue::S(id.to_string())))
        .expect("the new user is in the index");
    assert!(
        !item.contains_key("password_hash"),
        "GSI1 copies the password hash: {:?}",
        item.keys()
    );
    let listed = shared
        .list_users(&lighttech::store::UserQuery {
            search: Some("indexed".into()),
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(listed.users.len(), 1);
    assert_eq!(listed.users[0].user.id, id);
    assert_eq!(listed.users[0].user.username.as_str(), "indexed");
}
