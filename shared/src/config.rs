//! Typed configuration, read once from the environment at start.
//!
//! Every variable, its default and its meaning is listed in [`VARIABLES`] (docs/configuration.md's
//! table and `.env.example` are checked against it). A missing or invalid value fails the start
//! with a message naming the variable; nothing is read during a request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice};

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The environment variable's name, as documented in docs/configuration.md.
    pub name: &'static str,
    /// Default, or `None` when unset means "not used".
    pub default: Option<&'static str>,
    /// What it controls, one line for the documentation table.
    pub doc: &'static str,
}

/// Every variable the configuration reads.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "DATABASE_URL",
        default: Some("sqlite://./.lighttech/lighttech.db"),
        doc: "Which store to use: `sqlite://PATH` (embedded, the default), `postgres://USER:PASSWORD@HOST:PORT/DB` or `dynamodb://TABLE`",
    },
    Variable {
        name: "SQLITE_WRITE_BATCH",
        default: Some("64"),
        doc: "Embedded store: most writes committed together (one fsync per group; each is still durable before it is answered); 1 commits each alone",
    },
    Variable {
        name: "POSTGRES_TRANSFER_BATCH",
        default: Some("32"),
        doc: "PostgreSQL store: most transfers into one recipient applied together, in one transaction, while one into it is in flight; 1 applies each alone",
    },
    Variable {
        name: "LIGHTTECH_DATA_DIR",
        default: Some("./.lighttech"),
        doc: "Where the local server keeps its generated signing key (file `secret_key`); the SQLite file is wherever DATABASE_URL says",
    },
    Variable {
        name: "SECRET_KEY",
        default: None,
        doc: "JWT and cursor signing key, at least 32 bytes. Unset: the local server generates one into the data directory; Lambda functions refuse to start",
    },
    Variable {
        name: "SECRET_KEY_PREVIOUS",
        default: None,
        doc: "The signing key before the last rotation (needs SECRET_KEY): it no longer signs, but tokens, cursors and cached pages it signed stay valid, so a rotation logs no one out",
    },
    Variable {
        name: "SECRET_KEY_ARN",
        default: None,
        doc: "Secrets Manager secret (ARN or name) holding the signing key, used when SECRET_KEY is unset: its AWSCURRENT version signs, its AWSPREVIOUS version still verifies; read at start, and again (at most every 30 s) when a token names a key not known yet",
    },
    Variable {
        name: "AWS_REGION",
        default: None,
        doc: "AWS region for DynamoDB and Secrets Manager (read by the AWS SDK, like the rest of its standard environment)",
    },
    Variable {
        name: "AWS_ENDPOINT_URL",
        default: None,
        doc: "Send AWS calls to this endpoint instead (LocalStack, moto); read by the AWS SDK",
    },
    Variable {
        name: "ACCESS_TOKEN_LIFETIME_MINUTES",
        default: Some("10"),
        doc: "Access token lifetime",
    },
    Variable {
        name: "REFRESH_TOKEN_LIFETIME_MINUTES",
        default: Some("1440"),
        doc: "Refresh token (and idle session) lifetime",
    },
    Variable {
        name: "SESSION_MAX_LIFETIME_DAYS",
        default: Some("30"),
        doc: "Longest a session lives after its login, however recently it was refreshed (at least 1); refresh and access tokens never outlive it, so it should be at least the refresh token lifetime, which it cuts short otherwise",
    },
    Variable {
        name: "CURRENCY",
        default: Some("RUB"),
        doc: "ISO 4217 code shown with balances",
    },
    Variable {
        name: "LOGIN_THROTTLE_MAX_ATTEMPTS",
        default: Some("5"),
        doc: "Login attempts allowed per username per window before `429 rate_limited`",
    },
    Variable {
        name: "LOGIN_THROTTLE_WINDOW_SECONDS",
        default: Some("900"),
        doc: "Login throttle window length",
    },
    Variable {
        name: "IDEMPOTENCY_TTL_HOURS",
        default: Some("24"),
        doc: "How long an Idempotency-Key is remembered (at least 24)",
    },
    Variable {
        name: "REDIS_URL",
        default: None,
        doc: "History cache in Redis, shared by every process (`redis://HOST:PORT/DB`; no TLS, so not `rediss://`); unset: an in-process cache",
    },
    Variable {
        name: "REDIS_KEY_PREFIX",
        default: Some("lighttech:"),
        doc: "Prefix of every key LightTech writes to Redis",
    },
    Variable {
        name: "REDIS_TIMEOUT_MS",
        default: Some("50"),
        doc: "Longest a history read waits for Redis before going to the store (Redis is then skipped for a second)",
    },
    Variable {
        name: "HISTORY_CACHE_MAX_MB",
        default: Some("64"),
        doc: "Size bound of the in-process history cache",
    },
    Variable {
        name: "HISTORY_CACHE_TTL_SECONDS",
        default: Some("300"),
        doc: "How long a cached history page is kept (freshness never depends on it: keys carry the account version)",
    },
    Variable {
        name: "JWT_ISSUER",
        default: Some("lighttech"),
        doc: "The `iss` claim issued and required",
    },
    Variable {
        name: "DEBUG",
        default: Some("False"),
        doc: "`True`: human-readable logs instead of JSON",
    },
    Variable {
        name: "ALLOWED_HOSTS",
        default: Some("localhost,127.0.0.1,[::1]"),
        doc: "Host names the local server answers (ports ignored; `*` allows any); others get 400",
    },
    Variable {
        name: "HTTP_HEADER_TIMEOUT_SECONDS",
        default: Some("10"),
        doc: "Local server: longest a client may take to send a request's line and headers, counted from the connection's opening (or the request's first byte on a kept-alive connection); then the connection is closed",
    },
    Variable {
        name: "HTTP_BODY_TIMEOUT_SECONDS",
        default: Some("10"),
        doc: "Local server: longest a client may take to send a request's body once its headers are in; a body that does not arrive in full is never carried out",
    },
    Variable {
        name: "HTTP_IDLE_TIMEOUT_SECONDS",
        default: Some("60"),
        doc: "Local server: longest a kept-alive connection may wait for its next request, or an answer wait for the client to read any of it",
    },
    Variable {
        name: "HTTP_MAX_CONNECTIONS",
        default: Some("512"),
        doc: "Local server: most connections served at once; at the cap, new connections wait for a free slot and idle kept-alive connections are closed to make room. Keep it below the open-file limit (`ulimit -n`)",
    },
    Variable {
        name: "ROTATE_REFRESH_TOKENS",
        default: Some("True"),
        doc: "Kept for the original service's `.env`: refresh tokens always rotate; `False` is refused",
    },
    Variable {
        name: "BLACKLIST_AFTER_ROTATION",
        default: Some("True"),
        doc: "Kept for the original service's `.env`: spent refresh tokens are always rejected; `False` is refused",
    },
    Variable {
        name: "RUST_LOG",
        default: Some("info"),
        doc: "Log filter (tracing-subscriber `EnvFilter` syntax)",
    },
];

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The offending variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// Where data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded SQLite database at this file path (`sqlite://PATH`).
    Sqlite(PathBuf),
    /// A DynamoDB table, reached through the standard AWS environment.
    Dynamo(String),
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL; credentials stay inside).
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL; its `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // postgres://user:password@host/db → postgres://user:***@host/db
        let redacted = match (self.0.split_once("://"), self.0.rfind('@')) {
            (Some((scheme, rest)), Some(_)) => {
                let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            _ => self.0.clone(),
        };
        f.write_str(&redacted)
    }
}

/// The signing secret, at least 32 bytes, never printed.
#[derive(Clone)]
pub struct SecretKey(SecretSlice<u8>);

impl SecretKey {
    /// Shortest accepted key.
    pub const MIN_LEN: usize = 32;

    /// Accepts a key of at least [`SecretKey::MIN_LEN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<SecretKey, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "the signing key is {} bytes; at least {} are required",
                bytes.len(),
                Self::MIN_LEN
            ));
        }
        Ok(SecretKey(SecretSlice::from(bytes)))
    }

    /// The key bytes, for deriving subkeys.
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.expose().ct_eq(other.expose()).into()
    }
}

/// The keys in use: the current one signs; the previous one, during a rotation, still
/// verifies what it signed.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    /// Signs and verifies.
    pub current: SecretKey,
    /// Only verifies; `None` when there is none or it is the current key.
    pub previous: Option<SecretKey>,
}

impl KeySet {
    /// A set; a previous key equal to the current one is dropped.
    pub fn new(current: SecretKey, previous: Option<SecretKey>) -> KeySet {
        let previous = previous.filter(|p| *p != current);
        KeySet { current, previous }
    }
}

impl From<SecretKey> for KeySet {
    fn from(current: SecretKey) -> KeySet {
        KeySet::new(current, None)
    }
}

impl From<&SecretKey> for KeySet {
    fn from(current: &SecretKey) -> KeySet {
        KeySet::new(current.clone(), None)
    }
}

impl From<&KeySet> for KeySet {
    fn from(keys: &KeySet) -> KeySet {
        keys.clone()
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: which store, and where.
    pub store: StoreUrl,
    /// `LIGHTTECH_DATA_DIR`: where the local server keeps its generated signing key.
    pub data_dir: PathBuf,
    /// `SQLITE_WRITE_BATCH`: most SQLite writes committed together (1: each alone).
    pub sqlite_write_batch: usize,
    /// `POSTGRES_TRANSFER_BATCH`: most transfers into one recipient applied together.
    pub postgres_transfer_batch: usize,
    /// `SECRET_KEY`, when set.
    pub secret_key: Option<SecretKey>,
    /// `SECRET_KEY_PREVIOUS`, when set (only with `SECRET_KEY`).
    pub secret_key_previous: Option<SecretKey>,
    /// `SECRET_KEY_ARN`, when set.
    pub secret_key_arn: Option<String>,
    /// `ACCESS_TOKEN_LIFETIME_MINUTES`, in seconds.
    pub access_ttl_seconds: i64,
    /// `REFRESH_TOKEN_LIFETIME_MINUTES`, in seconds.
    pub refresh_ttl_seconds: i64,
    /// `SESSION_MAX_LIFETIME_DAYS`, in seconds: a session ends this long after its login.
    pub session_max_lifetime_seconds: i64,
    /// `CURRENCY`: the ISO 4217 code shown with every balance.
    pub currency: String,
    /// `LOGIN_THROTTLE_MAX_ATTEMPTS`: login attempts per username per window.
    pub login_max_attempts: u32,
    /// `LOGIN_THROTTLE_WINDOW_SECONDS`: the throttle window, from the first attempt.
    pub login_window_seconds: i64,
    /// `IDEMPOTENCY_TTL_HOURS`, in seconds.
    pub idempotency_ttl_seconds: i64,
    /// `JWT_ISSUER`: the `iss` claim issued and required.
    pub jwt_issuer: String,
    /// `REDIS_URL`, when set.
    pub redis_url: Option<String>,
    /// `REDIS_KEY_PREFIX`: the prefix of every key written to Redis.
    pub redis_key_prefix: String,
    /// `REDIS_TIMEOUT_MS`: longest a history read waits for Redis before using the store.
    pub redis_timeout_ms: u64,
    /// `HISTORY_CACHE_MAX_MB`, in bytes.
    pub history_cache_max_bytes: u64,
    /// `HISTORY_CACHE_TTL_SECONDS`: how long a cached history page is kept.
    pub history_cache_ttl_seconds: u64,
    /// `DEBUG`: human-readable logs instead of JSON.
    pub debug: bool,
    /// `ALLOWED_HOSTS`, lower-cased; `*` allows any host.
    pub allowed_hosts: Vec<String>,
    /// `HTTP_HEADER_TIMEOUT_SECONDS` (local server).
    pub http_header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECONDS` (local server).
    pub http_body_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECONDS` (local server).
    pub http_idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (local server).
    pub http_max_connections: usize,
}

impl Config {
    /// Reads the process environment (after loading `./.env` if present, without overriding
    /// variables already set).
    pub fn from_env() -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from a map (tests).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads through any lookup function; unset and empty values take the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| -> String { set_or_default(name, lookup(name)) };
        let seconds = |name: &'static str, min: i64, max: i64| {
            parse_int(name, &get(name), min, max).map(|n| Duration::from_secs(n as u64))
        };
        for name in ["ROTATE_REFRESH_TOKENS", "BLACKLIST_AFTER_ROTATION"] {
            if !parse_bool(name, &get(name))? {
                return Err(ConfigError::new(
                    name,
                    "LightTech always rotates refresh tokens and always rejects a spent one \
                     (reuse revokes the session); this cannot be turned off. Remove the variable \
                     or set it to True.",
                ));
            }
        }
        let data_dir = PathBuf::from(get("LIGHTTECH_DATA_DIR"));
        let store = parse_store_url(&get("DATABASE_URL"))?;
        let secret_key = match lookup("SECRET_KEY").filter(|v| !v.is_empty()) {
            Some(v) => Some(
                SecretKey::new(v.into_bytes()).map_err(|m| ConfigError::new("SECRET_KEY", m))?,
            ),
            None => None,
        };
        let secret_key_previous = match lookup("SECRET_KEY_PREVIOUS").filter(|v| !v.is_empty()) {
            Some(_) if secret_key.is_none() => {
                return Err(ConfigError::new(
                    "SECRET_KEY_PREVIOUS",
                    "set without SECRET_KEY: the previous key only verifies, so the current one \
                     must be given too",
                ));
            }
            Some(v) => Some(
                SecretKey::new(v.into_bytes())
                    .map_err(|m| ConfigError::new("SECRET_KEY_PREVIOUS", m))?,
            ),
            None => None,
        };
        let secret_key_arn = lookup("SECRET_KEY_ARN").filter(|v| !v.trim().is_empty());
        let currency = get("CURRENCY");
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                "CURRENCY",
                format!("{currency:?} is not a three-letter ISO 4217 code like RUB"),
            ));
        }
        let idempotency_hours = parse_int(
            "IDEMPOTENCY_TTL_HOURS",
            &get("IDEMPOTENCY_TTL_HOURS"),
            24,
            24 * 365,
        )?;
        let redis_url = lookup("REDIS_URL").filter(|v| !v.trim().is_empty());
        if let Some(url) = &redis_url {
            let scheme = url::Url::parse(url).map(|u| u.scheme().to_owned());
            match scheme.as_deref() {
                Ok("redis" | "redis+unix" | "unix") => {}
                // The Redis client is built without TLS: a rediss:// cache would fail every
                // read and leave the history cache silently off.
                Ok("rediss") => {
                    return Err(ConfigError::new(
                        "REDIS_URL",
                        "rediss:// (Redis over TLS) is not supported; use redis:// or \
                         redis+unix://",
                    ));
                }
                _ => {
                    return Err(ConfigError::new(
                        "REDIS_URL",
                        "expected redis://HOST:PORT/DB (or redis+unix://PATH)",
                    ));
                }
            }
        }
        let allowed_hosts = get("ALLOWED_HOSTS")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(Config {
            store,
            data_dir,
            sqlite_write_batch: parse_int(
                "SQLITE_WRITE_BATCH",
                &get("SQLITE_WRITE_BATCH"),
                1,
                10_000,
            )? as usize,
            postgres_transfer_batch: parse_int(
                "POSTGRES_TRANSFER_BATCH",
                &get("POSTGRES_TRANSFER_BATCH"),
                1,
                crate::store::MAX_TRANSFER_BATCH as i64,
            )? as usize,
            secret_key,
            secret_key_previous,
            secret_key_arn,
            access_ttl_seconds: 60
                * parse_int(
                    "ACCESS_TOKEN_LIFETIME_MINUTES",
                    &get("ACCESS_TOKEN_LIFETIME_MINUTES"),
                    1,
                    24 * 60,
                )?,
            refresh_ttl_seconds: 60
                * parse_int(
                    "REFRESH_TOKEN_LIFETIME_MINUTES",
                    &get("REFRESH_TOKEN_LIFETIME_MINUTES"),
                    1,
                    365 * 24 * 60,
                )?,
            session_max_lifetime_seconds: 86_400
                * parse_int(
                    "SESSION_MAX_LIFETIME_DAYS",
                    &get("SESSION_MAX_LIFETIME_DAYS"),
                    1,
                    10 * 365,
                )?,
            currency,
            login_max_attempts: u32::try_from(parse_int(
                "LOGIN_THROTTLE_MAX_ATTEMPTS",
                &get("LOGIN_THROTTLE_MAX_ATTEMPTS"),
                1,
                1000,
            )?)
            .unwrap_or(5),
            login_window_seconds: parse_int(
                "LOGIN_THROTTLE_WINDOW_SECONDS",
                &get("LOGIN_THROTTLE_WINDOW_SECONDS"),
                1,
                7 * 24 * 3600,
            )?,
            idempotency_ttl_seconds: idempotency_hours * 3600,
            jwt_issuer: get("JWT_ISSUER"),
            redis_url,
            redis_key_prefix: get("REDIS_KEY_PREFIX"),
            redis_timeout_ms: parse_int("REDIS_TIMEOUT_MS", &get("REDIS_TIMEOUT_MS"), 1, 60_000)?
                as u64,
            history_cache_max_bytes: parse_int(
                "HISTORY_CACHE_MAX_MB",
                &get("HISTORY_CACHE_MAX_MB"),
                1,
                64 * 1024,
            )? as u64
                * 1024
                * 1024,
            history_cache_ttl_seconds: parse_int(
                "HISTORY_CACHE_TTL_SECONDS",
                &get("HISTORY_CACHE_TTL_SECONDS"),
                1,
                7 * 24 * 3600,
            )? as u64,
            debug: parse_bool("DEBUG", &get("DEBUG"))?,
            allowed_hosts,
            http_header_timeout: seconds("HTTP_HEADER_TIMEOUT_SECONDS", 1, 300)?,
            http_body_timeout: seconds("HTTP_BODY_TIMEOUT_SECONDS", 1, 300)?,
            http_idle_timeout: seconds("HTTP_IDLE_TIMEOUT_SECONDS", 1, 3600)?,
            http_max_connections: parse_int(
                "HTTP_MAX_CONNECTIONS",
                &get("HTTP_MAX_CONNECTIONS"),
                1,
                1_000_000,
            )? as usize,
        })
    }

    /// `SECRET_KEY` with `SECRET_KEY_PREVIOUS`, when a key is set in the environment.
    pub fn key_set(&self) -> Option<KeySet> {
        let current = self.secret_key.clone()?;
        Some(KeySet::new(current, self.secret_key_previous.clone()))
    }

    /// Whether the local server should answer a request with this `Host` header.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        // Strip the port: `[::1]:8000` → `[::1]`, `localhost:8000` → `localhost`.
        let name = if host.starts_with('[') {
            host.split_once(']').map_or(host.as_str(), |(h, _)| h)
        } else {
            host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h)
        };
        let name = name.trim_start_matches('[');
        self.allowed_hosts.iter().any(|allowed| {
            let allowed = allowed.trim_start_matches('[').trim_end_matches(']');
            allowed == "*"
                || allowed == name
                || (allowed.starts_with('.') && (name.ends_with(allowed) || name == &allowed[1..]))
        })
    }
}

/// `DEBUG` alone, for the functions that read nothing else (`lambda::run_stateless`).
pub fn debug_from_env() -> Result<bool, ConfigError> {
    parse_bool(
        "DEBUG",
        &set_or_default("DEBUG", std::env::var("DEBUG").ok()),
    )
}

/// A variable's value: as set unless empty, else its default, else empty.
fn set_or_default(name: &str, value: Option<String>) -> String {
    value
        .filter(|v| !v.trim().is_empty())
        .or_else(|| default_of(name).map(str::to_owned))
        .unwrap_or_default()
}

fn default_of(name: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.default)
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(ConfigError::new(
            name,
            format!("{other:?} is not a boolean (use True or False)"),
        )),
    }
}

fn parse_int(name: &'static str, value: &str, min: i64, max: i64) -> Result<i64, ConfigError> {
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(name, format!("{value:?} is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(ConfigError::new(
            name,
            format!("{n} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

fn parse_store_url(url: &str) -> Result<StoreUrl, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "sqlite:// needs a file path",
            ));
        }
        return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreUrl::Postgres(PostgresUrl(url.to_owned())));
    }
    if let Some(table) = url.strip_prefix("dynamodb://") {
        // DynamoDB table names: 3–255 of A-Z a-z 0-9 _ - .
        if !(3..=255).contains(&table.len())
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!("{table:?} is not a valid DynamoDB table name"),
            ));
        }
        return Ok(StoreUrl::Dynamo(table.to_owned()));
    }
    let scheme = url.split("://").next().unwrap_or(url);
    Err(ConfigError::new(
        "DATABASE_URL",
        format!(
            "unsupported store scheme {scheme:?} (expected sqlite://PATH, postgres://… or dynamodb://TABLE)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults_match_the_documented_table() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.store,
            StoreUrl::Sqlite(PathBuf::from("./.lighttech/lighttech.db"))
        );
        assert_eq!(c.access_ttl_seconds, 600);
        assert_eq!(c.refresh_ttl_seconds, 86_400);
        assert_eq!(c.session_max_lifetime_seconds, 30 * 86_400);
        assert_eq!(c.currency, "RUB");
        assert_eq!(c.login_max_attempts, 5);
        assert_eq!(c.login_window_seconds, 900);
        assert!(c.secret_key.is_none());
        assert!(!c.debug);
        assert_eq!(c.http_header_timeout, Duration::from_secs(10));
        assert_eq!(c.http_body_timeout, Duration::from_secs(10));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http_max_connections, 512);
    }

    #[test]
    fn local_server_limits_are_read_and_bad_ones_name_their_variable() {
        let c = config(&[
            ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "2"),
            ("HTTP_IDLE_TIMEOUT_SECONDS", "3"),
            ("HTTP_MAX_CONNECTIONS", "4"),
        ])
        .unwrap();
        assert_eq!(c.http_header_timeout, Duration::from_secs(1));
        assert_eq!(c.http_body_timeout, Duration::from_secs(2));
        assert_eq!(c.http_idle_timeout, Duration::from_secs(3));
        assert_eq!(c.http_max_connections, 4);
        for name in [
            "HTTP_HEADER_TIMEOUT_SECONDS",
            "HTTP_BODY_TIMEOUT_SECONDS",
            "HTTP_IDLE_TIMEOUT_SECONDS",
            "HTTP_MAX_CONNECTIONS",
        ] {
            for bad in ["0", "-1", "ten", "1.5", "99999999"] {
                let err = config(&[(name, bad)]).unwrap_err();
                assert_eq!(err.variable, name, "{name}={bad}");
                assert!(err.to_string().starts_with(name), "{err}");
            }
        }
    }

    #[test]
    fn a_short_secret_key_is_refused_naming_the_variable() {
        let err = config(&[("SECRET_KEY", "short")]).unwrap_err();
        assert_eq!(err.variable, "SECRET_KEY");
    }

    #[test]
    fn turning_off_rotation_or_blacklisting_stops_the_start_with_a_reason() {
        for name in ["ROTATE_REFRESH_TOKENS", "BLACKLIST_AFTER_ROTATION"] {
            let err = config(&[(name, "False")]).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.message.contains("always"));
        }
        assert!(config(&[("ROTATE_REFRESH_TOKENS", "True")]).is_ok());
    }

    #[test]
    fn invalid_numbers_and_unknown_stores_name_their_variable() {
        for (name, value) in [
            ("ACCESS_TOKEN_LIFETIME_MINUTES", "ten"),
            ("DATABASE_URL", "mysql://x"),
            ("CURRENCY", "rubles"),
            ("REDIS_URL", "http://cache:6379"),
            ("DATABASE_URL", "dynamodb://a b"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}");
        }
        let tls = config(&[("REDIS_URL", "rediss://cache:6379/0")]).unwrap_err();
        assert_eq!(tls.variable, "REDIS_URL");
        assert!(tls.to_string().contains("not supported"), "{tls}");
        assert!(config(&[("REDIS_URL", "redis://cache:6379/0")]).is_ok());
        assert_eq!(
            config(&[("DATABASE_URL", "dynamodb://lighttech")])
                .unwrap()
                .store,
            StoreUrl::Dynamo("lighttech".into())
        );
    }

    #[test]
    fn the_session_lifetime_is_whole_days_from_one_up() {
        for bad in ["0", "-1", "1.5", "thirty", "3651"] {
            let err = config(&[("SESSION_MAX_LIFETIME_DAYS", bad)]).unwrap_err();
            assert_eq!(err.variable, "SESSION_MAX_LIFETIME_DAYS", "{bad}");
        }
        let one = config(&[("SESSION_MAX_LIFETIME_DAYS", "1")]).unwrap();
        assert_eq!(one.session_max_lifetime_seconds, 86_400);
        // Shorter than the refresh lifetime is allowed: it cuts refresh tokens short.
        let short = config(&[
            ("SESSION_MAX_LIFETIME_DAYS", "1"),
            ("REFRESH_TOKEN_LIFETIME_MINUTES", "4320"),
        ])
        .unwrap();
        assert!(short.session_max_lifetime_seconds < short.refresh_ttl_seconds);
    }

    #[test]
    fn allowed_hosts_ignore_ports_and_case() {
        let c = config(&[]).unwrap();
        assert!(c.host_allowed("localhost:8000"));
        assert!(c.host_allowed("LOCALHOST"));
        assert!(c.host_allowed("127.0.0.1:1234"));
        assert!(c.host_allowed("[::1]:8000"));
        assert!(!c.host_allowed("evil.example.com"));
        let any = config(&[("ALLOWED_HOSTS", "*")]).unwrap();
        assert!(any.host_allowed("anything:1"));
    }

    #[test]
    fn a_postgres_password_is_never_printed() {
        let c = config(&[("DATABASE_URL", "postgres://app:hunter2@db:5432/bank")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/bank"), "{shown}");
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let c = config(&[
            ("SECRET_KEY", &"k".repeat(40)),
            ("SECRET_KEY_PREVIOUS", &"p".repeat(40)),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("kkkk"));
        assert!(!format!("{c:?}").contains("pppp"));
        assert!(!format!("{:?}", c.key_set()).contains("pppp"));
    }

    #[test]
    fn the_previous_key_joins_the_current_one() {
        let (current, previous) = ("c".repeat(32), "p".repeat(32));
        let keys = config(&[("SECRET_KEY", &current), ("SECRET_KEY_PREVIOUS", &previous)])
            .unwrap()
            .key_set()
            .unwrap();
        assert_eq!(keys.current.expose(), current.as_bytes());
        assert_eq!(keys.previous.unwrap().expose(), previous.as_bytes());
        let alone = config(&[("SECRET_KEY", &current)])
            .unwrap()
            .key_set()
            .unwrap();
        assert!(alone.previous.is_none());
        let same = config(&[("SECRET_KEY", &current), ("SECRET_KEY_PREVIOUS", &current)])
            .unwrap()
            .key_set()
            .unwrap();
        assert!(
            same.previous.is_none(),
            "the current key is no previous key"
        );
        assert!(config(&[]).unwrap().key_set().is_none());
        for bad in [
            vec![("SECRET_KEY_PREVIOUS", previous.as_str())],
            vec![
                ("SECRET_KEY", current.as_str()),
                ("SECRET_KEY_PREVIOUS", "short"),
            ],
        ] {
            assert_eq!(config(&bad).unwrap_err().variable, "SECRET_KEY_PREVIOUS");
        }
    }
}
