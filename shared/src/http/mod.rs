//! The HTTP layer: one route table, one entry point.
//!
//! [`handle`] — `async fn(&App, Request, Scope) -> Response<Body>` — serves the Lambda functions
//! (`Scope::Function`: only their own routes) and the local server (`Scope::All`). The functions
//! that need less than the whole application state enter through [`handle_store_only`]
//! (`health`: the store alone) and [`handle_stateless`] (`docs`, `admin-page`: nothing). All
//! three run the same path: it matches the route, runs the endpoint, turns every error into the
//! contract's problem+json and stamps `X-Request-Id` on every response.

mod admin_page;
mod docs;
mod endpoints;
pub mod gateway;
pub mod openapi;
pub mod request;
pub mod response;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use http::{Method, Response};
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

/// A boxed endpoint future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// An endpoint that uses the application state (the store, the keys, the cache).
type Endpoint = for<'a> fn(&'a App, &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
/// An endpoint that needs the store and nothing else (no signing key): the health check.
type StoreEndpoint = for<'a> fn(&'a dyn Store, &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
/// An endpoint that needs no application state: the documentation and the admin page.
type StatelessEndpoint = fn(&Req) -> Result<Reply, ApiError>;

/// What a route's endpoint needs, and so what its function's binary builds at cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Needs {
    /// Nothing: static pages and the OpenAPI document ([`crate::lambda::run_stateless`]).
    Nothing,
    /// The store alone, no signing key ([`crate::lambda::run_store_only`]).
    Store,
    /// The whole application state, the signing key included ([`crate::lambda::run`]).
    App,
}

/// The Lambda functions: one per endpoint of API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `POST /api/auth/v1/register/`
    Register,
    /// `POST /api/auth/v1/login/`
    Login,
    /// `POST /api/auth/v1/logout/`
    Logout,
    /// `POST /api/auth/v1/token/refresh/`
    TokenRefresh,
    /// `GET /api/auth/v1/me/`
    Me,
    /// `GET /api/auth/v1/sessions/`, `DELETE /api/auth/v1/sessions/{id}/`
    Sessions,
    /// `GET /api/balance/v1/`
    Balance,
    /// `POST /api/balance/v1/deposit/`
    Deposit,
    /// `POST /api/balance/v1/withdraw/`
    Withdraw,
    /// `POST /api/balance/v1/transfer/`
    Transfer,
    /// `GET /api/balance/v1/operations/`
    Operations,
    /// `GET /api/health/`
    Health,
    /// `GET /api/admin/v1/users/`, `GET …/users/{id}/`, `GET …/users/{id}/operations/`
    AdminUsers,
    /// `POST /api/admin/v1/users/{id}/deactivate/`, `POST …/users/{id}/reactivate/`
    AdminUserStatus,
    /// `GET /api/admin/v1/audit/`
    AdminAudit,
    /// `GET /admin/`
    AdminPage,
    /// `GET /api/schema/`, `/api/docs/`, `/api/redoc/` and their assets
    Docs,
}

impl Function {
    /// Every function.
    pub const ALL: [Function; 17] = [
        Function::Register,
        Function::Login,
        Function::Logout,
        Function::TokenRefresh,
        Function::Me,
        Function::Sessions,
        Function::Balance,
        Function::Deposit,
        Function::Withdraw,
        Function::Transfer,
        Function::Operations,
        Function::Health,
        Function::AdminUsers,
        Function::AdminUserStatus,
        Function::AdminAudit,
        Function::AdminPage,
        Function::Docs,
    ];

    /// The binary (and SAM function) name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Register => "register",
            Function::Login => "login",
            Function::Logout => "logout",
            Function::TokenRefresh => "token-refresh",
            Function::Me => "me",
            Function::Sessions => "sessions",
            Function::Balance => "balance",
            Function::Deposit => "deposit",
            Function::Withdraw => "withdraw",
            Function::Transfer => "transfer",
            Function::Operations => "operations",
            Function::Health => "health",
            Function::AdminUsers => "admin-users",
            Function::AdminUserStatus => "admin-user-status",
            Function::AdminAudit => "admin-audit",
            Function::AdminPage => "admin-page",
            Function::Docs => "docs",
        }
    }

    /// The function behind API Gateway's `$default` route, which receives every request that
    /// no route of the API matches: it answers `404 not_found`, or `405 method_not_allowed`
    /// with `Allow` when the path exists under other methods, as the local server does, and a
    /// `308` to the routed form for another function's route asked for with its trailing slash
    /// ([`gateway`]).
    pub const FALLBACK: Function = Function::Docs;

    /// What this function's routes need: its binary starts with [`crate::lambda::run_stateless`]
    /// ([`Needs::Nothing`]), [`crate::lambda::run_store_only`] ([`Needs::Store`]) or
    /// [`crate::lambda::run`] ([`Needs::App`]).
    pub fn needs(self) -> Needs {
        match self {
            Function::AdminPage | Function::Docs => Needs::Nothing,
            Function::Health => Needs::Store,
            _ => Needs::App,
        }
    }

    /// Whether this function serves its routes without application state (no store, no signing
    /// key): the binary then starts with [`crate::lambda::run_stateless`].
    pub fn stateless(self) -> bool {
        self.needs() == Needs::Nothing
    }

    /// Whether this function needs the signing key (it issues or verifies tokens or cursors).
    pub fn needs_signing_key(self) -> bool {
        self.needs() == Needs::App
    }

    /// The routes this function serves.
    pub fn routes(self) -> impl Iterator<Item = &'static Route> {
        ROUTES.iter().filter(move |r| r.function == self)
    }
}

/// One method on one path pattern, served by one function.
pub struct Route {
    /// The function that serves it in AWS.
    pub function: Function,
    /// HTTP method.
    pub method: Method,
    /// Path with `{name}` placeholders and a trailing slash (optional on input).
    pub pattern: &'static str,
    /// What its endpoint needs (see [`handle_stateless`], [`handle_store_only`]).
    pub needs: Needs,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.method,
            self.pattern,
            self.function.name()
        )
    }
}

/// The route table, written once: it defines [`ROUTES`] (what exists: the OpenAPI document and
/// the template tests read it), `ENDPOINTS` (what serves each route, in the same order),
/// `store_endpoint` and `stateless_endpoint`. An endpoint is of one of three kinds: `app` (the
/// whole application state), `store` (the store alone) or `stateless` (nothing). The route specs
/// hold no function pointers, so a binary that only describes the routes or serves the stateless
/// ones does not link the store.
macro_rules! routes {
    ($($function:ident $method:ident $pattern:literal => $kind:ident $endpoint:path;)*) => {
        /// Every route of API.md.
        pub static ROUTES: &[Route] = &[$(
            Route {
                function: Function::$function,
                method: Method::$method,
                pattern: $pattern,
                needs: routes!(@needs $kind),
            },
        )*];

        /// `ENDPOINTS[i]` serves `ROUTES[i]`.
        static ENDPOINTS: &[Endpoint] = &[$(routes!(@endpoint $kind $endpoint),)*];

        /// The store-only endpoint of `ROUTES[index]`, if that route needs the store alone.
        fn store_endpoint(index: usize) -> Option<StoreEndpoint> {
            let endpoints: &[Option<StoreEndpoint>] =
                &[$(routes!(@store_endpoint $kind $endpoint),)*];
            endpoints.get(index).copied().flatten()
        }

        /// The stateless endpoint of `ROUTES[index]`, if that route is stateless.
        fn stateless_endpoint(index: usize) -> Option<StatelessEndpoint> {
            let endpoints: &[Option<StatelessEndpoint>] =
                &[$(routes!(@stateless_endpoint $kind $endpoint),)*];
            endpoints.get(index).copied().flatten()
        }
    };
    (@needs app) => { Needs::App };
    (@needs store) => { Needs::Store };
    (@needs stateless) => { Needs::Nothing };
    (@endpoint app $endpoint:path) => { |app, req| Box::pin($endpoint(app, req)) };
    (@endpoint store $endpoint:path) => {
        |app, req| Box::pin($endpoint(app.store.as_ref(), req))
    };
    (@endpoint stateless $endpoint:path) => {
        |_, req| Box::pin(std::future::ready($endpoint(req)))
    };
    (@store_endpoint store $endpoint:path) => {{
        let endpoint: StoreEndpoint = |store, req| Box::pin($endpoint(store, req));
        Some(endpoint)
    }};
    (@store_endpoint $other:ident $endpoint:path) => { None };
    (@stateless_endpoint stateless $endpoint:path) => { Some($endpoint as StatelessEndpoint) };
    (@stateless_endpoint $other:ident $endpoint:path) => { None };
}

routes! {
    Register POST "/api/auth/v1/register/" => app endpoints::register;
    Login POST "/api/auth/v1/login/" => app endpoints::login;
    Logout POST "/api/auth/v1/logout/" => app endpoints::logout;
    TokenRefresh POST "/api/auth/v1/token/refresh/" => app endpoints::refresh;
    Me GET "/api/auth/v1/me/" => app endpoints::me;
    Sessions GET "/api/auth/v1/sessions/" => app endpoints::list_sessions;
    Sessions DELETE "/api/auth/v1/sessions/{id}/" => app endpoints::revoke_session;
    Balance GET "/api/balance/v1/" => app endpoints::balance;
    Deposit POST "/api/balance/v1/deposit/" => app endpoints::deposit;
    Withdraw POST "/api/balance/v1/withdraw/" => app endpoints::withdraw;
    Transfer POST "/api/balance/v1/transfer/" => app endpoints::transfer;
    Operations GET "/api/balance/v1/operations/" => app endpoints::operations;
    Health GET "/api/health/" => store endpoints::health;
    AdminUsers GET "/api/admin/v1/users/" => app endpoints::admin_list_users;
    AdminUsers GET "/api/admin/v1/users/{id}/" => app endpoints::admin_user;
    AdminUsers GET "/api/admin/v1/users/{id}/operations/" => app endpoints::admin_user_operations;
    AdminUserStatus POST "/api/admin/v1/users/{id}/deactivate/" => app endpoints::admin_deactivate;
    AdminUserStatus POST "/api/admin/v1/users/{id}/reactivate/" => app endpoints::admin_reactivate;
    AdminAudit GET "/api/admin/v1/audit/" => app endpoints::admin_audit;
    AdminPage GET "/admin/" => stateless admin_page::serve;
    Docs GET "/api/schema/" => stateless docs::schema;
    Docs GET "/api/docs/" => stateless docs::swagger;
    Docs GET "/api/docs/{file}" => stateless docs::swagger_asset;
    Docs GET "/api/redoc/" => stateless docs::redoc;
    Docs GET "/api/redoc/redoc.standalone.js" => stateless docs::redoc_bundle;
}

/// Which routes a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every route (the local server, tests).
    All,
    /// Only one function's routes (a Lambda binary).
    Function(Function),
}

impl Scope {
    fn includes(self, route: &Route) -> bool {
        match self {
            Scope::All => true,
            Scope::Function(f) => route.function == f,
        }
    }
}

/// Matches a path against a pattern; the trailing slash is optional.
fn match_path(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let pattern = pattern.strip_suffix('/').unwrap_or(pattern);
    let path = path.strip_suffix('/').unwrap_or(path);
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') => {
                if s.is_empty() {
                    return None;
                }
                params.push((&p[1..p.len() - 1], s.to_owned()));
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

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

/// A route matched by method and path, with its `{name}` parameters.
#[derive(Debug)]
pub struct RouteMatch {
    /// The route.
    pub route: &'static Route,
    /// Parameter values in pattern order.
    pub params: Vec<(&'static str, String)>,
}

/// Finds the route for a method and path among all routes (the local server fills API
/// Gateway's route key and path parameters from it).
pub fn match_route(method: &Method, path: &str) -> Option<RouteMatch> {
    ROUTES.iter().find_map(|route| {
        (route.method == *method)
            .then(|| match_path(route.pattern, path))
            .flatten()
            .map(|params| RouteMatch { route, params })
    })
}

/// What runs a matched route: the application (every route) or nothing but the stateless
/// endpoints. Generic rather than dynamic so that a stateless binary never references the
/// stateful endpoints, and the linker leaves the store out of it.
trait Endpoints: Sync {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;
}

impl Endpoints for App {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        ENDPOINTS[index](self, req)
    }
}

/// The store-only endpoints alone, on a store.
struct StoreOnly<'s>(&'s dyn Store);

impl Endpoints for StoreOnly<'_> {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        match store_endpoint(index) {
            Some(endpoint) => endpoint(self.0, req),
            None => Box::pin(std::future::ready(Err(ApiError::NotFound))),
        }
    }
}

/// The stateless endpoints alone.
struct Stateless;

impl Endpoints for Stateless {
    fn call<'a>(&'a self, index: usize, req: &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>> {
        let reply = stateless_endpoint(index).map_or(Err(ApiError::NotFound), |f| f(req));
        Box::pin(std::future::ready(reply))
    }
}

/// Serves one request: route, run, render. Never fails and never panics on input.
pub async fn handle(app: &App, request: lambda_http::Request, scope: Scope) -> Response<Body> {
    serve(app, request, scope).await
}

/// Serves one request of a function whose routes need the store alone (`health`), with no
/// signing key.
pub async fn handle_store_only(
    store: &dyn Store,
    request: lambda_http::Request,
    function: Function,
) -> Response<Body> {
    serve(&StoreOnly(store), request, Scope::Function(function)).await
}

/// Serves one request of a function whose routes are all stateless (`docs`, `admin-page`),
/// without application state: no store, no signing key.
pub async fn handle_stateless(request: lambda_http::Request, function: Function) -> Response<Body> {
    serve(&Stateless, request, Scope::Function(function)).await
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
    fn trailing_slashes_are_optional_and_parameters_are_captured() {
        assert_eq!(
            match_path("/api/balance/v1/", "/api/balance/v1"),
            Some(vec![])
        );
        assert_eq!(
            match_path("/api/balance/v1/", "/api/balance/v1/"),
            Some(vec![])
        );
        assert_eq!(
            match_path("/api/auth/v1/sessions/{id}/", "/api/auth/v1/sessions/abc/"),
            Some(vec![("id", "abc".to_owned())])
        );
        assert_eq!(
            match_path("/api/auth/v1/sessions/{id}/", "/api/auth/v1/sessions//"),
            None
        );
        assert_eq!(match_path("/api/health/", "/api/health/x"), None);
        assert_eq!(match_path("/api/health/", "/api//health/"), None);
    }

    #[test]
    fn each_route_has_the_endpoint_of_its_kind_and_no_function_mixes_kinds() {
        for (index, route) in ROUTES.iter().enumerate() {
            assert_eq!(
                stateless_endpoint(index).is_some(),
                route.needs == Needs::Nothing,
                "{route:?}"
            );
            assert_eq!(
                store_endpoint(index).is_some(),
                route.needs == Needs::Store,
                "{route:?}"
            );
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

    #[tokio::test]
    async fn a_store_only_function_serves_its_routes_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("lt-http-{}", uuid::Uuid::new_v4()));
        let store = crate::store::sqlite::SqliteStore::open(dir.join("h.db"))
            .await
            .unwrap();
        let request = |path: &str| http::Request::get(path).body(Body::Empty).unwrap();
        let ok = handle_store_only(&store, request("/api/health/"), Function::Health).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.body().as_ref(), br#"{"status":"ok"}"#);
        // Another function's route is not served from this binary.
        let other = handle_store_only(&store, request("/api/balance/v1/"), Function::Health).await;
        assert_eq!(other.status(), 404);
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_function_has_a_route_and_every_route_is_unique() {
        for f in Function::ALL {
            assert!(f.routes().next().is_some(), "{f:?} has no route");
        }
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.pattern == b.pattern),
                    "{a:?} twice"
                );
            }
        }
    }
}
