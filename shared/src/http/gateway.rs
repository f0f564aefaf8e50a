//! How the routes meet API Gateway. An HTTP API refuses a route path that ends in `/` (see
//! docs/deploy.md for the sources), so each route is registered once, in its form without the
//! trailing slash ([`route_key`]). A request in the other form that API Gateway does not bring to
//! that route itself lands on `$default`, whose function ([`Function::FALLBACK`]) answers it with
//! a `308` to the routed form: method and body are kept, so the client repeats the same request.

use http::StatusCode;

use super::response::Reply;
use super::{Function, Route, match_route};

/// The path under which API Gateway routes a pattern: the pattern without its trailing slash.
pub fn routed_path(pattern: &str) -> &str {
    match pattern.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => pattern,
    }
}

/// The HTTP API route key of a route: `"POST /api/auth/v1/login"`.
pub fn route_key(route: &Route) -> String {
    format!("{} {}", route.method, routed_path(route.pattern))
}

/// The answer of the `$default` function to a request for a route another function serves: a
/// `308` to the routed form when the request came in the other one, else nothing (the caller
/// answers `404`). Never a redirect to the path asked for, so no request can loop.
pub(super) fn redirect_to_routed_form(
    function: Function,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> Option<Reply> {
    if function != Function::FALLBACK {
        return None;
    }
    let routed = path.strip_suffix('/').filter(|p| !p.is_empty())?;
    let matched = match_route(method, routed)?;
    if matched.route.function == function {
        return None;
    }
    let location = match query {
        Some(q) if !q.is_empty() => format!("{routed}?{q}"),
        _ => routed.to_owned(),
    };
    Some(Reply::empty(StatusCode::PERMANENT_REDIRECT).with_header_value("location", &location))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn a_route_key_has_no_trailing_slash() {
        assert_eq!(routed_path("/api/health/"), "/api/health");
        assert_eq!(routed_path("/api/docs/{file}"), "/api/docs/{file}");
        assert_eq!(routed_path("/"), "/");
        for route in super::super::ROUTES {
            let key = route_key(route);
            assert!(!key.ends_with('/'), "{key}");
        }
    }

    #[test]
    fn only_the_fallback_redirects_and_only_to_another_form_of_a_known_route() {
        let redirect = |f, m: &Method, p, q| {
            redirect_to_routed_form(f, m, p, q).map(|r| {
                let location = r
                    .headers
                    .iter()
                    .find(|(n, _)| n == "location")
                    .map(|(_, v)| v.to_str().unwrap().to_owned());
                (r.status, location)
            })
        };
        assert_eq!(
            redirect(
                Function::FALLBACK,
                &Method::GET,
                "/api/balance/v1/operations/",
                Some("limit=2")
            ),
            Some((
                StatusCode::PERMANENT_REDIRECT,
                Some("/api/balance/v1/operations?limit=2".to_owned())
            ))
        );
        assert_eq!(
            redirect(
                Function::FALLBACK,
                &Method::POST,
                "/api/auth/v1/sessions/abc/",
                None
            ),
            None,
            "no POST route there"
        );
        assert_eq!(
            redirect(Function::FALLBACK, &Method::POST, "/api/balance/v1/", None),
            None
        );
        assert!(
            redirect(
                Function::FALLBACK,
                &Method::DELETE,
                "/api/auth/v1/sessions/x/",
                None
            )
            .is_some()
        );
        // Already the routed form, a path of its own or another function: no redirect.
        assert_eq!(
            redirect(Function::FALLBACK, &Method::GET, "/api/health", None),
            None
        );
        assert_eq!(
            redirect(Function::FALLBACK, &Method::GET, "/api/schema/", None),
            None
        );
        assert_eq!(
            redirect(Function::Health, &Method::GET, "/api/balance/v1/", None),
            None
        );
        assert_eq!(redirect(Function::FALLBACK, &Method::GET, "/", None), None);
        assert_eq!(redirect(Function::FALLBACK, &Method::GET, "//", None), None);
    }
}
