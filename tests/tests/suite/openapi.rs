//! The OpenAPI document describes exactly the routes the router serves (checked by sending
//! requests to the local server, not by comparing the route table with itself), with the
//! contract's errors and headers; the documentation pages are served with every asset embedded.

use std::collections::BTreeSet;

use http::Method;
use lighttech::ApiError;
use lighttech::http::openapi::{DOCUMENT_JSON, ERROR_CODES_EXTENSION, documented_codes};
use lighttech::http::{ROUTES, enable_docs_ui};
use lighttech_tests::wire::{Server, request};
use lighttech_tests::{PASSWORD, TestApp, sqlite_fixture};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn document() -> Value {
    serde_json::from_slice(&DOCUMENT_JSON).expect("the document is JSON")
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

/// A concrete path for a route pattern: `{id}` and `{file}` filled with values that exist, so
/// an answer of `404` or `405` can only mean the route itself is missing.
fn concrete(pattern: &str, ids: &Ids) -> String {
    let id = if pattern.starts_with("/api/auth/v1/sessions/") {
        &ids.session
    } else {
        &ids.user
    };
    pattern
        .replace("{id}", id)
        .replace("{file}", "swagger-initializer.js")
}

/// Ids that exist in the app the probes run against.
struct Ids {
    /// A user the admin routes act on.
    user: String,
    /// A session of the staff member, spare for `DELETE sessions/{id}/`.
    session: String,
}

/// The field names of a JSON body, and of the first item of its `results`.
fn shape(body: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let keys = |v: &Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    (keys(body), keys(&body["results"][0]))
}

/// The routes the table of Lambda functions in docs/architecture.md lists (written by hand, not
/// generated).
fn documented_routes() -> BTreeSet<(String, String)> {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/architecture.md"
    ))
    .expect("read docs/architecture.md");
    let start = page
        .find("\n## Lambda functions\n")
        .expect("docs/architecture.md has a Lambda functions section");
    let mut routes = BTreeSet::new();
    for line in page[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
    {
        for cell in line.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = cell.split_once(' ')
                && path.starts_with('/')
            {
                routes.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert!(
        routes.len() > 20,
        "the function table was found: {routes:?}"
    );
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_router_serve_exactly_the_same_routes() {
    enable_docs_ui();
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();

    let t = TestApp::new(sqlite_fixture().await).await;
    let root = t.staff("root").await;
    let alice = t.user("alice").await;
    // The admin routes act on erin, who never logs in (deactivation ends every session).
    let erin = t.register("erin").await;
    t.register("dave").await;
    t.deposit(&alice, "100").await;
    // Spare sessions for the calls that end one.
    let (for_logout, _) = t.login("root").await;
    let (for_revoke, _) = t.login("root").await;
    let (_, for_refresh) = t.login("dave").await;
    let sessions = t.get("/api/auth/v1/sessions/", Some(&for_revoke)).await;
    let session = sessions.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .unwrap()
        .to_owned();
    let ids = Ids {
        user: erin["id"].as_str().unwrap().to_owned(),
        session,
    };
    let server = Server::spawn(t.app.clone()).await;

    // Every documented operation, sent through the local server with valid input, is served
    // by its handler: it answers the operation's documented success status.
    for (method, pattern, op) in operations(&doc) {
        let (token, body): (&str, Value) = match (method.as_str(), pattern.as_str()) {
            ("POST", "/api/auth/v1/register/") => (
                "",
                json!({"username": "carol", "email": "carol@example.com", "password": PASSWORD}),
            ),
            ("POST", "/api/auth/v1/login/") => {
                ("", json!({"username": "alice", "password": PASSWORD}))
            }
            ("POST", "/api/auth/v1/token/refresh/") => ("", json!({ "refresh": for_refresh })),
            ("POST", "/api/auth/v1/logout/") => (&for_logout, Value::Null),
            ("POST", "/api/balance/v1/deposit/" | "/api/balance/v1/withdraw/") => {
                (&alice.access, json!({"amount": "1"}))
            }
            ("POST", "/api/balance/v1/transfer/") => {
                (&alice.access, json!({"to": "root", "amount": "1"}))
            }
            ("GET", "/api/balance/v1/" | "/api/balance/v1/operations/") => {
                (&alice.access, Value::Null)
            }
            _ => (&root.access, Value::Null),
        };
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Content-Type", "application/json")];
        if !token.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let path = concrete(&pattern, &ids);
        let r = request(server.addr, &method, &path, &headers, &body).await;
        let success: Vec<u16> = op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|s| s.parse().ok())
            .filter(|s| (200..300).contains(s))
            .collect();
        assert!(
            success.contains(&r.status),
            "{method} {path} (documented as {pattern}) answered {} (documented success: \
             {success:?}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{method} {path}: every response carries nosniff"
        );
        // The body comes in one of the media types documented for it.
        let content = &op["responses"][r.status.to_string()]["content"];
        if !r.body.is_empty() {
            let served = r.header("content-type").unwrap_or_default();
            let media = served.split(';').next().unwrap_or_default().trim();
            assert!(
                content.get(media).is_some(),
                "{method} {path} (documented as {pattern}) served {served}; documented: {:?}",
                content.as_object().map(|c| c.keys().collect::<Vec<_>>())
            );
        }
        // The documented example has the fields of the real answer.
        let media = &content["application/json"];
        if media["schema"]["$ref"].is_string() {
            let example = &media["examples"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()["value"];
            let (real, real_item) = shape(&r.json());
            let (documented, documented_item) = shape(example);
            assert_eq!(documented, real, "{method} {pattern}: the example's fields");
            if !real_item.is_empty() {
                assert_eq!(
                    documented_item, real_item,
                    "{method} {pattern}: the example's result fields"
                );
            }
        }
    }

    // What the router serves, asked of the router itself: a method no route has gets `405`
    // with `Allow` naming every method served on the path, or `404` when none is. Asked for
    // every documented path, every path of the route table and every route the function table
    // of docs/architecture.md lists, with and without the trailing slash.
    let mut candidates: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    candidates.extend(ROUTES.iter().map(|r| r.pattern.to_owned()));
    let listed = documented_routes();
    candidates.extend(listed.iter().map(|(_, p)| p.clone()));
    let mut served = BTreeSet::new();
    for pattern in &candidates {
        let path = concrete(pattern, &ids);
        let mut allowed = None;
        for form in [path.clone(), path.trim_end_matches('/').to_owned()] {
            let r = request(server.addr, "PROPFIND", &form, &[], b"").await;
            let methods: BTreeSet<String> = match r.status {
                404 => BTreeSet::new(),
                405 => r
                    .header("allow")
                    .unwrap_or_default()
                    .split(',')
                    .map(|m| m.trim().to_owned())
                    .collect(),
                other => panic!("PROPFIND {form} answered {other}"),
            };
            match &allowed {
                None => allowed = Some(methods),
                Some(first) => assert_eq!(first, &methods, "{form} and {path} differ"),
            }
        }
        served.extend(
            allowed
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m, pattern.clone())),
        );
    }
    server.stop().await;
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    let missing: Vec<_> = listed.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "listed in docs/architecture.md but not served: {missing:?}"
    );
}

#[test]
fn every_response_names_its_request_id_and_every_error_is_a_problem() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{method} {path} lacks 500");
        assert!(responses.contains_key("503"), "{method} {path} lacks 503");
        for (status, response) in responses {
            for header in ["X-Request-Id", "X-Content-Type-Options"] {
                assert!(
                    response["headers"][header].is_object(),
                    "{method} {path} {status} lacks {header}"
                );
            }
            if status.starts_with('4') || status.starts_with('5') {
                // `Problem` itself, not a narrowing of it: a generated client gets one error
                // type, not one per operation and status.
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"],
                    json!({"$ref": "#/components/schemas/Problem"}),
                    "{method} {path} {status}"
                );
            }
        }
        if op.get("security").is_some() {
            assert!(
                responses.contains_key("401"),
                "{method} {path}: bearer-protected, so it can answer 401"
            );
        }
    }
}

/// The codes an error response can carry, from its `x-error-codes`.
fn allowed_codes(response: &Value) -> Vec<String> {
    response[ERROR_CODES_EXTENSION]
        .as_array()
        .unwrap_or_else(|| panic!("no {ERROR_CODES_EXTENSION}: {response}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_error_response_allows_only_its_operations_codes_with_an_example_of_each() {
    let doc = document();
    let errors: Vec<ApiError> = ApiError::one_of_each();
    let mut union: BTreeSet<String> = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let mut per_operation = BTreeSet::new();
        for (status, response) in op["responses"].as_object().unwrap() {
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            let codes = allowed_codes(response);
            assert!(!codes.is_empty(), "{method} {path} {status}");
            let examples = response["content"]["application/problem+json"]["examples"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} {status} has no examples"));
            let description = response["description"].as_str().unwrap_or_default();
            for code in &codes {
                assert!(
                    description.contains(&format!("`{code}`")),
                    "{method} {path} {status}: the description names {code}: {description}"
                );
            }
            let named: BTreeSet<&String> = examples.keys().collect();
            assert_eq!(
                named,
                codes.iter().collect(),
                "{method} {path} {status}: one example per code"
            );
            for code in &codes {
                let error = errors
                    .iter()
                    .find(|e| e.code() == code)
                    .unwrap_or_else(|| panic!("{code} is not a code of the contract"));
                assert_eq!(error.status(), status, "{method} {path}: {code}");
                let value = &examples[code]["value"];
                assert_eq!(value["code"], code.as_str());
                assert_eq!(value["status"], status);
                assert_eq!(value["title"], error.title());
                assert_eq!(value["type"], "about:blank");
                assert!(value["detail"].is_string());
                assert_eq!(
                    value["errors"].is_object(),
                    code == "validation_error",
                    "{method} {path}: `errors` only with validation_error"
                );
                per_operation.insert(code.clone());
            }
        }
        // Every operation answers these, and none answers everything.
        for code in [
            "not_found",
            "method_not_allowed",
            "internal_error",
            "service_unavailable",
        ] {
            assert!(per_operation.contains(code), "{method} {path} lacks {code}");
        }
        assert!(
            per_operation.len() < errors.len(),
            "{method} {path} allows every code"
        );
        union.extend(per_operation);
    }
    // Between them the operations can answer every code of the contract.
    let all: BTreeSet<String> = errors.iter().map(|e| e.code().to_owned()).collect();
    assert_eq!(union, all);
    // Some operation-specific narrowing, as the contract describes it.
    let codes_of = |path: &str, method: &str, status: &str| {
        allowed_codes(&doc["paths"][path][method]["responses"][status])
    };
    assert_eq!(
        codes_of("/api/balance/v1/withdraw/", "post", "422"),
        ["insufficient_funds", "idempotency_key_mismatch"]
    );
    assert_eq!(
        codes_of("/api/auth/v1/login/", "post", "401"),
        ["invalid_credentials"]
    );
    assert_eq!(
        codes_of("/api/balance/v1/transfer/", "post", "404"),
        ["not_found", "recipient_not_found"]
    );
    assert!(
        doc["paths"]["/api/admin/v1/users/{id}/"]["get"]["responses"]
            .get("400")
            .is_none(),
        "a path parameter is matched, not validated"
    );
}

#[test]
fn every_success_response_with_a_body_has_an_example() {
    let doc = document();
    let mut seen = 0;
    for (method, path, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if !status.starts_with('2') {
                continue;
            }
            let Some(content) = response["content"].as_object() else {
                assert_eq!(status, "204", "{method} {path} {status} has no body");
                continue;
            };
            for (content_type, media) in content {
                let examples = media["examples"].as_object().unwrap_or_else(|| {
                    panic!("{method} {path} {status} {content_type} has no example")
                });
                assert_eq!(examples.len(), 1, "{method} {path}");
                let example = examples.values().next().unwrap();
                let value = &example["value"];
                let schema = &media["schema"];
                if content_type == "application/json" {
                    // Every JSON body of this API is an object: a described one, or the
                    // OpenAPI document.
                    assert!(
                        schema["$ref"].is_string() || schema["type"] == "object",
                        "{method} {path}: {schema}"
                    );
                    assert!(value.is_object(), "{method} {path}: {value}");
                } else if content_type.starts_with("image/") {
                    // Binary: no schema (OpenAPI 3.1), a real file as the example.
                    assert!(media.get("schema").is_none(), "{method} {path}: {schema}");
                    assert!(
                        example["externalValue"].is_string(),
                        "{method} {path}: {example}"
                    );
                } else {
                    assert_eq!(schema["type"], "string", "{method} {path} {content_type}");
                    assert!(value.is_string(), "{method} {path}: {value}");
                }
                seen += 1;
            }
        }
    }
    assert!(seen > 15, "{seen}");
}

#[test]
fn money_operations_document_idempotency_and_history_documents_caching() {
    let doc = document();
    for path in [
        "/api/balance/v1/deposit/",
        "/api/balance/v1/withdraw/",
        "/api/balance/v1/transfer/",
    ] {
        let op = &doc["paths"][path]["post"];
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"Idempotency-Key"), "{path}");
        assert!(op["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
        assert!(op["responses"]["422"].is_object(), "{path}");
    }
    let history = &doc["paths"]["/api/balance/v1/operations/"]["get"];
    for header in ["X-Cache", "ETag"] {
        assert!(history["responses"]["200"]["headers"][header].is_object());
    }
    assert!(history["responses"]["304"].is_object());
    assert!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
    );
}

#[test]
fn the_documented_error_codes_are_exactly_the_contracts() {
    let documented: BTreeSet<String> = documented_codes().into_iter().collect();
    let actual: BTreeSet<String> = ApiError::one_of_each()
        .iter()
        .map(|e| e.code().to_owned())
        .collect();
    assert_eq!(documented, actual);
    assert_eq!(actual.len(), 22);
}

#[test]
fn the_vendored_redoc_bundle_is_the_pinned_one() {
    let bundle = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/assets/redoc/redoc.standalone.js"
    ))
    .unwrap();
    let digest: String = Sha256::digest(&bundle)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // redoc 2.5.2 from the npm registry; shared/assets/redoc/update.sh re-fetches it.
    assert_eq!(
        digest,
        "6beb5aea23b71d09122ee35de8f326e38aec050e774f3bfba1f34e5c36608986"
    );
}

#[tokio::test]
async fn the_docs_routes_serve_the_document_and_both_pages_offline() {
    enable_docs_ui();
    let t = TestApp::new(sqlite_fixture().await).await;
    let schema = t.get("/api/schema/", None).await;
    schema.expect(200, "");
    assert_eq!(schema.json(), document());
    let swagger = t.get("/api/docs/", None).await;
    swagger.expect(200, "");
    assert!(String::from_utf8_lossy(&swagger.body).contains("swagger-ui"));
    let redirect = t.get("/api/docs", None).await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location").as_deref(), Some("/api/docs/"));
    let init = t.get("/api/docs/swagger-initializer.js", None).await;
    init.expect(200, "");
    let init = String::from_utf8_lossy(&init.body).into_owned();
    assert!(
        init.contains("/api/schema/") && init.contains("\"validatorUrl\": \"none\""),
        "{init}"
    );
    let redoc = t.get("/api/redoc/", None).await;
    redoc.expect(200, "");
    let page = String::from_utf8_lossy(&redoc.body).into_owned();
    assert!(page.contains("/api/redoc/redoc.standalone.js"));
    let bundle = t.get("/api/redoc/redoc.standalone.js", None).await;
    bundle.expect(200, "");
    let js = String::from_utf8_lossy(&bundle.body).into_owned();
    assert!(
        !js.contains("cdn.redoc.ly"),
        "the one outside address is replaced"
    );
    for r in [&swagger, &redoc] {
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"));
    }
    for html in [String::from_utf8_lossy(&swagger.body), page.as_str().into()] {
        assert!(
            !html.contains("https://") && !html.contains("http://"),
            "{html}"
        );
    }
    t.get("/api/docs/no-such-file.js", None)
        .await
        .expect(404, "not_found");
    let r = t.send(Method::POST, "/api/schema/", &[], None).await;
    r.expect(405, "method_not_allowed");
}

/// The files the embedded Swagger UI serves (utoipa-swagger-ui's vendored `dist/`).
const SWAGGER_UI_FILES: &[&str] = &[
    "index.html",
    "index.css",
    "oauth2-redirect.html",
    "oauth2-redirect.js",
    "swagger-initializer.js",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-ui.css",
    "favicon-16x16.png",
    "favicon-32x32.png",
];

#[tokio::test]
async fn every_swagger_ui_asset_is_served_in_a_documented_media_type() {
    enable_docs_ui();
    let doc = document();
    let content = doc["paths"]["/api/docs/{file}"]["get"]["responses"]["200"]["content"]
        .as_object()
        .expect("the assets' success content")
        .clone();
    let documented: BTreeSet<String> = content.keys().cloned().collect();
    let t = TestApp::new(sqlite_fixture().await).await;
    let mut served = BTreeSet::new();
    for file in SWAGGER_UI_FILES {
        let r = t.get(&format!("/api/docs/{file}"), None).await;
        r.expect(200, "");
        let header = r.header("content-type").unwrap_or_default();
        let media = header
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(
            documented.contains(&media),
            "{file} is served as {header}; documented: {documented:?}"
        );
        served.insert(media);
    }
    assert_eq!(served, documented, "a documented media type no asset has");
    // The binary example's address is a real asset of its type.
    for (media, spec) in &content {
        for example in spec["examples"].as_object().unwrap().values() {
            if let Some(address) = example["externalValue"].as_str() {
                let r = t.get(address, None).await;
                r.expect(200, "");
                assert_eq!(r.header("content-type").as_deref(), Some(media.as_str()));
            }
        }
    }
    // The document itself is a JSON object, as documented.
    let schema = t.get("/api/schema/", None).await;
    assert_eq!(
        schema.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(schema.json().is_object());
}

/// The same path without its trailing slash answers what the path with it answers, unless the
/// document's description names it as one that redirects, and then it is a `308` to the path
/// with the slash.
#[tokio::test]
async fn a_path_without_its_slash_is_served_as_the_document_says() {
    enable_docs_ui();
    let doc = document();
    let description = doc["info"]["description"].as_str().unwrap().to_owned();
    let t = TestApp::new(sqlite_fixture().await).await;
    let mut redirects = 0;
    for (method, path, _) in operations(&doc) {
        if method != "GET" || path.contains('{') || !path.ends_with('/') || path == "/" {
            continue;
        }
        let bare = path.trim_end_matches('/');
        let with = t.get(&path, None).await;
        let without = t.get(bare, None).await;
        if without.status == 308 {
            assert_eq!(without.header("location").as_deref(), Some(path.as_str()));
            assert!(
                description.contains(&format!("`{bare}`")),
                "{bare} redirects, but the document says it is served identically"
            );
            redirects += 1;
        } else {
            assert_eq!(without.status, with.status, "{bare} and {path}");
        }
    }
    assert_eq!(redirects, 2, "/api/docs and /api/redoc");
}
