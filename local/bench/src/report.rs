//! `lighttech-bench report`: BENCHMARKS.md from a run directory of `local/bench/run-all.sh`.
//!
//! The run directory holds `meta.json` (machine, versions, the command, the order of the
//! backends and each server's settings) and `results/<label>.json` (one `RunResults` per
//! backend). Every number in the report comes from those files. Sections the lead writes by
//! hand live between `<!-- manual: NAME -->` and `<!-- /manual: NAME -->` and are carried over
//! from the existing file when it is written again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::results::{RequestStats, RunResults, WorkloadResult};
use crate::workload::Workload;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run directory written by local/bench/run-all.sh (meta.json, results/*.json).
    #[arg(long, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// The report to write; its hand-written sections are kept.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// The latency chart to show (written by local/bench/plot.py).
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
}

/// What run-all.sh records about the machine and the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Meta {
    pub started_at: String,
    pub finished_at: String,
    pub command: String,
    /// `[name, value]` pairs, in the order they are shown.
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    /// Backend labels, in the order they ran.
    pub order: Vec<String>,
    /// Each backend's server settings, as `VARIABLE=value` words.
    pub servers: BTreeMap<String, String>,
}

/// The original Django service's figures (wrk, 16 connections, 15 s, on a 2-core machine with
/// PostgreSQL 15 and Redis; gunicorn sync workers).
struct Original {
    what: &'static str,
    workload: Workload,
    request: &'static str,
    rps: f64,
    latency: &'static str,
    factor: f64,
}

const ORIGINAL: [Original; 4] = [
    Original {
        what: "deposit",
        workload: Workload::Deposit,
        request: "POST deposit",
        rps: 126.0,
        latency: "p50 124 ms, p99 ~186 ms",
        factor: 20.0,
    },
    Original {
        what: "transfer",
        workload: Workload::Transfer,
        request: "POST transfer",
        rps: 107.0,
        latency: "—",
        factor: 20.0,
    },
    Original {
        what: "history, cached (100 operations a page)",
        workload: Workload::HistoryHit,
        request: "GET history",
        rps: 173.0,
        latency: "p50 ~92 ms",
        factor: 20.0,
    },
    Original {
        what: "login",
        workload: Workload::Login,
        request: "POST login",
        rps: 9.0,
        latency: "—",
        factor: 5.0,
    },
];

/// The p99 target for every non-login endpoint on the embedded store at 16 connections.
const P99_TARGET_MS: f64 = 5.0;

/// Runs of at least this many seconds per workload count as the benchmark of record.
const RECORD_SECONDS: u64 = 15;
/// The label of the runs on the moto emulator, which are short on purpose.
const EMULATOR_LABEL: &str = "dynamodb";

/// The hand-written sections, with the placeholder each starts as.
const MANUAL: [(&str, &str, &str); 4] = [
    (
        "notes",
        "Notes",
        "_Observations on these numbers: what limits each workload, anything unusual during the run._\n",
    ),
    (
        "lambda",
        "Lambda cold starts and binary sizes",
        "_To be filled in from `local/cold-start.sh` (spawn to init and to first response, per function) and the sizes of the arm64 binaries `local/sam-build.sh` builds._\n",
    ),
    (
        "dynamodb-capacity",
        "DynamoDB capacity",
        "_To be filled in: WCU/RCU per operation (register, login, deposit, withdraw, transfer, balance, a history page; transactional writes cost 2 WCU per item), the single-item ceiling of a hot account (about 1,000 WCU/s per partition, so roughly 500 transactional updates a second to one account) and what the design does about it._\n",
    ),
    (
        "profile",
        "Profile: before and after",
        "_To be filled in: where the time goes under load (`perf` / flamegraphs of the release server), what was changed, and the numbers before and after (same command, same machine)._\n",
    ),
];

pub fn write(args: &ReportArgs) -> Result<()> {
    let meta_path = args.run_dir.join("meta.json");
    let meta: Meta = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("reading {}", meta_path.display()))?,
    )
    .with_context(|| format!("parsing {}", meta_path.display()))?;
    let runs = load_runs(&args.run_dir, &meta.order)?;
    if runs.is_empty() {
        bail!("no results in {}", args.run_dir.join("results").display());
    }
    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    let chart = args
        .chart
        .as_ref()
        .map(|c| link_from(&args.output, c))
        .filter(|_| args.chart.as_ref().is_some_and(|c| c.exists()));
    let text = render(&meta, &runs, chart.as_deref(), &manual_sections(&previous));
    std::fs::write(&args.output, text)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// The results files, in the order of `order`, then any others by name.
fn load_runs(run_dir: &Path, order: &[String]) -> Result<Vec<RunResults>> {
    let dir = run_dir.join("results");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for file in files {
        let run: RunResults = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("parsing {}", file.display()))?;
        runs.push(run);
    }
    runs.sort_by_key(|r| {
        order
            .iter()
            .position(|label| *label == r.label)
            .unwrap_or(usize::MAX)
    });
    Ok(runs)
}

/// `chart` as a link from the directory of `output`.
fn link_from(output: &Path, chart: &Path) -> String {
    let base = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    match (base.canonicalize(), chart.canonicalize()) {
        (Ok(base), Ok(chart)) => match chart.strip_prefix(&base) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => chart.display().to_string(),
        },
        _ => chart.display().to_string(),
    }
}

/// The hand-written sections of an existing report, by name.
pub fn manual_sections(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- manual: ") {
        let after = &rest[start + "<!-- manual: ".len()..];
        let Some(name_end) = after.find(" -->") else {
            break;
        };
        let name = after[..name_end].trim().to_string();
        let body_start = &after[name_end + " -->".len()..];
        let body_start = body_start.strip_prefix('\n').unwrap_or(body_start);
        let close = format!("<!-- /manual: {name} -->");
        let Some(end) = body_start.find(&close) else {
            break;
        };
        found.insert(name, body_start[..end].to_string());
        rest = &body_start[end + close.len()..];
    }
    found
}

fn find(run: &RunResults, workload: Workload) -> Option<&WorkloadResult> {
    run.workloads.iter().find(|w| w.workload == workload.name())
}

fn request<'a>(result: &'a WorkloadResult, name: &str) -> Option<&'a RequestStats> {
    result.requests.iter().find(|r| r.name == name)
}

/// Latency in milliseconds with about three significant digits.
fn ms(value: f64) -> String {
    if value < 1.0 {
        format!("{value:.3}")
    } else if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A rate with thousands separators, one decimal below 100.
fn rate(value: f64) -> String {
    if value < 100.0 {
        return format!("{value:.1}");
    }
    let whole = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn describe(w: Workload) -> &'static str {
    match w {
        Workload::Deposit => {
            "`POST deposit/` of 0.01–100.00 into many accounts (each connection its own), each with its own `Idempotency-Key`"
        }
        Workload::Withdraw => "`POST withdraw/` of 0.01–1.00 from many funded accounts",
        Workload::Transfer => {
            "`POST transfer/` of 0.01–1.00 from a connection's own account to a random other account"
        }
        Workload::TransferHot => "`POST transfer/` from every account to one hot account",
        Workload::HistoryHit => {
            "`GET operations/?limit=100`, the same page of 100 operations again and again (cache hits)"
        }
        Workload::HistoryMiss => {
            "`GET operations/?limit=100&since=…`, a `since` never asked before (the same 100 operations; cache misses)"
        }
        Workload::Login => {
            "`POST login/` over distinct users, one at a time per username (never throttled); each an argon2id hash"
        }
        Workload::Mixed => {
            "45% `GET balance`, 35% `GET operations/?limit=20`, 8% deposit, 8% transfer, 4% withdraw"
        }
    }
}

/// The command of the run, or the default one.
fn command(meta: &Meta) -> &str {
    if meta.command.is_empty() {
        "local/bench/run-all.sh"
    } else {
        &meta.command
    }
}

/// The report: results first (targets, one table per backend, the chart), then the
/// hand-written sections, then how to reproduce the numbers.
pub fn render(
    meta: &Meta,
    runs: &[RunResults],
    chart: Option<&str>,
    manual: &BTreeMap<String, String>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "<!-- Written by `local/bench/run-all.sh` (`lighttech-bench report`). Text between \
         `<!-- manual: NAME -->` and `<!-- /manual: NAME -->` is kept when the file is written \
         again; everything else is regenerated from the results. -->\n"
    );
    // The DynamoDB runs are short by design (run-all.sh's --dynamodb-duration): they measure the
    // emulator, which serves one request at a time, and moto slows down as its table grows.
    let shortest = runs
        .iter()
        .filter(|r| r.label != EMULATOR_LABEL)
        .map(|r| r.duration_s)
        .min()
        .unwrap_or(0);
    if shortest < RECORD_SECONDS || runs.iter().any(|r| r.smoke) {
        let _ = writeln!(
            s,
            "> **Short trial, not the benchmark of record.** Some workloads ran only {shortest} s \
             (the record uses {RECORD_SECONDS} s or more, on a quiet machine). These numbers show \
             that the pipeline works; do not quote them.\n"
        );
    }
    let _ = writeln!(
        s,
        "Every number below comes from `{}`, run on {} (finished {}). \
         [goose](https://crates.io/crates/goose) loads the release build of `lighttech-local` on \
         the same machine. [How to reproduce](#how-to-reproduce) is at the end; what the \
         profiling taught is in [docs/performance.md](docs/performance.md).\n",
        command(meta),
        meta.started_at,
        meta.finished_at
    );

    comparison(&mut s, runs);

    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "Rates are requests per second while every connection ran. Latencies are milliseconds \
         to the response headers. Errors are requests without the expected status. \u{2713}: the \
         money invariant held after the workload.\n"
    );
    for run in runs {
        backend_section(&mut s, run);
    }
    cache_comparison(&mut s, runs);

    if let Some(chart) = chart {
        let _ = writeln!(s, "## Latency chart\n");
        let _ = writeln!(
            s,
            "p50, p90 and p99 per endpoint and backend, log scale. The dashed line is the 5 ms p99 \
             target of the embedded store.\n"
        );
        let _ = writeln!(
            s,
            "![Latency percentiles per endpoint and backend]({chart})\n"
        );
    }

    for (name, title, placeholder) in MANUAL {
        let _ = writeln!(s, "## {title}\n");
        let body = manual
            .get(name)
            .cloned()
            .unwrap_or_else(|| placeholder.to_string());
        let _ = writeln!(s, "<!-- manual: {name} -->");
        let _ = write!(s, "{body}");
        if !body.ends_with('\n') {
            s.push('\n');
        }
        let _ = writeln!(s, "<!-- /manual: {name} -->\n");
    }

    method(&mut s, meta, runs);
    while s.ends_with("\n\n") {
        s.pop();
    }
    s
}

fn run_by_label<'a>(runs: &'a [RunResults], label: &str) -> Option<&'a RunResults> {
    runs.iter().find(|r| r.label == label)
}

fn comparison(s: &mut String, runs: &[RunResults]) {
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "The original Django service ran on gunicorn sync workers, PostgreSQL 15 and Redis. It \
         was measured with wrk (16 connections, 15 s) on a 2-core machine like this one. \
         Targets: 20× its throughput for deposit, transfer and history on PostgreSQL, and 5× for \
         login.\n"
    );
    let postgres = run_by_label(runs, "postgres");
    let _ = writeln!(
        s,
        "| workload | original req/s | original latency | target req/s | LightTech on PostgreSQL req/s | p50 / p99 ms | × original | target |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---|");
    for o in &ORIGINAL {
        let target = o.rps * o.factor;
        let ours = postgres
            .and_then(|run| find(run, o.workload))
            .and_then(|w| request(w, o.request));
        let (ours_rate, latency, times, verdict) = match ours {
            Some(r) => (
                rate(r.rps),
                format!("{} / {}", ms(r.p50_ms), ms(r.p99_ms)),
                format!("{:.1}×", r.rps / o.rps),
                if r.rps >= target && r.errors == 0 {
                    "met".to_string()
                } else if r.errors > 0 {
                    format!("not met ({} errors)", r.errors)
                } else {
                    "not met".to_string()
                },
            ),
            None => ("not measured".into(), "—".into(), "—".into(), "—".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | ≥ {} ({}×) | {ours_rate} | {latency} | {times} | {verdict} |",
            o.what,
            o.rps,
            o.latency,
            rate(target),
            o.factor,
        );
    }
    let _ = writeln!(s);
    if let Some(pg) = postgres
        && pg.concurrency != 16
    {
        let _ = writeln!(
            s,
            "PostgreSQL ran at {} connections, not the original's 16.\n",
            pg.concurrency
        );
    }
    p99_target(s, runs);
}

/// The p99 verdict on the embedded store, in one paragraph: the numbers are in its table.
fn p99_target(s: &mut String, runs: &[RunResults]) {
    let _ = write!(
        s,
        "**p99 on the embedded store**, target under {P99_TARGET_MS} ms for every non-login \
         request at 16 connections: "
    );
    let Some(sqlite) = run_by_label(runs, "sqlite") else {
        let _ = writeln!(s, "not measured (no embedded-store results).\n");
        return;
    };
    let mut met = 0;
    let mut highest: Option<(&str, &RequestStats)> = None;
    let mut missed = Vec::new();
    for w in &sqlite.workloads {
        if w.workload == Workload::Login.name() {
            continue;
        }
        for r in &w.requests {
            if r.p99_ms < P99_TARGET_MS && r.errors == 0 {
                met += 1;
                if highest.is_none_or(|(_, h)| r.p99_ms > h.p99_ms) {
                    highest = Some((&w.workload, r));
                }
            } else if r.errors > 0 {
                missed.push(format!(
                    "{} `{}` {} ms, {} errors",
                    w.workload,
                    r.name,
                    ms(r.p99_ms),
                    r.errors
                ));
            } else {
                missed.push(format!("{} `{}` {} ms", w.workload, r.name, ms(r.p99_ms)));
            }
        }
    }
    if missed.is_empty() {
        let _ = write!(s, "met by all {met}");
        if let Some((workload, r)) = highest {
            let _ = write!(
                s,
                " (the highest: {workload} `{}`, {} ms)",
                r.name,
                ms(r.p99_ms)
            );
        }
        let _ = write!(s, ".");
    } else {
        let _ = write!(
            s,
            "not met by {}. Met by the other {met}.",
            missed.join("; ")
        );
    }
    if sqlite.concurrency != 16 {
        let _ = write!(
            s,
            " Measured at {} connections, not 16.",
            sqlite.concurrency
        );
    }
    let _ = writeln!(s, "\n");
}

fn method(s: &mut String, meta: &Meta, runs: &[RunResults]) {
    let _ = writeln!(s, "## How to reproduce\n");
    let _ = writeln!(s, "```sh\n{}\n```\n", command(meta));
    let _ = writeln!(
        s,
        "It builds the release server and the harness. For each backend it starts a fresh server \
         (a new SQLite file, a new PostgreSQL database, a new moto server, Redis keys under the \
         run's own prefix). It runs the workloads one after another with `lighttech-bench`, then \
         stops the server. Last it draws the chart (`local/bench/plot.py`) and writes this file \
         (`lighttech-bench report`). Raw results, goose's reports and the logs stay in \
         `local/bench/out/<time of the run>/`. The results behind this file, with each backend's \
         harness command, are copied to `local/bench/report/`.\n"
    );
    let _ = writeln!(
        s,
        "| backend | connections | s per workload | accounts | operations per history account | server settings |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    for run in runs {
        let server = meta
            .servers
            .get(&run.label)
            .map(|env| format!("`{}`", env.replace('|', "\\|")))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {server} |",
            run.title, run.concurrency, run.duration_s, run.accounts, run.history_ops
        );
    }
    let _ = writeln!(s, "\n| workload | what each request does |");
    let _ = writeln!(s, "|---|---|");
    for w in Workload::ALL {
        let _ = writeln!(s, "| `{}` | {} |", w.name(), describe(w));
    }
    let _ = writeln!(
        s,
        "\n- Each goose user is one keep-alive connection. All start at once; the measurement \
         covers the time every connection was running.\n\
         - Each workload first registers, logs in and funds accounts of its own (not measured).\n\
         - After each workload the harness settles any write whose answer it did not see, by \
         sending it again with the same `Idempotency-Key`. Then it checks that the balances sum \
         to the opening deposits plus the deposits minus the withdrawals acknowledged. A \
         mismatch fails the run.\n\
         - Latencies are goose's, with microsecond resolution.\n\
         - The load generator shares the cores with the server and its store, as wrk did for the \
         original service.\n"
    );
    let rows = meta.machine.len().max(meta.versions.len());
    if rows > 0 {
        let _ = writeln!(s, "| machine | | software | version |");
        let _ = writeln!(s, "|---|---|---|---|");
        let pair = |list: &[(String, String)], i: usize| {
            list.get(i)
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap_or_default()
        };
        for i in 0..rows {
            let (mk, mv) = pair(&meta.machine, i);
            let (vk, vv) = pair(&meta.versions, i);
            let _ = writeln!(s, "| {mk} | {mv} | {vk} | {vv} |");
        }
        let _ = writeln!(s);
    }
}

fn backend_section(s: &mut String, run: &RunResults) {
    let _ = writeln!(s, "### {}\n", run.title);
    if let Some(note) = &run.note {
        let _ = writeln!(s, "> {note}\n");
    }
    let _ = writeln!(
        s,
        "| workload | request | req/s | p50 | p90 | p99 | max | errors | requests |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for w in &run.workloads {
        let mark = if w.invariant.ok {
            " \u{2713}"
        } else {
            " **invariant broken**"
        };
        let mut rows: Vec<&RequestStats> = w.requests.iter().collect();
        if w.requests.len() > 1 {
            rows.push(&w.total);
        }
        for (i, r) in rows.iter().enumerate() {
            let name = if i == 0 {
                format!("{}{mark}", w.workload)
            } else {
                String::new()
            };
            let request = if r.name == "all" {
                "all".to_string()
            } else {
                format!("`{}`", r.name)
            };
            let _ = writeln!(
                s,
                "| {name} | {request} | {} | {} | {} | {} | {} | {} | {} |",
                rate(r.rps),
                ms(r.p50_ms),
                ms(r.p90_ms),
                ms(r.p99_ms),
                ms(r.max_ms),
                r.errors,
                r.count
            );
        }
    }
    let caches: Vec<String> = run
        .workloads
        .iter()
        .filter_map(|w| {
            w.cache.as_ref().map(|c| {
                let total = (c.hits + c.misses).max(1);
                format!(
                    "{} {:.1}% ({} of {})",
                    w.workload,
                    100.0 * c.hits as f64 / total as f64,
                    c.hits,
                    c.hits + c.misses
                )
            })
        })
        .collect();
    if !caches.is_empty() {
        let _ = writeln!(
            s,
            "\nHistory cache hits (`X-Cache`): {}.",
            caches.join("; ")
        );
    }
    let _ = writeln!(s);
}

/// History with the in-process cache against the Redis cache, on the same store.
fn cache_comparison(s: &mut String, runs: &[RunResults]) {
    let pairs: Vec<(&RunResults, &RunResults)> = runs
        .iter()
        .filter_map(|redis| {
            let base = redis.label.strip_suffix("-redis")?;
            Some((run_by_label(runs, base)?, redis))
        })
        .collect();
    for (local, redis) in pairs {
        let _ = writeln!(
            s,
            "### History cache: in-process vs Redis ({} vs {})\n",
            local.title, redis.title
        );
        let _ = writeln!(
            s,
            "| workload | request | in-process req/s | Redis req/s | in-process p50 / p99 ms | Redis p50 / p99 ms |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
        for w in &redis.workloads {
            let Some(other) = local.workloads.iter().find(|o| o.workload == w.workload) else {
                continue;
            };
            for r in &w.requests {
                let Some(o) = request(other, &r.name) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {} | {} / {} | {} / {} |",
                    w.workload,
                    r.name,
                    rate(o.rps),
                    rate(r.rps),
                    ms(o.p50_ms),
                    ms(o.p99_ms),
                    ms(r.p50_ms),
                    ms(r.p99_ms)
                );
            }
        }
        let _ = writeln!(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Invariant;

    fn stats(name: &str, rps: f64, p99: f64) -> RequestStats {
        RequestStats {
            name: name.into(),
            count: (rps * 15.0) as u64,
            errors: 0,
            rps,
            mean_ms: p99 / 3.0,
            p50_ms: p99 / 4.0,
            p90_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99 * 2.0,
            status_codes: BTreeMap::new(),
        }
    }

    fn workload(w: Workload, request: &str, rps: f64, p99: f64) -> WorkloadResult {
        let row = stats(request, rps, p99);
        WorkloadResult {
            workload: w.name().into(),
            accounts: 16,
            measured_s: 15.0,
            requests: vec![row.clone()],
            total: RequestStats {
                name: "all".into(),
                ..row
            },
            cache: None,
            invariant: Invariant {
                ok: true,
                opening: "0.00".into(),
                deposited: "0.00".into(),
                withdrawn: "0.00".into(),
                expected: "0.00".into(),
                actual: "0.00".into(),
                unsettled: 0,
            },
            reports: vec![],
        }
    }

    fn run(label: &str, duration_s: u64, workloads: Vec<WorkloadResult>) -> RunResults {
        RunResults {
            label: label.into(),
            title: label.to_uppercase(),
            note: None,
            concurrency: 16,
            duration_s,
            accounts: 128,
            history_ops: 100,
            smoke: false,
            command: "lighttech-bench --base-url http://127.0.0.1:1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            workloads,
        }
    }

    /// A SQLite run of deposits, uncached history reads and logins (which the p99 target leaves
    /// out), with the p99s of the first two.
    fn sqlite_mix(deposit_p99: f64, history_p99: f64) -> RunResults {
        let workloads = vec![
            workload(Workload::Deposit, "POST deposit", 9000.0, deposit_p99),
            workload(Workload::HistoryMiss, "GET history", 5000.0, history_p99),
            workload(Workload::Login, "POST login", 60.0, 400.0),
        ];
        run("sqlite", 15, workloads)
    }

    #[test]
    fn hand_written_sections_survive_a_rewrite() {
        let meta = Meta::default();
        let runs = vec![run("sqlite", 15, vec![])];
        let first = render(&meta, &runs, None, &BTreeMap::new());
        assert!(first.contains("<!-- manual: profile -->\n_To be filled in"));
        let edited = first.replace(
            "<!-- manual: profile -->\n",
            "<!-- manual: profile -->\nThe writer thread was the cost.\n\n| a | b |\n",
        );
        let kept = manual_sections(&edited);
        assert!(kept["profile"].starts_with("The writer thread was the cost.\n\n| a | b |\n"));
        let second = render(&meta, &runs, None, &kept);
        assert!(second.contains("The writer thread was the cost."));
        assert_eq!(second.matches("<!-- manual: profile -->").count(), 1);
        assert_eq!(
            render(&meta, &runs, None, &manual_sections(&second)),
            second
        );
    }

    #[test]
    fn the_comparison_uses_postgres_for_throughput_and_sqlite_for_p99() {
        let postgres = run(
            "postgres",
            15,
            vec![
                workload(Workload::Deposit, "POST deposit", 3000.0, 9.0),
                workload(Workload::Transfer, "POST transfer", 1000.0, 20.0),
            ],
        );
        let sqlite = sqlite_mix(3.0, 7.5);
        let text = render(
            &Meta::default(),
            &[sqlite, postgres],
            None,
            &BTreeMap::new(),
        );
        assert!(
            text.contains("| deposit | 126 | p50 124 ms, p99 ~186 ms | ≥ 2,520 (20×) | 3,000 |"),
            "{text}"
        );
        assert!(text.contains("| 23.8× | met |"), "{text}");
        assert!(text.contains("| 9.3× | not met |"), "{text}");
        assert!(text.contains("history, cached (100 operations a page) | 173 |"));
        assert!(text.contains("| not measured |"));
        assert!(
            text.contains("not met by history-miss `GET history` 7.50 ms. Met by the other 1."),
            "{text}"
        );
        assert!(
            !text.contains("login `POST login` 400 ms"),
            "login is not held to the p99 target"
        );
        assert!(!text.contains("Short trial"));
    }

    #[test]
    fn a_met_p99_target_names_the_highest_request() {
        let sqlite = sqlite_mix(2.5, 4.2);
        let text = render(&Meta::default(), &[sqlite], None, &BTreeMap::new());
        assert!(
            text.contains("met by all 2 (the highest: history-miss `GET history`, 4.20 ms)."),
            "{text}"
        );
    }

    #[test]
    fn a_short_run_is_labelled_as_a_trial() {
        let text = render(
            &Meta::default(),
            &[run("sqlite", 5, vec![])],
            None,
            &BTreeMap::new(),
        );
        assert!(text.contains("Short trial, not the benchmark of record"));
    }

    #[test]
    fn the_short_emulator_runs_do_not_make_the_record_a_trial() {
        let runs = [run("sqlite", 15, vec![]), run(EMULATOR_LABEL, 5, vec![])];
        let text = render(&Meta::default(), &runs, None, &BTreeMap::new());
        assert!(!text.contains("Short trial"), "{text}");
        let runs = [run("sqlite", 5, vec![]), run(EMULATOR_LABEL, 5, vec![])];
        let text = render(&Meta::default(), &runs, None, &BTreeMap::new());
        assert!(text.contains("Short trial"), "{text}");
    }

    #[test]
    fn numbers_are_printed_for_people() {
        assert_eq!(rate(12345.6), "12,346");
        assert_eq!(rate(999.4), "999");
        assert_eq!(rate(47.25), "47.2");
        assert_eq!(ms(0.8123), "0.812");
        assert_eq!(ms(4.567), "4.57");
        assert_eq!(ms(45.67), "45.7");
        assert_eq!(ms(456.7), "457");
    }

    #[test]
    fn a_redis_run_is_compared_with_the_same_store_in_process() {
        let pg = run(
            "postgres",
            15,
            vec![workload(Workload::HistoryHit, "GET history", 4000.0, 4.0)],
        );
        let redis = run(
            "postgres-redis",
            15,
            vec![workload(Workload::HistoryHit, "GET history", 3000.0, 6.0)],
        );
        let text = render(&Meta::default(), &[pg, redis], None, &BTreeMap::new());
        assert!(
            text.contains("### History cache: in-process vs Redis (POSTGRES vs POSTGRES-REDIS)")
        );
        assert!(
            text.contains(
                "| history-hit | `GET history` | 4,000 | 3,000 | 1.00 / 4.00 | 1.50 / 6.00 |"
            ),
            "{text}"
        );
    }
}
