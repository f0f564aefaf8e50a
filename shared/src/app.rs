//! The application state built once per process (per Lambda cold start) and shared by every
//! request: configuration, store, keys, clock.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::auth::{CursorCodec, PasswordHasher, TokenService, derive_key};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError, SecretKey, StoreUrl};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// Everything a handler needs.
#[derive(Debug)]
pub struct App {
    /// The configuration read at start.
    pub config: Config,
    /// The store chosen by `DATABASE_URL`.
    pub store: Arc<dyn Store>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    pub(crate) tokens: TokenService,
    pub(crate) cursors: CursorCodec,
    pub(crate) passwords: PasswordHasher,
}

impl App {
    /// Assembles the state from its parts.
    pub fn new(config: Config, store: Arc<dyn Store>, key: &SecretKey) -> App {
        App {
            tokens: TokenService::new(&derive_key(key, "jwt"), &config.jwt_issuer),
            cursors: CursorCodec::new(derive_key(key, "cursor")),
            passwords: PasswordHasher::new(),
            config,
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> App {
        self.clock = clock;
        self
    }

    /// Reads config, loads the key and opens the store, per the start-up options.
    pub async fn start(options: StartOptions) -> Result<App, StartupError> {
        let config = Config::from_env()?;
        Self::start_with(config, options).await
    }

    /// Like [`App::start`] with a configuration already read.
    pub async fn start_with(config: Config, options: StartOptions) -> Result<App, StartupError> {
        let key = resolve_key(&config, options.generate_key)?;
        let store = open_store(&config, options.init).await?;
        Ok(App::new(config, store, &key))
    }
}

/// How the process may prepare itself at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Create what the store needs (tables, schema) before serving.
    pub init: bool,
    /// Generate and keep a signing key in the data directory when none is configured
    /// (the local server only; Lambda functions must be given one).
    pub generate_key: bool,
}

/// Why the process cannot start; `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A variable is missing or invalid.
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// No usable signing key.
    #[error("signing key: {0}")]
    Key(String),
    /// The store cannot be opened or prepared.
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for StartupError {
    fn from(e: StoreError) -> Self {
        StartupError::Store(crate::telemetry::error_chain(&e))
    }
}

/// Opens the store `DATABASE_URL` names.
pub async fn open_store(config: &Config, _init: bool) -> Result<Arc<dyn Store>, StartupError> {
    match &config.store {
        // The embedded store always prepares itself: zero setup is its point.
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path.clone()).await?)),
    }
}

/// The configured key, or (when allowed) the one kept in the data directory, generated on
/// first use with file mode 0600.
pub fn resolve_key(config: &Config, generate: bool) -> Result<SecretKey, StartupError> {
    if let Some(key) = &config.secret_key {
        return Ok(key.clone());
    }
    if !generate {
        return Err(StartupError::Key(
            "SECRET_KEY is not set (there is no built-in key; set SECRET_KEY to at least 32 random bytes)"
                .into(),
        ));
    }
    load_or_create_key_file(&config.data_dir.join("secret_key"))
}

fn load_or_create_key_file(path: &Path) -> Result<SecretKey, StartupError> {
    let fail = |what: &str, e: std::io::Error| {
        StartupError::Key(format!("cannot {what} {}: {e}", path.display()))
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| StartupError::Key(format!("{} is not text", path.display())))?;
            SecretKey::new(text.trim().as_bytes().to_vec())
                .map_err(|m| StartupError::Key(format!("{}: {m}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
            }
            let mut raw = [0u8; 32];
            rand::fill(&mut raw);
            let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(text.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| fail("write", e))?;
                    tracing::info!(path = %path.display(), "generated a new signing key");
                    SecretKey::new(text.into_bytes()).map_err(StartupError::Key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_key_file(path)
                }
                Err(e) => Err(fail("create", e)),
            }
        }
        Err(e) => Err(fail("read", e)),
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

    #[test]
    fn without_a_key_a_function_refuses_to_start() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let err = resolve_key(&config_in(&dir), false).unwrap_err();
        assert!(err.to_string().contains("SECRET_KEY is not set"));
        assert!(!dir.exists());
    }

    #[test]
    fn the_local_server_generates_a_private_key_once_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        let first = resolve_key(&config_in(&dir), true).unwrap();
        let second = resolve_key(&config_in(&dir), true).unwrap();
        assert_eq!(first.expose(), second.expose());
        assert!(first.expose().len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret_key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("lt-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret_key"), "short").unwrap();
        assert!(resolve_key(&config_in(&dir), true).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
