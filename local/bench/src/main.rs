//! `lighttech-bench`: the load harness of LightTech and the report built from its results.
//!
//! - `lighttech-bench --base-url URL [--workload NAME]...` loads a running `lighttech-local`
//!   with goose, one workload after another, each on accounts it registers and funds itself
//!   through the public API, and checks the money invariant after each.
//! - `lighttech-bench --base-url URL --smoke` does the same with tiny data for a few seconds
//!   each and fails on any failed request (CI keeps the harness working with it).
//! - `lighttech-bench password-policy` times the registration password policy over adversarial
//!   inputs, in-process; `lighttech-bench token-verify` times the verification of an access
//!   token the same way.
//! - `lighttech-bench report` turns the results of `local/bench/run-all.sh` into BENCHMARKS.md.
//!
//! Layout: `api` (the harness's own client: preparation, settling, balances), `workload` (what
//! each workload does, as a goose scenario), `run` (one workload after another), `results` (the
//! machine-readable numbers, from goose's metrics) and `report` (BENCHMARKS.md).

mod api;
mod policy;
mod report;
mod results;
mod run;
mod tokens;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::workload::{Sizes, Workload};

/// Load harness for a running lighttech-local, and the BENCHMARKS.md report.
#[derive(Debug, Parser)]
#[command(
    name = "lighttech-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the workloads and what each does.
    List,
    /// Write BENCHMARKS.md from a directory of results written by local/bench/run-all.sh.
    Report(report::ReportArgs),
    /// Time the registration password policy in-process over adversarial inputs.
    PasswordPolicy(policy::PolicyArgs),
    /// Time the verification of one access token in-process, with and without key rotation.
    TokenVerify(tokens::TokenArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server to load, e.g. http://127.0.0.1:8000 (a loopback address unless
    /// --allow-non-loopback).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Allow a --base-url that is not on this machine's loopback interface.
    #[arg(long)]
    allow_non_loopback: bool,
    /// A workload to run (repeatable, or comma-separated); default: all, in the listed order.
    #[arg(long = "workload", short = 'w', value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Concurrent connections (goose users) [default: 16; smoke: 4].
    #[arg(long, short = 'c')]
    concurrency: Option<usize>,
    /// How long each workload loads the server once every connection is open, e.g. 15s, 2m
    /// [default: 15s; smoke: 2s]. Accounts log in once, before their workload: runs longer than
    /// the server's access-token lifetime (ACCESS_TOKEN_LIFETIME_MINUTES, 10 by default) fail.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Accounts for the workloads spread over many users (at least one per connection)
    /// [default: 128; smoke: 4].
    #[arg(long)]
    accounts: Option<usize>,
    /// Operations in each history account before the history workloads [default: 100; smoke: 10].
    #[arg(long)]
    history_ops: Option<usize>,
    /// A few seconds per workload on tiny data; fail on any failed request.
    #[arg(long)]
    smoke: bool,
    /// Short name of what is measured, for the results (e.g. sqlite, postgres).
    #[arg(long, default_value = "local")]
    label: String,
    /// Heading for these numbers in the report.
    #[arg(long)]
    title: Option<String>,
    /// A caveat printed with these numbers in the report (e.g. "emulator-bound").
    #[arg(long)]
    note: Option<String>,
    /// Write the machine-readable results (JSON) here.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Write goose's HTML and JSON report of each workload into this directory.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Leave out goose's own metric tables (the harness's summary is always printed).
    #[arg(long)]
    no_goose_tables: bool,
    /// Further goose options, after `--` (e.g. `-- --co-mitigation average`).
    #[arg(last = true, value_name = "GOOSE_OPTIONS")]
    goose_args: Vec<String>,
}

/// `15`, `15s`, `2m`, `1m30s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("not a duration: {text:?} (e.g. 15s, 2m, 1m30s)");
    let mut seconds = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        seconds += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() {
        seconds += digits.parse::<u64>().map_err(|_| bad())?;
    }
    if seconds == 0 {
        return Err(format!("{text:?}: a duration must be at least one second"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Load goes to this machine unless asked otherwise: `localhost` or a loopback address.
fn check_target(base_url: &str, allow_non_loopback: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(base_url).map_err(|e| format!("--base-url {base_url}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--base-url {base_url}: not an http(s) address"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback && !allow_non_loopback {
        return Err(format!(
            "--base-url {base_url} is not a loopback address; pass --allow-non-loopback to load it anyway"
        ));
    }
    Ok(())
}

fn settings(args: RunArgs) -> Result<run::Settings, String> {
    let base_url = args
        .base_url
        .ok_or("--base-url is required (the address of a running lighttech-local)")?;
    check_target(&base_url, args.allow_non_loopback)?;
    let smoke = args.smoke;
    let pick = |given: Option<usize>, normal: usize, small: usize| {
        given.unwrap_or(if smoke { small } else { normal })
    };
    let concurrency = pick(args.concurrency, 16, 4);
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let sizes = Sizes {
        concurrency,
        accounts: pick(args.accounts, 128, 4),
        history_ops: pick(args.history_ops, 100, 10),
    };
    let mut workloads = args.workloads;
    if workloads.is_empty() {
        workloads = Workload::ALL.to_vec();
    }
    let command = std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"') {
                format!("{a:?}")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Ok(run::Settings {
        base_url,
        workloads,
        sizes,
        duration: args
            .duration
            .unwrap_or(Duration::from_secs(if smoke { 2 } else { 15 })),
        smoke,
        title: args.title.unwrap_or_else(|| args.label.clone()),
        label: args.label,
        note: args.note,
        results: args.results,
        report_dir: args.report_dir,
        goose_tables: !(args.no_goose_tables || smoke),
        goose_args: args.goose_args,
        command,
    })
}

fn list() {
    use clap::ValueEnum;
    for w in Workload::ALL {
        let help = w
            .to_possible_value()
            .and_then(|v| v.get_help().map(|h| h.to_string()))
            .unwrap_or_default();
        println!("{:<14} {help}", w.name());
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::List) => {
            list();
            Ok(())
        }
        Some(Command::Report(args)) => report::write(&args),
        Some(Command::PasswordPolicy(args)) => policy::run(&args),
        Some(Command::TokenVerify(args)) => tokens::run(&args),
        None => match settings(cli.run) {
            Ok(settings) => run::run(settings).await.map(|_| ()),
            Err(message) => Err(anyhow::anyhow!(message)),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lighttech-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "0s", "s", "1x", "1.5s", "-1"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// The settings of a run against a local server, with `args` after the address.
    fn settings_with(args: &[&str]) -> run::Settings {
        let base = ["lighttech-bench", "--base-url", "http://127.0.0.1:1"];
        settings(Cli::parse_from(base.iter().chain(args).copied()).run).unwrap()
    }

    #[test]
    fn smoke_mode_shrinks_the_defaults_but_keeps_what_is_given() {
        let s = settings_with(&["--smoke"]);
        assert_eq!(s.sizes.concurrency, 4);
        assert_eq!(s.duration, Duration::from_secs(2));
        assert_eq!(s.workloads.len(), Workload::ALL.len());
        assert!(!s.goose_tables);

        let s = settings_with(&[
            "-w",
            "deposit,login",
            "-c",
            "8",
            "--",
            "--co-mitigation",
            "average",
        ]);
        assert_eq!(s.sizes.concurrency, 8);
        assert_eq!(s.sizes.accounts, 128);
        assert_eq!(s.duration, Duration::from_secs(15));
        assert_eq!(s.workloads, vec![Workload::Deposit, Workload::Login]);
        assert_eq!(s.goose_args, vec!["--co-mitigation", "average"]);
    }

    #[test]
    fn only_loopback_servers_are_loaded_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://127.0.0.5:1/",
            "http://localhost:8000",
            "http://[::1]:8000",
        ] {
            assert!(check_target(ok, false).is_ok(), "{ok} was refused");
        }
        for far in [
            "http://10.0.0.1:8000",
            "http://example.com",
            "http://[2001:db8::1]/",
        ] {
            assert!(check_target(far, false).is_err(), "{far} was accepted");
            assert!(check_target(far, true).is_ok());
        }
        assert!(check_target("ftp://127.0.0.1/", true).is_err());
        assert!(check_target("not a url", true).is_err());
    }

    #[test]
    fn a_run_without_a_server_address_is_refused() {
        let cli = Cli::parse_from(["lighttech-bench", "--smoke"]);
        assert!(settings(cli.run).unwrap_err().contains("--base-url"));
    }
}
