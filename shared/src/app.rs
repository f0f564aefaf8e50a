//! The application state every use case takes, built once per process (per Lambda cold start):
//! configuration, store, keys, clock, history cache. It names the store and the cache by their
//! traits only; which backends exist and how one is chosen is start-up's business
//! ([`crate::startup`]).

use std::sync::Arc;

use crate::auth::{CursorCodec, PasswordHasher, TokenService};
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
    pub(crate) tokens: TokenService,
    pub(crate) cursors: CursorCodec,
    pub(crate) passwords: PasswordHasher,
}

impl App {
    /// Replaces the history cache (tests, benchmarks).
    pub fn with_cache(mut self, cache: Arc<dyn HistoryCache>) -> App {
        self.cache = cache;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> App {
        self.clock = clock;
        self
    }
}
