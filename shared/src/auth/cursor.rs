//! History cursors: opaque, URL-safe, signed, and bound to the user they were issued to.
//!
//! Layout before encoding: version (1 byte) ‖ user id (16) ‖ position (8, big-endian) ‖
//! HMAC-SHA256 tag truncated to 16 bytes, all base64url without padding (`A-Z a-z 0-9 - _`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::UserId;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 1 + 16 + 8;

/// Signs and checks cursors with a derived key.
#[derive(Clone)]
pub struct CursorCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec([REDACTED])")
    }
}

impl CursorCodec {
    /// From a derived 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(body);
        mac
    }

    /// A cursor for `user` that resumes below `before_seq`.
    pub fn encode(&self, user: UserId, before_seq: u64) -> String {
        let mut bytes = Vec::with_capacity(BODY_LEN + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(user.0.as_bytes());
        bytes.extend_from_slice(&before_seq.to_be_bytes());
        let tag = self.tag(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position inside a cursor, if it is genuine and was issued to `user`.
    pub fn decode(&self, user: UserId, cursor: &str) -> Option<u64> {
        if cursor.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if bytes.len() != BODY_LEN + TAG_LEN || bytes[0] != VERSION {
            return None;
        }
        let (body, tag) = bytes.split_at(BODY_LEN);
        self.tag(body).verify_truncated_left(tag).ok()?;
        if &body[1..17] != user.0.as_bytes() {
            return None;
        }
        Some(u64::from_be_bytes(body[17..25].try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codec() -> CursorCodec {
        CursorCodec::new([7; 32])
    }

    #[test]
    fn a_cursor_is_usable_only_by_its_user() {
        let alice = UserId::new();
        let bob = UserId::new();
        let c = codec().encode(alice, 42);
        assert_eq!(codec().decode(alice, &c), Some(42));
        assert_eq!(codec().decode(bob, &c), None);
    }

    #[test]
    fn a_cursor_signed_with_another_key_is_rejected() {
        let alice = UserId::new();
        let c = CursorCodec::new([8; 32]).encode(alice, 42);
        assert_eq!(codec().decode(alice, &c), None);
    }

    proptest! {
        #[test]
        fn cursors_are_url_safe_and_round_trip(seq in any::<u64>()) {
            let user = UserId::new();
            let c = codec().encode(user, seq);
            prop_assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(codec().decode(user, &c), Some(seq));
        }

        #[test]
        fn any_tampered_character_invalidates_the_cursor(seq in any::<u64>(), pos in 0usize..55, ch in "[A-Za-z0-9_-]") {
            let user = UserId::new();
            let c = codec().encode(user, seq);
            let mut chars: Vec<char> = c.chars().collect();
            let idx = pos % chars.len();
            let replacement = ch.chars().next().unwrap();
            prop_assume!(chars[idx] != replacement);
            chars[idx] = replacement;
            let tampered: String = chars.into_iter().collect();
            prop_assert_eq!(codec().decode(user, &tampered), None);
        }

        #[test]
        fn arbitrary_text_is_never_a_cursor(s in ".{0,80}") {
            prop_assert_eq!(codec().decode(UserId::new(), &s), None);
        }
    }
}
