//! The OpenAPI document describes exactly the routes the router serves, with the contract's
//! errors and headers; the documentation pages are served with every asset embedded.

use std::collections::BTreeSet;

use http::Method;
use lighttech::ApiError;
use lighttech::http::openapi::{DOCUMENT_JSON, documented_codes};
use lighttech::http::{ROUTES, enable_docs_ui};
use lighttech_tests::{TestApp, sqlite_fixture};
use serde_json::Value;
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

#[test]
fn the_document_lists_every_route_the_router_serves_and_nothing_else() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_owned()))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn every_response_names_its_request_id_and_every_error_is_a_problem() {
    let doc = document();
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{method} {path} lacks 500");
        assert!(responses.contains_key("503"), "{method} {path} lacks 503");
        for (status, response) in responses {
            assert!(
                response["headers"]["X-Request-Id"].is_object(),
                "{method} {path} {status} lacks X-Request-Id"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
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
