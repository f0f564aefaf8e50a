//! The README stays true: its configuration table and function table match the code.

use lighttech::config::VARIABLES;
use lighttech::http::{Function, Needs, ROUTES};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the workspace root")
}

#[test]
fn every_configuration_variable_is_documented_with_its_default() {
    let readme = readme();
    for v in VARIABLES {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", v.name)))
            .unwrap_or_else(|| panic!("README has no config row for {}", v.name));
        let default = row.split('|').nth(2).unwrap_or_default().trim();
        match v.default {
            Some(d) => assert_eq!(default, format!("`{d}`"), "default of {}", v.name),
            None => assert_eq!(default, "—", "{} has no default", v.name),
        }
    }
    // And the table names nothing the code does not read.
    let documented: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Configuration"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    for name in documented {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "README documents {name}, which the config does not read"
        );
    }
}

#[test]
fn every_function_and_route_is_in_the_readme() {
    let readme = readme();
    for f in Function::ALL {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", f.name())))
            .unwrap_or_else(|| panic!("README has no row for function {}", f.name()));
        for route in ROUTES.iter().filter(|r| r.function == f) {
            assert!(
                row.contains(&format!("`{} {}`", route.method, route.pattern)),
                "README row of {} lacks {route:?}",
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
fn the_readme_store_table_covers_every_store_method() {
    let methods = store_methods();
    assert!(methods.len() > 10, "{methods:?}");
    assert!(methods.contains("ping") && methods.contains("audit_log"));
    let readme = readme();
    let section = readme
        .split_once("### The store: one atomic primitive per method")
        .expect("the README's store section")
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let rows: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        rows, methods,
        "the README's store table has a row for each method of the Store trait, and no other"
    );
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells = line.split(" | ").count();
        assert_eq!(
            cells, 5,
            "method, step, SQLite, PostgreSQL, DynamoDB: {line}"
        );
    }
}
