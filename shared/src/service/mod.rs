//! The service layer: one function per use case, business rules only. Inputs are already
//! parsed into domain types; outputs are domain records the HTTP layer renders.

pub mod admin;
pub mod auth;
pub mod history;
pub mod money;

use crate::error::ApiError;
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => ApiError::UsernameTaken,
            StoreError::EmailTaken => ApiError::EmailTaken,
            // Only a movement, which knows its amount, meets this refusal: it converts it
            // itself (`money::with_amount`), so reaching here is a bug, not a client's error.
            StoreError::InsufficientFunds { balance } => ApiError::internal(format!(
                "insufficient funds (balance {balance}) met outside a money movement"
            )),
            StoreError::BalanceLimitExceeded => ApiError::BalanceLimitExceeded,
            StoreError::RecipientNotFound => ApiError::RecipientNotFound,
            StoreError::SelfTransfer => ApiError::SelfTransfer,
            // An authenticated user without an account means their session outlived them.
            StoreError::AccountNotFound => ApiError::InvalidToken,
            // The session of a money movement, checked in the movement's own step.
            StoreError::SessionNotLive => ApiError::InvalidToken,
            StoreError::Unavailable(source) => ApiError::ServiceUnavailable(source),
            StoreError::Internal(source) => ApiError::Internal(source),
        }
    }
}
