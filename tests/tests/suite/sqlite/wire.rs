//! The local server on the wire: what it makes of the `Host` header, of bodies that never
//! arrive in full, and of clients that are slow or idle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lighttech_tests::wire::{Server, raw, read_message, request};
use lighttech_tests::{TestApp, sqlite_fixture};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
/// same request sent in full and then half-closed, or followed by a hang-up, is still carried
/// out.
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

    // Sent in full by a client that then hangs up altogether: still carried out.
    let mut gone = TcpStream::connect(addr).await.unwrap();
    gone.write_all(&whole).await.unwrap();
    drop(gone);
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance(addr, &alice.access).await != "14.00" {
        assert!(
            Instant::now() < deadline,
            "a request sent in full was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// A server whose time limits and connection cap are the given `HTTP_*` settings.
async fn server_with(env: &[(&str, &str)]) -> (TestApp, Server) {
    let t = TestApp::with_env(sqlite_fixture().await, env).await;
    let server = Server::spawn(t.app.clone()).await;
    (t, server)
}

/// Reads until the server closes the connection (or resets it); how long that took from
/// `since` and what came before, or `None` if it stays open past `limit`.
async fn closed_by(
    reader: &mut (impl AsyncReadExt + Unpin + ?Sized),
    since: Instant,
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = limit.checked_sub(since.elapsed())?;
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((since.elapsed(), seen)),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one answer off a kept-alive connection: its status line.
async fn one_answer(stream: &mut TcpStream) -> String {
    let message = tokio::time::timeout(Duration::from_secs(10), read_message(stream))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let text = String::from_utf8_lossy(&message);
    text.lines().next().unwrap_or_default().to_owned()
}

/// The bytes of a kept-alive `GET /api/health/`.
fn keep_alive_health(addr: SocketAddr) -> Vec<u8> {
    format!("GET /api/health/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
}

/// With a 1 s header timeout: a connection that sends nothing, one that sends half a head and
/// one that trickles header lines forever are each closed about a second after opening (a
/// trickle does not push the deadline back), and the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_completes_is_closed_at_the_header_timeout() {
    let (_t, server) = server_with(&[
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "30"),
    ])
    .await;
    let addr = server.addr;
    let limit = Duration::from_secs(4);

    let opened = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /api/health/ HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let trickle = TcpStream::connect(addr).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let writer = tokio::spawn(async move {
        let _ = trickle_write
            .write_all(b"GET /api/health/ HTTP/1.1\r\n")
            .await;
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if trickle_write
                .write_all(format!("X-Slow-{n}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });

    for (name, reader) in [
        ("silent", &mut silent as &mut (dyn AsyncRead + Unpin + Send)),
        ("half a head", &mut half),
        ("trickle", &mut trickle_read),
    ] {
        let (after, answer) = closed_by(reader, opened, limit)
            .await
            .unwrap_or_else(|| panic!("{name}: still open after {limit:?}"));
        assert!(
            after >= Duration::from_millis(900),
            "{name}: closed after {after:?}"
        );
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 200 "),
            "{name}: {answer:?}"
        );
    }
    writer.abort();
    let r = request(addr, "GET", "/api/health/", &[], b"").await;
    assert_eq!(r.status, 200, "still serving");
    server.stop().await;
}

/// With a 1 s body timeout: a deposit that promises 100 bytes and sends 6 is closed about a
/// second after its head, unanswered, and the balance does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_short_is_closed_at_the_body_timeout_and_never_carried_out() {
    let (t, server) = server_with(&[
        ("HTTP_BODY_TIMEOUT_SECONDS", "1"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "30"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "30"),
    ])
    .await;
    let addr = server.addr;
    let alice = t.user("alice").await;
    t.deposit(&alice, "10").await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = deposit_head(addr, &alice.access, 100);
    bytes.extend_from_slice(br#"{"amou"#);
    stream.write_all(&bytes).await.unwrap();
    let sent = Instant::now();
    let (after, answer) = closed_by(&mut stream, sent, Duration::from_secs(4))
        .await
        .expect("a short body is closed at the body timeout");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(balance(addr, &alice.access).await, "10.00");
    server.stop().await;
}

/// A kept-alive connection may sit idle longer than the header timeout (its next request is
/// served), and is closed once idle for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let (_t, server) = server_with(&[
        ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&keep_alive_health(addr)).await.unwrap();
    assert_eq!(one_answer(&mut stream).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(&keep_alive_health(addr)).await.unwrap();
    assert_eq!(
        one_answer(&mut stream).await,
        "HTTP/1.1 200 OK",
        "idle past the header timeout but within the idle timeout, the connection still serves"
    );
    let answered = Instant::now();
    let (after, rest) = closed_by(&mut stream, answered, Duration::from_secs(6))
        .await
        .expect("an idle connection is closed at the idle timeout");
    assert!(
        after >= Duration::from_millis(2500),
        "closed after {after:?}"
    );
    assert!(rest.is_empty(), "{rest:?}");
    server.stop().await;
}

/// At the cap (2 connections here), a further client waits for a slot rather than being
/// turned away: behind two stalled heads it is served once the header timeout frees one;
/// behind two idle kept-alive connections it is served at once, the idle ones giving way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_new_client_waits_for_a_slot_and_is_served() {
    let (_t, server) = server_with(&[
        ("HTTP_MAX_CONNECTIONS", "2"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "2"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "30"),
    ])
    .await;
    let addr = server.addr;

    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/health/ HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    // Both slots are taken once the server has accepted both.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = request(addr, "GET", "/api/health/", &[], b"").await;
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited >= Duration::from_millis(1200),
        "served after {waited:?}: the cap did not hold it back"
    );
    assert!(waited < Duration::from_secs(6), "waited {waited:?}");
    for mut s in stalled {
        closed_by(&mut s, started, Duration::from_secs(6))
            .await
            .expect("a stalled head is closed");
    }

    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&keep_alive_health(addr)).await.unwrap();
        assert_eq!(one_answer(&mut s).await, "HTTP/1.1 200 OK");
        idle.push(s);
    }
    let started = Instant::now();
    let r = request(addr, "GET", "/api/health/", &[], b"").await;
    let waited = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        waited < Duration::from_millis(1500),
        "behind idle connections a client waited {waited:?}"
    );
    for mut s in idle {
        closed_by(&mut s, started, Duration::from_secs(3))
            .await
            .expect("an idle connection gives way to a waiting client");
    }
    server.stop().await;
}

/// Over the wire too, every answer says `X-Content-Type-Options: nosniff`: successes, 304s,
/// problems, and the local server's own refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_on_the_wire_says_nosniff() {
    let t = TestApp::new(sqlite_fixture().await).await;
    let alice = t.user("alice").await;
    t.deposit(&alice, "1").await;
    let server = Server::spawn(t.app.clone()).await;
    let addr = server.addr;
    let auth = format!("Bearer {}", alice.access);
    let history = "/api/balance/v1/operations/";
    let page = request(addr, "GET", history, &[("Authorization", &auth)], b"").await;
    let etag = page.header("etag").expect("an ETag").to_owned();
    let mut too_big = deposit_head(addr, &alice.access, 100_000);
    too_big.extend(std::iter::repeat_n(b'x', 20 * 1024));
    let answers = [
        (200, page),
        (
            304,
            request(
                addr,
                "GET",
                history,
                &[("Authorization", &auth), ("If-None-Match", &etag)],
                b"",
            )
            .await,
        ),
        (404, request(addr, "GET", "/api/nowhere/", &[], b"").await),
        (405, request(addr, "DELETE", "/api/health/", &[], b"").await),
        (
            401,
            request(addr, "GET", "/api/balance/v1/", &[], b"").await,
        ),
        (413, raw(addr, &too_big).await),
        (
            400,
            request(
                addr,
                "GET",
                "/api/health/",
                &[("Host", "evil.example.com")],
                b"",
            )
            .await,
        ),
        (
            400,
            request(addr, "GET", "/", &[("Host", "localhost:1/api/schema")], b"").await,
        ),
    ];
    for (status, r) in answers {
        assert_eq!(r.status, status, "{:?}", r.json());
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "a {status} answer"
        );
    }
    server.stop().await;
}
