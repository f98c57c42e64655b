//! `--since` and `--until`: a time ago (`7d`, `12h`, `30m`, `2w`) or a date (`2026-11-01`, or
//! RFC 3339 with its offset).

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

use super::ShellError;

/// `26h`, `3d`, `90m`, `2w`, `45s`.
pub fn duration(text: &str) -> Result<Duration, ShellError> {
    let bad = || ShellError::Usage(format!("{text:?} is not a duration like 26h, 3d or 90m"));
    let text = text.trim();
    let (number, unit) = text
        .char_indices()
        .last()
        .map(|(i, u)| (&text[..i], u))
        .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

pub fn parse(text: &str, now: SystemTime) -> Result<Timestamp, ShellError> {
    let bad = || {
        ShellError::Usage(format!(
            "{text:?} is neither a time ago (7d, 12h, 30m) nor a date (2026-11-01, 2026-11-01T08:00:00Z)"
        ))
    };
    let text = text.trim();
    if let Ok(ago) = duration(text) {
        return now.checked_sub(ago).map(Timestamp::from).ok_or_else(bad);
    }
    if text.len() == 10 {
        return format!("{text}T00:00:00Z").parse().map_err(|_| bad());
    }
    text.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_ago_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse("7d", now).unwrap().seconds,
            1_800_000_000 - 7 * 86_400
        );
        assert_eq!(
            parse("12h", now).unwrap().seconds,
            1_800_000_000 - 12 * 3600
        );
        assert_eq!(parse("2026-11-01", now).unwrap().seconds, 1_793_491_200);
        assert_eq!(
            parse("2026-11-01T08:00:00+08:00", now).unwrap().seconds,
            1_793_491_200
        );
        for bad in ["", "7", "d", "7y", "yesterday", "2026-13-01"] {
            assert!(parse(bad, now).is_err(), "{bad}");
        }
        assert_eq!(duration("26h").unwrap(), Duration::from_secs(26 * 3600));
        assert_eq!(duration("3d").unwrap(), Duration::from_secs(3 * 86_400));
        assert!(duration("26").is_err() && duration("1y").is_err());
    }
}
