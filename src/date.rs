//! Civil (proleptic Gregorian, UTC) dates <-> `SystemTime`, without a date crate: FTP gives
//! `YYYYMMDDHHMMSS` (RFC 3659 §2.3) and listings give dates; JSON listings and the access log want RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A UTC civil time as `SystemTime`; `None` when out of range (month 13, 25:00, before 1970...).
/// A second of 60 (leap second) is accepted as 59.
pub fn from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<SystemTime> {
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s.min(59));
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `(year, month, day, hour, minute, second)` in UTC; times before 1970 clamp to the epoch.
pub fn to_civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    (y, mo, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// RFC 3339 in UTC, whole seconds: `2023-01-31T12:00:05Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = to_civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Apache's `%t` without its brackets, in UTC: `10/Oct/2000:13:55:36 +0000` (strftime `%d/%b/%Y:%H:%M:%S %z`).
pub fn clf(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = to_civil(t);
    let month = MONTHS[(mo as usize).clamp(1, 12) - 1];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

/// For directory pages: `2023-01-31 12:00`.
pub fn short(t: SystemTime) -> String {
    let (y, mo, d, h, mi, _) = to_civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
}

/// The current UTC year, for `LIST` dates that omit it.
pub fn year_of(t: SystemTime) -> i64 {
    to_civil(t).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        assert_eq!(from_civil(1970, 1, 1, 0, 0, 0), Some(UNIX_EPOCH));
        let t = from_civil(2024, 2, 29, 23, 59, 58).unwrap();
        assert_eq!(to_civil(t), (2024, 2, 29, 23, 59, 58));
        assert_eq!(rfc3339(t), "2024-02-29T23:59:58Z");
        assert_eq!(short(t), "2024-02-29 23:59");
        // 2000-03-01 is day 11017 (a known value)
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for day in [0, 59, 365, 11_016, 11_017, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn out_of_range_is_none() {
        assert!(from_civil(2023, 2, 29, 0, 0, 0).is_none());
        assert!(from_civil(2023, 13, 1, 0, 0, 0).is_none());
        assert!(from_civil(2023, 1, 1, 24, 0, 0).is_none());
        assert!(from_civil(1969, 12, 31, 0, 0, 0).is_none());
        assert!(from_civil(2023, 4, 31, 0, 0, 0).is_none());
    }

    #[test]
    fn access_log_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_648_765)), "2026-11-25T23:19:25Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(clf(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        // Apache's own example, 10/Oct/2000:13:55:36 -0700, in UTC.
        assert_eq!(clf(UNIX_EPOCH + Duration::from_secs(971_211_336)), "10/Oct/2000:20:55:36 +0000");
        assert_eq!(clf(UNIX_EPOCH + Duration::from_secs(1_795_648_765)), "25/Nov/2026:23:19:25 +0000");
    }
}
