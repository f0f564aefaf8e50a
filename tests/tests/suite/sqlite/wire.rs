//! The local server on the wire: what it makes of the `Host` header, of bodies that never
//! arrive in full, and of clients that are slow or idle.

use std::net::SocketAddr;
use std::time::Duration;

use lighttech_tests::wire::{Server, raw, request};
use lighttech_tests::{TestApp, sqlite_fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The route comes from the request line alone; a `Host` that is anything but `host[:port]`
/// is refused before it can reach `lambda_http`'s URL building (where `localhost:1/api/health/`
/// used to become the path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_line_picks_the_route_and_the_host_must_be_an_authority() {
    let t = TestApp::new(sqlite_fixture().await).await;
    let server = Server::spawn(t.app.clone()).await;
    let addr = server.addr;

    let smuggled = [
        ("/no/such/route/", "localhost:1/api/health/?x="),
        ("/", "localhost:1/api/schema"),
        ("/", "localhost/api/schema/"),
        ("/api/health/", "localhost:1?x=1"),
        ("/api/health/", "localhost#top"),
        ("/api/health/", "user@localhost"),
        ("/api/health/", "user:secret@localhost:8000"),
        ("/api/health/", "localhost:8000:1"),
        ("/api/health/", "localhost:http"),
        ("/api/health/", "localhost:+80"),
        ("/api/health/", "local%68ost"),
        ("/api/health/", "local host"),
        ("/api/health/", "localhost\\api"),
        ("/api/health/", "[::1"),
        ("/api/health/", "[not-an-ip]:8000"),
        ("/api/health/", ":8000"),
    ];
    for (path, host) in smuggled {
        let r = request(addr, "GET", path, &[("Host", host)], b"").await;
        assert_eq!(
            r.status,
            400,
            "GET {path} with Host {host:?}: {:?}",
            r.json()
        );
        assert_eq!(r.json()["code"], "validation_error", "{host:?}");
        assert!(
            r.json()["errors"]["Host"].is_array(),
            "{host:?}: {}",
            r.json()
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("x-request-id").is_some());
    }

    for host in [
        "localhost:8000",
        "localhost",
        "LOCALHOST:8000",
        "127.0.0.1",
        "127.0.0.1:8000",
        "[::1]",
        "[::1]:8000",
    ] {
        let r = request(addr, "GET", "/api/health/", &[("Host", host)], b"").await;
        assert_eq!(r.status, 200, "Host {host:?}: {:?}", r.json());
        assert_eq!(r.json()["status"], "ok");
    }
    // An absolute-form request target routes by its path too.
    let target = format!("http://{addr}/api/health/");
    let r = request(addr, "GET", &target, &[], b"").await;
    assert_eq!(r.status, 200, "{:?}", r.json());

    // The path is routed as sent: no dot segments resolved on the way to a route.
    for path in [
        "/api/x/../health/",
        "/api/./health/",
        "/api/balance/v1/%2e%2e/%2e%2e/health/",
    ] {
        let r = request(addr, "GET", path, &[], b"").await;
        assert_eq!(r.status, 404, "GET {path}: {:?}", r.json());
        assert_eq!(r.json()["code"], "not_found");
    }
    // An asterisk-form target names no route.
    let r = raw(
        addr,
        format!("OPTIONS * HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 404, "{:?}", r.json());
    server.stop().await;
}

/// The balance as a client reads it, over the wire.
async fn balance(addr: SocketAddr, access: &str) -> String {
    let auth = format!("Bearer {access}");
    let r = request(
        addr,
        "GET",
        "/api/balance/v1/",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["balance"].as_str().unwrap().to_owned()
}

/// The head of a deposit announcing `length` body bytes.
fn deposit_head(addr: SocketAddr, access: &str, length: usize) -> Vec<u8> {
    format!(
        "POST /api/balance/v1/deposit/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {access}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `bytes`, shuts the write side, and reads whatever comes back until the server closes.
async fn send_and_half_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes")
        .ok();
    answer
}

/// A body that ends before its `Content-Length` (the client shut its side after 14 of 500
/// bytes) is never dispatched: no answer claims success and the balance does not move. The
/// same request sent in full and then half-closed is still carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_never_carried_out() {
    let t = TestApp::new(sqlite_fixture().await).await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "10").await;
    let server = Server::spawn(t.app.clone()).await;
    let addr = server.addr;
    let body = br#"{"amount":"2"}"#;

    let mut cut = deposit_head(addr, &alice.access, 500);
    cut.extend_from_slice(body);
    let answer = send_and_half_close(addr, &cut).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 4"),
        "a cut-off deposit was answered: {text}"
    );
    assert_eq!(balance(addr, &alice.access).await, "10.00");

    let mut whole = deposit_head(addr, &alice.access, body.len());
    whole.extend_from_slice(body);
    let answer = send_and_half_close(addr, &whole).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert_eq!(balance(addr, &alice.access).await, "12.00");
    server.stop().await;
}
