//! LightTech's test kit: the store conformance suite and the API suite, each written once and
//! instantiated per backend by a macro, plus the helpers they share (fixtures, an in-process
//! client for the real router, a wire client for the local server).
//!
//! A backend's test file provides one async fixture function returning a fresh, empty store
//! and calls `store_conformance_suite!` and `api_suite!` with it.

pub mod api;
pub mod conformance;
pub mod dynamo_proxy;
pub mod faulty;
pub mod hardening;
pub mod hot;
mod pg_cluster;
pub mod rotation;
pub mod wire;

pub use pg_cluster::PrivateCluster;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method, Request};
use lighttech::App;
use lighttech::clock::ManualClock;
use lighttech::config::{Config, SecretKey};
use lighttech::http::{Scope, handle};
use lighttech::store::Store;
use serde_json::Value;

/// A fresh store plus whatever keeps it alive (a temporary directory, a database to drop).
pub struct StoreFixture {
    store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl StoreFixture {
    /// Wraps a store and the guard that cleans up after it.
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send + Sync) -> Self {
        Self {
            store,
            _guard: Box::new(guard),
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

/// A fresh embedded store that commits every write alone (no group commit).
pub async fn sqlite_unbatched_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = lighttech::store::sqlite::SqliteStore::open_with(dir.path().join("test.db"), 1)
        .await
        .expect("open a SQLite store");
    StoreFixture::new(Arc::new(store), dir)
}

/// A user created directly in a store (for store-level tests); returns its id.
pub async fn conformance_user(store: &Arc<dyn Store>, name: &str) -> lighttech::domain::UserId {
    conformance::create_user(store, name).await.id
}

/// A process of the API on the DynamoDB table `table` (created if need be) with its signing keys
/// read from the Secrets Manager secret `arn` on moto, as a Lambda function starts; `secret` is
/// the key value the test knows it by (for forging; may be empty).
pub async fn app_with_secret_keys(table: &str, arn: &str, secret: String) -> TestApp {
    let database_url = format!("dynamodb://{table}");
    let config = test_config(&[
        ("DATABASE_URL", database_url.as_str()),
        ("SECRET_KEY_ARN", arn),
    ]);
    let config = Config {
        secret_key: None,
        ..config
    };
    let options = lighttech::StartOptions {
        init: true,
        generate_key: false,
        check_store: true,
    };
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let app = App::start_with_aws(config, options, Some(sdk))
        .await
        .expect("start with the key from Secrets Manager");
    TestApp::from_app(app, secret)
}

/// A fresh embedded store in its own temporary directory.
pub async fn sqlite_fixture() -> StoreFixture {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = lighttech::store::sqlite::SqliteStore::open(dir.path().join("test.db"))
        .await
        .expect("open a SQLite store");
    StoreFixture::new(Arc::new(store), dir)
}

/// The variable through which `tests/run` tells the DynamoDB suites where moto listens: one
/// URL, or several separated by commas (one moto server serves one request at a time, so the
/// suites spread over several).
pub const DYNAMODB_ENDPOINT_VAR: &str = "LIGHTTECH_TEST_DYNAMODB_ENDPOINT";

/// The moto servers `tests/run` keeps for the tests of nextest's group `moto-solo`, one each.
const SOLO_ENDPOINTS_VAR: &str = "LIGHTTECH_TEST_DYNAMODB_SOLO_ENDPOINTS";

/// This process's moto server. Under cargo-nextest every test is a process of its own, so the
/// tests spread over the servers; everything a test does (its tables, secrets, proxies and
/// child processes) goes to the one server its process picked.
pub fn dynamodb_endpoint() -> String {
    let all = std::env::var(DYNAMODB_ENDPOINT_VAR).unwrap_or_else(|_| {
        panic!(
            "{DYNAMODB_ENDPOINT_VAR} is not set: the DynamoDB suites need the moto server. \
             Run the whole suite with `tests/run` (it installs moto into .venv and starts it), \
             or start it yourself: `.venv/bin/python local/moto/server.py --port 5555` and \
             export {DYNAMODB_ENDPOINT_VAR}=http://127.0.0.1:5555"
        )
    });
    // A test of nextest's group `moto-solo` (.config/nextest.toml) has a server to itself, by
    // its slot in the group, when tests/run started some.
    if std::env::var("NEXTEST_TEST_GROUP").as_deref() == Ok("moto-solo")
        && let Ok(solo) = std::env::var(SOLO_ENDPOINTS_VAR)
        && !solo.trim().is_empty()
    {
        let slot = std::env::var("NEXTEST_TEST_GROUP_SLOT")
            .ok()
            .and_then(|slot| slot.parse().ok())
            .unwrap_or_else(std::process::id);
        return pick_endpoint(&solo, slot).to_owned();
    }
    // Under nextest, the slot: tests running at the same time hold different slots, so they
    // spread evenly over the servers (process ids would let several land on one).
    let ticket = std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()
        .and_then(|slot| slot.parse().ok())
        .unwrap_or_else(std::process::id);
    pick_endpoint(&all, ticket).to_owned()
}

/// The endpoint of the comma-separated list `all` that the process with this ticket uses.
pub fn pick_endpoint(all: &str, ticket: u32) -> &str {
    let endpoints: Vec<&str> = all
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    assert!(
        !endpoints.is_empty(),
        "{DYNAMODB_ENDPOINT_VAR} names no endpoint"
    );
    endpoints[ticket as usize % endpoints.len()]
}

/// SDK configuration for the emulator: loopback endpoint, fixed region, dummy credentials.
pub fn emulator_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "tests only ever talk to a loopback emulator, not {endpoint}"
    );
    aws_config::SdkConfig::builder()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"),
        ))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .build(),
        )
        .build()
}

/// Creates a Secrets Manager secret with this string value in the emulator; returns its ARN.
pub async fn create_emulated_secret(name: &str, value: &str) -> String {
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create secret {name:?} in the emulator: {e:?}"))
        .arn()
        .expect("the emulator returns the new secret's ARN")
        .to_owned()
}

/// Set once this process has opened a store on moto (see [`contention_rounds`]).
static ON_MOTO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The rounds a contention workload runs per worker: `full`, or half once the process has opened
/// a store on moto. moto serves one request at a time, on the CPU the rest of the suite shares;
/// its workloads keep their workers and accounts (the conflicts each round makes are what they
/// test) and run fewer rounds: at full length they were the suite's longest tests (220 to 475 s
/// each in a CI run, before local/moto/speedups.py made moto's transactions cheap). Under
/// nextest a test is a process of its own, so only the DynamoDB cases are shortened.
pub fn contention_rounds(full: usize) -> usize {
    if ON_MOTO.load(std::sync::atomic::Ordering::Relaxed) {
        full / 2
    } else {
        full
    }
}

/// A DynamoDB store on a fresh table of its own: tests must not see each other's items.
pub async fn dynamo_store() -> lighttech::store::dynamo::DynamoStore {
    ON_MOTO.store(true, std::sync::atomic::Ordering::Relaxed);
    let sdk = emulator_sdk_config(&dynamodb_endpoint());
    let table = format!("lt-{}", uuid::Uuid::new_v4().simple());
    let store =
        lighttech::store::dynamo::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    store.create_table().await.unwrap_or_else(|e| {
        panic!(
            "cannot create a table in the emulator: {}",
            lighttech::telemetry::error_chain(&e)
        )
    });
    store
}

/// A fresh DynamoDB store, as a fixture: through a [`dynamo_proxy::DynamoProxy`] that refuses
/// what DynamoDB refuses and moto would answer, so the suites on it meet DynamoDB's own
/// validation.
pub async fn dynamo_fixture() -> StoreFixture {
    let table = dynamo_store().await;
    let proxy = dynamo_proxy::DynamoProxy::strict().await;
    let store = proxy.retrying_store(table.table());
    StoreFixture::new(Arc::new(store), proxy)
}

/// The variable through which `tests/run` tells the PostgreSQL suites where the server is: a
/// URL of a maintenance database on it (each test creates and drops its own database).
pub const POSTGRES_URL_VAR: &str = "LIGHTTECH_TEST_POSTGRES_URL";

/// The maintenance URL. Missing is a loud failure, never a skip.
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: the PostgreSQL suites need a server. Run the whole \
             suite with `tests/run` (it points them at 127.0.0.1:5432), or export \
             {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/postgres"
        )
    })
}

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct PgDatabase {
    admin_url: String,
    /// The database name.
    pub name: String,
    /// A URL for it.
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh, empty database on the test server.
    pub async fn create() -> PgDatabase {
        PgDatabase::create_on(postgres_admin_url()).await
    }

    /// Creates a fresh, empty database on the server `admin_url` connects to.
    pub async fn create_on(admin_url: String) -> PgDatabase {
        let name = format!("lt_test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to PostgreSQL at {admin_url}: {e}. Start it with \
                     `pg_ctlcluster $(ls /etc/postgresql) main start`"
                )
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async context; a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A PostgreSQL store on a fresh, migrated database of its own.
pub async fn postgres_fixture() -> StoreFixture {
    let db = PgDatabase::create().await;
    let store = lighttech::store::postgres::PgStore::connect(&db.url).expect("a valid URL");
    store.migrate().await.expect("migrate the test database");
    StoreFixture::new(Arc::new(store), db)
}

/// The variable through which `tests/run` tells the Redis cache suites where Redis is.
pub const REDIS_URL_VAR: &str = "LIGHTTECH_TEST_REDIS_URL";

/// The test Redis. Missing is a loud failure, never a skip.
pub fn redis_url() -> String {
    std::env::var(REDIS_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{REDIS_URL_VAR} is not set: the Redis cache suites need Redis. Run the whole suite \
             with `tests/run` (it points them at 127.0.0.1:6379), or export \
             {REDIS_URL_VAR}=redis://127.0.0.1:6379/0"
        )
    })
}

/// Configuration putting an app's history cache in the test Redis under a prefix of its own.
pub fn redis_env() -> Vec<(String, String)> {
    vec![
        ("REDIS_URL".into(), redis_url()),
        (
            "REDIS_KEY_PREFIX".into(),
            format!("lighttech-test:{}:", uuid::Uuid::new_v4().simple()),
        ),
        // Generous: the shared Redis is never down in these suites, and CI machines are busy.
        ("REDIS_TIMEOUT_MS".into(), "1000".into()),
    ]
}

/// A random signing key for one test app.
pub fn test_secret() -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..48)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

/// Configuration for tests: defaults, a random key, and any overrides.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = HashMap::new();
    map.insert("SECRET_KEY".into(), test_secret());
    for (k, v) in overrides {
        map.insert((*k).into(), (*v).into());
    }
    Config::from_map(&map).expect("valid test configuration")
}

/// The application under test, on one fixture's store, with a clock the test controls.
#[derive(Clone)]
pub struct TestApp {
    /// The real application state.
    pub app: Arc<App>,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// The configuration's key, to forge tokens with.
    pub secret: String,
    _fixture: Option<Arc<StoreFixture>>,
}

/// A response read back in full.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem `code`, if any.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts status and (for errors) code, with the body in the message.
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.code().as_str()),
            (status, code),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: String,
    /// Username.
    pub username: String,
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

/// The password every test user gets (strong enough for the policy).
pub const PASSWORD: &str = "Correct-Horse-Battery-9";

impl TestApp {
    /// An app on the fixture's store with default configuration.
    pub async fn new(fixture: StoreFixture) -> TestApp {
        Self::with_env(fixture, &[]).await
    }

    /// An app with configuration overrides.
    pub async fn with_env(fixture: StoreFixture, overrides: &[(&str, &str)]) -> TestApp {
        let secret = test_secret();
        let mut all = vec![("SECRET_KEY", secret.as_str())];
        all.extend_from_slice(overrides);
        let config = test_config(&all);
        let key: SecretKey = config.secret_key.clone().expect("the test key is set");
        let clock = Arc::new(ManualClock::new());
        let app = App::new(config, fixture.store(), &key).with_clock(clock.clone());
        TestApp {
            app: Arc::new(app),
            clock,
            secret,
            _fixture: Some(Arc::new(fixture)),
        }
    }

    /// Wraps an application started elsewhere (its clock becomes the test's), given the
    /// signing secret it was started with.
    pub fn from_app(app: App, secret: String) -> TestApp {
        let clock = Arc::new(ManualClock::new());
        TestApp {
            app: Arc::new(app.with_clock(clock.clone())),
            clock,
            secret,
            _fixture: None,
        }
    }

    /// Sends a request through the real router.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        call(&self.app, method, path, headers, body).await
    }

    /// `GET` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.send(Method::GET, path, &headers, None).await
    }

    /// `POST` a JSON body with an optional bearer token and extra headers.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        extra: &[(&str, &str)],
    ) -> Resp {
        post_json(&self.app, path, token, body, extra).await
    }

    /// Registers a user (201 expected).
    pub async fn register(&self, username: &str) -> Value {
        let r = self
            .post(
                "/api/auth/v1/register/",
                None,
                &serde_json::json!({
                    "username": username,
                    "email": format!("{}@example.com", username.to_lowercase()),
                    "password": PASSWORD,
                }),
                &[],
            )
            .await;
        r.expect(201, "");
        r.json()
    }

    /// Logs in (200 expected), returning (access, refresh).
    pub async fn login(&self, username: &str) -> (String, String) {
        let r = self
            .post(
                "/api/auth/v1/login/",
                None,
                &serde_json::json!({"username": username, "password": PASSWORD}),
                &[],
            )
            .await;
        r.expect(200, "");
        let j = r.json();
        (
            j["access"].as_str().unwrap_or_default().to_owned(),
            j["refresh"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Registers and logs in.
    pub async fn user(&self, username: &str) -> TestUser {
        let registered = self.register(username).await;
        let (access, refresh) = self.login(username).await;
        TestUser {
            id: registered["id"].as_str().unwrap_or_default().to_owned(),
            username: username.to_owned(),
            access,
            refresh,
        }
    }

    /// Creates a staff user (as `create-superuser` does) and logs in.
    pub async fn staff(&self, username: &str) -> TestUser {
        let name = lighttech::domain::Username::parse(username).expect("a valid name");
        let email =
            lighttech::domain::Email::parse(&format!("{}@example.com", username.to_lowercase()))
                .expect("a valid email");
        let password = lighttech::domain::password::NewPassword::check(
            PASSWORD.to_owned().into(),
            &name,
            &email,
        )
        .expect("the test password passes the policy");
        let user = lighttech::service::auth::register(
            &self.app,
            lighttech::service::auth::Registration {
                username: name,
                email,
                password,
                is_staff: true,
            },
        )
        .await
        .expect("register a staff user");
        let (access, refresh) = self.login(username).await;
        TestUser {
            id: user.id.to_string(),
            username: username.to_owned(),
            access,
            refresh,
        }
    }

    /// Deposits (201 expected).
    pub async fn deposit(&self, user: &TestUser, amount: &str) -> Value {
        let r = self
            .post(
                "/api/balance/v1/deposit/",
                Some(&user.access),
                &serde_json::json!({ "amount": amount }),
                &[],
            )
            .await;
        r.expect(201, "");
        r.json()
    }

    /// The user's balance as text.
    pub async fn balance(&self, user: &TestUser) -> String {
        let r = self.get("/api/balance/v1/", Some(&user.access)).await;
        r.expect(200, "");
        r.json()["balance"].as_str().unwrap_or_default().to_owned()
    }

    /// Every operation of the user, following cursors.
    pub async fn all_operations(&self, user: &TestUser) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = "/api/balance/v1/operations/?limit=100".to_owned();
        loop {
            let r = self.get(&path, Some(&user.access)).await;
            r.expect(200, "");
            let j = r.json();
            out.extend(j["results"].as_array().cloned().unwrap_or_default());
            match j["next_cursor"].as_str() {
                Some(c) => path = format!("/api/balance/v1/operations/?limit=100&cursor={c}"),
                None => return out,
            }
        }
    }
}

/// Sends a request to an app through [`handle`], as the local server and Lambda do.
pub async fn call(
    app: &App,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let mut builder = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let body = match body {
        Some(b) => lambda_http::Body::Binary(b),
        None => lambda_http::Body::Empty,
    };
    let request = builder.body(body).expect("a valid test request");
    let response = handle(app, request, Scope::All).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        lambda_http::Body::Text(t) => t.into_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => Vec::new(),
    };
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// `POST` JSON to an app.
pub async fn post_json(
    app: &App,
    path: &str,
    token: Option<&str>,
    body: &Value,
    extra: &[(&str, &str)],
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    headers.extend_from_slice(extra);
    call(
        app,
        Method::POST,
        path,
        &headers,
        Some(serde_json::to_vec(body).expect("serializable")),
    )
    .await
}

/// A seed for a store's injected faults, drawn from the test's [`seeded_rng`] (which prints
/// the run's seed), so a replay with that seed draws the same faults in the same order.
pub fn fault_seed() -> u64 {
    use rand::RngExt;
    seeded_rng("injected faults", 0).random()
}

/// The variable that replays a random test: its seed, as printed by [`seeded_rng`].
pub const SEED_VAR: &str = "LIGHTTECH_TEST_SEED";

/// A random generator for one stream of a random test (a worker, say), printing the run's seed
/// so a failure can be replayed with `LIGHTTECH_TEST_SEED=<seed>`. One seed per process, from
/// the variable or fresh; each stream derives its own from it.
pub fn seeded_rng(test: &str, stream: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| match std::env::var(SEED_VAR) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a whole number")),
        Err(_) => rand::random(),
    });
    if stream == 0 {
        // Captured with the test's output: shown when it fails.
        eprintln!("{test}: random seed {seed} (replay with {SEED_VAR}={seed})");
    }
    rand::rngs::StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
