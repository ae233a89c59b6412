//! Small OS helpers that need no `unsafe` (this crate forbids it; the probes crate holds all unsafe code).

/// The calling thread's Linux thread id, read once per thread from `/proc/thread-self` (a link to
/// `<pid>/task/<tid>`). 0 where unavailable (non-Linux, or /proc not mounted).
pub(crate) fn current_tid() -> i32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
