//! Email addresses: validated, stored lower-cased, unique by their folded key.
//!
//! Two addresses belong to one user when their keys are equal. The key is the compatibility
//! caseless form of Unicode §3.13 (D146), `NFKC(casefold(NFKD(casefold(NFD(x)))))`, with the
//! default (full, locale-free) case folding:
//!
//! - `to_lowercase` is not a folding: it depends on context (a capital sigma becomes `ς` at the
//!   end of a word, `σ` elsewhere) and leaves lower-case variants apart (`ſ` and `s`, `ß` and
//!   `ss`). Case folding maps them all to one form.
//! - Compatibility normalisation makes compatibility forms collide with what they stand for
//!   (fullwidth `ｓ`, the ligature `ﬃ`, the Kelvin sign `K`): an address that reads like someone
//!   else's must not open a second account. The inner normalisations are what D146 needs for
//!   the result to be closed under folding (U+0345 and the characters that decompose to it).
//! - An address has no locale, so Turkish folding is not applied: dotless `ı` stays a letter of
//!   its own, and `İ` folds to `i` + U+0307, not to `i`.
//!
//! Folding can lengthen text (`ß` → `ss`, U+FDFA → 18 characters), so the key has a bound of its
//! own ([`Email::MAX_KEY_CHARS`]). The address that is stored and shown stays the lower-cased
//! one the user typed, as docs/api.md says; only uniqueness uses the key.

use email_address::{EmailAddress, Options};
use icu_casemap::CaseMapper;
use icu_normalizer::{ComposingNormalizerBorrowed, DecomposingNormalizerBorrowed};

text_type!(Email, "A valid email address, lower-cased.");

impl Email {
    /// RFC 5321's limit on a forward path.
    pub const MAX_LEN: usize = 254;

    /// The longest key, in characters: the address bound, applied after folding. A character
    /// is at most 4 bytes, so a key is at most 1,016 bytes, and DynamoDB's `EMAIL#<key>`
    /// partition key (at most 2,048 bytes) and PostgreSQL's B-tree entries always hold it.
    pub const MAX_KEY_CHARS: usize = 254;

    /// Validates and lower-cases an address a user gives, returning the client-facing message
    /// on failure. Its key must fit [`Email::MAX_KEY_CHARS`].
    pub fn parse(text: &str) -> Result<Email, String> {
        let email = Self::from_stored(text)?;
        if email.key().chars().count() > Self::MAX_KEY_CHARS {
            return Err(format!(
                "Ensure this address has no more than {} characters when compared \
                 case-insensitively (ß counts as ss, ﬃ as ffi).",
                Self::MAX_KEY_CHARS
            ));
        }
        Ok(email)
    }

    /// Validates and lower-cases an address read back from a store. The key's bound is not
    /// checked: addresses registered before it existed may pass it, and must stay readable.
    pub fn from_stored(text: &str) -> Result<Email, String> {
        const INVALID: &str = "Enter a valid email address.";
        if text.len() > Self::MAX_LEN {
            return Err(format!(
                "Ensure this field has no more than {} characters.",
                Self::MAX_LEN
            ));
        }
        let lowered = text.to_lowercase();
        // Display names (`Bob <bob@x.org>`), address literals and bare local domains are not
        // addresses a user registers with; require a dotted domain like Django's EmailValidator.
        let options = Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        let parsed =
            EmailAddress::parse_with_options(&lowered, options).map_err(|_| INVALID.to_owned())?;
        if parsed.as_str() != lowered || lowered.ends_with('.') {
            return Err(INVALID.to_owned());
        }
        Ok(Email(lowered))
    }

    /// The uniqueness key (see the module documentation).
    pub fn key(&self) -> String {
        email_key(&self.0)
    }

    /// The part before `@` (the password policy compares against it).
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

/// The uniqueness key of any address text: its compatibility caseless form (Unicode D146). For
/// ASCII text it is the ASCII lower-cased text.
pub fn email_key(text: &str) -> String {
    let fold = CaseMapper::new();
    let nfd = DecomposingNormalizerBorrowed::new_nfd();
    let nfkd = DecomposingNormalizerBorrowed::new_nfkd();
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let folded = fold.fold_string(&nfd.normalize(text)).into_owned();
    let folded = fold.fold_string(&nfkd.normalize(&folded)).into_owned();
    nfkc.normalize(&folded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(text: &str) -> String {
        Email::parse(text).unwrap().key()
    }

    #[test]
    fn addresses_are_stored_lower_cased() {
        assert_eq!(
            Email::parse("Alice.Smith@Example.COM").unwrap().as_str(),
            "alice.smith@example.com"
        );
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "Alice <alice@example.com>",
            "alice@example.com.",
            "a b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn every_sigma_folds_to_one_key_while_the_stored_address_keeps_its_lower_case() {
        let final_sigma = Email::parse("ΣΑΣ@EXAMPLE.COM").unwrap();
        assert_eq!(final_sigma.as_str(), "σας@example.com");
        assert_eq!(final_sigma.key(), "σασ@example.com");
        assert_eq!(key("σασ@example.com"), final_sigma.key());
        assert_eq!(key("σας@example.com"), final_sigma.key());
        assert_eq!(key("ΣΑΣX@EXAMPLE.COM"), key("σασx@example.com"));
    }

    #[test]
    fn long_s_sharp_s_and_ligatures_fold_to_their_plain_letters() {
        for variant in ["mrs@example.com", "MRS@example.com", "mrſ@example.com"] {
            assert_eq!(key(variant), "mrs@example.com", "{variant}");
        }
        for variant in [
            "straße@example.com",
            "STRAẞE@example.com",
            "STRASSE@example.com",
        ] {
            assert_eq!(key(variant), "strasse@example.com", "{variant}");
        }
        assert_eq!(key("oﬃce@example.com"), "office@example.com");
    }

    #[test]
    fn compatibility_forms_fold_to_what_they_stand_for() {
        assert_eq!(key("ｆｕｌｌ@example.com"), "full@example.com");
        assert_eq!(key("ＦＵＬＬ@example.com"), "full@example.com");
        // U+212A KELVIN SIGN and U+2126 OHM SIGN.
        assert_eq!(key("\u{212A}elvin@example.com"), "kelvin@example.com");
        assert_eq!(key("\u{2126}@example.com"), key("ω@example.com"));
        // A precomposed letter and its decomposed spelling.
        assert_eq!(key("caf\u{e9}@example.com"), key("cafe\u{301}@example.com"));
    }

    #[test]
    fn turkish_dotless_and_dotted_i_stay_apart_from_i() {
        assert_eq!(key("I@example.com"), "i@example.com");
        assert_ne!(key("\u{131}@example.com"), key("i@example.com"));
        assert_eq!(key("\u{130}@example.com"), "i\u{307}@example.com");
        assert_ne!(key("\u{130}@example.com"), key("i@example.com"));
    }

    #[test]
    fn a_key_is_its_own_key() {
        for text in [
            "ΣΑΣ@EXAMPLE.COM",
            "STRAẞE@example.com",
            "\u{FDFA}@example.com",
            "\u{130}\u{345}ΐ@example.com",
        ] {
            let once = email_key(text);
            assert_eq!(email_key(&once), once, "{text}");
        }
    }

    #[test]
    fn a_key_longer_than_254_characters_is_refused_and_one_of_254_is_not() {
        // U+FDFA is 3 bytes and folds to 18 characters: 10 of them make 180.
        let local = "\u{FDFA}".repeat(10);
        let domain = |b: usize| format!("{}.{}.com", "a".repeat(60), "b".repeat(b));
        let at_bound = format!("{local}@{}", domain(8));
        let past_bound = format!("{local}@{}", domain(9));
        assert_eq!(email_key(&at_bound).chars().count(), 254);
        assert!(Email::parse(&at_bound).is_ok());
        assert!(past_bound.len() < Email::MAX_LEN);
        let message = Email::parse(&past_bound).unwrap_err();
        assert!(message.contains("254 characters"), "{message}");
        // What an earlier build stored stays readable.
        assert_eq!(
            Email::from_stored(&past_bound).unwrap().as_str(),
            past_bound
        );
    }

    #[test]
    fn the_dynamodb_guard_of_the_longest_key_fits_a_partition_key() {
        let widest = "\u{10FFFF}".repeat(Email::MAX_KEY_CHARS);
        assert!(format!("EMAIL#{widest}").len() <= 2048);
    }

    proptest! {
        /// Guards and rows written before the key existed used the lower-cased address: for
        /// ASCII they are the key already.
        #[test]
        fn an_ascii_key_is_the_lower_cased_text(text in "[ -~]{0,80}") {
            prop_assert_eq!(email_key(&text), text.to_ascii_lowercase());
        }
    }
}
