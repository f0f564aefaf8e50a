//! Staff operations: listing and searching users, deactivation (which ends every session,
//! however many), logins racing a deactivation, and the audit trail.

use std::sync::Arc;

use lighttech::domain::{ChangeKind, Timestamp, UserId};
use lighttech::store::{
    Applied, AuditAction, AuditEntry, AuditParty, RotateOutcome, SessionRecord, StatusChange,
    Store, StoreError, UserQuery, UserRecord,
};

use super::sessions::{in_session, not_live, rotation, session, stored_session};
use super::{
    all_history, assert_ledger_consistent, balance, change, create, deposit, stamp, transfer,
};

fn audit(actor: &UserRecord, action: AuditAction, target: Option<&UserRecord>) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::new_v4(),
        actor: AuditParty {
            id: actor.id,
            username: actor.username.to_string(),
        },
        action,
        target: target.map(|t| AuditParty {
            id: t.id,
            username: t.username.to_string(),
        }),
        detail: None,
        at: Timestamp::now(),
    }
}

fn status(admin: &UserRecord, target: &UserRecord, active: bool) -> StatusChange {
    StatusChange {
        user: target.id,
        active,
        now: Timestamp::now(),
        audit: audit(
            admin,
            if active {
                AuditAction::Reactivate
            } else {
                AuditAction::Deactivate
            },
            Some(target),
        ),
    }
}

pub async fn users_are_listed_by_username_and_searched_in_username_and_email(
    store: Arc<dyn Store>,
) {
    let names = ["zed", "Alice", "bob.smith", "bobby", "carol", "a.bc", "abc"];
    for n in names {
        create(&store, n).await;
    }
    let alice = store.user_by_username("alice").await.unwrap().unwrap();
    deposit(&store, alice.id, 1234).await;
    // Everyone, two at a time, in byte order of the lower-cased username.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        // The user index may lag a write by a moment on some backends; give it that moment.
        let page = store
            .list_users(&UserQuery {
                search: None,
                limit: 2,
                after: after.clone(),
            })
            .await
            .unwrap();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|u| u.user.username.key()));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    let mut expected: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let all = store
        .list_users(&UserQuery {
            search: None,
            limit: 100,
            after: None,
        })
        .await
        .unwrap();
    let found = all.users.iter().find(|u| u.user.id == alice.id).unwrap();
    assert_eq!(found.balance.minor(), 1234);
    assert_eq!(found.user.username.as_str(), "Alice");
    // Substring of the username or of the email, given lower-cased.
    let search = |text: &str| {
        let store = Arc::clone(&store);
        let text = text.to_owned();
        async move {
            store
                .list_users(&UserQuery {
                    search: Some(text),
                    limit: 100,
                    after: None,
                })
                .await
                .unwrap()
                .users
                .iter()
                .map(|u| u.user.username.key())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("bob").await, ["bob.smith", "bobby"]);
    assert_eq!(search("lic").await, ["alice"]);
    assert_eq!(search("@example.com").await.len(), names.len());
    assert_eq!(search("smith@").await, ["bob.smith"]);
    assert!(search("nobody").await.is_empty());
    // A searched listing pages too.
    let page = store
        .list_users(&UserQuery {
            search: Some("b".into()),
            limit: 2,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(page.users.len(), 2);
    let rest = store
        .list_users(&UserQuery {
            search: Some("b".into()),
            limit: 2,
            after: page.next_after.clone(),
        })
        .await
        .unwrap();
    let mut both: Vec<String> = page
        .users
        .iter()
        .chain(rest.users.iter())
        .map(|u| u.user.username.key())
        .collect();
    both.dedup();
    assert_eq!(both, ["a.bc", "abc", "bob.smith", "bobby"]);
}

pub async fn deactivation_revokes_sessions_blocks_new_ones_and_refuses_transfers_in(
    store: Arc<dyn Store>,
) {
    let admin = create(&store, "admin").await;
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    deposit(&store, alice.id, 5_000).await;
    deposit(&store, bob.id, 1_000).await;
    let now = Timestamp::now();
    let live: Vec<SessionRecord> = (0..3).map(|_| session(alice.id, now)).collect();
    for s in &live {
        assert!(store.create_session(s).await.unwrap());
    }
    let changed = store
        .set_user_active(&status(&admin, &alice, false))
        .await
        .unwrap()
        .expect("alice exists");
    assert!(!changed.is_active);
    assert!(!store.user_by_id(alice.id).await.unwrap().unwrap().is_active);
    for s in &live {
        let stored = stored_session(&store, s).await;
        assert!(stored.revoked_at.is_some(), "every session revoked at once");
    }
    assert!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .is_empty(),
        "no live session remains"
    );
    assert!(
        !store.create_session(&session(alice.id, now)).await.unwrap(),
        "no new session for an inactive user"
    );
    assert!(matches!(
        store.transfer(&transfer(bob.id, "alice", 100)).await,
        Err(StoreError::RecipientNotFound)
    ));
    // Balance and history are kept.
    assert_eq!(balance(&store, alice.id).await, 5_000);
    assert_eq!(all_history(&store, alice.id).await.len(), 1);
    assert_eq!(balance(&store, bob.id).await, 1_000);

    let back = store
        .set_user_active(&status(&admin, &alice, true))
        .await
        .unwrap()
        .unwrap();
    assert!(back.is_active);
    assert!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .is_empty(),
        "revoked sessions stay revoked"
    );
    assert!(store.create_session(&session(alice.id, now)).await.unwrap());
    assert!(matches!(
        store.transfer(&transfer(bob.id, "alice", 100)).await,
        Ok(Applied::Done(_))
    ));
    // An unknown user: nothing to change.
    let ghost = UserRecord {
        id: UserId::new(),
        ..alice.clone()
    };
    assert!(
        store
            .set_user_active(&status(&admin, &ghost, false))
            .await
            .unwrap()
            .is_none()
    );
}

/// Every way a session is used fails: read, refresh, deposit, transfer.
async fn assert_session_dead(store: &Arc<dyn Store>, s: &SessionRecord, now: Timestamp) {
    let stored = stored_session(store, s).await;
    assert!(
        !stored.is_active(now) && stored.revoked_at.is_some(),
        "session {} still live: {stored:?}",
        s.id
    );
    assert_eq!(
        store
            .rotate_session(&rotation(s, s.refresh_jti, now))
            .await
            .unwrap(),
        RotateOutcome::Inactive,
        "session {} still refreshes",
        s.id
    );
}

async fn assert_session_moves_nothing(store: &Arc<dyn Store>, s: &SessionRecord, now: Timestamp) {
    let mut c = change(s.user, ChangeKind::Withdrawal, 1);
    c.session = in_session(s, now);
    not_live(store.apply_change(&c).await, "withdrawal in a dead session");
    let mut keyed = change(s.user, ChangeKind::Deposit, 1);
    keyed.idempotency = Some(stamp(
        &format!("dead-{}", s.id),
        "deposit",
        now.plus_seconds(3600),
    ));
    keyed.session = in_session(s, now);
    not_live(
        store.apply_change(&keyed).await,
        "deposit in a dead session",
    );
    let mut t = transfer(s.user, "bob", 1);
    t.session = in_session(s, now);
    not_live(store.transfer(&t).await, "transfer in a dead session");
}

pub async fn deactivation_ends_more_sessions_than_one_transaction_holds_at_once(
    store: Arc<dyn Store>,
) {
    const SESSIONS: usize = 110;
    let admin = create(&store, "admin").await;
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    deposit(&store, alice.id, 5_000).await;
    let now = Timestamp::now();
    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let s = session(alice.id, now.plus_seconds(-(i as i64)));
        assert!(store.create_session(&s).await.unwrap());
        sessions.push(s);
    }
    assert_eq!(
        store.active_sessions(alice.id, now).await.unwrap().len(),
        SESSIONS
    );
    // Before: the newest and the oldest session both move money.
    for s in [&sessions[0], &sessions[SESSIONS - 1]] {
        let mut c = change(alice.id, ChangeKind::Withdrawal, 1);
        c.session = in_session(s, now);
        assert!(matches!(
            store.apply_change(&c).await.unwrap(),
            Applied::Done(_)
        ));
    }
    let bobs = session(bob.id, now);
    assert!(store.create_session(&bobs).await.unwrap());

    store
        .set_user_active(&status(&admin, &alice, false))
        .await
        .unwrap()
        .expect("alice exists");
    assert!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .is_empty(),
        "no live session remains"
    );
    for s in &sessions {
        assert_session_dead(&store, s, now).await;
    }
    for s in sessions.iter().step_by(27) {
        assert_session_moves_nothing(&store, s, now).await;
    }
    assert_eq!(balance(&store, alice.id).await, 4_998, "nothing moved");
    // Another user's session is untouched.
    assert!(
        store
            .session(bob.id, bobs.id)
            .await
            .unwrap()
            .unwrap()
            .is_active(now)
    );

    // Reactivation brings none of them back; a new login works.
    store
        .set_user_active(&status(&admin, &alice, true))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .is_empty(),
        "revoked sessions stay revoked"
    );
    for s in [
        &sessions[0],
        &sessions[SESSIONS / 2],
        &sessions[SESSIONS - 1],
    ] {
        assert_session_dead(&store, s, now).await;
        assert_session_moves_nothing(&store, s, now).await;
        assert!(
            !store.revoke_session(alice.id, s.id, now).await.unwrap(),
            "already inactive"
        );
    }
    let fresh = session(alice.id, now);
    assert!(store.create_session(&fresh).await.unwrap());
    let mut c = change(alice.id, ChangeKind::Withdrawal, 1);
    c.session = in_session(&fresh, now);
    assert!(matches!(
        store.apply_change(&c).await.unwrap(),
        Applied::Done(_)
    ));
    assert_eq!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [fresh.id]
    );
    assert_eq!(balance(&store, alice.id).await, 4_997);
    assert_ledger_consistent(&store, alice.id).await;
}

pub async fn logins_racing_a_deactivation_leave_no_live_session(store: Arc<dyn Store>) {
    let admin = create(&store, "admin").await;
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let task_store = Arc::clone(&store);
        let s = session(alice.id, now);
        tasks.push(tokio::spawn(async move {
            let created = task_store.create_session(&s).await.unwrap();
            (s, created)
        }));
        if i == 10 {
            store
                .set_user_active(&status(&admin, &alice, false))
                .await
                .unwrap()
                .unwrap();
        }
    }
    let mut refused = 0;
    for task in tasks {
        let (s, created) = task.await.unwrap();
        if created {
            assert_session_dead(&store, &s, now).await;
        } else {
            refused += 1;
            assert!(store.session(s.user, s.id).await.unwrap().is_none());
        }
    }
    assert!(refused > 0, "logins after the deactivation are refused");
    assert!(
        store
            .active_sessions(alice.id, now)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn status_changes_and_reads_are_audited_newest_first(store: Arc<dyn Store>) {
    let admin = create(&store, "admin").await;
    let alice = create(&store, "alice").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let mut entry = audit(&admin, AuditAction::ViewUser, Some(&alice));
        entry.at = Timestamp::now().plus_seconds(i);
        entry.detail = Some(format!("view {i}"));
        store.append_audit(&entry).await.unwrap();
        expected.push(entry);
    }
    let mut change = status(&admin, &alice, false);
    change.audit.at = Timestamp::now().plus_seconds(10);
    store.set_user_active(&change).await.unwrap().unwrap();
    expected.push(change.audit.clone());
    let mut list = audit(&admin, AuditAction::ListUsers, None);
    list.at = Timestamp::now().plus_seconds(11);
    list.detail = Some("ali".into());
    store.append_audit(&list).await.unwrap();
    expected.push(list);
    expected.reverse();

    let mut seen = Vec::new();
    let mut before: Option<Vec<u8>> = None;
    loop {
        let page = store.audit_log(3, before.as_deref()).await.unwrap();
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries);
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}
