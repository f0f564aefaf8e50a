//! The HTTP layer: one route table, one entry point.
//!
//! [`handle`] — `async fn(&App, Request, Scope) -> Response<Body>` — serves the Lambda functions
//! (`Scope::Function`: only their own routes) and the local server (`Scope::All`). The functions
//! that need less than the whole application state enter through [`handle_store_only`]
//! (`health`: the store alone) and [`handle_stateless`] (`docs`, `admin-page`: nothing). All
//! three run the same path: it matches the route, runs the endpoint, turns every error into the
//! problem+json of docs/api.md and stamps `X-Request-Id` on every response.

mod admin_page;
mod docs;
mod endpoints;
pub mod gateway;
pub mod openapi;
pub mod request;
pub mod response;
mod route_doc;
pub mod routes;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use http::Response;
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use tracing::Instrument;

use crate::app::App;
use crate::error::ApiError;
use crate::service::auth::ClientInfo;
use crate::store::Store;
pub use docs::enable_docs_ui;
use request::{MAX_BODY_BYTES, Req};
use response::{Reply, problem};
use routes::match_path;
pub use routes::{Function, Needs, ROUTES, Route, RouteMatch, Scope, match_route};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// An endpoint that uses the application state (the store, the keys, the cache).
pub type Endpoint = for<'a> fn(&'a App, &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
/// An endpoint that needs the store and nothing else (no signing key): the health check.
pub type StoreEndpoint =
    for<'a> fn(&'a dyn Store, &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
/// An endpoint that needs no application state: the documentation and the admin page.
pub type StatelessEndpoint = fn(&Req) -> Result<Reply, ApiError>;

/// One Lambda function's endpoints, in the order of its routes in [`ROUTES`]. There is one type
/// per function ([`function`]), generated from the route table; a binary names only its own,
/// so the linker leaves every other endpoint, and all they call, out of it.
pub trait FunctionEndpoints: Copy + Send + Sync + 'static {
    /// The Lambda function whose routes these endpoints serve.
    const FUNCTION: Function;
    /// What its endpoints take: [`Endpoint`], [`StoreEndpoint`] or [`StatelessEndpoint`].
    type Endpoint: Copy + Send + Sync + 'static;
    /// Its endpoints, one per route.
    const ENDPOINTS: &'static [Self::Endpoint];
}

/// The endpoint tables, from the route table ([`routes::with_routes`]): `ENDPOINTS[i]` serves
/// `ROUTES[i]` (the local server and the tests serve every route), and each function's own
/// table is its [`FunctionEndpoints`] type in [`function`].
macro_rules! endpoint_tables {
    ($($function:ident $kind:ident {
        $($method:ident $pattern:literal => $endpoint:path, $doc:expr;)*
    })*) => {
        /// `ENDPOINTS[i]` serves `ROUTES[i]`.
        static ENDPOINTS: &[Endpoint] = &[$($(endpoint_tables!(@any $kind $endpoint),)*)*];

        /// One type per Lambda function, each carrying that function's endpoints alone.
        pub mod function {
            $(
                #[doc = concat!("The endpoints of [`Function::", stringify!($function), "`](super::Function).")]
                #[derive(Debug, Clone, Copy)]
                pub struct $function;
            )*
        }

        $(
            impl FunctionEndpoints for function::$function {
                const FUNCTION: Function = Function::$function;
                type Endpoint = endpoint_tables!(@type $kind);
                const ENDPOINTS: &'static [Self::Endpoint] =
                    &[$(endpoint_tables!(@own $kind $endpoint),)*];
            }
        )*

        /// Each function and the length of its own endpoint table.
        #[cfg(test)]
        fn own_table_lengths() -> Vec<(Function, usize)> {
            vec![$(
                (Function::$function, <function::$function as FunctionEndpoints>::ENDPOINTS.len()),
            )*]
        }
    };
    (@type app) => { Endpoint };
    (@type store) => { StoreEndpoint };
    (@type stateless) => { StatelessEndpoint };
    (@any app $endpoint:path) => { |app, req| Box::pin($endpoint(app, req)) };
    (@any store $endpoint:path) => {
        |app, req| Box::pin($endpoint(app.store.as_ref(), req))
    };
    (@any stateless $endpoint:path) => {
        |_, req| Box::pin(std::future::ready($endpoint(req)))
    };
    (@own app $endpoint:path) => { |app, req| Box::pin($endpoint(app, req)) };
    (@own store $endpoint:path) => { |store, req| Box::pin($endpoint(store, req)) };
    (@own stateless $endpoint:path) => { $endpoint };
}

routes::with_routes!(endpoint_tables);

fn request_id_of(request: &lambda_http::Request) -> String {
    let from_gateway = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    from_gateway
        .filter(|id| !id.is_empty())
        .or_else(|| {
            request
                .lambda_context_ref()
                .map(|c| c.request_id.clone())
                .filter(|id| !id.is_empty())
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn client_of(request: &lambda_http::Request) -> ClientInfo {
    let (ip, gateway_agent) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            (ctx.http.source_ip.clone(), ctx.http.user_agent.clone())
        }
        _ => (None, None),
    };
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(gateway_agent);
    ClientInfo { ip, user_agent }
}

/// What runs a matched route: every endpoint (the application) or one function's own.
/// Generic rather than dynamic so that a function's binary references its own endpoints alone.
trait Endpoints: Sync {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
}

impl Endpoints for App {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        ENDPOINTS[index](self, req)
    }
}

/// Function `F`'s endpoints, on what they take (`S`: the application, the store, nothing).
struct Own<'s, F, S: ?Sized>(&'s S, F);

/// The endpoint of `F` that serves `ROUTES[index]`, one of `F`'s routes.
fn own<F: FunctionEndpoints>(index: usize) -> Option<F::Endpoint> {
    let position = ROUTES[..index]
        .iter()
        .filter(|r| r.function == F::FUNCTION)
        .count();
    F::ENDPOINTS.get(position).copied()
}

fn not_found<'a>() -> BoxFuture<'a, Result<Reply, ApiError>> {
    Box::pin(std::future::ready(Err(ApiError::NotFound)))
}

impl<F: FunctionEndpoints<Endpoint = Endpoint>> Endpoints for Own<'_, F, App> {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        own::<F>(index).map_or_else(not_found, |endpoint| endpoint(self.0, req))
    }
}

impl<F: FunctionEndpoints<Endpoint = StoreEndpoint>> Endpoints for Own<'_, F, dyn Store> {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        own::<F>(index).map_or_else(not_found, |endpoint| endpoint(self.0, req))
    }
}

impl<F: FunctionEndpoints<Endpoint = StatelessEndpoint>> Endpoints for Own<'_, F, ()> {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        let reply = own::<F>(index).map_or(Err(ApiError::NotFound), |endpoint| endpoint(req));
        Box::pin(std::future::ready(reply))
    }
}

/// Serves one request: route, run, render. Never fails and never panics on input.
pub async fn handle(app: &App, request: lambda_http::Request, scope: Scope) -> Response<Body> {
    serve(app, request, scope).await
}

/// Serves one request of function `F` (a Lambda binary) from its own endpoints.
pub async fn handle_function<F: FunctionEndpoints<Endpoint = Endpoint>>(
    app: &App,
    request: lambda_http::Request,
    function: F,
) -> Response<Body> {
    serve(&Own(app, function), request, Scope::Function(F::FUNCTION)).await
}

/// Serves one request of a function whose routes need the store alone (`health`), with no
/// signing key.
pub async fn handle_store_only<F: FunctionEndpoints<Endpoint = StoreEndpoint>>(
    store: &dyn Store,
    request: lambda_http::Request,
    function: F,
) -> Response<Body> {
    serve(&Own(store, function), request, Scope::Function(F::FUNCTION)).await
}

/// Serves one request of a function whose routes are all stateless (`docs`, `admin-page`),
/// without application state: no store, no signing key.
pub async fn handle_stateless<F: FunctionEndpoints<Endpoint = StatelessEndpoint>>(
    request: lambda_http::Request,
    function: F,
) -> Response<Body> {
    serve(&Own(&(), function), request, Scope::Function(F::FUNCTION)).await
}

async fn serve<E: Endpoints>(
    endpoints: &E,
    request: lambda_http::Request,
    scope: Scope,
) -> Response<Body> {
    let request_id = request_id_of(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
        cache = tracing::field::Empty,
    );
    let started = Instant::now();
    async {
        let response = match dispatch(endpoints, request, scope, &request_id).await {
            Ok(reply) => reply.into_response(&request_id),
            Err(error) => {
                match &error {
                    ApiError::Internal(source) => tracing::error!(
                        error = %crate::telemetry::error_chain(source.as_ref()),
                        "request failed"
                    ),
                    ApiError::ServiceUnavailable(source) => tracing::warn!(
                        error = %crate::telemetry::error_chain(source.as_ref()),
                        "store unavailable"
                    ),
                    _ => {}
                }
                problem(&error, &request_id)
            }
        };
        tracing::info!(
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "request finished"
        );
        response
    }
    .instrument(span)
    .await
}

async fn dispatch<E: Endpoints>(
    endpoints: &E,
    request: lambda_http::Request,
    scope: Scope,
    request_id: &str,
) -> Result<Reply, ApiError> {
    let client = client_of(&request);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    // `Allow` names every method the API serves on this path, whichever function serves it:
    // API Gateway sends a method no route has to the fallback function (`$default`).
    let mut allowed = Vec::new();
    let mut matched = None;
    let mut served_elsewhere = false;
    for (index, route) in ROUTES.iter().enumerate() {
        let Some(params) = match_path(route.pattern, path) else {
            continue;
        };
        if route.method != parts.method {
            if !allowed.contains(&route.method) {
                allowed.push(route.method.clone());
            }
        } else if scope.includes(route) {
            matched = Some((index, route, params));
            break;
        } else {
            served_elsewhere = true;
        }
    }
    let Some((index, route, params)) = matched else {
        if let (true, Scope::Function(function)) = (served_elsewhere, scope) {
            let query = parts.uri.query();
            if let Some(reply) =
                gateway::redirect_to_routed_form(function, &parts.method, path, query)
            {
                return Ok(reply);
            }
        }
        return Err(if allowed.is_empty() || served_elsewhere {
            ApiError::NotFound
        } else {
            ApiError::MethodNotAllowed(allowed)
        });
    };
    tracing::Span::current().record("route", route.function.name());
    request::check_query_text(parts.uri.query())?;
    let body = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(text) => bytes::Bytes::from(text),
        Body::Binary(bin) => bytes::Bytes::from(bin),
        _ => bytes::Bytes::new(),
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let req = Req {
        request_id: request_id.to_owned(),
        method: parts.method,
        path: path.to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        params,
        client,
    };
    endpoints.call(index, &req).await
}

/// The local server's `ALLOWED_HOSTS` check: `Some(400)` for a host it must not answer.
pub fn reject_disallowed_host(app: &App, request: &lambda_http::Request) -> Option<Response<Body>> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if app.config.host_allowed(&h) => None,
        _ => Some(problem(
            &ApiError::field("Host", "This host is not in ALLOWED_HOSTS."),
            &request_id_of(request),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_has_one_endpoint_per_route_and_needs_what_its_routes_need() {
        assert_eq!(ENDPOINTS.len(), ROUTES.len());
        for (f, length) in own_table_lengths() {
            assert_eq!(length, f.routes().count(), "{f:?}");
        }
        for f in Function::ALL {
            let kinds: std::collections::BTreeSet<Needs> = f.routes().map(|r| r.needs).collect();
            assert_eq!(kinds.len(), 1, "{f:?} mixes routes of different needs");
            assert!(
                kinds.contains(&f.needs()),
                "{f:?}: Function::needs disagrees with its routes"
            );
            assert_eq!(f.stateless(), f.needs() == Needs::Nothing, "{f:?}");
            assert_eq!(f.needs_signing_key(), f.needs() == Needs::App, "{f:?}");
        }
        let of = |needs| {
            Function::ALL
                .into_iter()
                .filter(|f| f.needs() == needs)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(Needs::Nothing), [Function::AdminPage, Function::Docs]);
        assert_eq!(of(Needs::Store), [Function::Health]);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_store_only_function_serves_its_routes_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("lt-http-{}", uuid::Uuid::new_v4()));
        let store = crate::store::sqlite::SqliteStore::open(dir.join("h.db"))
            .await
            .unwrap();
        let request = |path: &str| http::Request::get(path).body(Body::Empty).unwrap();
        let ok = handle_store_only(&store, request("/api/health/"), function::Health).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.body().as_ref(), br#"{"status":"ok"}"#);
        // Another function's route is not served from this binary.
        let other = handle_store_only(&store, request("/api/balance/v1/"), function::Health).await;
        assert_eq!(other.status(), 404);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
