//! `lighttech-local create-superuser` on the stores that must be prepared first: PostgreSQL and
//! DynamoDB (moto). The real binary is run as docs/administration.md documents it —
//! refused with a pointer to `--init` on an unprepared store, then `--init create-superuser` —
//! and the user it creates logs in to a server on the same store and reaches the staff-only
//! admin API, where an ordinary user is refused. (On SQLite, which prepares itself, the browser
//! and fuzzing suites create their superuser the same way: `tests/e2e/run`, `tests/fuzz/run`.)

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use lighttech_tests::wire::{WireResponse, try_request};
use lighttech_tests::{PASSWORD, PgDatabase, dynamodb_endpoint};
use serde_json::json;
use tokio::process::{Child, Command};

const SECRET: &str = "create-superuser-signing-key-0123456789abcdef";

/// `lighttech-local` with exactly this environment (plus a signing key and a data directory of
/// its own), started in `dir` so that no `.env` of the workspace is read.
fn command(dir: &std::path::Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lighttech-local"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("SECRET_KEY", SECRET)
        .env("LIGHTTECH_DATA_DIR", dir.join("data"))
        .envs(env.iter().copied())
        .kill_on_drop(true);
    cmd
}

/// Runs `create-superuser root` (with `--init` first when asked), the password from
/// `LIGHTTECH_SUPERUSER_PASSWORD`.
async fn create_superuser(dir: &std::path::Path, env: &[(&str, &str)], init: bool) -> Output {
    let mut cmd = command(dir, env);
    if init {
        cmd.arg("--init");
    }
    cmd.args([
        "create-superuser",
        "--username",
        "root",
        "--email",
        "root@example.com",
    ])
    .env("LIGHTTECH_SUPERUSER_PASSWORD", PASSWORD)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("create-superuser exits on its own")
        .expect("run lighttech-local create-superuser")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Fails with one line naming the problem, and no panic.
fn assert_refused(out: &Output, expect: &[&str]) {
    let lines = stderr_lines(out);
    assert!(!out.status.success(), "succeeded: {lines:?}");
    assert_eq!(lines.len(), 1, "one line, not {lines:?}");
    assert!(!lines[0].contains("panicked"), "{lines:?}");
    for word in expect {
        assert!(lines[0].contains(word), "{:?} lacks {word:?}", lines[0]);
    }
}

/// A server on the same store, up once `/api/health/` answers `200`.
async fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], lighttech_tests::wire::free_port()));
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = command(dir, env)
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start lighttech-local");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = call(addr, "GET", "/api/health/", None, b"").await
            && r.status == 200
        {
            return (child, addr);
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Option<WireResponse> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    try_request(addr, method, path, &headers, body, Duration::from_secs(30)).await
}

async fn login(addr: SocketAddr, username: &str) -> String {
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    let r = call(addr, "POST", "/api/auth/v1/login/", None, body.as_bytes())
        .await
        .expect("an answer to login");
    assert_eq!(r.status, 200, "login as {username}: {:?}", r.json());
    r.json()["access"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// The whole path on one store: refused before `--init`, created with it, refused a second time,
/// then the superuser (and only they) uses the admin API of a server on that store.
async fn superuser_reaches_the_admin_api(env: &[(&str, &str)], not_initialised: &[&str]) {
    let dir = tempfile::tempdir().unwrap();

    let refused = create_superuser(dir.path(), env, false).await;
    assert_refused(&refused, not_initialised);

    let created = create_superuser(dir.path(), env, true).await;
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(
        created.status.success(),
        "create-superuser failed: {:?}",
        stderr_lines(&created)
    );
    assert!(
        stdout.starts_with("superuser root created (id "),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&created.stderr).contains(PASSWORD),
        "the password is never printed"
    );

    // The store is prepared now; the same user cannot be created twice.
    let again = create_superuser(dir.path(), env, false).await;
    assert_refused(&again, &["already exists"]);

    let (mut server, addr) = serve(dir.path(), env).await;
    let staff = login(addr, "root").await;
    let users = call(
        addr,
        "GET",
        "/api/admin/v1/users/?q=root",
        Some(&staff),
        b"",
    )
    .await
    .expect("an answer from the admin API");
    assert_eq!(users.status, 200, "{:?}", users.json());
    let results = users.json()["results"].clone();
    let results = results.as_array().expect("results");
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["username"], "root");
    assert_eq!(results[0]["email"], "root@example.com");
    assert_eq!(results[0]["is_staff"], true);

    // The route is staff-only: a user registered through the API is refused.
    let body = json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD})
        .to_string();
    let registered = call(
        addr,
        "POST",
        "/api/auth/v1/register/",
        None,
        body.as_bytes(),
    )
    .await
    .expect("an answer to register");
    assert_eq!(registered.status, 201, "{:?}", registered.json());
    let alice = login(addr, "alice").await;
    let refused = call(addr, "GET", "/api/admin/v1/users/", Some(&alice), b"")
        .await
        .expect("an answer from the admin API");
    assert_eq!(refused.status, 403, "{:?}", refused.json());
    assert_eq!(refused.json()["code"], "forbidden");

    server.start_kill().expect("stop the server");
    let _ = server.wait().await;
}

#[tokio::test]
async fn create_superuser_on_postgres_after_init_gives_a_staff_user() {
    let db = PgDatabase::create().await;
    superuser_reaches_the_admin_api(&[("DATABASE_URL", db.url.as_str())], &["--init"]).await;
}

#[tokio::test]
async fn create_superuser_on_dynamodb_after_init_gives_a_staff_user() {
    let endpoint = dynamodb_endpoint();
    let table = format!("dynamodb://lt-superuser-{}", uuid::Uuid::new_v4().simple());
    superuser_reaches_the_admin_api(
        &[
            ("DATABASE_URL", table.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        &["does not exist", "--init"],
    )
    .await;
}
