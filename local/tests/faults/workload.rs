//! The bank workload the scenarios run while something breaks: clients that retry with the
//! same key, what they saw (`Tally`), and the check that the books balance at the end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::server::{ServerProcess, get};
use lighttech_tests::PASSWORD;
use lighttech_tests::wire::{WireResponse, try_request};
use rand::RngExt;
use serde_json::{Value, json};

const USERS: usize = 5;
const INITIAL_MINOR: i64 = 10_000;

fn ops_per_client() -> usize {
    std::env::var("LIGHTTECH_FAULT_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// What the clients saw, for the final report.
#[derive(Default)]
pub struct Tally {
    retries: AtomicU32,
    pub unanswered: AtomicU32,
    pub unavailable: AtomicU32,
    /// Writes answered with `Idempotent-Replayed: true`: applied by an attempt whose answer was
    /// lost, replayed to a retry.
    pub replayed: AtomicU32,
    /// Replays answering a request's first attempt. Every request has a fresh key, so only a
    /// retry inside the server (the AWS SDK's, after a lost DynamoDB answer) can cause one.
    unprompted_replays: AtomicU32,
    /// Reads answered `503` (the only answer besides `200` a read may give here).
    reads_unavailable: AtomicU32,
    /// Writes acknowledged (`201`) so far.
    pub acknowledged: AtomicU32,
}

impl Tally {
    pub fn summary(&self) -> String {
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
pub async fn until_answered(
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

pub struct Bank {
    pub addr: SocketAddr,
    pub names: Vec<String>,
    pub tokens: Vec<String>,
}

/// An operation a client saw acknowledged with `201`.
#[derive(Debug, Clone)]
pub struct Acked {
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

pub async fn open_bank(addr: SocketAddr, tally: &Tally) -> Bank {
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

pub async fn all_operations(addr: SocketAddr, token: &str) -> Vec<Value> {
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
pub async fn check_books(bank: &Bank, acked: &[Acked]) -> String {
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

pub async fn run_workload(
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

pub async fn balances(bank: &Bank) -> Vec<i64> {
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

/// The workload of `clients` clients, running in the background until `finish`.
pub struct Background {
    pub bank: Arc<Bank>,
    pub tally: Arc<Tally>,
    busy: Arc<AtomicBool>,
    clients: tokio::task::JoinHandle<Vec<Acked>>,
}

impl Background {
    /// Opens the bank on the server at `addr` and starts the clients.
    pub async fn start(addr: SocketAddr, clients: usize) -> Background {
        let tally = Arc::new(Tally::default());
        let bank = Arc::new(open_bank(addr, &tally).await);
        let busy = Arc::new(AtomicBool::new(true));
        let clients = tokio::spawn(run_workload(
            Arc::clone(&bank),
            Arc::clone(&tally),
            clients,
            Arc::clone(&busy),
        ));
        Background {
            bank,
            tally,
            busy,
            clients,
        }
    }

    /// Lets the clients finish and checks the books; returns their summary.
    pub async fn finish(&mut self) -> String {
        self.busy.store(false, Ordering::SeqCst);
        let acked = (&mut self.clients).await.expect("the workload finished");
        check_books(&self.bank, &acked).await
    }
}

/// What every scenario ends with: no request with a fresh key was answered as a replay, and the
/// server logged no error.
pub fn assert_clean(tally: &Tally, server: &ServerProcess) {
    assert_eq!(
        tally.unprompted_replays.load(Ordering::Relaxed),
        0,
        "a request with a fresh key was answered as a replay"
    );
    assert_eq!(server.errors_logged(), Vec::<String>::new());
}
