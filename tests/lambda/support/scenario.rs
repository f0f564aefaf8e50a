//! One pass over every function, through its binary: a happy path and an error path each,
//! mostly from the events in `local/events/`, plus the routing every binary must get right (its
//! routes with and without the trailing slash; other functions' routes are not found). Run on
//! the embedded store by `runtime.rs` and on DynamoDB by `iam.rs`.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use lighttech::app::App;
use lighttech::domain::password::NewPassword;
use lighttech::domain::{Email, Username};
use lighttech::http::{Function, ROUTES, Route};
use lighttech::service::auth::{self, Registration};
use serde_json::{Value, json};

use super::runtime_api::{Event, HttpResponse, Lambda, binary_path};

pub const PASSWORD: &str = "Correct-Horse-Battery-9";

pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../local/events")
}

/// A path matching `route`'s pattern, with `{name}` filled in.
pub fn concrete_path(route: &Route) -> String {
    route
        .pattern
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "00000000-0000-4000-8000-000000000000"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The route's key as the template registers it with API Gateway.
pub fn route_key(route: &Route) -> String {
    lighttech::http::gateway::route_key(route)
}

/// An event for the only route of `function` with `method`, at its pattern's path.
pub fn event_for(function: Function, method: &str) -> Event {
    let route = route_of(function, method);
    Event::new(&route_key(route), route.pattern)
}

/// The only route of `function` with `method` (the events and checks below name routes that
/// way).
pub fn route_of(function: Function, method: &str) -> &'static Route {
    let mut routes = function.routes().filter(|r| r.method.as_str() == method);
    let route = routes
        .next()
        .unwrap_or_else(|| panic!("{function:?} has no {method} route"));
    assert!(
        routes.next().is_none(),
        "{function:?} has two {method} routes"
    );
    route
}

/// Every function process, all on one SQLite file.
pub struct Fleet {
    lambdas: HashMap<&'static str, Lambda>,
    happy: BTreeSet<&'static str>,
    error: BTreeSet<&'static str>,
}

impl Fleet {
    /// Starts every function binary in `bin_dir`, in `workdir`, each with the environment
    /// `env_for` gives it. The first one starts alone: on the embedded store it creates the
    /// database the others then open.
    pub async fn start(
        bin_dir: &Path,
        workdir: &Path,
        env_for: impl Fn(Function) -> Vec<(String, String)>,
    ) -> Fleet {
        let mut lambdas = HashMap::new();
        let first = Function::ALL[0];
        let mut lambda = Lambda::start(
            &binary_path(bin_dir, first.name()),
            first.name(),
            &env_for(first),
            workdir,
        )
        .await;
        lambda.initialized().await;
        lambdas.insert(first.name(), lambda);
        for function in &Function::ALL[1..] {
            let lambda = Lambda::start(
                &binary_path(bin_dir, function.name()),
                function.name(),
                &env_for(*function),
                workdir,
            )
            .await;
            lambdas.insert(function.name(), lambda);
        }
        for lambda in lambdas.values_mut() {
            if lambda.name != first.name() {
                lambda.initialized().await;
            }
        }
        Fleet {
            lambdas,
            happy: BTreeSet::new(),
            error: BTreeSet::new(),
        }
    }

    /// Invokes `function` with an event document and checks what every response must carry.
    pub async fn invoke(&mut self, function: Function, event: &Value) -> HttpResponse {
        let lambda = self
            .lambdas
            .get_mut(function.name())
            .expect("every function is running");
        let response = lambda.invoke(event).await;
        let request_id = event["requestContext"]["requestId"]
            .as_str()
            .expect("event has a request id");
        assert_eq!(
            response.header("x-request-id"),
            Some(request_id),
            "{}: X-Request-Id must be API Gateway's request id; response {response:?}",
            function.name()
        );
        assert_eq!(
            response.header("cache-control").map(|v| !v.is_empty()),
            Some(true),
            "{}: every response carries Cache-Control: {response:?}",
            function.name()
        );
        response
    }

    pub async fn call(&mut self, function: Function, event: Event) -> HttpResponse {
        self.invoke(function, &event.to_json()).await
    }

    /// Invokes `function` with `local/events/<file>`, placeholders filled in.
    pub async fn call_file(
        &mut self,
        function: Function,
        file: &str,
        fill: &[(&str, &str)],
    ) -> HttpResponse {
        let path = events_dir().join(file);
        let mut text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for (name, value) in fill {
            text = text.replace(&format!("{{{{{name}}}}}"), value);
        }
        assert!(
            !text.contains("{{"),
            "{file}: a placeholder was left unfilled"
        );
        let event: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        self.invoke(function, &event).await
    }

    pub fn happy(&mut self, function: Function) {
        self.happy.insert(function.name());
    }

    pub fn error(&mut self, function: Function) {
        self.error.insert(function.name());
    }

    pub async fn login(&mut self, username: &str) -> (String, String) {
        let response = self
            .call(
                Function::Login,
                event_for(Function::Login, "POST")
                    .json(&json!({"username": username, "password": PASSWORD})),
            )
            .await;
        assert_eq!(response.status, 200, "{response:?}");
        let body = response.json();
        (
            body["access"].as_str().expect("access").to_owned(),
            body["refresh"].as_str().expect("refresh").to_owned(),
        )
    }

    pub async fn stop(self) {
        for (_, lambda) in self.lambdas {
            lambda.stop().await;
        }
    }
}

pub fn assert_problem(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{response:?}"
    );
    assert_eq!(response.json()["code"], code, "{response:?}");
}

/// Drives every function through its happy and error paths (the shared signing key and
/// `CURRENCY=EUR`, `ACCESS_TOKEN_LIFETIME_MINUTES=7` are expected in every function's
/// environment). `app` is the same store, opened in this process: staff members can only be
/// created there (as `lighttech-local create-superuser` does), not through the API.
pub async fn every_endpoint(fleet: &mut Fleet, app: &App) {
    use Function::*;
    // register: the event file creates alice; the same again is a conflict.
    let response = fleet.call_file(Register, "register.json", &[]).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    let alice = response.json();
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["balance"], "0.00");
    fleet.happy(Register);
    let response = fleet.call_file(Register, "register.json", &[]).await;
    assert_problem(&response, 409, "username_taken");
    fleet.error(Register);
    let response = fleet
        .call(
            Register,
            event_for(Register, "POST").json(
                &json!({"username": "bob", "email": "bob@example.com", "password": PASSWORD}),
            ),
        )
        .await;
    assert_eq!(response.status, 201, "{response:?}");
    let bob = response.json();

    // login: the event file logs alice in; a wrong password is refused.
    let response = fleet.call_file(Login, "login.json", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    let pair = response.json();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(
        pair["expires_in"], 420,
        "ACCESS_TOKEN_LIFETIME_MINUTES=7 reaches the binary"
    );
    let access = pair["access"].as_str().expect("access").to_owned();
    let refresh = pair["refresh"].as_str().expect("refresh").to_owned();
    fleet.happy(Login);
    let response = fleet
        .call(
            Login,
            event_for(Login, "POST")
                .json(&json!({"username": "alice", "password": "Wrong-Horse-Battery-9"})),
        )
        .await;
    assert_problem(&response, 401, "invalid_credentials");
    fleet.error(Login);
    let token = [("ACCESS_TOKEN", access.as_str())];

    // me
    let response = fleet.call_file(Me, "me.json", &token).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["username"], "alice");
    assert_eq!(response.json()["is_staff"], false);
    fleet.happy(Me);
    let response = fleet.call(Me, event_for(Me, "GET")).await;
    assert_problem(&response, 401, "not_authenticated");
    assert!(
        response
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{response:?}"
    );
    fleet.error(Me);

    // balance
    let response = fleet.call_file(Balance, "balance.json", &token).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["balance"], "0.00");
    assert_eq!(
        response.json()["currency"],
        "EUR",
        "CURRENCY reaches the binary"
    );
    fleet.happy(Balance);
    let response = fleet
        .call(Balance, event_for(Balance, "GET").bearer("not.a.token"))
        .await;
    assert_problem(&response, 401, "invalid_token");
    fleet.error(Balance);

    // deposit: the event file deposits 100.00 under an Idempotency-Key; sent again it replays.
    let response = fleet.call_file(Deposit, "deposit.json", &token).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.json()["type"], "deposit");
    assert_eq!(response.json()["balance_after"], "100.00");
    let response = fleet.call_file(Deposit, "deposit.json", &token).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(
        response.header("idempotent-replayed"),
        Some("true"),
        "{response:?}"
    );
    assert_eq!(response.json()["balance_after"], "100.00");
    fleet.happy(Deposit);
    let response = fleet
        .call(
            Deposit,
            event_for(Deposit, "POST")
                .bearer(&access)
                .json(&json!({"amount": "1.001"})),
        )
        .await;
    assert_problem(&response, 400, "validation_error");
    assert!(
        response.json()["errors"]["amount"].is_array(),
        "{response:?}"
    );
    fleet.error(Deposit);

    // withdraw
    let response = fleet.call_file(Withdraw, "withdraw.json", &token).await;
    assert_eq!(response.status, 201, "{response:?}");
    assert_eq!(response.json()["type"], "withdrawal");
    assert_eq!(response.json()["balance_after"], "90.00");
    fleet.happy(Withdraw);
    let response = fleet
        .call(
            Withdraw,
            event_for(Withdraw, "POST")
                .bearer(&access)
                .json(&json!({"amount": "1000.00"})),
        )
        .await;
    assert_problem(&response, 422, "insufficient_funds");
    fleet.error(Withdraw);

    // transfer
    let response = fleet.call_file(Transfer, "transfer.json", &token).await;
    assert_eq!(response.status, 201, "{response:?}");
    let out = response.json();
    assert_eq!(out["type"], "transfer_out");
    assert_eq!(out["balance_after"], "64.50");
    assert_eq!(out["counterparty"]["username"], "bob");
    fleet.happy(Transfer);
    let response = fleet
        .call(
            Transfer,
            event_for(Transfer, "POST")
                .bearer(&access)
                .json(&json!({"to": "ALICE", "amount": "1.00"})),
        )
        .await;
    assert_problem(&response, 422, "self_transfer");
    fleet.error(Transfer);

    // operations: newest first, through the cache, with an ETag.
    let response = fleet.call_file(Operations, "operations.json", &token).await;
    assert_eq!(response.status, 200, "{response:?}");
    let kinds: Vec<String> = response.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|op| op["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds, ["transfer_out", "withdrawal", "deposit"]);
    assert_eq!(response.header("x-cache"), Some("miss"), "{response:?}");
    let etag = response.header("etag").expect("an ETag").to_owned();
    fleet.happy(Operations);
    // The same page again: from the container's cache; with its ETag: 304 and no body.
    let page = || {
        event_for(Operations, "GET")
            .bearer(&access)
            .query("limit=10")
    };
    let response = fleet.call(Operations, page()).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-cache"), Some("hit"), "{response:?}");
    assert_eq!(response.header("etag"), Some(etag.as_str()), "{response:?}");
    let response = fleet
        .call(Operations, page().header("if-none-match", &etag))
        .await;
    assert_eq!(response.status, 304, "{response:?}");
    assert_eq!(response.body, "", "{response:?}");
    assert_eq!(response.header("etag"), Some(etag.as_str()), "{response:?}");
    let response = fleet
        .call(
            Operations,
            event_for(Operations, "GET")
                .bearer(&access)
                .query("limit=0"),
        )
        .await;
    assert_problem(&response, 400, "validation_error");
    fleet.error(Operations);

    // sessions: a second login opens a second session, which alice then revokes.
    let (other_access, _) = fleet.login("alice").await;
    let response = fleet
        .call_file(Sessions, "sessions-list.json", &token)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let sessions = response.json()["results"]
        .as_array()
        .expect("results")
        .clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{sessions:?}"
    );
    let other = sessions
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("the other session")
        .to_owned();
    let response = fleet
        .call_file(
            Sessions,
            "sessions-revoke.json",
            &[("ACCESS_TOKEN", access.as_str()), ("SESSION_ID", &other)],
        )
        .await;
    assert_eq!(response.status, 204, "{response:?}");
    assert_eq!(response.body, "");
    let response = fleet
        .call_file(Me, "me.json", &[("ACCESS_TOKEN", &other_access)])
        .await;
    assert_problem(&response, 401, "invalid_token");
    fleet.happy(Sessions);
    let response = fleet
        .call_file(
            Sessions,
            "sessions-revoke.json",
            &[("ACCESS_TOKEN", access.as_str()), ("SESSION_ID", &other)],
        )
        .await;
    assert_problem(&response, 404, "not_found");
    fleet.error(Sessions);

    // token-refresh, on a session of its own: rotation, then reuse revokes it.
    let (_, spare_refresh) = fleet.login("alice").await;
    let response = fleet
        .call_file(
            TokenRefresh,
            "token-refresh.json",
            &[("REFRESH_TOKEN", &spare_refresh)],
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.json()["access"].is_string());
    assert_ne!(response.json()["refresh"], spare_refresh.as_str());
    fleet.happy(TokenRefresh);
    let response = fleet
        .call_file(
            TokenRefresh,
            "token-refresh.json",
            &[("REFRESH_TOKEN", &spare_refresh)],
        )
        .await;
    assert_problem(&response, 401, "token_reused");
    fleet.error(TokenRefresh);

    // logout: without a token it is refused; with the event file the session ends.
    let response = fleet.call(Logout, event_for(Logout, "POST")).await;
    assert_problem(&response, 401, "not_authenticated");
    fleet.error(Logout);
    let response = fleet
        .call_file(
            Logout,
            "logout.json",
            &[("ACCESS_TOKEN", &access), ("REFRESH_TOKEN", &refresh)],
        )
        .await;
    assert_eq!(response.status, 204, "{response:?}");
    let response = fleet.call_file(Me, "me.json", &token).await;
    assert_problem(&response, 401, "invalid_token");
    fleet.happy(Logout);

    // health
    let response = fleet.call_file(Health, "health.json", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"status": "ok"}));
    fleet.happy(Health);
    let route = route_of(Health, "GET");
    let response = fleet
        .call(
            Health,
            Event::new(&format!("POST {}", route.pattern), route.pattern),
        )
        .await;
    assert_problem(&response, 405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET"), "{response:?}");
    fleet.error(Health);

    // admin-*: a staff member, created in-process, looks at alice, deactivates and reactivates
    // bob, reads the audit log; alice herself is forbidden.
    let username = Username::parse("root").expect("a valid name");
    let email = Email::parse("root@example.com").expect("a valid email");
    let password = NewPassword::check(PASSWORD.to_owned().into(), &username, &email)
        .expect("the test password passes the policy");
    let root = auth::register(
        app,
        Registration {
            username,
            email,
            password,
            is_staff: true,
        },
    )
    .await
    .expect("create a staff member");
    let (root_access, _) = fleet.login("root").await;
    let (alice_access, _) = fleet.login("alice").await;
    let alice_id = alice["id"].as_str().expect("alice's id").to_owned();
    let bob_id = bob["id"].as_str().expect("bob's id").to_owned();
    let as_root = [
        ("ACCESS_TOKEN", root_access.as_str()),
        ("USER_ID", &alice_id),
    ];
    let response = fleet
        .call_file(AdminUsers, "admin-users-list.json", &as_root)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let names: BTreeSet<String> = response.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_owned))
        .collect();
    assert!(
        names.contains("alice") && names.contains("bob"),
        "{names:?}"
    );
    let response = fleet
        .call_file(AdminUsers, "admin-users-detail.json", &as_root)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["username"], "alice");
    assert_eq!(response.json()["balance"], "64.50");
    let response = fleet
        .call_file(AdminUsers, "admin-users-operations.json", &as_root)
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["results"].as_array().map(Vec::len), Some(3));
    fleet.happy(AdminUsers);
    let response = fleet
        .call_file(
            AdminUsers,
            "admin-users-list.json",
            &[("ACCESS_TOKEN", alice_access.as_str())],
        )
        .await;
    assert_problem(&response, 403, "forbidden");
    fleet.error(AdminUsers);

    let on_bob = [("ACCESS_TOKEN", root_access.as_str()), ("USER_ID", &bob_id)];
    let response = fleet
        .call_file(
            AdminUserStatus,
            "admin-user-status-deactivate.json",
            &on_bob,
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["is_active"], false);
    let response = fleet
        .call_file(
            AdminUserStatus,
            "admin-user-status-reactivate.json",
            &on_bob,
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["is_active"], true);
    fleet.happy(AdminUserStatus);
    let root_id = root.id.to_string();
    let response = fleet
        .call_file(
            AdminUserStatus,
            "admin-user-status-deactivate.json",
            &[
                ("ACCESS_TOKEN", root_access.as_str()),
                ("USER_ID", &root_id),
            ],
        )
        .await;
    assert_problem(&response, 422, "self_deactivation");
    fleet.error(AdminUserStatus);

    let response = fleet
        .call_file(
            AdminAudit,
            "admin-audit.json",
            &[("ACCESS_TOKEN", root_access.as_str())],
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.json()["results"]
            .as_array()
            .is_some_and(|entries| !entries.is_empty()),
        "{response:?}"
    );
    fleet.happy(AdminAudit);
    let response = fleet
        .call_file(
            AdminAudit,
            "admin-audit.json",
            &[("ACCESS_TOKEN", alice_access.as_str())],
        )
        .await;
    assert_problem(&response, 403, "forbidden");
    fleet.error(AdminAudit);

    // admin-page: the page itself; it is only read.
    let response = fleet.call_file(AdminPage, "admin-page.json", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{response:?}"
    );
    fleet.happy(AdminPage);
    let route = route_of(AdminPage, "GET");
    let response = fleet
        .call(
            AdminPage,
            Event::new(&format!("POST {}", route.pattern), route.pattern).json(&json!({})),
        )
        .await;
    assert_problem(&response, 405, "method_not_allowed");
    fleet.error(AdminPage);

    // docs: the OpenAPI document and both UIs with their assets, all from this one binary.
    let response = fleet.call_file(Docs, "docs-schema.json", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.json()["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{response:?}"
    );
    for file in [
        "docs-swagger.json",
        "docs-swagger-asset.json",
        "docs-redoc.json",
        "docs-redoc-bundle.json",
    ] {
        let response = fleet.call_file(Docs, file, &[]).await;
        assert_eq!(response.status, 200, "{file}: {response:?}");
    }
    fleet.happy(Docs);
    let response = fleet
        .call(
            Docs,
            Event::new("GET /api/docs/{file}", "/api/docs/no-such-file.css")
                .path_parameter("file", "no-such-file.css"),
        )
        .await;
    assert_problem(&response, 404, "not_found");
    fleet.error(Docs);
    // The fallback behind API Gateway's `$default` route: what no route matches gets the
    // contract's 404, or its 405 with every method the API serves on that path.
    assert_eq!(Function::FALLBACK, Docs);
    let response = fleet
        .call(Docs, Event::unrouted("GET", "/api/v1/no-such-thing/"))
        .await;
    assert_problem(&response, 404, "not_found");
    let balance = ROUTES
        .iter()
        .find(|r| r.function == Balance)
        .expect("the balance route");
    for path in [balance.pattern, balance.pattern.trim_end_matches('/')] {
        let response = fleet
            .call(Docs, Event::unrouted("POST", path).json(&json!({})))
            .await;
        assert_problem(&response, 405, "method_not_allowed");
        assert_eq!(
            response.header("allow"),
            Some("GET"),
            "{path}: {response:?}"
        );
    }

    // A route of another function asked for with its trailing slash, which API Gateway may
    // hand to `$default`: a 308 to the routed form (method and body kept), query and all.
    for route in ROUTES
        .iter()
        .filter(|r| r.function != Docs && r.pattern.ends_with('/'))
    {
        let path = concrete_path(route);
        let routed = path.trim_end_matches('/');
        let response = fleet
            .call(
                Docs,
                Event::unrouted(route.method.as_str(), &path).query("limit=1&type=deposit"),
            )
            .await;
        assert_eq!(
            response.status, 308,
            "{} {path}: {response:?}",
            route.method
        );
        assert_eq!(
            response.header("location"),
            Some(format!("{routed}?limit=1&type=deposit").as_str()),
            "{} {path}",
            route.method
        );
    }

    // Every function: each of its routes is served in its routed form, without the trailing
    // slash (the template's route key), and a route of another function is not its business.
    for function in Function::ALL {
        for route in function.routes() {
            if !route.pattern.ends_with('/') {
                // Already slash-less (an asset's name): served above as written.
                continue;
            }
            let path = concrete_path(route);
            let bare = path.trim_end_matches('/');
            let mut event = Event::new(&route_key(route), bare);
            if route.method != http::Method::GET && route.method != http::Method::DELETE {
                event = event.json(&json!({}));
            }
            let response = fleet.call(function, event).await;
            assert!(
                ![404, 405].contains(&response.status),
                "{} {bare} (no trailing slash) must reach {}: {response:?}",
                route.method,
                function.name()
            );
        }
        let mine: Vec<&str> = function.routes().map(|r| r.pattern).collect();
        let foreign = ROUTES
            .iter()
            .find(|r| r.function != function && !mine.contains(&r.pattern))
            .expect("another function's route");
        // In its routed form: the fallback redirects the slash form (checked above).
        let path = concrete_path(foreign);
        let routed = lighttech::http::gateway::routed_path(&path);
        let response = fleet
            .call(function, Event::new(&route_key(foreign), routed))
            .await;
        assert_problem(&response, 404, "not_found");
    }
}

/// Fails naming every function of `Function::ALL` the pass did not cover.
pub fn assert_every_function_covered(fleet: &Fleet) {
    let missing_happy: Vec<&str> = Function::ALL
        .iter()
        .map(|f| f.name())
        .filter(|name| !fleet.happy.contains(name))
        .collect();
    let missing_error: Vec<&str> = Function::ALL
        .iter()
        .map(|f| f.name())
        .filter(|name| !fleet.error.contains(name))
        .collect();
    assert!(
        missing_happy.is_empty() && missing_error.is_empty(),
        "functions without a happy path here: {missing_happy:?}; without an error path: \
         {missing_error:?} — add them to tests/lambda/support/scenario.rs"
    );
}
