//! What DynamoDB answers that moto never does, put in front of moto by a [`DynamoProxy`]: the
//! refusal of an empty key range — and what clients see of it.

use std::sync::Arc;

use lighttech::auth::{CursorCodec, CursorKind, derive_key};
use lighttech::config::SecretKey;
use lighttech::domain::{Timestamp, UserId};
use lighttech::store::dynamo::DynamoStore;
use lighttech_tests::dynamo_proxy::DynamoProxy;
use lighttech_tests::{StoreFixture, TestApp, TestUser, dynamo_store};
use serde_json::json;

/// An app whose store reaches a fresh table through `proxy` with the SDK's standard retries,
/// as in service, and a handle on the same table that goes straight to moto.
async fn app_through(proxy: &DynamoProxy) -> (TestApp, DynamoStore) {
    let direct = dynamo_store().await;
    let store = proxy.retrying_store(direct.table());
    let app = TestApp::new(StoreFixture::new(Arc::new(store), ())).await;
    (app, direct)
}

fn user_id(user: &TestUser) -> UserId {
    UserId::parse(&user.id).expect("a user id")
}

/// Follows `path`'s cursors to the end: every page must be empty and answered `200`.
async fn pages_of_nothing(t: &TestApp, path: &str, token: &str) -> usize {
    let mut url = path.to_owned();
    let mut pages = 0;
    loop {
        let r = t.get(&url, Some(token)).await;
        r.expect(200, "");
        let page = r.json();
        assert_eq!(page["results"], json!([]), "{url}");
        pages += 1;
        assert!(pages <= 5, "the pages of {path} never end");
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => return pages,
        }
    }
}

/// A type filter that matches nothing over exactly one page's worth of reads (1,000 deposits,
/// ten queries of 100): the page stops at the user's first operation, where DynamoDB still
/// names a last evaluated key. It ends the history; a cursor below it would ask DynamoDB for
/// `BETWEEN OP#…01 AND OP#…00`, which it refuses (`ValidationException`, a `500`). Forged but
/// validly signed positions at or below the first operation read as an empty last page too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_matches_nothing_ends_without_an_empty_key_range() {
    let proxy = DynamoProxy::strict().await;
    let (t, direct) = app_through(&proxy).await;
    let staff = t.staff("admin").await;
    let alice = t.user("alice").await;
    super::seed_deposits(
        &direct,
        user_id(&alice),
        Timestamp::from_millis(1_700_000_000_000),
        1_000,
    )
    .await;
    let own = "/api/balance/v1/operations/?limit=20&type=transfer_in".to_owned();
    let admin = format!(
        "/api/admin/v1/users/{}/operations/?limit=20&type=transfer_in",
        alice.id
    );
    assert_eq!(pages_of_nothing(&t, &own, &alice.access).await, 1);
    assert_eq!(pages_of_nothing(&t, &admin, &staff.access).await, 1);

    let cursors = CursorCodec::new(derive_key(
        &SecretKey::new(t.secret.clone().into_bytes()).expect("a test key"),
        "cursor",
    ));
    for position in [0u64, 1] {
        for (kind, path, token) in [
            (CursorKind::History, &own, &alice.access),
            (CursorKind::AdminHistory, &admin, &staff.access),
        ] {
            for path in [path.clone(), path.replace("&type=transfer_in", "")] {
                let cursor =
                    cursors.encode_position(kind, user_id(&alice), &position.to_be_bytes());
                let r = t.get(&format!("{path}&cursor={cursor}"), Some(token)).await;
                r.expect(200, "");
                assert_eq!(
                    r.json(),
                    json!({"results": [], "next_cursor": null}),
                    "{path} at {position}"
                );
            }
        }
    }
    assert_eq!(proxy.refusals(), 0, "a call DynamoDB refuses was made");
}
