//! The CLI's time and duration words, pure (the clock and the time zone
//! are parameters): `--ttl 2h`, `--expires 30d`, `--since yesterday`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

const UNITS: &str = "s, m, h, d or w (e.g. 90m, 2h, 1h30m, 30d)";

/// A duration in seconds: plain seconds (`7200`) or numbers with units,
/// one after the other (`2h`, `90m`, `1h30m`, `30d`, `2w`).
pub fn parse_duration(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(format!("no duration given: use plain seconds or {UNITS}"));
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("bad duration {s:?}: use plain seconds or {UNITS}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "" => {
                return Err(format!(
                    "bad duration {s:?}: give a unit after every number but alone ({UNITS})"
                ))
            }
            u => return Err(format!("bad duration unit {u:?} in {s:?}: use {UNITS}")),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(mult)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
    }
    Ok(total)
}

/// `--expires` of a token: `0`/`never`, a Unix time (digits only), or a
/// duration from now with or without a leading `+` (`30d`, `+12h`).
pub fn parse_expiry(raw: &str, now: i64) -> Result<i64, String> {
    let s = raw.trim();
    if s == "never" || s == "0" {
        return Ok(0);
    }
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    let rel = s.strip_prefix('+').unwrap_or(s);
    let d = parse_duration(rel)
        .map_err(|e| format!("{e}; or give a Unix time, or never (got {s:?})"))?;
    i64::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Which end of a range a time word names: `--until 2026-12-04` means the
/// end of that day, `--since 2026-12-04` its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// A point in time for `audit show`: epoch seconds, RFC 3339, a date
/// (`2026-12-04`, in the host's time zone `offset`), `now`, `today`,
/// `yesterday`, or a duration ago (`2h`, `30m ago`, `7d`).
pub fn parse_point(raw: &str, bound: Bound, now: i64, offset: UtcOffset) -> Result<i64, String> {
    let s = raw.trim();
    let bad = || {
        format!(
            "{s:?} is not a time: give a date (2026-12-04), today, yesterday, a time ago \
             (2h, 30m, 7d), RFC 3339 (2026-12-04T13:00:00Z) or epoch seconds"
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let today = OffsetDateTime::from_unix_timestamp(now)
        .map_err(|_| bad())?
        .to_offset(offset)
        .date();
    let day = match s {
        "now" => return Ok(now),
        "today" => Some(today),
        "yesterday" => today.previous_day(),
        _ => parse_date(s),
    };
    if let Some(day) = day {
        let start = PrimitiveDateTime::new(day, Time::MIDNIGHT)
            .assume_offset(offset)
            .unix_timestamp();
        return Ok(match bound {
            Bound::Start => start,
            Bound::End => start + 86_399,
        });
    }
    let ago = s.strip_suffix("ago").map(str::trim_end).unwrap_or(s);
    let d = parse_duration(ago).map_err(|_| bad())?;
    i64::try_from(d)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .ok_or_else(bad)
}

/// `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<Date> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7200"), Ok(7200));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration(" 45s "), Ok(45));
        assert_eq!(parse_duration("3hours"), Ok(10_800));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3y").unwrap_err().contains("unit \"y\""));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1h30").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("9999999999999999h").is_err());
    }

    #[test]
    fn token_expiry() {
        assert_eq!(parse_expiry("+30d", 100), Ok(100 + 30 * 86_400));
        assert_eq!(parse_expiry("30d", 100), Ok(100 + 30 * 86_400));
        assert_eq!(parse_expiry("+90m", 0), Ok(5400));
        assert_eq!(parse_expiry("1800000000", 0), Ok(1_800_000_000));
        assert_eq!(parse_expiry("never", 5), Ok(0));
        assert_eq!(parse_expiry("0", 5), Ok(0));
        assert!(parse_expiry("+3y", 0).is_err());
        assert!(parse_expiry("tomorrow", 0).is_err());
    }

    #[test]
    fn points_in_time() {
        // 2026-12-04T10:30:00Z
        let now = 1_796_380_200;
        let utc = UtcOffset::UTC;
        let day = 1_796_342_400; // 2026-12-04T00:00:00Z
        assert_eq!(parse_point("2026-12-04", Bound::Start, now, utc), Ok(day));
        assert_eq!(
            parse_point("2026-12-04", Bound::End, now, utc),
            Ok(day + 86_399)
        );
        assert_eq!(parse_point("today", Bound::Start, now, utc), Ok(day));
        assert_eq!(
            parse_point("yesterday", Bound::Start, now, utc),
            Ok(day - 86_400)
        );
        assert_eq!(parse_point("yesterday", Bound::End, now, utc), Ok(day - 1));
        assert_eq!(parse_point("2h", Bound::Start, now, utc), Ok(now - 7200));
        assert_eq!(
            parse_point("30m ago", Bound::Start, now, utc),
            Ok(now - 1800)
        );
        assert_eq!(parse_point("now", Bound::End, now, utc), Ok(now));
        assert_eq!(
            parse_point("2026-12-04T13:00:00Z", Bound::Start, now, utc),
            Ok(day + 13 * 3600)
        );
        assert_eq!(
            parse_point("1700000000", Bound::Start, now, utc),
            Ok(1_700_000_000)
        );
        // A date is the host's day: at UTC+2 it starts two hours earlier.
        let plus2 = UtcOffset::from_hms(2, 0, 0).unwrap();
        assert_eq!(
            parse_point("2026-12-04", Bound::Start, now, plus2),
            Ok(day - 7200)
        );
        for bad in [
            "",
            "tomorrow",
            "2026-13-01",
            "2026-12-4",
            "12/04/2026",
            "soon ago",
        ] {
            let e = parse_point(bad, Bound::Start, now, utc).unwrap_err();
            assert!(e.contains("yesterday"), "{bad}: {e}");
        }
    }
}
