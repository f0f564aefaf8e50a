//! Domain values, parsed at the edge: once constructed they cannot hold an invalid value.

/// A text value shown to clients as it is (a username, an address): the struct, documented by
/// `$doc`, with `as_str`, `Display` and a plain-string `Serialize`. Each type keeps its own
/// rules and constructors.
macro_rules! text_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The text, as validated.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

mod email;
mod idempotency;
mod ids;
mod money;
pub mod password;
mod username;

pub use email::{Email, email_key};
pub use idempotency::{IdempotencyKey, RequestFingerprint};
pub use ids::{OperationId, SessionId, Timestamp, TokenId, TransferId, UserId};
pub use money::Money;
pub use username::{Username, username_key};

use serde::Serialize;

/// The change one account can make alone: a transfer's two sides are made only by a transfer,
/// so a balance change cannot even name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Money paid in.
    Deposit,
    /// Money paid out, never below zero.
    Withdrawal,
}

impl ChangeKind {
    /// The kind of the operation the change records.
    pub fn operation_kind(self) -> OperationKind {
        match self {
            ChangeKind::Deposit => OperationKind::Deposit,
            ChangeKind::Withdrawal => OperationKind::Withdrawal,
        }
    }

    /// The wire and storage name (the operation kind's).
    pub fn as_str(self) -> &'static str {
        self.operation_kind().as_str()
    }
}

impl From<ChangeKind> for OperationKind {
    fn from(kind: ChangeKind) -> OperationKind {
        kind.operation_kind()
    }
}

/// What an operation did to its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Money the owner paid into the account.
    Deposit,
    /// Money the owner took out of the account.
    Withdrawal,
    /// The receiving side of a transfer.
    TransferIn,
    /// The sending side of a transfer.
    TransferOut,
}

impl OperationKind {
    /// Every kind, in the order docs/api.md lists them.
    pub const ALL: [OperationKind; 4] = [
        OperationKind::Deposit,
        OperationKind::Withdrawal,
        OperationKind::TransferIn,
        OperationKind::TransferOut,
    ];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Deposit => "deposit",
            OperationKind::Withdrawal => "withdrawal",
            OperationKind::TransferIn => "transfer_in",
            OperationKind::TransferOut => "transfer_out",
        }
    }

    /// Parses the wire and storage name.
    pub fn parse(text: &str) -> Option<OperationKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether the operation adds to the balance.
    pub fn is_credit(self) -> bool {
        matches!(self, OperationKind::Deposit | OperationKind::TransferIn)
    }
}
