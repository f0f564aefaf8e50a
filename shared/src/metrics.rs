//! What the functions report to CloudWatch besides their logs: the store's transaction
//! conflicts and retries and the `503` answers, per invocation, as embedded metric format
//! (EMF) lines — JSON log lines CloudWatch Logs turns into metrics (namespace `LightTech`,
//! dimension `FunctionName`) with no API call and no agent.
//!
//! The counters are process-wide: a Lambda process serves one invocation at a time, so what
//! accumulates between two [`take`]s is exactly one invocation's. The local server counts too
//! and never reports.

use std::sync::atomic::{AtomicU64, Ordering};

/// The CloudWatch namespace of the embedded metrics.
pub const NAMESPACE: &str = "LightTech";

static TRANSACTION_CONFLICTS: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static SERVICE_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);

/// The store is about to send a write again: after a conflict (another writer changed an item
/// it conditions on, or a transaction in flight held it), or after throttling.
pub fn retried(throttled: bool) {
    if !throttled {
        TRANSACTION_CONFLICTS.fetch_add(1, Ordering::Relaxed);
    }
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

/// A request was answered `503`.
pub fn service_unavailable() {
    SERVICE_UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
}

/// What was counted since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes retried after a conflict.
    pub transaction_conflicts: u64,
    /// Writes retried for any reason (conflicts and throttling).
    pub retries: u64,
    /// `503` answers.
    pub service_unavailable: u64,
}

/// The counts so far, resetting them.
pub fn take() -> Counts {
    Counts {
        transaction_conflicts: TRANSACTION_CONFLICTS.swap(0, Ordering::Relaxed),
        retries: RETRIES.swap(0, Ordering::Relaxed),
        service_unavailable: SERVICE_UNAVAILABLE.swap(0, Ordering::Relaxed),
    }
}

/// The `level` an EMF line carries so that Lambda's log-level filtering keeps it: Lambda drops
/// application lines below the function's `ApplicationLogLevel` and reads a line with no level
/// as `INFO`, so a metric line is at `INFO` or at the configured level if that is higher. (The
/// template's error-line metric filter skips lines with `_aws`, so an `ERROR` one is no error.)
pub fn emf_level(lambda_level: Option<&str>) -> &'static str {
    match lambda_level
        .map(|l| l.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("WARN") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

/// The EMF line for one invocation of `function`, at `level`, or `None` when nothing was
/// counted (a quiet invocation costs no log line; the alarms treat missing data as fine).
pub fn emf_line(function: &str, counts: Counts, timestamp_ms: u64, level: &str) -> Option<String> {
    if counts == Counts::default() {
        return None;
    }
    let metric = |name: &str| serde_json::json!({ "Name": name, "Unit": "Count" });
    Some(
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["FunctionName"]],
                    "Metrics": [
                        metric("TransactionConflicts"),
                        metric("Retries"),
                        metric("ServiceUnavailable"),
                    ],
                }],
            },
            "level": level,
            "FunctionName": function,
            "TransactionConflicts": counts.transaction_conflicts,
            "Retries": counts.retries,
            "ServiceUnavailable": counts.service_unavailable,
        })
        .to_string(),
    )
}

/// Ends one Lambda invocation: counts a `503`, then writes the invocation's EMF line (if any)
/// to stderr, where the runtime's log lines go too. `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda)
/// names the function, so two stacks' functions never share a metric.
pub fn after_invocation(function: &str, status: http::StatusCode) {
    use std::io::Write;

    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        service_unavailable();
    }
    // Lambda sets both variables before the process starts: read once, at the first invocation.
    static ENVIRONMENT: std::sync::OnceLock<(Option<String>, &'static str)> =
        std::sync::OnceLock::new();
    let (name, level) = ENVIRONMENT.get_or_init(|| {
        (
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
            emf_level(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref()),
        )
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(line) = emf_line(name.as_deref().unwrap_or(function), take(), now, level) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_once_and_a_quiet_invocation_writes_nothing() {
        // One test touches the process-wide counters, so no other test races it.
        let _ = take();
        assert_eq!(emf_line("f", take(), 1, "INFO"), None);
        retried(false);
        retried(false);
        retried(true);
        service_unavailable();
        let counts = take();
        assert_eq!(
            counts,
            Counts {
                transaction_conflicts: 2,
                retries: 3,
                service_unavailable: 1
            }
        );
        assert_eq!(take(), Counts::default());
        let line: serde_json::Value = serde_json::from_str(
            &emf_line("lighttech-deposit", counts, 1_700_000_000_000, "WARN").unwrap(),
        )
        .unwrap();
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["FunctionName"]])
        );
        // Every metric the directive names is a number on the line itself (EMF's rule).
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_u64(), "{name}");
        }
        assert_eq!(line["FunctionName"], "lighttech-deposit");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["TransactionConflicts"], 2);
        assert_eq!(line["Retries"], 3);
        assert_eq!(line["ServiceUnavailable"], 1);
    }

    #[test]
    fn a_metric_line_is_never_below_the_level_lambda_keeps() {
        for (configured, level) in [
            (None, "INFO"),
            (Some("TRACE"), "INFO"),
            (Some("DEBUG"), "INFO"),
            (Some("INFO"), "INFO"),
            (Some("warn"), "WARN"),
            (Some("ERROR"), "ERROR"),
            (Some("FATAL"), "FATAL"),
            (Some("nonsense"), "INFO"),
        ] {
            assert_eq!(emf_level(configured), level, "{configured:?}");
        }
    }
}
