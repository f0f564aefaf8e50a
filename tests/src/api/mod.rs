//! The API suite: every endpoint of `docs/api.md` and every row of its error table, driven
//! through the real router in-process, on any backend. The cases live in one module per subject
//! and are re-exported here, where `api_suite!` finds them by name.

use lighttech::domain::Timestamp;
use serde_json::{Value, json};

use crate::{Resp, TestApp, TestUser};

mod admin;
mod auth;
mod history;
mod idempotency;
mod money;
mod protocol;
mod registration;
mod sessions;

pub use admin::*;
pub use auth::*;
pub use history::*;
pub use idempotency::*;
pub use money::*;
pub use protocol::*;
pub use registration::*;
pub use sessions::*;

pub use crate::hardening::*;
pub use crate::rotation::*;

/// Generates one `#[tokio::test]` per API case for a backend. `$fixture` is an async fn
/// returning a [`crate::StoreFixture`] with a fresh, empty store.
///
/// With `cache = "kind"`, only the cases that read history (the path the cache serves) are
/// generated, each first checking that the app's cache is of that kind: the suites for an
/// external cache run what the cache can change, not the whole suite again.
#[macro_export]
macro_rules! api_suite {
    ($fixture:path) => {
        $crate::api_suite!($fixture, env = Vec::new());
    };
    ($fixture:path, env = $env:expr, cache = $kind:literal) => {
        $crate::api_suite!(@cases $fixture, $env, Some($kind);
            a_revoked_session_moves_no_money_and_hears_invalid_token_first,
            deposit_and_withdraw_return_the_operation,
            a_withdrawal_above_the_balance_is_refused,
            transfers_move_money_and_both_sides_see_it,
            failed_transfers_change_nothing,
            history_pages_with_user_bound_cursors,
            history_parameters_are_validated,
            history_filters_by_type_and_time,
            every_response_carries_nosniff,
            malformed_input_never_causes_a_server_error,
            parallel_withdrawals_pay_out_exactly_the_balance,
            the_bank_workload_conserves_money,
            history_reads_repeat_from_the_cache_and_stay_fresh,
            if_none_match_answers_304_until_the_account_changes,
            paging_through_cached_pages_equals_paging_through_the_store,
            two_caches_sharing_one_store_never_serve_stale_pages,
            equal_queries_of_different_users_never_share_a_page,
            a_shared_cache_never_serves_cursors_signed_with_another_key,
            staff_see_one_user_and_their_history,
            deactivation_takes_effect_at_once_and_reactivation_restores_access,
            every_admin_action_is_in_the_audit_trail,
            refused_admin_calls_are_not_audited,
            control_characters_are_refused_in_every_text_field,
            different_bodies_racing_on_one_key_move_money_once,
            a_rotation_keeps_the_previous_keys_tokens_and_cursors_until_the_next,
        );
    };
    ($fixture:path, env = $env:expr) => {
        $crate::api_suite!(@cases $fixture, $env, None;
            register_creates_the_user_and_an_empty_account,
            registration_conflicts_are_case_insensitive,
            registration_conflicts_fold_case_fully,
            an_address_too_long_once_folded_is_refused,
            racing_registrations_of_one_username_create_one_user,
            racing_registrations_of_one_email_create_one_user,
            registration_validates_every_field_and_creates_nothing,
            registration_reports_every_failing_field_at_once,
            bodies_are_checked_for_size_type_syntax_and_unknown_fields,
            login_returns_a_bearer_pair,
            login_failures_look_the_same_whether_or_not_the_user_exists,
            login_is_throttled_per_username,
            refresh_rotates_and_reuse_revokes_the_session,
            refresh_rejects_access_tokens_and_garbage,
            racing_refreshes_let_exactly_one_win,
            tokens_are_refused_from_their_expiry_on,
            a_session_ends_at_its_maximum_lifetime_however_often_it_is_refreshed,
            logout_revokes_the_session_and_its_tokens,
            logout_with_another_sessions_refresh_token_is_refused,
            a_revoked_session_moves_no_money_and_hears_invalid_token_first,
            the_authorization_header_is_checked_strictly,
            me_returns_the_profile,
            sessions_are_listed_and_revoked_by_their_owner,
            balance_shows_the_configured_currency,
            deposit_and_withdraw_return_the_operation,
            amounts_are_parsed_exactly_or_refused,
            a_withdrawal_above_the_balance_is_refused,
            a_deposit_past_the_balance_ceiling_is_refused,
            descriptions_are_limited_to_255_characters,
            transfers_move_money_and_both_sides_see_it,
            failed_transfers_change_nothing,
            idempotent_requests_replay_and_mismatches_are_refused,
            idempotency_keys_are_validated,
            racing_idempotent_requests_move_money_once,
            history_pages_with_user_bound_cursors,
            history_parameters_are_validated,
            history_filters_by_type_and_time,
            routing_answers_404_405_and_ignores_the_trailing_slash,
            every_response_carries_a_request_id,
            every_response_carries_nosniff,
            health_answers_ok,
            store_outages_answer_503_and_failures_500_without_details,
            malformed_input_never_causes_a_server_error,
            parallel_withdrawals_pay_out_exactly_the_balance,
            the_bank_workload_conserves_money,
            history_reads_repeat_from_the_cache_and_stay_fresh,
            if_none_match_answers_304_until_the_account_changes,
            paging_through_cached_pages_equals_paging_through_the_store,
            two_caches_sharing_one_store_never_serve_stale_pages,
            equal_queries_of_different_users_never_share_a_page,
            a_shared_cache_never_serves_cursors_signed_with_another_key,
            admin_routes_refuse_anonymous_and_non_staff_callers,
            staff_list_and_search_users_with_balances,
            staff_see_one_user_and_their_history,
            deactivation_takes_effect_at_once_and_reactivation_restores_access,
            staff_cannot_deactivate_themselves,
            every_admin_action_is_in_the_audit_trail,
            refused_admin_calls_are_not_audited,
            the_admin_page_is_self_contained,
            control_characters_are_refused_in_every_text_field,
            an_outage_during_authentication_answers_503_never_401,
            different_bodies_racing_on_one_key_move_money_once,
            a_key_replays_until_its_retention_ends_and_an_empty_key_is_refused,
            an_idempotency_key_tells_no_description_from_any_description,
            a_rotation_keeps_the_previous_keys_tokens_and_cursors_until_the_next,
        );
    };
    (@cases $fixture:path, $env:expr, $cache:expr; $($case:ident),* $(,)?) => {
        mod api {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let env: Vec<(String, String)> = $env;
                    let env: Vec<(&str, &str)> =
                        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let app = $crate::TestApp::with_env($fixture().await, &env).await;
                    let cache: Option<&str> = $cache;
                    if let Some(kind) = cache {
                        assert_eq!(app.app.cache.kind(), kind, "the suite runs on this cache");
                    }
                    $crate::api::$case(app).await;
                }
            )*
        }
    };
}

fn is_rfc3339_millis_z(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && Timestamp::parse_rfc3339(s).is_some()
}

/// `from` sends `amount` to `to`, whatever the answer.
async fn transfer_as(t: &TestApp, from: &TestUser, to: &str, amount: &str) -> Resp {
    t.post(
        "/api/balance/v1/transfer/",
        Some(&from.access),
        &json!({"to": to, "amount": amount}),
        &[],
    )
    .await
}

/// A login with this body, whatever the answer.
async fn login_with(t: &TestApp, body: Value) -> Resp {
    t.post("/api/auth/v1/login/", None, &body, &[]).await
}

/// A `deposit` or `withdraw` (`kind`) of `amount` by `user`, whatever the answer.
async fn move_money(t: &TestApp, user: &TestUser, kind: &str, amount: &str) -> Resp {
    t.post(
        &format!("/api/balance/v1/{kind}/"),
        Some(&user.access),
        &json!({ "amount": amount }),
        &[],
    )
    .await
}
