//! `lighttech-local rotate-key` on the embedded default (no `SECRET_KEY`: the generated key in
//! the data directory), run as docs/security.md documents it, with the server running and stopped:
//! the running server is told to restart and keeps its keys until then; after a restart the
//! old key's tokens still work and new ones name the new key; after a second rotation and
//! restart the oldest key's tokens are refused.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lighttech_tests::PASSWORD;
use lighttech_tests::wire::{WireResponse, try_request};
use serde_json::json;
use tokio::process::{Child, Command};

/// `lighttech-local` with only this environment, in `dir` (so no `.env` of the workspace is
/// read), its data and its database inside it.
fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lighttech-local"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("LIGHTTECH_DATA_DIR", dir.join("data"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("data/lighttech.db").display()),
        )
        .envs(env.iter().copied())
        .kill_on_drop(true);
    cmd
}

async fn rotate_key(dir: &Path, env: &[(&str, &str)]) -> Output {
    let run = command(dir, env)
        .arg("rotate-key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("rotate-key exits on its own")
        .expect("run lighttech-local rotate-key")
}

async fn serve(dir: &Path) -> (Child, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], lighttech_tests::wire::free_port()));
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = command(dir, &[])
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

async fn stop(mut child: Child) {
    child.kill().await.expect("stop the server");
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

async fn me(addr: SocketAddr, token: &str) -> u16 {
    call(addr, "GET", "/api/auth/v1/me/", Some(token), b"")
        .await
        .expect("an answer")
        .status
}

async fn login(addr: SocketAddr) -> String {
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let r = call(addr, "POST", "/api/auth/v1/login/", None, body.as_bytes())
        .await
        .expect("an answer to login");
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["access"].as_str().unwrap().to_owned()
}

fn kid(token: &str) -> String {
    let header = URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn rotate_key_keeps_the_old_key_for_one_rotation_and_asks_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (server, addr) = serve(dir).await;
    let body = json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD});
    let r = call(
        addr,
        "POST",
        "/api/auth/v1/register/",
        None,
        body.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let first = login(addr).await;

    // Rotated while the server runs: it says so and asks for a restart; until then the server
    // keeps the keys it started with.
    let rotated = rotate_key(dir, &[]).await;
    assert!(rotated.status.success(), "{rotated:?}");
    let text = stdout(&rotated);
    assert!(text.contains("restart the server"), "{text}");
    assert!(
        text.contains(&kid(&first)),
        "names the previous key: {text}"
    );
    let data = dir.join("data");
    let previous = std::fs::read(data.join("secret_key.previous")).unwrap();
    assert_ne!(previous, std::fs::read(data.join("secret_key")).unwrap());
    assert!(
        !text.contains(&String::from_utf8_lossy(&previous).into_owned()),
        "no key printed"
    );
    assert_eq!(kid(&login(addr).await), kid(&first));
    stop(server).await;

    // Restarted: the old key's token still works, new ones name the new key.
    let (server, addr) = serve(dir).await;
    assert_eq!(me(addr, &first).await, 200);
    let second = login(addr).await;
    assert_ne!(kid(&second), kid(&first));
    stop(server).await;

    // Rotated again with the server stopped, then restarted: the first key is retired.
    let again = rotate_key(dir, &[]).await;
    assert!(again.status.success(), "{again:?}");
    let (server, addr) = serve(dir).await;
    let refused = call(addr, "GET", "/api/auth/v1/me/", Some(&first), b"")
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["code"], "invalid_token");
    assert_eq!(me(addr, &second).await, 200);
    stop(server).await;
}

#[tokio::test]
async fn rotate_key_refuses_keys_kept_elsewhere_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (env, names) in [
        (
            [("SECRET_KEY", "an-environment-key-0123456789abcdef")],
            "SECRET_KEY",
        ),
        (
            [("SECRET_KEY_ARN", "lighttech/signing-key")],
            "SECRET_KEY_ARN",
        ),
    ] {
        let out = rotate_key(dir.path(), &env).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(names), "{err}");
    }
    // Nothing generated yet: nothing to rotate, and nothing created.
    let out = rotate_key(dir.path(), &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("first start"));
    assert!(!dir.path().join("data").exists());
}
