//! The process's own figures under the names Prometheus's process collector gives them
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`, …): the
//! metrics page of Headscale carries them, and dashboards graph them. Read from `/proc/self`
//! each time the page is asked for; a figure that cannot be read is left out.

use crate::counters::Exposition;

/// The fields of `/proc/self/stat` after the command name, numbered as in proc(5) from
/// field 3 (`state`) on.
struct Stat(Vec<u64>);

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces: fields start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        // `state` is a letter; it is kept as 0 so that the numbering stays proc(5)'s.
        Some(Stat(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect()))
    }

    /// Field `n` of proc(5) (1-based; `n` ≥ 3).
    fn field(&self, n: usize) -> Option<u64> {
        self.0.get(n.checked_sub(3)?).copied()
    }
}

/// The system's boot time in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// Adds the process figures to `out`.
pub fn expose(out: &mut Exposition) {
    // SAFETY: sysconf only reads the system's configuration.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if let Some(stat) = Stat::read() {
        if let (Some(user), Some(system)) = (stat.field(14), stat.field(15)) {
            let cpu = (user + system) as f64 / ticks;
            out.metric("process_cpu_seconds_total", "counter", "User and system CPU time, in seconds.", &[("", cpu)]);
        }
        if let (Some(start), Some(boot)) = (stat.field(22), boot_time()) {
            let started = boot as f64 + start as f64 / ticks;
            out.metric(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the epoch, in seconds.",
                &[("", started)],
            );
        }
        if let Some(vsize) = stat.field(23) {
            out.metric("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.", &[("", vsize)]);
        }
        if let Some(pages) = stat.field(24) {
            // SAFETY: sysconf only reads the system's configuration.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
            let rss = pages * page;
            out.metric("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.", &[("", rss)]);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.metric("process_open_fds", "gauge", "Open file descriptors.", &[("", fds.count() as u64)]);
    }
    if let Some(limit) = crate::listen::open_file_limit() {
        out.metric("process_max_fds", "gauge", "The open file descriptor limit.", &[("", limit)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample named exactly `name`.
    fn value(page: &str, name: &str) -> f64 {
        page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap()
    }

    #[test]
    fn the_process_reports_its_memory_cpu_and_files() {
        let mut out = Exposition::default();
        expose(&mut out);
        let page = out.into_text();
        assert!(value(&page, "process_resident_memory_bytes") > 1_000_000.0, "{page}");
        assert!(value(&page, "process_virtual_memory_bytes") >= value(&page, "process_resident_memory_bytes"));
        assert!(value(&page, "process_cpu_seconds_total") >= 0.0, "{page}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = value(&page, "process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0, "started {started}, now {now}");
        assert!(value(&page, "process_open_fds") >= 3.0, "{page}");
        assert!(value(&page, "process_max_fds") >= value(&page, "process_open_fds"), "{page}");
        assert!(page.contains("# TYPE process_cpu_seconds_total counter"), "{page}");
    }
}
