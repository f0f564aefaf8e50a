//! A stand-in for the AWS Lambda Runtime API, served over HTTP on loopback, and a handle on one
//! function binary running against it.
//!
//! Each [`Lambda`] gets a Runtime API of its own on a free port and starts the binary the way
//! the Lambda service starts a `provided.al2023` bootstrap: `AWS_LAMBDA_RUNTIME_API` and the
//! other reserved variables set, nothing else inherited. The binary long-polls
//! `GET /2018-06-01/runtime/invocation/next`; [`Lambda::invoke`] hands it an event there and
//! waits for `POST …/invocation/{id}/response` or `…/error`. `POST /runtime/init/error` is
//! recorded. Used by the runtime tests and by the cold-start benchmark (`examples/cold_start.rs`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// The Runtime API version prefix every path starts with.
const PREFIX: &str = "/2018-06-01/runtime";

/// How an invocation ended, as the function reported it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `POST …/invocation/{id}/response` with this body.
    Response(Value),
    /// `POST …/invocation/{id}/error` with this body and `Lambda-Runtime-Function-Error-Type`.
    Error {
        /// The error document.
        body: Value,
        /// The error-type header, when sent.
        error_type: Option<String>,
    },
}

/// An init failure reported through `POST /runtime/init/error`.
#[derive(Debug, Clone)]
pub struct InitError {
    /// The error document.
    pub body: Value,
    /// The `Lambda-Runtime-Function-Error-Type` header, when sent.
    pub error_type: Option<String>,
}

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Bytes)>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_errors: Mutex<Vec<InitError>>,
    first_next: Mutex<Option<oneshot::Sender<Instant>>>,
    function_arn: String,
}

/// The Runtime API of one function.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<(String, Bytes)>,
    first_next: Option<oneshot::Receiver<Instant>>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves on a free loopback port.
    pub async fn start(function_name: &str) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the Runtime API");
        let addr = listener.local_addr().expect("local address");
        let (sender, receiver) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(receiver),
            pending: Mutex::new(HashMap::new()),
            init_errors: Mutex::new(Vec::new()),
            first_next: Mutex::new(Some(first_tx)),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
        });
        let serving = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, std::convert::Infallible>(serve(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RuntimeApi {
            addr,
            shared,
            sender,
            first_next: Some(first_rx),
            server,
        }
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Init errors reported so far.
    pub fn init_errors(&self) -> Vec<InitError> {
        self.shared.init_errors.lock().expect("lock").clone()
    }

    fn enqueue(&self, request_id: &str, event: &Value) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("lock")
            .insert(request_id.to_owned(), tx);
        self.sender
            .send((request_id.to_owned(), Bytes::from(event.to_string())))
            .expect("the Runtime API is running");
        rx
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn serve(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let error_type = request
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return reply(StatusCode::NOT_FOUND, "unknown path");
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["invocation", "next"]) => {
            if let Some(first) = shared.first_next.lock().expect("lock").take() {
                let _ = first.send(Instant::now());
            }
            let next = shared.events.lock().await.recv().await;
            let Some((request_id, event)) = next else {
                return reply(StatusCode::GONE, "shutting down");
            };
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 30_000)
                .unwrap_or_default();
            let mut response = reply(StatusCode::OK, event);
            let headers = response.headers_mut();
            let mut set = |name: &'static str, value: String| {
                headers.insert(name, value.parse().expect("header value"));
            };
            set("lambda-runtime-aws-request-id", request_id);
            set("lambda-runtime-deadline-ms", deadline.to_string());
            set(
                "lambda-runtime-invoked-function-arn",
                shared.function_arn.clone(),
            );
            set(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned(),
            );
            set("content-type", "application/json".to_owned());
            response
        }
        (Method::POST, ["invocation", request_id, kind @ ("response" | "error")]) => {
            let Some(waiter) = shared.pending.lock().expect("lock").remove(*request_id) else {
                return reply(StatusCode::BAD_REQUEST, "unknown request id");
            };
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let outcome = if *kind == "response" {
                Outcome::Response(body)
            } else {
                Outcome::Error { body, error_type }
            };
            let _ = waiter.send(outcome);
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        (Method::POST, ["init", "error"]) => {
            let body: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            shared
                .init_errors
                .lock()
                .expect("lock")
                .push(InitError { body, error_type });
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown path"),
    }
}

/// The directory cargo put this package's binaries in (the integration test's own
/// `CARGO_BIN_EXE_*` points into it).
pub fn binary_dir(any_binary: &str) -> PathBuf {
    Path::new(any_binary)
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Where a function's binary is, failing with what to do when it is missing.
pub fn binary_path(dir: &Path, function: &str) -> PathBuf {
    let path = dir.join(format!("{function}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "no binary for function {function:?} at {}: add a [[bin]] named {function:?} to \
         functions/Cargo.toml (functions/{function}/main.rs calling lighttech::lambda::run)",
        path.display()
    );
    path
}

/// The environment the Lambda service gives every function, pointed at `api`.
pub fn lambda_env(function: &str, api: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("lighttech-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/lighttech-{function}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/28/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_rapid".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One function binary running against its own Runtime API.
pub struct Lambda {
    /// The function's name (its binary's).
    pub name: String,
    api: RuntimeApi,
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The task collecting stderr; it ends at end of file, once the process has exited.
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
    /// When the process was spawned.
    pub spawned_at: Instant,
    next_id: u64,
}

impl Lambda {
    /// Starts `binary` with the Lambda environment plus `env`, in `workdir` (so no stray `.env`
    /// is read), inheriting nothing else from this process.
    pub async fn start(
        binary: &Path,
        name: &str,
        env: &[(String, String)],
        workdir: &Path,
    ) -> Lambda {
        let api = RuntimeApi::start(name).await;
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .envs(lambda_env(name, &api.address()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let lines = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().expect("lock").push(line);
                }
            })
        });
        Lambda {
            name: name.to_owned(),
            api,
            child,
            stderr,
            stderr_reader,
            spawned_at,
            next_id: 0,
        }
    }

    /// Waits until the function first asks for an event (its init is done), returning how long
    /// after the spawn that was.
    pub async fn initialized(&mut self) -> Duration {
        let receiver = self
            .api
            .first_next
            .take()
            .expect("initialized() is called once");
        match tokio::time::timeout(Duration::from_secs(30), receiver).await {
            Ok(Ok(at)) => at - self.spawned_at,
            _ => panic!(
                "{} never asked for an event; its stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Hands the function one event and waits for what it reports.
    pub async fn invoke_raw(&mut self, event: &Value) -> Outcome {
        self.next_id += 1;
        let request_id = format!("{}-invocation-{}", self.name, self.next_id);
        let waiter = self.api.enqueue(&request_id, event);
        match tokio::time::timeout(Duration::from_secs(60), waiter).await {
            Ok(Ok(outcome)) => outcome,
            _ => panic!(
                "{} did not answer invocation {request_id}; its stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Invokes with an API Gateway v2 event and decodes the HTTP response the function returned.
    pub async fn invoke(&mut self, event: &Value) -> HttpResponse {
        match self.invoke_raw(event).await {
            Outcome::Response(body) => HttpResponse::from_lambda(&body).unwrap_or_else(|e| {
                panic!(
                    "{}: not an API Gateway v2 response ({e}): {body}",
                    self.name
                )
            }),
            Outcome::Error { body, error_type } => panic!(
                "{} reported an invocation error ({error_type:?}): {body}; its stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// Waits for the process to exit on its own, and for everything it wrote to stderr to be
    /// read (the exit can be seen before the last lines are).
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        let status = match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) => status,
            _ => panic!("{} did not exit; its stderr:\n{}", self.name, self.stderr()),
        };
        if let Some(reader) = self.stderr_reader.take() {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .unwrap_or_else(|_| panic!("{}: stderr still open after its exit", self.name))
                .expect("the stderr reader");
        }
        status
    }

    /// Everything the function wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Its stderr lines.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Init errors its Runtime API received.
    pub fn init_errors(&self) -> Vec<InitError> {
        self.api.init_errors()
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The HTTP response inside an API Gateway v2 (payload 2.0) Lambda response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// `statusCode`.
    pub status: u16,
    /// Header names lower-cased; multi-valued headers joined with `, `.
    pub headers: HashMap<String, String>,
    /// The body as text (`""` when absent).
    pub body: String,
}

impl HttpResponse {
    fn from_lambda(value: &Value) -> Result<HttpResponse, String> {
        let status = value
            .get("statusCode")
            .and_then(Value::as_u64)
            .ok_or("no statusCode")? as u16;
        let mut headers = HashMap::new();
        if let Some(map) = value.get("headers").and_then(Value::as_object) {
            for (k, v) in map {
                headers.insert(
                    k.to_ascii_lowercase(),
                    v.as_str().ok_or("non-string header")?.to_owned(),
                );
            }
        }
        if let Some(map) = value.get("multiValueHeaders").and_then(Value::as_object) {
            for (k, v) in map {
                let values: Vec<&str> = v
                    .as_array()
                    .ok_or("multiValueHeaders entry is not a list")?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                headers
                    .entry(k.to_ascii_lowercase())
                    .or_insert_with(|| values.join(", "));
            }
        }
        if value.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
            return Err("unexpected base64 body".into());
        }
        let body = value
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An API Gateway HTTP API (payload format 2.0) event, as API Gateway sends it for a request
/// matched by `route_key` (`"GET /api/balance/v1/"`).
pub struct Event {
    /// Route key, `METHOD /pattern`.
    pub route_key: String,
    /// Method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Headers, names lower-cased as API Gateway sends them.
    pub headers: Vec<(String, String)>,
    /// `{name}` values of the route pattern.
    pub path_parameters: Vec<(String, String)>,
    /// The body.
    pub body: Option<String>,
    /// `requestContext.requestId`.
    pub request_id: String,
}

impl Event {
    /// A request on `route_key` to `path`.
    pub fn new(route_key: &str, path: &str) -> Event {
        let method = route_key
            .split_once(' ')
            .map(|(m, _)| m.to_owned())
            .expect("route key is METHOD /path");
        Event {
            route_key: route_key.to_owned(),
            method,
            path: path.to_owned(),
            query: String::new(),
            headers: vec![
                (
                    "host".into(),
                    "abc123.execute-api.us-east-1.amazonaws.com".into(),
                ),
                ("user-agent".into(), "lighttech-tests/1.0".into()),
                ("x-forwarded-for".into(), "203.0.113.10".into()),
                ("x-forwarded-proto".into(), "https".into()),
            ],
            path_parameters: Vec::new(),
            body: None,
            request_id: format!("req-{}", uuid_like()),
        }
    }

    /// A request that matched no route of the API, as API Gateway hands it to the function of
    /// its `$default` route.
    pub fn unrouted(method: &str, path: &str) -> Event {
        let mut event = Event::new(&format!("{method} /"), path);
        event.route_key = "$default".to_owned();
        event
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Event {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Event {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A JSON body with its content type.
    pub fn json(mut self, body: &Value) -> Event {
        self.body = Some(body.to_string());
        self.header("content-type", "application/json")
    }

    /// A raw query string.
    pub fn query(mut self, query: &str) -> Event {
        self.query = query.to_owned();
        self
    }

    /// A path parameter.
    pub fn path_parameter(mut self, name: &str, value: &str) -> Event {
        self.path_parameters
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// The event document.
    pub fn to_json(&self) -> Value {
        let mut headers = serde_json::Map::new();
        for (k, v) in &self.headers {
            headers.insert(k.clone(), Value::String(v.clone()));
        }
        let mut event = json!({
            "version": "2.0",
            "routeKey": self.route_key,
            "rawPath": self.path,
            "rawQueryString": self.query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.10",
                    "userAgent": "lighttech-tests/1.0"
                },
                "requestId": self.request_id,
                "routeKey": self.route_key,
                "stage": "$default",
                "time": "28/Nov/2026:07:00:00 +0000",
                "timeEpoch": 1_795_849_200_000u64
            },
            "isBase64Encoded": false
        });
        if !self.query.is_empty() {
            let mut params = serde_json::Map::new();
            for pair in self.query.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                params.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            event["queryStringParameters"] = Value::Object(params);
        }
        if !self.path_parameters.is_empty() {
            let params: serde_json::Map<String, Value> = self
                .path_parameters
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            event["pathParameters"] = Value::Object(params);
        }
        if let Some(body) = &self.body {
            event["body"] = Value::String(body.clone());
        }
        event
    }
}

/// A unique enough id for request ids (no extra dependency).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}-{}-{}",
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
