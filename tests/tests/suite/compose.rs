//! The docker compose stack stays true without Docker: no Docker engine runs in CI, so
//! `local/docker-compose.yml`, `local/Dockerfile`, LocalStack's init script, `.env.example` and
//! the compose section of `docs/local-development.md` are checked here, statically, against the
//! code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use lighttech::Config;
use lighttech::config::VARIABLES;
use lighttech::store::dynamo::{GSI1, GSI1_PROJECTED, TTL_ATTRIBUTE};
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE_FILE: &str = "local/docker-compose.yml";
const INIT_SCRIPT: &str = "local/localstack/init/ready.d/10-lighttech.sh";
const READY_D: &str = "/etc/localstack/init/ready.d";
/// The page that says how to run the stack, and its section that does.
const GUIDE: &str = "docs/local-development.md";
const GUIDE_SECTION: &str = "## Run with docker compose";
/// The services of the stack; `api` depends on the other three.
const SERVICES: [&str; 4] = ["localstack", "postgres", "redis", "api"];
/// What LocalStack's init script creates and the api is pointed at.
const TABLE: &str = "lighttech";
const SECRET: &str = "lighttech/signing-key";
/// The AWS SDK's credential chain: passed to the api, though no LightTech configuration.
const AWS_CREDENTIALS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
/// Variables `.env.example` lists besides the configuration's (`VARIABLES`): read by a tool or
/// by the AWS SDK, never by `Config`. Each with a file that reads or passes it, so the list
/// cannot outlive its reason.
const TOOL_VARIABLES: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", COMPOSE_FILE),
    ("AWS_SECRET_ACCESS_KEY", COMPOSE_FILE),
    ("LIGHTTECH_SUPERUSER_PASSWORD", "local/src/main.rs"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path} at the workspace root: {e}"))
}

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(COMPOSE_FILE))
        .unwrap_or_else(|e| panic!("{COMPOSE_FILE} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{COMPOSE_FILE} holds one YAML document");
    docs.remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(
        service.as_hash().is_some(),
        "{COMPOSE_FILE} defines no service `{name}`"
    );
    service
}

fn defined_services(compose: &Yaml) -> BTreeSet<String> {
    compose["services"]
        .as_hash()
        .unwrap_or_else(|| panic!("{COMPOSE_FILE} has no `services` mapping"))
        .keys()
        .map(|k| scalar(k).unwrap_or_else(|| panic!("service name {k:?} is not a string")))
        .collect()
}

/// A scalar as the string compose would see.
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

/// The api's environment, in either compose form (`NAME: value` or `- NAME=value`).
fn api_environment(compose: &Yaml) -> BTreeMap<String, String> {
    let env = &service(compose, "api")["environment"];
    let pairs: Vec<(String, String)> = if let Some(map) = env.as_hash() {
        map.iter()
            .map(|(k, v)| {
                let name = scalar(k).expect("environment names are strings");
                let value = scalar(v).unwrap_or_else(|| panic!("{name} has no scalar value"));
                (name, value)
            })
            .collect()
    } else if let Some(list) = env.as_vec() {
        list.iter()
            .map(|item| {
                let item = scalar(item).expect("environment entries are strings");
                match item.split_once('=') {
                    Some((n, v)) => (n.to_owned(), v.to_owned()),
                    None => (item, String::new()),
                }
            })
            .collect()
    } else {
        panic!("the api service has no `environment`")
    };
    let count = pairs.len();
    let env: BTreeMap<String, String> = pairs.into_iter().collect();
    assert_eq!(
        env.len(),
        count,
        "the api environment names a variable twice"
    );
    env
}

#[test]
fn the_compose_file_defines_localstack_postgres_redis_and_api() {
    let compose = compose();
    let defined = defined_services(&compose);
    for name in SERVICES {
        assert!(
            defined.contains(name),
            "{COMPOSE_FILE} defines no service `{name}` (it has {defined:?})"
        );
    }
}

#[test]
fn every_variable_the_compose_file_passes_is_one_the_config_reads() {
    let env = api_environment(&compose());
    assert!(!env.is_empty(), "the api service is passed no variables");
    for name in env.keys() {
        assert!(
            VARIABLES.iter().any(|v| v.name == name) || AWS_CREDENTIALS.contains(&name.as_str()),
            "the api service is passed {name}, which the config does not read \
             (lighttech::config::VARIABLES) and is not an AWS credential"
        );
    }
}

#[test]
fn the_api_takes_its_signing_key_from_the_localstack_secret_and_no_key_is_in_the_file() {
    let compose = compose();
    let env = api_environment(&compose);
    assert!(
        !env.contains_key("SECRET_KEY"),
        "the compose file must not carry a signing key; the api reads it through SECRET_KEY_ARN"
    );
    assert_eq!(env.get("SECRET_KEY_ARN").map(String::as_str), Some(SECRET));
    assert_eq!(
        env.get("AWS_ENDPOINT_URL").map(String::as_str),
        Some("http://localstack:4566"),
        "AWS calls (Secrets Manager, DynamoDB) go to the localstack service"
    );
    assert!(
        env.get("AWS_REGION").is_some_and(|r| !r.is_empty()),
        "AWS_REGION is set"
    );
    for name in AWS_CREDENTIALS {
        assert!(
            env.get(name).is_some_and(|v| !v.is_empty()),
            "{name} is set"
        );
    }
    let hosts = env.get("ALLOWED_HOSTS").expect("ALLOWED_HOSTS is set");
    for host in ["localhost", "127.0.0.1", "api"] {
        assert!(
            hosts.split(',').any(|h| h.trim() == host),
            "ALLOWED_HOSTS lets the api answer {host}"
        );
    }
}

#[test]
fn the_api_defaults_to_postgres_and_database_url_switches_it_to_dynamodb() {
    let compose = compose();
    let env = api_environment(&compose);
    let url = env.get("DATABASE_URL").expect("DATABASE_URL is passed");
    let default = url
        .strip_prefix("${DATABASE_URL:-")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| {
            panic!("DATABASE_URL is {url:?}; expected ${{DATABASE_URL:-postgres://…}} so exporting DATABASE_URL switches the store")
        });
    let postgres = service(&compose, "postgres");
    let pg = |name: &str| {
        scalar(&postgres["environment"][name])
            .unwrap_or_else(|| panic!("the postgres service sets {name}"))
    };
    assert_eq!(
        default,
        format!(
            "postgres://{}:{}@postgres:5432/{}",
            pg("POSTGRES_USER"),
            pg("POSTGRES_PASSWORD"),
            pg("POSTGRES_DB")
        ),
        "the default store is the postgres service's database"
    );
    let header: String = read(COMPOSE_FILE)
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        header.contains(&format!("DATABASE_URL=dynamodb://{TABLE}")),
        "the comment at the top of {COMPOSE_FILE} shows the switch to DynamoDB"
    );
}

#[test]
fn the_api_starts_only_once_the_other_three_services_are_healthy() {
    let compose = compose();
    let depends_on = &service(&compose, "api")["depends_on"];
    assert!(
        depends_on.as_hash().is_some(),
        "the api's depends_on is a mapping with a condition per service"
    );
    for name in SERVICES.iter().filter(|s| **s != "api") {
        assert_eq!(
            scalar(&depends_on[*name]["condition"]).as_deref(),
            Some("service_healthy"),
            "the api depends on `{name}` with condition: service_healthy"
        );
        let healthcheck = &service(&compose, name)["healthcheck"];
        let test = &healthcheck["test"];
        let command: Vec<String> = match test {
            Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        assert!(
            command.iter().any(|part| !part.is_empty())
                && command.first().map(String::as_str) != Some("NONE"),
            "`{name}` has a healthcheck test"
        );
        assert_ne!(
            healthcheck["disable"].as_bool(),
            Some(true),
            "`{name}`'s healthcheck is enabled"
        );
    }
    // The postgres and redis healthchecks ask the server itself.
    let command = |name: &str| format!("{:?}", service(&compose, name)["healthcheck"]["test"]);
    assert!(command("postgres").contains("pg_isready"));
    assert!(command("redis").contains("redis-cli ping"));
}

#[test]
fn the_api_is_built_from_local_dockerfile_with_the_workspace_as_context() {
    let compose = compose();
    let api = service(&compose, "api");
    let context = scalar(&api["build"]["context"]).expect("the api has build.context");
    let dockerfile = scalar(&api["build"]["dockerfile"]).expect("the api has build.dockerfile");
    // Compose resolves the context against the compose file's folder, the dockerfile against
    // the context.
    let context = root().join("local").join(context);
    assert_eq!(
        context.canonicalize().expect("the build context exists"),
        root().canonicalize().unwrap(),
        "the api is built with the workspace root as context"
    );
    assert_eq!(dockerfile, "local/Dockerfile");
    assert!(
        context.join(&dockerfile).is_file(),
        "{dockerfile} exists in the build context"
    );
    let ports = api["ports"].as_vec().expect("the api publishes ports");
    assert!(
        ports
            .iter()
            .filter_map(scalar)
            .any(|p| p.ends_with(":8000")),
        "the api publishes port 8000, got {ports:?}"
    );

    let dockerfile = read("local/Dockerfile");
    for expected in [
        "FROM rust:1-bookworm AS builder",
        "cargo build --release --locked -p lighttech-local",
        "FROM debian:bookworm-slim",
        "ca-certificates",
        "EXPOSE 8000",
        r#"ENTRYPOINT ["lighttech-local", "--init", "--listen", "0.0.0.0:8000"]"#,
    ] {
        assert!(
            dockerfile.contains(expected),
            "local/Dockerfile lacks {expected:?}"
        );
    }
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("local/Dockerfile switches to an unprivileged USER");
    assert!(
        !["root", "0"].contains(&user.trim()),
        "the runtime user is not root"
    );
}

#[test]
fn the_docker_build_context_leaves_out_build_output_git_and_local_state() {
    let ignore = read(".dockerignore");
    let patterns: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for dir in ["target", ".venv", ".lighttech", ".git", "node_modules"] {
        assert!(
            patterns.contains(dir) || patterns.contains(format!("**/{dir}").as_str()),
            ".dockerignore does not exclude {dir}/ (it has {patterns:?})"
        );
    }
}

#[test]
fn the_localstack_init_script_creates_the_table_the_dynamodb_store_expects() {
    let script = read(INIT_SCRIPT);
    // One line per argument of the create-table call, as `DynamoStore::create_table` makes it.
    for expected in [
        "dynamodb create-table".into(),
        format!("--table-name {TABLE}"),
        "AttributeName=PK,AttributeType=S".into(),
        "AttributeName=SK,AttributeType=S".into(),
        "AttributeName=GSI1PK,AttributeType=S".into(),
        "AttributeName=GSI1SK,AttributeType=S".into(),
        "--key-schema AttributeName=PK,KeyType=HASH AttributeName=SK,KeyType=RANGE".into(),
        format!(
            "IndexName={GSI1},KeySchema=[{{AttributeName=GSI1PK,KeyType=HASH}},{{AttributeName=GSI1SK,KeyType=RANGE}}],Projection={{ProjectionType=INCLUDE,NonKeyAttributes=[{}]}}",
            GSI1_PROJECTED.join(",")
        ),
        "--billing-mode PAY_PER_REQUEST".into(),
        "--sse-specification Enabled=true".into(),
        format!("update-time-to-live --table-name {TABLE}"),
        format!("--time-to-live-specification Enabled=true,AttributeName={TTL_ATTRIBUTE}"),
    ] {
        assert!(
            script.contains(&expected),
            "{INIT_SCRIPT} lacks {expected:?}"
        );
    }
    // Re-running it must not fail on what the first run created.
    for exists in ["ResourceInUseException", "ResourceExistsException"] {
        assert!(
            script.contains(exists),
            "{INIT_SCRIPT} does not tolerate {exists} (it must be idempotent)"
        );
    }
    // The api's DynamoDB switch names the table the script creates.
    assert!(read(COMPOSE_FILE).contains(&format!("dynamodb://{TABLE}")));
}

#[test]
fn the_localstack_init_script_creates_the_secret_from_fresh_random_bytes() {
    let script = read(INIT_SCRIPT);
    assert!(
        script.contains("secretsmanager create-secret"),
        "{INIT_SCRIPT} creates a Secrets Manager secret"
    );
    assert!(
        script.contains(&format!("--name {SECRET}")),
        "{INIT_SCRIPT} names the secret {SECRET}"
    );
    assert!(
        script.contains("/dev/urandom"),
        "the signing key is generated from /dev/urandom, not written in the script"
    );
    let value = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("--secret-string "))
        .expect("the secret is created with --secret-string");
    assert!(
        value.starts_with("\"$") || value.starts_with('$'),
        "the secret value is the generated key (a variable), not the literal {value}"
    );
}

#[test]
fn the_localstack_init_script_is_executable_valid_bash_and_mounted_into_ready_d() {
    let path = root().join(INIT_SCRIPT);
    let script = read(INIT_SCRIPT);
    assert!(
        script.starts_with("#!/bin/bash\n"),
        "LocalStack runs init scripts by their shebang"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(
            mode & 0o111,
            0,
            "{INIT_SCRIPT} must be executable: LocalStack skips it otherwise (chmod +x)"
        );
    }
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash runs");
    assert!(
        syntax.status.success(),
        "bash -n {INIT_SCRIPT}: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    let compose = compose();
    let localstack = service(&compose, "localstack");
    let services = scalar(&localstack["environment"]["SERVICES"]).unwrap_or_default();
    let services: BTreeSet<&str> = services.split(',').map(str::trim).collect();
    assert!(
        services.contains("dynamodb") && services.contains("secretsmanager"),
        "LocalStack runs DynamoDB and Secrets Manager, got {services:?}"
    );
    let volumes = localstack["volumes"]
        .as_vec()
        .expect("the localstack service has volumes");
    let mounted = volumes.iter().any(|v| {
        let (source, target) = match scalar(v) {
            Some(short) => {
                let mut parts = short.split(':');
                (
                    parts.next().unwrap_or_default().to_owned(),
                    parts.next().unwrap_or_default().to_owned(),
                )
            }
            None => (
                scalar(&v["source"]).unwrap_or_default(),
                scalar(&v["target"]).unwrap_or_default(),
            ),
        };
        let source = root().join("local").join(source);
        source.canonicalize().ok() == path.canonicalize().ok()
            && target.starts_with(&format!("{READY_D}/"))
    });
    assert!(
        mounted,
        "{COMPOSE_FILE} does not mount {INIT_SCRIPT} into {READY_D}/ (volumes: {volumes:?})"
    );
}

// ---- docs/local-development.md -----------------------------------------------------------------

/// The section under `title` (a `## ` heading), up to the next `## ` heading.
fn section(markdown: &str, title: &str) -> Option<String> {
    let mut lines = markdown.lines().skip_while(|l| l.trim_end() != title);
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Whether a code span looks like a compose service name.
fn looks_like_service(span: &str) -> bool {
    span.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && span
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// The compose service names a piece of documentation shows: code spans that look like service
/// names (`api`) and stand where a service is named — first on a list item or table row
/// (`` - `redis` — … ``), next to the word "service" or "container" (`` the `api` service ``,
/// `` service `api` ``), or in a run of names joined by commas, "and" or "or" with such a span
/// (`` the `postgres`, `redis` and `api` services ``). Other code spans (a table name, a command)
/// are not service names. Fenced code blocks are skipped.
fn service_names_in(text: &str) -> BTreeSet<String> {
    let mut in_fence = false;
    let mut prose = Vec::new();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let item = line.trim_start();
        let item = ["- ", "* ", "+ ", "| "]
            .iter()
            .find_map(|m| item.strip_prefix(m))
            .map(str::trim_start);
        if let Some(first) = item
            .and_then(|i| i.strip_prefix('`'))
            .and_then(|i| i.split('`').next())
            .filter(|s| looks_like_service(s))
        {
            names.insert(first.to_owned());
        }
        prose.push(line);
    }
    // Odd parts are code spans; even parts the prose around them.
    let prose = prose.join(" ");
    let parts: Vec<&str> = prose.split('`').collect();
    let spans: Vec<usize> = (1..parts.len()).step_by(2).collect();
    let mut named: Vec<bool> = spans
        .iter()
        .map(|&i| {
            let before = parts[i - 1].trim_end().to_ascii_lowercase();
            let after = parts
                .get(i + 1)
                .map_or(String::new(), |a| a.trim_start().to_ascii_lowercase());
            looks_like_service(parts[i])
                && (after.starts_with("service")
                    || after.starts_with("container")
                    || before.ends_with("service")
                    || before.ends_with("services")
                    || before.ends_with("services:"))
        })
        .collect();
    // Spread along runs like `a`, `b` and `c`.
    let joins = |between: &str| [",", "and", ", and", "or", ", or"].contains(&between.trim());
    loop {
        let mut changed = false;
        for k in 0..spans.len().saturating_sub(1) {
            let (i, j) = (spans[k], spans[k + 1]);
            if joins(parts[i + 1])
                && named[k] != named[k + 1]
                && looks_like_service(parts[i])
                && looks_like_service(parts[j])
            {
                named[k] = true;
                named[k + 1] = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    names.extend(
        spans
            .iter()
            .zip(named)
            .filter(|(_, n)| *n)
            .map(|(&i, _)| parts[i].to_owned()),
    );
    names
}

/// The guide's compose section exists, mentions every service of the stack, and names no
/// service the compose file lacks.
fn check_guide(guide: &str, defined: &BTreeSet<String>) -> Result<(), String> {
    let text = section(guide, GUIDE_SECTION).ok_or_else(|| {
        format!(
            "{GUIDE} has no `{GUIDE_SECTION}` section: it should say how to start the stack \
             ({COMPOSE_FILE}), how DATABASE_URL=dynamodb://{TABLE} switches the api to DynamoDB \
             on LocalStack, and what each of the services {SERVICES:?} is"
        )
    })?;
    if !text.contains(COMPOSE_FILE) {
        return Err(format!(
            "the compose section of {GUIDE} does not mention {COMPOSE_FILE}"
        ));
    }
    let spans: BTreeSet<&str> = text.split('`').skip(1).step_by(2).collect();
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !spans.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the compose section of {GUIDE} does not mention the service(s) {missing:?} (in \
             backticks)"
        ));
    }
    let unknown: Vec<String> = service_names_in(&text)
        .into_iter()
        .filter(|s| !defined.contains(s))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "the compose section of {GUIDE} names service(s) {unknown:?}, which {COMPOSE_FILE} \
             does not define (it has {defined:?})"
        ));
    }
    Ok(())
}

#[test]
fn every_service_the_compose_guide_names_is_defined() {
    let guide = read(GUIDE);
    let defined = defined_services(&compose());
    let checked = check_guide(&guide, &defined);
    assert!(checked.is_ok(), "{}", checked.unwrap_err());
}

#[test]
fn the_guide_check_catches_an_undefined_service_and_ignores_other_code() {
    let defined: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    let good = "# x\n\n## Run with docker compose\n\n\
        ```sh\ndocker compose -f local/docker-compose.yml up --build\n```\n\n\
        The `localstack`, `postgres` and `redis` services, and `api`, which serves on\n\
        `localhost:8000`. LocalStack gets table `lighttech` and `--init` runs.\n\n\
        ## Next\n\n- `ghost` — another section\n";
    assert_eq!(check_guide(good, &defined), Ok(()));
    assert_eq!(
        service_names_in(&section(good, GUIDE_SECTION).unwrap()),
        ["localstack", "postgres", "redis"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    let listed = good.replace(
        "The `localstack`",
        "- `worker` — extra\n| `api` | the server |\n\nThe `localstack`",
    );
    assert_eq!(
        service_names_in(&section(&listed, GUIDE_SECTION).unwrap()),
        ["api", "localstack", "postgres", "redis", "worker"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let err = check_guide(&listed, &defined).unwrap_err();
    assert!(err.contains("[\"worker\"]"), "{err}");

    let err = check_guide(&good.replace("`redis`", "redis"), &defined).unwrap_err();
    assert!(err.contains("redis"), "{err}");
    let err = check_guide("# x\n\n## Run\n", &defined).unwrap_err();
    assert!(err.contains(GUIDE_SECTION), "{err}");
}

// ---- .env.example ------------------------------------------------------------------------------

/// A `NAME=value` line, or a commented-out `# NAME=value`: (name, value, commented out).
fn variable_line(line: &str) -> Option<(&str, &str, bool)> {
    let (body, commented) = match line.strip_prefix('#') {
        Some(rest) => (rest.strip_prefix(' ').unwrap_or(rest), true),
        None => (line, false),
    };
    let (name, value) = body.split_once('=')?;
    let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then_some((name, value, commented))
}

#[test]
fn the_tool_variables_are_read_where_named_and_are_no_configuration() {
    for (name, reader) in TOOL_VARIABLES {
        assert!(
            !VARIABLES.iter().any(|v| v.name == name),
            "{name} is in lighttech::config::VARIABLES: drop it from TOOL_VARIABLES"
        );
        assert!(
            read(reader).contains(name),
            "{reader} no longer reads or passes {name}: drop it from TOOL_VARIABLES and .env.example"
        );
    }
    for name in AWS_CREDENTIALS {
        assert!(
            TOOL_VARIABLES.iter().any(|(n, _)| *n == name),
            "{name} is passed to the api, so .env.example lists it (TOOL_VARIABLES)"
        );
    }
}

#[test]
fn the_env_example_lists_exactly_the_configuration_and_tool_variables_each_with_a_comment() {
    let example = read(".env.example");
    let lines: Vec<&str> = example.lines().collect();
    let mut listed = BTreeMap::new();
    for (n, line) in lines.iter().enumerate() {
        let Some((name, value, commented)) = variable_line(line) else {
            continue;
        };
        assert!(
            listed.insert(name, (value, commented)).is_none(),
            ".env.example lists {name} twice"
        );
        let above = n.checked_sub(1).map(|k| lines[k]).unwrap_or_default();
        assert!(
            above.starts_with('#') && variable_line(above).is_none(),
            ".env.example: {name} (line {}) has no comment line directly above",
            n + 1
        );
    }
    let listed_names: BTreeSet<&str> = listed.keys().copied().collect();
    let expected: BTreeSet<&str> = VARIABLES
        .iter()
        .map(|v| v.name)
        .chain(TOOL_VARIABLES.iter().map(|(name, _)| *name))
        .collect();
    assert_eq!(
        listed_names, expected,
        ".env.example must list exactly lighttech::config::VARIABLES and TOOL_VARIABLES"
    );
    for (name, _) in TOOL_VARIABLES {
        assert_eq!(
            listed[name],
            ("", true),
            ".env.example lists {name} commented out and empty: it has no LightTech default, \
             and no credential or password belongs in the file"
        );
    }
    for v in VARIABLES {
        let (value, commented) = listed[v.name];
        match v.default {
            Some(default) => assert_eq!(
                (value, commented),
                (default, false),
                ".env.example sets {} to its default",
                v.name
            ),
            None => assert_eq!(value, "", "{} has no default, so no value", v.name),
        }
    }
    assert!(
        example.contains("openssl rand -hex 32"),
        ".env.example says how to generate a SECRET_KEY"
    );
    for form in [
        "sqlite://PATH",
        "postgres://USER:PASSWORD@HOST:PORT/DB",
        "dynamodb://TABLE",
    ] {
        assert!(
            example.contains(form),
            ".env.example's DATABASE_URL comment lacks {form}"
        );
    }
}

#[test]
fn the_env_example_read_as_a_dotenv_file_is_the_default_configuration() {
    let map: HashMap<String, String> = dotenvy::from_path_iter(root().join(".env.example"))
        .expect(".env.example exists")
        .map(|item| item.expect(".env.example parses as a .env file"))
        .collect();
    assert!(map.contains_key("DATABASE_URL") && map.contains_key("SECRET_KEY"));
    let from_example = Config::from_map(&map).expect(".env.example is a valid configuration");
    let defaults = Config::from_map(&HashMap::new()).unwrap();
    assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
    assert!(
        from_example.secret_key.is_none(),
        "an empty SECRET_KEY is unset"
    );
}
