//! Go's duration syntax (`1h30m`, `-1m`, `1.5s`), as the policy's `checkPeriod` uses it:
//! signed, so that a negative period can be reported the way Tailscale reports it.

/// Nanoseconds, signed.
pub type Nanos = i128;

const UNITS: [(&str, Nanos); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration; the error text is Go's (`time: invalid duration "abc"`).
pub fn parse(text: &str) -> Result<Nanos, String> {
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
        let scale = UNITS
            .iter()
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
pub fn format(nanos: Nanos) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        assert_eq!(parse("1h").unwrap(), 3_600_000_000_000);
        assert_eq!(parse("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse("-1m").unwrap(), -60_000_000_000);
        assert_eq!(parse("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse("abc").unwrap_err(), "time: invalid duration \"abc\"");
        assert_eq!(parse("1").unwrap_err(), "time: missing unit in duration \"1\"");
        assert!(parse("1d").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err() && parse("-").is_err() && parse(".s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(parse("-1m").unwrap()), "-1m0s");
        assert_eq!(format(parse("168h0m1s").unwrap()), "168h0m1s");
        assert_eq!(format(parse("90s").unwrap()), "1m30s");
        assert_eq!(format(parse("1.5s").unwrap()), "1.5s");
        assert_eq!(format(parse("1500ms").unwrap()), "1.5s");
        assert_eq!(format(parse("2ms").unwrap()), "2ms");
        assert_eq!(format(0), "0s");
    }
}
