//! Dates: INTERNALDATE formatting and day arithmetic for SEARCH.

use chrono::Datelike;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The UTC day of a Unix time.
pub fn utc_day(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

/// The day number of a SEARCH date.
pub fn search_day(date: &chrono::NaiveDate) -> i64 {
    days_from_civil(i64::from(date.year()), date.month(), date.day())
}

/// INTERNALDATE as IMAP writes it: `17-Jul-1996 09:44:25 +0000` (we keep UTC).
pub fn format_internal_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(utc_day(secs));
    let t = secs.rem_euclid(86_400);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m as usize).saturating_sub(1) % 12],
        y,
        t / 3600,
        (t / 60) % 60,
        t % 60
    )
}

/// Parses an IMAP date-time (`05-Jan-2021 10:00:00 +0100`, the day may be space-padded)
/// into Unix seconds.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim_start().split_once(' ')?;
    let mut d = date.split('-');
    let day: u32 = d.next()?.trim().parse().ok()?;
    let month_name = d.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || se > 60
        || zone.len() != 5
        || !zone.is_ascii()
    {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let local = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se;
    Some(local - sign * (zh * 3600 + zm * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1000, 0, 59, 60, 11_016, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parses_date_time() {
        assert_eq!(
            parse_date_time("17-Jul-1996 02:44:25 -0700"),
            Some(837_596_665)
        );
        assert_eq!(parse_date_time(" 1-Jan-1970 01:00:00 +0100"), Some(0));
        assert_eq!(parse_date_time("1-Foo-1970 00:00:00 +0000"), None);
        assert_eq!(parse_date_time("01-Jan-1970 00:00:00"), None);
        assert_eq!(parse_date_time("01-Jan-1970 00:00:00 +0\u{e9}0"), None);
    }

    #[test]
    fn formats_internal_date() {
        assert_eq!(format_internal_date(0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(
            format_internal_date(837_596_665),
            "17-Jul-1996 09:44:25 +0000"
        );
    }
}
