//! The HTTP layer: one route table, one entry point.
//!
//! [`handle`] is the only handler signature there is — `async fn(&App, Request) -> Response` —
//! used by every Lambda function (scoped to its own routes) and by the local server (all routes).
//! It matches the route, runs the endpoint, turns every error into the contract's
//! problem+json and stamps `X-Request-Id` on every response.

mod admin_page;
mod docs;
mod endpoints;
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
pub use docs::enable_docs_ui;
use request::{MAX_BODY_BYTES, Req};
use response::{Reply, problem};

/// A boxed endpoint future.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Endpoint = for<'a> fn(&'a App, &'a Req) -> BoxFuture<'a, Result<Reply, ApiError>>;

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
    endpoint: Endpoint,
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

macro_rules! route {
    ($function:ident, $method:ident, $pattern:literal, $endpoint:path) => {
        Route {
            function: Function::$function,
            method: Method::$method,
            pattern: $pattern,
            endpoint: |app, req| Box::pin($endpoint(app, req)),
        }
    };
}

/// Every route of API.md that exists so far.
pub static ROUTES: &[Route] = &[
    route!(
        Register,
        POST,
        "/api/auth/v1/register/",
        endpoints::register
    ),
    route!(Login, POST, "/api/auth/v1/login/", endpoints::login),
    route!(Logout, POST, "/api/auth/v1/logout/", endpoints::logout),
    route!(
        TokenRefresh,
        POST,
        "/api/auth/v1/token/refresh/",
        endpoints::refresh
    ),
    route!(Me, GET, "/api/auth/v1/me/", endpoints::me),
    route!(
        Sessions,
        GET,
        "/api/auth/v1/sessions/",
        endpoints::list_sessions
    ),
    route!(
        Sessions,
        DELETE,
        "/api/auth/v1/sessions/{id}/",
        endpoints::revoke_session
    ),
    route!(Balance, GET, "/api/balance/v1/", endpoints::balance),
    route!(
        Deposit,
        POST,
        "/api/balance/v1/deposit/",
        endpoints::deposit
    ),
    route!(
        Withdraw,
        POST,
        "/api/balance/v1/withdraw/",
        endpoints::withdraw
    ),
    route!(
        Transfer,
        POST,
        "/api/balance/v1/transfer/",
        endpoints::transfer
    ),
    route!(
        Operations,
        GET,
        "/api/balance/v1/operations/",
        endpoints::operations
    ),
    route!(Health, GET, "/api/health/", endpoints::health),
    route!(
        AdminUsers,
        GET,
        "/api/admin/v1/users/",
        endpoints::admin_list_users
    ),
    route!(
        AdminUsers,
        GET,
        "/api/admin/v1/users/{id}/",
        endpoints::admin_user
    ),
    route!(
        AdminUsers,
        GET,
        "/api/admin/v1/users/{id}/operations/",
        endpoints::admin_user_operations
    ),
    route!(
        AdminUserStatus,
        POST,
        "/api/admin/v1/users/{id}/deactivate/",
        endpoints::admin_deactivate
    ),
    route!(
        AdminUserStatus,
        POST,
        "/api/admin/v1/users/{id}/reactivate/",
        endpoints::admin_reactivate
    ),
    route!(
        AdminAudit,
        GET,
        "/api/admin/v1/audit/",
        endpoints::admin_audit
    ),
    route!(AdminPage, GET, "/admin/", endpoints::admin_page),
    route!(Docs, GET, "/api/schema/", docs::schema),
    route!(Docs, GET, "/api/docs/", docs::swagger),
    route!(Docs, GET, "/api/docs/{file}", docs::swagger_asset),
    route!(Docs, GET, "/api/redoc/", docs::redoc),
    route!(
        Docs,
        GET,
        "/api/redoc/redoc.standalone.js",
        docs::redoc_bundle
    ),
];

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

/// Serves one request: route, run, render. Never fails and never panics on input.
pub async fn handle(app: &App, request: lambda_http::Request, scope: Scope) -> Response<Body> {
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
        let response = match dispatch(app, request, scope, &request_id).await {
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

async fn dispatch(
    app: &App,
    request: lambda_http::Request,
    scope: Scope,
    request_id: &str,
) -> Result<Reply, ApiError> {
    let client = client_of(&request);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let mut allowed = Vec::new();
    let mut matched = None;
    for route in ROUTES.iter().filter(|r| scope.includes(r)) {
        if let Some(params) = match_path(route.pattern, path) {
            if route.method == parts.method {
                matched = Some((route, params));
                break;
            }
            if !allowed.contains(&route.method) {
                allowed.push(route.method.clone());
            }
        }
    }
    let Some((route, params)) = matched else {
        return Err(if allowed.is_empty() {
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
    (route.endpoint)(app, &req).await
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
