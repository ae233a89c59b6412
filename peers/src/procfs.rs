//! The figures a child reads about itself from `/proc` (Linux only, like loopscope's probes).

use std::fs;

/// CPU time of every live thread of this process, in ns, from `/proc/self/task/*/schedstat` (nanosecond
/// resolution, unlike `/proc/self/stat`'s 10 ms ticks). Threads that exited are missed, so measure a window
/// in which none exits: the runtimes here keep their workers, and agents keep their threads, for the run.
pub fn cpu_ns() -> u64 {
    let Ok(dir) = fs::read_dir("/proc/self/task") else { return 0 };
    dir.flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), or 0 where it can't be read.
fn status_kib(field: &str) -> u64 {
    let Ok(s) = fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident set now, in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// The largest resident set this process has had, in KiB. Each run is a fresh process, so this is the peak
/// of that run alone.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM")
}

/// The machine's 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
