//! Password hashing: argon2id at OWASP's parameters, off the async executor.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// OWASP's argon2id recommendation: m=19456 KiB, t=2, p=1.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// A hash of a random password nobody knows, with the same parameters as real hashes: verifying
/// against it when the username does not exist takes as long as a real check, so response times
/// do not reveal which usernames exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$lw8HVkoW97RGllYVbXa6gQ$648CjPpptJO7GFbihlg4YFH5pKVHurrFmsB/zSQrI1E";

/// Hashes and verifies passwords on the blocking pool, a bounded number at a time (each needs
/// 19 MiB; a login flood must not exhaust memory).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// One concurrent hash per available core.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    fn argon2() -> Result<Argon2<'static>, ApiError> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(ApiError::internal)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes a new password into a PHC string.
    #[tracing::instrument(skip_all)]
    pub async fn hash(&self, password: SecretString) -> Result<String, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            Self::argon2()?
                .hash_password(password.expose_secret().as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| ApiError::internal(e.to_string()))
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Verifies a password against a stored hash, or against the dummy hash when there is no
    /// user, so both paths cost the same. Only `true` for a real hash that matches.
    #[tracing::instrument(skip_all)]
    pub async fn verify(&self, password: SecretString, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let Ok(argon2) = Self::argon2() else {
                return false;
            };
            let (target, real) = match &hash {
                Some(h) => (h.as_str(), true),
                None => (DUMMY_HASH, false),
            };
            let ok = argon2
                .verify_password(password.expose_secret().as_bytes(), target)
                .is_ok();
            ok && real
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_at_owasp_strength_and_verifies_only_its_password() {
        let hasher = PasswordHasher::new();
        let hash = hasher
            .hash(SecretString::from("Vt8#qLm2!zRw".to_owned()))
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify(
                    SecretString::from("Vt8#qLm2!zRw".to_owned()),
                    Some(hash.clone())
                )
                .await
        );
        assert!(
            !hasher
                .verify(SecretString::from("Vt8#qLm2!zRx".to_owned()), Some(hash))
                .await
        );
    }

    #[tokio::test]
    async fn the_dummy_hash_never_verifies_and_uses_the_same_parameters() {
        assert!(DUMMY_HASH.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let hasher = PasswordHasher::new();
        assert!(
            !hasher
                .verify(SecretString::from("anything".to_owned()), None)
                .await
        );
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_fails_closed() {
        let hasher = PasswordHasher::new();
        assert!(
            !hasher
                .verify(
                    SecretString::from("x".to_owned()),
                    Some("not a hash".into())
                )
                .await
        );
    }
}
