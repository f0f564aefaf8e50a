//! Sessions: rotation (once, with reuse revoking), inactive sessions, the maximum lifetime,
//! racing rotations, the live session every movement needs, and listing and revocation by
//! the owner.

use std::collections::HashMap;
use std::sync::Arc;

use lighttech::domain::{ChangeKind, IdempotencyKey, SessionId, Timestamp, TokenId, UserId};
use lighttech::store::{
    Applied, RotateOutcome, Rotation, SessionRecord, SessionUse, Store, StoreError,
};

use super::{assert_ledger_consistent, balance, change, create, deposit, stamp, transfer};

/// A live session of `user` opened `now`, expiring in an hour.
pub fn session(user: UserId, now: Timestamp) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        user,
        created_at: now,
        last_used_at: now,
        expires_at: now.plus_seconds(3600),
        refresh_jti: TokenId::new(),
        user_agent: Some("test-agent".into()),
        ip: Some("127.0.0.1".into()),
        revoked_at: None,
    }
}

pub(super) fn rotation(s: &SessionRecord, presented: TokenId, now: Timestamp) -> Rotation {
    Rotation {
        user: s.user,
        session: s.id,
        presented,
        next: TokenId::new(),
        expires_at: now.plus_seconds(7200),
        max_lifetime_seconds: MAX_LIFETIME,
        now,
    }
}

/// The session as stored now.
pub(super) async fn stored_session(store: &Arc<dyn Store>, s: &SessionRecord) -> SessionRecord {
    store.session(s.user, s.id).await.unwrap().unwrap()
}

/// The ids of `user`'s active sessions at `at`, as the store lists them.
async fn active_ids(store: &Arc<dyn Store>, user: UserId, at: Timestamp) -> Vec<SessionId> {
    store
        .active_sessions(user, at)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect()
}

/// The sessions' maximum lifetime in these cases: the default, 30 days.
const MAX_LIFETIME: i64 = 30 * 86_400;

pub async fn sessions_rotate_once_and_reuse_revokes(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    let s = session(alice.id, now);
    store.create_session(&s).await.unwrap();
    assert_eq!(stored_session(&store, &s).await, s);
    assert!(
        store.session(UserId::new(), s.id).await.unwrap().is_none(),
        "a session is found only through its owner"
    );
    let mut foreign = rotation(&s, s.refresh_jti, now);
    foreign.user = UserId::new();
    assert_eq!(
        store.rotate_session(&foreign).await.unwrap(),
        RotateOutcome::Inactive,
        "nobody else can rotate it"
    );

    let r1 = rotation(&s, s.refresh_jti, now);
    assert_eq!(
        store.rotate_session(&r1).await.unwrap(),
        RotateOutcome::Rotated {
            created_at: s.created_at
        }
    );
    let after = stored_session(&store, &s).await;
    assert_eq!(after.refresh_jti, r1.next);
    assert_eq!(after.expires_at, r1.expires_at);
    assert!(after.is_active(now));

    // The same rotation sent again (a resend whose first answer was lost, as an SDK retries
    // one): it already applied, so it is that rotation, not a reuse, and the session lives on.
    assert_eq!(
        store.rotate_session(&r1).await.unwrap(),
        RotateOutcome::Rotated {
            created_at: s.created_at
        },
        "a resent rotation is not a reuse"
    );
    let resent = stored_session(&store, &s).await;
    assert_eq!(resent.refresh_jti, r1.next);
    assert!(resent.revoked_at.is_none());

    // The spent token again: reuse, and the session is revoked in the same step.
    assert_eq!(
        store
            .rotate_session(&rotation(&s, s.refresh_jti, now))
            .await
            .unwrap(),
        RotateOutcome::Reused
    );
    let revoked = stored_session(&store, &s).await;
    assert!(revoked.revoked_at.is_some());
    // Even the newest token no longer works.
    assert_eq!(
        store
            .rotate_session(&rotation(&s, r1.next, now))
            .await
            .unwrap(),
        RotateOutcome::Inactive
    );
}

pub async fn inactive_sessions_cannot_rotate_or_be_touched(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    let mut expired = session(alice.id, now.plus_seconds(-7200));
    expired.expires_at = now.plus_seconds(-1);
    store.create_session(&expired).await.unwrap();
    assert_eq!(
        store
            .rotate_session(&rotation(&expired, expired.refresh_jti, now))
            .await
            .unwrap(),
        RotateOutcome::Inactive
    );
    assert!(!stored_session(&store, &expired).await.is_active(now));
    let missing = session(alice.id, now);
    assert_eq!(
        store
            .rotate_session(&rotation(&missing, missing.refresh_jti, now))
            .await
            .unwrap(),
        RotateOutcome::Inactive
    );
    // Touching records use on live sessions only.
    let live = session(alice.id, now);
    store.create_session(&live).await.unwrap();
    let later = now.plus_seconds(120);
    store
        .touch_session(live.user, live.id, later)
        .await
        .unwrap();
    assert_eq!(stored_session(&store, &live).await.last_used_at, later);
    assert!(
        store
            .revoke_session(alice.id, live.id, later)
            .await
            .unwrap()
    );
    store
        .touch_session(live.user, live.id, later.plus_seconds(60))
        .await
        .unwrap();
    assert_eq!(stored_session(&store, &live).await.last_used_at, later);
}

pub async fn sessions_end_at_their_maximum_lifetime(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    // A minute before its deadline: it rotates, but its new end is the deadline, not the
    // replacement token's expiry.
    let mut late = session(alice.id, now.plus_seconds(60 - MAX_LIFETIME));
    late.expires_at = now.plus_seconds(30);
    store.create_session(&late).await.unwrap();
    let r = rotation(&late, late.refresh_jti, now);
    assert_eq!(
        store.rotate_session(&r).await.unwrap(),
        RotateOutcome::Rotated {
            created_at: late.created_at
        }
    );
    let deadline = late.created_at.plus_seconds(MAX_LIFETIME);
    assert_eq!(r.session_end(late.created_at), deadline);
    let stored = store.session(alice.id, late.id).await.unwrap().unwrap();
    assert_eq!(stored.expires_at, deadline, "cut to the maximum lifetime");
    // At the deadline the newest token no longer rotates: the session has ended, which is not
    // a reuse, so nothing is revoked.
    assert_eq!(
        store
            .rotate_session(&rotation(&late, r.next, deadline))
            .await
            .unwrap(),
        RotateOutcome::Inactive
    );
    let ended = store.session(alice.id, late.id).await.unwrap().unwrap();
    assert_eq!(ended.refresh_jti, r.next);
    assert!(ended.revoked_at.is_none());

    // A session stored with an expiry beyond its deadline (as before the limit existed) is
    // refused by its login time alone, with its current token or a spent one.
    for age in [MAX_LIFETIME, MAX_LIFETIME + 1, MAX_LIFETIME + 86_400] {
        let mut old = session(alice.id, now.plus_seconds(-age));
        old.expires_at = now.plus_seconds(3600);
        store.create_session(&old).await.unwrap();
        for presented in [old.refresh_jti, TokenId::new()] {
            assert_eq!(
                store
                    .rotate_session(&rotation(&old, presented, now))
                    .await
                    .unwrap(),
                RotateOutcome::Inactive,
                "a session {age} s old"
            );
        }
        let kept = store.session(alice.id, old.id).await.unwrap().unwrap();
        assert_eq!(
            (kept.refresh_jti, kept.revoked_at, kept.expires_at),
            (old.refresh_jti, None, old.expires_at),
            "a refused rotation changes nothing"
        );
    }
    // A millisecond younger than the limit, it still rotates.
    let mut young = session(
        alice.id,
        Timestamp::from_millis(now.millis() - MAX_LIFETIME * 1000 + 1),
    );
    young.expires_at = now.plus_seconds(3600);
    store.create_session(&young).await.unwrap();
    assert_eq!(
        store
            .rotate_session(&rotation(&young, young.refresh_jti, now))
            .await
            .unwrap(),
        RotateOutcome::Rotated {
            created_at: young.created_at
        }
    );
    assert_eq!(
        store
            .session(alice.id, young.id)
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        Timestamp::from_millis(now.millis() + 1)
    );
}

pub async fn racing_rotations_let_exactly_one_win(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    let s = session(alice.id, now);
    store.create_session(&s).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let r = rotation(&s, s.refresh_jti, now);
        tasks.push(tokio::spawn(async move {
            store.rotate_session(&r).await.unwrap()
        }));
    }
    let mut outcomes = HashMap::new();
    for t in tasks {
        let outcome = match t.await.unwrap() {
            RotateOutcome::Rotated { created_at } => {
                assert_eq!(created_at, s.created_at);
                "Rotated".to_owned()
            }
            other => format!("{other:?}"),
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
    }
    assert_eq!(outcomes.get("Rotated"), Some(&1), "{outcomes:?}");
    assert_eq!(
        outcomes.get("Reused").copied().unwrap_or(0)
            + outcomes.get("Inactive").copied().unwrap_or(0),
        9,
        "{outcomes:?}"
    );
    assert!(
        stored_session(&store, &s).await.revoked_at.is_some(),
        "the losers presented a spent token, so the session is revoked"
    );
}

/// A movement made in `s`, recording its use when older than a minute before `now`.
pub(super) fn in_session(s: &SessionRecord, now: Timestamp) -> Option<SessionUse> {
    Some(SessionUse {
        id: s.id,
        touch_before: now.plus_seconds(-60),
    })
}

pub(super) fn not_live<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::SessionNotLive)),
        "{what}: {result:?}"
    );
}

pub async fn movements_need_a_live_session_of_their_own_before_anything_else(
    store: Arc<dyn Store>,
) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    deposit(&store, alice.id, 1_000).await;
    let now = Timestamp::now();
    let later = now.plus_seconds(3600);
    let live = session(alice.id, now);
    store.create_session(&live).await.unwrap();
    let mut keyed = change(alice.id, ChangeKind::Deposit, 100);
    keyed.idempotency = Some(stamp("k-1", "deposit 1", later));
    keyed.session = in_session(&live, now);
    assert!(matches!(
        store.apply_change(&keyed).await.unwrap(),
        Applied::Done(_)
    ));

    // Sessions that are not alice's own live one move nothing.
    let bobs = session(bob.id, now);
    store.create_session(&bobs).await.unwrap();
    let mut expired = session(alice.id, now.plus_seconds(-7200));
    expired.expires_at = now.plus_seconds(-3600);
    store.create_session(&expired).await.unwrap();
    let unknown = session(alice.id, now);
    for (s, what) in [
        (&bobs, "another user's session"),
        (&expired, "an expired session"),
        (&unknown, "a session never created"),
    ] {
        let mut c = change(alice.id, ChangeKind::Deposit, 1);
        c.session = in_session(s, now);
        not_live(store.apply_change(&c).await, what);
        let mut t = transfer(alice.id, "bob", 1);
        t.session = in_session(s, now);
        not_live(store.transfer(&t).await, what);
    }

    // Once revoked, the session's refusal comes before every other answer: a recorded key,
    // insufficient funds, an unknown recipient, a transfer to oneself.
    assert!(store.revoke_session(alice.id, live.id, now).await.unwrap());
    not_live(store.apply_change(&keyed).await, "replay of a recorded key");
    let mut overdraw = change(alice.id, ChangeKind::Withdrawal, 1_000_000);
    overdraw.session = in_session(&live, now);
    not_live(
        store.apply_change(&overdraw).await,
        "withdrawal above balance",
    );
    for (to, minor) in [("bob", 1), ("bob", 1_000_000), ("nobody", 1), ("alice", 1)] {
        let mut t = transfer(alice.id, to, minor);
        t.idempotency = Some(stamp("k-2", "transfer", later));
        t.session = in_session(&live, now);
        not_live(store.transfer(&t).await, to);
    }
    assert!(
        store
            .idempotent_record(alice.id, &IdempotencyKey::parse(b"k-2").unwrap(), now)
            .await
            .unwrap()
            .is_none(),
        "a refused movement records no key"
    );
    assert_eq!(balance(&store, alice.id).await, 1_100);
    assert_eq!(balance(&store, bob.id).await, 0);
    assert_ledger_consistent(&store, alice.id).await;
    assert_ledger_consistent(&store, bob.id).await;
}

pub async fn movements_record_their_sessions_use_when_due(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    create(&store, "bob").await;
    deposit(&store, alice.id, 1_000).await;
    let now = Timestamp::now();
    let mut idle = session(alice.id, now.plus_seconds(-600));
    idle.expires_at = now.plus_seconds(3600);
    store.create_session(&idle).await.unwrap();
    let last_used = |s: &SessionRecord| {
        let store = Arc::clone(&store);
        let (user, id) = (s.user, s.id);
        async move { store.session(user, id).await.unwrap().unwrap().last_used_at }
    };

    // Last used ten minutes ago: the movement records its use.
    let mut c = change(alice.id, ChangeKind::Withdrawal, 1);
    c.now = now;
    c.session = in_session(&idle, now);
    assert!(matches!(
        store.apply_change(&c).await.unwrap(),
        Applied::Done(_)
    ));
    assert_eq!(last_used(&idle).await, now);
    // Ten seconds later the use is recent: nothing is written to the session; two minutes
    // later a transfer records it again.
    for (at, recorded) in [
        (now.plus_seconds(10), now),
        (now.plus_seconds(120), now.plus_seconds(120)),
    ] {
        let mut t = transfer(alice.id, "bob", 1);
        t.now = at;
        t.session = in_session(&idle, at);
        assert!(matches!(
            store.transfer(&t).await.unwrap(),
            Applied::Done(_)
        ));
        assert_eq!(last_used(&idle).await, recorded);
    }
    assert_eq!(balance(&store, alice.id).await, 997);
}

pub async fn movements_racing_a_revocation_stop_at_it(store: Arc<dyn Store>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let alice = create(&store, "alice").await;
    create(&store, "bob").await;
    deposit(&store, alice.id, 10_000).await;
    let now = Timestamp::now();
    let s = session(alice.id, now);
    store.create_session(&s).await.unwrap();
    let revoked = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (task_store, task_revoked) = (Arc::clone(&store), Arc::clone(&revoked));
        let (id, used) = (alice.id, in_session(&s, now));
        tasks.push(tokio::spawn(async move {
            let after_revocation = task_revoked.load(Ordering::SeqCst);
            let result = if i % 2 == 0 {
                let mut c = change(id, ChangeKind::Withdrawal, 10);
                c.session = used;
                task_store.apply_change(&c).await
            } else {
                let mut t = transfer(id, "bob", 10);
                t.session = used;
                task_store.transfer(&t).await
            };
            (after_revocation, result)
        }));
        if i == 20 {
            assert!(store.revoke_session(alice.id, s.id, now).await.unwrap());
            revoked.store(true, Ordering::SeqCst);
        }
    }
    let mut moved = 0;
    for t in tasks {
        match t.await.unwrap() {
            (false, Ok(Applied::Done(_))) => moved += 1,
            (_, Err(StoreError::SessionNotLive)) => {}
            (true, other) => panic!("a movement begun after the revocation answered: {other:?}"),
            (false, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(balance(&store, alice.id).await, 10_000 - 10 * moved);
    assert_ledger_consistent(&store, alice.id).await;
    let mut c = change(alice.id, ChangeKind::Deposit, 1);
    c.session = in_session(&s, Timestamp::now());
    not_live(store.apply_change(&c).await, "after the race");
}

pub async fn sessions_are_listed_newest_first_and_revoked_only_by_their_owner(
    store: Arc<dyn Store>,
) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = session(alice.id, now.plus_seconds(i));
        store.create_session(&s).await.unwrap();
        ids.push(s.id);
    }
    let bobs = session(bob.id, now);
    store.create_session(&bobs).await.unwrap();
    let listed = active_ids(&store, alice.id, now.plus_seconds(5)).await;
    assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>());
    assert!(
        !store.revoke_session(alice.id, bobs.id, now).await.unwrap(),
        "not hers"
    );
    assert!(stored_session(&store, &bobs).await.revoked_at.is_none());
    assert!(store.revoke_session(alice.id, ids[1], now).await.unwrap());
    assert!(
        !store.revoke_session(alice.id, ids[1], now).await.unwrap(),
        "already revoked"
    );
    let listed = active_ids(&store, alice.id, now.plus_seconds(5)).await;
    assert_eq!(listed, vec![ids[2], ids[0]]);
    assert!(
        store
            .active_sessions(alice.id, now.plus_seconds(10_000))
            .await
            .unwrap()
            .is_empty(),
        "expired sessions are not listed"
    );
}
