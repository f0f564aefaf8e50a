//! Wire-level helpers: the local server on an ephemeral port and a raw HTTP/1.1 client that
//! can send what well-behaved clients never would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lighttech::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A loopback port that was free a moment ago (for a process the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running local server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Serves `app` on 127.0.0.1 with an ephemeral port.
    pub async fn spawn(app: Arc<App>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(lighttech_local::serve(listener, app, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for in-flight requests to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the server stops in time")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct WireResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl WireResponse {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How long [`raw`] waits for the server to answer and close.
const RAW_WAIT: Duration = Duration::from_secs(10);

/// How long [`request`] waits. A well-formed request can queue for many seconds when its store
/// is the shared moto server (one request at a time) and the concurrent workload tests keep it
/// busy; a hung server still fails the test, only later.
const REQUEST_WAIT: Duration = Duration::from_secs(60);

/// Writes raw bytes and reads the response until the server closes the connection.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> WireResponse {
    raw_within(addr, bytes, RAW_WAIT).await
}

async fn raw_within(addr: SocketAddr, bytes: &[u8], wait: Duration) -> WireResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before reading everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut buf)).await;
    parse(&buf)
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(&buf)))
}

/// Like [`request`], but a refused connection, a timeout or a cut-off answer is `None`: what a
/// client sees when the server dies under it.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Option<WireResponse> {
    let bytes = request_bytes(addr, method, path, headers, body);
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let response = parse(&buf)?;
        // A body shorter than announced was cut off.
        let announced = response
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(response.body.len());
        (response.body.len() == announced).then_some(response)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// Reads one HTTP/1.1 message (head, then a `Content-Length` body) from a connection: what a
/// test proxy needs to see a whole request before passing it on. `None` when the peer sends
/// nothing or the read fails.
pub async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(buf);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return (!buf.is_empty()).then_some(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A well-formed request with `Connection: close`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> WireResponse {
    raw_within(
        addr,
        &request_bytes(addr, method, path, headers, body),
        REQUEST_WAIT,
    )
    .await
}

/// The bytes of a well-formed request with `Connection: close`.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse(buf: &[u8]) -> Option<WireResponse> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(WireResponse {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}
