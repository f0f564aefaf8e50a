//! The harness's own client of the public API: preparing accounts (register, login, opening
//! deposits), settling writes whose outcome the load run could not see, and reading balances
//! for the money invariant. Nothing here is measured; the load itself goes through goose.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};

/// Paths of the contract (docs/api.md) the harness uses.
pub mod path {
    pub const REGISTER: &str = "/api/auth/v1/register/";
    pub const LOGIN: &str = "/api/auth/v1/login/";
    pub const BALANCE: &str = "/api/balance/v1/";
    pub const DEPOSIT: &str = "/api/balance/v1/deposit/";
    pub const WITHDRAW: &str = "/api/balance/v1/withdraw/";
    pub const TRANSFER: &str = "/api/balance/v1/transfer/";
    pub const OPERATIONS: &str = "/api/balance/v1/operations/";
    pub const HEALTH: &str = "/api/health/";
}

/// How many preparation requests run at once: registration and login are each an argon2id hash,
/// which the server computes at most one per core at a time, so more would only queue.
const PREPARE_PARALLELISM: usize = 8;

/// Attempts for a request that answers `503`, `429` or does not answer at all.
const ATTEMPTS: u32 = 8;

/// One prepared user of a workload.
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub password: String,
    pub access: String,
}

/// Amounts are integer minor units everywhere in the harness, as in the server.
pub fn format_money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Parses the API's money strings (`"1250.00"`); no float is involved.
pub fn parse_money(text: &str) -> Result<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (units, cents) = digits
        .split_once('.')
        .ok_or_else(|| anyhow!("not an amount with two fraction digits: {text:?}"))?;
    if cents.len() != 2
        || units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || !cents.bytes().all(|b| b.is_ascii_digit())
    {
        bail!("not an amount with two fraction digits: {text:?}");
    }
    let value = units
        .parse::<i64>()
        .ok()
        .and_then(|u| u.checked_mul(100))
        .and_then(|u| u.checked_add(cents.parse::<i64>().ok()?))
        .ok_or_else(|| anyhow!("amount out of range: {text:?}"))?;
    Ok(if negative { -value } else { value })
}

/// The outcome of a money movement sent by [`Client::deposit`] or [`Client::withdraw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `201`: recorded (first time or replayed).
    Applied,
    /// A definitive refusal (`4xx` other than `429`): nothing moved.
    Refused(u16),
}

#[derive(Deserialize)]
struct LoginBody {
    access: String,
}

#[derive(Deserialize)]
struct BalanceBody {
    balance: String,
}

/// A plain HTTP client of one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent("lighttech-bench")
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Checks that the server answers at all, with a message that says what to start.
    pub async fn health(&self) -> Result<()> {
        let response = self
            .http
            .get(self.url(path::HEALTH))
            .send()
            .await
            .with_context(|| format!("no LightTech server answers at {}", self.base))?;
        if !response.status().is_success() {
            bail!(
                "{} answers {} on {}",
                self.base,
                response.status(),
                path::HEALTH
            );
        }
        Ok(())
    }

    /// Sends one request, retrying transport failures, `503` and `429` with a growing pause
    /// (and the server's `Retry-After` when it gives one). Returns the last status and body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut last_error = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            let mut request = self.http.request(method.clone(), self.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    last_error = Some(anyhow!(e).context(format!("{method} {path}")));
                    continue;
                }
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let bytes = match response.bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    last_error = Some(anyhow!(e).context(format!("{method} {path}: body")));
                    continue;
                }
            };
            if status == 503 || status == 429 {
                if let Some(seconds) = retry_after {
                    tokio::time::sleep(Duration::from_secs(seconds.min(5))).await;
                }
                last_error = Some(anyhow!("{method} {path}: {status}"));
                continue;
            }
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            return Ok((status, value));
        }
        Err(last_error.unwrap_or_else(|| anyhow!("{method} {path}: no attempt made")))
    }

    /// Registers `username` and logs in. A registration retried after a lost answer may find
    /// its own first attempt recorded (`409`); the login that follows settles it either way.
    pub async fn register_and_login(&self, username: &str, password: &str) -> Result<Account> {
        let body = json!({
            "username": username,
            "email": format!("{username}@bench.example.com"),
            "password": password,
        });
        let (status, answer) = self
            .send(
                reqwest::Method::POST,
                path::REGISTER,
                None,
                None,
                Some(&body),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("registering {username}: {status} {answer}");
        }
        let access = self.login(username, password).await?;
        Ok(Account {
            username: username.to_string(),
            password: password.to_string(),
            access,
        })
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<String> {
        let body = json!({"username": username, "password": password});
        let (status, answer) = self
            .send(reqwest::Method::POST, path::LOGIN, None, None, Some(&body))
            .await?;
        if status != 200 {
            bail!("logging in {username}: {status} {answer}");
        }
        let login: LoginBody = serde_json::from_value(answer)
            .with_context(|| format!("logging in {username}: unexpected answer"))?;
        Ok(login.access)
    }

    async fn movement(&self, path: &str, token: &str, key: &str, body: &Value) -> Result<Outcome> {
        let (status, answer) = self
            .send(
                reqwest::Method::POST,
                path,
                Some(token),
                Some(key),
                Some(body),
            )
            .await?;
        match status {
            201 => Ok(Outcome::Applied),
            400..=499 => Ok(Outcome::Refused(status)),
            _ => bail!("POST {path}: {status} {answer}"),
        }
    }

    /// Deposits `minor` units under `key`; replaying a key that was already recorded is
    /// `Applied` and moves nothing again, which is what lets the harness settle unknown writes.
    pub async fn deposit(&self, token: &str, key: &str, minor: i64) -> Result<Outcome> {
        let body = json!({"amount": format_money(minor), "description": "bench"});
        self.movement(path::DEPOSIT, token, key, &body).await
    }

    pub async fn withdraw(&self, token: &str, key: &str, minor: i64) -> Result<Outcome> {
        let body = json!({"amount": format_money(minor), "description": "bench"});
        self.movement(path::WITHDRAW, token, key, &body).await
    }

    pub async fn balance(&self, token: &str) -> Result<i64> {
        let (status, answer) = self
            .send(reqwest::Method::GET, path::BALANCE, Some(token), None, None)
            .await?;
        if status != 200 {
            bail!("GET {}: {status} {answer}", path::BALANCE);
        }
        let body: BalanceBody =
            serde_json::from_value(answer).context("balance: unexpected answer")?;
        parse_money(&body.balance)
    }

    /// Runs `f` over `items` with the preparation parallelism, keeping the order.
    pub async fn each<T, R, F, Fut>(&self, items: Vec<T>, f: F) -> Result<Vec<R>>
    where
        F: Fn(Client, T) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        stream::iter(items.into_iter().map(|item| f(self.clone(), item)))
            .buffered(PREPARE_PARALLELISM)
            .try_collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_through_its_text_form() {
        for minor in [0, 1, 99, 100, 12_345, 100_000_000_000, -250] {
            assert_eq!(parse_money(&format_money(minor)).unwrap(), minor);
        }
        assert_eq!(format_money(1), "0.01");
        assert_eq!(format_money(-250), "-2.50");
    }

    #[test]
    fn amounts_without_exactly_two_fraction_digits_are_refused() {
        for text in ["1", "1.5", "1.505", ".50", "1,50", "a.00", "1.0x", ""] {
            assert!(parse_money(text).is_err(), "{text:?} was accepted");
        }
    }
}
