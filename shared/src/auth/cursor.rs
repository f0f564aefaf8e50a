//! Cursors: opaque, URL-safe, signed, and bound to what they page through.
//!
//! Layout before encoding: version (1 byte) ‖ kind (1) ‖ subject id (16) ‖ position (the rest,
//! up to 200 bytes) ‖ HMAC-SHA256 tag truncated to 16 bytes, all base64url without padding
//! (`A-Z a-z 0-9 - _`). The kind keeps a cursor from one listing out of every other; the
//! subject is the user the cursor was issued to (or, for an administrator's view of someone's
//! history, that account).
//!
//! During a key rotation a cursor signed with the previous key is still accepted (a client
//! paging through history when the key changes goes on undisturbed); new cursors are signed
//! with the current key. After the next rotation the older key's cursors are refused like any
//! forged one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::UserId;

const VERSION: u8 = 2;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 1 + 16;
const MAX_POSITION: usize = 200;

/// What a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CursorKind {
    /// A user's own history.
    History = 1,
    /// An administrator's view of a user's history.
    AdminHistory = 2,
    /// The administrators' user list.
    Users = 3,
    /// The audit trail.
    Audit = 4,
}

/// Signs and checks cursors with a derived key.
#[derive(Clone)]
pub struct CursorCodec {
    key: [u8; 32],
    previous: Option<[u8; 32]>,
    fingerprint: String,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec([REDACTED])")
    }
}

impl CursorCodec {
    /// From a derived 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        Self::with_previous(key, None)
    }

    /// From the current derived key, which signs, and the previous one, which still verifies.
    pub fn with_previous(key: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        let mut codec = Self {
            key,
            previous: previous.filter(|p| *p != key),
            fingerprint: String::new(),
        };
        // A MAC of a constant: it names the key without revealing anything of it.
        let tag = codec
            .tag(b"lighttech/cursor-key-fingerprint")
            .finalize()
            .into_bytes();
        codec.fingerprint = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        codec
    }

    /// Names the signing key (16 hex digits; the key cannot be recovered from it). Whatever
    /// stores cursors signed with this key — the cached history pages — is keyed by it too, so
    /// after a key rotation, or with two deployments sharing one cache, no page hands out
    /// cursors another key signed.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn tag(&self, body: &[u8]) -> Hmac<Sha256> {
        tag_with(&self.key, body)
    }

    /// A cursor of `kind` for `subject` resuming at `position` (at most 200 bytes).
    pub fn encode_position(&self, kind: CursorKind, subject: UserId, position: &[u8]) -> String {
        let position = &position[..position.len().min(MAX_POSITION)];
        let mut bytes = Vec::with_capacity(HEADER_LEN + position.len() + TAG_LEN);
        bytes.push(VERSION);
        bytes.push(kind as u8);
        bytes.extend_from_slice(subject.0.as_bytes());
        bytes.extend_from_slice(position);
        let tag = self.tag(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position inside a cursor, if it is genuine, of this kind and for this subject.
    pub fn decode_position(
        &self,
        kind: CursorKind,
        subject: UserId,
        cursor: &str,
    ) -> Option<Vec<u8>> {
        if cursor.len() > (HEADER_LEN + MAX_POSITION + TAG_LEN) * 4 / 3 + 4 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if bytes.len() < HEADER_LEN + TAG_LEN || bytes[0] != VERSION {
            return None;
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let genuine = |key: &[u8; 32]| tag_with(key, body).verify_truncated_left(tag).is_ok();
        if !genuine(&self.key) && !self.previous.as_ref().is_some_and(genuine) {
            return None;
        }
        if body[1] != kind as u8 || &body[2..18] != subject.0.as_bytes() {
            return None;
        }
        Some(body[HEADER_LEN..].to_vec())
    }

    /// A history cursor for `user` that resumes below `before_seq`.
    pub fn encode(&self, user: UserId, before_seq: u64) -> String {
        self.encode_position(CursorKind::History, user, &before_seq.to_be_bytes())
    }

    /// The position inside a history cursor, if it is genuine and was issued to `user`.
    pub fn decode(&self, user: UserId, cursor: &str) -> Option<u64> {
        self.decode_seq(CursorKind::History, user, cursor)
    }

    /// A numeric position of a cursor of `kind`.
    pub fn decode_seq(&self, kind: CursorKind, subject: UserId, cursor: &str) -> Option<u64> {
        let position = self.decode_position(kind, subject, cursor)?;
        Some(u64::from_be_bytes(position.as_slice().try_into().ok()?))
    }
}

fn tag_with(key: &[u8; 32], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    mac
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

    #[test]
    fn a_cursor_of_the_previous_key_is_accepted_until_the_next_rotation() {
        let alice = UserId::new();
        let old = CursorCodec::new([6; 32]).encode(alice, 42);
        let rotated = CursorCodec::with_previous([7; 32], Some([6; 32]));
        assert_eq!(rotated.decode(alice, &old), Some(42));
        assert_eq!(
            rotated.decode(UserId::new(), &old),
            None,
            "still bound to its user"
        );
        let new = rotated.encode(alice, 41);
        assert_eq!(
            codec().decode(alice, &new),
            Some(41),
            "signed with the current key"
        );
        assert_eq!(
            rotated.fingerprint(),
            codec().fingerprint(),
            "names the current key"
        );
        let again = CursorCodec::with_previous([8; 32], Some([7; 32]));
        assert_eq!(again.decode(alice, &old), None, "the oldest key is retired");
        assert_eq!(again.decode(alice, &new), Some(41));
    }

    #[test]
    fn the_fingerprint_names_the_key_without_revealing_it() {
        let key = [7; 32];
        let fingerprint = codec().fingerprint().to_owned();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(CursorCodec::new(key).fingerprint(), fingerprint, "stable");
        assert_ne!(CursorCodec::new([8; 32]).fingerprint(), fingerprint);
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!key_hex.contains(&fingerprint));
        assert!(!format!("{:?}", codec()).contains(&fingerprint));
    }

    #[test]
    fn a_cursor_of_one_kind_is_not_a_cursor_of_another() {
        let user = UserId::new();
        let c = codec().encode_position(CursorKind::Users, user, b"alice");
        assert_eq!(
            codec().decode_position(CursorKind::Users, user, &c),
            Some(b"alice".to_vec())
        );
        assert_eq!(codec().decode_position(CursorKind::Audit, user, &c), None);
        assert_eq!(codec().decode(user, &c), None);
        let long = codec().encode_position(CursorKind::Users, user, &[b'x'; 200]);
        assert_eq!(
            codec().decode_position(CursorKind::Users, user, &long),
            Some(vec![b'x'; 200])
        );
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
