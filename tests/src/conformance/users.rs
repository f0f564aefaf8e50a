//! Users and logins: lookup by case-insensitive username and by id, unique usernames and
//! folded emails (racing creations included), and the per-window login throttle.

use std::sync::Arc;

use lighttech::domain::{Email, Timestamp, UserId};
use lighttech::store::{Attempt, NewUser, Store, StoreError, ThrottlePolicy};

use super::{create, user, user_with_email};

pub async fn users_are_found_by_case_insensitive_username_and_by_id(store: Arc<dyn Store>) {
    let alice = create(&store, "Alice").await;
    let by_name = store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(by_name, alice);
    assert_eq!(by_name.username.as_str(), "Alice");
    assert_eq!(store.user_by_id(alice.id).await.unwrap().unwrap(), alice);
    assert!(store.user_by_username("bob").await.unwrap().is_none());
    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    assert!(alice.is_active && !alice.is_staff);
}

pub async fn usernames_and_emails_are_unique(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let mut same_name = user("ALICE");
    same_name.email = Email::parse("other@example.com").unwrap();
    assert!(matches!(
        store.create_user(&same_name).await,
        Err(StoreError::UsernameTaken)
    ));
    let mut same_email = user("alice2");
    same_email.email = Email::parse("alice@example.com").unwrap();
    assert!(matches!(
        store.create_user(&same_email).await,
        Err(StoreError::EmailTaken)
    ));
    // Nothing of the refused users was created.
    assert!(store.user_by_username("alice2").await.unwrap().is_none());
    assert!(store.account(same_name.id).await.unwrap().is_none());
    assert!(store.account(same_email.id).await.unwrap().is_none());
    assert_eq!(
        store.user_by_username("alice").await.unwrap().unwrap().id,
        alice.id
    );
}

/// Emails are unique by their folded key (full case folding, compatibility normalisation), while
/// each user keeps the lower-cased address they registered.
pub async fn emails_are_unique_by_their_folded_key(store: Arc<dyn Store>) {
    for (i, (first, second)) in [
        ("σας@example.com", "σασ@example.com"),
        ("mrs@example.com", "MRſ@example.com"),
        ("straße@example.com", "STRASSE@example.com"),
        ("ｆｕｌｌ@example.com", "full@example.com"),
    ]
    .into_iter()
    .enumerate()
    {
        let holder = user_with_email(&format!("holder{i}"), first);
        let created = store.create_user(&holder).await.unwrap();
        assert_eq!(created.email.as_str(), first.to_lowercase());
        let variant = user_with_email(&format!("variant{i}"), second);
        assert!(
            matches!(
                store.create_user(&variant).await,
                Err(StoreError::EmailTaken)
            ),
            "{second} after {first}"
        );
        assert!(store.account(variant.id).await.unwrap().is_none());
        let stored = store.user_by_id(created.id).await.unwrap().unwrap();
        assert_eq!(stored.email.as_str(), first.to_lowercase());
    }
}

/// Sixteen users created at once with one email spelled sixteen ways that fold alike: one is
/// created, the rest are refused with `EmailTaken`, and only the one has an account.
pub async fn racing_creations_with_one_folded_email_create_one_user(store: Arc<dyn Store>) {
    let esses = ["s", "S", "ſ", "ｓ"];
    let users: Vec<NewUser> = (0..16)
        .map(|i| {
            user_with_email(
                &format!("racer{i}"),
                &format!("{}{}x@race.example", esses[i / 4], esses[i % 4]),
            )
        })
        .collect();
    let tasks: Vec<_> = users
        .iter()
        .cloned()
        .map(|racer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_user(&racer).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(record) => created.push(record.id),
            Err(StoreError::EmailTaken) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "{created:?}");
    for racer in &users {
        let account = store.account(racer.id).await.unwrap();
        assert_eq!(
            account.is_some(),
            racer.id == created[0],
            "{}",
            racer.username
        );
    }
}

pub async fn login_attempts_are_limited_per_window(store: Arc<dyn Store>) {
    let policy = ThrottlePolicy {
        max_attempts: 3,
        window_seconds: 60,
    };
    let t0 = Timestamp::now();
    for _ in 0..3 {
        assert_eq!(
            store.take_login_attempt("alice", policy, t0).await.unwrap(),
            Attempt::Allowed
        );
    }
    match store
        .take_login_attempt("alice", policy, t0.plus_seconds(10))
        .await
        .unwrap()
    {
        Attempt::Limited { retry_after } => assert!((49..=50).contains(&retry_after)),
        other => panic!("{other:?}"),
    }
    // Other usernames are counted separately.
    assert_eq!(
        store.take_login_attempt("bob", policy, t0).await.unwrap(),
        Attempt::Allowed
    );
    // The window passes.
    assert_eq!(
        store
            .take_login_attempt("alice", policy, t0.plus_seconds(61))
            .await
            .unwrap(),
        Attempt::Allowed
    );
    // Clearing forgets the attempts.
    store.clear_login_attempts("alice").await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            store
                .take_login_attempt("alice", policy, t0.plus_seconds(62))
                .await
                .unwrap(),
            Attempt::Allowed
        );
    }
}

/// For the SQL stores, which prune throttle rows themselves (DynamoDB's TTL does it there):
/// attempts for made-up usernames leave behind no row whose window has passed. `rows(floor)`
/// counts the table's rows directly: all of them, and those whose window started at or before
/// `floor` (has passed).
pub async fn made_up_usernames_leave_no_expired_throttle_rows<F, Fut>(
    store: Arc<dyn Store>,
    rows: F,
) where
    F: Fn(Timestamp) -> Fut,
    Fut: std::future::Future<Output = (usize, usize)>,
{
    use lighttech::clock::{Clock, ManualClock};
    use lighttech::store::EXPIRED_ATTEMPTS_PRUNED;
    let policy = ThrottlePolicy {
        max_attempts: 5,
        window_seconds: 900,
    };
    let clock = ManualClock::new();
    let floor = |now: Timestamp| now.plus_seconds(-policy.window_seconds);
    let attempt = |name: String, now: Timestamp| {
        let store = Arc::clone(&store);
        async move {
            assert_eq!(
                store.take_login_attempt(&name, policy, now).await.unwrap(),
                Attempt::Allowed
            );
        }
    };
    for i in 0..200 {
        attempt(format!("ghost-{i}"), clock.now()).await;
    }
    assert_eq!(rows(floor(clock.now())).await, (200, 0));

    // Once their window has passed, each new attempt takes a batch of them along.
    clock.advance_seconds(policy.window_seconds + 1);
    let batches = 200 / EXPIRED_ATTEMPTS_PRUNED + 1;
    for i in 0..batches {
        attempt(format!("late-{i}"), clock.now()).await;
    }
    assert_eq!(
        rows(floor(clock.now())).await,
        (batches, 0),
        "only the live windows are left"
    );

    // A steady stream of made-up usernames, one every 30 s for three hours: the table never
    // holds more than the live window's rows.
    let live = (policy.window_seconds / 30) as usize;
    for i in 0..360 {
        clock.advance_seconds(30);
        attempt(format!("stream-{i}"), clock.now()).await;
        if i % 30 == 29 {
            let (total, expired) = rows(floor(clock.now())).await;
            assert_eq!(expired, 0, "after {i} attempts");
            assert!(total <= live, "{total} rows after {i} attempts");
        }
    }
}

pub async fn racing_login_attempts_never_exceed_the_limit(store: Arc<dyn Store>) {
    let policy = ThrottlePolicy {
        max_attempts: 5,
        window_seconds: 900,
    };
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .take_login_attempt("mallory", policy, now)
                .await
                .unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() == Attempt::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}
