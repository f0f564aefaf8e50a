//! The processes a fault is made with: a `lighttech-local` server that can be SIGKILLed and
//! started again, one that must refuse to start, and a proxy that injects DynamoDB faults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lighttech_tests::wire::{WireResponse, try_request};
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const SECRET: &str = "fault-suite-signing-key-0123456789abcdef";

/// A `lighttech-local` process that can be killed and started again on the same port.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub async fn start(extra_env: &[(&str, &str)], init: bool) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("SECRET_KEY".into(), SECRET.into()),
            ("RUST_LOG".into(), "warn".into()),
            ("ACCESS_TOKEN_LIFETIME_MINUTES".into(), "120".into()),
            (
                "LIGHTTECH_DATA_DIR".into(),
                dir.path().display().to_string(),
            ),
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}/bank.db", dir.path().display()),
            ),
        ];
        for (k, v) in extra_env {
            env.retain(|(name, _)| name != k);
            env.push(((*k).into(), (*v).into()));
        }
        let mut server = ServerProcess {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], lighttech_tests::wire::free_port())),
            env,
            log: dir.path().join("server.log"),
            _dir: dir,
        };
        server.spawn(init).await;
        server
    }

    pub async fn spawn(&mut self, init: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lighttech-local"));
        cmd.arg("--listen").arg(self.addr.to_string());
        if init {
            cmd.arg("--init");
        }
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("start lighttech-local"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = get(self.addr, "/api/health/", None).await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not come up: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("send SIGKILL");
            let _ = child.wait().await;
        }
    }

    pub fn errors_logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<WireResponse> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    try_request(addr, "GET", path, &headers, b"", Duration::from_secs(5)).await
}

/// Runs the server with this environment and expects it to refuse to start; returns the line.
pub async fn refuses_to_start(env: &[(&str, &str)], args: &[&str], expect: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let sqlite = format!("sqlite://{}/x.db", dir.path().display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lighttech-local"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{}", lighttech_tests::wire::free_port()),
    ])
    .args(args)
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("RUST_LOG", "warn")
    .env("LIGHTTECH_DATA_DIR", &data_dir)
    .env("DATABASE_URL", &sqlite)
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the process exits on its own")
        .expect("run lighttech-local");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success(), "started despite {env:?}");
    assert_eq!(lines.len(), 1, "one line, not {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for word in expect {
        assert!(lines[0].contains(word), "{:?} lacks {word:?}", lines[0]);
    }
    eprintln!("start-up fault {env:?}: {}", lines[0]);
    lines[0].to_owned()
}

/// A proxy in front of moto that, while `faulty` is set, meets a fraction of DynamoDB
/// data-plane calls with a fault, in equal shares: it answers `ThrottlingException` (400) or
/// `InternalServerError` (500) itself, or it forwards the call to moto — which applies it —
/// and then hangs up without passing the answer on (applied, unanswered).
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub faulty: Arc<AtomicBool>,
    pub injected: Arc<AtomicUsize>,
    pub dropped: Arc<AtomicUsize>,
    pub forwarded: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, rate: f64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = FaultProxy {
            addr: listener.local_addr().unwrap(),
            faulty: Arc::new(AtomicBool::new(true)),
            injected: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
            forwarded: Arc::new(AtomicUsize::new(0)),
        };
        let faulty = Arc::clone(&proxy.faulty);
        let injected = Arc::clone(&proxy.injected);
        let dropped = Arc::clone(&proxy.dropped);
        let forwarded = Arc::clone(&proxy.forwarded);
        let draws = Arc::new(std::sync::Mutex::new(lighttech_tests::seeded_rng(
            "fault proxy",
            1001,
        )));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let draws = Arc::clone(&draws);
                let faulty = Arc::clone(&faulty);
                let injected = Arc::clone(&injected);
                let dropped = Arc::clone(&dropped);
                let forwarded = Arc::clone(&forwarded);
                tokio::spawn(async move {
                    let Some(request) = lighttech_tests::wire::read_message(&mut client).await
                    else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    let data_plane = [
                        "getitem",
                        "batchgetitem",
                        "putitem",
                        "updateitem",
                        "deleteitem",
                        "query",
                        "transactwriteitems",
                    ]
                    .iter()
                    .any(|op| head.contains(&format!("x-amz-target: dynamodb_20120810.{op}")));
                    let fault = (data_plane && faulty.load(Ordering::SeqCst))
                        .then(|| {
                            let mut draws = draws.lock().unwrap_or_else(|e| e.into_inner());
                            draws.random_bool(rate).then(|| draws.random_range(0..3))
                        })
                        .flatten();
                    if let Some(kind @ (0 | 1)) = fault {
                        injected.fetch_add(1, Ordering::Relaxed);
                        let (status, kind) = if kind == 0 {
                            ("400 Bad Request", "ThrottlingException")
                        } else {
                            ("500 Internal Server Error", "InternalServerError")
                        };
                        let body = format!(
                            "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{kind}\",\"message\":\"injected\"}}"
                        );
                        let response = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(response.as_bytes()).await;
                        return;
                    }
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if up.write_all(&request).await.is_err() {
                        return;
                    }
                    let mut response = Vec::new();
                    let _ = up.read_to_end(&mut response).await;
                    if fault.is_some() {
                        // moto has applied the call; its answer is lost on the way back.
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = client.write_all(&response).await;
                });
            }
        });
        proxy
    }
}
