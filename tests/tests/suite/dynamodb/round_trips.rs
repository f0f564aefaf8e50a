//! DynamoDB calls per request, counted by a [`DynamoProxy`] that forwards everything: a history
//! read costs the caller's session and account in one `BatchGetItem` (the account's version
//! keys the cache), then a `Query` on a miss and nothing more on a hit.

use std::sync::{Arc, Mutex};

use lighttech_tests::dynamo_proxy::{DynamoProxy, Verdict};
use lighttech_tests::{StoreFixture, TestApp, dynamo_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_reads_the_session_and_the_account_in_one_call() {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let proxy = DynamoProxy::start(move |call| {
        seen.lock()
            .expect("the call log")
            .push(call.operation.clone());
        Verdict::Forward
    })
    .await;
    let direct = dynamo_store().await;
    let store = proxy.retrying_store(direct.table());
    let t = TestApp::new(StoreFixture::new(Arc::new(store), ())).await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "10.00").await;
    let path = "/api/balance/v1/operations/?limit=5";
    let read = |expected_cache: &'static str| {
        let calls = Arc::clone(&calls);
        let t = &t;
        let alice = &alice;
        async move {
            calls.lock().expect("the call log").clear();
            let r = t.get(path, Some(&alice.access)).await;
            r.expect(200, "");
            assert_eq!(r.header("x-cache").as_deref(), Some(expected_cache));
            calls.lock().expect("the call log").clone()
        }
    };
    let miss = read("miss").await;
    assert_eq!(miss, ["batchgetitem", "query"], "a miss");
    let hit = read("hit").await;
    assert_eq!(hit, ["batchgetitem"], "a hit");
    assert_eq!(proxy.refusals(), 0);
}
