//! The password policy: Django's default validators, with the length bounds of docs/api.md.
//!
//! - MinimumLength (8) and the maximum of docs/api.md (128);
//! - UserAttributeSimilarity against username and email (difflib's `quick_ratio` ≥ 0.7);
//! - CommonPassword: Django's own list (`common-passwords.txt`, see its `.LICENSE`), looked up
//!   as Django does: the lower-cased, trimmed password is one entry;
//! - NumericPassword, with Python's notion of a digit (`str.isdigit`), not only ASCII's.
//!
//! Every rule is linear in the password's length (at most 128 characters reach them), so the
//! whole policy costs microseconds on any input and runs on the request's own task.
//! `lighttech-bench password-policy` measures it over adversarial inputs.

use std::collections::HashSet;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};

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
    if !password.is_empty() && password.chars().all(is_digit) {
        problems.push("This password is entirely numeric.".to_owned());
    }
    problems
}

/// A password that passed the whole policy against the username and email it is registered
/// with. Registration takes only this type, so the policy runs once, where the request is parsed.
#[derive(Debug)]
pub struct NewPassword(SecretString);

impl NewPassword {
    /// Checks `password` for the user `username` with `email`; every message that applies when
    /// it fails.
    pub fn check(
        password: SecretString,
        username: &Username,
        email: &Email,
    ) -> Result<NewPassword, Vec<String>> {
        let problems = validate(&password, Some(username), Some(email));
        if problems.is_empty() {
            Ok(NewPassword(password))
        } else {
            Err(problems)
        }
    }

    /// The password, to be hashed.
    pub fn into_secret(self) -> SecretString {
        self.0
    }
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

/// Whether Python's `str.isdigit` holds for `c`, as Django's NumericPasswordValidator asks of
/// every character: Unicode's decimal digits (general category Nd, any script: Arabic-Indic
/// `٣`, Devanagari `३`, fullwidth `３`, …) and the other characters whose Numeric_Type is Digit
/// (superscripts `²`, circled `③`, …). Not the rest of `char::is_numeric` (Nl and No without a
/// digit value: Roman numerals `Ⅻ`, fractions `½`), which Python does not call digits either.
fn is_digit(c: char) -> bool {
    let c = u32::from(c);
    DIGITS
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The characters for which Python's `str.isdigit()` is true, as sorted inclusive ranges (Unicode
/// 14.0, Python 3.11's database), as this prints them (in decimal):
///
/// ```text
/// python3 -c 'import itertools as i; print([(g[0][1], g[-1][1]) for _, g in ((k, list(v))
///     for k, v in i.groupby(enumerate(c for c in range(0x110000) if chr(c).isdigit()),
///     lambda p: p[1] - p[0]))])'
/// ```
#[rustfmt::skip]
const DIGITS: &[(u32, u32)] = &[
    (0x0030, 0x0039), (0x00B2, 0x00B3), (0x00B9, 0x00B9), (0x0660, 0x0669), (0x06F0, 0x06F9),
    (0x07C0, 0x07C9), (0x0966, 0x096F), (0x09E6, 0x09EF), (0x0A66, 0x0A6F), (0x0AE6, 0x0AEF),
    (0x0B66, 0x0B6F), (0x0BE6, 0x0BEF), (0x0C66, 0x0C6F), (0x0CE6, 0x0CEF), (0x0D66, 0x0D6F),
    (0x0DE6, 0x0DEF), (0x0E50, 0x0E59), (0x0ED0, 0x0ED9), (0x0F20, 0x0F29), (0x1040, 0x1049),
    (0x1090, 0x1099), (0x1369, 0x1371), (0x17E0, 0x17E9), (0x1810, 0x1819), (0x1946, 0x194F),
    (0x19D0, 0x19DA), (0x1A80, 0x1A89), (0x1A90, 0x1A99), (0x1B50, 0x1B59), (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49), (0x1C50, 0x1C59), (0x2070, 0x2070), (0x2074, 0x2079), (0x2080, 0x2089),
    (0x2460, 0x2468), (0x2474, 0x247C), (0x2488, 0x2490), (0x24EA, 0x24EA), (0x24F5, 0x24FD),
    (0x24FF, 0x24FF), (0x2776, 0x277E), (0x2780, 0x2788), (0x278A, 0x2792), (0xA620, 0xA629),
    (0xA8D0, 0xA8D9), (0xA900, 0xA909), (0xA9D0, 0xA9D9), (0xA9F0, 0xA9F9), (0xAA50, 0xAA59),
    (0xABF0, 0xABF9), (0xFF10, 0xFF19), (0x104A0, 0x104A9), (0x10A40, 0x10A43), (0x10D30, 0x10D39),
    (0x10E60, 0x10E68), (0x11052, 0x1105A), (0x11066, 0x1106F), (0x110F0, 0x110F9),
    (0x11136, 0x1113F), (0x111D0, 0x111D9), (0x112F0, 0x112F9), (0x11450, 0x11459),
    (0x114D0, 0x114D9), (0x11650, 0x11659), (0x116C0, 0x116C9), (0x11730, 0x11739),
    (0x118E0, 0x118E9), (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9), (0x16A60, 0x16A69), (0x16AC0, 0x16AC9), (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF), (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9), (0x1E950, 0x1E959),
    (0x1F100, 0x1F10A), (0x1FBF0, 0x1FBF9),
];

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

/// Django's common-password list, one lower-cased password a line.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Django's CommonPasswordValidator: `password.lower().strip() in passwords`.
fn is_common(password: &str) -> bool {
    COMMON_PASSWORDS.contains(password.to_lowercase().trim())
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

    fn is_numeric(messages: Vec<String>) -> bool {
        messages.iter().any(|m| m.contains("entirely numeric"))
    }

    #[test]
    fn a_password_of_digits_of_any_script_is_entirely_numeric() {
        for p in [
            "٧٣٥١٩٨٤٦٢٠٣",          // Arabic-Indic
            "۷۳۵۱۹۸۴۶۲۰۳",          // Extended Arabic-Indic (Persian)
            "७३५१९८४६२०",           // Devanagari
            "７３５１９８４６２０", // fullwidth
            "𝟕𝟑𝟓𝟏𝟗𝟖𝟒𝟔",             // mathematical bold
            "٧3५1９8٤6",            // mixed scripts
        ] {
            assert!(is_numeric(check(p)), "{p} passed");
        }
    }

    #[test]
    fn entirely_numeric_means_what_pythons_isdigit_means() {
        // Digits to Python's str.isdigit (Numeric_Type Digit) though not decimal digits.
        assert!(is_numeric(check("¹²³⁴⁵⁶⁷⁸⁹")));
        assert!(is_numeric(check("①②③④⑤⑥⑦⑧⑨")));
        // Numbers, but not digits: Roman numerals, fractions, CJK numerals.
        for p in ["ⅫⅪⅩⅨⅧⅦⅥⅤ", "½⅓¼⅕⅙⅛⅔¾", "一二三四五六七八"] {
            assert!(!is_numeric(check(p)), "{p} was called numeric");
        }
        // One letter among the digits is enough.
        assert!(!is_numeric(check("٧٣٥١٩٨٤٦٢a")));
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
    fn a_common_password_is_found_as_django_finds_it_trimmed_and_lower_cased() {
        for p in ["  PASSWORD  ", "Qwerty123", "пароль"] {
            assert!(
                check(p).iter().any(|m| m.contains("too common")),
                "{p} passed"
            );
        }
        // Only the whole password counts: a common one inside a longer text is not common.
        assert!(check("password-of-my-own-9").is_empty());
    }

    #[test]
    fn the_common_password_list_is_django_s_lower_cased_and_trimmed() {
        assert_eq!(COMMON_PASSWORDS.len(), 19_640);
        assert!(
            COMMON_PASSWORDS
                .iter()
                .all(|p| *p == p.to_lowercase() && *p == p.trim() && !p.is_empty())
        );
    }

    #[test]
    fn a_password_checked_for_its_user_is_a_new_password() {
        let username = Username::parse("alice").unwrap();
        let email = Email::parse("alice.wonder@example.com").unwrap();
        let ok = NewPassword::check("Vt8#qLm2!zRw".to_owned().into(), &username, &email);
        assert_eq!(ok.unwrap().into_secret().expose_secret(), "Vt8#qLm2!zRw");
        let refused = NewPassword::check("alicewonder".to_owned().into(), &username, &email);
        assert!(refused.unwrap_err().iter().any(|m| m.contains("similar")));
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
    fn the_digit_ranges_are_sorted_and_disjoint() {
        assert!(DIGITS.iter().all(|(first, last)| first <= last));
        assert!(DIGITS.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        assert!(is_digit('0') && is_digit('9') && is_digit('\u{1FBF9}'));
        assert!(!is_digit('/') && !is_digit(':') && !is_digit('a'));
    }

    #[test]
    fn quick_ratio_matches_difflib() {
        // difflib.SequenceMatcher(a="abcd", b="bcde").quick_ratio() == 0.75
        assert!((quick_ratio("abcd", "bcde") - 0.75).abs() < 1e-9);
        assert!((quick_ratio("aaaa", "a") - 0.4).abs() < 1e-9);
    }
}
