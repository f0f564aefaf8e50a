//! `lighttech-bench password-policy`: the registration password policy, timed in-process over
//! inputs chosen to be its worst (the longest allowed text, substitution-heavy characters, long
//! attributes to compare with, non-ASCII case mappings), so a regression in its cost shows as a
//! number. Argon2 hashing is not part of it: only the checks that run before any hashing.

use std::time::{Duration, Instant};

use clap::Args;
use lighttech::domain::password::validate;
use lighttech::domain::{Email, Username};
use secrecy::SecretString;

/// Options of `password-policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Timed runs of the policy per input.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
}

/// One adversarial input: a password and the attributes it is compared with.
struct Case {
    name: &'static str,
    password: String,
    username: String,
    email: String,
}

fn cases() -> Vec<Case> {
    let plain = |name, password: String| Case {
        name,
        password,
        username: "alice".into(),
        email: "alice@example.com".into(),
    };
    let l33t = "4@8(<{[3&6#91!|7+0$5%2"
        .repeat(7)
        .chars()
        .take(128)
        .collect();
    vec![
        plain("l33t-substitutions-128", l33t),
        plain("one-letter-128", "a".repeat(128)),
        plain("ascii-digits-128", "7".repeat(128)),
        plain("arabic-digits-128", "٣".repeat(128)),
        plain("dotted-capital-i-128", "İ".repeat(128)),
        plain("astral-digits-128", "𝟕".repeat(128)),
        plain("common-password-padded", format!("  {}  ", "PASSWORD")),
        plain(
            "printable-ascii-128",
            (0..128)
                .map(|i| char::from(b'!' + (i % 94) as u8))
                .collect(),
        ),
        Case {
            name: "similar-to-long-attributes",
            password: "ab".repeat(64),
            username: "ab.".repeat(50),
            email: format!("{}@{}example.com", "ab".repeat(32), "ab.".repeat(40)),
        },
    ]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times every case and prints one line per case plus the overall median and worst.
pub fn run(args: &PolicyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    // The common-password list is loaded on first use; load it before timing anything.
    let _ = validate(&SecretString::from("warm up".to_owned()), None, None);
    println!(
        "{:<28} {:>5} {:>10} {:>10} {:>10}",
        "input", "chars", "median µs", "p99 µs", "max µs"
    );
    let mut all = Vec::new();
    for case in cases() {
        let username = Username::parse(&case.username)
            .map_err(|e| anyhow::anyhow!("{}: username {e}", case.name))?;
        let email =
            Email::parse(&case.email).map_err(|e| anyhow::anyhow!("{}: email {e}", case.name))?;
        let password = SecretString::from(case.password.clone());
        let mut times = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            let started = Instant::now();
            let problems = validate(&password, Some(&username), Some(&email));
            times.push(started.elapsed());
            std::hint::black_box(problems);
        }
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{:<28} {:>5} {:>10.1} {:>10.1} {:>10.1}",
            case.name,
            case.password.chars().count(),
            micros(at(0.5)),
            micros(at(0.99)),
            micros(at(1.0)),
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "all inputs: median {:.1} µs, worst {:.1} µs over {} runs",
        micros(all[all.len() / 2]),
        micros(all[all.len() - 1]),
        all.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_is_a_valid_registration_apart_from_its_password() {
        for case in cases() {
            assert!(Username::parse(&case.username).is_ok(), "{}", case.name);
            assert!(Email::parse(&case.email).is_ok(), "{}", case.name);
            assert!(case.password.chars().count() <= 128, "{}", case.name);
        }
    }
}
