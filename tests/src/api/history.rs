//! Operation history: cursor paging bound to its user, parameter validation, filters, and the
//! history cache (fresh after every movement, `ETag`/`If-None-Match`, shared caches and keys).

use http::Method;
use lighttech::clock::Clock;
use serde_json::{Value, json};

use super::{move_money, transfer_as};
use crate::{Resp, TestApp, TestUser};

pub async fn history_pages_with_user_bound_cursors(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    for i in 1..=25 {
        t.deposit(&alice, &format!("{i}")).await;
    }
    let mut path = "/api/balance/v1/operations/?limit=10".to_owned();
    let mut amounts = Vec::new();
    let mut pages = 0;
    let mut first_cursor = None;
    loop {
        let r = t.get(&path, Some(&alice.access)).await;
        r.expect(200, "");
        pages += 1;
        let j = r.json();
        for op in j["results"].as_array().unwrap() {
            amounts.push(op["amount"].as_str().unwrap().to_owned());
        }
        match j["next_cursor"].as_str() {
            Some(c) => {
                assert!(
                    c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{c}"
                );
                first_cursor.get_or_insert_with(|| c.to_owned());
                path = format!("/api/balance/v1/operations/?limit=10&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=25).rev().map(|i| format!("{i}.00")).collect();
    assert_eq!(
        amounts, expected,
        "newest first, nothing missing or repeated"
    );
    let default_page = t
        .get("/api/balance/v1/operations/", Some(&alice.access))
        .await;
    assert_eq!(default_page.json()["results"].as_array().unwrap().len(), 20);
    // Alice's cursor is useless to Bob.
    t.get(
        &format!(
            "/api/balance/v1/operations/?cursor={}",
            first_cursor.unwrap()
        ),
        Some(&bob.access),
    )
    .await
    .expect(400, "validation_error");
}

pub async fn history_parameters_are_validated(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "1").await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "type=bonus",
        "type=deposit,,withdrawal",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "since=2026-11-28T10:00:00Z&until=2026-11-28T09:00:00Z",
        "cursor=garbage",
        "cursor=",
        "cursor=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "cursor=a.b",
        "limit=5&limit=6",
    ] {
        let r = t
            .get(
                &format!("/api/balance/v1/operations/?{query}"),
                Some(&alice.access),
            )
            .await;
        r.expect(400, "validation_error");
        assert!(r.json()["errors"].is_object(), "{query}");
    }
    let ok = t
        .get(
            "/api/balance/v1/operations/?limit=100&type=deposit&unknown=1",
            Some(&alice.access),
        )
        .await;
    ok.expect(200, "");
}

pub async fn history_filters_by_type_and_time(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "100").await;
    t.clock.advance_seconds(60);
    let middle = t.clock.now();
    move_money(&t, &alice, "withdraw", "1")
        .await
        .expect(201, "");
    t.clock.advance_seconds(60);
    transfer_as(&t, &alice, "bob", "2").await.expect(201, "");
    transfer_as(&t, &bob, "alice", "1").await.expect(201, "");
    let types = |query: String| {
        let t = t.clone();
        let token = alice.access.clone();
        async move {
            let r = t
                .get(
                    &format!("/api/balance/v1/operations/?{query}"),
                    Some(&token),
                )
                .await;
            r.expect(200, "");
            r.json()["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["type"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        types("".into()).await,
        ["transfer_in", "transfer_out", "withdrawal", "deposit"]
    );
    assert_eq!(
        types("type=deposit,withdrawal".into()).await,
        ["withdrawal", "deposit"]
    );
    assert_eq!(types("type=transfer_in".into()).await, ["transfer_in"]);
    let since = middle.to_rfc3339();
    assert_eq!(
        types(format!("since={since}")).await,
        ["transfer_in", "transfer_out", "withdrawal"]
    );
    assert_eq!(
        types(format!("until={since}")).await,
        ["withdrawal", "deposit"]
    );
    assert_eq!(
        types(format!("since={since}&until={since}&type=withdrawal")).await,
        ["withdrawal"]
    );
    // Offsets other than Z are understood.
    let plus3 = middle.plus_seconds(0).to_rfc3339().replace('Z', "+00:00");
    assert_eq!(
        types(format!("until={}", plus3.replace('+', "%2B"))).await,
        ["withdrawal", "deposit"]
    );
}

pub(super) async fn history(t: &TestApp, user: &TestUser, query: &str, etag: Option<&str>) -> Resp {
    let auth = format!("Bearer {}", user.access);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(tag) = etag {
        headers.push(("if-none-match", tag));
    }
    t.send(
        Method::GET,
        &format!("/api/balance/v1/operations/{query}"),
        &headers,
        None,
    )
    .await
}

pub async fn history_reads_repeat_from_the_cache_and_stay_fresh(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "100").await;
    let first = history(&t, &alice, "", None).await;
    first.expect(200, "");
    assert_eq!(first.header("x-cache").as_deref(), Some("miss"));
    let again = history(&t, &alice, "", None).await;
    assert_eq!(again.header("x-cache").as_deref(), Some("hit"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(
        again.header("cache-control").as_deref(),
        Some("private, no-cache")
    );

    let newest = |r: &Resp| r.json()["results"][0].clone();
    // After one's own deposit.
    t.deposit(&alice, "1").await;
    let r = history(&t, &alice, "", None).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("miss"));
    assert_eq!(newest(&r)["amount"], "1.00");
    assert_ne!(r.header("etag"), first.header("etag"));
    history(&t, &alice, "", None).await; // cache it
    // After an outgoing transfer.
    transfer_as(&t, &alice, "bob", "2").await.expect(201, "");
    assert_eq!(
        newest(&history(&t, &alice, "", None).await)["type"],
        "transfer_out"
    );
    // After an incoming transfer: the recipient's cached page changes too.
    history(&t, &bob, "", None).await;
    history(&t, &bob, "", None).await;
    transfer_as(&t, &alice, "bob", "3").await.expect(201, "");
    let r = history(&t, &bob, "", None).await;
    assert_eq!(r.header("x-cache").as_deref(), Some("miss"));
    assert_eq!(newest(&r)["amount"], "3.00");
    assert_eq!(newest(&r)["type"], "transfer_in");
    let stats = &t.app.cache_stats;
    assert!(stats.hits.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(stats.misses.load(std::sync::atomic::Ordering::Relaxed) >= 4);
}

pub async fn if_none_match_answers_304_until_the_account_changes(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "5").await;
    let page = history(&t, &alice, "?limit=5", None).await;
    let etag = page.header("etag").expect("an ETag");
    let r = history(&t, &alice, "?limit=5", Some(&etag)).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
    assert!(r.header("x-request-id").is_some());
    // Another query is another page.
    assert_eq!(
        history(&t, &alice, "?limit=6", Some(&etag)).await.status,
        200
    );
    // A change to the account invalidates the tag.
    t.deposit(&alice, "1").await;
    let r = history(&t, &alice, "?limit=5", Some(&etag)).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag").as_deref(), Some(etag.as_str()));
    assert_eq!(r.json()["results"][0]["amount"], "1.00");
}

pub async fn paging_through_cached_pages_equals_paging_through_the_store(t: TestApp) {
    let alice = t.user("alice").await;
    for i in 1..=12 {
        t.deposit(&alice, &format!("{i}")).await;
    }
    let walk = |t: TestApp, user: TestUser| async move {
        let mut pages = Vec::new();
        let mut query = "?limit=5&type=deposit".to_owned();
        loop {
            let r = history(&t, &user, &query, None).await;
            r.expect(200, "");
            let j = r.json();
            pages.push((
                r.header("x-cache").unwrap_or_default(),
                j["results"].clone(),
            ));
            match j["next_cursor"].as_str() {
                Some(c) => query = format!("?limit=5&type=deposit&cursor={c}"),
                None => return pages,
            }
        }
    };
    let cold = walk(t.clone(), alice.clone()).await;
    let warm = walk(t.clone(), alice.clone()).await;
    assert_eq!(cold.len(), 3);
    assert!(cold.iter().all(|(c, _)| c == "miss"));
    assert!(warm.iter().all(|(c, _)| c == "hit"));
    let strip =
        |pages: &[(String, Value)]| pages.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
    assert_eq!(strip(&cold), strip(&warm));
    // And both equal the store's own pages.
    let direct: Vec<Value> = t.all_operations(&alice).await;
    let cached: Vec<Value> = strip(&warm)
        .into_iter()
        .flat_map(|p| p.as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(cached, direct);
}

pub async fn two_caches_sharing_one_store_never_serve_stale_pages(t: TestApp) {
    // A second "container": its own in-process cache, the same store and key.
    let key = lighttech::config::SecretKey::new(t.secret.clone().into_bytes()).unwrap();
    let other = TestApp {
        app: std::sync::Arc::new(
            lighttech::App::new(t.app.config.clone(), t.app.store.clone(), &key)
                .with_cache(std::sync::Arc::new(lighttech::cache::MemoryCache::new(
                    1 << 20,
                    std::time::Duration::from_secs(300),
                )))
                .with_clock(t.clock.clone()),
        ),
        ..t.clone()
    };
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "10").await;
    for app in [&t, &other, &t, &other] {
        history(app, &alice, "", None).await.expect(200, "");
    }
    // A write through one container is seen by the other at once.
    let r = other
        .post(
            "/api/balance/v1/transfer/",
            Some(&alice.access),
            &json!({"to": "bob", "amount": "4"}),
            &[],
        )
        .await;
    r.expect(201, "");
    for app in [&t, &other] {
        let page = history(app, &alice, "", None).await;
        assert_eq!(page.json()["results"][0]["type"], "transfer_out");
        assert_eq!(page.json()["results"][0]["balance_after"], "6.00");
        let page = history(app, &bob, "", None).await;
        assert_eq!(page.json()["results"][0]["type"], "transfer_in");
    }
    t.deposit(&alice, "1").await;
    let page = history(&other, &alice, "", None).await;
    assert_eq!(page.json()["results"][0]["balance_after"], "7.00");
}

pub async fn equal_queries_of_different_users_never_share_a_page(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "11").await;
    t.deposit(&bob, "22").await;
    // Same version (1), same query: different users, different pages.
    for _ in 0..2 {
        let a = history(&t, &alice, "", None).await;
        let b = history(&t, &bob, "", None).await;
        assert_eq!(a.json()["results"][0]["amount"], "11.00");
        assert_eq!(b.json()["results"][0]["amount"], "22.00");
        assert_ne!(a.header("etag"), b.header("etag"));
    }
    // Alice's ETag means nothing to Bob.
    let etag = history(&t, &alice, "", None).await.header("etag").unwrap();
    assert_eq!(history(&t, &bob, "", Some(&etag)).await.status, 200);
}

pub async fn a_shared_cache_never_serves_cursors_signed_with_another_key(t: TestApp) {
    // The same store and the same cache (in-process or Redis, as configured), but another
    // signing key: a rotated key, or a second deployment on the same Redis prefix.
    let secret = crate::test_secret();
    let key = lighttech::config::SecretKey::new(secret.clone().into_bytes()).unwrap();
    let rotated = TestApp {
        app: std::sync::Arc::new(
            lighttech::App::new(t.app.config.clone(), t.app.store.clone(), &key)
                .with_cache(t.app.cache.clone())
                .with_clock(t.clock.clone()),
        ),
        secret,
        ..t.clone()
    };
    let alice = t.user("alice").await;
    for amount in ["1", "2", "3"] {
        t.deposit(&alice, amount).await;
    }
    let first = history(&t, &alice, "?limit=2", None).await;
    first.expect(200, "");
    assert_eq!(
        history(&t, &alice, "?limit=2", None)
            .await
            .header("x-cache")
            .as_deref(),
        Some("hit"),
        "the page is cached"
    );
    let old_etag = first.header("etag").unwrap();

    // Tokens are signed with the key too: alice logs in again under the new one.
    let (access, _) = rotated.login("alice").await;
    let alice_now = TestUser {
        access,
        ..alice.clone()
    };
    let page = history(&rotated, &alice_now, "?limit=2", None).await;
    page.expect(200, "");
    assert_eq!(
        page.header("x-cache").as_deref(),
        Some("miss"),
        "a page holding cursors of another key is not served"
    );
    assert_eq!(page.json()["results"], first.json()["results"]);
    assert_ne!(page.json()["next_cursor"], first.json()["next_cursor"]);
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_owned();
    let rest = history(
        &rotated,
        &alice_now,
        &format!("?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    rest.expect(200, "");
    assert_eq!(rest.json()["results"][0]["amount"], "1.00");
    // An ETag issued under the old key does not revalidate a page with other cursors.
    let revalidated = history(&rotated, &alice_now, "?limit=2", Some(&old_etag)).await;
    revalidated.expect(200, "");
    assert_ne!(
        revalidated.header("etag").as_deref(),
        Some(old_etag.as_str())
    );
    // And the old key's deployment still gets its own pages, with cursors it accepts.
    let again = history(&t, &alice, "?limit=2", None).await;
    assert_eq!(again.header("x-cache").as_deref(), Some("hit"));
    let cursor = again.json()["next_cursor"].as_str().unwrap().to_owned();
    history(&t, &alice, &format!("?limit=2&cursor={cursor}"), None)
        .await
        .expect(200, "");
}
