//! The workloads: what each prepares, and the goose scenario that loads the server with it.
//!
//! Every goose user stands for one client connection. User `u` of `C` owns the accounts whose
//! index is `u` modulo `C` and takes them in turn, so no two connections act as the same account
//! at once unless the workload wants exactly that (transfer recipients, the hot account).
//! Every write carries its own `Idempotency-Key`; a deposit or withdrawal whose answer was not a
//! `201` is written down and settled after the run by sending it again with the same key, which
//! is what makes the money invariant exact even when requests fail.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, Duration as ChronoDuration};
use goose::prelude::*;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{Account, Client, Outcome, format_money, path};

/// Balance each spending account starts with: large enough that no withdrawal or transfer of
/// the run can meet `insufficient_funds`, small enough to stay far below the balance ceiling.
pub const OPENING_BALANCE: i64 = 100_000_000; // 1,000,000.00

/// The workloads, by the name they are selected with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Deposits of 0.01–100.00 into many accounts, each with its own Idempotency-Key.
    Deposit,
    /// Withdrawals of 0.01–1.00 from many funded accounts.
    Withdraw,
    /// Transfers of 0.01–1.00 between random pairs of many accounts.
    Transfer,
    /// Transfers from every account to one hot account.
    TransferHot,
    /// The same history page (100 operations) read again and again: cache hits.
    HistoryHit,
    /// History pages (100 operations) under a query never asked before: cache misses.
    HistoryMiss,
    /// Logins spread over distinct users (each an argon2id hash on the server).
    Login,
    /// A realistic mix: mostly balance and history reads, some deposits, transfers, withdrawals.
    Mixed,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::Deposit,
        Workload::Withdraw,
        Workload::Transfer,
        Workload::TransferHot,
        Workload::HistoryHit,
        Workload::HistoryMiss,
        Workload::Login,
        Workload::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Deposit => "deposit",
            Workload::Withdraw => "withdraw",
            Workload::Transfer => "transfer",
            Workload::TransferHot => "transfer-hot",
            Workload::HistoryHit => "history-hit",
            Workload::HistoryMiss => "history-miss",
            Workload::Login => "login",
            Workload::Mixed => "mixed",
        }
    }

    /// A short code for usernames and idempotency keys.
    fn code(self) -> &'static str {
        match self {
            Workload::Deposit => "dep",
            Workload::Withdraw => "wd",
            Workload::Transfer => "tr",
            Workload::TransferHot => "hot",
            Workload::HistoryHit => "hh",
            Workload::HistoryMiss => "hm",
            Workload::Login => "li",
            Workload::Mixed => "mix",
        }
    }

    /// How many accounts the workload prepares.
    pub fn accounts(self, sizes: &Sizes) -> usize {
        let many = sizes.accounts.max(sizes.concurrency);
        match self {
            // One account per connection, each with a full page of history.
            Workload::HistoryHit | Workload::HistoryMiss => sizes.concurrency,
            // The senders, plus the hot account itself.
            Workload::TransferHot => many + 1,
            _ => many,
        }
    }

    fn opening_balance(self) -> i64 {
        match self {
            Workload::Withdraw | Workload::Transfer | Workload::TransferHot | Workload::Mixed => {
                OPENING_BALANCE
            }
            Workload::Deposit | Workload::Login | Workload::HistoryHit | Workload::HistoryMiss => 0,
        }
    }

    fn needs_history(self) -> bool {
        matches!(self, Workload::HistoryHit | Workload::HistoryMiss)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How big a workload's data and load are.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Concurrent connections (goose users).
    pub concurrency: usize,
    /// Accounts for the workloads that spread over many.
    pub accounts: usize,
    /// Operations each history account holds before the run.
    pub history_ops: usize,
}

/// Deposits and withdrawals the server acknowledged, in minor units.
#[derive(Default)]
pub struct Ledger {
    pub opening: AtomicI64,
    pub deposited: AtomicI64,
    pub withdrawn: AtomicI64,
    pending: Mutex<Vec<Pending>>,
}

/// A deposit or withdrawal sent during the run whose answer was not a `201`.
#[derive(Debug, Clone)]
pub struct Pending {
    pub kind: Movement,
    pub account: usize,
    pub key: String,
    pub amount: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    Deposit,
    Withdrawal,
}

impl Ledger {
    fn applied(&self, kind: Movement, amount: i64) {
        match kind {
            Movement::Deposit => self.deposited.fetch_add(amount, Ordering::Relaxed),
            Movement::Withdrawal => self.withdrawn.fetch_add(amount, Ordering::Relaxed),
        };
    }

    fn unknown(&self, pending: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(pending);
    }

    pub fn expected(&self) -> i64 {
        self.opening.load(Ordering::Relaxed) + self.deposited.load(Ordering::Relaxed)
            - self.withdrawn.load(Ordering::Relaxed)
    }

    /// Sends every pending movement again with its own key: a `201` (first application or
    /// replay) is counted once, a refusal moved nothing. Returns how many stay unknown.
    pub async fn settle(&self, client: &Client, accounts: &[Account]) -> usize {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let mut unknown = 0;
        for p in pending {
            let token = &accounts[p.account].access;
            let outcome = match p.kind {
                Movement::Deposit => client.deposit(token, &p.key, p.amount).await,
                Movement::Withdrawal => client.withdraw(token, &p.key, p.amount).await,
            };
            match outcome {
                Ok(Outcome::Applied) => self.applied(p.kind, p.amount),
                Ok(Outcome::Refused(_)) => {}
                Err(e) => {
                    eprintln!("could not settle {:?} {}: {e:#}", p.kind, p.key);
                    unknown += 1;
                }
            }
        }
        unknown
    }
}

/// Live counters for the progress line and the cache hit ratio.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// A few failed answers, to say what went wrong.
    samples: Mutex<Vec<String>>,
}

const MAX_SAMPLES: usize = 5;

impl Counters {
    fn failure(&self, sample: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if samples.len() < MAX_SAMPLES {
            samples.push(sample);
        }
    }

    pub fn samples(&self) -> Vec<String> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Everything a workload's goose users share.
pub struct Shared {
    pub workload: Workload,
    pub run_id: String,
    pub accounts: Vec<Account>,
    /// Accounts that act as senders (all but the hot account).
    pub senders: usize,
    pub concurrency: usize,
    pub ledger: Ledger,
    pub counters: Counters,
    /// Numbers distinct history queries.
    pub sequence: AtomicU64,
}

/// Registers, logs in and funds the workload's accounts.
pub async fn prepare(
    client: &Client,
    workload: Workload,
    sizes: &Sizes,
    run_id: &str,
) -> anyhow::Result<Shared> {
    let count = workload.accounts(sizes);
    let names: Vec<(String, String)> = (0..count)
        .map(|i| {
            (
                format!("b{run_id}-{}-{i}", workload.code()),
                random_password(),
            )
        })
        .collect();
    let accounts = client
        .each(names, |client, (username, password)| async move {
            client.register_and_login(&username, &password).await
        })
        .await?;

    let ledger = Ledger::default();
    let opening = workload.opening_balance();
    let mut funding = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        if opening > 0 {
            funding.push((
                account.access.clone(),
                format!("{run_id}-open-{i}"),
                opening,
            ));
        }
        if workload.needs_history() {
            for op in 0..sizes.history_ops {
                funding.push((
                    account.access.clone(),
                    format!("{run_id}-hist-{i}-{op}"),
                    100,
                ));
            }
        }
    }
    let amounts = client
        .each(funding, |client, (token, key, amount)| async move {
            match client.deposit(&token, &key, amount).await? {
                Outcome::Applied => Ok(amount),
                Outcome::Refused(status) => anyhow::bail!("an opening deposit answered {status}"),
            }
        })
        .await?;
    ledger
        .opening
        .store(amounts.iter().sum(), Ordering::Relaxed);

    let senders = match workload {
        Workload::TransferHot => count - 1,
        _ => count,
    };
    Ok(Shared {
        workload,
        run_id: run_id.to_string(),
        accounts,
        senders,
        concurrency: sizes.concurrency,
        ledger,
        counters: Counters::default(),
        sequence: AtomicU64::new(0),
    })
}

fn random_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let mut password: String = (0..20)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    password.push_str("-9!");
    password
}

/// The goose scenario of a workload: one transaction, which picks its request itself.
pub fn scenario(shared: Arc<Shared>) -> Scenario {
    let name = shared.workload.name();
    let function: TransactionFunction = Arc::new(move |user| {
        let shared = shared.clone();
        Box::pin(async move { step(&shared, user).await })
    });
    scenario!(name).register_transaction(Transaction::new(function).set_name(name))
}

/// Which slot (connection) a goose user is and how many turns it has taken.
#[derive(Clone)]
struct Turns {
    slot: usize,
    turn: u64,
}

/// The account a slot acts as on a turn: its own accounts in turn.
fn own_account(shared: &Shared, slot: usize, turn: u64) -> usize {
    let c = shared.concurrency.max(1);
    let slot = slot % c;
    let n = shared.senders.max(1);
    let owned = n.saturating_sub(slot).div_ceil(c).max(1);
    (slot + (turn as usize % owned) * c).min(n - 1)
}

/// A random account other than `not`.
fn other_account(shared: &Shared, not: usize) -> usize {
    let n = shared.senders;
    if n < 2 {
        return not;
    }
    let pick = rand::rng().random_range(0..n - 1);
    if pick >= not { pick + 1 } else { pick }
}

/// A random amount in minor units, `low..=high`.
fn amount(low: i64, high: i64) -> i64 {
    rand::rng().random_range(low..=high)
}

async fn step(shared: &Shared, user: &mut GooseUser) -> TransactionResult {
    if user.get_session_data::<Turns>().is_none() {
        let slot = user.weighted_users_index;
        user.set_session_data(Turns { slot, turn: 0 });
    }
    let turns = user.get_session_data_unchecked_mut::<Turns>();
    let (slot, turn) = (turns.slot, turns.turn);
    turns.turn += 1;
    let me = own_account(shared, slot, turn);
    let key = format!("{}-{}-{slot}-{turn}", shared.run_id, shared.workload.code());

    match shared.workload {
        Workload::Deposit => deposit(shared, user, me, key).await,
        Workload::Withdraw => withdraw(shared, user, me, key).await,
        Workload::Transfer => {
            let to = other_account(shared, me);
            transfer(shared, user, me, to, key).await
        }
        Workload::TransferHot => {
            let hot = shared.accounts.len() - 1;
            transfer(shared, user, me, hot, key).await
        }
        Workload::HistoryHit => history(shared, user, me, "limit=100".to_string()).await,
        Workload::HistoryMiss => {
            // A `since` no request asked before (and before every operation, so the page is
            // the same 100 operations): a new cache key every time.
            let n = shared.sequence.fetch_add(1, Ordering::Relaxed);
            let since = DateTime::UNIX_EPOCH + ChronoDuration::seconds(n as i64);
            let since = since.format("%Y-%m-%dT%H:%M:%SZ");
            history(shared, user, me, format!("limit=100&since={since}")).await
        }
        Workload::Login => login(shared, user, me).await,
        Workload::Mixed => {
            let roll = rand::rng().random_range(0..100);
            match roll {
                0..45 => balance(shared, user, me).await,
                45..80 => history(shared, user, me, "limit=20".to_string()).await,
                80..88 => deposit(shared, user, me, key).await,
                88..96 => {
                    let to = other_account(shared, me);
                    transfer(shared, user, me, to, key).await
                }
                _ => withdraw(shared, user, me, key).await,
            }
        }
    }
}

/// What a load request got back.
struct Answer {
    status: Option<u16>,
    cache: Option<String>,
}

/// One measured request.
struct Call<'a> {
    method: GooseMethod,
    path: &'a str,
    /// The request's name in goose's metrics (which prefix the method).
    name: &'a str,
    token: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    body: Option<serde_json::Value>,
    expect: u16,
}

impl<'a> Call<'a> {
    /// An account's `GET`, answered `200`.
    fn get(path: &'a str, name: &'a str, token: &'a str) -> Self {
        Call {
            method: GooseMethod::Get,
            path,
            name,
            token: Some(token),
            idempotency_key: None,
            body: None,
            expect: 200,
        }
    }
}

/// Sends one measured request through goose and reads its whole answer (so the connection is
/// reused). A status other than the expected one counts as a goose failure and is sampled.
async fn send(
    shared: &Shared,
    user: &mut GooseUser,
    call: Call<'_>,
) -> Result<Answer, Box<TransactionError>> {
    let Call {
        method,
        path: path_and_query,
        name,
        token,
        idempotency_key,
        body,
        expect,
    } = call;
    let mut builder = user.get_request_builder(&method, path_and_query)?;
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(key) = idempotency_key {
        builder = builder.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path_and_query)
        .name(name)
        .expect_status_code(expect)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    match goose.response {
        Ok(response) => {
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("X-Cache")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.bytes().await;
            if status != expect {
                let text: String = body
                    .map(|b| String::from_utf8_lossy(&b).chars().take(300).collect())
                    .unwrap_or_default();
                shared.counters.failure(format!("{name}: {status} {text}"));
            }
            Ok(Answer {
                status: Some(status),
                cache,
            })
        }
        Err(e) => {
            shared.counters.failure(format!("{name}: {e}"));
            Ok(Answer {
                status: None,
                cache: None,
            })
        }
    }
}

async fn deposit(
    shared: &Shared,
    user: &mut GooseUser,
    me: usize,
    key: String,
) -> TransactionResult {
    movement(shared, user, me, key, Movement::Deposit, amount(1, 10_000)).await
}

async fn withdraw(
    shared: &Shared,
    user: &mut GooseUser,
    me: usize,
    key: String,
) -> TransactionResult {
    movement(shared, user, me, key, Movement::Withdrawal, amount(1, 100)).await
}

async fn movement(
    shared: &Shared,
    user: &mut GooseUser,
    me: usize,
    key: String,
    kind: Movement,
    minor: i64,
) -> TransactionResult {
    let (path, name) = match kind {
        Movement::Deposit => (path::DEPOSIT, "deposit"),
        Movement::Withdrawal => (path::WITHDRAW, "withdraw"),
    };
    let answer = send(
        shared,
        user,
        Call {
            method: GooseMethod::Post,
            path,
            name,
            token: Some(&shared.accounts[me].access),
            idempotency_key: Some(&key),
            body: Some(json!({"amount": format_money(minor)})),
            expect: 201,
        },
    )
    .await?;
    if answer.status == Some(201) {
        shared.ledger.applied(kind, minor);
    } else {
        shared.ledger.unknown(Pending {
            kind,
            account: me,
            key,
            amount: minor,
        });
    }
    Ok(())
}

async fn transfer(
    shared: &Shared,
    user: &mut GooseUser,
    from: usize,
    to: usize,
    key: String,
) -> TransactionResult {
    // Transfers move money only between this workload's accounts: whatever their outcome,
    // the sum of balances does not change, so nothing is written down.
    send(
        shared,
        user,
        Call {
            method: GooseMethod::Post,
            path: path::TRANSFER,
            name: "transfer",
            token: Some(&shared.accounts[from].access),
            idempotency_key: Some(&key),
            body: Some(json!({
                "to": shared.accounts[to].username,
                "amount": format_money(amount(1, 100)),
            })),
            expect: 201,
        },
    )
    .await?;
    Ok(())
}

async fn history(
    shared: &Shared,
    user: &mut GooseUser,
    me: usize,
    query: String,
) -> TransactionResult {
    let path = format!("{}?{query}", path::OPERATIONS);
    let call = Call::get(&path, "history", &shared.accounts[me].access);
    let answer = send(shared, user, call).await?;
    match answer.cache.as_deref() {
        Some("hit") => shared.counters.cache_hits.fetch_add(1, Ordering::Relaxed),
        Some(_) => shared.counters.cache_misses.fetch_add(1, Ordering::Relaxed),
        None => 0,
    };
    Ok(())
}

async fn balance(shared: &Shared, user: &mut GooseUser, me: usize) -> TransactionResult {
    let call = Call::get(path::BALANCE, "balance", &shared.accounts[me].access);
    send(shared, user, call).await?;
    Ok(())
}

async fn login(shared: &Shared, user: &mut GooseUser, me: usize) -> TransactionResult {
    let account = &shared.accounts[me];
    send(
        shared,
        user,
        Call {
            method: GooseMethod::Post,
            path: path::LOGIN,
            name: "login",
            token: None,
            idempotency_key: None,
            body: Some(json!({"username": account.username, "password": account.password})),
            expect: 200,
        },
    )
    .await?;
    Ok(())
}

/// Cache outcomes of a workload's history reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl Shared {
    pub fn cache_stats(&self) -> Option<CacheStats> {
        let hits = self.counters.cache_hits.load(Ordering::Relaxed);
        let misses = self.counters.cache_misses.load(Ordering::Relaxed);
        (hits + misses > 0).then_some(CacheStats { hits, misses })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(senders: usize, concurrency: usize) -> Shared {
        Shared {
            workload: Workload::Deposit,
            run_id: "t".into(),
            accounts: Vec::new(),
            senders,
            concurrency,
            ledger: Ledger::default(),
            counters: Counters::default(),
            sequence: AtomicU64::new(0),
        }
    }

    #[test]
    fn each_slot_takes_only_its_own_accounts_and_every_account_is_taken() {
        let s = shared(10, 4);
        let mut seen = vec![None; 10];
        for slot in 0..4 {
            for turn in 0..20 {
                let account = own_account(&s, slot, turn);
                assert!(account < 10);
                assert_eq!(account % 4, slot, "slot {slot} took account {account}");
                seen[account] = Some(slot);
            }
        }
        assert!(seen.iter().all(Option::is_some), "{seen:?}");
    }

    #[test]
    fn another_account_is_never_the_sender() {
        let s = shared(3, 3);
        for _ in 0..200 {
            for me in 0..3 {
                let to = other_account(&s, me);
                assert_ne!(to, me);
                assert!(to < 3);
            }
        }
    }

    #[test]
    fn the_hot_account_is_not_a_sender_and_history_has_one_account_per_connection() {
        let sizes = Sizes {
            concurrency: 16,
            accounts: 100,
            history_ops: 100,
        };
        assert_eq!(Workload::TransferHot.accounts(&sizes), 101);
        assert_eq!(Workload::HistoryHit.accounts(&sizes), 16);
        assert_eq!(Workload::Login.accounts(&sizes), 100);
        let few = Sizes {
            accounts: 2,
            ..sizes
        };
        assert_eq!(
            Workload::Deposit.accounts(&few),
            16,
            "at least one per connection"
        );
    }

    #[test]
    fn workload_names_are_the_ones_selected_on_the_command_line() {
        use clap::ValueEnum;
        for w in Workload::ALL {
            let parsed = Workload::from_str(w.name(), false).unwrap();
            assert_eq!(parsed, w);
            assert_eq!(serde_json::to_value(w).unwrap(), w.name());
        }
    }
}
