//! The store conformance suite: written once, run against every backend.
//!
//! Each case takes a fresh, empty store. A backend is done when every case passes on it,
//! the concurrency cases included.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lighttech::domain::{
    Email, IdempotencyKey, Money, OperationId, OperationKind, RequestFingerprint, SessionId,
    Timestamp, TokenId, TransferId, UserId, Username,
};
use lighttech::store::{
    Applied, Attempt, AuditAction, AuditEntry, AuditParty, BalanceChange, HistoryQuery,
    IdempotencyStamp, NewUser, RotateOutcome, Rotation, SessionRecord, SessionUse, StatusChange,
    Store, StoreError, ThrottlePolicy, TransferCommand, UserQuery, UserRecord,
};
use rand::RngExt;

/// Generates one `#[tokio::test]` per conformance case for a backend. `$fixture` is an async
/// fn returning a [`crate::StoreFixture`] with a fresh, empty store.
#[macro_export]
macro_rules! store_conformance_suite {
    ($fixture:path) => {
        $crate::store_conformance_suite!(@cases $fixture;
            users_are_found_by_case_insensitive_username_and_by_id,
            usernames_and_emails_are_unique,
            emails_are_unique_by_their_folded_key,
            racing_creations_with_one_folded_email_create_one_user,
            a_new_account_is_empty_at_version_zero,
            a_deposit_bumps_the_version_and_records_the_operation,
            a_withdrawal_above_the_balance_changes_nothing,
            a_deposit_past_the_balance_ceiling_changes_nothing,
            a_transfer_moves_both_sides_in_one_step,
            a_failed_transfer_changes_nothing_on_either_side,
            a_recorded_idempotency_key_wins_over_every_condition,
            an_expired_idempotency_key_runs_afresh,
            idempotency_keys_are_scoped_to_their_user,
            history_pages_newest_first_and_resumes_below_the_cursor,
            history_filters_keep_pages_full,
            history_ends_where_nothing_lies_below,
            sessions_rotate_once_and_reuse_revokes,
            inactive_sessions_cannot_rotate_or_be_touched,
            sessions_end_at_their_maximum_lifetime,
            racing_rotations_let_exactly_one_win,
            movements_need_a_live_session_of_their_own_before_anything_else,
            movements_record_their_sessions_use_when_due,
            movements_racing_a_revocation_stop_at_it,
            sessions_are_listed_newest_first_and_revoked_only_by_their_owner,
            login_attempts_are_limited_per_window,
            racing_login_attempts_never_exceed_the_limit,
            parallel_withdrawals_never_overdraw,
            random_transfers_conserve_the_total,
            racing_idempotent_changes_move_money_once,
            racing_idempotent_transfers_move_money_once,
            users_are_listed_by_username_and_searched_in_username_and_email,
            deactivation_revokes_sessions_blocks_new_ones_and_refuses_transfers_in,
            deactivation_ends_more_sessions_than_one_transaction_holds_at_once,
            logins_racing_a_deactivation_leave_no_live_session,
            status_changes_and_reads_are_audited_newest_first,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = $fixture().await;
                    $crate::conformance::$case(fixture.store()).await;
                }
            )*
        }
    };
}

fn user(name: &str) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: Username::parse(name).unwrap(),
        email: Email::parse(&format!("{}@example.com", name.to_lowercase())).unwrap(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        is_staff: false,
        now: Timestamp::now(),
    }
}

/// A new user named `name` with address `email` (as given, before lower-casing) and a
/// placeholder password hash.
pub fn user_with_email(name: &str, email: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        ..user(name)
    }
}

/// Creates a user with a placeholder password hash.
pub async fn create_user(store: &Arc<dyn Store>, name: &str) -> UserRecord {
    create(store, name).await
}

async fn create(store: &Arc<dyn Store>, name: &str) -> UserRecord {
    store.create_user(&user(name)).await.unwrap()
}

fn change(user: UserId, kind: OperationKind, minor: i64) -> BalanceChange {
    BalanceChange {
        user,
        kind,
        amount: Money::from_minor(minor),
        description: Some(format!("{} {minor}", kind.as_str())),
        operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: None,
    }
}

fn transfer(from: UserId, to: &str, minor: i64) -> TransferCommand {
    TransferCommand {
        from,
        to_username_key: to.to_lowercase(),
        amount: Money::from_minor(minor),
        description: None,
        transfer_id: TransferId::new(),
        out_operation_id: OperationId::new(),
        in_operation_id: OperationId::new(),
        now: Timestamp::now(),
        idempotency: None,
        session: None,
    }
}

fn stamp(key: &str, fingerprint: &str, expires_at: Timestamp) -> IdempotencyStamp {
    IdempotencyStamp {
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        fingerprint: RequestFingerprint::of(&[fingerprint]),
        expires_at,
    }
}

async fn deposit(store: &Arc<dyn Store>, user: UserId, minor: i64) {
    match store
        .apply_change(&change(user, OperationKind::Deposit, minor))
        .await
        .unwrap()
    {
        Applied::Done(_) => {}
        other => panic!("deposit not applied: {other:?}"),
    }
}

async fn balance(store: &Arc<dyn Store>, user: UserId) -> i64 {
    store.account(user).await.unwrap().unwrap().balance.minor()
}

/// Every operation of `user`, newest first, read page by page.
pub async fn all_history(store: &Arc<dyn Store>, user: UserId) -> Vec<lighttech::store::Operation> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(&HistoryQuery {
                user,
                limit: 100,
                before_seq: before,
                kinds: vec![],
                since: None,
                until: None,
            })
            .await
            .unwrap();
        out.extend(page.operations);
        match page.next_before {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

/// Checks one account's ledger against its balance: history is newest first with contiguous
/// sequence numbers ending at the version, each `balance_after` follows from the one before,
/// and the newest equals the balance.
pub async fn assert_ledger_consistent(store: &Arc<dyn Store>, user: UserId) {
    let account = store.account(user).await.unwrap().unwrap();
    let history = all_history(store, user).await;
    assert_eq!(
        history.len() as u64,
        account.version,
        "one operation per version"
    );
    let mut running = 0i64;
    for (i, op) in history.iter().rev().enumerate() {
        assert_eq!(op.seq, i as u64 + 1, "sequence numbers are contiguous");
        running += if op.kind.is_credit() {
            op.amount.minor()
        } else {
            -op.amount.minor()
        };
        assert_eq!(
            op.balance_after.minor(),
            running,
            "balance_after follows the ledger"
        );
        assert!(running >= 0, "a balance never went negative");
    }
    assert_eq!(
        running,
        account.balance.minor(),
        "newest balance_after is the balance"
    );
}

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

pub async fn a_new_account_is_empty_at_version_zero(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let account = store.account(alice.id).await.unwrap().unwrap();
    assert_eq!(account.balance, Money::ZERO);
    assert_eq!(account.version, 0);
    assert!(all_history(&store, alice.id).await.is_empty());
}

pub async fn a_deposit_bumps_the_version_and_records_the_operation(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let c = change(alice.id, OperationKind::Deposit, 1050);
    let Applied::Done(op) = store.apply_change(&c).await.unwrap() else {
        panic!("not applied")
    };
    assert_eq!(op.id, c.operation_id);
    assert_eq!(op.seq, 1);
    assert_eq!(op.balance_after.minor(), 1050);
    assert_eq!(op.description, c.description);
    let w = change(alice.id, OperationKind::Withdrawal, 50);
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
        .apply_change(&change(alice.id, OperationKind::Withdrawal, 1001))
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
            .apply_change(&change(alice.id, OperationKind::Deposit, 1))
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

pub async fn a_recorded_idempotency_key_wins_over_every_condition(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let bob = create(&store, "bob").await;
    let later = Timestamp::now().plus_seconds(86_400);
    deposit(&store, alice.id, 1_000).await;

    let mut w = change(alice.id, OperationKind::Withdrawal, 1_000);
    w.idempotency = Some(stamp("k-1", "withdraw 10", later));
    let Applied::Done(first) = store.apply_change(&w).await.unwrap() else {
        panic!("not applied")
    };
    // The balance is now 0: the same withdrawal would fail, but the key replays instead.
    let mut again = change(alice.id, OperationKind::Withdrawal, 1_000);
    again.idempotency = w.idempotency.clone();
    match store.apply_change(&again).await.unwrap() {
        Applied::AlreadyRecorded(r) => {
            assert_eq!(r.operation, first);
            assert_eq!(r.fingerprint, RequestFingerprint::of(&["withdraw 10"]));
        }
        other => panic!("{other:?}"),
    }
    // A different request under the same key also meets the record (the caller rejects it).
    let mut different = change(alice.id, OperationKind::Deposit, 5);
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
    let mut failing = change(alice.id, OperationKind::Withdrawal, 1);
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
    let mut retry = change(alice.id, OperationKind::Withdrawal, 1);
    retry.idempotency = failing.idempotency.clone();
    assert!(matches!(
        store.apply_change(&retry).await.unwrap(),
        Applied::Done(_)
    ));
    assert_ledger_consistent(&store, alice.id).await;
}

pub async fn an_expired_idempotency_key_runs_afresh(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let mut first = change(alice.id, OperationKind::Deposit, 100);
    first.idempotency = Some(stamp("old", "deposit 1", Timestamp::now().plus_seconds(-1)));
    assert!(matches!(
        store.apply_change(&first).await.unwrap(),
        Applied::Done(_)
    ));
    let mut second = change(alice.id, OperationKind::Deposit, 100);
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
    let mut third = change(alice.id, OperationKind::Deposit, 100);
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
        let mut c = change(u, OperationKind::Deposit, 100);
        c.idempotency = Some(stamp("same-key", "deposit 1", later));
        assert!(matches!(
            store.apply_change(&c).await.unwrap(),
            Applied::Done(_)
        ));
    }
    assert_eq!(balance(&store, alice.id).await, 100);
    assert_eq!(balance(&store, bob.id).await, 100);
}

pub async fn history_pages_newest_first_and_resumes_below_the_cursor(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    for i in 1..=25 {
        deposit(&store, alice.id, i).await;
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .history(&HistoryQuery {
                user: alice.id,
                limit: 10,
                before_seq: before,
                kinds: vec![],
                since: None,
                until: None,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.operations.len() <= 10);
        seen.extend(page.operations.iter().map(|o| o.seq));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());
    // Exactly a page's worth: no empty trailing page.
    let page = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 25,
            before_seq: None,
            kinds: vec![],
            since: None,
            until: None,
        })
        .await
        .unwrap();
    assert_eq!(page.operations.len(), 25);
    assert_eq!(page.next_before, None);
}

pub async fn history_filters_keep_pages_full(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let _bob = create(&store, "bob").await;
    let start = Timestamp::now();
    for _ in 0..12 {
        deposit(&store, alice.id, 100).await;
        store
            .apply_change(&change(alice.id, OperationKind::Withdrawal, 10))
            .await
            .unwrap();
        store.transfer(&transfer(alice.id, "bob", 1)).await.unwrap();
    }
    let query = |kinds: Vec<OperationKind>, before: Option<u64>| HistoryQuery {
        user: alice.id,
        limit: 5,
        before_seq: before,
        kinds,
        since: None,
        until: None,
    };
    let mut withdrawals = 0;
    let mut before = None;
    loop {
        let page = store
            .history(&query(vec![OperationKind::Withdrawal], before))
            .await
            .unwrap();
        assert!(
            page.operations
                .iter()
                .all(|o| o.kind == OperationKind::Withdrawal)
        );
        if page.next_before.is_some() {
            assert_eq!(page.operations.len(), 5, "a page with more to come is full");
        }
        withdrawals += page.operations.len();
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(withdrawals, 12);
    let two_kinds = store
        .history(&query(
            vec![OperationKind::Deposit, OperationKind::TransferOut],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(two_kinds.operations.len(), 5);
    assert!(
        two_kinds
            .operations
            .iter()
            .all(|o| matches!(o.kind, OperationKind::Deposit | OperationKind::TransferOut))
    );
    // Time bounds are inclusive.
    let all = all_history(&store, alice.id).await;
    let pivot = all[10].created_at;
    let since = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(pivot),
            until: None,
        })
        .await
        .unwrap();
    assert!(since.operations.iter().all(|o| o.created_at >= pivot));
    assert!(since.operations.iter().any(|o| o.id == all[10].id));
    let until = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(start.plus_seconds(-1)),
            until: Some(pivot),
        })
        .await
        .unwrap();
    assert!(until.operations.iter().all(|o| o.created_at <= pivot));
    assert!(until.operations.iter().any(|o| o.id == all[10].id));
    let none = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(Timestamp::now().plus_seconds(3600)),
            until: None,
        })
        .await
        .unwrap();
    assert!(none.operations.is_empty() && none.next_before.is_none());
}

/// No cursor leads to an empty range: a page that reaches the first operation has none, and a
/// position at or below it (a validly signed cursor can carry any number) reads as an empty
/// page without a cursor, whatever the filters — never as a store failure.
pub async fn history_ends_where_nothing_lies_below(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    for i in 1..=3 {
        deposit(&store, alice.id, i).await;
    }
    let query = |limit, before_seq, kinds: Vec<OperationKind>, until| HistoryQuery {
        user: alice.id,
        limit,
        before_seq,
        kinds,
        since: None,
        until,
    };
    let later = Some(Timestamp::now().plus_seconds(3600));
    for before in [0, 1] {
        for kinds in [
            vec![],
            vec![OperationKind::Deposit],
            vec![OperationKind::TransferIn],
        ] {
            for until in [None, later] {
                let page = store
                    .history(&query(20, Some(before), kinds.clone(), until))
                    .await
                    .unwrap_or_else(|e| panic!("below {before}, {kinds:?}, {until:?}: {e:?}"));
                assert!(page.operations.is_empty(), "below {before}: {page:?}");
                assert_eq!(page.next_before, None, "below {before}, {kinds:?}");
            }
        }
    }
    // Paged down to the first operation: the page holding it has no cursor.
    let page = store.history(&query(2, None, vec![], None)).await.unwrap();
    assert_eq!(page.next_before, Some(2));
    let page = store
        .history(&query(2, Some(2), vec![], None))
        .await
        .unwrap();
    let seqs: Vec<u64> = page.operations.iter().map(|o| o.seq).collect();
    assert_eq!((seqs, page.next_before), (vec![1], None));
    // A filter nothing matches: one empty page, no cursor.
    let page = store
        .history(&query(2, None, vec![OperationKind::TransferIn], None))
        .await
        .unwrap();
    assert!(page.operations.is_empty() && page.next_before.is_none());
}

fn session(user: UserId, now: Timestamp) -> SessionRecord {
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

fn rotation(s: &SessionRecord, presented: TokenId, now: Timestamp) -> Rotation {
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

/// The sessions' maximum lifetime in these cases: the default, 30 days.
const MAX_LIFETIME: i64 = 30 * 86_400;

pub async fn sessions_rotate_once_and_reuse_revokes(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let now = Timestamp::now();
    let s = session(alice.id, now);
    store.create_session(&s).await.unwrap();
    assert_eq!(store.session(s.user, s.id).await.unwrap().unwrap(), s);
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
    let after = store.session(s.user, s.id).await.unwrap().unwrap();
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
    let resent = store.session(s.user, s.id).await.unwrap().unwrap();
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
    let revoked = store.session(s.user, s.id).await.unwrap().unwrap();
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
    assert!(
        !store
            .session(expired.user, expired.id)
            .await
            .unwrap()
            .unwrap()
            .is_active(now)
    );
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
    assert_eq!(
        store
            .session(live.user, live.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        later
    );
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
    assert_eq!(
        store
            .session(live.user, live.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        later
    );
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
        store
            .session(s.user, s.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some(),
        "the losers presented a spent token, so the session is revoked"
    );
}

/// A movement made in `s`, recording its use when older than a minute before `now`.
fn in_session(s: &SessionRecord, now: Timestamp) -> Option<SessionUse> {
    Some(SessionUse {
        id: s.id,
        touch_before: now.plus_seconds(-60),
    })
}

fn not_live<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
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
    let mut keyed = change(alice.id, OperationKind::Deposit, 100);
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
        let mut c = change(alice.id, OperationKind::Deposit, 1);
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
    let mut overdraw = change(alice.id, OperationKind::Withdrawal, 1_000_000);
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
    let mut c = change(alice.id, OperationKind::Withdrawal, 1);
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
                let mut c = change(id, OperationKind::Withdrawal, 10);
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
    let mut c = change(alice.id, OperationKind::Deposit, 1);
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
    let listed: Vec<SessionId> = store
        .active_sessions(alice.id, now.plus_seconds(5))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>());
    assert!(
        !store.revoke_session(alice.id, bobs.id, now).await.unwrap(),
        "not hers"
    );
    assert!(
        store
            .session(bobs.user, bobs.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert!(store.revoke_session(alice.id, ids[1], now).await.unwrap());
    assert!(
        !store.revoke_session(alice.id, ids[1], now).await.unwrap(),
        "already revoked"
    );
    let listed: Vec<SessionId> = store
        .active_sessions(alice.id, now.plus_seconds(5))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
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

pub async fn parallel_withdrawals_never_overdraw(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    deposit(&store, alice.id, 1_000).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = Arc::clone(&store);
        let c = change(alice.id, OperationKind::Withdrawal, 100);
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

pub async fn random_transfers_conserve_the_total(store: Arc<dyn Store>) {
    let names = ["acc0", "acc1", "acc2", "acc3", "acc4", "acc5"];
    let mut ids = Vec::new();
    for n in names {
        let u = create(&store, n).await;
        deposit(&store, u.id, 10_000).await;
        ids.push(u.id);
    }
    let total_before: i64 = 10_000 * names.len() as i64;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = Arc::clone(&store);
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = crate::seeded_rng("random_transfers", worker as u64);
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..40 {
                let from = rng.random_range(0..ids.len());
                let mut to = rng.random_range(0..ids.len());
                if to == from {
                    to = (to + 1) % ids.len();
                }
                let amount = rng.random_range(1..=4_000);
                match store
                    .transfer(&transfer(ids[from], names[to], amount))
                    .await
                {
                    Ok(Applied::Done(_)) => ok += 1,
                    Err(StoreError::InsufficientFunds { .. }) => refused += 1,
                    other => panic!("worker {worker}: {other:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
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
    assert_eq!(ok + refused, 320);
    eprintln!(
        "bank workload: {ok} transfers applied, {refused} refused for funds, total {total_after} conserved"
    );
}

pub async fn racing_idempotent_changes_move_money_once(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    deposit(&store, alice.id, 1_000).await;
    let later = Timestamp::now().plus_seconds(3600);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&store);
        let mut c = change(alice.id, OperationKind::Withdrawal, 700);
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
        let stored = store.session(s.user, s.id).await.unwrap().unwrap();
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
    let stored = store.session(s.user, s.id).await.unwrap().unwrap();
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
    let mut c = change(s.user, OperationKind::Withdrawal, 1);
    c.session = in_session(s, now);
    not_live(store.apply_change(&c).await, "withdrawal in a dead session");
    let mut keyed = change(s.user, OperationKind::Deposit, 1);
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
        let mut c = change(alice.id, OperationKind::Withdrawal, 1);
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
    let mut c = change(alice.id, OperationKind::Withdrawal, 1);
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
