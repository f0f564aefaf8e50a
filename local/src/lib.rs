//! The local server: an HTTP front that turns each request into the API Gateway v2 event the
//! Lambda functions receive in AWS, converts it with `lambda_http`'s own code, and calls the
//! very same [`lighttech::http::handle`]. It adds no API logic of its own; the only checks it
//! makes are the ones API Gateway makes before a function runs (a well-formed `Host`, a bounded
//! body) plus the `ALLOWED_HOSTS` rule of the original service.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
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

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving what we can.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(respond(app, request, peer).await) }
                });
                // Half-closes allowed: a client that sends its request and shuts down its side
                // (or hangs up) at once still has that request read and carried out; without
                // this, hyper would drop the request the moment it read the end of the stream.
                let connection = hyper::server::conn::http1::Builder::new()
                    .half_close(true)
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
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

async fn respond(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = read_bounded(body).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let Some(lambda_request) = to_lambda_request(parts, body, peer, &request_id) else {
        return to_hyper(lighttech::http::response::problem(
            &lighttech::ApiError::field("Host", "The Host header is not a valid host name."),
            &request_id,
        ));
    };
    if let Some(rejected) = reject_disallowed_host(&app, &lambda_request) {
        return to_hyper(rejected);
    }
    // A request, once read in full, runs to its end in a task of its own, as it would in a
    // Lambda invocation: a client that hangs up (or times out) mid-request drops only the
    // connection, never a money movement halfway through its store calls. The client learns
    // the outcome by retrying with its Idempotency-Key.
    let handled = tokio::spawn(async move { handle(&app, lambda_request, Scope::All).await }).await;
    match handled {
        Ok(response) => to_hyper(response),
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            to_hyper(lighttech::http::response::problem(
                &lighttech::ApiError::Internal(e.into()),
                &request_id,
            ))
        }
    }
}

/// Reads the body up to one byte past the limit: enough for the handler to answer 413 without
/// buffering whatever a client chooses to send.
async fn read_bounded(mut body: Incoming) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() <= MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    buf
}

/// Builds the API Gateway v2 event for this request and converts it exactly as `lambda_http`
/// does in AWS. `None` for a `Host` that is not a valid authority: API Gateway never lets one
/// through, and `lambda_http` would panic building its URI from it.
fn to_lambda_request(
    parts: http::request::Parts,
    body: Vec<u8>,
    peer: SocketAddr,
    request_id: &str,
) -> Option<lambda_http::Request> {
    let mut headers = parts.headers;
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    // lambda_http builds its URI from these with `Url::parse(..).unwrap()`.
    if url::Url::parse(&format!("http://{host}{path}")).is_err() {
        return None;
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
        |m| format!("{} {}", m.route.method, m.route.pattern),
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
    Some(LambdaRequest::ApiGatewayV2(event).into())
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
