//! The upstream's times: `yyyy-MM-ddTHH:mm:ss+hhmm`, a numeric UTC offset without a colon.

use prost_types::Timestamp;

/// Parses the upstream's `yyyy-MM-ddTHH:mm:ssZ` where Z is a numeric offset without a colon
/// (`+0800`). RFC 3339 forms (`Z`, `+08:00`) are accepted too: they are unambiguous.
pub fn parse_upstream_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    let zone = s.get(19..)?;
    let zone_ok = zone == "Z"
        || (zone.len() == 5 && is_offset(zone.as_bytes(), false))
        || (zone.len() == 6 && is_offset(zone.as_bytes(), true));
    if !(shape_ok && zone_ok) {
        return None;
    }
    // The shape is fixed, so the fields are read in place (prost's general RFC 3339 parser
    // costs more than the rest of a backup's decoding).
    let num = |at: usize, digits: usize| {
        b[at..at + digits]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 2), num(8, 2));
    let (hour, minute, second) = (num(11, 2), num(14, 2), num(17, 2));
    let offset = match zone.len() {
        1 => 0,
        n => {
            let (h, m) = (num(20, 2), num(if n == 5 { 22 } else { 23 }, 2));
            if h >= 24 || m >= 60 {
                return None;
            }
            let sign = if b[19] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    let valid = year >= 1
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour < 24
        && minute < 60
        && second <= 60;
    if !valid {
        return None;
    }
    // A leap second (:60) counts as :59, as prost does.
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset;
    Some(Timestamp { seconds, nanos: 0 })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_offset(z: &[u8], colon: bool) -> bool {
    let digits: &[usize] = if colon { &[1, 2, 4, 5] } else { &[1, 2, 3, 4] };
    (z[0] == b'+' || z[0] == b'-')
        && digits.iter().all(|&i| z[i].is_ascii_digit())
        && (!colon || z[3] == b':')
}

/// Writes a time as the upstream does, at a UTC offset given in minutes.
pub fn format_upstream_time(unix_seconds: i64, offset_minutes: i32) -> String {
    let local = Timestamp {
        seconds: unix_seconds + i64::from(offset_minutes) * 60,
        nanos: 0,
    };
    let mut s = local.to_string(); // "YYYY-MM-DDTHH:MM:SSZ"
    s.pop();
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let m = offset_minutes.unsigned_abs();
    s.push_str(&format!("{sign}{:02}{:02}", m / 60, m % 60));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_the_right_instant() {
        let utc = parse_upstream_time("2025-02-19T02:50:20+0000").unwrap();
        let cst = parse_upstream_time("2025-02-19T10:50:20+0800").unwrap();
        assert_eq!(utc, cst);
        assert_eq!(utc.seconds, 1_739_933_420);
        assert_eq!(
            parse_upstream_time("2025-02-19T02:50:20-0130")
                .unwrap()
                .seconds,
            1_739_933_420 + 5400
        );
        assert_eq!(parse_upstream_time("2025-02-19T02:50:20Z"), Some(utc));
    }

    #[test]
    fn bad_times_are_rejected() {
        for bad in [
            "",
            "2025-02-19",
            "2025-02-19 02:50:20+0000",
            "2025-02-19T02:50:20+000",
            "2025-13-19T02:50:20+0000",
            "2025-02-19T25:50:20+0000",
            "2025-02-19T02:50:20+0000x",
            "２025-02-19T02:50:20+0000",
        ] {
            assert_eq!(parse_upstream_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_agree_with_prosts_parser() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let (y, mo, d) = (rng.i64(1..=9999), rng.i64(0..=13), rng.i64(0..=32));
            let (h, mi, s) = (rng.i64(0..=24), rng.i64(0..=60), rng.i64(0..=61));
            let (oh, om) = (rng.i64(0..=24), rng.i64(0..=60));
            let sign = if rng.bool() { '+' } else { '-' };
            let zone = match rng.u8(..3) {
                0 => "Z".to_owned(),
                1 => format!("{sign}{oh:02}{om:02}"),
                _ => format!("{sign}{oh:02}:{om:02}"),
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{zone}");
            // prost reads the colon-less offset only with a colon.
            let rfc3339 = if zone.len() == 5 {
                format!("{}:{}", &text[..text.len() - 2], &text[text.len() - 2..])
            } else {
                text.clone()
            };
            let expected: Option<Timestamp> = rfc3339.parse().ok();
            assert_eq!(parse_upstream_time(&text), expected, "{text}");
        }
    }

    #[test]
    fn format_round_trips() {
        for off in [0, 480, -90] {
            let s = format_upstream_time(1_739_933_420, off);
            assert_eq!(
                parse_upstream_time(&s).unwrap().seconds,
                1_739_933_420,
                "{s}"
            );
        }
        assert_eq!(
            format_upstream_time(1_739_933_420, 480),
            "2025-02-19T10:50:20+0800"
        );
    }
}
