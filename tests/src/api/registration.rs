//! Registration: the account it creates, case-insensitive and case-folded conflicts (racing
//! ones included), and the validation of every field and of the request body itself.

use std::collections::{HashMap, HashSet};

use http::Method;
use lighttech::domain::UserId;
use serde_json::{Value, json};

use super::admin::admin_get;
use super::is_rfc3339_millis_z;
use super::login_with;
use crate::{PASSWORD, Resp, TestApp};

pub async fn register_creates_the_user_and_an_empty_account(t: TestApp) {
    let r = t
        .post(
            "/api/auth/v1/register/",
            None,
            &json!({"username": "Alice", "email": "Alice@Example.COM", "password": PASSWORD}),
            &[],
        )
        .await;
    r.expect(201, "");
    let j = r.json();
    assert_eq!(j["username"], "Alice");
    assert_eq!(j["email"], "alice@example.com");
    assert_eq!(j["balance"], "0.00");
    assert!(UserId::parse(j["id"].as_str().unwrap()).is_some());
    assert!(is_rfc3339_millis_z(&j["created_at"]));
    assert_eq!(j.as_object().unwrap().len(), 5);
    let (access, _) = t.login("alice").await;
    let b = t.get("/api/balance/v1/", Some(&access)).await;
    b.expect(200, "");
    assert_eq!(b.json()["balance"], "0.00");
}

pub async fn registration_conflicts_are_case_insensitive(t: TestApp) {
    t.register("alice").await;
    t.post(
        "/api/auth/v1/register/",
        None,
        &json!({"username": "ALICE", "email": "other@example.com", "password": PASSWORD}),
        &[],
    )
    .await
    .expect(409, "username_taken");
    t.post(
        "/api/auth/v1/register/",
        None,
        &json!({"username": "alice2", "email": "ALICE@example.com", "password": PASSWORD}),
        &[],
    )
    .await
    .expect(409, "email_taken");
}

/// Registers `username` with `email` and the test password, whatever the answer.
async fn register_as(t: &TestApp, username: &str, email: &str) -> Resp {
    t.post(
        "/api/auth/v1/register/",
        None,
        &json!({"username": username, "email": email, "password": PASSWORD}),
        &[],
    )
    .await
}

/// Emails are unique under full Unicode case folding with compatibility normalisation, not
/// under `to_lowercase`: a final sigma, the long s, ß, the Kelvin sign and fullwidth letters
/// all collide with their plain forms. What is stored and shown stays the lower-cased address.
pub async fn registration_conflicts_fold_case_fully(t: TestApp) {
    let pairs = [
        // `to_lowercase` already maps both to σασx: kept as a guard.
        ("σασx@example.com", "ΣΑΣX@EXAMPLE.COM"),
        // A word-final capital sigma lower-cases to ς, which folds to σ.
        ("σασ@example.com", "ΣΑΣ@EXAMPLE.COM"),
        ("σας@example.org", "σασ@example.org"),
        // U+017F LATIN SMALL LETTER LONG S is already lower case; it folds to s.
        ("mrs@example.com", "mrſ@example.com"),
        ("strasse@example.com", "STRAẞE@example.com"),
        ("straße@example.net", "strasse@example.net"),
        // U+212A KELVIN SIGN.
        ("kelvin@example.com", "\u{212A}ELVIN@example.com"),
        // Fullwidth forms (U+FF41 and on) are compatibility forms of ASCII.
        ("fullwidth@example.com", "ｆｕｌｌwidth@example.com"),
    ];
    for (i, (first, second)) in pairs.into_iter().enumerate() {
        let r = register_as(&t, &format!("first{i}"), first).await;
        r.expect(201, "");
        assert_eq!(r.json()["email"], first.to_lowercase(), "{first}");
        register_as(&t, &format!("second{i}"), second)
            .await
            .expect(409, "email_taken");
    }
    // The stored address is the lower-cased one, not the folded key.
    let r = register_as(&t, "sigma", "ΣΑΣ@EXAMPLE.EDU").await;
    r.expect(201, "");
    assert_eq!(r.json()["email"], "σας@example.edu");
    let (access, _) = t.login("sigma").await;
    let me = t.get("/api/auth/v1/me/", Some(&access)).await;
    assert_eq!(me.json()["email"], "σας@example.edu");
    // Turkish dotless ı is its own letter under the default (locale-free) folding.
    register_as(&t, "dotless", "\u{131}d@example.com")
        .await
        .expect(201, "");
    register_as(&t, "dotted", "id@example.com")
        .await
        .expect(201, "");
}

/// Folding can lengthen an address (U+FDFA, three bytes, folds to 18 characters): an address
/// whose folded form passes 254 characters is refused like any over-long field, and creates
/// nothing; one of exactly 254 folded characters is accepted.
pub async fn an_address_too_long_once_folded_is_refused(t: TestApp) {
    let local = "\u{FDFA}".repeat(10);
    let at_bound = format!("{local}@{}.{}.com", "a".repeat(60), "b".repeat(8));
    let past_bound = format!("{local}@{}.{}.com", "a".repeat(60), "b".repeat(9));
    assert!(
        past_bound.len() < 254,
        "the address itself is well within bounds"
    );
    register_as(&t, "fits", &at_bound).await.expect(201, "");
    let r = register_as(&t, "toolong", &past_bound).await;
    r.expect(400, "validation_error");
    let errors = r.json()["errors"].clone();
    assert!(errors["email"].is_array(), "{errors}");
    assert_eq!(errors.as_object().unwrap().len(), 1, "{errors}");
    login_with(&t, json!({"username": "toolong", "password": PASSWORD}))
        .await
        .expect(401, "invalid_credentials");
}

/// Sixteen registrations of one username at once, each in its own mix of case and with an email
/// of its own: exactly one is created, every other hears `409 username_taken`.
pub async fn racing_registrations_of_one_username_create_one_user(t: TestApp) {
    let spellings: Vec<String> = (0..16u32)
        .map(|bits| {
            "alice"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> i & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let racers = spellings
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), format!("racer{i}@race.example")))
        .collect();
    let winner = race_registrations(&t, racers, "username_taken").await;
    let root = t.staff("root").await;
    let listed = admin_get(&t, &root.access, "/users/?q=alice").await;
    let listed = listed.json()["results"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], winner["id"]);
    let (access, _) = t.login("ALICE").await;
    let me = t.get("/api/auth/v1/me/", Some(&access)).await;
    assert_eq!(me.json()["id"], winner["id"]);
}

/// Sixteen registrations of one email at once, spelled in sixteen ways that fold alike (s, S,
/// ſ and fullwidth ｓ, domain in either case), each with a username of its own: exactly one is
/// created, every other hears `409 email_taken`.
pub async fn racing_registrations_of_one_email_create_one_user(t: TestApp) {
    let esses = ["s", "S", "ſ", "ｓ"];
    let racers: Vec<(String, String)> = (0..16)
        .map(|i| {
            let domain = if i % 2 == 0 {
                "race.example"
            } else {
                "RACE.Example"
            };
            (
                format!("racer{i}"),
                format!("{}{}x@{domain}", esses[i / 4], esses[i % 4]),
            )
        })
        .collect();
    let spellings: HashSet<&str> = racers.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(spellings.len(), 16);
    let winner = race_registrations(&t, racers, "email_taken").await;
    let root = t.staff("root").await;
    let listed = admin_get(&t, &root.access, "/users/?q=race.example").await;
    let listed = listed.json()["results"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], winner["id"]);
    assert_eq!(listed[0]["email"], winner["email"]);
}

/// Sends every registration at once; asserts exactly one `201` and `409 code` for the rest, and
/// returns the created user.
async fn race_registrations(t: &TestApp, racers: Vec<(String, String)>, code: &str) -> Value {
    let count = racers.len();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(count));
    let tasks: Vec<_> = racers
        .into_iter()
        .map(|(username, email)| {
            let t = t.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                register_as(&t, &username, &email).await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut statuses: HashMap<(u16, String), usize> = HashMap::new();
    for task in tasks {
        let r = task.await.unwrap();
        if r.status == 201 {
            created.push(r.json());
        }
        *statuses.entry((r.status, r.code())).or_default() += 1;
    }
    assert_eq!(created.len(), 1, "{statuses:?}");
    assert_eq!(
        statuses.get(&(409, code.to_owned())),
        Some(&(count - 1)),
        "{statuses:?}"
    );
    created.remove(0)
}

pub async fn registration_validates_every_field_and_creates_nothing(t: TestApp) {
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"username": "a b", "email": "ab@example.com", "password": PASSWORD}),
            &["username"],
        ),
        (
            json!({"username": "ab", "email": "ab@example.com", "password": PASSWORD}),
            &["username"],
        ),
        (
            json!({"username": "a".repeat(151), "email": "ab@example.com", "password": PASSWORD}),
            &["username"],
        ),
        (
            json!({"username": "carol", "email": "not-an-email", "password": PASSWORD}),
            &["email"],
        ),
        (
            json!({"username": "carol", "email": "carol@example.com", "password": "Sh0rt!"}),
            &["password"],
        ),
        (
            json!({"username": "carol", "email": "carol@example.com", "password": "73519846203"}),
            &["password"],
        ),
        (
            json!({"username": "carol", "email": "carol@example.com", "password": "password1"}),
            &["password"],
        ),
        (
            json!({"username": "carolwonder", "email": "carol@example.com", "password": "carolwonder1"}),
            &["password"],
        ),
        (
            json!({"username": "carol", "email": "carol@example.com", "password": "Qz7!".repeat(33)}),
            &["password"],
        ),
        (json!({}), &["username", "email", "password"]),
        (
            json!({"username": 5, "email": null, "password": ["x"]}),
            &["username", "email", "password"],
        ),
    ];
    for (body, fields) in cases {
        let r = t.post("/api/auth/v1/register/", None, &body, &[]).await;
        r.expect(400, "validation_error");
        let errors = r.json()["errors"].clone();
        for f in fields {
            assert!(
                errors[*f].as_array().is_some_and(|m| !m.is_empty()),
                "{f} not reported for {body}: {errors}"
            );
        }
    }
    // Nothing was created: every name is still free.
    t.register("carol").await;
    t.register("carolwonder").await;
}

pub async fn registration_reports_every_failing_field_at_once(t: TestApp) {
    let cases: Vec<(Value, &[&str])> = vec![
        // The password's policy is not left for a second attempt once the username is fixed.
        (
            json!({"username": "ab", "email": "x@y.com", "password": "123"}),
            &["username", "password"],
        ),
        (
            json!({"username": "a b", "email": "not-an-email", "password": "73519846203"}),
            &["username", "email", "password"],
        ),
        (
            json!({"username": "carol", "email": "nope", "password": "short", "extra": 1}),
            &["email", "password", "extra"],
        ),
        // Similar to the email, which parsed, while the username did not.
        (
            json!({"username": "c d", "email": "carol.wonder@example.com", "password": "carolwonder"}),
            &["username", "password"],
        ),
    ];
    for (body, fields) in cases {
        let r = t.post("/api/auth/v1/register/", None, &body, &[]).await;
        r.expect(400, "validation_error");
        let errors = r.json()["errors"].clone();
        let reported: HashSet<&str> = errors
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            reported,
            fields.iter().copied().collect(),
            "for {body}: {errors}"
        );
        for f in fields {
            assert!(
                errors[*f].as_array().is_some_and(|m| !m.is_empty()),
                "{f} not reported for {body}: {errors}"
            );
        }
    }
    let similar = t
        .post(
            "/api/auth/v1/register/",
            None,
            &json!({"username": "c d", "email": "carol.wonder@example.com", "password": "carolwonder"}),
            &[],
        )
        .await;
    assert!(
        similar.json()["errors"]["password"]
            .to_string()
            .contains("similar to the email"),
        "{}",
        similar.json()
    );
}

pub async fn bodies_are_checked_for_size_type_syntax_and_unknown_fields(t: TestApp) {
    let alice = t.user("alice").await;
    let auth = format!("Bearer {}", alice.access);
    for path in ["/api/auth/v1/register/", "/api/balance/v1/deposit/"] {
        let send = |ct: Option<&'static str>, body: Vec<u8>| {
            let mut headers: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
            if let Some(ct) = ct {
                headers.push(("content-type", ct));
            }
            let t = t.clone();
            async move { t.send(Method::POST, path, &headers, Some(body)).await }
        };
        send(Some("application/json"), b"{\"amount\": ".to_vec())
            .await
            .expect(400, "invalid_json");
        send(Some("application/json"), b"".to_vec())
            .await
            .expect(400, "invalid_json");
        send(Some("application/json"), b"[1,2]".to_vec())
            .await
            .expect(400, "validation_error");
        send(Some("text/plain"), b"{}".to_vec())
            .await
            .expect(415, "unsupported_media_type");
        send(None, b"{}".to_vec())
            .await
            .expect(415, "unsupported_media_type");
        let big = format!("{{\"description\": \"{}\"}}", "x".repeat(17 * 1024));
        send(Some("application/json"), big.into_bytes())
            .await
            .expect(413, "payload_too_large");
        let r = send(
            Some("application/json; charset=utf-8"),
            br#"{"amount": "1.00", "username": "x", "surprise": true}"#.to_vec(),
        )
        .await;
        r.expect(400, "validation_error");
        assert!(r.json()["errors"]["surprise"].is_array(), "{}", r.json());
    }
    assert_eq!(t.balance(&alice).await, "0.00");
}
