//! The one error type of the API: each variant is one row of the error table of docs/api.md
//! (Error codes).

use std::collections::BTreeMap;
use std::error::Error as StdError;

use crate::domain::Money;

/// Field name → messages, the `errors` member of a `validation_error`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one message for a field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// One field, one message.
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Whether any field has a message.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, the validation error otherwise.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }

    /// The map, for serialisation.
    pub fn as_map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }
}

/// A boxed source error kept for the log.
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

/// Every way a request can fail, one variant per row of docs/api.md's error table.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not valid JSON.
    #[error("body is not valid JSON")]
    InvalidJson,
    /// 400 `validation_error`: fields missing, malformed, out of range or unknown.
    #[error("validation failed: {0:?}")]
    Validation(FieldErrors),
    /// 401 `not_authenticated`: no or garbled Authorization header.
    #[error("not authenticated")]
    NotAuthenticated,
    /// 401 `invalid_token`: bad signature, algorithm, type, claims, expired, or revoked session.
    #[error("invalid token")]
    InvalidToken,
    /// 401 `token_reused`: a spent refresh token was presented; the session is now revoked.
    #[error("refresh token reused")]
    TokenReused,
    /// 401 `invalid_credentials`: login failed.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403 `forbidden`: authenticated but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 404 `not_found`: unknown route or resource.
    #[error("not found")]
    NotFound,
    /// 404 `recipient_not_found`: no active user with that username.
    #[error("recipient not found")]
    RecipientNotFound,
    /// 405 `method_not_allowed`, with the methods the route allows.
    #[error("method not allowed")]
    MethodNotAllowed(Vec<http::Method>),
    /// 409 `username_taken`.
    #[error("username taken")]
    UsernameTaken,
    /// 409 `email_taken`.
    #[error("email taken")]
    EmailTaken,
    /// 413 `payload_too_large`: body over 16 KiB.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`: body not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422 `insufficient_funds`.
    #[error("insufficient funds")]
    InsufficientFunds {
        /// The balance at the moment of the check.
        balance: Money,
        /// The amount asked for.
        amount: Money,
    },
    /// 422 `self_transfer`.
    #[error("self transfer")]
    SelfTransfer,
    /// 422 `balance_limit_exceeded`.
    #[error("balance limit exceeded")]
    BalanceLimitExceeded,
    /// 422 `idempotency_key_mismatch`.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyMismatch,
    /// 422 `self_deactivation`.
    #[error("self deactivation")]
    SelfDeactivation,
    /// 429 `rate_limited`, with the seconds until the window passes.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until another attempt is allowed.
        retry_after: u64,
    },
    /// 500 `internal_error`: the source goes to the log, never to the client.
    #[error("internal error")]
    Internal(#[source] Source),
    /// 503 `service_unavailable`: the store is unreachable or overloaded; nothing was applied.
    #[error("service unavailable")]
    ServiceUnavailable(#[source] Source),
}

impl ApiError {
    /// One error of every variant, for documentation and the tests that keep it complete.
    pub fn one_of_each() -> Vec<ApiError> {
        let all = vec![
            ApiError::InvalidJson,
            ApiError::Validation(FieldErrors::new()),
            ApiError::NotAuthenticated,
            ApiError::InvalidToken,
            ApiError::TokenReused,
            ApiError::InvalidCredentials,
            ApiError::Forbidden,
            ApiError::NotFound,
            ApiError::RecipientNotFound,
            ApiError::MethodNotAllowed(Vec::new()),
            ApiError::UsernameTaken,
            ApiError::EmailTaken,
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType,
            ApiError::InsufficientFunds {
                balance: Money::ZERO,
                amount: Money::ZERO,
            },
            ApiError::SelfTransfer,
            ApiError::BalanceLimitExceeded,
            ApiError::IdempotencyKeyMismatch,
            ApiError::SelfDeactivation,
            ApiError::RateLimited { retry_after: 1 },
            ApiError::Internal("example".into()),
            ApiError::ServiceUnavailable("example".into()),
        ];
        // Adding a variant without listing it above stops the build here.
        for e in &all {
            match e {
                ApiError::InvalidJson
                | ApiError::Validation(_)
                | ApiError::NotAuthenticated
                | ApiError::InvalidToken
                | ApiError::TokenReused
                | ApiError::InvalidCredentials
                | ApiError::Forbidden
                | ApiError::NotFound
                | ApiError::RecipientNotFound
                | ApiError::MethodNotAllowed(_)
                | ApiError::UsernameTaken
                | ApiError::EmailTaken
                | ApiError::PayloadTooLarge
                | ApiError::UnsupportedMediaType
                | ApiError::InsufficientFunds { .. }
                | ApiError::SelfTransfer
                | ApiError::BalanceLimitExceeded
                | ApiError::IdempotencyKeyMismatch
                | ApiError::SelfDeactivation
                | ApiError::RateLimited { .. }
                | ApiError::Internal(_)
                | ApiError::ServiceUnavailable(_) => {}
            }
        }
        all
    }

    /// Wraps an unexpected failure.
    pub fn internal(source: impl Into<Source>) -> Self {
        ApiError::Internal(source.into())
    }

    /// A validation error on a single field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(FieldErrors::single(field, message))
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidJson | ApiError::Validation(_) => 400,
            ApiError::NotAuthenticated
            | ApiError::InvalidToken
            | ApiError::TokenReused
            | ApiError::InvalidCredentials => 401,
            ApiError::Forbidden => 403,
            ApiError::NotFound | ApiError::RecipientNotFound => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UsernameTaken | ApiError::EmailTaken => 409,
            ApiError::PayloadTooLarge => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::InsufficientFunds { .. }
            | ApiError::SelfTransfer
            | ApiError::BalanceLimitExceeded
            | ApiError::IdempotencyKeyMismatch
            | ApiError::SelfDeactivation => 422,
            ApiError::RateLimited { .. } => 429,
            ApiError::Internal(_) => 500,
            ApiError::ServiceUnavailable(_) => 503,
        }
    }

    /// The machine-readable `code`.
    pub fn code(&self) -> &'static str {
        self.names().0
    }

    /// The short human-readable `title`.
    pub fn title(&self) -> &'static str {
        self.names().1
    }

    /// `code` and `title` side by side: one row per variant, so the two cannot drift apart.
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::InvalidJson => ("invalid_json", "Invalid JSON"),
            ApiError::Validation(_) => ("validation_error", "Validation error"),
            ApiError::NotAuthenticated => ("not_authenticated", "Not authenticated"),
            ApiError::InvalidToken => ("invalid_token", "Invalid token"),
            ApiError::TokenReused => ("token_reused", "Token reused"),
            ApiError::InvalidCredentials => ("invalid_credentials", "Invalid credentials"),
            ApiError::Forbidden => ("forbidden", "Forbidden"),
            ApiError::NotFound => ("not_found", "Not found"),
            ApiError::RecipientNotFound => ("recipient_not_found", "Recipient not found"),
            ApiError::MethodNotAllowed(_) => ("method_not_allowed", "Method not allowed"),
            ApiError::UsernameTaken => ("username_taken", "Username taken"),
            ApiError::EmailTaken => ("email_taken", "Email taken"),
            ApiError::PayloadTooLarge => ("payload_too_large", "Payload too large"),
            ApiError::UnsupportedMediaType => ("unsupported_media_type", "Unsupported media type"),
            ApiError::InsufficientFunds { .. } => ("insufficient_funds", "Insufficient funds"),
            ApiError::SelfTransfer => ("self_transfer", "Self transfer"),
            ApiError::BalanceLimitExceeded => ("balance_limit_exceeded", "Balance limit exceeded"),
            ApiError::IdempotencyKeyMismatch => {
                ("idempotency_key_mismatch", "Idempotency key mismatch")
            }
            ApiError::SelfDeactivation => ("self_deactivation", "Self deactivation"),
            ApiError::RateLimited { .. } => ("rate_limited", "Too many requests"),
            ApiError::Internal(_) => ("internal_error", "Internal server error"),
            ApiError::ServiceUnavailable(_) => ("service_unavailable", "Service unavailable"),
        }
    }

    /// The `detail`: one sentence for the client, never internals.
    pub fn detail(&self) -> String {
        match self {
            ApiError::InvalidJson => "The request body is not valid JSON.".into(),
            ApiError::Validation(_) => "One or more fields are invalid.".into(),
            ApiError::NotAuthenticated => "Authentication credentials were not provided.".into(),
            ApiError::InvalidToken => "The token is invalid, expired or revoked.".into(),
            ApiError::TokenReused => {
                "This refresh token was already used; the session has been revoked.".into()
            }
            ApiError::InvalidCredentials => {
                "No active account found with these credentials.".into()
            }
            ApiError::Forbidden => "You do not have permission to perform this action.".into(),
            ApiError::NotFound => "Not found.".into(),
            ApiError::RecipientNotFound => "No active user with this username.".into(),
            ApiError::MethodNotAllowed(_) => "Method not allowed on this resource.".into(),
            ApiError::UsernameTaken => "A user with that username already exists.".into(),
            ApiError::EmailTaken => "A user with that email already exists.".into(),
            ApiError::PayloadTooLarge => "The request body is larger than 16 KiB.".into(),
            ApiError::UnsupportedMediaType => "The request body must be application/json.".into(),
            ApiError::InsufficientFunds { balance, amount } => {
                format!("Balance {balance} is less than {amount}")
            }
            ApiError::SelfTransfer => "You cannot transfer money to yourself.".into(),
            ApiError::BalanceLimitExceeded => {
                format!("The resulting balance would exceed {}.", Money::MAX_BALANCE)
            }
            ApiError::IdempotencyKeyMismatch => {
                "This Idempotency-Key was already used with a different request.".into()
            }
            ApiError::SelfDeactivation => "You cannot deactivate yourself.".into(),
            ApiError::RateLimited { retry_after } => {
                format!("Too many failed attempts. Try again in {retry_after} seconds.")
            }
            ApiError::Internal(_) => "An unexpected error occurred.".into(),
            ApiError::ServiceUnavailable(_) => {
                "The service is temporarily unavailable; retry with the same Idempotency-Key."
                    .into()
            }
        }
    }
}
