//! A loopback DynamoDB endpoint in front of moto that answers as DynamoDB itself would where
//! moto does not, and lets a test decide what happens to each call.
//!
//! moto accepts some requests DynamoDB refuses, and never answers with DynamoDB's transient
//! errors (throttling, a write meeting a transaction in flight on its item). So every proxy
//! first refuses what DynamoDB refuses ([`DynamoProxy::refusals`] counts it); then the test's
//! verdict on the [`Call`] forwards it to moto, answers it in moto's place, or lets moto apply
//! it and loses the answer.
//!
//! What DynamoDB refuses and moto answers, as the proxy checks it:
//! - a key condition `BETWEEN :lo AND :hi` whose lower bound sorts after the upper one
//!   (`ValidationException`, HTTP 400).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lighttech::store::dynamo::DynamoStore;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{dynamodb_endpoint, emulator_sdk_config};

/// One DynamoDB call as the proxy received it.
#[derive(Debug)]
pub struct Call {
    /// The operation, lower-cased (`updateitem`, `transactwriteitems`, …).
    pub operation: String,
    /// The JSON request (`Null` when it is not JSON).
    pub body: Value,
}

impl Call {
    /// The sort key of a single-item call (`Key.SK`), such as `SESSION#<id>`.
    pub fn sort_key(&self) -> Option<&str> {
        self.body["Key"]["SK"]["S"].as_str()
    }

    /// A single-item write on an item whose sort key starts with `prefix`.
    pub fn writes_item(&self, prefix: &str) -> bool {
        matches!(
            self.operation.as_str(),
            "putitem" | "updateitem" | "deleteitem"
        ) && self
            .sort_key()
            .or_else(|| self.body["Item"]["SK"]["S"].as_str())
            .is_some_and(|sk| sk.starts_with(prefix))
    }

    /// The update expression of an `UpdateItem`, if any.
    pub fn update_expression(&self) -> &str {
        self.body["UpdateExpression"].as_str().unwrap_or("")
    }
}

/// What a [`DynamoProxy`] does with one call.
pub enum Verdict {
    /// Passes it to moto and moto's answer back.
    Forward,
    /// Answers it itself with this response; moto never sees the call.
    Answer(Vec<u8>),
    /// Passes it to moto, which applies it, and hangs up without passing the answer on: with
    /// a reset (which the SDK's standard retries meet by sending the call again) or a plain
    /// close (which they pass on to the store).
    LoseAnswer {
        /// Reset the connection rather than close it.
        reset: bool,
    },
}

/// A DynamoDB error answer as the service sends it, with a message of its own.
pub fn dynamodb_error_saying(status: &str, kind: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    })
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A DynamoDB error answer as the service sends it.
pub fn dynamodb_error(status: &str, kind: &str) -> Vec<u8> {
    dynamodb_error_saying(status, kind, "injected by the test proxy")
}

/// A `TransactionCanceledException` with one cancellation reason code per item (`None` for an
/// item that was fine), as DynamoDB answers a `TransactWriteItems` it did not apply.
pub fn dynamodb_cancelled(reasons: &[&str]) -> Vec<u8> {
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            reasons.join(", ")
        ),
        "CancellationReasons": reasons
            .iter()
            .map(|code| serde_json::json!({"Code": code}))
            .collect::<Vec<_>>(),
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: TransactionCanceledException\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A `200` answer with this JSON body.
pub fn dynamodb_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// DynamoDB's refusal of `call` where moto would answer it, if any (the raw HTTP answer).
pub fn refusal(call: &Call) -> Option<Vec<u8>> {
    let condition = call.body["KeyConditionExpression"].as_str()?;
    let at = condition.to_ascii_uppercase().find(" BETWEEN ")?;
    let mut words = condition[at + " BETWEEN ".len()..].split_whitespace();
    let (lower, and, upper) = (words.next()?, words.next()?, words.next()?);
    if !and.eq_ignore_ascii_case("AND") {
        return None;
    }
    let values = &call.body["ExpressionAttributeValues"];
    let inverted = match (&values[lower], &values[upper]) {
        (l, u) if l["S"].is_string() && u["S"].is_string() => l["S"].as_str() > u["S"].as_str(),
        (l, u) if l["N"].is_string() && u["N"].is_string() => {
            let number = |v: &Value| v["N"].as_str().and_then(|n| n.parse::<f64>().ok());
            number(l) > number(u)
        }
        _ => false,
    };
    inverted.then(|| {
        dynamodb_error_saying(
            "400 Bad Request",
            "ValidationException",
            &format!(
                "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be \
                 greater than or equal to lower bound; lower bound operand: AttributeValue: {}, \
                 upper bound operand: AttributeValue: {}",
                values[lower], values[upper]
            ),
        )
    })
}

/// A loopback endpoint in front of moto (see the module documentation). Stops when dropped.
pub struct DynamoProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl DynamoProxy {
    /// A proxy that treats each call as `verdict` says, once DynamoDB's own refusals are made.
    pub async fn start(verdict: impl Fn(&Call) -> Verdict + Send + Sync + 'static) -> Self {
        let upstream: SocketAddr = dynamodb_endpoint()
            .trim_start_matches("http://")
            .parse()
            .expect("a loopback moto address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the DynamoDB proxy");
        let addr = listener.local_addr().expect("a bound address");
        let verdict = Arc::new(verdict);
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&refused);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let verdict = Arc::clone(&verdict);
                let refused = Arc::clone(&counter);
                tokio::spawn(serve(client, upstream, verdict, refused));
            }
        });
        DynamoProxy {
            addr,
            refused,
            task,
        }
    }

    /// A proxy that forwards whatever DynamoDB would accept.
    pub async fn strict() -> Self {
        Self::start(|_| Verdict::Forward).await
    }

    /// How many calls it refused as DynamoDB would (moto would have answered them).
    pub fn refusals(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// A store on `table` through this proxy whose SDK client does not retry by itself, so
    /// every error the proxy makes reaches the store.
    pub fn store(&self, table: &str) -> DynamoStore {
        self.store_with(
            table,
            aws_sdk_dynamodb::config::retry::RetryConfig::disabled(),
        )
    }

    /// A store on `table` through this proxy with the SDK's standard retries, as in service:
    /// a call whose answer is lost, or that is throttled, is sent again by the SDK itself.
    pub fn retrying_store(&self, table: &str) -> DynamoStore {
        self.store_with(
            table,
            aws_sdk_dynamodb::config::retry::RetryConfig::standard(),
        )
    }

    fn store_with(
        &self,
        table: &str,
        retry: aws_sdk_dynamodb::config::retry::RetryConfig,
    ) -> DynamoStore {
        let sdk = emulator_sdk_config(&format!("http://{}", self.addr));
        let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .retry_config(retry)
            .build();
        DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), table)
    }
}

impl Drop for DynamoProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: one call, as the SDK's requests through the proxy are answered with
/// `Connection: close` (moto's own answers are HTTP/1.0).
async fn serve<V: Fn(&Call) -> Verdict>(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    verdict: Arc<V>,
    refused: Arc<AtomicUsize>,
) {
    let Some(request) = crate::wire::read_message(&mut client).await else {
        return;
    };
    let split = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |end| end + 4);
    let head = String::from_utf8_lossy(&request[..split]).to_ascii_lowercase();
    let call = Call {
        operation: head
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-target: dynamodb_20120810."))
            .unwrap_or("")
            .trim()
            .to_owned(),
        body: serde_json::from_slice(&request[split..]).unwrap_or(Value::Null),
    };
    if let Some(response) = refusal(&call) {
        refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.write_all(&response).await;
        return;
    }
    let lose = match verdict(&call) {
        Verdict::Forward => None,
        Verdict::LoseAnswer { reset } => Some(reset),
        Verdict::Answer(response) => {
            let _ = client.write_all(&response).await;
            return;
        }
    };
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    if up.write_all(&request).await.is_err() {
        return;
    }
    let mut response = Vec::new();
    let _ = up.read_to_end(&mut response).await;
    match lose {
        None => {
            let _ = client.write_all(&response).await;
        }
        Some(true) => {
            let _ = client.set_zero_linger();
        }
        Some(false) => {}
    }
}
