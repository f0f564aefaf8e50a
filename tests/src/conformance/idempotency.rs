//! Idempotency keys: a recorded key wins over every condition, expires, is scoped to its user,
//! and racing changes or transfers under one key move money once.

use std::collections::HashSet;
use std::sync::Arc;

use lighttech::domain::{ChangeKind, IdempotencyKey, RequestFingerprint, Timestamp};
use lighttech::store::{Applied, Store, StoreError};

use super::{assert_ledger_consistent, balance, change, create, deposit, stamp, transfer};

pub async fn a_recorded_idempotency_key_wins_over_every_condition(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    let later = Timestamp::now().plus_seconds(86_400);
    deposit(&store, alice.id, 1_000).await;

    let mut w = change(alice.id, ChangeKind::Withdrawal, 1_000);
    w.idempotency = Some(stamp("k-1", "withdraw 10", later));
    let Applied::Done(first) = store.apply_change(&w).await.unwrap() else {
        panic!("not applied")
    };
    // The balance is now 0: the same withdrawal would fail, but the key replays instead.
    let mut again = change(alice.id, ChangeKind::Withdrawal, 1_000);
    again.idempotency = w.idempotency.clone();
    match store.apply_change(&again).await.unwrap() {
        Applied::AlreadyRecorded(r) => {
            assert_eq!(r.operation, first);
            assert_eq!(r.fingerprint, RequestFingerprint::of(&["withdraw 10"]));
        }
        other => panic!("{other:?}"),
    }
    // A different request under the same key also meets the record (the caller rejects it).
    let mut different = change(alice.id, ChangeKind::Deposit, 5);
    different.idempotency = Some(stamp("k-1", "deposit 0.05", later));
    assert!(matches!(
        store.apply_change(&different).await.unwrap(),
        Applied::AlreadyRecorded(_)
    ));
    let record = store
        .idempotent_record(
            alice.id,
            &IdempotencyKey::parse(b"k-1").unwrap(),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.operation, first);
    // Transfers share the key space and the precedence.
    let mut t = transfer(alice.id, "bob", 1);
    t.idempotency = Some(stamp("k-1", "transfer", later));
    assert!(matches!(
        store.transfer(&t).await.unwrap(),
        Applied::AlreadyRecorded(_)
    ));
    let a = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!((a.balance.minor(), a.version), (0, 2));
    assert_eq!(balance(&store, bob.id).await, 0);

    // A failed request records nothing: retrying its key runs afresh.
    let mut failing = change(alice.id, ChangeKind::Withdrawal, 1);
    failing.idempotency = Some(stamp("k-2", "withdraw 0.01", later));
    assert!(matches!(
        store.apply_change(&failing).await,
        Err(StoreError::InsufficientFunds { .. })
    ));
    assert!(
        store
            .idempotent_record(
                alice.id,
                &IdempotencyKey::parse(b"k-2").unwrap(),
                Timestamp::now()
            )
            .await
            .unwrap()
            .is_none()
    );
    deposit(&store, alice.id, 1).await;
    let mut retry = change(alice.id, ChangeKind::Withdrawal, 1);
    retry.idempotency = failing.idempotency.clone();
    assert!(matches!(
        store.apply_change(&retry).await.unwrap(),
        Applied::Done(_)
    ));
    assert_ledger_consistent(&store, alice.id).await;
}

pub async fn an_expired_idempotency_key_runs_afresh(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let mut first = change(alice.id, ChangeKind::Deposit, 100);
    first.idempotency = Some(stamp("old", "deposit 1", Timestamp::now().plus_seconds(-1)));
    assert!(matches!(
        store.apply_change(&first).await.unwrap(),
        Applied::Done(_)
    ));
    let mut second = change(alice.id, ChangeKind::Deposit, 100);
    second.idempotency = Some(stamp(
        "old",
        "deposit 1",
        Timestamp::now().plus_seconds(3600),
    ));
    assert!(matches!(
        store.apply_change(&second).await.unwrap(),
        Applied::Done(_)
    ));
    assert_eq!(balance(&store, alice.id).await, 200);
    // The new record is the live one now.
    let mut third = change(alice.id, ChangeKind::Deposit, 100);
    third.idempotency = second.idempotency.clone();
    assert!(matches!(
        store.apply_change(&third).await.unwrap(),
        Applied::AlreadyRecorded(_)
    ));
    assert_eq!(balance(&store, alice.id).await, 200);
}

pub async fn idempotency_keys_are_scoped_to_their_user(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    let later = Timestamp::now().plus_seconds(3600);
    for u in [alice.id, bob.id] {
        let mut c = change(u, ChangeKind::Deposit, 100);
        c.idempotency = Some(stamp("same-key", "deposit 1", later));
        assert!(matches!(
            store.apply_change(&c).await.unwrap(),
            Applied::Done(_)
        ));
    }
    assert_eq!(balance(&store, alice.id).await, 100);
    assert_eq!(balance(&store, bob.id).await, 100);
}

pub async fn racing_idempotent_changes_move_money_once(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    deposit(&store, alice.id, 1_000).await;
    let later = Timestamp::now().plus_seconds(3600);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let mut c = change(alice.id, ChangeKind::Withdrawal, 700);
        c.idempotency = Some(stamp("race", "withdraw 7", later));
        tasks.push(tokio::spawn(async move {
            store.apply_change(&c).await.unwrap()
        }));
    }
    let mut done = Vec::new();
    let mut recorded = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Applied::Done(op) => done.push(op),
            Applied::AlreadyRecorded(r) => {
                recorded.insert(r.operation.id);
            }
        }
    }
    assert_eq!(done.len(), 1, "exactly one request moved money");
    assert_eq!(
        recorded.into_iter().collect::<Vec<_>>(),
        vec![done[0].id],
        "every other request met the winner's record"
    );
    assert_eq!(balance(&store, alice.id).await, 300);
    assert_ledger_consistent(&store, alice.id).await;
}

pub async fn racing_idempotent_transfers_move_money_once(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    deposit(&store, alice.id, 1_000).await;
    let later = Timestamp::now().plus_seconds(3600);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let mut t = transfer(alice.id, "bob", 600);
        t.idempotency = Some(stamp("race-t", "transfer 6", later));
        tasks.push(tokio::spawn(
            async move { store.transfer(&t).await.unwrap() },
        ));
    }
    let mut done = 0;
    for t in tasks {
        if let Applied::Done(_) = t.await.unwrap() {
            done += 1;
        }
    }
    assert_eq!(done, 1);
    assert_eq!(balance(&store, alice.id).await, 400);
    assert_eq!(balance(&store, bob.id).await, 600);
    assert_ledger_consistent(&store, alice.id).await;
    assert_ledger_consistent(&store, bob.id).await;
}
