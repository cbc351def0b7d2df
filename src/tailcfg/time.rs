//! Times on the wire: RFC 3339 in UTC, exactly as chrono's serde writes them
//! (`2026-01-02T03:04:05Z`, with 3, 6 or 9 fraction digits when the nanoseconds need them),
//! but written digit by digit instead of through `core::fmt`. Every presence patch carries a
//! `LastSeen`, one per peer per session: in a reconnect storm of 2,000 nodes that is millions
//! of times, and chrono's formatting was 3% of the server's CPU. Incoming times read Go's zero
//! time (year 1) as absent.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest form written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Reads an optional time, treating Go's zero time (year 1) as absent.
pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let t = Option::<DateTime<Utc>>::deserialize(d)?;
    Ok(t.filter(|t| t.year() > 1))
}

/// Writes a time as chrono does.
pub(crate) fn ser<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match rfc3339(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// Writes a present time as chrono does (absent ones are skipped by the field).
pub(crate) fn ser_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser(t, s),
        None => s.serialize_none(),
    }
}

/// `t` in `buf`, or `None` for what chrono writes differently (years outside 0 to 9999, leap
/// seconds), left to chrono.
fn rfc3339<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; MAX_LEN]) -> Option<&'a str> {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = Out { buf, len: 0 };
    out.digits(year as u32, 4);
    out.byte(b'-');
    out.digits(t.month(), 2);
    out.byte(b'-');
    out.digits(t.day(), 2);
    out.byte(b'T');
    out.digits(t.hour(), 2);
    out.byte(b':');
    out.digits(t.minute(), 2);
    out.byte(b':');
    out.digits(t.second(), 2);
    let fraction = match nanos {
        0 => None,
        n if n % 1_000_000 == 0 => Some((n / 1_000_000, 3)),
        n if n % 1_000 == 0 => Some((n / 1_000, 6)),
        n => Some((n, 9)),
    };
    if let Some((value, count)) = fraction {
        out.byte(b'.');
        out.digits(value, count);
    }
    out.byte(b'Z');
    let Out { buf, len } = out;
    std::str::from_utf8(&buf[..len]).ok()
}

/// A cursor over the buffer a time is written into.
struct Out<'a> {
    buf: &'a mut [u8; MAX_LEN],
    len: usize,
}

impl Out<'_> {
    /// `value` in `count` decimal digits, zero-padded.
    fn digits(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.byte(b'0' + (value / 10u32.pow(i) % 10) as u8);
        }
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn written(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        ser(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_each_precision_as_chrono_does() {
        let base = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [0, 500_000_000, 123_000, 624_706_898, 1, 999_999_999] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(written(&t), serde_json::to_string(&t).unwrap(), "{nanos} ns");
        }
        assert_eq!(written(&base), "\"2026-01-02T03:04:05Z\"");
    }

    #[test]
    fn leaves_other_years_to_chrono() {
        let far = Utc.with_ymd_and_hms(12026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(written(&far), serde_json::to_string(&far).unwrap());
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(secs in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000, round in 0usize..4) {
            let nanos = [nanos, nanos / 1_000 * 1_000, nanos / 1_000_000 * 1_000_000, 0][round];
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            prop_assert_eq!(written(&t), serde_json::to_string(&t).unwrap());
        }
    }
}
