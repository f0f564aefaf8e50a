//! Email addresses: validated, stored lower-cased, unique.

use email_address::{EmailAddress, Options};
use serde::{Serialize, Serializer};
use std::fmt;

/// A valid email address, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    /// Validates and lower-cases an address, returning the client-facing message on failure.
    pub fn parse(text: &str) -> Result<Email, String> {
        const INVALID: &str = "Enter a valid email address.";
        if text.len() > Self::MAX_LEN {
            return Err(format!(
                "Ensure this field has no more than {} characters.",
                Self::MAX_LEN
            ));
        }
        let lowered = text.to_lowercase();
        // Display names (`Bob <bob@x.org>`), address literals and bare local domains are not
        // addresses a user registers with; require a dotted domain like Django's EmailValidator.
        let options = Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        let parsed =
            EmailAddress::parse_with_options(&lowered, options).map_err(|_| INVALID.to_owned())?;
        if parsed.as_str() != lowered || lowered.ends_with('.') {
            return Err(INVALID.to_owned());
        }
        Ok(Email(lowered))
    }

    /// The address, lower-cased.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@` (the password policy compares against it).
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stored_lower_cased() {
        assert_eq!(
            Email::parse("Alice.Smith@Example.COM").unwrap().as_str(),
            "alice.smith@example.com"
        );
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "Alice <alice@example.com>",
            "alice@example.com.",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
