//! The history read: one use case for a user's own history and an administrator's view of it,
//! served through the read-through cache ([`crate::cache`]).
//!
//! A request is checked in full first ([`HistoryQuery::check`]: the cursor against its kind and
//! subject), before anything is read or recorded. The read then takes the account's version —
//! from the caller's own authentication when it read the account anyway
//! ([`crate::service::auth::authenticate_with_account`]), else one strongly consistent point
//! read — and answers `If-None-Match` from the key alone, a cached page, or the store.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::app::App;
use crate::auth::CursorKind;
use crate::cache::{FillTimer, PageKey};
use crate::domain::{OperationKind, Timestamp, UserId};
use crate::error::ApiError;
use crate::store::{self, Account, Operation};

/// A history page request as the client wrote it (the cursor is still its text: it is bound to
/// the user and checked by [`HistoryQuery::check`]).
#[derive(Debug, Clone, Default)]
pub struct HistoryRequest {
    /// Page size, 1–100.
    pub limit: u32,
    /// Cursor text from a previous page.
    pub cursor: Option<String>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<OperationKind>,
    /// Only operations created at or after this moment.
    pub since: Option<Timestamp>,
    /// Only operations created at or before this moment.
    pub until: Option<Timestamp>,
}

/// One history page and the cursor to the next.
#[derive(Debug, Clone)]
pub struct HistoryResult {
    /// The page's operations, newest first: at most `limit`, possibly fewer.
    pub operations: Vec<Operation>,
    /// Opaque cursor for the next page.
    pub next_cursor: Option<String>,
}

/// A history request checked in full: whose history, for whom (the cursor kind), and the
/// store's query with the cursor's position.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    kind: CursorKind,
    query: store::HistoryQuery,
}

impl HistoryQuery {
    /// Checks `request` for `subject`'s history read as `kind`: a cursor must be genuine, of
    /// this kind and for this account.
    pub fn check(
        app: &App,
        kind: CursorKind,
        subject: UserId,
        request: HistoryRequest,
    ) -> Result<HistoryQuery, ApiError> {
        let before_seq = request
            .cursor
            .as_deref()
            .map(|text| {
                app.signing()
                    .cursors
                    .decode_seq(kind, subject, text)
                    .ok_or_else(|| ApiError::field("cursor", "Invalid cursor."))
            })
            .transpose()?;
        Ok(HistoryQuery {
            kind,
            query: store::HistoryQuery {
                user: subject,
                limit: request.limit,
                before_seq,
                kinds: request.kinds,
                since: request.since,
                until: request.until,
            },
        })
    }

    /// Whose history this is.
    pub fn subject(&self) -> UserId {
        self.query.user
    }
}

/// Where a page came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client's `If-None-Match` names the current page: no body.
    NotModified,
    /// The rendered page, from the cache.
    Hit(Bytes),
    /// The rendered page, read from the store (and now cached).
    Miss(Bytes),
}

/// A history read's answer: the page's entity tag and where the page came from.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    /// The `ETag`: changes whenever the account or the query does.
    pub etag: String,
    /// The page, or that the client's copy is current.
    pub outcome: Outcome,
}

/// Renders a page as the client receives it; the cache keeps the rendering.
pub type Render = fn(&HistoryResult) -> Result<Bytes, ApiError>;

/// Reads the page `query` names, reading the account's version first.
pub async fn read(
    app: &App,
    query: &HistoryQuery,
    if_none_match: Option<&str>,
    render: Render,
) -> Result<HistoryRead, ApiError> {
    let account = app.store.account(query.subject()).await?;
    read_at(app, query, account, if_none_match, render).await
}

/// Reads the page `query` names for the account as already read (strongly consistent) with
/// the caller's session.
pub async fn read_at(
    app: &App,
    query: &HistoryQuery,
    account: Option<Account>,
    if_none_match: Option<&str>,
    render: Render,
) -> Result<HistoryRead, ApiError> {
    let version = match account {
        Some(account) => account.version,
        // The caller's own account is gone: their token speaks for no one.
        None if query.kind == CursorKind::History => return Err(ApiError::InvalidToken),
        None => return Err(ApiError::NotFound),
    };
    let key = PageKey::new(
        version,
        &query.query,
        query.kind as u8,
        app.signing().cursors.fingerprint(),
    );
    let etag = key.etag();
    let stats = &app.cache_stats;
    if if_none_match.is_some_and(|v| key.matches(v)) {
        stats.not_modified.fetch_add(1, Ordering::Relaxed);
        return Ok(HistoryRead {
            etag,
            outcome: Outcome::NotModified,
        });
    }
    let cache_key = key.cache_key();
    match app.cache.get(&cache_key).await {
        Ok(Some(body)) => {
            stats.hits.fetch_add(1, Ordering::Relaxed);
            log_cache_counters(app);
            return Ok(HistoryRead {
                etag,
                outcome: Outcome::Hit(body),
            });
        }
        Ok(None) => {}
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, cache = app.cache.kind(), "history cache unavailable; reading the store");
        }
    }
    let timer = FillTimer::start();
    let page = page(app, query).await?;
    let body = render(&page)?;
    if let Err(e) = app.cache.put(&cache_key, body.clone()).await {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, cache = app.cache.kind(), "could not fill the history cache");
    }
    timer.finish(stats);
    log_cache_counters(app);
    Ok(HistoryRead {
        etag,
        outcome: Outcome::Miss(body),
    })
}

/// One page from the store; the next cursor is of the query's kind.
async fn page(app: &App, query: &HistoryQuery) -> Result<HistoryResult, ApiError> {
    let page = app.store.history(&query.query).await?;
    let user = query.subject();
    Ok(HistoryResult {
        operations: page.operations,
        next_cursor: page.next_before.map(|seq| {
            app.signing()
                .cursors
                .encode_position(query.kind, user, &seq.to_be_bytes())
        }),
    })
}

/// Every 100th history read logs the cache counters.
fn log_cache_counters(app: &App) {
    let stats = &app.cache_stats;
    let hits = stats.hits.load(Ordering::Relaxed);
    let misses = stats.misses.load(Ordering::Relaxed);
    if (hits + misses).is_multiple_of(100) {
        tracing::info!(
            cache = app.cache.kind(),
            hits,
            misses,
            errors = stats.errors.load(Ordering::Relaxed),
            not_modified = stats.not_modified.load(Ordering::Relaxed),
            mean_fill_us = stats.mean_fill_micros(),
            "history cache counters"
        );
    }
}
