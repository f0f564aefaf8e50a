//! The OpenAPI 3.1 document, generated from the route table and the Rust types.
//!
//! Every route in [`ROUTES`] is described here, or the document cannot be built (a test checks
//! it both ways): the operation's metadata lives in its route's row, its schemas come from the
//! response and request types through `utoipa::ToSchema`, and the error responses are derived
//! from the error codes (docs/api.md) each operation can produce. Headers every response carries
//! (`X-Request-Id`, `X-Content-Type-Options`) and the problem+json schema are added uniformly, so they cannot be
//! forgotten on one route. Every error response refers to the one `Problem` schema, its codes
//! listed beside it, so generated clients get one error type.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::Method;
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    ArrayBuilder, ComponentsBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, KnownFormat, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
};
use utoipa::{PartialSchema, ToSchema};

use super::response::{
    AdminUserView, AuditView, BalanceView, CounterpartyView, HealthView, LoginView, MeView,
    OperationView, PartyView, RefreshView, RegisteredView, SessionView,
};
use super::route_doc::{Access, Body, Param as RouteParam, RouteDoc};
use super::routes::{ROUTE_DOCS, ROUTES, Route};
use crate::domain::{Money, OperationKind};
use crate::error::{ApiError, FieldErrors};

mod params;
mod responses;
mod schemas;

use self::params::*;
use self::responses::*;
use self::schemas::*;

/// The vendor extension of an error response that lists the `code`s it can carry: every error
/// response's schema is `Problem` itself, whose `code` names every code of the API.
pub const ERROR_CODES_EXTENSION: &str = "x-error-codes";

fn operation(route: &Route, d: &RouteDoc) -> utoipa::openapi::path::Operation {
    let params = parameters(d.params);
    // Which codes can this operation answer?
    let mut codes: Vec<&str> = vec![
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "internal_error",
        "service_unavailable",
    ];
    if d.body.is_some() {
        codes.extend(["invalid_json", "validation_error", "unsupported_media_type"]);
    }
    // Path parameters are matched, not validated (a bad id is `not_found`); query and header
    // parameters are.
    if params.iter().any(|p| !matches!(p, Param::Path(..))) {
        codes.push("validation_error");
    }
    if d.access != Access::Public {
        codes.extend(["not_authenticated", "invalid_token"]);
    }
    if d.access == Access::Staff {
        codes.push("forbidden");
    }
    codes.extend(d.errors.iter().copied());
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for code in codes {
        let list = by_status.entry(code_status(code)).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }

    let mut success = response_with_id(ResponseBuilder::new().description(d.success_description));
    match &d.success_body {
        Body::Schema(name) => {
            success = success.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema_ref(name)))
                    .examples_from_iter([(
                        example_name(d.summary),
                        ExampleBuilder::new()
                            .summary(d.summary)
                            .value(Some(success_example(name)))
                            .build(),
                    )])
                    .build(),
            );
        }
        Body::JsonObject => {
            success = success.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .examples_from_iter([(
                        example_name(d.summary),
                        ExampleBuilder::new()
                            .summary(d.summary)
                            .value(Some(document_example()))
                            .build(),
                    )])
                    .build(),
            );
        }
        Body::Raw(content_types) => {
            for content_type in content_types.iter().copied() {
                let example = ExampleBuilder::new().summary(d.summary);
                // A text file is a string; a binary one (OpenAPI 3.1: no schema) is shown by
                // the address of a real one.
                let content = if content_type.starts_with("image/") {
                    ContentBuilder::new().examples_from_iter([(
                        example_name(d.summary),
                        example.external_value(binary_example(content_type)).build(),
                    )])
                } else {
                    ContentBuilder::new()
                        .schema(Some(string()))
                        .examples_from_iter([(
                            example_name(d.summary),
                            example
                                .value(Some(raw_example(route.pattern, content_type)))
                                .build(),
                        )])
                };
                success = success.content(content_type, content.build());
            }
        }
        Body::None => {}
    }
    if d.idempotent_money() {
        success = success.header(
            "Idempotent-Replayed",
            header("`true` when this is the replay of an earlier request with the same Idempotency-Key."),
        );
    }
    if d.cached_history() {
        success = success
            .header(
                "X-Cache",
                header("`hit` or `miss`: whether the page came from the cache."),
            )
            .header(
                "ETag",
                header("Derived from the account version and the query."),
            )
            .header("Cache-Control", header("`private, no-cache`."));
    }
    let mut responses = ResponsesBuilder::new().response(d.success.to_string(), success.build());
    if d.cached_history() {
        responses = responses.response(
            "304",
            response_with_id(
                ResponseBuilder::new()
                    .description("Not modified: the `If-None-Match` ETag is current."),
            )
            .header("ETag", header("The current ETag."))
            .header("X-Cache", header("`hit`."))
            .build(),
        );
    }
    for (status, codes) in &by_status {
        responses = responses.response(
            status.to_string(),
            problem_response(*status, codes, validation_field(d, &params)),
        );
    }

    let mut op = OperationBuilder::new()
        .tag(d.tag)
        .summary(Some(d.summary))
        .description(Some(d.description))
        .operation_id(Some(format!(
            "{}_{}",
            route.method.as_str().to_lowercase(),
            route
                .pattern
                .trim_matches('/')
                .replace(['/', '.', '-'], "_")
                .replace(['{', '}'], "")
        )))
        .responses(responses.build());
    if d.access != Access::Public {
        op = op.security(SecurityRequirement::new("bearerAuth", Vec::<String>::new()));
    }
    if let Some((schema, required)) = d.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(schema_ref(schema)))
                        .build(),
                )
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .description(Some("JSON, at most 16 KiB; unknown fields are refused."))
                .build(),
        ));
    }
    for param in &params {
        let (name, description, location, schema) = match param {
            Param::Query(name, description, schema) => {
                (name, description, ParameterIn::Query, schema.clone())
            }
            Param::Path(name, description) => {
                (name, description, ParameterIn::Path, string().into())
            }
            Param::Header(name, description, schema) => {
                (name, description, ParameterIn::Header, schema.clone())
            }
        };
        // A path parameter is part of the address; the others may be left out.
        let required = match location {
            ParameterIn::Path => Required::True,
            _ => Required::False,
        };
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(location)
                .required(required)
                .description(Some(*description))
                .schema(Some(schema)),
        );
    }
    op.build()
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::DELETE => HttpMethod::Delete,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// Builds the document from the route table.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (route, d) in ROUTES.iter().zip(ROUTE_DOCS) {
        paths = paths.path(
            route.pattern,
            PathItem::new(http_method(&route.method), operation(route, d)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("LightTech API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Accounts and money: register, log in, hold a balance, deposit, withdraw, \
                     transfer and read history. Amounts are decimal strings with two fraction \
                     digits; every error is `application/problem+json` with a `code`; every \
                     response carries `X-Request-Id` and `X-Content-Type-Options: nosniff`. Paths are listed with their trailing slash; \
                     the same path without it is served identically, except the two \
                     documentation pages: `/api/docs` and `/api/redoc` answer `308 Permanent \
                     Redirect` to `/api/docs/` and `/api/redoc/`, where the pages' relative links \
                     to their assets resolve.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components()))
        .tags(Some(
            [
                ("auth", "Registration, login, tokens and sessions"),
                ("balance", "Balance, money movements and history"),
                ("admin", "Administration (staff only)"),
                ("docs", "This documentation"),
                ("health", "Liveness"),
            ]
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(name)
                    .description(Some(description))
                    .build()
            }),
        ))
        .build()
}

/// The document as served, built once.
pub static DOCUMENT_JSON: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&document()).unwrap_or_default());

/// The codes of the `ErrorCode` schema, for the test that keeps it in step with `ApiError`.
pub fn documented_codes() -> Vec<String> {
    let schema = serde_json::to_value(ErrorCode::schema()).unwrap_or_default();
    schema["enum"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every error response is `Problem` itself, not a narrowing of it (which client generators
    /// turn into a class per response); its codes are listed in `x-error-codes`, the examples
    /// and the description, each code answered with that status.
    #[test]
    fn every_error_response_refers_to_problem_and_lists_its_codes() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let status: u16 = status.parse().unwrap();
                    if status < 400 {
                        continue;
                    }
                    let at = format!("{method} {path} {status}");
                    let media = &response["content"]["application/problem+json"];
                    assert_eq!(
                        media["schema"],
                        json!({"$ref": "#/components/schemas/Problem"}),
                        "{at}"
                    );
                    let codes: Vec<&str> = response[ERROR_CODES_EXTENSION]
                        .as_array()
                        .unwrap_or_else(|| panic!("{at} lacks {ERROR_CODES_EXTENSION}"))
                        .iter()
                        .map(|c| c.as_str().unwrap())
                        .collect();
                    assert!(!codes.is_empty(), "{at}");
                    let examples: BTreeSet<&str> = media["examples"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(String::as_str)
                        .collect();
                    assert_eq!(
                        examples,
                        codes.iter().copied().collect(),
                        "{at}: one example per code"
                    );
                    let description = response["description"].as_str().unwrap();
                    for code in codes {
                        assert_eq!(code_status(code), status, "{at}: {code}");
                        assert!(description.contains(&format!("`{code}`")), "{at}: {code}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
        // No schema anywhere in the operations narrows another.
        let paths = doc["paths"].to_string();
        assert!(!paths.contains("\"allOf\""), "an allOf in the operations");
    }

    #[test]
    fn the_problem_schema_allows_every_code() {
        let doc = serde_json::to_value(document()).unwrap();
        let problem = &doc["components"]["schemas"]["Problem"];
        assert_eq!(
            problem["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
        assert_eq!(documented_codes().len(), ApiError::one_of_each().len());
    }
}
