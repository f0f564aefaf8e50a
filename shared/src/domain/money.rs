//! Money as an integer count of minor units (kopecks, cents).
//!
//! Amounts arrive as JSON strings (`"10.5"`) or JSON numbers (`10.5`); both are parsed from their
//! exact text, so no binary floating point ever sees a monetary value.

use std::fmt;

use serde::{Serialize, Serializer};

/// Minor units per major unit: amounts carry exactly two fraction digits.
const SCALE: i64 = 100;

/// A non-negative quantity of money in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

impl Money {
    /// Zero, the balance of every new account.
    pub const ZERO: Money = Money(0);
    /// The largest single amount a deposit, withdrawal or transfer may carry: `1000000000.00`.
    pub const MAX_AMOUNT: Money = Money(1_000_000_000 * SCALE);
    /// The largest balance an account may hold: `9999999999999.99`.
    pub const MAX_BALANCE: Money = Money(999_999_999_999_999);

    /// Wraps a count of minor units read back from a store. Stores only ever hold values that
    /// passed [`Money::parse_amount`] or were computed within `0..=MAX_BALANCE`.
    pub const fn from_minor(minor: i64) -> Money {
        Money(minor)
    }

    /// The count of minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// Parses the raw JSON text of an `amount` field: a JSON string or a JSON number, exactly as
    /// docs/api.md (Money) defines. Returns the client-facing message on failure.
    pub fn parse_amount_json(raw: &str) -> Result<Money, String> {
        let raw = raw.trim();
        if raw.starts_with('"') {
            let text: String =
                serde_json::from_str(raw).map_err(|_| "A valid number is required.".to_owned())?;
            Money::parse_amount(&text)
        } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Money::parse_amount(raw)
        } else if raw == "null" {
            Err("This field may not be null.".to_owned())
        } else {
            Err("A valid number is required.".to_owned())
        }
    }

    /// Parses decimal text (`"10"`, `"10.5"`, `"10.50"`) into a positive amount no larger than
    /// [`Money::MAX_AMOUNT`].
    pub fn parse_amount(text: &str) -> Result<Money, String> {
        let value = Money::parse_decimal(text)?;
        if value.0 == 0 {
            return Err("Ensure this value is greater than 0.00.".to_owned());
        }
        if value > Money::MAX_AMOUNT {
            return Err(format!(
                "Ensure this value is less than or equal to {}.",
                Money::MAX_AMOUNT
            ));
        }
        Ok(value)
    }

    /// Parses unsigned decimal text with at most two fraction digits, rejecting signs, exponents,
    /// whitespace and anything that is not an ASCII digit or a single point.
    fn parse_decimal(text: &str) -> Result<Money, String> {
        const INVALID: &str = "A valid number is required.";
        if text.starts_with('-') {
            return Err("Ensure this value is greater than 0.00.".to_owned());
        }
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(INVALID.to_owned());
        }
        let frac_digits = match frac_part {
            None => "",
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(INVALID.to_owned());
            }
            Some(f) if f.len() > 2 => {
                return Err("Ensure that there are no more than 2 decimal places.".to_owned());
            }
            Some(f) => f,
        };
        let significant = int_part.trim_start_matches('0');
        // 13 integer digits already exceed every limit; refusing early keeps i64 arithmetic safe.
        if significant.len() > 13 {
            return Err(format!(
                "Ensure this value is less than or equal to {}.",
                Money::MAX_AMOUNT
            ));
        }
        let mut minor: i64 = 0;
        for b in significant.bytes() {
            minor = minor * 10 + i64::from(b - b'0');
        }
        minor *= SCALE;
        let mut frac: i64 = 0;
        for (i, b) in frac_digits.bytes().enumerate() {
            frac += i64::from(b - b'0') * if i == 0 { 10 } else { 1 };
        }
        Ok(Money(minor + frac))
    }

    /// `self + other` when the result stays within [`Money::MAX_BALANCE`].
    pub fn checked_credit(self, other: Money) -> Option<Money> {
        self.0
            .checked_add(other.0)
            .filter(|v| *v <= Money::MAX_BALANCE.0)
            .map(Money)
    }

    /// `self - other` when the result is not negative.
    pub fn checked_debit(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strings_and_numbers_parse_to_the_same_minor_units() {
        assert_eq!(Money::parse_amount_json("\"10.5\""), Ok(Money(1050)));
        assert_eq!(Money::parse_amount_json("\"10.50\""), Ok(Money(1050)));
        assert_eq!(Money::parse_amount_json("10.5"), Ok(Money(1050)));
        assert_eq!(Money::parse_amount_json("10"), Ok(Money(1000)));
        assert_eq!(Money::parse_amount_json("0.01"), Ok(Money(1)));
    }

    #[test]
    fn an_amount_with_three_fraction_digits_is_rejected() {
        assert!(Money::parse_amount_json("\"1.001\"").is_err());
        assert!(Money::parse_amount_json("1.001").is_err());
        assert!(Money::parse_amount_json("1.000").is_err());
    }

    #[test]
    fn zero_negative_exponent_and_junk_are_rejected() {
        for raw in [
            "0",
            "\"0.00\"",
            "-1",
            "\"-1\"",
            "1e3",
            "\"1e3\"",
            "1E3",
            "\"NaN\"",
            "\"Infinity\"",
            "\"\"",
            "\"abc\"",
            "\" 1\"",
            "\"1 \"",
            "\"+1\"",
            "\".5\"",
            "\"5.\"",
            "null",
            "true",
            "[1]",
            "{}",
            "\"١\"",
            "\"1,5\"",
            "-0",
        ] {
            assert!(Money::parse_amount_json(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn the_largest_amount_is_accepted_and_one_kopeck_more_is_not() {
        assert_eq!(Money::parse_amount("1000000000.00"), Ok(Money::MAX_AMOUNT));
        assert!(Money::parse_amount("1000000000.01").is_err());
        assert!(Money::parse_amount("99999999999999999999999999999").is_err());
    }

    #[test]
    fn leading_zeros_do_not_change_the_value() {
        assert_eq!(Money::parse_amount("007.5"), Ok(Money(750)));
    }

    #[test]
    fn money_is_shown_with_exactly_two_fraction_digits() {
        assert_eq!(Money(0).to_string(), "0.00");
        assert_eq!(Money(5).to_string(), "0.05");
        assert_eq!(Money(125000).to_string(), "1250.00");
        assert_eq!(Money::MAX_BALANCE.to_string(), "9999999999999.99");
    }

    #[test]
    fn credit_stops_at_the_balance_ceiling_and_debit_at_zero() {
        assert_eq!(Money::MAX_BALANCE.checked_credit(Money(1)), None);
        assert_eq!(Money(1).checked_debit(Money(2)), None);
        assert_eq!(Money(3).checked_debit(Money(2)), Some(Money(1)));
    }

    proptest! {
        #[test]
        fn every_valid_amount_round_trips_through_its_text(minor in 1i64..=Money::MAX_AMOUNT.0) {
            let text = Money(minor).to_string();
            prop_assert_eq!(Money::parse_amount(&text), Ok(Money(minor)));
            prop_assert_eq!(Money::parse_amount_json(&text), Ok(Money(minor)));
            prop_assert_eq!(Money::parse_amount_json(&format!("\"{text}\"")), Ok(Money(minor)));
        }

        #[test]
        fn one_fraction_digit_means_tens_of_minor_units(int in 0i64..1_000_000, d in 0i64..10) {
            prop_assume!(int > 0 || d > 0);
            prop_assert_eq!(Money::parse_amount(&format!("{int}.{d}")), Ok(Money(int * 100 + d * 10)));
        }

        #[test]
        fn arbitrary_text_never_panics_and_never_yields_an_out_of_range_amount(s in ".{0,40}") {
            if let Ok(m) = Money::parse_amount(&s) {
                prop_assert!(m.0 > 0 && m <= Money::MAX_AMOUNT);
            }
        }

        #[test]
        fn numeric_text_agrees_with_decimal_arithmetic(int in 0u64..10_000_000_000u64, frac in 0u32..100) {
            let text = format!("{int}.{frac:02}");
            let expected = int as i128 * 100 + i128::from(frac);
            match Money::parse_amount(&text) {
                Ok(m) => prop_assert_eq!(i128::from(m.0), expected),
                Err(_) => prop_assert!(expected == 0 || expected > i128::from(Money::MAX_AMOUNT.0)),
            }
        }
    }
}
