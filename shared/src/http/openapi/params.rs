//! The parameters of an operation, with their schemas, from the route table's [`RouteParam`]s.

use super::*;

/// One parameter as the document shows it.
pub(super) enum Param {
    Query(&'static str, &'static str, RefOr<Schema>),
    Path(&'static str, &'static str),
    Header(&'static str, &'static str, RefOr<Schema>),
}

pub(super) fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A page's `limit` and `cursor`, with their descriptions.
fn limit_and_cursor(limit: &'static str, cursor: &'static str) -> Vec<Param> {
    vec![
        Param::Query(
            "limit",
            limit,
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100))
                .into(),
        ),
        Param::Query(
            "cursor",
            cursor,
            string().pattern(Some("^[A-Za-z0-9_-]+$")).into(),
        ),
    ]
}

fn history_params() -> Vec<Param> {
    let mut params = limit_and_cursor(
        "Page size, 1–100 (default 20): the most a page holds. Under a `type`, `since` or \
         `until` filter that matches rarely, a page may hold fewer and still carry a \
         `next_cursor`; the history ends where `next_cursor` is null.",
        "The `next_cursor` of the previous page of the same history: a cursor is bound to the \
         account whose history it pages and refused for any other.",
    );
    params.extend([
        Param::Query(
            "type",
            "Comma-separated kinds: deposit, withdrawal, transfer_in, transfer_out.",
            string()
                .pattern(Some(
                    "^(deposit|withdrawal|transfer_in|transfer_out)(,(deposit|withdrawal|transfer_in|transfer_out))*$",
                ))
                .into(),
        ),
        Param::Query(
            "since",
            "Only operations created at or after this instant (RFC 3339).",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into(),
        ),
        Param::Query(
            "until",
            "Only operations created at or before this instant (RFC 3339); not before `since`.",
            string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into(),
        ),
        Param::Header(
            "If-None-Match",
            "An `ETag` of this page: answered `304` with no body while it is current.",
            string().into(),
        ),
    ]);
    params
}

fn page_params(search: bool) -> Vec<Param> {
    let mut params = limit_and_cursor(
        "Page size, 1–100 (default 20).",
        "The `next_cursor` of the previous page; usable only by the staff member it was issued to.",
    );
    if search {
        params.push(Param::Query(
            "q",
            "Case-insensitive substring of the username or the email.",
            string().max_length(Some(254)).into(),
        ));
    }
    params
}

fn idempotency_key() -> Param {
    Param::Header(
        "Idempotency-Key",
        "1–255 printable ASCII characters, scoped to the caller and kept at least 24 hours. The \
         same key with the same body replays the first `201` (with `Idempotent-Replayed: true`) \
         and moves no money again; with a different body it is `422 idempotency_key_mismatch`.",
        string()
            .min_length(Some(1))
            .max_length(Some(255))
            .pattern(Some("^[ -~]+$"))
            .into(),
    )
}

/// The parameters a route's documentation names, in its order.
pub(super) fn parameters(params: &[RouteParam]) -> Vec<Param> {
    let mut out = Vec::new();
    for param in params {
        match *param {
            RouteParam::Path(name, description) => out.push(Param::Path(name, description)),
            RouteParam::History => out.extend(history_params()),
            RouteParam::Page { search } => out.extend(page_params(search)),
            RouteParam::IdempotencyKey => out.push(idempotency_key()),
        }
    }
    out
}
