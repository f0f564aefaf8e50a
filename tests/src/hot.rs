//! A hot recipient whose writes the store refuses: what a client sees, on every backend. The
//! backend's own conflicts are injected (DynamoDB transaction conflicts, PostgreSQL
//! serialization failures, a SQLite database held busy) until the store gives up retrying.
//! The answer is `503 service_unavailable` with `Retry-After`, nothing is applied, and the
//! same request with the same `Idempotency-Key`, sent once the conflicts are over, is applied
//! exactly once.

use std::future::Future;

use serde_json::json;

use crate::TestApp;

/// `refusing` serves the request while the conflicts last (`refuse` has started them, `allow`
/// ends them); `healthy` serves everything else. Both run on the same data with one key.
pub async fn a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once(
    refusing: &TestApp,
    healthy: &TestApp,
    refuse: impl Future<Output = ()>,
    allow: impl Future<Output = ()>,
) {
    let alice = healthy.user("alice").await;
    let shop = healthy.user("shop").await;
    healthy.deposit(&alice, "10.00").await;
    let request = json!({"to": "shop", "amount": "2.50", "description": "tip"});
    let key = [("idempotency-key", "hot-tip-1")];
    let send = async |app: &TestApp| {
        app.post(
            "/api/balance/v1/transfer/",
            Some(&alice.access),
            &request,
            &key,
        )
        .await
    };

    refuse.await;
    let refused = send(refusing).await;
    refused.expect(503, "service_unavailable");
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("a 503 says when to retry, in seconds");
    assert!((1..=60).contains(&wait), "Retry-After: {wait}");
    allow.await;

    // Nothing was applied: both balances and histories are as before.
    assert_eq!(healthy.balance(&alice).await, "10.00");
    assert_eq!(healthy.balance(&shop).await, "0.00");
    assert!(healthy.all_operations(&shop).await.is_empty());

    let applied = send(healthy).await;
    applied.expect(201, "");
    assert!(applied.header("idempotent-replayed").is_none());
    let again = send(healthy).await;
    again.expect(201, "");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json(), applied.json());
    assert_eq!(healthy.balance(&alice).await, "7.50");
    assert_eq!(healthy.balance(&shop).await, "2.50");
    let received = healthy.all_operations(&shop).await;
    assert_eq!(received.len(), 1, "one transfer_in: {received:?}");
    assert_eq!(received[0]["type"], "transfer_in");
    assert_eq!(received[0]["balance_after"], "2.50");
}
