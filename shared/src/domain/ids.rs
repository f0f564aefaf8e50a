//! Identifiers and timestamps.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        id_type!($(#[$doc])* $name, "A fresh random identifier (UUID version 4).", Uuid::new_v4);
    };
    ($(#[$doc:meta])* $name:ident, $new_doc:literal, $generate:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Uuid);

        impl $name {
            #[doc = $new_doc]
            pub fn new() -> Self {
                Self($generate())
            }

            /// Parses the canonical hyphenated form (what the API hands out).
            pub fn parse(text: &str) -> Option<Self> {
                Uuid::try_parse(text).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

id_type!(
    /// A user (and their one account).
    UserId
);
id_type!(
    /// A login session: one refresh-token chain.
    SessionId
);
// Operations are written at the highest rate, and every store keeps a unique index on their
// ids: time-ordered ids (UUID version 7: 48 bits of milliseconds, then 74 random bits) land
// next to each other in that index instead of on a random page each, so a commit of many
// operations dirties (and syncs) a few index pages rather than one per operation. The API
// promises only an opaque UUID; an operation's time is in its `created_at` anyway.
id_type!(
    /// One entry of an account's history.
    OperationId,
    "A fresh identifier ordered by creation time (UUID version 7).",
    Uuid::now_v7
);
id_type!(
    /// Links the two sides of a transfer.
    TransferId,
    "A fresh identifier ordered by creation time (UUID version 7).",
    Uuid::now_v7
);
id_type!(
    /// A token's own id (`jti`).
    TokenId
);

/// A point in time with millisecond precision, the precision the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (JWT `iat`/`exp`).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// `self + seconds`.
    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// Parses RFC 3339 (any offset), truncating to milliseconds.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self(t.timestamp_millis()))
    }

    /// RFC 3339 in UTC with milliseconds and `Z`: `2026-11-28T07:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_shown_in_utc_with_milliseconds_and_z() {
        let t = Timestamp::parse_rfc3339("2026-11-28T10:00:00.123456+03:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T07:00:00.123Z");
    }

    #[test]
    fn ids_parse_only_their_canonical_form() {
        let id = UserId::new();
        assert_eq!(UserId::parse(&id.to_string()), Some(id));
        assert_eq!(UserId::parse("not-a-uuid"), None);
    }
}
