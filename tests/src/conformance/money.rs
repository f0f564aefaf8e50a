//! Money movements: a new account, deposits and withdrawals with their versions, the balance
//! ceiling, transfers that move both sides or neither, and concurrent movements that never
//! overdraw and conserve the total.

use std::collections::HashMap;
use std::sync::Arc;

use lighttech::domain::{ChangeKind, IdempotencyKey, Money, OperationKind, Timestamp};
use lighttech::store::{Applied, Store, StoreError, TransferCommand};
use rand::RngExt;

use super::{
    all_history, assert_ledger_consistent, balance, change, create, deposit, stamp, transfer,
};

pub async fn a_new_account_is_empty_at_version_zero(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let account = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!(account.balance, Money::ZERO);
    assert_eq!(account.version, 0);
    assert!(all_history(&store, alice.id).await.is_empty());
}

pub async fn a_deposit_bumps_the_version_and_records_the_operation(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let c = change(alice.id, ChangeKind::Deposit, 1050);
    let Applied::Done(op) = store.apply_change(&c).await.unwrap() else {
        panic!("not applied")
    };
    assert_eq!(op.id, c.operation_id);
    assert_eq!(op.seq, 1);
    assert_eq!(op.balance_after.minor(), 1050);
    assert_eq!(op.description, c.description);
    let w = change(alice.id, ChangeKind::Withdrawal, 50);
    let Applied::Done(op2) = store.apply_change(&w).await.unwrap() else {
        panic!("not applied")
    };
    assert_eq!((op2.seq, op2.balance_after.minor()), (2, 1000));
    let account = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (1000, 2));
    let history = all_history(&store, alice.id).await;
    assert_eq!(history, vec![op2, op]);
}

pub async fn a_withdrawal_above_the_balance_changes_nothing(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    deposit(&store, alice.id, 1000).await;
    let result = store
        .apply_change(&change(alice.id, ChangeKind::Withdrawal, 1001))
        .await;
    match result {
        Err(StoreError::InsufficientFunds { balance }) => assert_eq!(balance.minor(), 1000),
        other => panic!("{other:?}"),
    }
    let account = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!((account.balance.minor(), account.version), (1000, 1));
    assert_eq!(all_history(&store, alice.id).await.len(), 1);
}

pub async fn a_deposit_past_the_balance_ceiling_changes_nothing(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    // The store trusts amounts (the edge caps them), so one deposit can reach the ceiling.
    deposit(&store, alice.id, Money::MAX_BALANCE.minor() - 1).await;
    deposit(&store, alice.id, 1).await;
    assert_eq!(balance(&store, alice.id).await, Money::MAX_BALANCE.minor());
    assert!(matches!(
        store
            .apply_change(&change(alice.id, ChangeKind::Deposit, 1))
            .await,
        Err(StoreError::BalanceLimitExceeded)
    ));
    let account = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!(account.balance, Money::MAX_BALANCE);
    assert_eq!(account.version, 2);
}

pub async fn a_transfer_moves_both_sides_in_one_step(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "Bob").await;
    deposit(&store, alice.id, 10_000).await;
    let mut t = transfer(alice.id, "BOB", 2_500);
    t.description = Some("rent".into());
    let Applied::Done(out) = store.transfer(&t).await.unwrap() else {
        panic!("not applied")
    };
    assert_eq!(out.kind, OperationKind::TransferOut);
    assert_eq!(out.id, t.out_operation_id);
    assert_eq!(out.transfer_id, Some(t.transfer_id));
    assert_eq!(out.balance_after.minor(), 7_500);
    let cp = out.counterparty.clone().unwrap();
    assert_eq!((cp.id, cp.username.as_str()), (bob.id, "Bob"));
    let bob_history = all_history(&store, bob.id).await;
    assert_eq!(bob_history.len(), 1);
    let incoming = &bob_history[0];
    assert_eq!(incoming.kind, OperationKind::TransferIn);
    assert_eq!(incoming.id, t.in_operation_id);
    assert_eq!(incoming.transfer_id, Some(t.transfer_id));
    assert_eq!(incoming.balance_after.minor(), 2_500);
    assert_eq!(incoming.description.as_deref(), Some("rent"));
    let cp = incoming.counterparty.clone().unwrap();
    assert_eq!((cp.id, cp.username.as_str()), (alice.id, "alice"));
    assert_eq!(balance(&store, alice.id).await, 7_500);
    assert_eq!(balance(&store, bob.id).await, 2_500);
    assert_ledger_consistent(&store, alice.id).await;
    assert_ledger_consistent(&store, bob.id).await;
}

pub async fn a_failed_transfer_changes_nothing_on_either_side(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    deposit(&store, alice.id, 1_000).await;
    // Bob sits at the ceiling, so any credit to him fails after Alice's debit was prepared.
    deposit(&store, bob.id, Money::MAX_BALANCE.minor()).await;
    let bob_version = store.account(bob.id).await.unwrap().unwrap().version;

    type Expectation = fn(&StoreError) -> bool;
    let cases: Vec<(TransferCommand, Expectation)> = vec![
        (transfer(alice.id, "nobody", 100), |e| {
            matches!(e, StoreError::RecipientNotFound)
        }),
        (transfer(alice.id, "ALICE", 100), |e| {
            matches!(e, StoreError::SelfTransfer)
        }),
        (
            transfer(alice.id, "bob", 1_001),
            |e| matches!(e, StoreError::InsufficientFunds { balance } if balance.minor() == 1_000),
        ),
        (transfer(alice.id, "bob", 100), |e| {
            matches!(e, StoreError::BalanceLimitExceeded)
        }),
    ];
    let later = Timestamp::now().plus_seconds(3600);
    for (i, (mut cmd, expected)) in cases.into_iter().enumerate() {
        // Every second one under a key: a refusal must not leave the key recorded.
        let key = format!("refused-{i}");
        if i % 2 == 1 {
            cmd.idempotency = Some(stamp(&key, "transfer", later));
        }
        match store.transfer(&cmd).await {
            Err(e) if expected(&e) => {}
            other => panic!("transfer to {}: {other:?}", cmd.to_username_key),
        }
        let recorded = store
            .idempotent_record(
                alice.id,
                &IdempotencyKey::parse(key.as_bytes()).unwrap(),
                Timestamp::now(),
            )
            .await
            .unwrap();
        assert!(recorded.is_none(), "{key}: {recorded:?}");
    }
    let a = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!((a.balance.minor(), a.version), (1_000, 1));
    let b = store.account(bob.id).await.unwrap().unwrap();
    assert_eq!((b.balance, b.version), (Money::MAX_BALANCE, bob_version));
    assert_ledger_consistent(&store, alice.id).await;
    assert_ledger_consistent(&store, bob.id).await;
}

pub async fn parallel_withdrawals_never_overdraw(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    deposit(&store, alice.id, 1_000).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        let c = change(alice.id, ChangeKind::Withdrawal, 100);
        tasks.push(tokio::spawn(async move { store.apply_change(&c).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(Applied::Done(_)) => ok += 1,
            Err(StoreError::InsufficientFunds { .. }) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 40));
    assert_eq!(balance(&store, alice.id).await, 0);
    assert_ledger_consistent(&store, alice.id).await;
}

/// How many times a worker resends a transfer answered `Unavailable` (a `503`), as a client
/// would. The store retries conflicts itself; on a CPU-starved emulator with conflicts injected
/// on top, a transfer can still lose every one of its attempts.
const MAX_RESENDS: u32 = 5;

pub async fn random_transfers_conserve_the_total(store: Arc<dyn Store>) {
    let names = ["acc0", "acc1", "acc2", "acc3", "acc4", "acc5"];
    let mut ids = Vec::new();
    for n in names {
        let u = create(&store, n).await;
        deposit(&store, u.id, 10_000).await;
        ids.push(u.id);
    }
    let total_before: i64 = 10_000 * names.len() as i64;
    let rounds = crate::contention_rounds(40);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = Arc::clone(&store);
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = crate::seeded_rng("random_transfers", worker as u64);
            let (mut ok, mut refused, mut unavailable) = (0u32, 0u32, 0u32);
            for _ in 0..rounds {
                let from = rng.random_range(0..ids.len());
                let mut to = rng.random_range(0..ids.len());
                if to == from {
                    to = (to + 1) % ids.len();
                }
                let amount = rng.random_range(1..=4_000);
                let command = transfer(ids[from], names[to], amount);
                // `Unavailable` promises that nothing was applied, so a client sends the same
                // transfer again. Resending the same ids checks the promise: a transfer applied
                // twice would show four history rows under its id.
                let mut resends = 0;
                loop {
                    match store.transfer(&command).await {
                        Ok(Applied::Done(_)) => ok += 1,
                        Err(StoreError::InsufficientFunds { .. }) => refused += 1,
                        Err(StoreError::Unavailable(_)) if resends < MAX_RESENDS => {
                            resends += 1;
                            unavailable += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                        other => panic!("worker {worker}: {other:?}"),
                    }
                    break;
                }
            }
            (ok, refused, unavailable)
        }));
    }
    let (mut ok, mut refused, mut unavailable) = (0, 0, 0);
    for t in tasks {
        let (o, r, u) = t.await.unwrap();
        ok += o;
        refused += r;
        unavailable += u;
    }
    let mut total_after = 0;
    let mut transfer_ids = HashMap::new();
    for id in &ids {
        let b = balance(&store, *id).await;
        assert!(b >= 0);
        total_after += b;
        assert_ledger_consistent(&store, *id).await;
        for op in all_history(&store, *id).await {
            if let Some(t) = op.transfer_id {
                *transfer_ids.entry(t).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(total_after, total_before, "money was created or destroyed");
    assert_eq!(transfer_ids.len() as u32, ok, "one transfer id per success");
    assert!(
        transfer_ids.values().all(|n| *n == 2),
        "every transfer has both sides"
    );
    assert_eq!(ok + refused, 8 * rounds as u32);
    eprintln!(
        "bank workload: {ok} transfers applied, {refused} refused for funds, {unavailable} resent \
         after Unavailable, total {total_after} conserved"
    );
}
