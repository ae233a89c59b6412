//! Small OS helpers (this crate forbids `unsafe`; the probes crate holds all unsafe code).

/// The calling thread's Linux thread id (0 off Linux). Called once per thread, when it registers its slot.
pub(crate) fn current_tid() -> i32 {
    loopscope_probes::current_tid()
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The process-wide TSC clock. Calibrating it takes a few milliseconds, so it happens once, at the first
/// install, never on a poll.
pub(crate) fn clock() -> quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}
