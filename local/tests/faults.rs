//! Fault tolerance: crashes and outages under load lose nothing and split no transfer.
//!
//! Each scenario runs the bank workload (deposits, withdrawals, transfers and reads, every write
//! with its own `Idempotency-Key`) against a real `lighttech-local` process while something
//! breaks, and clients retry every request whose answer they did not get — and every `503` —
//! with the same key. At the end the books must balance:
//!
//! - the sum of balances equals the initial deposits plus acknowledged deposits minus
//!   acknowledged withdrawals;
//! - every acknowledged operation is in its owner's history exactly once, and nothing else is;
//! - every transfer has both sides (its id appears exactly twice) or neither;
//! - each account's newest `balance_after` equals its balance.
//!
//! Reads are checked too: they answer `200`, or `503` with `Retry-After` — never anything else.
//! A response marked `Idempotent-Replayed: true` is counted; it must be a `201`, and where the
//! server does not retry internally it must answer a retry (an earlier attempt of the same
//! request went unanswered or got `503`), since every request has a fresh key.
//!
//! Scenarios: SIGKILL of the server several times (SQLite, PostgreSQL); a PostgreSQL restart
//! (requests during the outage get `503` with `Retry-After`, the server recovers by itself);
//! a request the server received and applied but whose client hung up before reading the
//! answer, retried with the same key: the retry replays the original answer (SQLite,
//! PostgreSQL); start-up faults (one clear line, no panic); DynamoDB throttling, 500s and
//! answers lost after moto applied the call, injected by a proxy in front of moto.
//!
//! `LIGHTTECH_FAULT_OPS` (default 40) sets the operations per client; `tests/run --test faults`
//! uses the default, `LIGHTTECH_FAULT_OPS=400 tests/run --test faults` is the longer run.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lighttech_tests::wire::{WireResponse, try_request};
use lighttech_tests::{PASSWORD, PgDatabase, PrivateCluster, dynamodb_endpoint};
use rand::RngExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Scenarios share machine-wide things (ports they free and take again): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "fault-suite-signing-key-0123456789abcdef";
const USERS: usize = 5;
const INITIAL_MINOR: i64 = 10_000;

fn ops_per_client() -> usize {
    std::env::var("LIGHTTECH_FAULT_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// A `lighttech-local` process that can be killed and started again on the same port.
struct ServerProcess {
    child: Option<Child>,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(extra_env: &[(&str, &str)], init: bool) -> ServerProcess {
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

    async fn spawn(&mut self, init: bool) {
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
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("send SIGKILL");
            let _ = child.wait().await;
        }
    }

    fn errors_logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<WireResponse> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    try_request(addr, "GET", path, &headers, b"", Duration::from_secs(5)).await
}

/// What the clients saw, for the final report.
#[derive(Default)]
struct Tally {
    retries: AtomicU32,
    unanswered: AtomicU32,
    unavailable: AtomicU32,
    /// Writes answered with `Idempotent-Replayed: true`: applied by an attempt whose answer was
    /// lost, replayed to a retry.
    replayed: AtomicU32,
    /// Replays answering a request's first attempt. Every request has a fresh key, so only a
    /// retry inside the server (the AWS SDK's, after a lost DynamoDB answer) can cause one.
    unprompted_replays: AtomicU32,
    /// Reads answered `503` (the only answer besides `200` a read may give here).
    reads_unavailable: AtomicU32,
    /// Writes acknowledged (`201`) so far.
    acknowledged: AtomicU32,
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} retries ({} unanswered, {} answered 503), {} replayed ({} on a first attempt), \
             {} reads answered 503",
            self.retries.load(Ordering::Relaxed),
            self.unanswered.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.replayed.load(Ordering::Relaxed),
            self.unprompted_replays.load(Ordering::Relaxed),
            self.reads_unavailable.load(Ordering::Relaxed),
        )
    }
}

/// A read's answer, if any: `200`, or `503 service_unavailable` with `Retry-After`.
fn check_read(answer: Option<WireResponse>, path: &str, tally: &Tally) {
    let Some(r) = answer else {
        return;
    };
    match r.status {
        200 => {}
        503 => {
            tally.reads_unavailable.fetch_add(1, Ordering::Relaxed);
            assert!(r.header("retry-after").is_some(), "503 without Retry-After");
            assert_eq!(r.json()["code"], "service_unavailable");
        }
        status => panic!("GET {path} answered {status}: {}", r.json()),
    }
}

/// Sends until an answer other than `503` arrives, with the same bytes (and so the same
/// `Idempotency-Key`) every time.
async fn until_answered(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &Value,
    key: Option<&str>,
    tally: &Tally,
) -> WireResponse {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    let body = body.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = true;
    let mut missed = false;
    loop {
        if !first {
            tally.retries.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match try_request(
            addr,
            "POST",
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(5),
        )
        .await
        {
            Some(r) if r.status == 503 => {
                tally.unavailable.fetch_add(1, Ordering::Relaxed);
                missed = true;
                assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                assert_eq!(r.json()["code"], "service_unavailable");
            }
            Some(r) => {
                if r.header("idempotent-replayed") == Some("true") {
                    tally.replayed.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(r.status, 201, "a replay of a failure: {}", r.json());
                    if !missed {
                        tally.unprompted_replays.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return r;
            }
            None => {
                tally.unanswered.fetch_add(1, Ordering::Relaxed);
                missed = true;
            }
        }
        assert!(Instant::now() < deadline, "{path} never got an answer");
        let pause = rand::rng().random_range(20..120);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

struct Bank {
    addr: SocketAddr,
    names: Vec<String>,
    tokens: Vec<String>,
}

/// An operation a client saw acknowledged with `201`.
#[derive(Debug, Clone)]
struct Acked {
    user: usize,
    kind: &'static str,
    minor: i64,
    id: String,
    transfer_id: Option<String>,
}

fn minor(text: &str) -> i64 {
    lighttech::domain::Money::parse_amount(text)
        .map(|m| m.minor())
        .unwrap_or_else(|_| panic!("not an amount: {text}"))
}

async fn open_bank(addr: SocketAddr, tally: &Tally) -> Bank {
    let mut names = Vec::new();
    let mut tokens = Vec::new();
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..USERS {
        let name = format!("u{}{i}", &prefix[..8]);
        let register = json!({
            "username": name, "email": format!("{name}@example.com"), "password": PASSWORD,
        });
        let r = until_unauthenticated(addr, "/api/auth/v1/register/", &register, tally).await;
        assert!(
            r.status == 201 || r.json()["code"] == "username_taken",
            "{}",
            r.json()
        );
        let login = json!({"username": name, "password": PASSWORD});
        let r = until_unauthenticated(addr, "/api/auth/v1/login/", &login, tally).await;
        assert_eq!(r.status, 200, "{}", r.json());
        let token = r.json()["access"].as_str().unwrap().to_owned();
        let r = until_answered(
            addr,
            "/api/balance/v1/deposit/",
            &token,
            &json!({"amount": "100.00", "description": "opening"}),
            Some(&format!("open-{name}")),
            tally,
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.json());
        names.push(name);
        tokens.push(token);
    }
    Bank {
        addr,
        names,
        tokens,
    }
}

/// Registration and login carry no idempotency key: a retried registration may meet its own
/// first attempt (`username_taken`), which is fine for this setup.
async fn until_unauthenticated(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    tally: &Tally,
) -> WireResponse {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match try_request(
            addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            Duration::from_secs(5),
        )
        .await
        {
            Some(r) if r.status != 503 => return r,
            _ => tally.retries.fetch_add(1, Ordering::Relaxed),
        };
        assert!(Instant::now() < deadline, "{path} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client: at least `ops` random operations, each retried until answered, and more until
/// `busy` is cleared (so faults always land under load).
async fn client(
    bank: Arc<Bank>,
    worker: usize,
    ops: usize,
    tally: Arc<Tally>,
    busy: Arc<AtomicBool>,
) -> Vec<Acked> {
    let mut rng = lighttech_tests::seeded_rng("bank_client", worker as u64);
    let mut acked = Vec::new();
    for n in 0.. {
        if n >= ops && !busy.load(Ordering::SeqCst) {
            break;
        }
        let user = rng.random_range(0..USERS);
        let key = format!("w{worker}-{n}-{}", uuid::Uuid::new_v4().simple());
        let roll = rng.random_range(0..100);
        let (path, body, kind) = if roll < 30 {
            let amount = rng.random_range(100..=5_000);
            (
                "/api/balance/v1/deposit/",
                json!({"amount": lighttech::domain::Money::from_minor(amount).to_string()}),
                "deposit",
            )
        } else if roll < 50 {
            let amount = rng.random_range(100..=3_000);
            (
                "/api/balance/v1/withdraw/",
                json!({"amount": lighttech::domain::Money::from_minor(amount).to_string()}),
                "withdrawal",
            )
        } else if roll < 90 {
            let amount = rng.random_range(100..=4_000);
            let to = (user + rng.random_range(1..USERS)) % USERS;
            (
                "/api/balance/v1/transfer/",
                json!({"to": bank.names[to], "amount": lighttech::domain::Money::from_minor(amount).to_string()}),
                "transfer_out",
            )
        } else {
            // Reads: an answer (there may be none while the server is down) is 200 or 503.
            for path in ["/api/balance/v1/", "/api/balance/v1/operations/?limit=5"] {
                let answer = get(bank.addr, path, Some(&bank.tokens[user])).await;
                check_read(answer, path, &tally);
            }
            continue;
        };
        let r = until_answered(
            bank.addr,
            path,
            &bank.tokens[user],
            &body,
            Some(&key),
            &tally,
        )
        .await;
        match (r.status, r.json()["code"].as_str()) {
            (201, _) => {
                let op = r.json();
                assert_eq!(op["type"], kind, "{op}");
                tally.acknowledged.fetch_add(1, Ordering::Relaxed);
                acked.push(Acked {
                    user,
                    kind,
                    minor: minor(op["amount"].as_str().unwrap()),
                    id: op["id"].as_str().unwrap().to_owned(),
                    transfer_id: op["transfer_id"].as_str().map(str::to_owned),
                });
            }
            (422, Some("insufficient_funds")) | (422, Some("balance_limit_exceeded")) => {}
            (status, code) => panic!("unexpected answer {status} {code:?}: {}", r.json()),
        }
    }
    acked
}

async fn all_operations(addr: SocketAddr, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/api/balance/v1/operations/?limit=100".to_owned();
    loop {
        let r = get(addr, &path, Some(token))
            .await
            .expect("history answers");
        assert_eq!(r.status, 200, "{}", r.json());
        let page = r.json();
        out.extend(page["results"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/balance/v1/operations/?limit=100&cursor={c}"),
            None => return out,
        }
    }
}

/// The end-state checks of the module documentation. Returns a one-line summary.
async fn check_books(bank: &Bank, acked: &[Acked]) -> String {
    let mut total = 0i64;
    let mut seen_ops: HashMap<String, usize> = HashMap::new();
    let mut transfer_sides: HashMap<String, usize> = HashMap::new();
    let mut own_ops: HashSet<String> = HashSet::new();
    for (i, token) in bank.tokens.iter().enumerate() {
        let r = get(bank.addr, "/api/balance/v1/", Some(token))
            .await
            .expect("balance answers");
        let balance = minor(r.json()["balance"].as_str().unwrap());
        total += balance;
        let ops = all_operations(bank.addr, token).await;
        assert_eq!(
            ops.first()
                .map(|o| minor(o["balance_after"].as_str().unwrap())),
            Some(balance),
            "{}: newest balance_after is the balance",
            bank.names[i]
        );
        for op in &ops {
            let id = op["id"].as_str().unwrap().to_owned();
            *seen_ops.entry(id.clone()).or_default() += 1;
            if let Some(t) = op["transfer_id"].as_str() {
                *transfer_sides.entry(t.to_owned()).or_default() += 1;
            }
            if op["type"] != "transfer_in" && op["description"] != "opening" {
                own_ops.insert(id);
            }
        }
    }
    let deposits: i64 = acked
        .iter()
        .filter(|a| a.kind == "deposit")
        .map(|a| a.minor)
        .sum();
    let withdrawals: i64 = acked
        .iter()
        .filter(|a| a.kind == "withdrawal")
        .map(|a| a.minor)
        .sum();
    let expected = INITIAL_MINOR * USERS as i64 + deposits - withdrawals;
    assert_eq!(total, expected, "money was created or destroyed");
    assert!(
        seen_ops.values().all(|n| *n == 1),
        "an operation appears twice"
    );
    for a in acked {
        assert_eq!(
            seen_ops.get(&a.id),
            Some(&1),
            "acknowledged {a:?} is missing from user {}'s history",
            a.user
        );
        if let Some(t) = &a.transfer_id {
            assert_eq!(transfer_sides.get(t), Some(&2), "transfer {t} is split");
        }
    }
    assert!(
        transfer_sides.values().all(|n| *n == 2),
        "a transfer has one side only"
    );
    let acked_ids: HashSet<String> = acked.iter().map(|a| a.id.clone()).collect();
    assert_eq!(
        own_ops, acked_ids,
        "history holds exactly the acknowledged operations"
    );
    format!(
        "{} acknowledged ({} deposits, {} withdrawals, {} transfers), total {} = expected",
        acked.len(),
        acked.iter().filter(|a| a.kind == "deposit").count(),
        acked.iter().filter(|a| a.kind == "withdrawal").count(),
        acked.iter().filter(|a| a.kind == "transfer_out").count(),
        total
    )
}

async fn run_workload(
    bank: Arc<Bank>,
    tally: Arc<Tally>,
    clients: usize,
    busy: Arc<AtomicBool>,
) -> Vec<Acked> {
    let ops = ops_per_client();
    let mut tasks = Vec::new();
    for w in 0..clients {
        tasks.push(tokio::spawn(client(
            Arc::clone(&bank),
            w,
            ops,
            Arc::clone(&tally),
            Arc::clone(&busy),
        )));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("a client panicked"));
    }
    acked
}

/// The workload while the server is SIGKILLed `kills` times at random moments.
async fn kills_lose_nothing(extra_env: &[(&str, &str)], backend: &str) {
    let mut server = ServerProcess::start(extra_env, true).await;
    let tally = Arc::new(Tally::default());
    let bank = Arc::new(open_bank(server.addr, &tally).await);
    let busy = Arc::new(AtomicBool::new(true));
    let workload = tokio::spawn(run_workload(
        Arc::clone(&bank),
        Arc::clone(&tally),
        4,
        Arc::clone(&busy),
    ));
    let kills = 5;
    let mut done = 0;
    while done < kills {
        let wait = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill().await;
        let down = rand::rng().random_range(50..300);
        tokio::time::sleep(Duration::from_millis(down)).await;
        server.spawn(false).await;
        done += 1;
    }
    busy.store(false, Ordering::SeqCst);
    let acked = workload.await.expect("the workload finished");
    let summary = check_books(&bank, &acked).await;
    eprintln!(
        "{backend}: survived {done} SIGKILLs; {}; {summary}",
        tally.summary()
    );
    assert!(
        tally.unanswered.load(Ordering::Relaxed) > 0,
        "no request was ever cut off"
    );
    assert_eq!(
        tally.unprompted_replays.load(Ordering::Relaxed),
        0,
        "a request with a fresh key was answered as a replay"
    );
    assert_eq!(server.errors_logged(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_survives_repeated_sigkills() {
    let _serial = SERIAL.lock().await;
    kills_lose_nothing(&[], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_survives_repeated_sigkills() {
    let _serial = SERIAL.lock().await;
    let db = PgDatabase::create().await;
    kills_lose_nothing(&[("DATABASE_URL", db.url.as_str())], "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_answers_503_and_the_server_recovers_by_itself() {
    let _serial = SERIAL.lock().await;
    let cluster = PrivateCluster::create();
    let db = PgDatabase::create_on(cluster.admin_url()).await;
    let server = ServerProcess::start(&[("DATABASE_URL", db.url.as_str())], true).await;
    let tally = Arc::new(Tally::default());
    let bank = Arc::new(open_bank(server.addr, &tally).await);
    let busy = Arc::new(AtomicBool::new(true));
    let workload = tokio::spawn(run_workload(
        Arc::clone(&bank),
        Arc::clone(&tally),
        4,
        Arc::clone(&busy),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.ctl("stop"), "could not stop PostgreSQL");
    // While it is down, the API says so with the contract's code.
    let during = get(server.addr, "/api/balance/v1/", Some(&bank.tokens[0]))
        .await
        .expect("the server answers while the database is down");
    assert_eq!(during.status, 503, "{}", during.json());
    assert_eq!(during.json()["code"], "service_unavailable");
    assert!(during.header("retry-after").is_some());
    let health = get(server.addr, "/api/health/", None).await.unwrap();
    assert_eq!(health.status, 503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cluster.ctl("start"), "could not start PostgreSQL");
    // Back by itself: no restart of the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(server.addr, "/api/health/", None)
            .await
            .is_some_and(|r| r.status == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And not only its health: money moves again.
    let before = tally.acknowledged.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.acknowledged.load(Ordering::Relaxed) < before + 20 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    busy.store(false, Ordering::SeqCst);
    let acked = workload.await.expect("the workload finished");
    let summary = check_books(&bank, &acked).await;
    eprintln!("postgres restart: {}; {summary}", tally.summary());
    assert!(
        tally.unavailable.load(Ordering::Relaxed) > 0,
        "no client saw the outage"
    );
    assert_eq!(
        tally.unprompted_replays.load(Ordering::Relaxed),
        0,
        "a request with a fresh key was answered as a replay"
    );
    assert_eq!(server.errors_logged(), Vec::<String>::new());
}

async fn balances(bank: &Bank) -> Vec<i64> {
    let mut out = Vec::new();
    for token in &bank.tokens {
        let r = get(bank.addr, "/api/balance/v1/", Some(token))
            .await
            .expect("balance answers");
        assert_eq!(r.status, 200, "{}", r.json());
        out.push(minor(r.json()["balance"].as_str().unwrap()));
    }
    out
}

/// A deposit and a transfer, each sent in full over a raw connection whose client hangs up at
/// once, without reading a byte of the answer: the way a client times out after its request
/// went through. The server still carries the request to its end (the balances come to show
/// it; a hang-up must not cancel a movement halfway). The retry with the same key must replay
/// the original result (the very operation now in the history) with `Idempotent-Replayed:
/// true`, and the money must have moved once.
async fn a_cut_off_request_is_replayed_to_its_retry(extra_env: &[(&str, &str)], backend: &str) {
    let server = ServerProcess::start(extra_env, true).await;
    let tally = Tally::default();
    let bank = open_bank(server.addr, &tally).await;

    // Twenty deposits whose clients hang up as soon as they are sent: every one is applied.
    const HUNG_UP: i64 = 20;
    let start = balances(&bank).await[0];
    let auth = format!("Bearer {}", bank.tokens[0]);
    for n in 0..HUNG_UP {
        let key = format!("hung-up-{n}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key.as_str()),
        ];
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(&lighttech_tests::wire::request_bytes(
                server.addr,
                "POST",
                "/api/balance/v1/deposit/",
                &headers,
                br#"{"amount": "1.00"}"#,
            ))
            .await
            .unwrap();
        drop(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while balances(&bank).await[0] != start + HUNG_UP * 100 {
        assert!(
            Instant::now() < deadline,
            "deposits whose clients hung up were not all applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cases = [
        (
            "/api/balance/v1/deposit/",
            0,
            json!({"amount": "7.00"}),
            [(0, 700)].as_slice(),
        ),
        (
            "/api/balance/v1/transfer/",
            1,
            json!({"to": bank.names[2], "amount": "3.00"}),
            [(1, -300), (2, 300)].as_slice(),
        ),
    ];
    for (n, (path, user, body, moves)) in cases.into_iter().enumerate() {
        let key = format!("cut-off-{n}");
        let before = balances(&bank).await;
        let mut expected = before.clone();
        for (who, delta) in moves {
            expected[*who] += delta;
        }
        let auth = format!("Bearer {}", bank.tokens[user]);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key.as_str()),
        ];
        let mut cut_off = TcpStream::connect(server.addr).await.unwrap();
        cut_off
            .write_all(&lighttech_tests::wire::request_bytes(
                server.addr,
                "POST",
                path,
                &headers,
                body.to_string().as_bytes(),
            ))
            .await
            .unwrap();
        // The client gives up: the answer is never read.
        drop(cut_off);
        let deadline = Instant::now() + Duration::from_secs(30);
        while balances(&bank).await != expected {
            assert!(
                Instant::now() < deadline,
                "{path}: the cut-off request was never applied"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let retry = until_answered(
            server.addr,
            path,
            &bank.tokens[user],
            &body,
            Some(&key),
            &tally,
        )
        .await;
        assert_eq!(retry.status, 201, "{}", retry.json());
        assert_eq!(
            retry.header("idempotent-replayed"),
            Some("true"),
            "{path}: the retry was not answered as a replay"
        );
        let history = all_operations(server.addr, &bank.tokens[user]).await;
        let original = history
            .iter()
            .find(|op| op["id"] == retry.json()["id"])
            .unwrap_or_else(|| panic!("the replayed operation is not in the history"));
        assert_eq!(&retry.json(), original, "the replay is the original result");
        assert_eq!(
            balances(&bank).await,
            expected,
            "{path}: the money moved more than once"
        );
        let matching = history
            .iter()
            .filter(|op| op["amount"] == body["amount"])
            .count();
        assert_eq!(matching, 1, "{path}: one operation, not {matching}");
    }
    assert_eq!(server.errors_logged(), Vec::<String>::new());
    eprintln!(
        "{backend}: {} cut-off requests applied once, replayed to their retries",
        tally.replayed.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replays_a_cut_off_request_to_its_retry() {
    let _serial = SERIAL.lock().await;
    a_cut_off_request_is_replayed_to_its_retry(&[], "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replays_a_cut_off_request_to_its_retry() {
    let _serial = SERIAL.lock().await;
    let db = PgDatabase::create().await;
    a_cut_off_request_is_replayed_to_its_retry(&[("DATABASE_URL", db.url.as_str())], "postgres")
        .await;
}

/// Runs the server with this environment and expects it to refuse to start; returns the line.
async fn refuses_to_start(env: &[(&str, &str)], args: &[&str], expect: &[&str]) -> String {
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

#[tokio::test]
async fn start_up_faults_exit_non_zero_with_one_clear_line() {
    let _serial = SERIAL.lock().await;
    refuses_to_start(
        &[("DATABASE_URL", "postgres://lighttech@127.0.0.1:1/lighttech")],
        &[],
        &["store", "127.0.0.1:1"],
    )
    .await;
    refuses_to_start(
        &[(
            "DATABASE_URL",
            "postgres://no_such_role:secret@127.0.0.1:5432/postgres",
        )],
        &[],
        &["store", "no_such_role"],
    )
    .await;
    let db = PgDatabase::create().await;
    refuses_to_start(
        &[("DATABASE_URL", db.url.as_str())],
        &[],
        &["version 0", "--init"],
    )
    .await;
    let aws = [
        ("AWS_ENDPOINT_URL", dynamodb_endpoint()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
    ];
    let table = format!("dynamodb://lt-missing-{}", uuid::Uuid::new_v4().simple());
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("DATABASE_URL", &table));
    refuses_to_start(&env, &[], &["does not exist", "--init"]).await;
    refuses_to_start(&[("SECRET_KEY", "too-short")], &[], &["SECRET_KEY", "32"]).await;
    // Secrets Manager unreachable: nothing listens where it should be.
    let dead = format!("http://127.0.0.1:{}", lighttech_tests::wire::free_port());
    refuses_to_start(
        &[
            ("SECRET_KEY_ARN", "lighttech/signing-key"),
            ("AWS_ENDPOINT_URL", &dead),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        &[],
        &["signing key", "Secrets Manager"],
    )
    .await;
    // Secrets Manager (moto) answers, but the secret is not there...
    let moto = dynamodb_endpoint();
    fn with_secret<'a>(arn: &'a str, endpoint: &'a str) -> [(&'a str, &'a str); 5] {
        [
            ("SECRET_KEY_ARN", arn),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
    }
    let missing = format!("lt-no-such-key-{}", uuid::Uuid::new_v4().simple());
    refuses_to_start(
        &with_secret(&missing, &moto),
        &[],
        &["signing key", &missing, "ResourceNotFoundException"],
    )
    .await;
    // ...or it holds a key too short to sign with (whose value must not be printed).
    let short = "short-signing-key-value";
    let arn = lighttech_tests::create_emulated_secret(
        &format!("lt-short-key-{}", uuid::Uuid::new_v4().simple()),
        short,
    )
    .await;
    let line = refuses_to_start(
        &with_secret(&arn, &moto),
        &[],
        &["signing key", &arn, "at least 32"],
    )
    .await;
    assert!(
        !line.contains(short),
        "the secret's value is printed: {line}"
    );
    refuses_to_start(&[("DATABASE_URL", "mysql://x")], &[], &["DATABASE_URL"]).await;
}

/// A proxy in front of moto that, while `faulty` is set, meets a fraction of DynamoDB
/// data-plane calls with a fault, in equal shares: it answers `ThrottlingException` (400) or
/// `InternalServerError` (500) itself, or it forwards the call to moto — which applies it —
/// and then hangs up without passing the answer on (applied, unanswered).
struct FaultProxy {
    addr: SocketAddr,
    faulty: Arc<AtomicBool>,
    injected: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

impl FaultProxy {
    async fn start(upstream: SocketAddr, rate: f64) -> FaultProxy {
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
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
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
                    let fault = (data_plane
                        && faulty.load(Ordering::SeqCst)
                        && rand::rng().random_bool(rate))
                    .then(|| rand::rng().random_range(0..3));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_dynamodb_throttling_500s_and_lost_answers_are_absorbed() {
    let _serial = SERIAL.lock().await;
    let moto: SocketAddr = dynamodb_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback moto address");
    let proxy = FaultProxy::start(moto, 0.15).await;
    let endpoint = format!("http://{}", proxy.addr);
    let table = format!("dynamodb://lt-fault-{}", uuid::Uuid::new_v4().simple());
    let server = ServerProcess::start(
        &[
            ("DATABASE_URL", table.as_str()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        true,
    )
    .await;
    let tally = Arc::new(Tally::default());
    let bank = Arc::new(open_bank(server.addr, &tally).await);
    let acked = run_workload(
        Arc::clone(&bank),
        Arc::clone(&tally),
        3,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    // The books are read back without faults: what is checked is what was stored.
    proxy.faulty.store(false, Ordering::SeqCst);
    let summary = check_books(&bank, &acked).await;
    let (injected, dropped) = (
        proxy.injected.load(Ordering::Relaxed),
        proxy.dropped.load(Ordering::Relaxed),
    );
    eprintln!(
        "dynamodb: {injected} errors injected and {dropped} answers dropped after moto applied \
         the call, in {} calls; {}; {summary}",
        injected + dropped + proxy.forwarded.load(Ordering::Relaxed),
        tally.summary(),
    );
    assert!(injected > 10, "too few errors injected");
    assert!(dropped > 5, "too few answers dropped");
    assert_eq!(server.errors_logged(), Vec::<String>::new());
}
