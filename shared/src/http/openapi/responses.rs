//! Response objects: the problem+json errors with one named example per code, and the
//! examples of every success body.

use super::*;

pub(super) fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Invalid JSON or a validation error",
        401 => "Not authenticated, or an invalid token",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict",
        413 => "Payload too large",
        415 => "Unsupported media type",
        422 => "Refused by a business rule",
        429 => "Too many failed logins",
        500 => "Internal error",
        503 => "Service unavailable; safe to retry (with the same Idempotency-Key)",
        _ => "Error",
    }
}

pub(super) fn code_status(code: &str) -> u16 {
    match code {
        "invalid_json" | "validation_error" => 400,
        "not_authenticated" | "invalid_token" | "token_reused" | "invalid_credentials" => 401,
        "forbidden" => 403,
        "not_found" | "recipient_not_found" => 404,
        "method_not_allowed" => 405,
        "username_taken" | "email_taken" => 409,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "rate_limited" => 429,
        "internal_error" => 500,
        "service_unavailable" => 503,
        _ => 422,
    }
}

pub(super) fn header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(string()))
        .description(Some(description))
        .build()
}

pub(super) fn response_with_id(builder: ResponseBuilder) -> ResponseBuilder {
    builder
        .header(
            "X-Request-Id",
            header("The request id (API Gateway's in AWS); also in the logs."),
        )
        .header(
            "X-Content-Type-Options",
            header("Always `nosniff`: the body is only ever what its Content-Type says."),
        )
}

/// The error an example shows for `code`: the real error, with data that reads naturally.
pub(super) fn example_error(code: &str, field: &str) -> Option<ApiError> {
    let error = ApiError::one_of_each()
        .into_iter()
        .find(|e| e.code() == code)?;
    Some(match error {
        ApiError::Validation(_) => {
            let mut errors = FieldErrors::new();
            errors.add(field, "This field is invalid.");
            ApiError::Validation(errors)
        }
        ApiError::InsufficientFunds { .. } => ApiError::InsufficientFunds {
            balance: Money::from_minor(1_000),
            amount: Money::from_minor(2_500),
        },
        ApiError::MethodNotAllowed(_) => ApiError::MethodNotAllowed(vec![Method::GET]),
        other => other,
    })
}

/// The problem body the API renders for an error (as `response::problem` does).
pub(super) fn problem_body(error: &ApiError) -> serde_json::Value {
    let mut body = json!({
        "type": "about:blank",
        "title": error.title(),
        "status": error.status(),
        "detail": error.detail(),
        "code": error.code(),
    });
    if let ApiError::Validation(errors) = error {
        body["errors"] = json!(errors.as_map());
    }
    body
}

/// One error response: the `Problem` schema itself, with the codes this operation can answer
/// with this status in the description, in `x-error-codes` and as one named example per code.
/// The schema is not narrowed per response (an `allOf` with a `code` enum): client generators
/// turn each such narrowing into a model class of its own, hundreds of copies of one type.
/// `field` names the field a `validation_error` example points at.
pub(super) fn problem_response(
    status: u16,
    codes: &[&str],
    field: &str,
) -> utoipa::openapi::Response {
    let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    let description = match listed.as_slice() {
        [] => format!("{}.", status_text(status)),
        [one] => format!("{}. `code`: {one}.", status_text(status)),
        more => format!(
            "{}. `code`: one of {}.",
            status_text(status),
            more.join(", ")
        ),
    };
    let examples = codes.iter().filter_map(|code| {
        let error = example_error(code, field)?;
        Some((
            (*code).to_owned(),
            ExampleBuilder::new()
                .summary(error.title())
                .value(Some(problem_body(&error)))
                .build(),
        ))
    });
    let mut builder = response_with_id(ResponseBuilder::new().description(description))
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(schema_ref("Problem")))
                .examples_from_iter(examples)
                .build(),
        )
        .extensions(Some(Extensions::from_iter([(
            ERROR_CODES_EXTENSION,
            json!(codes),
        )])));
    builder = match status {
        401 => builder.header(
            "WWW-Authenticate",
            header("`Bearer` (or `Bearer error=\"invalid_token\"`)."),
        ),
        405 => builder.header("Allow", header("The methods the route allows.")),
        429 | 503 => builder.header("Retry-After", header("Seconds to wait before retrying.")),
        _ => builder,
    };
    builder.build()
}

pub(super) const EXAMPLE_USER_ID: &str = "0192f5c1-7a3e-7c2b-9d41-5b8e2f6a1c30";
pub(super) const EXAMPLE_OTHER_ID: &str = "0192f5c1-9b20-7e11-8a52-3f4d6c7b8e90";
pub(super) const EXAMPLE_AT: &str = "2026-11-28T07:00:00.123Z";
pub(super) const EXAMPLE_JWT: &str =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwMTkyZjVjMSJ9.c2lnbmF0dXJl";
pub(super) const EXAMPLE_CURSOR: &str = "AQGSFcF6PnwrnUFbjiFqHDAAAAAAAAAAAw8n2Hc5T3Gm";

pub(super) fn example_operation() -> serde_json::Value {
    json!({
        "id": "0192f5c2-0a11-7f00-b2c3-4d5e6f708192",
        "type": "transfer_out",
        "amount": "25.00",
        "balance_after": "75.00",
        "counterparty": {"id": EXAMPLE_OTHER_ID, "username": "bob"},
        "transfer_id": "0192f5c2-0a11-7f00-b2c3-4d5e6f708193",
        "description": "rent",
        "created_at": EXAMPLE_AT,
    })
}

pub(super) fn example_admin_user() -> serde_json::Value {
    json!({
        "id": EXAMPLE_USER_ID,
        "username": "alice",
        "email": "alice@example.com",
        "is_staff": false,
        "is_active": true,
        "balance": "125.00",
        "created_at": EXAMPLE_AT,
    })
}

/// An example body of a success response with the named schema.
pub(super) fn success_example(schema: &str) -> serde_json::Value {
    match schema {
        "RegisteredView" => json!({
            "id": EXAMPLE_USER_ID,
            "username": "alice",
            "email": "alice@example.com",
            "balance": "0.00",
            "created_at": EXAMPLE_AT,
        }),
        "LoginView" => json!({
            "access": EXAMPLE_JWT,
            "refresh": EXAMPLE_JWT,
            "token_type": "Bearer",
            "expires_in": 600,
        }),
        "RefreshView" => json!({"access": EXAMPLE_JWT, "refresh": EXAMPLE_JWT}),
        "MeView" => json!({
            "id": EXAMPLE_USER_ID,
            "username": "alice",
            "email": "alice@example.com",
            "is_staff": false,
            "created_at": EXAMPLE_AT,
        }),
        "SessionList" => json!({"results": [{
            "id": "0192f5c1-7b00-7a00-8000-0123456789ab",
            "created_at": EXAMPLE_AT,
            "last_used_at": EXAMPLE_AT,
            "user_agent": "curl/8.5.0",
            "ip": "203.0.113.7",
            "current": true,
        }]}),
        "BalanceView" => json!({"balance": "125.00", "currency": "RUB", "updated_at": EXAMPLE_AT}),
        "OperationView" => example_operation(),
        "OperationPage" => json!({"results": [example_operation()], "next_cursor": EXAMPLE_CURSOR}),
        "HealthView" => json!({"status": "ok"}),
        "AdminUserView" => example_admin_user(),
        "AdminUserPage" => json!({"results": [example_admin_user()], "next_cursor": null}),
        "AuditPage" => json!({"results": [{
            "id": "0192f5c3-1c22-7d00-a1b2-c3d4e5f60718",
            "actor": {"id": EXAMPLE_OTHER_ID, "username": "root"},
            "action": "user.deactivate",
            "target": {"id": EXAMPLE_USER_ID, "username": "alice"},
            "at": EXAMPLE_AT,
        }], "next_cursor": EXAMPLE_CURSOR}),
        other => panic!("no example for the success body {other}"),
    }
}

/// An example of the OpenAPI document (abridged).
pub(super) fn document_example() -> serde_json::Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "LightTech API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {"/api/health/": {"get": {"summary": "Health", "operationId": "get_api_health"}}},
    })
}

/// An example of a text file served as-is, by route and media type.
pub(super) fn raw_example(pattern: &str, content_type: &str) -> serde_json::Value {
    match (pattern, content_type) {
        (_, "text/html") => json!("<!doctype html><html lang=\"en\">…</html>"),
        (_, "text/css") => json!(".swagger-ui{…}"),
        ("/api/redoc/redoc.standalone.js", "text/javascript") => {
            json!("/*! For license information please see redoc.standalone.js.LICENSE.txt */…")
        }
        (_, "text/javascript") => json!("window.onload = function () {…};"),
        _ => json!("…"),
    }
}

/// An example of a binary file served as-is: a real one, by its address.
pub(super) fn binary_example(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "/api/docs/favicon-32x32.png",
        other => panic!("no example for the binary media type {other}"),
    }
}

/// The name of an operation's success example: its summary in snake case.
pub(super) fn example_name(summary: &str) -> String {
    summary
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .map(|c| {
            if c == ' ' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// The field a `validation_error` example of this operation names.
pub(super) fn validation_field(d: &RouteDoc, params: &[Param]) -> &'static str {
    match d.body {
        Some(("RegisterRequest" | "LoginRequest", _)) => "username",
        Some(("RefreshRequest" | "LogoutRequest", _)) => "refresh",
        Some(("MoneyRequest" | "TransferRequest", _)) => "amount",
        Some(_) => "reason",
        None => params
            .iter()
            .find_map(|p| match p {
                Param::Query(name, ..) => Some(*name),
                _ => None,
            })
            .unwrap_or("body"),
    }
}
