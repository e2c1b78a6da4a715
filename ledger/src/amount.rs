//! Amounts at the API edge: decimal strings in, decimal strings out.
//!
//! Inside Coffer an amount is a `u128` count of the ledger's minor unit
//! (1 KRW at scale 0, 1 cent at scale 2). At the edge it is a decimal
//! string. Parsing never rounds: a value with more significant decimal places
//! than the ledger's scale is rejected (trailing zeros are not significant:
//! `"10.50"` is accepted at scale 1), as are signs, exponents and values that
//! do not fit.

/// Why a decimal string is not an amount. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number.
    #[error("{field}: {value:?} is not a decimal number")]
    Invalid {
        /// The field's name.
        field: String,
        /// The text given.
        value: String,
    },
    /// Negative (amounts are never negative; direction is debit or credit).
    #[error("{field}: {value:?} is negative")]
    Negative {
        /// The field's name.
        field: String,
        /// The text given.
        value: String,
    },
    /// More decimal places than the ledger's scale.
    #[error("{field}: {value:?} has {places} decimal places, more than the ledger's scale {scale}")]
    TooManyDecimalPlaces {
        /// The field's name.
        field: String,
        /// The text given.
        value: String,
        /// Significant decimal places in the text.
        places: u32,
        /// The ledger's scale.
        scale: u8,
    },
    /// Too large for an amount.
    #[error("{field}: {value:?} is out of range")]
    OutOfRange {
        /// The field's name.
        field: String,
        /// The text given.
        value: String,
    },
}

/// Parses `text`, the value of `field`, as an amount of a ledger with `scale`
/// decimal places, returning minor units. Every `u128` is reachable: the
/// digits are accumulated in a `u128` with checked arithmetic, so only a
/// value that does not fit is out of range.
pub fn parse_amount(field: &str, text: &str, scale: u8) -> Result<u128, AmountError> {
    let error = |make: fn(String, String) -> AmountError| make(field.to_owned(), text.to_owned());
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !is_plain_decimal(unsigned) {
        return Err(error(|field, value| AmountError::Invalid { field, value }));
    }
    if negative {
        return Err(error(|field, value| AmountError::Negative { field, value }));
    }
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    // Trailing zeros are not significant: "10.50" has one decimal place.
    let fraction = fraction.trim_end_matches('0');
    let places = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
    if places > u32::from(scale) {
        return Err(AmountError::TooManyDecimalPlaces {
            field: field.to_owned(),
            value: text.to_owned(),
            places,
            scale,
        });
    }
    let mut digits = whole.bytes().chain(fraction.bytes()).map(|digit| u128::from(digit - b'0'));
    let significand = digits.try_fold(0u128, |value, digit| value.checked_mul(10)?.checked_add(digit));
    let amount = significand.and_then(|significand| match significand {
        0 => Some(0),
        _ => significand.checked_mul(10u128.checked_pow(u32::from(scale) - places)?),
    });
    amount.ok_or_else(|| error(|field, value| AmountError::OutOfRange { field, value }))
}

/// Digits, optionally followed by a point and more digits: `12`, `12.50`.
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// Formats minor units of a ledger with `scale` decimal places as a decimal
/// string with exactly `scale` decimal places (`12345` at scale 2: `"123.45"`).
pub fn format_amount(amount: u128, scale: u8) -> String {
    let Some(factor) = 10u128.checked_pow(u32::from(scale)) else {
        return amount.to_string();
    };
    if scale == 0 {
        return amount.to_string();
    }
    format!("{}.{:0width$}", amount / factor, amount % factor, width = usize::from(scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_won_parse_at_scale_zero() {
        assert_eq!(parse_amount("amount", "1500000", 0), Ok(1_500_000));
        assert_eq!(parse_amount("amount", "0", 0), Ok(0));
    }

    #[test]
    fn cents_parse_at_scale_two() {
        assert_eq!(parse_amount("amount", "123.45", 2), Ok(12_345));
        assert_eq!(parse_amount("amount", "123.4", 2), Ok(12_340));
        assert_eq!(parse_amount("amount", "10.50", 1), Ok(105));
    }

    #[test]
    fn more_decimal_places_than_the_scale_are_rejected_not_rounded() {
        assert_eq!(
            parse_amount("amount", "1.5", 0),
            Err(AmountError::TooManyDecimalPlaces { field: "amount".into(), value: "1.5".into(), places: 1, scale: 0 })
        );
    }

    #[test]
    fn negative_amounts_are_rejected() {
        assert!(matches!(parse_amount("amount", "-1", 0), Err(AmountError::Negative { .. })));
        assert!(matches!(parse_amount("amount", "-0", 0), Err(AmountError::Negative { .. })));
    }

    #[test]
    fn garbage_exponents_and_blanks_are_invalid_and_name_the_field() {
        for text in ["", "abc", "1e5", " 1", "1,000", "1.2.3", "+1", ".5", "5.", "--1"] {
            match parse_amount("transfers[3].amount", text, 2) {
                Err(AmountError::Invalid { field, .. }) => assert_eq!(field, "transfers[3].amount"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn values_that_do_not_fit_are_out_of_range() {
        // u128::MAX + 1.
        assert!(matches!(
            parse_amount("amount", "340282366920938463463374607431768211456", 0),
            Err(AmountError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_amount("amount", "3402823669209384634633746074317682114.56", 2),
            Err(AmountError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_amount("amount", "79228162514264337593543950335", 18),
            Err(AmountError::OutOfRange { .. })
        ));
    }

    #[test]
    fn every_u128_parses_in_minor_units_and_at_a_scale() {
        let two_to_the_96 = 1u128 << 96;
        assert_eq!(parse_amount("amount", &two_to_the_96.to_string(), 0), Ok(two_to_the_96));
        let largest = u128::MAX - 1;
        assert_eq!(parse_amount("amount", "340282366920938463463374607431768211454", 0), Ok(largest));
        assert_eq!(parse_amount("amount", "3402823669209384634633746074317682114.54", 2), Ok(largest));
        assert_eq!(parse_amount("amount", &format_amount(u128::MAX, 6), 6), Ok(u128::MAX));
        assert_eq!(parse_amount("amount", "0.000", 40), Ok(0));
        assert_eq!(parse_amount("amount", "007.10", 2), Ok(710));
    }

    #[test]
    fn formatting_pads_to_the_scale() {
        assert_eq!(format_amount(12_345, 2), "123.45");
        assert_eq!(format_amount(5, 2), "0.05");
        assert_eq!(format_amount(1_500_000, 0), "1500000");
        assert_eq!(format_amount(u128::MAX, 0), u128::MAX.to_string());
    }

    #[test]
    fn parse_and_format_round_trip() {
        for (amount, scale) in [(0u128, 2u8), (1, 2), (987_654_321, 4), (u64::MAX as u128, 6)] {
            assert_eq!(parse_amount("amount", &format_amount(amount, scale), scale), Ok(amount));
        }
    }
}
