//! The local server on the wire: what it makes of the `Host` header, of bodies that never
//! arrive in full, and of clients that are slow or idle.

use lighttech_tests::wire::{Server, raw, request};
use lighttech_tests::{TestApp, sqlite_fixture};

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
