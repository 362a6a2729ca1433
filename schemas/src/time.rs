//! Instants and Cambodia-time periods.
//!
//! Periods are calendar days, months and years in Cambodia time (UTC+07:00, no daylight saving).
//! Instants travel as milliseconds since the Unix epoch (Avro `timestamp-millis`).
//! Dates travel as days since 1970-01-01 (Avro `date`).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Cambodia's fixed offset from UTC, in seconds (+07:00).
pub(crate) const CAMBODIA_OFFSET_SECS: i32 = 7 * 3600;
const DAY_MS: i64 = 86_400_000;
/// 1970-01-01 counted in chrono's days from 0001-01-01 (day 1).
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The fixed UTC+07:00 offset, for chrono.
pub(crate) fn cambodia() -> FixedOffset {
    FixedOffset::east_opt(CAMBODIA_OFFSET_SECS).expect("UTC+7 is a valid offset")
}

/// The Cambodia calendar day an instant falls on (midnight belongs to the new day).
pub fn local_date(ms: Millis) -> NaiveDate {
    let days = (ms + CAMBODIA_OFFSET_SECS as i64 * 1000).div_euclid(DAY_MS);
    epoch_day_to_date(days as i32)
}

/// Start of a Cambodia calendar day (00:00 at UTC+07:00) as an instant.
pub fn day_start(date: NaiveDate) -> Millis {
    date_to_epoch_day(date) as i64 * DAY_MS - CAMBODIA_OFFSET_SECS as i64 * 1000
}

/// The date `days` days after 1970-01-01 (Avro `date`; negative is earlier).
/// A day chrono cannot represent gives `NaiveDate::MAX`.
pub fn epoch_day_to_date(days: i32) -> NaiveDate {
    // A day number from the wire may be any i32: past chrono's range (or i32's, once shifted)
    // it reads as the last date, which validation then refuses.
    days.checked_add(EPOCH_DAYS_FROM_CE)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or(NaiveDate::MAX)
}

/// Days from 1970-01-01 to `date` (Avro `date`); the inverse of [`epoch_day_to_date`].
pub fn date_to_epoch_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

/// RFC 3339 in Cambodia time, e.g. `2021-03-04T09:15:00+07:00`.
/// Fractional seconds appear only when not zero. An instant chrono cannot
/// represent is written as `<ms>ms`.
pub fn to_rfc3339(ms: Millis) -> String {
    cambodia()
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// Parses RFC 3339 with an explicit offset (the import format requires one).
/// Digits below the millisecond are dropped. Errors when the text is not
/// RFC 3339 or has no offset.
pub fn parse_rfc3339(s: &str) -> Result<Millis, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// The system clock now, in milliseconds since the epoch.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_day_number_from_the_wire_gives_a_date() {
        assert_eq!(epoch_day_to_date(i32::MAX), NaiveDate::MAX);
        assert_eq!(epoch_day_to_date(i32::MIN), NaiveDate::MAX);
        assert_eq!(
            epoch_day_to_date(-1),
            NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()
        );
    }

    #[test]
    fn cambodia_midnight_belongs_to_the_new_day() {
        // 2021-01-01T00:00+07:00 is 2020-12-31T17:00Z.
        let ms = parse_rfc3339("2020-12-31T17:00:00Z").unwrap();
        assert_eq!(local_date(ms), NaiveDate::from_ymd_opt(2021, 1, 1).unwrap());
        assert_eq!(
            local_date(ms - 1),
            NaiveDate::from_ymd_opt(2020, 12, 31).unwrap()
        );
        assert_eq!(day_start(NaiveDate::from_ymd_opt(2021, 1, 1).unwrap()), ms);
        assert_eq!(to_rfc3339(ms), "2021-01-01T00:00:00+07:00");
    }

    #[test]
    fn epoch_days_round_trip() {
        let d = NaiveDate::from_ymd_opt(2021, 4, 14).unwrap();
        assert_eq!(epoch_day_to_date(date_to_epoch_day(d)), d);
    }
}
