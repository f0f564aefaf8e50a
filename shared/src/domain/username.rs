//! Usernames: 3–150 characters of `A-Z a-z 0-9 @ . + - _`, unique case-insensitively.

text_type!(
    Username,
    "A username that passed the rules of docs/api.md. Keeps the spelling the user chose."
);

impl Username {
    /// Shortest allowed username.
    pub const MIN_LEN: usize = 3;
    /// Longest allowed username.
    pub const MAX_LEN: usize = 150;

    /// Validates a username, returning the client-facing message on failure.
    pub fn parse(text: &str) -> Result<Username, String> {
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.+-_".contains(&b))
        {
            return Err(
                "Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."
                    .to_owned(),
            );
        }
        if text.len() < Self::MIN_LEN {
            return Err(format!(
                "Ensure this field has at least {} characters.",
                Self::MIN_LEN
            ));
        }
        if text.len() > Self::MAX_LEN {
            return Err(format!(
                "Ensure this field has no more than {} characters.",
                Self::MAX_LEN
            ));
        }
        Ok(Username(text.to_owned()))
    }

    /// The uniqueness key: usernames are unique case-insensitively.
    pub fn key(&self) -> String {
        username_key(&self.0)
    }
}

/// The case-insensitive lookup key for any username-like text (login and transfer recipients
/// use it before knowing whether the text is a valid username at all).
pub fn username_key(text: &str) -> String {
    text.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allowed_characters_and_lengths_are_accepted() {
        for ok in ["bob", "alice.smith+1@example-co_x", &"a".repeat(150)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn spaces_unicode_and_wrong_lengths_are_rejected() {
        for bad in [
            "ab",
            "",
            "bob smith",
            "bøb",
            "bob/1",
            "bob\n",
            &"a".repeat(151),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_uniqueness_key_ignores_case() {
        assert_eq!(
            Username::parse("Alice").unwrap().key(),
            Username::parse("aLICE").unwrap().key()
        );
    }

    proptest! {
        #[test]
        fn every_username_made_of_allowed_characters_parses(s in "[A-Za-z0-9@.+_-]{3,150}") {
            let parsed = Username::parse(&s).unwrap();
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }

        #[test]
        fn any_text_with_a_disallowed_character_is_rejected(a in "[a-z]{2,5}", c in "[^A-Za-z0-9@.+_-]", b in "[a-z]{0,5}") {
            let s = format!("{a}{c}{b}");
            prop_assert!(Username::parse(&s).is_err());
        }
    }
}
