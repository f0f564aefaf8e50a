//! The local server: an HTTP front that turns each request into the API Gateway v2 event the
//! Lambda functions receive in AWS, converts it with `lambda_http`'s own code, and calls the
//! very same [`lighttech::http::handle`]. It adds no API logic of its own; the only checks it
//! makes are the ones API Gateway makes before a function runs (a well-formed `Host`, a body
//! read in full and bounded) plus the `ALLOWED_HOSTS` rule of the original service.
//!
//! Since it may face the network (the container listens on 0.0.0.0), it also bounds what a
//! client can hold: `conn` keeps each connection's time limits (request head, idle
//! keep-alive, a stalled answer), `respond` the body's, and [`serve`] caps how many
//! connections are served at once.

use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext,
    ApiGatewayV2httpRequestContextHttpDescription,
};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::request::LambdaRequest;
use lighttech::App;
use lighttech::http::request::MAX_BODY_BYTES;
use lighttech::http::{Scope, handle, match_route, reject_disallowed_host};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::conn::{Crowding, Cycle, Limits, Watched};

mod conn;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time between two warnings that the connection cap was reached.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serves until `shutdown` resolves, then lets in-flight requests finish. The time limits and
/// the connection cap come from `app.config` (`HTTP_*`).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = Limits {
        header: app.config.http_header_timeout,
        body: app.config.http_body_timeout,
        idle: app.config.http_idle_timeout,
    };
    let slots = Arc::new(Semaphore::new(app.config.http_max_connections));
    let crowding = Arc::new(Crowding::default());
    let mut warned_at: Option<Instant> = None;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving what we can.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap, this connection waits for a slot, and the ones behind it wait in
                // the listen backlog, where they cost no file descriptor. Waiting rather than
                // turning clients away keeps the server answering everyone: every slot comes
                // free within the time limits, and idle kept-alive connections give theirs up
                // at once (below). Closing instead would fail well-behaved clients outright
                // while the slow ones keep their slots.
                if warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                    tracing::warn!(
                        max = app.config.http_max_connections,
                        "connection cap reached; new connections wait for a free slot"
                    );
                    warned_at = Some(Instant::now());
                }
                crowding.press();
                let acquired = tokio::select! {
                    acquired = Arc::clone(&slots).acquire_owned() => acquired,
                    () = &mut shutdown => break,
                };
                crowding.relieve();
                match acquired {
                    Ok(permit) => permit,
                    Err(_) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let cycle = Cycle::new(limits);
        let io = Watched::new(stream, Arc::clone(&cycle), Arc::clone(&crowding));
        let app = Arc::clone(&app);
        let service = service_fn(move |request| {
            // Here, as hyper hands the head over, not when the future first runs: from this
            // moment the body's own deadline applies instead of the head's.
            cycle.request_started();
            let app = Arc::clone(&app);
            let cycle = Arc::clone(&cycle);
            async move {
                let answer = respond(app, request, peer, limits.body).await;
                cycle.answer_ready();
                answer
            }
        });
        // Half-closes allowed: a client that sends its request and shuts down its side
        // (or hangs up) at once still has that request read and carried out; without
        // this, hyper would drop the request the moment it read the end of the stream.
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
    Ok(())
}

/// Answers one request, or fails when its body cannot be read in full within `body_timeout`:
/// hyper then closes the connection without an answer, and nothing was dispatched.
async fn respond(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    body_timeout: Duration,
) -> Result<Response<Full<Bytes>>, Unread> {
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(body_timeout, read_bounded(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(Unread::Failed(e)),
        Err(_) => return Err(Unread::TimedOut),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let lambda_request = match to_lambda_request(parts, body, peer, &request_id) {
        Ok(request) => request,
        Err(error) => {
            return Ok(to_hyper(lighttech::http::response::problem(
                &error,
                &request_id,
            )));
        }
    };
    if let Some(rejected) = reject_disallowed_host(&app, &lambda_request) {
        return Ok(to_hyper(rejected));
    }
    // A request, once read in full, runs to its end in a task of its own, as it would in a
    // Lambda invocation: a client that hangs up (or times out) mid-request drops only the
    // connection, never a money movement halfway through its store calls. The client learns
    // the outcome by retrying with its Idempotency-Key.
    let handled = tokio::spawn(async move { handle(&app, lambda_request, Scope::All).await }).await;
    Ok(match handled {
        Ok(response) => to_hyper(response),
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            to_hyper(lighttech::http::response::problem(
                &lighttech::ApiError::Internal(e.into()),
                &request_id,
            ))
        }
    })
}

/// Why a request was dropped without an answer, before anything was dispatched.
#[derive(Debug)]
enum Unread {
    /// The body ended before its declared length, or reading it failed.
    Failed(hyper::Error),
    /// The body did not arrive in full within the body timeout.
    TimedOut,
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Failed(e) => write!(f, "the request body could not be read: {e}"),
            Unread::TimedOut => f.write_str("the request body did not arrive in time"),
        }
    }
}

impl std::error::Error for Unread {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unread::Failed(e) => Some(e),
            Unread::TimedOut => None,
        }
    }
}

/// Reads the body up to one byte past the limit: enough for the handler to answer 413 without
/// buffering whatever a client chooses to send. A body that ends before its declared length
/// (the client hung up or shut its side early) or whose read fails is an error: what arrived
/// is not the request the client meant, so it must not be carried out.
async fn read_bounded(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut buf = Vec::new();
    while buf.len() <= MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    Ok(buf)
}

/// The request's `Host` (or, without one, the request target's authority) when it is a plain
/// `host[:port]`: a DNS-style name, an IPv4 address or a bracketed IPv6 address, and an
/// optional decimal port. Anything else (a path, a query, a fragment, userinfo, whitespace,
/// percent-escapes) is refused: API Gateway never lets such a host through, and `lambda_http`
/// would read the path out of it.
fn request_host(parts: &http::request::Parts) -> Option<Authority> {
    let host = match parts.headers.get(http::header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => parts.uri.authority()?.as_str(),
    };
    // `Authority` accepts userinfo (`user@host`), which has no place in a Host header.
    if host.contains('@') {
        return None;
    }
    let authority: Authority = host.parse().ok()?;
    let name = authority.host();
    let name_ok = match name.strip_prefix('[') {
        Some(literal) => literal
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
        None => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    let port_ok = match authority.as_str()[name.len()..].strip_prefix(':') {
        Some(port) => {
            port.is_empty()
                || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
        }
        None => authority.as_str().len() == name.len(),
    };
    (name_ok && port_ok).then_some(authority)
}

/// Builds the API Gateway v2 event for this request and converts it exactly as `lambda_http`
/// does in AWS, except that the route is always the request line's path.
fn to_lambda_request(
    parts: http::request::Parts,
    body: Vec<u8>,
    peer: SocketAddr,
    request_id: &str,
) -> Result<lambda_http::Request, lighttech::ApiError> {
    let authority = request_host(&parts).ok_or_else(|| {
        lighttech::ApiError::field(
            "Host",
            "The Host header must be a host name or address, with an optional port.",
        )
    })?;
    let host = authority.as_str().to_owned();
    let mut headers = parts.headers;
    let path = parts.uri.path().to_owned();
    // lambda_http builds a URI from these with `Url::parse(..).unwrap()`; with a valid host
    // only an odd request target (`OPTIONS *`) can fail it, and no route has such a path.
    if url::Url::parse(&format!("http://{host}{path}")).is_err() {
        return Err(lighttech::ApiError::NotFound);
    }
    // Like API Gateway, the front decides the scheme header; the client does not.
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Ok(h) = HeaderValue::from_str(&host) {
        headers.insert(http::header::HOST, h);
    }
    let query = parts.uri.query().unwrap_or("").to_owned();
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let mut http_ctx = ApiGatewayV2httpRequestContextHttpDescription::default();
    http_ctx.method = parts.method.clone();
    http_ctx.path = Some(path.clone());
    http_ctx.protocol = Some(format!("{:?}", parts.version));
    http_ctx.source_ip = Some(peer.ip().to_string());
    http_ctx.user_agent = user_agent;

    let matched = match_route(&parts.method, &path);
    let route_key = matched.as_ref().map_or_else(
        || "$default".to_owned(),
        |m| lighttech::http::gateway::route_key(m.route),
    );

    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.request_id = Some(request_id.to_owned());
    ctx.route_key = Some(route_key.clone());
    ctx.stage = Some("$default".to_owned());
    ctx.domain_name = Some(host);
    ctx.time_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    ctx.http = http_ctx;

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(route_key);
    event.raw_path = Some(path);
    event.raw_query_string = Some(query.clone());
    event.query_string_parameters = query.parse::<QueryMap>().unwrap_or_default();
    event.path_parameters = matched
        .map(|m| {
            m.params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        })
        .unwrap_or_default();
    event.headers = headers;
    event.request_context = ctx;
    if !body.is_empty() {
        match String::from_utf8(body) {
            Ok(text) => event.body = Some(text),
            Err(e) => {
                event.body = Some(STANDARD.encode(e.into_bytes()));
                event.is_base64_encoded = true;
            }
        }
    }
    let mut request: lambda_http::Request = LambdaRequest::ApiGatewayV2(event).into();
    // lambda_http parsed `http://{host}{path}` as a URL, which resolves dot segments
    // (`/x/../api/health/`); the router and the logs get the request line's path as sent.
    let mut uri = http::Uri::builder().scheme("http").authority(authority);
    if let Some(path_and_query) = parts.uri.path_and_query() {
        uri = uri.path_and_query(path_and_query.clone());
    }
    *request.uri_mut() = uri.build().map_err(|_| lighttech::ApiError::NotFound)?;
    Ok(request)
}

fn to_hyper(response: lambda_http::Response<lambda_http::Body>) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(t) => Bytes::from(t),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    Response::from_parts(parts, Full::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(host: &str) -> Option<String> {
        let (parts, ()) = Request::builder()
            .uri("/api/health/")
            .header(http::header::HOST, host)
            .body(())
            .unwrap()
            .into_parts();
        request_host(&parts).map(|a| a.to_string())
    }

    #[test]
    fn a_host_is_a_name_or_address_with_an_optional_port() {
        for host in [
            "localhost",
            "localhost:8000",
            "localhost:",
            "api_1.internal",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:8000",
        ] {
            assert_eq!(host_of(host).as_deref(), Some(host), "{host:?}");
        }
    }

    #[test]
    fn a_host_with_a_path_query_userinfo_or_junk_is_refused() {
        for host in [
            "",
            "localhost:1/api/health/?x=",
            "localhost/api/schema",
            "localhost?x",
            "localhost#x",
            "user@localhost",
            "localhost:65536",
            "localhost:+1",
            "localhost:8000:1",
            "local%68ost",
            "local host",
            "[::1",
            "[::g]:80",
            ":80",
        ] {
            assert_eq!(host_of(host), None, "{host:?}");
        }
    }

    #[test]
    fn without_a_host_header_the_target_authority_counts() {
        let (parts, ()) = Request::builder()
            .uri("http://localhost:8000/api/health/")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            request_host(&parts).map(|a| a.to_string()).as_deref(),
            Some("localhost:8000")
        );
    }
}
