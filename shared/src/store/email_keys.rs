//! Email keys for users registered before uniqueness was by key (SQLite schema version 3,
//! PostgreSQL migration 7): SQL cannot fold case by Unicode's rules, so the migration reads every
//! user's address and writes back the key computed here.
//!
//! The stores' unique indexes on the key let any number of NULLs through, and NULL is what a
//! user gets whose key they cannot hold:
//! - the key is already held by an older account: both were registered while uniqueness was by
//!   the lower-cased address (`σας` and `σασ`). Both accounts go on working; the address stays
//!   taken through the older one.
//! - the key is longer than [`Email::MAX_KEY_CHARS`]: no new registration can have it, so there
//!   is nothing to hold.

use std::collections::HashMap;
use std::fmt::Display;

use crate::domain::{Email, email_key};

/// The keys to write: given every user's id and stored address, oldest account first, the
/// users that get a key, with it. The rest keep none (see the module documentation); each one
/// left out for an older holder is logged.
pub(crate) fn keys_to_backfill<Id: Display + Clone>(
    users: impl IntoIterator<Item = (Id, String)>,
) -> Vec<(Id, String)> {
    let mut holders: HashMap<String, Id> = HashMap::new();
    let mut keys = Vec::new();
    for (id, email) in users {
        let key = email_key(&email);
        if key.chars().count() > Email::MAX_KEY_CHARS {
            continue;
        }
        if let Some(holder) = holders.get(&key) {
            tracing::warn!(
                user_id = %id,
                holder = %holder,
                "an older account holds this user's email key; this one keeps none"
            );
            continue;
        }
        holders.insert(key.clone(), id.clone());
        keys.push((id, key));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_account_holds_a_shared_key_and_over_long_keys_are_left_out() {
        let too_long = format!("{}@example.com", "\u{FDFA}".repeat(15));
        let keys = keys_to_backfill([
            (1, "σας@example.com".to_owned()),
            (2, "bob@example.com".to_owned()),
            (3, "σασ@example.com".to_owned()),
            (4, too_long),
            (5, "straße@example.com".to_owned()),
        ]);
        assert_eq!(
            keys,
            [
                (1, "σασ@example.com".to_owned()),
                (2, "bob@example.com".to_owned()),
                (5, "strasse@example.com".to_owned()),
            ]
        );
    }
}
