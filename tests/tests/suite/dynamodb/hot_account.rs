//! A hot recipient's writes refused by DynamoDB: every transaction of one store handle ends in
//! `TransactionConflict` until its retries run out, while a second handle on the same table
//! serves everything else.

use std::sync::Arc;

use lighttech::App;
use lighttech::store::Store;
use lighttech::store::dynamo::{DynamoStore, FaultInjector};
use lighttech_tests::{TestApp, dynamo_store, dynamodb_endpoint, emulator_sdk_config, hot};

#[tokio::test]
async fn a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once() {
    let healthy = dynamo_store().await;
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let conflicting: Arc<dyn Store> = Arc::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), healthy.table()).with_fault_injector(
            FaultInjector {
                conflict_rate: 1.0,
                seed: lighttech_tests::fault_seed(),
            },
        ),
    );
    let secret = lighttech_tests::test_secret();
    let config = lighttech_tests::test_config(&[("SECRET_KEY", secret.as_str())]);
    let key = config.secret_key.clone().expect("the test key");
    let healthy = TestApp::from_app(
        App::new(config.clone(), Arc::new(healthy), &key),
        secret.clone(),
    );
    let refusing = TestApp::from_app(App::new(config, conflicting, &key), secret);
    hot::a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once(
        &refusing,
        &healthy,
        async {},
        async {},
    )
    .await;
}
