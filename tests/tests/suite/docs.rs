//! The reference tables of `docs/` stay true: the configuration table, the function table and
//! the store table match the code.

use lighttech::config::VARIABLES;
use lighttech::http::{Function, Needs, ROUTES};

/// A page of `docs/`.
fn doc(name: &str) -> String {
    let path = format!("{}/../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The section under the heading `title` (`## Name`), up to the next heading of the same level
/// or higher; headings inside code fences do not count.
fn section(markdown: &str, title: &str) -> Option<String> {
    let level = title.chars().take_while(|&c| c == '#').count();
    let mut lines = markdown.lines().skip_while(|l| l.trim_end() != title);
    lines.next()?;
    let mut fenced = false;
    let body: Vec<&str> = lines
        .take_while(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            let hashes = l.chars().take_while(|&c| c == '#').count();
            fenced || !(1..=level).contains(&hashes) || !l[hashes..].starts_with(' ')
        })
        .collect();
    Some(body.join("\n"))
}

#[test]
fn every_configuration_variable_is_documented_with_its_default() {
    let page = doc("configuration.md");
    for v in VARIABLES {
        let row = page
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", v.name)))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for {}", v.name));
        let default = row.split('|').nth(2).unwrap_or_default().trim();
        match v.default {
            Some(d) => assert_eq!(default, format!("`{d}`"), "default of {}", v.name),
            None => assert_eq!(default, "—", "{} has no default", v.name),
        }
    }
    // And the table names nothing the code does not read.
    let documented: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(documented.len() >= VARIABLES.len(), "{documented:?}");
    for name in documented {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "docs/configuration.md documents {name}, which the config does not read"
        );
    }
}

#[test]
fn every_function_and_route_is_in_the_architecture_page() {
    let page = doc("architecture.md");
    let table = section(&page, "## Lambda functions")
        .expect("docs/architecture.md has a `## Lambda functions` section");
    for f in Function::ALL {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", f.name())))
            .unwrap_or_else(|| panic!("docs/architecture.md has no row for function {}", f.name()));
        for route in ROUTES.iter().filter(|r| r.function == f) {
            assert!(
                row.contains(&format!("`{} {}`", route.method, route.pattern)),
                "docs/architecture.md: the row of {} lacks {route:?}",
                f.name()
            );
        }
    }
}

#[test]
fn every_function_has_a_binary() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../functions/Cargo.toml"
    ))
    .unwrap();
    for f in Function::ALL {
        assert!(
            manifest.contains(&format!(
                "name = \"{}\"\npath = \"{}/main.rs\"",
                f.name(),
                f.name()
            )),
            "no binary for {}",
            f.name()
        );
        let main = std::fs::read_to_string(format!(
            "{}/../functions/{}/main.rs",
            env!("CARGO_MANIFEST_DIR"),
            f.name()
        ))
        .unwrap();
        assert!(
            main.contains(&format!("{f:?})")),
            "{} runs another function",
            f.name()
        );
        // Each binary starts with the entry point that builds exactly what its routes need.
        let entry = match f.needs() {
            Needs::Nothing => "run_stateless",
            Needs::Store => "run_store_only",
            Needs::App => "run",
        };
        assert!(
            main.contains(&format!("lighttech::lambda::{entry}(function::{f:?})")),
            "{} must start with lighttech::lambda::{entry} ({:?})",
            f.name(),
            f.needs()
        );
    }
}

/// The methods of the `Store` trait, read from its source.
fn store_methods() -> std::collections::BTreeSet<String> {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/src/store/mod.rs"
    ))
    .unwrap();
    let body = source
        .split_once("pub trait Store:")
        .expect("shared/src/store/mod.rs defines the Store trait")
        .1;
    let body = &body[..body.find("\n}\n").expect("the end of the Store trait")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("async fn "))
        .map(|l| l.split('(').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_store_table_covers_every_store_method() {
    let methods = store_methods();
    assert!(methods.len() > 10, "{methods:?}");
    assert!(methods.contains("ping") && methods.contains("audit_log"));
    let page = doc("architecture.md");
    let section = section(&page, "## The store: one atomic primitive per method")
        .expect("docs/architecture.md has the store section");
    let rows: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        rows, methods,
        "docs/architecture.md: the store table has a row for each method of the Store trait, \
         and no other"
    );
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells = line.split(" | ").count();
        assert_eq!(
            cells, 5,
            "method, step, SQLite, PostgreSQL, DynamoDB: {line}"
        );
    }
}
