use crate::Totals;
use crate::proto::WorkerSample;
use std::time::Duration;

/// Events per second between two readings of a cumulative counter taken `interval` apart.
pub fn per_second(prev: u64, cur: u64, interval: Duration) -> f64 {
    let secs = interval.as_secs_f64();
    if secs > 0.0 { cur.saturating_sub(prev) as f64 / secs } else { 0.0 }
}

/// Events per minute between two readings of a cumulative counter taken `interval` apart.
pub fn per_minute(prev: u64, cur: u64, interval: Duration) -> f64 {
    per_second(prev, cur, interval) * 60.0
}

/// The share of `interval` covered by the growth of a cumulative nanosecond counter (for example busy
/// time), clamped to `0.0..=1.0`.
pub fn busy_ratio(prev_nanos: u64, cur_nanos: u64, interval: Duration) -> f64 {
    let secs = interval.as_secs_f64();
    if secs > 0.0 { (cur_nanos.saturating_sub(prev_nanos) as f64 / 1e9 / secs).clamp(0.0, 1.0) } else { 0.0 }
}

/// **Definition:** the worker's busy time growth over the interval, divided by the interval.
///
/// **Interpretation:** near 1.0 the worker is saturated or stalled; near 0.0 it is mostly parked.
pub fn worker_busy_ratio(prev: &WorkerSample, cur: &WorkerSample, interval: Duration) -> f64 {
    busy_ratio(prev.busy_nanos, cur.busy_nanos, interval)
}

/// Polls per second completed by a worker over the interval.
pub fn worker_polls_per_second(prev: &WorkerSample, cur: &WorkerSample, interval: Duration) -> f64 {
    per_second(prev.poll_count, cur.poll_count, interval)
}

/// Stalls per minute over the interval between two [`Totals`].
pub fn stalls_per_minute(prev: &Totals, cur: &Totals, interval: Duration) -> f64 {
    per_minute(prev.stall_count, cur.stall_count, interval)
}

/// Polls per second over the interval between two [`Totals`].
pub fn polls_per_second(prev: &Totals, cur: &Totals, interval: Duration) -> f64 {
    per_second(prev.poll_count, cur.poll_count, interval)
}
