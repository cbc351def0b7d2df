//! What the load generator reads about processes: CPU time (utime + stime from
//! `/proc/PID/stat`) and resident memory (`VmRSS` and its peak `VmHWM` from
//! `/proc/PID/status`), the open-files
//! limit it raises to hold thousands of connections, and the median of a few samples.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// CPU time the process has used so far, user and system, all threads.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may hold spaces; the fields after it are plain.
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).with_context(|| format!("field {} of {path}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_micros(total * 1_000_000 / per_second))
}

/// The process's resident memory in KiB.
pub fn rss_kb(pid: u32) -> Result<u64> {
    status_kb(pid, "VmRSS")
}

/// The most resident memory the process has held at any time, in KiB.
pub fn peak_rss_kb(pid: u32) -> Result<u64> {
    status_kb(pid, "VmHWM")
}

/// A field of `/proc/PID/status` given in kB.
fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// Raises this process's open-files limit to at least `needed` (children inherit it) and
/// returns the new limit.
pub fn raise_open_files(needed: u64) -> Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return Ok(current);
    }
    let maximum = limit.maximum.unwrap_or(u64::MAX);
    if maximum < needed {
        bail!("{needed} open files are needed but the hard limit is {maximum}; raise it (`ulimit -Hn`) or use fewer nodes");
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(needed), maximum: limit.maximum })
        .with_context(|| format!("raising the open-files limit from {current} to {needed}"))?;
    Ok(needed)
}

/// The median of `samples` (the mean of the middle two for an even count); 0 when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(rss_kb(pid).unwrap() > 0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
