//! The route table: which function serves which method on which path, and what its endpoint
//! needs. Data only: the endpoints are attached in `http/mod.rs`, so the OpenAPI document and
//! the tests read the routes without depending on the request path.

use http::Method;

use super::route_doc::{Access, Body, Param, RouteDoc, doc};

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

/// The Lambda functions: one per endpoint of docs/api.md.
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
    /// Every route-serving function, each built as its own binary under `functions/`.
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
    /// ([`super::gateway`]).
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
    /// The HTTP method it serves; no two routes share a method and pattern.
    pub method: Method,
    /// Path with `{name}` placeholders and a trailing slash (optional on input).
    pub pattern: &'static str,
    /// What its endpoint needs (see [`crate::http::handle_stateless`],
    /// [`crate::http::handle_store_only`]).
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

/// The route table, written once. Rows are grouped by the function that serves them, and each
/// function says what its endpoints need: `app` (the whole application state), `store` (the
/// store alone) or `stateless` (nothing). `with_routes!(callback)` hands the table to
/// `callback!`: this module builds [`ROUTES`] from it (data only, no endpoint is referenced, so a
/// binary that only describes or matches routes links none of them), and the dispatch in
/// `http/mod.rs` builds the endpoint tables. Each row ends with how the OpenAPI document
/// describes its route (a [`RouteDoc`]).
// rustfmt would pull the descriptions' continuation lines back to the macro's own indent.
#[rustfmt::skip]
macro_rules! with_routes {
    ($callback:ident) => {
        $callback! {
            Register app {
                POST "/api/auth/v1/register/" => endpoints::register,
                    doc("auth", Access::Public, "Register", "Creates a user and their account.")
                        .body("RegisterRequest")
                        .success(
                            201,
                            "The user and their account (balance 0.00), created atomically.",
                        )
                        .returns(Body::Schema("RegisteredView"))
                        .errors(&["username_taken", "email_taken"]);
            }
            Login app {
                POST "/api/auth/v1/login/" => endpoints::login,
                    doc(
                        "auth",
                        Access::Public,
                        "Log in",
                        "Opens a session. Fails the same way whether or not the user exists; after \
                         too many failed attempts for a username within the window, answers 429.",
                    )
                    .body("LoginRequest")
                    .success(200, "A new session's access and refresh tokens.")
                    .returns(Body::Schema("LoginView"))
                    .errors(&["invalid_credentials", "rate_limited"]);
            }
            Logout app {
                POST "/api/auth/v1/logout/" => endpoints::logout,
                    doc("auth", Access::User, "Log out", "Revokes the caller's session.")
                        .optional_body("LogoutRequest")
                        .success(204, "The session is revoked.");
            }
            TokenRefresh app {
                POST "/api/auth/v1/token/refresh/" => endpoints::refresh,
                    doc(
                        "auth",
                        Access::Public,
                        "Refresh tokens",
                        "Rotates the refresh token. Presenting a spent one again revokes the \
                         session. A session ends at the latest SESSION_MAX_LIFETIME_DAYS (default \
                         30) after login, however recently it was refreshed: no token is issued \
                         past that moment, and a refresh after it answers 401 invalid_token.",
                    )
                    .body("RefreshRequest")
                    .success(200, "A new pair; the presented refresh token is spent.")
                    .returns(Body::Schema("RefreshView"))
                    .errors(&["invalid_token", "token_reused"]);
            }
            Me app {
                GET "/api/auth/v1/me/" => endpoints::me,
                    doc("auth", Access::User, "Who am I", "The caller's profile.")
                        .returns(Body::Schema("MeView"));
            }
            Sessions app {
                GET "/api/auth/v1/sessions/" => endpoints::list_sessions,
                    doc(
                        "auth",
                        Access::User,
                        "List sessions",
                        "The caller's active sessions, newest first.",
                    )
                    .returns(Body::Schema("SessionList"));
                DELETE "/api/auth/v1/sessions/{id}/" => endpoints::revoke_session,
                    doc(
                        "auth",
                        Access::User,
                        "Revoke a session",
                        "Revokes one of the caller's sessions; another user's is not found.",
                    )
                    .success(204, "The session is revoked.")
                    .errors(&["not_found"])
                    .params(&[Param::Path("id", "A session id of the caller.")]);
            }
            Balance app {
                GET "/api/balance/v1/" => endpoints::balance,
                    doc("balance", Access::User, "Balance", "The caller's balance.")
                        .returns(Body::Schema("BalanceView"));
            }
            Deposit app {
                POST "/api/balance/v1/deposit/" => endpoints::deposit,
                    doc("balance", Access::User, "Deposit", "Adds money to the caller's account.")
                        .moves_money(
                            "MoneyRequest",
                            "The deposit (or, with a recorded Idempotency-Key, its replay).",
                        )
                        .errors(&["balance_limit_exceeded", "idempotency_key_mismatch"]);
            }
            Withdraw app {
                POST "/api/balance/v1/withdraw/" => endpoints::withdraw,
                    doc(
                        "balance",
                        Access::User,
                        "Withdraw",
                        "Takes money from the caller's account; never below zero.",
                    )
                    .moves_money(
                        "MoneyRequest",
                        "The withdrawal (or, with a recorded Idempotency-Key, its replay).",
                    )
                    .errors(&["insufficient_funds", "idempotency_key_mismatch"]);
            }
            Transfer app {
                POST "/api/balance/v1/transfer/" => endpoints::transfer,
                    doc(
                        "balance",
                        Access::User,
                        "Transfer",
                        "Moves money to another active user; both balances and both operations \
                         change in one atomic step or not at all.",
                    )
                    .moves_money(
                        "TransferRequest",
                        "The sender's `transfer_out` (the recipient gets a `transfer_in` with the \
                         same `transfer_id`).",
                    )
                    .errors(&[
                        "self_transfer",
                        "recipient_not_found",
                        "insufficient_funds",
                        "balance_limit_exceeded",
                        "idempotency_key_mismatch",
                    ]);
            }
            Operations app {
                GET "/api/balance/v1/operations/" => endpoints::operations,
                    doc(
                        "balance",
                        Access::User,
                        "History",
                        "The caller's operations, newest first, through the cached read path \
                         (never stale).",
                    )
                    .returns(Body::Schema("OperationPage"))
                    .params(&[Param::History]);
            }
            Health store {
                GET "/api/health/" => endpoints::health,
                    doc(
                        "health",
                        Access::Public,
                        "Health",
                        "`200` once the store answers; `503` otherwise.",
                    )
                    .returns(Body::Schema("HealthView"));
            }
            AdminUsers app {
                GET "/api/admin/v1/users/" => endpoints::admin_list_users,
                    doc(
                        "admin",
                        Access::Staff,
                        "List users",
                        "Users with their balances, by lower-cased username; `q` searches username \
                         and email.",
                    )
                    .returns(Body::Schema("AdminUserPage"))
                    .params(&[Param::Page { search: true }]);
                GET "/api/admin/v1/users/{id}/" => endpoints::admin_user,
                    doc("admin", Access::Staff, "One user", "A user with their balance.")
                        .returns(Body::Schema("AdminUserView"))
                        .errors(&["not_found"])
                        .params(&[Param::Path("id", "A user id.")]);
                GET "/api/admin/v1/users/{id}/operations/" => endpoints::admin_user_operations,
                    doc(
                        "admin",
                        Access::Staff,
                        "A user's history",
                        "Same query and shape as the user's own history. A page served (or \
                         revalidated with `304`) is recorded in the audit trail; a refused request \
                         is not.",
                    )
                    .returns(Body::Schema("OperationPage"))
                    .errors(&["not_found"])
                    .params(&[Param::Path("id", "A user id."), Param::History]);
            }
            AdminUserStatus app {
                POST "/api/admin/v1/users/{id}/deactivate/" => endpoints::admin_deactivate,
                    doc(
                        "admin",
                        Access::Staff,
                        "Deactivate a user",
                        "Revokes all the user's sessions at once, blocks login and makes them an \
                         invalid transfer recipient; balance and history are kept.",
                    )
                    .optional_body("EmptyObject")
                    .returns(Body::Schema("AdminUserView"))
                    .errors(&["not_found", "self_deactivation"])
                    .params(&[Param::Path("id", "A user id.")]);
                POST "/api/admin/v1/users/{id}/reactivate/" => endpoints::admin_reactivate,
                    doc("admin", Access::Staff, "Reactivate a user", "Lets the user log in again.")
                        .optional_body("EmptyObject")
                        .returns(Body::Schema("AdminUserView"))
                        .errors(&["not_found"])
                        .params(&[Param::Path("id", "A user id.")]);
            }
            AdminAudit app {
                GET "/api/admin/v1/audit/" => endpoints::admin_audit,
                    doc(
                        "admin",
                        Access::Staff,
                        "Audit trail",
                        "Every admin action, newest first: searches, views of a user or their \
                         history, status changes and reads of this trail (`audit.list`, recorded \
                         once its page is read, so a page lists the reads before it). Refused \
                         requests are not actions and are not recorded.",
                    )
                    .returns(Body::Schema("AuditPage"))
                    .params(&[Param::Page { search: false }]);
            }
            AdminPage stateless {
                GET "/admin/" => admin_page::serve,
                    doc("admin", Access::Public, "Admin page", "The embedded admin web page.")
                        .returns(Body::Raw(&["text/html"]));
            }
            Docs stateless {
                GET "/api/schema/" => docs::schema,
                    doc("docs", Access::Public, "OpenAPI document", "This document.")
                        .returns(Body::JsonObject);
                GET "/api/docs/" => docs::swagger,
                    doc(
                        "docs",
                        Access::Public,
                        "Swagger UI",
                        "Interactive documentation, served offline.",
                    )
                    .returns(Body::Raw(&["text/html"]));
                GET "/api/docs/{file}" => docs::swagger_asset,
                    doc(
                        "docs",
                        Access::Public,
                        "Swagger UI asset",
                        "Files of the embedded Swagger UI, each served with the media type of its \
                         extension: `.html` as `text/html`, `.css` as `text/css`, `.js` as \
                         `text/javascript`, `.png` as `image/png`.",
                    )
                    .returns(Body::Raw(&["text/html", "text/css", "text/javascript", "image/png"]))
                    .errors(&["not_found"])
                    .params(&[Param::Path(
                        "file",
                        "A file of the embedded Swagger UI, such as `swagger-ui.css`, \
                         `swagger-ui-bundle.js` or `favicon-32x32.png`.",
                    )]);
                GET "/api/redoc/" => docs::redoc,
                    doc("docs", Access::Public, "ReDoc", "Reference documentation, served offline.")
                        .returns(Body::Raw(&["text/html"]));
                GET "/api/redoc/redoc.standalone.js" => docs::redoc_bundle,
                    doc("docs", Access::Public, "ReDoc bundle", "The embedded ReDoc bundle.")
                        .returns(Body::Raw(&["text/javascript"]));
            }
        }
    };
}
pub(crate) use with_routes;

/// `ROUTES` and `ROUTE_DOCS` from the table.
macro_rules! route_specs {
    ($($function:ident $kind:ident {
        $($method:ident $pattern:literal => $endpoint:path, $doc:expr;)*
    })*) => {
        /// Every route of docs/api.md.
        pub static ROUTES: &[Route] = &[$($(
            Route {
                function: Function::$function,
                method: Method::$method,
                pattern: $pattern,
                needs: route_specs!(@needs $kind),
            },
        )*)*];

        /// How the OpenAPI document describes each route: `ROUTE_DOCS[i]` describes `ROUTES[i]`.
        /// A table apart from [`ROUTES`], so that only the binary serving the document links it.
        pub(crate) static ROUTE_DOCS: &[RouteDoc] = &[$($($doc,)*)*];
    };
    (@needs app) => { Needs::App };
    (@needs store) => { Needs::Store };
    (@needs stateless) => { Needs::Nothing };
}

with_routes!(route_specs);

/// Which routes a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every route (the local server, tests).
    All,
    /// Only one function's routes (a Lambda binary).
    Function(Function),
}

impl Scope {
    pub(crate) fn includes(self, route: &Route) -> bool {
        match self {
            Scope::All => true,
            Scope::Function(f) => route.function == f,
        }
    }
}

/// Matches a path against a pattern; the trailing slash is optional.
pub(crate) fn match_path(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
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

/// A route matched by method and path, with its `{name}` parameters.
#[derive(Debug)]
pub struct RouteMatch {
    /// The entry of [`ROUTES`] that matched.
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
