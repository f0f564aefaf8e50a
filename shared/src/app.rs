//! The application state every use case takes, built once per process (per Lambda cold start):
//! configuration, store, keys, clock, history cache. It names the store and the cache by their
//! traits only; which backends exist and how one is chosen is start-up's business
//! ([`crate::startup`]).

use std::sync::Arc;

use crate::auth::{Keyring, PasswordHasher, Signing};
use crate::cache::{CacheStats, HistoryCache};
use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;

/// Everything a handler needs.
#[derive(Debug)]
pub struct App {
    /// The configuration read at start.
    pub config: Config,
    /// The store chosen by `DATABASE_URL`.
    pub store: Arc<dyn Store>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// The history cache `REDIS_URL` chose (in-process without it).
    pub cache: Arc<dyn HistoryCache>,
    /// What the history read path did.
    pub cache_stats: CacheStats,
    pub(crate) keys: Keyring,
    pub(crate) passwords: PasswordHasher,
}

impl App {
    /// Replaces the history cache (tests, benchmarks).
    pub fn with_cache(mut self, cache: Arc<dyn HistoryCache>) -> App {
        self.cache = cache;
        self
    }

    /// The keys that sign and verify tokens and cursors now.
    pub fn signing(&self) -> Arc<Signing> {
        self.keys.current()
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> App {
        self.clock = clock;
        self
    }

    /// Reads the keys again from `source` when a token names a key not known yet (at most
    /// once per [`crate::auth::REREAD_INTERVAL_SECONDS`], counted from now).
    pub fn with_key_source(mut self, source: Arc<dyn crate::auth::KeySource>) -> App {
        let now = self.clock.now();
        self.keys = self.keys.with_source(source, now);
        self
    }
}
