//! Reading requests: the one place that parses bodies, headers and query strings.

use std::collections::HashSet;

use http::{HeaderMap, Method, header};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::domain::{IdempotencyKey, Money};
use crate::error::{ApiError, FieldErrors};
use crate::service::auth::ClientInfo;

/// Largest accepted body in bytes (16 KiB); a larger one answers `413 payload_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A request as handlers see it: method, matched route parameters, headers, body.
#[derive(Debug)]
pub struct Req {
    /// The request id echoed as `X-Request-Id`.
    pub request_id: String,
    /// HTTP method.
    pub method: Method,
    /// The path as received, without the query and not percent-decoded.
    pub path: String,
    /// The query string as received, still percent-encoded; `None` when the URL has no `?`.
    pub query: Option<String>,
    /// The request headers as received; a name may appear more than once.
    pub headers: HeaderMap,
    /// The body, at most [`MAX_BODY_BYTES`]; empty when none was sent.
    pub body: bytes::Bytes,
    /// Values of `{name}` segments of the matched route.
    pub params: Vec<(&'static str, String)>,
    /// Source address and user agent.
    pub client: ClientInfo,
}

impl Req {
    /// A path parameter of the matched route.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token of the `Authorization` header; missing or garbled → `not_authenticated`.
    pub fn bearer(&self) -> Result<&str, ApiError> {
        let mut values = self.headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::NotAuthenticated);
        };
        let text = value.to_str().map_err(|_| ApiError::NotAuthenticated)?;
        let (scheme, token) = text.split_once(' ').ok_or(ApiError::NotAuthenticated)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return Err(ApiError::NotAuthenticated);
        }
        Ok(token)
    }

    /// The `Idempotency-Key` header, validated, if present.
    pub fn idempotency_key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        let mut values = self.headers.get_all("idempotency-key").iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => IdempotencyKey::parse(v.as_bytes())
                .map(Some)
                .map_err(|m| ApiError::field("Idempotency-Key", m)),
            (Some(_), Some(_)) => Err(ApiError::field(
                "Idempotency-Key",
                "Send the Idempotency-Key header once.",
            )),
        }
    }

    /// Parses a JSON object body. `optional` bodies may be empty (with any content type).
    pub fn json_object(&self, optional: bool) -> Result<JsonObject, ApiError> {
        if optional && self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonObject::default());
        }
        if !is_json_content_type(&self.headers) {
            return Err(ApiError::UnsupportedMediaType);
        }
        JsonObject::parse(&self.body)
    }

    /// Query parameters; a parameter given twice is a validation error. (The router has already
    /// refused any holding a control character: [`check_query_text`].)
    pub fn query_params(&self) -> Result<Vec<(String, String)>, ApiError> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (k, v) in form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes()) {
            if !seen.insert(k.to_string()) {
                return Err(ApiError::field(k.to_string(), "Give this parameter once."));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(out)
    }
}

/// A query string is request text on every endpoint, whether or not the endpoint reads it: a
/// parameter whose name or value holds a control character is refused, naming the parameter.
pub fn check_query_text(query: Option<&str>) -> Result<(), ApiError> {
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if has_control(&k) || has_control(&v) {
            return Err(ApiError::field(k.into_owned(), CONTROL_CHARACTERS));
        }
    }
    Ok(())
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    // Only a UTF-8 charset (or none) describes JSON text.
    parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let v = value.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        Some(_) => true,
        None => p.trim().is_empty(),
    })
}

/// A JSON object's members kept as raw JSON text, so each field is parsed by its own rules
/// (money from its exact digits) and every problem is reported against its field.
#[derive(Debug, Default)]
pub struct JsonObject {
    members: Vec<(String, Box<RawValue>)>,
    taken: HashSet<String>,
    errors: FieldErrors,
}

struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push((k, v));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl JsonObject {
    fn parse(body: &[u8]) -> Result<JsonObject, ApiError> {
        // First: is it JSON at all?
        let raw: &RawValue = serde_json::from_slice(body).map_err(|_| ApiError::InvalidJson)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(ApiError::field(
                "non_field_errors",
                "Expected a JSON object.",
            ));
        }
        let Members(members) =
            serde_json::from_str(raw.get()).map_err(|_| ApiError::InvalidJson)?;
        // The first member whose name came before: refused by name.
        if let Some((field, _)) = members
            .iter()
            .enumerate()
            .find(|(i, (k, _))| members[..*i].iter().any(|(earlier, _)| earlier == k))
            .map(|(_, member)| member)
        {
            return Err(ApiError::field(field.clone(), "Duplicate field."));
        }
        Ok(JsonObject {
            members,
            ..JsonObject::default()
        })
    }

    fn take(&mut self, name: &str) -> Option<&RawValue> {
        self.taken.insert(name.to_owned());
        self.members
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// A required field parsed by `parse` from its raw JSON text; problems are recorded.
    pub fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let result = match self.take(name) {
            None => Err("This field is required.".to_owned()),
            Some(raw) => parse(raw.get()),
        };
        result.map_err(|m| self.errors.add(name, m)).ok()
    }

    /// An optional field; absent or `null` is `Some(None)`, a problem is `None`.
    pub fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        let result = match self.take(name) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => parse(raw.get()).map(Some),
        };
        result.map_err(|m| self.errors.add(name, m)).ok()
    }

    /// Records a problem found in a field after it was parsed (a rule across fields).
    pub fn reject(&mut self, name: &str, message: impl Into<String>) {
        self.errors.add(name, message);
    }

    /// Fails with every recorded problem plus one per unknown field.
    pub fn finish(mut self) -> Result<(), ApiError> {
        for (name, _) in &self.members {
            if !self.taken.contains(name) {
                self.errors.add(name.clone(), "Unknown field.");
            }
        }
        self.errors.into_result()
    }
}

const CONTROL_CHARACTERS: &str = "Control characters (U+0000 to U+001F, U+007F) are not allowed.";

/// Whether text holds a C0 control character or DEL, which no text field may contain.
fn has_control(text: &str) -> bool {
    text.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}')
}

/// Parses a JSON string member. Every text field of a body goes through here, so control
/// characters are refused once, for every field.
pub fn json_string(raw: &str) -> Result<String, String> {
    if raw == "null" {
        return Err("This field may not be null.".to_owned());
    }
    let text = serde_json::from_str::<String>(raw).map_err(|_| "Not a valid string.".to_owned())?;
    if has_control(&text) {
        return Err(CONTROL_CHARACTERS.to_owned());
    }
    Ok(text)
}

/// Parses a JSON string member with a length limit in characters.
pub fn json_string_max(raw: &str, max: usize) -> Result<String, String> {
    let s = json_string(raw)?;
    if s.chars().count() > max {
        return Err(format!(
            "Ensure this field has no more than {max} characters."
        ));
    }
    Ok(s)
}

/// Parses a money member (JSON string or number).
pub fn json_amount(raw: &str) -> Result<Money, String> {
    Money::parse_amount_json(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: &str) -> Result<JsonObject, ApiError> {
        JsonObject::parse(body.as_bytes())
    }

    #[test]
    fn unknown_fields_are_named() {
        let mut o = object(r#"{"amount":"1.00","surprise":1}"#).unwrap();
        assert!(o.required("amount", json_amount).is_some());
        match o.finish() {
            Err(ApiError::Validation(e)) => assert!(e.as_map().contains_key("surprise")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let mut o = object(r#"{"amount": 0.1}"#).unwrap();
        assert_eq!(
            o.required("amount", json_amount),
            Some(Money::from_minor(10))
        );
    }

    #[test]
    fn invalid_json_and_non_objects_are_told_apart() {
        assert!(matches!(object("{"), Err(ApiError::InvalidJson)));
        assert!(matches!(object(""), Err(ApiError::InvalidJson)));
        assert!(matches!(object("[1]"), Err(ApiError::Validation(_))));
        assert!(matches!(object("\"x\""), Err(ApiError::Validation(_))));
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        match object(r#"{"amount":"1","amount":"2"}"#) {
            Err(ApiError::Validation(e)) => assert!(e.as_map().contains_key("amount")),
            Ok(_) => panic!("accepted a duplicate"),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_characters_are_refused_in_strings_but_not_other_text() {
        for bad in ["\\u0000", "\\u001f", "\\t", "\\n", "\u{7f}"] {
            let raw = format!("\"a{bad}b\"");
            assert!(json_string(&raw).is_err(), "{raw}");
        }
        assert_eq!(
            json_string(r#""tab-free \u00e9 \u0080 \u2028""#).unwrap(),
            "tab-free é \u{80} \u{2028}"
        );
    }

    #[test]
    fn a_query_parameter_with_a_control_character_is_named() {
        let req = |query: &str| Req {
            request_id: String::new(),
            method: Method::GET,
            path: "/".into(),
            query: Some(query.into()),
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
            params: Vec::new(),
            client: ClientInfo::default(),
        };
        for query in ["q=a%00b", "unknown=%7F", "cursor=%1F", "x%00=1"] {
            match check_query_text(Some(query)) {
                Err(ApiError::Validation(e)) => assert_eq!(e.as_map().len(), 1, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        assert_eq!(req("q=a%C3%A9&limit=5").query_params().unwrap().len(), 2);
    }

    #[test]
    fn wrong_types_are_reported_per_field() {
        let mut o = object(r#"{"username": 5, "password": null}"#).unwrap();
        assert!(o.required("username", json_string).is_none());
        assert!(o.required("password", json_string).is_none());
        match o.finish() {
            Err(ApiError::Validation(e)) => {
                assert_eq!(e.as_map().len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_content_types_with_utf8_charset_are_accepted() {
        let mut h = HeaderMap::new();
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON;charset=UTF-8", true),
            ("application/json; charset=latin1", false),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_json_content_type(&h), ok, "{value}");
        }
    }
}
