//! Polars' `Date` encoding: days since 1970-01-01, as `i32`. The one place that converts it to and from
//! `chrono::NaiveDate`.

use chrono::NaiveDate;

fn unix_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a date")
}

/// The date `days` days after 1970-01-01; `None` outside chrono's range (a corrupt file can hold any `i32`).
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    unix_epoch().checked_add_signed(chrono::Duration::days(days as i64))
}

/// Days from 1970-01-01 to `date` (negative before it).
pub fn days_from_date(date: NaiveDate) -> i32 {
    (date - unix_epoch()).num_days() as i32
}

/// ISO `YYYY-MM-DD` of a day number, or the raw number when it is out of range.
pub fn day_string(days: i32) -> String {
    date_from_days(days).map_or_else(|| format!("day {days}"), |d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_out_of_range_is_none() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 8).unwrap();
        assert_eq!(days_from_date(d), 19_790);
        assert_eq!(date_from_days(19_790), Some(d));
        assert_eq!(
            days_from_date(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()),
            -1
        );
        assert_eq!(date_from_days(i32::MAX), None);
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(i32::MIN), format!("day {}", i32::MIN));
    }
}
