//! docs/api.md stays complete and true: a section for every route the router serves and no
//! section for a route it does not, a row in the error table for every code the API can answer
//! (with its status), no status table naming a code that does not exist, and a working
//! table-of-contents link for every endpoint.

use std::collections::BTreeSet;

use lighttech::error::ApiError;
use lighttech::http::ROUTES;

fn reference() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md at the workspace root")
}

/// `METHOD /pattern`, as the route table and the endpoint headings write a route.
fn route_names() -> BTreeSet<String> {
    ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.pattern))
        .collect()
}

/// The endpoint headings: every level-3 heading that is one code span, `` ### `GET /path/` ``.
fn endpoint_headings(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .map(|l| {
            l.strip_suffix('`')
                .unwrap_or_else(|| panic!("an endpoint heading is one code span: ### `{l}"))
                .to_owned()
        })
        .collect()
}

/// The header of each endpoint's table of answers.
const STATUS_TABLE: &str = "| status | code | when |";

/// Every API error, one per code.
fn errors() -> Vec<ApiError> {
    ApiError::one_of_each()
}

/// The rows (cells, header and rule excluded) of the table whose header row is `header`, in
/// the section that starts with `heading`.
fn table_rows<'a>(doc: &'a str, heading: &str, header: &str) -> Vec<Vec<&'a str>> {
    let section = doc
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/api.md has no section {heading:?}"))
        .1;
    let mut lines = section
        .lines()
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### "));
    lines
        .by_ref()
        .find(|l| *l == header)
        .unwrap_or_else(|| panic!("{heading} has no table {header:?}"));
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

/// The code spans of a table cell: `` `a`, `b` `` → `["a", "b"]`.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// GitHub's anchor for a heading: lower-cased, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[test]
fn every_route_the_router_serves_has_a_section() {
    let doc = reference();
    let headings: BTreeSet<String> = endpoint_headings(&doc).into_iter().collect();
    let missing: Vec<String> = route_names()
        .into_iter()
        .filter(|r| !headings.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md has no `### `METHOD /path`` section for {missing:?}"
    );
}

#[test]
fn every_endpoint_section_is_a_route_and_appears_once() {
    let doc = reference();
    let routes = route_names();
    let headings = endpoint_headings(&doc);
    let mut seen = BTreeSet::new();
    for heading in &headings {
        assert!(
            routes.contains(heading),
            "docs/api.md documents {heading:?}, which the router does not serve"
        );
        assert!(
            seen.insert(heading),
            "docs/api.md documents {heading:?} twice"
        );
    }
}

#[test]
fn every_endpoint_is_linked_from_the_contents() {
    let doc = reference();
    let contents = doc
        .split_once("\n## Contents\n")
        .expect("docs/api.md has a table of contents")
        .1;
    let contents = contents.split("\n## ").next().unwrap_or_default();
    for heading in endpoint_headings(&doc) {
        let link = format!("[`{heading}`](#{})", anchor(&format!("`{heading}`")));
        assert!(
            contents.contains(&link),
            "the contents of docs/api.md lack {link}"
        );
    }
}

#[test]
fn every_error_code_is_in_the_error_table_with_its_status() {
    let doc = reference();
    let rows = table_rows(&doc, "### Error codes", "| code | status | when |");
    let codes: BTreeSet<&str> = errors().iter().map(ApiError::code).collect();
    for error in errors() {
        let row = rows
            .iter()
            .find(|row| row.first().copied() == Some(&format!("`{}`", error.code())))
            .unwrap_or_else(|| {
                panic!(
                    "docs/api.md's error table has no row for `{}`",
                    error.code()
                )
            });
        assert_eq!(
            row.get(1).copied(),
            Some(error.status().to_string().as_str()),
            "status of `{}` in docs/api.md's error table",
            error.code()
        );
    }
    for row in &rows {
        let code = row[0].trim_matches('`');
        assert!(
            codes.contains(code),
            "docs/api.md's error table lists `{code}`, which the API never answers"
        );
    }
    assert_eq!(
        rows.len(),
        codes.len(),
        "one row per code in the error table"
    );
}

#[test]
fn every_code_an_endpoint_lists_exists_with_the_status_it_is_listed_under() {
    let doc = reference();
    let status_of = |code: &str| {
        errors()
            .iter()
            .find(|e| e.code() == code)
            .map(ApiError::status)
    };
    let mut checked = 0;
    for heading in endpoint_headings(&doc) {
        for row in table_rows(&doc, &format!("### `{heading}`"), STATUS_TABLE) {
            let (Some(statuses), Some(codes)) = (row.first(), row.get(1)) else {
                continue;
            };
            let statuses: Vec<u16> = statuses
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{heading}: {s:?} is not a status"))
                })
                .collect();
            for code in code_spans(codes) {
                let status = status_of(code).unwrap_or_else(|| {
                    panic!("{heading} lists `{code}`, which the API never answers")
                });
                assert!(
                    statuses.contains(&status),
                    "{heading} lists `{code}` under {statuses:?}; it is a {status}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} codes found in the endpoint tables"
    );
}
