//! Start-up wiring: reads the configuration, resolves the signing key, and opens the store and
//! the history cache the configuration names. The one module that knows every backend.

use std::path::Path;
use std::sync::Arc;

use crate::app::App;
use crate::auth::{Keyring, PasswordHasher, key_file};
#[cfg(feature = "redis")]
use crate::cache::RedisCache;
use crate::cache::{CacheError, CacheStats, HistoryCache, MemoryCache};
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError, KeySet, SecretKey, StoreUrl};
use crate::store::dynamo::DynamoStore;
#[cfg(feature = "postgres")]
use crate::store::postgres::PgStore;
#[cfg(feature = "sqlite")]
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

impl App {
    /// Assembles the state from its parts: `keys` is a key set, or one key alone.
    pub fn new(config: Config, store: Arc<dyn Store>, keys: impl Into<KeySet>) -> App {
        let cache = history_cache(&config);
        App {
            cache,
            cache_stats: CacheStats::default(),
            keys: Keyring::new(&keys.into(), &config.jwt_issuer),
            passwords: PasswordHasher::new(),
            config,
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads config, loads the key and opens the store, per the start-up options.
    pub async fn start(options: StartOptions) -> Result<App, StartupError> {
        let config = Config::from_env()?;
        Self::start_with(config, options).await
    }

    /// Like [`App::start`] with a configuration already read.
    pub async fn start_with(config: Config, options: StartOptions) -> Result<App, StartupError> {
        Self::start_with_aws(config, options, None).await
    }

    /// Like [`App::start_with`], with the AWS SDK configuration given instead of read from the
    /// standard AWS environment (tests point it at an emulator this way).
    pub async fn start_with_aws(
        config: Config,
        options: StartOptions,
        aws: Option<aws_config::SdkConfig>,
    ) -> Result<App, StartupError> {
        // One SDK configuration (credentials, region, HTTP client) for every AWS client.
        let needs_aws = matches!(config.store, StoreUrl::Dynamo(_))
            || (config.secret_key.is_none() && config.secret_key_arn.is_some());
        let sdk = match aws {
            Some(sdk) => Some(sdk),
            None if needs_aws => Some(crate::aws::sdk_config().await),
            None => None,
        };
        #[cfg(not(feature = "redis"))]
        if config.redis_url.is_some() {
            return Err(StartupError::Cache(CacheError::unsupported(
                "REDIS_URL is set, but this build has no Redis client (build with the `redis` \
                 feature)",
            )));
        }
        let keys = resolve_key(&config, sdk.as_ref(), options.generate_key).await?;
        // Keys from Secrets Manager change under a running process (a rotation): they are read
        // again when a token names a key not known yet.
        let source = match (&config.secret_key_arn, sdk.as_ref()) {
            (Some(arn), Some(sdk)) if config.secret_key.is_none() => {
                Some(crate::aws::SecretsManagerKeys::new(sdk, arn))
            }
            _ => None,
        };
        let store = open_store(&config, sdk.as_ref(), options).await?;
        let app = App::new(config, store, keys);
        Ok(match source {
            Some(source) => app.with_key_source(Arc::new(source)),
            None => app,
        })
    }
}

/// Opens the store `DATABASE_URL` names and nothing else: no signing key is read or fetched (the
/// `health` function, [`crate::lambda::run_store_only`]). The AWS SDK is configured only for
/// DynamoDB.
pub async fn start_store(
    config: &Config,
    options: StartOptions,
) -> Result<Arc<dyn Store>, StartupError> {
    let sdk = match config.store {
        StoreUrl::Dynamo(_) => Some(crate::aws::sdk_config().await),
        _ => None,
    };
    open_store(config, sdk.as_ref(), options).await
}

/// Redis when `REDIS_URL` is set, the in-process cache otherwise.
fn history_cache(config: &Config) -> Arc<dyn HistoryCache> {
    let ttl = std::time::Duration::from_secs(config.history_cache_ttl_seconds);
    #[cfg(feature = "redis")]
    if let Some(url) = &config.redis_url {
        match RedisCache::new(
            url,
            &config.redis_key_prefix,
            std::time::Duration::from_millis(config.redis_timeout_ms),
            ttl,
        ) {
            Ok(cache) => return Arc::new(cache),
            // The URL was validated with the config; should the pool still refuse it, serve
            // from the in-process cache rather than not at all.
            Err(e) => {
                tracing::error!(error = %e, "cannot use REDIS_URL; using the in-process cache")
            }
        }
    }
    Arc::new(MemoryCache::new(config.history_cache_max_bytes, ttl))
}

/// How the process may prepare itself at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Create what the store needs (tables, schema) before serving.
    pub init: bool,
    /// Generate and keep a signing key in the data directory when none is configured
    /// (the local server only; Lambda functions must be given one).
    pub generate_key: bool,
    /// Check at start that the store is reachable and prepared (the local server; a Lambda
    /// cold start skips the extra round trip and the extra IAM permission).
    pub check_store: bool,
}

/// Why the process cannot start; `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A variable is missing or invalid.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// No usable signing key.
    #[error("signing key: {context}{}", suffix(.source.as_ref()))]
    Key {
        /// What could not be done.
        context: String,
        /// The file system's reason, when that is where it failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The store cannot be opened or prepared.
    #[error("store: {}", store_message(.0))]
    Store(#[source] StoreError),
    /// The history cache the configuration names cannot be used.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl StartupError {
    fn key(context: impl Into<String>) -> Self {
        StartupError::Key {
            context: context.into(),
            source: None,
        }
    }

    fn key_io(context: String, source: std::io::Error) -> Self {
        StartupError::Key {
            context,
            source: Some(source),
        }
    }

    fn store(message: &'static str) -> Self {
        StartupError::Store(StoreError::internal(message))
    }
}

fn suffix(source: Option<&std::io::Error>) -> String {
    source.map(|e| format!(": {e}")).unwrap_or_default()
}

/// The backend's own message: the wrapper's words add nothing to it.
fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(source) | StoreError::Internal(source) => {
            crate::telemetry::error_chain(source.as_ref())
        }
        other => crate::telemetry::error_chain(other),
    }
}

impl From<StoreError> for StartupError {
    fn from(e: StoreError) -> Self {
        StartupError::Store(e)
    }
}

/// Opens the store `DATABASE_URL` names, preparing (`init`) or checking it as asked.
pub async fn open_store(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    options: StartOptions,
) -> Result<Arc<dyn Store>, StartupError> {
    match &config.store {
        // The embedded store always prepares itself: zero setup is its point.
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(path) => Ok(Arc::new(
            SqliteStore::open_with(path.clone(), config.sqlite_write_batch).await?,
        )),
        #[cfg(not(feature = "sqlite"))]
        StoreUrl::Sqlite(_) => Err(StartupError::store(
            "this build has no embedded SQLite store (the Lambda functions are built for \
             DynamoDB; build them with the `embedded` feature to run them on SQLite, as \
             `cargo lambda watch --features embedded` does)",
        )),
        StoreUrl::Dynamo(table) => {
            let sdk = sdk.ok_or_else(|| StartupError::store("no AWS configuration"))?;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table.clone());
            if options.init {
                store.create_table().await?;
            } else if options.check_store {
                store.check_table().await?;
            }
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        StoreUrl::Postgres(_) => Err(StartupError::store(
            "this build has no PostgreSQL store (the Lambda functions are built for DynamoDB and \
             the embedded store; lighttech-local serves PostgreSQL)",
        )),
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(url) => {
            let store =
                PgStore::connect(url.expose())?.with_transfer_batch(config.postgres_transfer_batch);
            if options.init {
                store.migrate().await?;
            }
            if options.init || options.check_store {
                store.check_schema().await?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// The configured keys: `SECRET_KEY` (with `SECRET_KEY_PREVIOUS`), else the Secrets Manager
/// secret `SECRET_KEY_ARN` names (fetched here), else — when allowed — the ones kept in the data
/// directory (`secret_key`, generated on first use with file mode 0600, and
/// `secret_key.previous` after a rotation).
pub async fn resolve_key(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
    generate: bool,
) -> Result<KeySet, StartupError> {
    if let Some(keys) = config.key_set() {
        return Ok(keys);
    }
    if let (Some(arn), Some(sdk)) = (&config.secret_key_arn, sdk) {
        return crate::aws::fetch_key_set(sdk, arn)
            .await
            .map_err(StartupError::key);
    }
    if !generate {
        return Err(StartupError::key(
            "neither SECRET_KEY nor SECRET_KEY_ARN is set (there is no built-in key; set SECRET_KEY to at least 32 random bytes)",
        ));
    }
    let path = config.data_dir.join("secret_key");
    let current = load_or_create_key_file(&path)?;
    let previous = crate::auth::key_file::read_previous(&path).map_err(StartupError::key)?;
    Ok(KeySet::new(current, previous))
}

fn load_or_create_key_file(path: &Path) -> Result<SecretKey, StartupError> {
    match std::fs::metadata(path) {
        Ok(_) => key_file::read(path).map_err(StartupError::key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                crate::files::create_private_dir_all(dir).map_err(|e| {
                    StartupError::key_io(
                        format!("cannot create the directory of {}", path.display()),
                        e,
                    )
                })?;
            }
            let text = key_file::generate();
            // Staged whole, then linked into place: a process starting alongside never reads a
            // partial key, and linking never replaces a key another process put there first.
            let staged = key_file::stage(path, text.as_bytes()).map_err(StartupError::key)?;
            let linked = match std::fs::hard_link(&staged, path) {
                Ok(()) => Ok(true),
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(StartupError::key_io(
                    format!("cannot create {}", path.display()),
                    e,
                )),
            };
            let _ = std::fs::remove_file(&staged);
            if !linked? {
                return load_or_create_key_file(path);
            }
            tracing::info!(path = %path.display(), "generated a new signing key");
            SecretKey::new(text.into_bytes()).map_err(StartupError::key)
        }
        Err(e) => Err(StartupError::key_io(
            format!("cannot read {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_in(dir: &Path) -> Config {
        let mut map = HashMap::new();
        map.insert(
            "LIGHTTECH_DATA_DIR".to_owned(),
            dir.to_string_lossy().into_owned(),
        );
        Config::from_map(&map).unwrap()
    }

    #[tokio::test]
    async fn without_a_key_a_function_refuses_to_start() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let err = resolve_key(&config_in(&dir), None, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("SECRET_KEY"), "{err}");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn the_local_server_generates_a_private_key_once_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let first = resolve_key(&config_in(&dir), None, true).await.unwrap();
        let second = resolve_key(&config_in(&dir), None, true).await.unwrap();
        assert_eq!(first, second);
        assert!(first.current.expose().len() >= 32);
        assert!(first.previous.is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret_key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(dir_mode & 0o777, 0o700, "the data directory it created");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn processes_starting_together_agree_on_one_whole_key() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("secret_key");
        let keys: Vec<String> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_key_file(&path).unwrap().expose().to_vec()))
                .collect();
            starts
                .into_iter()
                .map(|h| String::from_utf8(h.join().unwrap()).unwrap())
                .collect()
        });
        assert!(
            keys.iter().all(|k| k == &keys[0] && k.len() == 64),
            "{keys:?}"
        );
        // Only the key itself is left: no staged copies.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret_key"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn after_a_rotation_the_old_generated_key_is_the_previous_one() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let first = resolve_key(&config_in(&dir), None, true).await.unwrap();
        crate::auth::key_file::rotate(&dir.join("secret_key")).unwrap();
        let rotated = resolve_key(&config_in(&dir), None, true).await.unwrap();
        assert_ne!(rotated.current, first.current);
        assert_eq!(rotated.previous, Some(first.current));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_short_key_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret_key"), "short").unwrap();
        assert!(resolve_key(&config_in(&dir), None, true).await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
