//! The load run (`lighttech-bench --base-url URL`): for each selected workload, prepare its data, load the server through
//! goose, settle what the run could not see, check the money invariant, and record the numbers.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use goose::config::GooseConfiguration;
use goose::prelude::*;

use crate::api::{Client, format_money};
use crate::results::{self, Invariant, RunResults, WorkloadResult};
use crate::workload::{self, Ledger, Shared, Sizes, Workload};

/// What `run` was asked to do, defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_url: String,
    pub workloads: Vec<Workload>,
    pub sizes: Sizes,
    pub duration: Duration,
    pub smoke: bool,
    pub label: String,
    pub title: String,
    pub note: Option<String>,
    pub results: Option<PathBuf>,
    pub report_dir: Option<PathBuf>,
    pub goose_tables: bool,
    pub goose_args: Vec<String>,
    pub command: String,
}

/// Runs every selected workload in turn. An error is returned for a broken invariant, and in
/// smoke mode for any failed request or a workload that completed no request.
pub async fn run(settings: Settings) -> Result<RunResults> {
    let client = Client::new(&settings.base_url)?;
    client.health().await?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    eprintln!(
        "lighttech-bench: {} workload(s) against {} (run {run_id}), {} connections, {} s each",
        settings.workloads.len(),
        settings.base_url,
        settings.sizes.concurrency,
        settings.duration.as_secs()
    );
    if let Some(dir) = &settings.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut all = RunResults {
        label: settings.label.clone(),
        title: settings.title.clone(),
        note: settings.note.clone(),
        concurrency: settings.sizes.concurrency,
        duration_s: settings.duration.as_secs(),
        accounts: settings.sizes.accounts,
        history_ops: settings.sizes.history_ops,
        smoke: settings.smoke,
        command: settings.command.clone(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        workloads: Vec::new(),
    };
    let mut problems = Vec::new();
    for &w in &settings.workloads {
        let (result, samples) = run_one(&settings, &client, w, &run_id).await?;
        results::print_table(&result);
        let inv = &result.invariant;
        if !inv.ok {
            let message = format!(
                "{w}: MONEY INVARIANT BROKEN: balances sum to {}, expected {} (opening {} + deposits {} - withdrawals {}; {} unsettled)",
                inv.actual, inv.expected, inv.opening, inv.deposited, inv.withdrawn, inv.unsettled
            );
            eprintln!("lighttech-bench: {message}");
            problems.push(message);
        }
        if settings.smoke {
            if result.total.errors > 0 {
                problems.push(format!(
                    "{w}: {} failed request(s): {}",
                    result.total.errors,
                    samples.join(" | ")
                ));
            }
            if result.total.count == result.total.errors {
                problems.push(format!("{w}: no request succeeded"));
            }
        }
        all.workloads.push(result);
        if let Some(path) = &settings.results {
            write_results(path, &all)?;
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("lighttech-bench: {p}");
        }
        bail!("{} problem(s), see above", problems.len());
    }
    if settings.smoke {
        let requests: u64 = all.workloads.iter().map(|w| w.total.count).sum();
        eprintln!(
            "lighttech-bench: smoke passed: {} workloads, {requests} requests, no errors, the money invariant held after each",
            all.workloads.len()
        );
    }
    Ok(all)
}

fn write_results(path: &Path, results: &RunResults) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(results)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// One workload: its result and a few samples of failed answers.
async fn run_one(
    settings: &Settings,
    client: &Client,
    w: Workload,
    run_id: &str,
) -> Result<(WorkloadResult, Vec<String>)> {
    let started = Instant::now();
    let accounts = w.accounts(&settings.sizes);
    eprintln!("[{w}] preparing {accounts} accounts");
    let shared = Arc::new(
        workload::prepare(client, w, &settings.sizes, run_id)
            .await
            .with_context(|| format!("preparing {w}"))?,
    );
    eprintln!(
        "[{w}] prepared in {:.1} s; loading for {} s",
        started.elapsed().as_secs_f64(),
        settings.duration.as_secs()
    );

    let mut reports = Vec::new();
    let mut args: Vec<String> = vec![
        "--host".into(),
        settings.base_url.clone(),
        "--users".into(),
        settings.sizes.concurrency.to_string(),
        // Every user starts at once; goose resets its metrics when the last one has started.
        "--increase-rate".into(),
        "1000".into(),
        "--run-time".into(),
        settings.duration.as_secs().to_string(),
        // No telnet controller (the WebSocket one is off by default): nothing listens, so
        // runs never collide on a port.
        "--no-telnet".into(),
        "--quiet".into(),
    ];
    if !settings.goose_tables {
        args.push("--no-print-metrics".into());
    }
    if let Some(dir) = &settings.report_dir {
        for ext in ["html", "json"] {
            let file = format!("{w}.{ext}");
            args.push("--report-file".into());
            args.push(dir.join(&file).display().to_string());
            reports.push(file);
        }
    }
    args.extend(settings.goose_args.iter().cloned());
    let config = GooseConfiguration::parse_args_default(&args)
        .map_err(|e| anyhow::anyhow!("goose options: {e}"))?;

    let progress = tokio::spawn(progress(
        shared.clone(),
        w,
        settings.duration,
        settings.smoke,
    ));
    let metrics = GooseAttack::initialize_with_config(config)
        .map_err(|e| anyhow::anyhow!("goose: {e}"))?
        .register_scenario(workload::scenario(shared.clone()))
        .execute()
        .await;
    progress.abort();
    let _ = progress.await;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let metrics = metrics.map_err(|e| anyhow::anyhow!("goose: {e}"))?;

    let unsettled = shared.ledger.settle(client, &shared.accounts).await;
    let invariant = check_invariant(client, &shared, unsettled).await?;

    let seconds = results::measured_seconds(&metrics);
    let (requests, total) = results::request_stats(&metrics, seconds);
    Ok((
        WorkloadResult {
            workload: w.name().to_string(),
            accounts,
            measured_s: seconds,
            requests,
            total,
            cache: shared.cache_stats(),
            invariant,
            reports,
        },
        shared.counters.samples(),
    ))
}

/// Reads every account's balance through the API and compares the sum with what the
/// acknowledged movements say it must be.
async fn check_invariant(client: &Client, shared: &Shared, unsettled: usize) -> Result<Invariant> {
    let tokens: Vec<String> = shared.accounts.iter().map(|a| a.access.clone()).collect();
    let balances = client
        .each(tokens, |client, token| async move {
            client.balance(&token).await
        })
        .await
        .context("reading balances for the money invariant")?;
    Ok(invariant(balances.iter().sum(), &shared.ledger, unsettled))
}

/// The invariant holds when the balances sum to opening + deposits − withdrawals and no
/// write's outcome is unknown.
fn invariant(actual: i64, ledger: &Ledger, unsettled: usize) -> Invariant {
    let expected = ledger.expected();
    Invariant {
        ok: actual == expected && unsettled == 0,
        opening: format_money(ledger.opening.load(Ordering::Relaxed)),
        deposited: format_money(ledger.deposited.load(Ordering::Relaxed)),
        withdrawn: format_money(ledger.withdrawn.load(Ordering::Relaxed)),
        expected: format_money(expected),
        actual: format_money(actual),
        unsettled,
    }
}

/// A live progress line: one rewritten line on a terminal, a line every few seconds otherwise.
async fn progress(shared: Arc<Shared>, w: Workload, duration: Duration, smoke: bool) {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal || smoke { 1 } else { 5 });
    let started = Instant::now();
    let mut last = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let requests = shared.counters.requests.load(Ordering::Relaxed);
        let errors = shared.counters.errors.load(Ordering::Relaxed);
        let rate = (requests - last) as f64 / every.as_secs_f64();
        last = requests;
        let line = format!(
            "[{w}] {:>4.0}/{} s  {requests:>8} requests  {rate:>8.0} req/s  {errors} errors",
            started.elapsed().as_secs_f64(),
            duration.as_secs()
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}   ");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(opening: i64, deposited: i64, withdrawn: i64) -> Ledger {
        let ledger = Ledger::default();
        ledger.opening.store(opening, Ordering::Relaxed);
        ledger.deposited.store(deposited, Ordering::Relaxed);
        ledger.withdrawn.store(withdrawn, Ordering::Relaxed);
        ledger
    }

    #[test]
    fn the_invariant_holds_only_when_the_balances_add_up() {
        let l = ledger(100_000, 2_550, 1_001);
        let held = invariant(101_549, &l, 0);
        assert!(held.ok);
        assert_eq!(held.expected, "1015.49");
        assert_eq!(held.actual, "1015.49");

        let lost = invariant(101_548, &l, 0);
        assert!(!lost.ok, "a cent missing must break it");
        assert!(
            !invariant(101_550, &l, 0).ok,
            "a cent too many must break it"
        );
    }

    #[test]
    fn an_unsettled_write_breaks_the_invariant_even_when_the_sums_agree() {
        let l = ledger(100, 0, 0);
        let result = invariant(100, &l, 1);
        assert!(!result.ok);
        assert_eq!(result.unsettled, 1);
    }
}
