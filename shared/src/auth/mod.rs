//! Authentication building blocks: password hashing, tokens, signed cursors, key derivation.

mod cursor;
mod hs256;
pub mod key_file;
mod keys;
mod password;
mod tokens;

pub use cursor::{CursorCodec, CursorKind};
pub use keys::{KeySource, Keyring, REREAD_INTERVAL_SECONDS, Signing};
pub use password::PasswordHasher;
pub use tokens::{
    KID_LEN, LEEWAY_SECONDS, TokenError, TokenService, TokenType, VerifiedToken, key_id,
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::SecretKey;

/// Derives an independent 32-byte key for one purpose from the configured secret, so a key
/// used for cursors can never verify a token and the reverse.
pub fn derive_key(secret: &SecretKey, purpose: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(b"lighttech/");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}
