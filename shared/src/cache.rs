//! The cached read path for history: read-through, keyed by account version, never stale.
//!
//! Every change to an account bumps its version in the same atomic write. A history read first
//! fetches the current version (one strongly consistent point read), then looks up a key made
//! of the user, that version, the whole query and the fingerprint of the key that signs the
//! page's cursors. A hit is therefore exactly as fresh as the
//! store: any write since the page was cached changed the version, so it changed the key.
//! Nothing is ever invalidated; old entries simply stop being asked for and age out.
//!
//! Two implementations: in-process ([`MemoryCache`], `moka`, bounded by bytes and TTL — what a
//! warm Lambda container keeps between invocations) and `RedisCache` (shared by every
//! container, pooled). A Redis that is down or slow costs at most its timeout, after which reads
//! skip it for a moment; reads always fall back to the store and never fail because of the
//! cache.

use std::fmt;
#[cfg(feature = "redis")]
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::Source;

#[cfg(feature = "redis")]
use crate::domain::Timestamp;
use crate::store::HistoryQuery;

/// How long Redis is skipped after a failure before it is tried again.
#[cfg(feature = "redis")]
const REDIS_BACKOFF: Duration = Duration::from_secs(1);

/// Why the cache could not answer (only logged; reads go on to the store).
#[derive(Debug, thiserror::Error)]
#[error("history cache: {context}{}", source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct CacheError {
    context: String,
    #[source]
    source: Option<Source>,
}

impl CacheError {
    /// The configuration asks for a cache this build cannot provide.
    pub fn unsupported(why: &str) -> CacheError {
        CacheError {
            context: why.to_owned(),
            source: None,
        }
    }
}

/// A byte cache for rendered history pages.
#[async_trait]
pub trait HistoryCache: Send + Sync + fmt::Debug + 'static {
    /// The value under `key`, if cached.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Stores `value` under `key`.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError>;
    /// `memory` or `redis`, for logs.
    fn kind(&self) -> &'static str;
}

/// The cache key (and entity tag) of one page of one user's history at one account version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    digest: String,
    version: u64,
}

impl PageKey {
    /// Derives the key from everything the page depends on.
    /// `audience` separates pages whose bodies differ for the same data (an administrator's
    /// copy of a page carries cursors of another kind than the user's own). `signer` is the
    /// fingerprint of the key that signs the page's `next_cursor`
    /// ([`crate::auth::CursorCodec::fingerprint`], never the key): after a key rotation, or
    /// between two deployments sharing one cache, a page never hands out a cursor that this
    /// process would refuse, and an `ETag` issued under the old key no longer matches.
    pub fn new(version: u64, query: &HistoryQuery, audience: u8, signer: &str) -> PageKey {
        let user = query.user;
        let mut kinds: Vec<&str> = query.kinds.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        let canonical = format!(
            "v2|{signer}|{audience}|{user}|{version}|{}|{}|{}|{}|{}",
            query.limit,
            query.before_seq.map_or_else(String::new, |b| b.to_string()),
            kinds.join(","),
            query
                .since
                .map_or_else(String::new, |t| t.millis().to_string()),
            query
                .until
                .map_or_else(String::new, |t| t.millis().to_string()),
        );
        let digest = Sha256::digest(canonical.as_bytes());
        PageKey {
            digest: digest.iter().take(16).map(|b| format!("{b:02x}")).collect(),
            version,
        }
    }

    /// The storage key.
    pub fn cache_key(&self) -> String {
        format!("h:{}", self.digest)
    }

    /// The `ETag` header value: changes whenever the account or the query does.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.version, &self.digest[..16])
    }

    /// Whether an `If-None-Match` header value names this page.
    pub fn matches(&self, if_none_match: &str) -> bool {
        let etag = self.etag();
        if_none_match.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate == etag || candidate.strip_prefix("W/") == Some(&etag)
        })
    }
}

/// What the read path did, counted.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Pages served from the cache.
    pub hits: AtomicU64,
    /// Pages read from the store.
    pub misses: AtomicU64,
    /// Cache failures (each fell back to the store).
    pub errors: AtomicU64,
    /// `304 Not Modified` answers.
    pub not_modified: AtomicU64,
    /// Total time spent filling the cache after misses (store read + render + put), µs.
    pub fill_micros: AtomicU64,
}

impl CacheStats {
    /// Records a miss that took `elapsed` to fill.
    pub fn record_fill(&self, elapsed: Duration) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.fill_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Mean fill latency so far, µs.
    pub fn mean_fill_micros(&self) -> u64 {
        let misses = self.misses.load(Ordering::Relaxed);
        self.fill_micros
            .load(Ordering::Relaxed)
            .checked_div(misses)
            .unwrap_or(0)
    }
}

/// The in-process cache.
#[derive(Debug)]
pub struct MemoryCache {
    inner: moka::future::Cache<String, Bytes>,
}

impl MemoryCache {
    /// Bounded by total bytes and by age.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .weigher(|k: &String, v: &Bytes| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .max_capacity(max_bytes)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl HistoryCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.inner.get(key).await)
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError> {
        self.inner.insert(key.to_owned(), value).await;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// The shared cache in Redis, through a connection pool, every call bounded by a timeout.
#[cfg(feature = "redis")]
pub struct RedisCache {
    pool: deadpool_redis::Pool,
    prefix: String,
    timeout: Duration,
    ttl_seconds: u64,
    /// Unix millis until which Redis is skipped after a failure.
    skip_until: AtomicI64,
}

#[cfg(feature = "redis")]
impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
impl RedisCache {
    /// A pool for `url` (nothing connects until first use). Keys get `prefix`.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        ttl: Duration,
    ) -> Result<RedisCache, CacheError> {
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool_config = deadpool_redis::PoolConfig::new(16);
        pool_config.timeouts.wait = Some(timeout);
        pool_config.timeouts.create = Some(timeout);
        pool_config.timeouts.recycle = Some(timeout);
        config.pool = Some(pool_config);
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| CacheError {
                context: "invalid REDIS_URL".into(),
                source: Some(e.into()),
            })?;
        Ok(RedisCache {
            pool,
            prefix: prefix.to_owned(),
            timeout,
            ttl_seconds: ttl.as_secs().max(1),
            skip_until: AtomicI64::new(0),
        })
    }

    fn skipping(&self) -> bool {
        Timestamp::now().millis() < self.skip_until.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, e: Source) -> CacheError {
        let until = Timestamp::now().millis() + REDIS_BACKOFF.as_millis() as i64;
        self.skip_until.store(until, Ordering::Relaxed);
        CacheError {
            context: format!("redis {what}"),
            source: Some(e),
        }
    }

    async fn run<T>(
        &self,
        what: &str,
        command: impl AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        if self.skipping() {
            return Err(CacheError {
                context: "redis skipped after a recent failure".into(),
                source: None,
            });
        }
        let attempt = async {
            let mut conn = self.pool.get().await.map_err(Source::from)?;
            command(&mut conn).await.map_err(Source::from)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(what, e)),
            Err(_) => Err(self.failed(what, format!("no answer within {:?}", self.timeout).into())),
        }
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl HistoryCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let key = format!("{}{key}", self.prefix);
        let value: Option<Vec<u8>> = self
            .run("GET", async |conn| {
                redis::cmd("GET").arg(&key).query_async(conn).await
            })
            .await?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CacheError> {
        let key = format!("{}{key}", self.prefix);
        self.run("SET", async |conn| {
            redis::cmd("SET")
                .arg(&key)
                .arg(value.as_ref())
                .arg("EX")
                .arg(self.ttl_seconds)
                .query_async::<()>(conn)
                .await
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// Times a fill and records it.
pub struct FillTimer(Instant);

impl FillTimer {
    /// Starts timing a fill of the cache.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Stops and records.
    pub fn finish(self, stats: &CacheStats) {
        stats.record_fill(self.0.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OperationKind, Timestamp, UserId};

    const SIGNER: &str = "0123456789abcdef";

    fn query(user: UserId, limit: u32) -> HistoryQuery {
        HistoryQuery {
            user,
            limit,
            before_seq: None,
            kinds: vec![],
            since: None,
            until: None,
        }
    }

    #[test]
    fn every_part_of_the_query_and_the_version_changes_the_key() {
        let user = UserId::new();
        let base = PageKey::new(7, &query(user, 20), 1, SIGNER);
        assert_eq!(base, PageKey::new(7, &query(user, 20), 1, SIGNER));
        assert_ne!(base, PageKey::new(8, &query(user, 20), 1, SIGNER));
        assert_ne!(base, PageKey::new(7, &query(UserId::new(), 20), 1, SIGNER));
        assert_ne!(base, PageKey::new(7, &query(user, 21), 1, SIGNER));
        let mut q = query(user, 20);
        q.before_seq = Some(5);
        assert_ne!(base, PageKey::new(7, &q, 1, SIGNER));
        let mut q = query(user, 20);
        q.kinds = vec![OperationKind::Deposit];
        assert_ne!(base, PageKey::new(7, &q, 1, SIGNER));
        let mut q = query(user, 20);
        q.since = Some(Timestamp::from_millis(1));
        assert_ne!(base, PageKey::new(7, &q, 1, SIGNER));
        assert_ne!(base, PageKey::new(7, &query(user, 20), 2, SIGNER));
    }

    #[test]
    fn pages_signed_with_another_key_have_another_key_and_etag() {
        let user = UserId::new();
        let page = PageKey::new(7, &query(user, 20), 1, SIGNER);
        let other = PageKey::new(7, &query(user, 20), 1, "fedcba9876543210");
        assert_ne!(page.cache_key(), other.cache_key());
        assert_ne!(page.etag(), other.etag());
        assert!(!other.matches(&page.etag()));
        let rotated = crate::auth::CursorCodec::new([2; 32]);
        let original = crate::auth::CursorCodec::new([1; 32]);
        assert_ne!(
            PageKey::new(7, &query(user, 20), 1, original.fingerprint()),
            PageKey::new(7, &query(user, 20), 1, rotated.fingerprint()),
        );
    }

    #[test]
    fn kind_order_does_not_matter() {
        let user = UserId::new();
        let (mut qa, mut qb) = (query(user, 5), query(user, 5));
        qa.kinds = vec![OperationKind::Deposit, OperationKind::Withdrawal];
        qb.kinds = vec![OperationKind::Withdrawal, OperationKind::Deposit];
        assert_eq!(
            PageKey::new(1, &qa, 1, SIGNER),
            PageKey::new(1, &qb, 1, SIGNER)
        );
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let key = PageKey::new(3, &query(UserId::new(), 20), 1, SIGNER);
        let etag = key.etag();
        assert!(key.matches(&etag));
        assert!(key.matches(&format!("\"other\", {etag}")));
        assert!(key.matches(&format!("W/{etag}")));
        assert!(key.matches("*"));
        assert!(!key.matches("\"other\""));
    }

    #[tokio::test]
    async fn the_memory_cache_keeps_what_it_is_given() {
        let cache = MemoryCache::new(1024 * 1024, Duration::from_secs(60));
        assert_eq!(cache.get("a").await.unwrap(), None);
        cache.put("a", Bytes::from_static(b"page")).await.unwrap();
        assert_eq!(
            cache.get("a").await.unwrap(),
            Some(Bytes::from_static(b"page"))
        );
    }
}
