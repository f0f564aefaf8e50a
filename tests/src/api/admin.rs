//! The staff API: who may call it, listing and searching users, one user's history,
//! deactivation and reactivation, the audit trail, and the self-contained admin page.

use http::Method;
use lighttech::domain::UserId;
use serde_json::{Value, json};

use super::history::history;
use super::is_rfc3339_millis_z;
use super::{login_with, transfer_as};
use crate::{PASSWORD, Resp, TestApp, TestUser};

const ADMIN: &str = "/api/admin/v1";

pub(super) async fn admin_get(t: &TestApp, token: &str, path: &str) -> Resp {
    t.get(&format!("{ADMIN}{path}"), Some(token)).await
}

async fn admin_post(t: &TestApp, token: &str, path: &str) -> Resp {
    t.send(
        Method::POST,
        &format!("{ADMIN}{path}"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await
}

pub async fn admin_routes_refuse_anonymous_and_non_staff_callers(t: TestApp) {
    let alice = t.user("alice").await;
    let id = &alice.id;
    let gets = [
        "/users/".to_owned(),
        format!("/users/{id}/"),
        format!("/users/{id}/operations/"),
        "/audit/".to_owned(),
    ];
    let posts = [
        format!("/users/{id}/deactivate/"),
        format!("/users/{id}/reactivate/"),
    ];
    for path in &gets {
        t.get(&format!("{ADMIN}{path}"), None)
            .await
            .expect(401, "not_authenticated");
        admin_get(&t, &alice.access, path)
            .await
            .expect(403, "forbidden");
    }
    for path in &posts {
        t.send(Method::POST, &format!("{ADMIN}{path}"), &[], None)
            .await
            .expect(401, "not_authenticated");
        admin_post(&t, &alice.access, path)
            .await
            .expect(403, "forbidden");
    }
    // Nothing happened to Alice.
    t.get("/api/auth/v1/me/", Some(&alice.access))
        .await
        .expect(200, "");
}

pub async fn staff_list_and_search_users_with_balances(t: TestApp) {
    let root = t.staff("root").await;
    let other = t.staff("root2").await;
    for name in ["alice", "bob", "bobby", "carol"] {
        let u = t.user(name).await;
        if name == "bob" {
            t.deposit(&u, "12.34").await;
        }
    }
    let mut names = Vec::new();
    let mut path = "/users/?limit=2".to_owned();
    let mut first_cursor = None;
    loop {
        let r = admin_get(&t, &root.access, &path).await;
        r.expect(200, "");
        let j = r.json();
        for u in j["results"].as_array().unwrap() {
            names.push(u["username"].as_str().unwrap().to_owned());
            for field in [
                "id",
                "username",
                "email",
                "is_staff",
                "is_active",
                "balance",
                "created_at",
            ] {
                assert!(u.get(field).is_some(), "{field} missing in {u}");
            }
            assert_eq!(u.as_object().unwrap().len(), 7);
        }
        match j["next_cursor"].as_str() {
            Some(c) => {
                first_cursor.get_or_insert_with(|| c.to_owned());
                path = format!("/users/?limit=2&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(names, ["alice", "bob", "bobby", "carol", "root", "root2"]);
    let r = admin_get(&t, &root.access, "/users/?q=BOB").await;
    let found: Vec<_> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap().to_owned(),
                u["balance"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("bob".to_owned(), "12.34".to_owned()),
            ("bobby".to_owned(), "0.00".to_owned())
        ]
    );
    let r = admin_get(&t, &root.access, "/users/?q=carol%40example").await;
    assert_eq!(r.json()["results"][0]["username"], "carol");
    // A cursor belongs to the staff member it was issued to.
    admin_get(
        &t,
        &other.access,
        &format!("/users/?limit=2&cursor={}", first_cursor.unwrap()),
    )
    .await
    .expect(400, "validation_error");
    for bad in [
        "limit=0",
        "limit=101",
        "cursor=garbage",
        &format!("q={}", "x".repeat(255)),
    ] {
        admin_get(&t, &root.access, &format!("/users/?{bad}"))
            .await
            .expect(400, "validation_error");
    }
}

pub async fn staff_see_one_user_and_their_history(t: TestApp) {
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    for i in 1..=3 {
        t.deposit(&alice, &format!("{i}")).await;
    }
    let r = admin_get(&t, &root.access, &format!("/users/{}/", alice.id)).await;
    r.expect(200, "");
    assert_eq!(r.json()["username"], "alice");
    assert_eq!(r.json()["balance"], "6.00");
    assert_eq!(r.json()["is_active"], true);
    let own = t.all_operations(&alice).await;
    let r = admin_get(
        &t,
        &root.access,
        &format!("/users/{}/operations/?limit=2", alice.id),
    )
    .await;
    r.expect(200, "");
    let page = r.json();
    assert_eq!(page["results"].as_array().unwrap()[..], own[..2]);
    assert!(r.header("x-cache").is_some());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = admin_get(
        &t,
        &root.access,
        &format!("/users/{}/operations/?limit=2&cursor={cursor}", alice.id),
    )
    .await;
    assert_eq!(rest.json()["results"].as_array().unwrap()[..], own[2..]);
    // The staff view's cursor is not the user's, nor the other way round.
    t.get(
        &format!("/api/balance/v1/operations/?cursor={cursor}"),
        Some(&alice.access),
    )
    .await
    .expect(400, "validation_error");
    for path in [
        format!("/users/{}/", UserId::new()),
        format!("/users/{}/operations/", UserId::new()),
        "/users/not-a-uuid/".to_owned(),
    ] {
        admin_get(&t, &root.access, &path)
            .await
            .expect(404, "not_found");
    }
}

pub async fn deactivation_takes_effect_at_once_and_reactivation_restores_access(t: TestApp) {
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "50").await;
    t.deposit(&bob, "10").await;
    let r = admin_post(
        &t,
        &root.access,
        &format!("/users/{}/deactivate/", alice.id),
    )
    .await;
    r.expect(200, "");
    assert_eq!(r.json()["is_active"], false);
    assert_eq!(r.json()["balance"], "50.00");
    // Her live tokens stop working at once; login and transfers to her are refused.
    t.get("/api/balance/v1/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    t.post(
        "/api/auth/v1/token/refresh/",
        None,
        &json!({"refresh": alice.refresh}),
        &[],
    )
    .await
    .expect(401, "invalid_token");
    login_with(&t, json!({"username": "alice", "password": PASSWORD}))
        .await
        .expect(401, "invalid_credentials");
    transfer_as(&t, &bob, "alice", "1")
        .await
        .expect(404, "recipient_not_found");
    assert_eq!(t.balance(&bob).await, "10.00");
    // Balance and history are kept.
    let r = admin_get(
        &t,
        &root.access,
        &format!("/users/{}/operations/", alice.id),
    )
    .await;
    assert_eq!(r.json()["results"].as_array().unwrap().len(), 1);
    // Deactivating twice is harmless.
    admin_post(
        &t,
        &root.access,
        &format!("/users/{}/deactivate/", alice.id),
    )
    .await
    .expect(200, "");

    let r = admin_post(
        &t,
        &root.access,
        &format!("/users/{}/reactivate/", alice.id),
    )
    .await;
    r.expect(200, "");
    assert_eq!(r.json()["is_active"], true);
    let (access, _) = t.login("alice").await;
    t.get("/api/balance/v1/", Some(&access))
        .await
        .expect(200, "");
    transfer_as(&t, &bob, "alice", "1").await.expect(201, "");
    // The old tokens stay dead.
    t.get("/api/balance/v1/", Some(&alice.access))
        .await
        .expect(401, "invalid_token");
    for path in [
        format!("/users/{}/deactivate/", UserId::new()),
        format!("/users/{}/reactivate/", UserId::new()),
    ] {
        admin_post(&t, &root.access, &path)
            .await
            .expect(404, "not_found");
    }
    // The body, when sent, must be an empty object.
    t.post(
        &format!("{ADMIN}/users/{}/deactivate/", alice.id),
        Some(&root.access),
        &json!({"reason": "x"}),
        &[],
    )
    .await
    .expect(400, "validation_error");
}

pub async fn staff_cannot_deactivate_themselves(t: TestApp) {
    let root = t.staff("root").await;
    let r = admin_post(&t, &root.access, &format!("/users/{}/deactivate/", root.id)).await;
    r.expect(422, "self_deactivation");
    admin_get(&t, &root.access, "/users/").await.expect(200, "");
    // Another staff member can.
    let other = t.staff("other").await;
    admin_post(
        &t,
        &other.access,
        &format!("/users/{}/deactivate/", root.id),
    )
    .await
    .expect(200, "");
    admin_get(&t, &root.access, "/users/")
        .await
        .expect(401, "invalid_token");
}

pub async fn every_admin_action_is_in_the_audit_trail(t: TestApp) {
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    admin_get(&t, &root.access, "/users/?q=ali")
        .await
        .expect(200, "");
    admin_get(&t, &root.access, &format!("/users/{}/", alice.id))
        .await
        .expect(200, "");
    admin_get(
        &t,
        &root.access,
        &format!("/users/{}/operations/", alice.id),
    )
    .await
    .expect(200, "");
    admin_post(
        &t,
        &root.access,
        &format!("/users/{}/deactivate/", alice.id),
    )
    .await
    .expect(200, "");
    admin_post(
        &t,
        &root.access,
        &format!("/users/{}/reactivate/", alice.id),
    )
    .await
    .expect(200, "");
    // Refused attempts are not actions.
    admin_post(&t, &root.access, &format!("/users/{}/deactivate/", root.id))
        .await
        .expect(422, "self_deactivation");
    let mut actions = Vec::new();
    let mut path = "/audit/?limit=2".to_owned();
    loop {
        let r = admin_get(&t, &root.access, &path).await;
        r.expect(200, "");
        let j = r.json();
        for e in j["results"].as_array().unwrap() {
            assert_eq!(e["actor"]["username"], "root");
            assert_eq!(e["actor"]["id"], root.id.as_str());
            assert!(is_rfc3339_millis_z(&e["at"]));
            assert!(e["id"].as_str().is_some());
            let target = e["target"]["username"].as_str().map(str::to_owned);
            actions.push((e["action"].as_str().unwrap().to_owned(), target));
        }
        match j["next_cursor"].as_str() {
            Some(c) => path = format!("/audit/?limit=2&cursor={c}"),
            None => break,
        }
    }
    let alice_target = Some("alice".to_owned());
    assert_eq!(
        actions,
        [
            ("user.reactivate".to_owned(), alice_target.clone()),
            ("user.deactivate".to_owned(), alice_target.clone()),
            ("user.history".to_owned(), alice_target.clone()),
            ("user.view".to_owned(), alice_target),
            ("users.list".to_owned(), None),
        ]
    );
    // Reading the trail is an action too: each of the three pages read above is recorded,
    // after its page was read (so no page listed the read that fetched it).
    let r = admin_get(&t, &root.access, "/audit/?limit=4").await;
    r.expect(200, "");
    let newest: Vec<(String, Value)> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"].clone(),
            )
        })
        .collect();
    assert_eq!(
        newest,
        [
            ("audit.list".to_owned(), Value::Null),
            ("audit.list".to_owned(), Value::Null),
            ("audit.list".to_owned(), Value::Null),
            (
                "user.reactivate".to_owned(),
                json!({"id": alice.id, "username": "alice"})
            ),
        ]
    );
}

/// The actions in the audit trail, newest first, with their target's username.
async fn audit_actions(t: &TestApp, staff: &TestUser) -> Vec<(String, Option<String>)> {
    let r = admin_get(t, &staff.access, "/audit/?limit=100").await;
    r.expect(200, "");
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["target"]["username"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

pub async fn refused_admin_calls_are_not_audited(t: TestApp) {
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    for amount in ["1", "2"] {
        t.deposit(&alice, amount).await;
    }
    // Alice's own cursor, which is not an administrator's.
    let own = history(&t, &alice, "?limit=1", None).await;
    let own_cursor = own.json()["next_cursor"].as_str().unwrap().to_owned();
    let operations = format!("/users/{}/operations/", alice.id);
    for query in [
        "?limit=0".to_owned(),
        "?limit=101".to_owned(),
        "?limit=x".to_owned(),
        "?cursor=garbage".to_owned(),
        format!("?cursor={own_cursor}"),
        "?type=bogus".to_owned(),
        "?since=yesterday".to_owned(),
        "?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z".to_owned(),
    ] {
        admin_get(&t, &root.access, &format!("{operations}{query}"))
            .await
            .expect(400, "validation_error");
    }
    for path in [
        format!("/users/{}/operations/", UserId::new()),
        format!("/users/{}/operations/?limit=0", UserId::new()),
        format!("/users/{}/", UserId::new()),
        "/users/not-a-uuid/operations/".to_owned(),
    ] {
        admin_get(&t, &root.access, &path)
            .await
            .expect(404, "not_found");
    }
    for path in [
        "/users/?limit=0",
        "/users/?cursor=garbage",
        "/audit/?limit=0",
        "/audit/?cursor=garbage",
    ] {
        admin_get(&t, &root.access, path)
            .await
            .expect(400, "validation_error");
    }
    // A non-staff caller's attempts are not actions either.
    admin_get(&t, &alice.access, &operations)
        .await
        .expect(403, "forbidden");
    let recorded = audit_actions(&t, &root).await;
    assert!(recorded.is_empty(), "{recorded:?}");

    // What is served is recorded, once per request: a page, and its revalidation (`304`).
    let served = admin_get(&t, &root.access, &format!("{operations}?limit=1")).await;
    served.expect(200, "");
    let etag = served.header("etag").unwrap();
    let auth = format!("Bearer {}", root.access);
    let r = t
        .send(
            Method::GET,
            &format!("{ADMIN}{operations}?limit=1"),
            &[("authorization", &auth), ("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(r.status, 304);
    let alice_target = Some("alice".to_owned());
    assert_eq!(
        audit_actions(&t, &root).await,
        [
            ("user.history".to_owned(), alice_target.clone()),
            ("user.history".to_owned(), alice_target),
            ("audit.list".to_owned(), None),
        ]
    );
}

pub async fn the_admin_page_is_self_contained(t: TestApp) {
    for path in ["/admin/", "/admin"] {
        let r = t.get(path, None).await;
        r.expect(200, "");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let html = String::from_utf8(r.body.clone()).unwrap();
        assert!(html.contains("/api/auth/v1/login/"));
        assert!(!html.contains("https://") && !html.contains("http://"));
    }
}
