//! The store conformance suite: written once, run against every backend.
//!
//! Each case takes a fresh, empty store. A backend is done when every case passes on it,
//! the concurrency cases included. The cases live in one module per subject and are re-exported
//! here, where `store_conformance_suite!` finds them by name; the fixtures they share are below.

use std::sync::Arc;

use lighttech::domain::{
    ChangeKind, Email, IdempotencyKey, Money, OperationId, RequestFingerprint, Timestamp,
    TransferId, UserId, Username,
};
use lighttech::store::{
    Applied, BalanceChange, HistoryQuery, IdempotencyStamp, NewUser, Store, TransferCommand,
    UserRecord,
};

mod admin;
mod history;
mod idempotency;
mod money;
mod sessions;
mod users;

pub use admin::*;
pub use history::*;
pub use idempotency::*;
pub use money::*;
pub use sessions::*;
pub use users::*;

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

fn change(user: UserId, kind: ChangeKind, minor: i64) -> BalanceChange {
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

/// A transfer of `minor` from `from` to the user named `to`, with fresh ids and no key.
pub fn transfer(from: UserId, to: &str, minor: i64) -> TransferCommand {
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

/// An idempotency key `key` for a request whose fingerprint is made of `fingerprint`.
pub fn stamp(key: &str, fingerprint: &str, expires_at: Timestamp) -> IdempotencyStamp {
    IdempotencyStamp {
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        fingerprint: RequestFingerprint::of(&[fingerprint]),
        expires_at,
    }
}

/// Deposits `minor` into `user`'s account, which must succeed.
pub async fn deposit(store: &Arc<dyn Store>, user: UserId, minor: i64) {
    match store
        .apply_change(&change(user, ChangeKind::Deposit, minor))
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
