//! A small proleptic-Gregorian calendar date type, with no time zone.

use std::fmt;

/// A calendar date (no time zone), ordered.
///
/// Fields are public for easy construction in tests and by callers, but a
/// value built by hand is not checked; use [`Date::new`] or [`Date::parse`]
/// to obtain a validated date. The derived ordering (year, then month, then
/// day) is chronological for valid dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Calendar year (proleptic Gregorian; year 0 is 1 BC).
    pub year: i32,
    /// Month of the year, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31 depending on the month.
    pub day: u8,
}

/// Number of days from 0000-03-01 to 1970-01-01 in the proleptic calendar.
const DAYS_0000_03_01_TO_EPOCH: i64 = 719_468;
/// Length of a full 400-year Gregorian cycle in days.
const DAYS_PER_CYCLE: i64 = 146_097;

/// Whether `year` has a 29 February.
fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in `month` of `year`, or 0 for a month outside 1..=12.
fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// Builds a date after checking that the month exists and the day exists
    /// in that month (leap years included). Returns `None` otherwise.
    #[must_use]
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if day >= 1 && day <= days_in_month(year, month) {
            Some(Date { year, month, day })
        } else {
            None
        }
    }

    /// Parses the exact form `YYYY-MM-DD` (four-digit year, two-digit month
    /// and day) and validates the result. Anything else yields `None`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Date> {
        let bytes = s.as_bytes();
        if bytes.len() != 10 {
            return None;
        }
        let mut year: i32 = 0;
        let mut month: u8 = 0;
        let mut day: u8 = 0;
        for (pos, &b) in bytes.iter().enumerate() {
            match pos {
                4 | 7 => {
                    if b != b'-' {
                        return None;
                    }
                }
                _ => {
                    if !b.is_ascii_digit() {
                        return None;
                    }
                    let digit = b - b'0';
                    // At most four digits per part, so none of these overflow.
                    match pos {
                        0..=3 => year = year * 10 + i32::from(digit),
                        5 | 6 => month = month * 10 + digit,
                        _ => day = day * 10 + digit,
                    }
                }
            }
        }
        Date::new(year, month, day)
    }

    /// Number of days between 1970-01-01 and this date (negative before it).
    ///
    /// The result is only meaningful for a valid date; an invalid one built
    /// by hand gives an unspecified number, but never panics.
    #[must_use]
    pub fn days_since_epoch(self) -> i64 {
        let month = i64::from(self.month);
        let day = i64::from(self.day);
        // Count years from March so that the leap day ends the year.
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let cycle = year.div_euclid(400);
        let year_of_cycle = year.rem_euclid(400);
        let month_from_march = (month + 9).rem_euclid(12);
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
        cycle * DAYS_PER_CYCLE + day_of_cycle - DAYS_0000_03_01_TO_EPOCH
    }

    /// The date lying `days` days after 1970-01-01 (before it when negative).
    ///
    /// Values beyond the range of an `i32` year are clamped to the first or
    /// last representable day.
    #[must_use]
    pub fn from_days_since_epoch(days: i64) -> Date {
        let min = Date { year: i32::MIN, month: 1, day: 1 };
        let max = Date { year: i32::MAX, month: 12, day: 31 };
        if days <= min.days_since_epoch() {
            return min;
        }
        if days >= max.days_since_epoch() {
            return max;
        }
        let shifted = days + DAYS_0000_03_01_TO_EPOCH;
        let cycle = shifted.div_euclid(DAYS_PER_CYCLE);
        let day_of_cycle = shifted.rem_euclid(DAYS_PER_CYCLE);
        let year_of_cycle = (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36_524 - day_of_cycle / 146_096) / 365;
        let day_of_year = day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = cycle * 400 + year_of_cycle + i64::from(month <= 2);
        // The clamping above keeps every part inside its target type.
        Date {
            year: i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX }),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
        }
    }

    /// Signed number of days from `self` to `other` (positive when `other`
    /// is later).
    #[must_use]
    pub fn days_until(self, other: Date) -> i64 {
        other.days_since_epoch() - self.days_since_epoch()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.year < 0 {
            write!(f, "-{:04}-{:02}-{:02}", self.year.unsigned_abs(), self.month, self.day)
        } else {
            write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn parse_accepts_valid_dates() {
        assert_eq!(Date::parse("2027-01-31"), Some(d(2027, 1, 31)));
        assert_eq!(Date::parse("2024-02-29"), Some(d(2024, 2, 29)));
        assert_eq!(Date::parse("2000-02-29"), Some(d(2000, 2, 29)));
    }

    #[test]
    fn parse_rejects_invalid_dates() {
        for bad in [
            "2027-02-29",
            "1900-02-29",
            "2027-13-01",
            "2027-00-10",
            "2027-04-31",
            "2027-01-00",
            "2027-1-01",
            "27-01-01",
            "2027/01/01",
            "2027-01-01T00:00:00",
            "",
            "２０２7-01-01",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn epoch_round_trip() {
        assert_eq!(d(1970, 1, 1).days_since_epoch(), 0);
        assert_eq!(d(1970, 1, 2).days_since_epoch(), 1);
        assert_eq!(d(1969, 12, 31).days_since_epoch(), -1);
        assert_eq!(d(2000, 3, 1).days_since_epoch(), 11_017);
        for days in -800_000..800_000i64 {
            let date = Date::from_days_since_epoch(days);
            assert_eq!(Date::new(date.year, date.month, date.day), Some(date));
            assert_eq!(date.days_since_epoch(), days);
        }
    }

    #[test]
    fn extreme_day_counts_clamp() {
        assert_eq!(Date::from_days_since_epoch(i64::MAX), d(i32::MAX, 12, 31));
        assert_eq!(Date::from_days_since_epoch(i64::MIN), d(i32::MIN, 1, 1));
        let min = d(i32::MIN, 1, 1);
        assert_eq!(Date::from_days_since_epoch(min.days_since_epoch()), min);
        let max = d(i32::MAX, 12, 31);
        assert_eq!(Date::from_days_since_epoch(max.days_since_epoch()), max);
    }

    #[test]
    fn display_and_order() {
        assert_eq!(d(2027, 1, 5).to_string(), "2027-01-05");
        assert_eq!(d(987, 11, 5).to_string(), "0987-11-05");
        assert!(d(2026, 12, 31) < d(2027, 1, 1));
        assert_eq!(d(2027, 1, 1).days_until(d(2027, 3, 1)), 59);
    }
}
