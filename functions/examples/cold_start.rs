//! Cold start of every function binary, measured the way Lambda experiences it: each spawn is a
//! fresh process against a stand-in Runtime API on loopback (`tests/lambda/support/runtime_api.rs`),
//! on the embedded SQLite store. Two numbers per spawn:
//!
//! - **init**: process spawn until the runtime first asks for an event
//!   (`GET /runtime/invocation/next`) — what Lambda reports as Init Duration;
//! - **first response**: process spawn until the answer to a first, cheap request (the
//!   function's first route without credentials or body: a `400`/`401`, or health's `200`),
//!   so password hashing does not blur the start-up.
//!
//! ```sh
//! local/cold-start.sh            # builds the release binaries, then runs this
//! cargo run -p lighttech-functions --example cold_start -- --bin-dir target/release --spawns 15
//! ```

#[path = "../../tests/lambda/support/runtime_api.rs"]
mod runtime_api;

use std::path::PathBuf;
use std::time::Duration;

use lighttech::http::Function;
use runtime_api::{Event, Lambda, binary_path};

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn usage() -> ! {
    eprintln!("usage: cold_start [--bin-dir DIR] [--spawns N] [--only NAME[,NAME…]]");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut bin_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let mut spawns = 11usize;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bin-dir" => bin_dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--spawns" => {
                spawns = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 1)
                    .unwrap_or_else(|| usage())
            }
            "--only" => {
                only = args
                    .next()
                    .map(|list| list.split(',').map(str::to_owned).collect())
            }
            _ => usage(),
        }
    }
    let functions: Vec<Function> = Function::ALL
        .into_iter()
        .filter(|f| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == f.name()))
        })
        .collect();

    let dir = tempfile::tempdir().expect("temporary directory");
    let env: Vec<(String, String)> = [
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("lighttech.db").display()),
        ),
        (
            "SECRET_KEY",
            "cold-start-benchmark-signing-key-0123456789".to_owned(),
        ),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    // The database exists before the measured starts, as a table does in AWS.
    let first = Function::ALL[0];
    let mut creator = Lambda::start(
        &binary_path(&bin_dir, first.name()),
        first.name(),
        &env,
        dir.path(),
    )
    .await;
    creator.initialized().await;
    creator.stop().await;

    println!(
        "binaries: {} ({} spawns per function, median; x86_64 host: {})",
        bin_dir.display(),
        spawns,
        std::env::consts::ARCH
    );
    println!(
        "{:<20} {:>10} {:>12} {:>16} {:>6}",
        "function", "size KiB", "init ms", "first resp. ms", "status"
    );
    for function in functions {
        let binary = binary_path(&bin_dir, function.name());
        let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        let route = function.routes().next().expect("a route");
        let path: String = route
            .pattern
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "00000000-0000-4000-8000-000000000000"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut inits = Vec::with_capacity(spawns);
        let mut firsts = Vec::with_capacity(spawns);
        let mut status = 0;
        for _ in 0..spawns {
            let mut lambda = Lambda::start(&binary, function.name(), &env, dir.path()).await;
            let init = lambda.initialized().await;
            let event = Event::new(&format!("{} {}", route.method, route.pattern), &path);
            let response = lambda.invoke(&event.to_json()).await;
            firsts.push(lambda.spawned_at.elapsed());
            inits.push(init);
            status = response.status;
            lambda.stop().await;
        }
        println!(
            "{:<20} {:>10} {:>12} {:>16} {:>6}",
            function.name(),
            size / 1024,
            ms(median(&mut inits)),
            ms(median(&mut firsts)),
            status
        );
    }
}
