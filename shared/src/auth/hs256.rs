//! HS256, and no other algorithm, as `jsonwebtoken`'s cryptography: its `rust_crypto` backend
//! would link RSA, ECDSA and Ed25519 into every function that checks a token, for algorithms
//! this service refuses anyway. HMAC-SHA-256 comes from the `hmac` and `sha2` crates.
//!
//! A keyed HMAC state costs two SHA-256 blocks to set up; the last few keys' states are kept
//! per thread, so verifying a token hashes only the token.

use std::cell::RefCell;

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The provider: HS256 signers and verifiers; any other algorithm is refused.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes [`PROVIDER`] `jsonwebtoken`'s for this process (once; later calls do nothing).
pub(super) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already, which can only be this one.
        let _ = PROVIDER.install_default();
    });
}

/// Keyed states kept per thread: the current and previous key, with room to spare.
const KEPT: usize = 4;

thread_local! {
    static KEYED: RefCell<Vec<(Vec<u8>, HmacSha256)>> = const { RefCell::new(Vec::new()) };
}

/// The HMAC state keyed with `key`.
fn keyed(key: &[u8]) -> Result<HmacSha256> {
    KEYED.with(|kept| {
        let mut kept = kept.borrow_mut();
        if let Some((_, mac)) = kept.iter().find(|(k, _)| k.as_slice() == key) {
            return Ok(mac.clone());
        }
        let mac = HmacSha256::new_from_slice(key).map_err(|_| ErrorKind::InvalidKeyFormat)?;
        if kept.len() == KEPT {
            kept.remove(0);
        }
        kept.push((key.to_vec(), mac.clone()));
        Ok(mac)
    })
}

struct Hs256(HmacSha256);

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant time.
        mac.verify_slice(tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    match algorithm {
        Algorithm::HS256 => Ok(Box::new(Hs256(keyed(key.as_bytes())?))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match algorithm {
        Algorithm::HS256 => Ok(Box::new(Hs256(keyed(key.try_get_as_bytes()?)?))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_rfc_4231_and_verifies_only_the_same_tag() {
        use signature::{Signer, Verifier};
        // RFC 4231, test case 2.
        let mac = Hs256(keyed(b"Jefe").unwrap());
        let tag = mac.try_sign(b"what do ya want for nothing?").unwrap();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(mac.verify(b"what do ya want for nothing?", &tag).is_ok());
        let mut forged = tag.clone();
        forged[0] ^= 1;
        assert!(
            mac.verify(b"what do ya want for nothing?", &forged)
                .is_err()
        );
        assert!(mac.verify(b"what do ya want for nothing!", &tag).is_err());
        // Another key, kept beside the first, signs differently.
        let other = Hs256(keyed(b"another key").unwrap());
        assert_ne!(other.try_sign(b"x").unwrap(), mac.try_sign(b"x").unwrap());
    }

    #[test]
    fn other_algorithms_are_refused() {
        let key = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        for algorithm in [
            Algorithm::HS384,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            assert!(verifier(&algorithm, &key).is_err(), "{algorithm:?}");
        }
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        assert!(signer(&Algorithm::HS512, &key).is_err());
    }
}
