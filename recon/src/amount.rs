//! Conversion of decimal amount text into integer minor units.
//!
//! The accepted grammar is deliberately narrow: ASCII digits, optionally a
//! dot followed by at least one digit. No signs (except where a signed value
//! is asked for), no exponent, no thousands separators, no spaces.

/// Converts unsigned decimal text such as `1234.50` into minor units with
/// `scale` decimal places. The error is a complete sentence naming the text.
pub(crate) fn parse_unsigned(text: &str, scale: u8) -> Result<u128, String> {
    if text.is_empty() {
        return Err("amount is empty".to_string());
    }
    if text.starts_with('-') {
        return Err(format!("{text} is negative; amounts must not carry a sign"));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(format!("{text} is not a decimal number (expected digits with an optional '.' and decimals)"));
    }
    let fraction = fraction.unwrap_or("").as_bytes();
    let kept = usize::from(scale).min(fraction.len());
    let (kept_digits, dropped_digits) = fraction.split_at(kept);
    if dropped_digits.iter().any(|&b| b != b'0') {
        return Err(format!("{text} has more decimals than the ledger's scale {scale}"));
    }
    let too_large = || format!("{text} is too large to represent in minor units at scale {scale}");
    let mut value: u128 = 0;
    let padding = usize::from(scale) - kept;
    let digits = whole.bytes().chain(kept_digits.iter().copied()).chain(std::iter::repeat_n(b'0', padding));
    for b in digits {
        value = value.checked_mul(10).and_then(|v| v.checked_add(u128::from(b - b'0'))).ok_or_else(too_large)?;
    }
    Ok(value)
}

/// Like [`parse_unsigned`] but accepts one leading `-` for a negative value.
pub(crate) fn parse_signed(text: &str, scale: u8) -> Result<i128, String> {
    let (negative, magnitude_text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if negative && magnitude_text.starts_with('-') {
        return Err(format!("{text} is not a decimal number"));
    }
    let magnitude = parse_unsigned(magnitude_text, scale).map_err(|reason| {
        if negative {
            // Report the original text, sign included.
            reason.replacen(magnitude_text, text, 1)
        } else {
            reason
        }
    })?;
    signed_from_magnitude(magnitude, negative)
        .ok_or_else(|| format!("{text} is too large to represent in minor units at scale {scale}"))
}

/// Applies a sign to a magnitude, or `None` when it does not fit an `i128`.
pub(crate) fn signed_from_magnitude(magnitude: u128, negative: bool) -> Option<i128> {
    if negative {
        0i128.checked_sub_unsigned(magnitude)
    } else {
        i128::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_minor_units() {
        assert_eq!(parse_unsigned("1234.50", 2), Ok(123_450));
        assert_eq!(parse_unsigned("1234.5", 2), Ok(123_450));
        assert_eq!(parse_unsigned("1234", 2), Ok(123_400));
        assert_eq!(parse_unsigned("0.01", 2), Ok(1));
        assert_eq!(parse_unsigned("007", 0), Ok(7));
        assert_eq!(parse_unsigned("1000", 0), Ok(1000));
        assert_eq!(parse_unsigned("1000.00", 0), Ok(1000));
        assert_eq!(parse_unsigned("1.230", 2), Ok(123));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["", "-1", "+1", "1.", ".5", "1,5", "1e3", "1.2.3", " 1", "abc", "１"] {
            assert!(parse_unsigned(bad, 2).is_err(), "{bad:?}");
        }
        assert_eq!(parse_unsigned("12.5", 0), Err("12.5 has more decimals than the ledger's scale 0".to_string()));
        assert_eq!(parse_unsigned("-3", 0), Err("-3 is negative; amounts must not carry a sign".to_string()));
    }

    #[test]
    fn detects_overflow() {
        let max = u128::MAX.to_string();
        assert_eq!(parse_unsigned(&max, 0), Ok(u128::MAX));
        assert!(parse_unsigned(&max, 1).is_err());
        assert!(parse_unsigned("1", 39).is_err());
        assert_eq!(parse_unsigned("1", 38), Ok(10u128.pow(38)));
        assert!(parse_unsigned("1", 255).is_err());
        assert_eq!(parse_unsigned("0", 255), Ok(0));
    }

    #[test]
    fn signed_values() {
        assert_eq!(parse_signed("-12.34", 2), Ok(-1234));
        assert_eq!(parse_signed("50000000", 0), Ok(50_000_000));
        assert_eq!(parse_signed("-0", 0), Ok(0));
        assert!(parse_signed("--1", 0).is_err());
        assert_eq!(parse_signed("-1.5", 0), Err("-1.5 has more decimals than the ledger's scale 0".to_string()));
        let min = i128::MIN.to_string();
        assert_eq!(parse_signed(&min, 0), Ok(i128::MIN));
        assert!(parse_signed(&i128::MAX.to_string(), 0).is_ok());
        assert!(parse_signed(&u128::MAX.to_string(), 0).is_err());
    }
}
