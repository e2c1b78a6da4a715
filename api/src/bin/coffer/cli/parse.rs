//! Text ⇄ values at the command line: enum names (kinds, flags, roles),
//! amounts and timestamps.
//!
//! Enum names are the proto names without their prefix, in lower case
//! (`cash_transfer`, `debits_must_not_exceed_credits`); input may also use
//! `-` for `_`, any case, or the full proto name (`TRANSFER_KIND_JOURNAL`).

use coffer_api::proto;

/// A proto enum with a common name prefix (`TRANSFER_FLAG_`).
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// The prefix every value's proto name starts with.
    const PREFIX: &'static str;
    /// What a value is, in an error (`transfer flag`).
    const WHAT: &'static str;
    /// The value with this proto name.
    fn from_proto_name(name: &str) -> Option<Self>;
    /// The value's proto name.
    fn proto_name(self) -> &'static str;
    /// The value with this wire number.
    fn from_number(value: i32) -> Option<Self>;
    /// The wire number of the value.
    fn number(self) -> i32;
}

macro_rules! named {
    ($($type:ty => $prefix:literal, $what:literal;)*) => {$(
        impl Named for $type {
            const PREFIX: &'static str = $prefix;
            const WHAT: &'static str = $what;
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_number(value: i32) -> Option<Self> {
                Self::try_from(value).ok()
            }
            fn number(self) -> i32 {
                self as i32
            }
        }
    )*};
}

named! {
    proto::AccountKind => "ACCOUNT_KIND_", "account kind";
    proto::AccountFlag => "ACCOUNT_FLAG_", "account flag";
    proto::TransferKind => "TRANSFER_KIND_", "transfer kind";
    proto::TransferFlag => "TRANSFER_FLAG_", "transfer flag";
    proto::ChangeKind => "CHANGE_KIND_", "change kind";
    proto::Period => "PERIOD_", "period";
}

/// The most values an enum of the protocol has (a bound on listing them).
const ENUM_VALUES_MAX: i32 = 64;

/// The short name of `value`: `cash_transfer`.
pub fn short_name<T: Named>(value: T) -> String {
    let name = value.proto_name();
    name.strip_prefix(T::PREFIX).unwrap_or(name).to_ascii_lowercase()
}

/// The short name of the wire number `value`, or the number itself when
/// this client does not know it (a newer server).
pub fn short_name_of<T: Named>(value: i32) -> String {
    T::from_number(value).map_or_else(|| value.to_string(), short_name::<T>)
}

/// The short names of a list of wire numbers.
pub fn short_names_of<T: Named>(values: &[i32]) -> Vec<String> {
    values.iter().map(|value| short_name_of::<T>(*value)).collect()
}

/// The short names of every value but the unspecified one (0).
pub fn known_names<T: Named>() -> Vec<String> {
    (1..ENUM_VALUES_MAX).map_while(T::from_number).map(short_name::<T>).collect()
}

/// Parses a name (`cash-transfer`, `cash_transfer`, `TRANSFER_KIND_CASH_TRANSFER`).
/// The unspecified value (0) is not a name: the API refuses it.
pub fn parse_name<T: Named>(text: &str) -> Result<T, String> {
    let upper = text.trim().to_ascii_uppercase().replace('-', "_");
    let full = if upper.starts_with(T::PREFIX) { upper } else { format!("{}{upper}", T::PREFIX) };
    T::from_proto_name(&full)
        .filter(|value| value.number() != 0)
        .ok_or_else(|| format!("unknown {} {text:?} (known: {})", T::WHAT, known_names::<T>().join(", ")))
}

/// Checks the text of an amount: digits, optionally a point and more
/// digits (the server checks the ledger's scale); `max` where `max_allowed`
/// (a post of the whole pending amount).
pub fn check_amount(text: &str, max_allowed: bool) -> Result<(), String> {
    if max_allowed && text == "max" {
        return Ok(());
    }
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let plain = match text.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(text),
    };
    if plain {
        Ok(())
    } else {
        Err(format!("{text:?} is not a decimal amount (digits, optionally a point and more digits: 1500000, 123.45)"))
    }
}

/// A clap value parser for an amount.
pub fn amount(text: &str) -> Result<String, String> {
    check_amount(text, false).map(|()| text.to_owned())
}

/// A clap value parser for the amount of a post (`max` allowed).
pub fn post_amount(text: &str) -> Result<String, String> {
    check_amount(text, true).map(|()| text.to_owned())
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// Parses a timestamp: nanoseconds since the UNIX epoch (`1764453600000000000`)
/// or a UTC time (`2025-11-29T22:00:00Z`, `2025-11-29T22:00:00.5Z`).
pub fn timestamp(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| format!("{text} is more than u64::MAX nanoseconds"));
    }
    utc_time(text).ok_or_else(|| {
        format!("{text:?} is not a timestamp (nanoseconds since the UNIX epoch, or UTC like 2025-11-29T22:00:00Z)")
    })
}

fn utc_time(text: &str) -> Option<u64> {
    let body = text.strip_suffix('Z')?;
    let (date, time) = body.split_once('T')?;
    let number = |part: &str, len: usize| -> Option<u64> {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit())).then(|| part.parse().ok()).flatten()
    };
    let mut date_parts = date.split('-');
    let year = number(date_parts.next()?, 4)?;
    let month = number(date_parts.next()?, 2)?;
    let day = number(date_parts.next()?, 2)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?, 2)?;
    let minute = number(clock_parts.next()?, 2)?;
    let second = number(clock_parts.next()?, 2)?;
    if date_parts.next().is_some() || clock_parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(fraction) if (1..=9).contains(&fraction.len()) && fraction.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{fraction:0<9}").parse::<u64>().ok()?
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day)?;
    // A date that does not exist (February 30) does not survive the round trip.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    let seconds = days.checked_mul(SECONDS_PER_DAY)?.checked_add(hour * 3_600 + minute * 60 + second)?;
    seconds.checked_mul(NANOS_PER_SECOND)?.checked_add(nanos)
}

/// Formats a timestamp as UTC with nanoseconds (`2025-11-29T22:00:00.000000000Z`),
/// which [`timestamp`] reads back exactly.
pub fn format_timestamp(nanos: u64) -> String {
    let seconds = nanos / NANOS_PER_SECOND;
    let (year, month, day) = civil_from_days(seconds / SECONDS_PER_DAY);
    let clock = seconds % SECONDS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        clock / 3_600,
        clock % 3_600 / 60,
        clock % 60,
        nanos % NANOS_PER_SECOND
    )
}

/// Days since 1970-01-01 of a date on or after it (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

/// The date `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_spelling_and_print_short() {
        for text in ["cash-transfer", "cash_transfer", "CASH_TRANSFER", "TRANSFER_KIND_CASH_TRANSFER"] {
            assert_eq!(parse_name::<proto::TransferKind>(text), Ok(proto::TransferKind::CashTransfer), "{text}");
        }
        assert_eq!(short_name(proto::AccountFlag::DebitsMustNotExceedCredits), "debits_must_not_exceed_credits");
        assert_eq!(short_name_of::<proto::TransferFlag>(2), "pending");
        assert_eq!(short_name_of::<proto::TransferFlag>(99), "99");
    }

    #[test]
    fn an_unknown_flag_is_refused_naming_it_and_the_known_ones() {
        let error = parse_name::<proto::AccountFlag>("histroy").unwrap_err();
        assert!(error.contains("unknown account flag \"histroy\""), "{error}");
        assert!(error.contains("history"), "{error}");
        assert!(!error.contains("unspecified"), "{error}");
    }

    #[test]
    fn the_unspecified_value_is_not_a_name() {
        assert!(parse_name::<proto::TransferKind>("unspecified").is_err());
        assert!(parse_name::<proto::AccountKind>("").is_err());
    }

    #[test]
    fn amounts_are_plain_decimals() {
        for good in ["0", "1500000", "123.45", "10.50"] {
            assert_eq!(check_amount(good, false), Ok(()), "{good}");
        }
        for bad in ["", "-1", "1e3", "1,000", " 1", "1.", ".5", "max", "12.3.4"] {
            assert!(check_amount(bad, false).is_err(), "{bad}");
        }
        assert_eq!(check_amount("max", true), Ok(()));
    }

    #[test]
    fn timestamps_read_nanoseconds_or_utc_and_round_trip() {
        assert_eq!(timestamp("0"), Ok(0));
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(timestamp("2000-03-01T00:00:01.5Z"), Ok(951_868_801_500_000_000));
        assert_eq!(format_timestamp(951_868_801_500_000_000), "2000-03-01T00:00:01.500000000Z");
        for nanos in [0, 1, 951_868_801_500_000_000, 1_764_453_600_123_456_789, u64::MAX] {
            assert_eq!(timestamp(&format_timestamp(nanos)), Ok(nanos), "{nanos}");
        }
        for bad in ["2025-02-30T00:00:00Z", "2025-11-29T24:00:00Z", "2025-11-29 22:00:00", "1969-12-31T23:59:59Z", ""] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }
}
