//! `lighttech-bench token-verify`: the cost of verifying one access token, in-process, as
//! every authenticated request pays it. Three cases: a token of the current key and one of the
//! previous key (the key set of a rotation's overlap), and the baseline of a token with no
//! `kid` verified with the single key (`jsonwebtoken` alone, as before tokens named their key).

use std::time::{Duration, Instant};

use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use lighttech::auth::{TokenService, TokenType};
use lighttech::domain::{SessionId, Timestamp, TokenId, UserId};
use serde::{Deserialize, Serialize};

/// Options of `token-verify`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Timed verifications per case.
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
}

const ISSUER: &str = "lighttech";
const CURRENT: &[u8] = b"bench-current-key-0123456789abcdef0123456789";
const PREVIOUS: &[u8] = b"bench-previous-key-0123456789abcdef012345678";

/// The claims the service signs, for the baseline.
#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    jti: String,
    typ: String,
    iat: i64,
    exp: i64,
    iss: String,
}

fn time(iterations: usize, mut verify: impl FnMut() -> bool) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let ok = verify();
        times.push(started.elapsed());
        anyhow::ensure!(ok, "a verification failed");
    }
    times.sort();
    Ok(times)
}

/// Times each case and prints one line per case: token length, mean, median, p99.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iterations > 0, "--iterations must be at least 1");
    let now = Timestamp::now();
    let (user, session) = (UserId::new(), SessionId::new());
    let rotated = TokenService::with_previous(CURRENT, Some(PREVIOUS), ISSUER);
    let before = TokenService::new(PREVIOUS, ISSUER);
    let issue = |service: &TokenService| {
        service.issue(TokenType::Access, user, session, TokenId::new(), now, 600)
    };
    let current = issue(&rotated)?;
    let previous = issue(&before)?;

    let claims = Claims {
        sub: user.to_string(),
        sid: session.to_string(),
        jti: TokenId::new().to_string(),
        typ: "access".into(),
        iat: now.unix_seconds(),
        exp: now.unix_seconds() + 600,
        iss: ISSUER.into(),
    };
    let baseline = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(CURRENT),
    )?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    validation.set_issuer(&[ISSUER]);
    let key = DecodingKey::from_secret(CURRENT);

    println!(
        "{:<34} {:>6} {:>9} {:>10} {:>8}",
        "case", "bytes", "mean µs", "median µs", "p99 µs"
    );
    type Verify<'a> = Box<dyn Fn() -> bool + 'a>;
    let cases: [(&str, &str, Verify); 3] = [
        (
            "no kid, one key (baseline)",
            &baseline,
            Box::new(|| {
                jsonwebtoken::decode::<Claims>(&baseline, &key, &validation)
                    .is_ok_and(|d| d.claims.typ == "access" && d.claims.iat <= now.unix_seconds())
            }),
        ),
        (
            "kid of the current key",
            &current,
            Box::new(|| rotated.verify(&current, TokenType::Access, now).is_ok()),
        ),
        (
            "kid of the previous key",
            &previous,
            Box::new(|| rotated.verify(&previous, TokenType::Access, now).is_ok()),
        ),
    ];
    for (name, token, verify) in cases {
        // Warm the caches before timing.
        time(args.iterations / 10 + 1, &verify)?;
        let times = time(args.iterations, &verify)?;
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:<34} {:>6} {:>9.2} {:>10.2} {:>8.2}",
            token.len(),
            micros(mean),
            micros(at(0.5)),
            micros(at(0.99)),
        );
    }
    Ok(())
}
