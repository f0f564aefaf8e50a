//! Machine-readable results: what one `run` writes (one file per backend) and `report` reads.
//! Latencies come from goose's own per-request timing buckets (microsecond resolution).

use std::collections::BTreeMap;

use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData, TimeBuckets};
use goose::test_plan::TestPlanStepAction;
use serde::{Deserialize, Serialize};

use crate::workload::CacheStats;

/// One invocation of `lighttech-bench run`: one server, one backend, several workloads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    /// Short name of the backend configuration (`sqlite`, `postgres`, ...).
    pub label: String,
    /// What was measured, for the report's headings.
    pub title: String,
    /// A caveat printed with the numbers (e.g. emulator-bound).
    #[serde(default)]
    pub note: Option<String>,
    pub concurrency: usize,
    pub duration_s: u64,
    pub accounts: usize,
    pub history_ops: usize,
    pub smoke: bool,
    /// The command line that produced the file.
    pub command: String,
    pub started_at: String,
    pub workloads: Vec<WorkloadResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: String,
    pub accounts: usize,
    /// Seconds during which every user was running (goose resets its metrics when the last
    /// user has started): the denominator of every rate.
    pub measured_s: f64,
    /// One row per request kind, by goose's request name (`POST deposit`).
    pub requests: Vec<RequestStats>,
    /// Every request of the workload together.
    pub total: RequestStats,
    #[serde(default)]
    pub cache: Option<CacheStats>,
    pub invariant: Invariant,
    /// Goose's own reports of this workload: file names inside `--report-dir`.
    #[serde(default)]
    pub reports: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestStats {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Responses by status (`"0"`: no response at all).
    pub status_codes: BTreeMap<String, u64>,
}

/// The money invariant after the run: sum of balances = opening + deposits − withdrawals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invariant {
    pub ok: bool,
    pub opening: String,
    pub deposited: String,
    pub withdrawn: String,
    pub expected: String,
    pub actual: String,
    /// Writes whose outcome could not be settled (the invariant cannot be exact then).
    pub unsettled: usize,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn stats(
    name: &str,
    timing: &GooseRequestMetricTimingData,
    errors: u64,
    status_codes: BTreeMap<String, u64>,
    seconds: f64,
) -> RequestStats {
    let count = timing.counter as u64;
    let rate = if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    };
    let percentile = |p: f32| {
        if count == 0 {
            0.0
        } else {
            ms(timing.percentile_us(p))
        }
    };
    RequestStats {
        name: name.to_string(),
        count,
        errors,
        rps: rate,
        mean_ms: if count == 0 { 0.0 } else { timing.average_ms() },
        p50_ms: percentile(0.5),
        p90_ms: percentile(0.9),
        p99_ms: percentile(0.99),
        max_ms: ms(timing.maximum_time_us),
        status_codes,
    }
}

/// Adds `from`'s times to `into`.
fn merge(into: &mut GooseRequestMetricTimingData, from: &GooseRequestMetricTimingData) {
    if from.counter == 0 {
        return;
    }
    let mut buckets = std::mem::take(&mut into.times_us);
    for (&bucket, &count) in from.times_us.iter() {
        let current = buckets.get(&bucket).copied().unwrap_or(0);
        buckets.insert(bucket, current + count);
    }
    into.times_us = buckets;
    if into.counter == 0 || from.minimum_time_us < into.minimum_time_us {
        into.minimum_time_us = from.minimum_time_us;
    }
    into.maximum_time_us = into.maximum_time_us.max(from.maximum_time_us);
    into.total_time_us += from.total_time_us;
    into.counter += from.counter;
}

/// Seconds during which all users ran: from the last time goose reached full strength
/// (where it resets its metrics) to the step after it. Falls back to goose's whole seconds.
pub fn measured_seconds(metrics: &GooseMetrics) -> f64 {
    let history = &metrics.history;
    let start = history
        .iter()
        .rposition(|step| matches!(step.action, TestPlanStepAction::Maintaining));
    if let Some(i) = start
        && let Some(next) = history.get(i + 1)
    {
        let span = next.timestamp - history[i].timestamp;
        if let Some(us) = span.num_microseconds()
            && us > 0
        {
            return us as f64 / 1e6;
        }
    }
    metrics.duration as f64
}

/// One row per goose request, sorted by name, and the workload's total.
pub fn request_stats(metrics: &GooseMetrics, seconds: f64) -> (Vec<RequestStats>, RequestStats) {
    let mut names: Vec<&String> = metrics.requests.keys().collect();
    names.sort();
    let mut rows = Vec::new();
    let mut all = GooseRequestMetricTimingData {
        times_us: TimeBuckets::new(),
        ..Default::default()
    };
    let mut all_errors = 0;
    let mut all_codes: BTreeMap<String, u64> = BTreeMap::new();
    for name in names {
        let aggregate = &metrics.requests[name];
        let codes: BTreeMap<String, u64> = aggregate
            .status_code_counts
            .iter()
            .map(|(code, n)| (code.to_string(), *n as u64))
            .collect();
        for (code, n) in &codes {
            *all_codes.entry(code.clone()).or_default() += n;
        }
        let errors = aggregate.fail_count as u64;
        all_errors += errors;
        merge(&mut all, &aggregate.raw_data);
        rows.push(stats(name, &aggregate.raw_data, errors, codes, seconds));
    }
    let total = stats("all", &all, all_errors, all_codes, seconds);
    (rows, total)
}

/// The workload summary printed after each run.
pub fn print_table(result: &WorkloadResult) {
    println!(
        "{:<22} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        format!("{} ({:.1} s)", result.workload, result.measured_s),
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    let mut rows: Vec<&RequestStats> = result.requests.iter().collect();
    if result.requests.len() > 1 {
        rows.push(&result.total);
    }
    for row in rows {
        println!(
            "  {:<20} {:>9} {:>7} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            row.name,
            row.count,
            row.errors,
            row.rps,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.max_ms
        );
    }
    if let Some(cache) = &result.cache {
        println!(
            "  history cache: {} hits, {} misses",
            cache.hits, cache.misses
        );
    }
    let inv = &result.invariant;
    println!(
        "  money invariant: {} (balances {} = opening {} + deposits {} - withdrawals {} = {}{})",
        if inv.ok { "holds" } else { "BROKEN" },
        inv.actual,
        inv.opening,
        inv.deposited,
        inv.withdrawn,
        inv.expected,
        if inv.unsettled > 0 {
            format!("; {} writes unsettled", inv.unsettled)
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(times_us: &[u64]) -> GooseRequestMetricTimingData {
        let mut data = GooseRequestMetricTimingData::default();
        let mut buckets = TimeBuckets::new();
        for &t in times_us {
            // Exact buckets below 128 µs: the bucket is the time itself.
            let current = buckets.get(&t).copied().unwrap_or(0);
            buckets.insert(t, current + 1);
            if data.counter == 0 || t < data.minimum_time_us {
                data.minimum_time_us = t;
            }
            data.maximum_time_us = data.maximum_time_us.max(t);
            data.total_time_us += t;
            data.counter += 1;
        }
        data.times_us = buckets;
        data
    }

    #[test]
    fn merging_keeps_every_time_and_the_extremes() {
        let mut all = GooseRequestMetricTimingData::default();
        merge(&mut all, &timing(&[10, 20, 30]));
        merge(&mut all, &timing(&[5, 20, 100]));
        assert_eq!(all.counter, 6);
        assert_eq!(all.minimum_time_us, 5);
        assert_eq!(all.maximum_time_us, 100);
        assert_eq!(all.total_time_us, 185);
        assert_eq!(all.times_us.get(&20), Some(&2));
    }

    #[test]
    fn rates_and_percentiles_come_from_the_timing_buckets() {
        let times: Vec<u64> = (1..=100).collect();
        let row = stats("GET x", &timing(&times), 3, BTreeMap::new(), 2.0);
        assert_eq!(row.count, 100);
        assert_eq!(row.errors, 3);
        assert!((row.rps - 50.0).abs() < 1e-9);
        assert!((row.p50_ms - 0.050).abs() < 0.002, "{}", row.p50_ms);
        assert!((row.p99_ms - 0.099).abs() < 0.002, "{}", row.p99_ms);
        assert!((row.max_ms - 0.100).abs() < 1e-9);
    }

    #[test]
    fn an_empty_timing_gives_zeros_not_nan() {
        let row = stats("GET x", &timing(&[]), 0, BTreeMap::new(), 0.0);
        assert_eq!(row.rps, 0.0);
        assert_eq!(row.mean_ms, 0.0);
        assert_eq!(row.p99_ms, 0.0);
    }
}
