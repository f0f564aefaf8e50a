//! Logging: JSON lines by default (what CloudWatch wants), human-readable with `DEBUG=True`.

use std::error::Error;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops. `RUST_LOG` filters; without
/// it, `AWS_LAMBDA_LOG_LEVEL` (which Lambda sets from the function's `ApplicationLogLevel`)
/// gives the level; without either, `info`.
pub fn init(debug: bool) {
    let directive = default_directive(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
    );
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = !debug
        || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// The filter directive: `RUST_LOG` when set (a developer's explicit filter), else Lambda's
/// level (`TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `FATAL`; `FATAL` is `error`, tracing's
/// highest), else `info`.
fn default_directive(rust_log: Option<&str>, lambda_level: Option<&str>) -> String {
    if let Some(filter) = rust_log.filter(|f| !f.trim().is_empty()) {
        return filter.to_owned();
    }
    let level = match lambda_level
        .map(|l| l.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("WARN") => "warn",
        Some("ERROR" | "FATAL") => "error",
        _ => "info",
    };
    level.to_owned()
}

/// An error and all its sources on one line: `outer: inner: root`.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::default_directive;

    #[test]
    fn lambda_log_level_sets_the_level_unless_rust_log_is_given() {
        assert_eq!(default_directive(None, None), "info");
        assert_eq!(default_directive(None, Some("ERROR")), "error");
        assert_eq!(default_directive(None, Some("FATAL")), "error");
        assert_eq!(default_directive(None, Some("debug")), "debug");
        assert_eq!(default_directive(None, Some("WARN")), "warn");
        assert_eq!(default_directive(None, Some("TRACE")), "trace");
        assert_eq!(default_directive(None, Some("nonsense")), "info");
        assert_eq!(
            default_directive(Some("lighttech=debug"), Some("ERROR")),
            "lighttech=debug"
        );
        assert_eq!(default_directive(Some(" "), Some("WARN")), "warn");
    }
}
