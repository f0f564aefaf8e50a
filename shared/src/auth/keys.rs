//! The signing keys in use, and how a process learns of a rotation.
//!
//! Tokens and cursors are signed with keys derived from the current secret and still verified
//! with those of the previous one ([`KeySet`]). A process whose keys come from somewhere that
//! can change under it (Secrets Manager) holds a [`KeySource`]: when a token names a key it does
//! not know — signed by a process that has already seen a rotation — it reads the keys again,
//! at most once per [`REREAD_INTERVAL_SECONDS`], so processes converge soon after a rotation
//! and the normal path makes no network call.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{CursorCodec, TokenService, derive_key};
use crate::config::KeySet;
use crate::domain::Timestamp;

/// Shortest time between two reads of the key source.
pub const REREAD_INTERVAL_SECONDS: i64 = 30;

/// Everything signed with one key set.
#[derive(Debug)]
pub struct Signing {
    /// Signs and verifies access and refresh tokens (HS256, with a `kid` per key).
    pub tokens: TokenService,
    /// Paging cursors (and the fingerprint the history cache keys pages by).
    pub cursors: CursorCodec,
}

impl Signing {
    /// Derives the token and cursor keys of both keys of the set.
    pub fn new(keys: &KeySet, issuer: &str) -> Signing {
        let jwt_previous = keys.previous.as_ref().map(|p| derive_key(p, "jwt"));
        Signing {
            tokens: TokenService::with_previous(
                &derive_key(&keys.current, "jwt"),
                jwt_previous.as_ref().map(|k| k.as_slice()),
                issuer,
            ),
            cursors: CursorCodec::with_previous(
                derive_key(&keys.current, "cursor"),
                keys.previous.as_ref().map(|p| derive_key(p, "cursor")),
            ),
        }
    }
}

/// Where a key set can be read again.
#[async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The key set as it is now.
    async fn read(&self) -> Result<KeySet, String>;
}

/// The key set a process signs with, replaced when its source says it has changed.
#[derive(Debug)]
pub struct Keyring {
    signing: RwLock<Arc<Signing>>,
    issuer: String,
    source: Option<Arc<dyn KeySource>>,
    last_read: tokio::sync::Mutex<Option<Timestamp>>,
}

impl Keyring {
    /// Fixed keys (environment variables, a key file).
    pub fn new(keys: &KeySet, issuer: &str) -> Keyring {
        Keyring {
            signing: RwLock::new(Arc::new(Signing::new(keys, issuer))),
            issuer: issuer.to_owned(),
            source: None,
            last_read: tokio::sync::Mutex::new(None),
        }
    }

    /// Keys that can be read again from `source`, last read at `read_at`.
    pub fn with_source(mut self, source: Arc<dyn KeySource>, read_at: Timestamp) -> Keyring {
        self.source = Some(source);
        self.last_read = tokio::sync::Mutex::new(Some(read_at));
        self
    }

    /// The keys to sign and verify with now.
    pub fn current(&self) -> Arc<Signing> {
        Arc::clone(&self.signing.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the keys again from the source, unless there is none or the last read was less
    /// than [`REREAD_INTERVAL_SECONDS`] ago (concurrent callers wait for one read). A failed
    /// read keeps the keys in use. Returns whether the keys were read.
    pub async fn reread(&self, now: Timestamp) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|at| now.millis() - at.millis() < REREAD_INTERVAL_SECONDS * 1000) {
            return false;
        }
        *last = Some(now);
        match source.read().await {
            Ok(keys) => {
                let signing = Arc::new(Signing::new(&keys, &self.issuer));
                tracing::info!(
                    kid = signing.tokens.key_id(),
                    previous_kid = signing.tokens.previous_key_id(),
                    "signing keys read again"
                );
                *self.signing.write().unwrap_or_else(|e| e.into_inner()) = signing;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the signing keys again; keeping those in use");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretKey;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Rotating {
        keys: Mutex<KeySet>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl KeySource for Rotating {
        async fn read(&self) -> Result<KeySet, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.keys.lock().unwrap().clone())
        }
    }

    fn key(byte: u8) -> SecretKey {
        SecretKey::new(vec![byte; 32]).unwrap()
    }

    #[tokio::test]
    async fn a_source_is_read_again_at_most_once_per_interval() {
        let start = Timestamp::now();
        let source = Arc::new(Rotating {
            keys: Mutex::new(KeySet::new(key(1), None)),
            reads: AtomicUsize::new(0),
        });
        let ring = Keyring::new(&KeySet::new(key(1), None), "lighttech")
            .with_source(source.clone(), start);
        let before = ring.current().tokens.key_id().to_owned();
        *source.keys.lock().unwrap() = KeySet::new(key(2), Some(key(1)));
        assert!(
            !ring.reread(start.plus_seconds(29)).await,
            "too soon after start"
        );
        assert_eq!(source.reads.load(Ordering::SeqCst), 0);
        assert!(ring.reread(start.plus_seconds(30)).await);
        let after = ring.current();
        assert_ne!(after.tokens.key_id(), before);
        assert_eq!(after.tokens.previous_key_id(), Some(before.as_str()));
        assert!(!ring.reread(start.plus_seconds(59)).await);
        assert!(ring.reread(start.plus_seconds(60)).await);
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
        let fixed = Keyring::new(&KeySet::new(key(1), None), "lighttech");
        assert!(!fixed.reread(start.plus_seconds(3600)).await, "no source");
    }
}
