//! `Idempotency-Key` values: 1–255 printable ASCII characters, scoped to the caller.

use sha2::{Digest, Sha256};

/// A validated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest allowed key, in characters (printable ASCII, so also bytes).
    pub const MAX_LEN: usize = 255;

    /// Validates the header's bytes.
    pub fn parse(raw: &[u8]) -> Result<IdempotencyKey, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "Idempotency-Key must be 1 to {} characters long.",
                Self::MAX_LEN
            ));
        }
        if !raw.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err("Idempotency-Key may contain only printable ASCII characters.".to_owned());
        }
        // Checked above: every byte is printable ASCII.
        Ok(IdempotencyKey(String::from_utf8_lossy(raw).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A digest of what a request asks for, so a reused key with a different request is told apart
/// from a retry of the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    /// Digests the operation name and its canonical parameters, every one present.
    pub fn of(parts: &[&str]) -> RequestFingerprint {
        Self::of_parts(parts.iter().map(|part| Some(*part)))
    }

    /// Digests parameters of which some are optional. Each present part is length-prefixed
    /// (keeping ("ab","c") and ("a","bc") apart); an absent one is a length no text can have,
    /// so "absent" differs from every string, the empty one included.
    pub fn of_parts<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> RequestFingerprint {
        let mut hasher = Sha256::new();
        for part in parts {
            match part {
                Some(text) => {
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
                None => hasher.update(u64::MAX.to_be_bytes()),
            }
        }
        let digest = hasher.finalize();
        RequestFingerprint(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Rebuilds a fingerprint read back from a store.
    pub fn from_stored(text: String) -> RequestFingerprint {
        RequestFingerprint(text)
    }

    /// The SHA-256 digest as 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_printable_ascii_up_to_255_are_accepted() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"order 42: retry #1 ~!").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }

    #[test]
    fn empty_long_and_non_printable_keys_are_rejected() {
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse(&[b'k'; 256]).is_err());
        assert!(IdempotencyKey::parse(b"tab\there").is_err());
        assert!(IdempotencyKey::parse("ключ".as_bytes()).is_err());
    }

    #[test]
    fn an_absent_part_differs_from_every_string() {
        let absent = RequestFingerprint::of_parts([Some("deposit"), Some("100"), None]);
        for text in ["", "\0", "\u{ffff}", "absent"] {
            assert_ne!(
                absent,
                RequestFingerprint::of_parts([Some("deposit"), Some("100"), Some(text)]),
                "{text:?}"
            );
        }
        assert_ne!(absent, RequestFingerprint::of(&["deposit", "100"]));
        assert_eq!(
            RequestFingerprint::of(&["deposit", "100", "rent"]),
            RequestFingerprint::of_parts([Some("deposit"), Some("100"), Some("rent")])
        );
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(
            RequestFingerprint::of(&["ab", "c"]),
            RequestFingerprint::of(&["a", "bc"])
        );
        assert_eq!(
            RequestFingerprint::of(&["deposit", "100"]),
            RequestFingerprint::of(&["deposit", "100"])
        );
    }
}
