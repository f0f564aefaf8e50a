//! The password policy: Django's default validators, with the contract's length bounds.
//!
//! - MinimumLength (8) and the contract's maximum (128);
//! - UserAttributeSimilarity against username and email (difflib's `quick_ratio` ≥ 0.7);
//! - CommonPassword: zxcvbn's list of common passwords stands in for Django's;
//! - NumericPassword.

use secrecy::{ExposeSecret, SecretString};
use zxcvbn::matching::patterns::MatchPattern;

use super::{Email, Username};

/// Shortest allowed password, in characters.
pub const MIN_LEN: usize = 8;
/// Longest allowed password, in characters.
pub const MAX_LEN: usize = 128;
const MAX_SIMILARITY: f64 = 0.7;

/// Checks a new password against the policy; returns every message that applies. The
/// similarity rule compares with the username and email given: a registration whose username or
/// email is itself invalid still hears about the password, against what it did get right.
pub fn validate(
    password: &SecretString,
    username: Option<&Username>,
    email: Option<&Email>,
) -> Vec<String> {
    let password = password.expose_secret();
    let len = password.chars().count();
    let mut problems = Vec::new();
    if len < MIN_LEN {
        problems.push(format!(
            "This password is too short. It must contain at least {MIN_LEN} characters."
        ));
    }
    if len > MAX_LEN {
        // Nothing else is worth computing on text this long.
        problems.push(format!(
            "This password is too long. It must contain at most {MAX_LEN} characters."
        ));
        return problems;
    }
    let lowered = password.to_lowercase();
    if let Some(attribute) = too_similar(&lowered, username, email) {
        problems.push(format!("The password is too similar to the {attribute}."));
    }
    if is_common(password) {
        problems.push("This password is too common.".to_owned());
    }
    if !password.is_empty() && password.chars().all(|c| c.is_ascii_digit()) {
        problems.push("This password is entirely numeric.".to_owned());
    }
    problems
}

fn too_similar(
    password: &str,
    username: Option<&Username>,
    email: Option<&Email>,
) -> Option<&'static str> {
    let attributes = [
        ("username", username.map(|u| u.as_str().to_lowercase())),
        ("email address", email.map(|e| e.as_str().to_owned())),
    ];
    for (name, value) in attributes
        .iter()
        .filter_map(|(name, value)| Some((*name, value.as_ref()?)))
    {
        let mut parts: Vec<&str> = value
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        parts.push(value);
        for part in parts {
            if exceeds_maximum_length_ratio(password, part) {
                continue;
            }
            if quick_ratio(password, part) >= MAX_SIMILARITY {
                return Some(name);
            }
        }
    }
    None
}

/// Django skips attribute parts so short relative to the password that they cannot be similar.
fn exceeds_maximum_length_ratio(password: &str, value: &str) -> bool {
    let pwd_len = password.chars().count() as f64;
    let value_len = value.chars().count() as f64;
    let length_bound_similarity = MAX_SIMILARITY / 2.0 * pwd_len;
    pwd_len >= 10.0 * value_len && value_len < length_bound_similarity
}

/// difflib's `SequenceMatcher.quick_ratio`: 2·|a ∩ b| / (|a| + |b|) over character multisets.
fn quick_ratio(a: &str, b: &str) -> f64 {
    let total = a.chars().count() + b.chars().count();
    if total == 0 {
        return 1.0;
    }
    let mut avail = std::collections::HashMap::<char, i64>::new();
    for c in b.chars() {
        *avail.entry(c).or_default() += 1;
    }
    let mut matches = 0usize;
    for c in a.chars() {
        let n = avail.entry(c).or_default();
        if *n > 0 {
            matches += 1;
        }
        *n -= 1;
    }
    2.0 * matches as f64 / total as f64
}

/// True when the whole password (case-insensitively) is one entry of zxcvbn's common-password
/// list, which is what Django's CommonPasswordValidator checks against its own list.
fn is_common(password: &str) -> bool {
    let trimmed = password.trim();
    if trimmed.is_empty() {
        return false;
    }
    let entropy = zxcvbn::zxcvbn(trimmed, &[]);
    match entropy.sequence() {
        [only] => matches!(
            &only.pattern,
            MatchPattern::Dictionary(d)
                // zxcvbn keeps its dictionary enum private; its name is all we can compare.
                if format!("{:?}", d.dictionary_name) == "Passwords" && !d.l33t && !d.reversed
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(password: &str) -> Vec<String> {
        validate(
            &SecretString::from(password.to_owned()),
            Some(&Username::parse("alice").unwrap()),
            Some(&Email::parse("alice.wonder@example.com").unwrap()),
        )
    }

    #[test]
    fn a_long_uncommon_password_passes() {
        assert!(check("correct horse battery staple").is_empty());
        assert!(check("Vt8#qLm2!zRw").is_empty());
    }

    #[test]
    fn a_short_password_is_rejected() {
        assert!(check("Xy7#q").iter().any(|m| m.contains("too short")));
    }

    #[test]
    fn a_password_over_128_characters_is_rejected() {
        assert!(
            check(&"Qz7!".repeat(33))
                .iter()
                .any(|m| m.contains("too long"))
        );
    }

    #[test]
    fn an_entirely_numeric_password_is_rejected() {
        assert!(check("80837162534").iter().any(|m| m.contains("numeric")));
    }

    #[test]
    fn common_passwords_are_rejected_in_any_case() {
        for p in ["password", "Password", "12345678", "qwertyuiop", "iloveyou"] {
            assert!(
                check(p).iter().any(|m| m.contains("too common")),
                "{p} passed"
            );
        }
    }

    #[test]
    fn a_password_like_the_username_or_email_is_rejected() {
        assert!(check("alice123").iter().any(|m| m.contains("username")));
        assert!(check("alicewonder").iter().any(|m| m.contains("similar")));
    }

    #[test]
    fn similarity_is_checked_against_whichever_attributes_are_known() {
        let password = SecretString::from("alicewonder".to_owned());
        let username = Username::parse("alicewonder").unwrap();
        let email = Email::parse("alice.wonder@example.com").unwrap();
        let similar = |u, e| {
            validate(&password, u, e)
                .iter()
                .any(|m| m.contains("similar"))
        };
        assert!(similar(Some(&username), None));
        assert!(similar(None, Some(&email)));
        assert!(!similar(None, None));
    }

    #[test]
    fn quick_ratio_matches_difflib() {
        // difflib.SequenceMatcher(a="abcd", b="bcde").quick_ratio() == 0.75
        assert!((quick_ratio("abcd", "bcde") - 0.75).abs() < 1e-9);
        assert!((quick_ratio("aaaa", "a") - 0.4).abs() < 1e-9);
    }
}
