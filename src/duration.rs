//! Go's duration syntax (`1h30m`, `-1m`, `1.5s`, with Go's error texts), as the policy's
//! `checkPeriod` uses it, and Headscale's config and CLI durations: Go's units plus
//! Prometheus's day, week and year (`90d`, `1w`, `1y`), never negative. A bare `0` means zero.

use std::time::Duration;

/// Nanoseconds, signed.
pub type Nanos = i128;

/// Go's units.
const GO_UNITS: &[(&str, Nanos)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The units Prometheus adds, which Headscale's config and CLI accept.
const PROMETHEUS_UNITS: &[(&str, Nanos)] =
    &[("d", 86_400_000_000_000), ("w", 604_800_000_000_000), ("y", 31_536_000_000_000_000)];

/// A duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {0:?}: expected a number with a unit, like 30s, 15m, 24h or 90d")]
pub struct DurationError(pub String);

/// Parses a config or CLI duration: `1h30m`, `90s`, `500ms`, `90d`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    match parse_with(s.trim(), &[GO_UNITS, PROMETHEUS_UNITS]) {
        Ok(n) if n >= 0 => Ok(Duration::from_nanos(n as u64)),
        _ => Err(DurationError(s.to_string())),
    }
}

/// Formats a duration the way Go prints it (`1h30m0s`), for messages and config dumps.
pub fn format_duration(d: Duration) -> String {
    format_go(d.as_nanos() as Nanos)
}

/// Parses a Go duration; the error text is Go's (`time: invalid duration "abc"`).
pub fn parse_go(text: &str) -> Result<Nanos, String> {
    parse_with(text, &[GO_UNITS])
}

/// Parses `text` with the units of `tables`, as Go's `time.ParseDuration` reads numbers,
/// signs and fractions.
fn parse_with(text: &str, tables: &[&[(&str, Nanos)]]) -> Result<Nanos, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: Nanos = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {text:?}"));
        }
        let scale = tables
            .iter()
            .flat_map(|t| t.iter())
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("time: unknown unit {unit:?} in duration {text:?}"))?;
        let whole: Nanos = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| invalid())? };
        let mut value = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut place = scale;
        for digit in frac_part.bytes().take(20) {
            place /= 10;
            value += Nanos::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > Nanos::from(i64::MAX) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

/// Writes a duration the way Go's `Duration.String` does (`1h0m0s`, `-1m0s`, `1.5s`).
pub fn format_go(nanos: Nanos) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, scale) = match n {
            0..=999 => ("ns", 1),
            1_000..=999_999 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(n, scale));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = n / 60_000_000_000 % 60;
    let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `n / scale` with the remainder as decimals, trailing zeros dropped.
fn fraction(n: u128, scale: u128) -> String {
    let whole = n / scale;
    let rem = n % scale;
    if rem == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// serde helpers: a duration as its text form (numbers are read as seconds).
pub mod serde_text {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(u64),
    }

    /// Writes `1h0m0s`-style text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_duration(*d))
    }

    /// Reads text with units, or a bare number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go("1h").unwrap(), 3_600_000_000_000);
        assert_eq!(parse_go("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_go("-1m").unwrap(), -60_000_000_000);
        assert_eq!(parse_go("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_go("0").unwrap(), 0);
        assert_eq!(parse_go("abc").unwrap_err(), "time: invalid duration \"abc\"");
        assert_eq!(parse_go("1").unwrap_err(), "time: missing unit in duration \"1\"");
        assert!(parse_go("1d").unwrap_err().contains("unknown unit"));
        assert!(parse_go("").is_err() && parse_go("-").is_err() && parse_go(".s").is_err());
    }

    #[test]
    fn go_durations_format_like_go() {
        assert_eq!(format_go(parse_go("-1m").unwrap()), "-1m0s");
        assert_eq!(format_go(parse_go("168h0m1s").unwrap()), "168h0m1s");
        assert_eq!(format_go(parse_go("90s").unwrap()), "1m30s");
        assert_eq!(format_go(parse_go("1.5s").unwrap()), "1.5s");
        assert_eq!(format_go(parse_go("1500ms").unwrap()), "1.5s");
        assert_eq!(format_go(parse_go("2ms").unwrap()), "2ms");
        assert_eq!(format_go(0), "0s");
    }

    #[test]
    fn parses_go_and_prometheus_units() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1h").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(parse_duration(&format_duration(Duration::from_secs(3661))).unwrap(), Duration::from_secs(3661));
    }
}
