//! RFC 5260 date parts of a point in time seen in a zone.

/// A point in time (Unix seconds) and the zone offset it is shown in (minutes east of UTC).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZonedTime {
    pub timestamp: i64,
    pub offset_minutes: i32,
}

/// Parses a `:zone` argument (`+0100`, `-0530`).
pub(crate) fn parse_zone(zone: &str) -> Option<i32> {
    let b = zone.as_bytes();
    if b.len() != 5 || !matches!(b[0], b'+' | b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h: i32 = zone[1..3].parse().ok()?;
    let m: i32 = zone[3..5].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some(if b[0] == b'-' {
        -(h * 60 + m)
    } else {
        h * 60 + m
    })
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl ZonedTime {
    /// The value of date part `part` (RFC 5260 section 4.2), or None for an unknown part.
    pub fn part(&self, part: &str) -> Option<String> {
        let local = self.timestamp + i64::from(self.offset_minutes) * 60;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        let off = self.offset_minutes;
        let zone = format!(
            "{}{:02}{:02}",
            if off < 0 { '-' } else { '+' },
            off.abs() / 60,
            off.abs() % 60
        );
        let weekday = (days + 4).rem_euclid(7) as usize;
        Some(match part.to_ascii_lowercase().as_str() {
            "year" => format!("{y:04}"),
            "month" => format!("{mo:02}"),
            "day" => format!("{d:02}"),
            "date" => format!("{y:04}-{mo:02}-{d:02}"),
            // Modified Julian Day: days since 1858-11-17.
            "julian" => format!("{}", days + 40_587),
            "hour" => format!("{h:02}"),
            "minute" => format!("{mi:02}"),
            "second" => format!("{s:02}"),
            "time" => format!("{h:02}:{mi:02}:{s:02}"),
            "iso8601" => {
                let z = if off == 0 {
                    "Z".to_string()
                } else {
                    format!("{}:{}", &zone[..3], &zone[3..])
                };
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{z}")
            }
            "std11" => format!(
                "{}, {d} {} {y:04} {h:02}:{mi:02}:{s:02} {zone}",
                WEEKDAYS[weekday],
                MONTHS[(mo - 1) as usize]
            ),
            "zone" => zone,
            "weekday" => weekday.to_string(),
            _ => return None,
        })
    }
}

/// A `Date:`-style header value as a time in its own zone.
pub(crate) fn parse_header_date(value: &str) -> Option<ZonedTime> {
    let dt = mail_parser::DateTime::parse_rfc822(value.trim())?;
    let offset = (i32::from(dt.tz_hour) * 60 + i32::from(dt.tz_minute))
        * if dt.tz_before_gmt { -1 } else { 1 };
    Some(ZonedTime {
        timestamp: dt.to_timestamp(),
        offset_minutes: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_parts() {
        let t = parse_header_date("Tue, 1 Dec 2026 23:30:05 -0130").unwrap();
        assert_eq!(t.part("date").unwrap(), "2026-12-01");
        assert_eq!(t.part("zone").unwrap(), "-0130");
        assert_eq!(t.part("weekday").unwrap(), "2");
        let utc = ZonedTime {
            offset_minutes: 0,
            ..t
        };
        assert_eq!(utc.part("date").unwrap(), "2026-12-02");
        assert_eq!(utc.part("time").unwrap(), "01:00:05");
        assert_eq!(utc.part("iso8601").unwrap(), "2026-12-02T01:00:05Z");
        assert_eq!(utc.part("julian").unwrap(), "61376");
        assert_eq!(parse_zone("+0530"), Some(330));
        assert_eq!(parse_zone("0530"), None);
    }
}
