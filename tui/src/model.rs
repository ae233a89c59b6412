//! Figures derived from a [`State`] for display: the header line, sorted and filtered table rows, live
//! stalls, number formatting. Pure functions, shared by the widgets, the tests and the benchmark.
//!
//! Everything here must stay cheap at 100,000 tasks: a frame sorts only the rows it shows
//! (`select_nth_unstable` + a short sort), and filters match locations once per location, not per task.

use crate::view::SortKey;
use loopscope_wire::proto::{LocationSample, TaskSample};
use loopscope_wire::state::{History, LocationEntry, StallEntry, State, WorkerView};
use loopscope_wire::{Location, LogHistogram, StallKind};
use std::time::Duration;

mod format;
mod tasks;

pub use format::{fmt_count, fmt_duration, fmt_nanos, fmt_rate, sparkline};
pub use tasks::{TaskOrder, TaskRow, TaskScope, TaskStalls, polls_in_flight, stalls_by_task};

/// The dashboard's header figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderStats {
    /// Time since the agent started.
    pub uptime: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Alive tasks, as tokio counts them, averaged over the window.
    pub alive_tasks: u64,
    /// Polls per second over the window.
    pub polls_per_second: f64,
    /// Mean busy ratio of the workers over the window (0.0..=1.0).
    pub busy_ratio: f64,
    /// The window, in words (`1s avg`).
    pub window: String,
    /// Stalls per minute over the last minute.
    pub stalls_per_minute: f64,
    /// Stalls since the agent started.
    pub stalls_total: u64,
    /// Recent first-poll delay median (how long new work waits for a worker).
    pub sched_p50: Option<Duration>,
    /// Recent first-poll delay 99th percentile.
    pub sched_p99: Option<Duration>,
    /// Everything dropped anywhere (agent, stream, this client), summed; 0 when the numbers are complete.
    pub dropped_total: u64,
    /// What was dropped, in words (only the non-zero parts).
    pub dropped_detail: Vec<String>,
    /// Names of the active probes.
    pub probes_active: Vec<String>,
    /// Names of the probes that are not active.
    pub probes_inactive: Vec<String>,
}

/// How often the agent samples (from its greeting; 250 ms, its default, until the greeting arrives).
pub fn sample_interval(state: &State) -> Duration {
    state.hello().map_or(Duration::from_millis(250), |h| h.sample_interval).max(Duration::from_millis(1))
}

/// How many of the latest samples a rate window of `window` spans: at least one.
pub fn window_samples(state: &State, window: Duration) -> usize {
    let n = window.as_secs_f64() / sample_interval(state).as_secs_f64();
    (n.round() as usize).max(1)
}

/// The window rates are averaged over, in words: `1s avg` (or `per 250ms sample` when the window is one
/// sample).
pub fn fmt_window(state: &State, window: Duration) -> String {
    let n = window_samples(state, window);
    let interval = sample_interval(state);
    let whole = |d: Duration| {
        if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
    };
    if n == 1 {
        format!("per {} sample", whole(interval))
    } else {
        format!("{} avg", whole(interval * u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// The mean of the latest `n` values of a series (each one sample interval long, so the mean of the rates
/// is the rate over the window), or `None` when it is empty.
pub fn window_mean(h: &History<f64>, n: usize) -> Option<f64> {
    let vals: Vec<f64> = h.iter().rev().take(n.max(1)).copied().collect();
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// Computes the header figures, rates and the task count averaged over `window` (raw samples flicker: a
/// burst of short tasks reads `tasks 51` one sample and `tasks 2` the next).
pub fn header_stats(state: &State, window: Duration) -> HeaderStats {
    let workers: Vec<&WorkerView> = state.workers().collect();
    let n = window_samples(state, window);
    let busy: Vec<f64> = workers.iter().filter_map(|w| window_mean(&w.busy_ratio, n)).collect();
    let busy_ratio = if busy.is_empty() { 0.0 } else { busy.iter().sum::<f64>() / busy.len() as f64 };
    let d = state.dropped();
    let sd = state.state_dropped();
    let st = state.stream();
    let parts = [
        (d.untracked_tasks, "untracked tasks"),
        (d.untracked_locations, "untracked locations"),
        (d.events, "stall events"),
        (d.watchdog_messages, "watchdog messages"),
        (d.stall_details, "stall details"),
        (st.client_dropped_frames, "frames to this client"),
        (st.missed_ticks, "missed ticks"),
        (sd.tasks + sd.locations + sd.workers + sd.probes, "over display limits"),
    ];
    let dropped_total = parts.iter().map(|(n, _)| n).sum();
    let dropped_detail = parts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    let wait = &state.waits().first_poll_delay;
    HeaderStats {
        uptime: state.uptime(),
        workers: workers.len().max(state.global().workers as usize),
        alive_tasks: {
            let recent: Vec<u64> = state.alive_tasks_history().iter().rev().take(n).copied().collect();
            if recent.is_empty() {
                state.global().alive_tasks
            } else {
                (recent.iter().sum::<u64>() as f64 / recent.len() as f64).round() as u64
            }
        },
        polls_per_second: window_mean(state.polls_per_second_history(), n).unwrap_or(0.0),
        window: fmt_window(state, window),
        busy_ratio,
        stalls_per_minute: state.stalls_per_minute(),
        // The stall log can run ahead of the totals (a stall's event arrives before the tick that counts it):
        // the header never shows fewer stalls than the list beside it.
        stalls_total: state.totals().stall_count.max(state.stalls().count() as u64),
        sched_p50: wait.recent_p50_nanos.map(Duration::from_nanos),
        sched_p99: wait.recent_p99_nanos.map(Duration::from_nanos),
        dropped_total,
        dropped_detail,
        probes_active: state.probes().iter().filter(|p| p.active).map(|p| p.name.clone()).collect(),
        probes_inactive: state.probes().iter().filter(|p| !p.active).map(|p| p.name.clone()).collect(),
    }
}

/// A stall that is holding a worker right now.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveStall {
    /// How long it has run, as of `now`.
    pub elapsed: Duration,
    /// The task.
    pub task_id: u64,
    /// Where the task was spawned.
    pub location: Option<Location>,
}

/// The stall in progress on worker `w`, if any, with its elapsed time ticking up to `now_unix_nanos`.
///
/// A stall counts as in progress while its `Ended` event has not arrived *and* the worker's latest sample
/// either still shows the same task polling or is older than the stall's latest event. The second
/// condition matters: the agent's rate limit may suppress an `Ended` event, and a stall must not tick
/// forever because of that.
pub fn live_stall(state: &State, w: &WorkerView, now_unix_nanos: u64) -> Option<LiveStall> {
    let polling = w.sample.current_poll.as_ref();
    let entry = state.stalls().find(|e: &&StallEntry| {
        !e.ended
            && e.latest.kind == StallKind::WorkerBlocked
            && e.latest.worker == Some(w.sample.index)
            && (polling.is_some_and(|p| p.task_id == e.latest.task_id)
                || e.latest.at_unix_nanos >= state.sampled_at_unix_nanos())
    });
    if let Some(e) = entry {
        let ev = &e.latest;
        let started = ev.at_unix_nanos.saturating_sub(u64::try_from(ev.elapsed.as_nanos()).unwrap_or(u64::MAX));
        let elapsed = Duration::from_nanos(now_unix_nanos.saturating_sub(started)).max(ev.elapsed);
        return Some(LiveStall { elapsed, task_id: ev.task_id, location: ev.location.clone() });
    }
    // No event (yet, or rate-limited away), but the sample itself shows a poll past the threshold.
    let threshold = state.hello().map_or(Duration::from_millis(10), |h| h.stall_threshold);
    let p = polling?;
    let elapsed = Duration::from_nanos(p.elapsed_nanos);
    (elapsed >= threshold).then(|| LiveStall {
        elapsed,
        task_id: p.task_id,
        location: p.location.and_then(|id| state.location(id)).map(|l| l.location.clone()),
    })
}

/// `file:line:col` shortened to its last two path components (`src/handlers.rs:66:26`), which is what
/// people recognize; absolute paths would eat the whole column. Every screen names locations this way (lists,
/// detail panes), as stack frames do ([`loopscope_wire::Frame::display_short`]), so one file never appears
/// under two names.
pub fn short_location(l: &Location) -> String {
    let parts: Vec<&str> = l.file.rsplit('/').take(2).collect();
    let file: Vec<&str> = parts.into_iter().rev().collect();
    format!("{}:{}:{}", file.join("/"), l.line, l.column)
}

/// A sort key that orders histograms by their 99th percentile: the index of the bucket holding it (+1; 0 when
/// empty). Integer-only, because it runs for every task of every frame when sorting by p99; it uses the same
/// rank rule as [`LogHistogram::quantile`] (rank = ceil(0.99 × count)), in integers.
pub(crate) fn p99_nanos(h: &LogHistogram) -> u64 {
    let total: u64 = h.counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (total.saturating_mul(99).div_ceil(100)).max(1);
    let mut seen = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return i as u64 + 1;
        }
    }
    h.counts.len() as u64
}

/// The 99th percentile for display, from power-of-two buckets: the bucket's upper bound, but never more
/// than the known maximum (a bound above the slowest poll ever seen reads as a bug); in the open-ended last
/// bucket, `>lower bound` (the histogram cannot say more).
pub fn fmt_p99(h: &LogHistogram, max_nanos: u64) -> String {
    let Some(q) = h.quantile(0.99) else { return "-".into() };
    let last = h.counts.len().saturating_sub(1);
    let (lo, hi) = h.bucket_range(last);
    if hi.is_none() && q > lo && Duration::from_nanos(max_nanos) > lo {
        return format!(">{}", fmt_duration(lo));
    }
    fmt_duration(if max_nanos > 0 { q.min(Duration::from_nanos(max_nanos)) } else { q })
}

/// A task's 99th percentile poll duration, formatted (see [`fmt_p99`]).
pub fn task_p99(t: &TaskSample) -> String {
    fmt_p99(&t.poll_histogram, t.max_poll_nanos)
}

/// A task's 99th percentile wake→poll latency, formatted, when measured.
pub fn task_sched_p99(t: &TaskSample) -> String {
    t.schedule_latency.as_ref().map_or_else(|| "-".into(), |l| fmt_p99(&l.histogram, l.max_nanos))
}

/// Which locations a filter matches, decided once per location (there are few of them, and many tasks), as a
/// table indexed by location id (ids are small and dense: the agent numbers them from 0).
pub(crate) fn location_matches(state: &State, needle: &str) -> Vec<bool> {
    let len = state.locations().map(|e| e.id as usize + 1).max().unwrap_or(0);
    let mut m = vec![false; len];
    for e in state.locations() {
        m[e.id as usize] = e.location.to_string().to_lowercase().contains(needle);
    }
    m
}

/// One row of the by-location table.
#[derive(Clone, Debug, PartialEq)]
pub struct LocationRow<'a> {
    /// The stream's id for it (what the selection follows).
    pub id: u32,
    /// The location.
    pub location: &'a Location,
    /// Its counters (all zero until the agent sent them).
    pub stats: Option<&'a LocationSample>,
}

fn location_key(s: Option<&LocationSample>, sort: SortKey) -> u64 {
    let Some(s) = s else { return 0 };
    match sort {
        SortKey::Busy => s.busy_nanos,
        SortKey::Polls => s.poll_count,
        SortKey::MaxPoll => s.max_poll_nanos,
        SortKey::P99Poll => p99_nanos(&s.poll_histogram),
        SortKey::SlowPolls => s.slow_poll_count,
        SortKey::SchedP99 => s.schedule_latency.as_ref().map_or(0, |l| p99_nanos(&l.histogram)),
        SortKey::Stalls => s.stall_count,
        SortKey::Name => 0,
    }
}

/// Every location that passes the filter, ordered. Locations are few (bounded by the agent's
/// `max_locations`), so they are sorted whole.
pub fn location_rows<'a>(state: &'a State, filter: &str, sort: SortKey, descending: bool) -> Vec<LocationRow<'a>> {
    let needle = filter.trim().to_lowercase();
    let mut rows: Vec<(&LocationEntry, String)> = state
        .locations()
        .map(|e| (e, e.location.to_string()))
        .filter(|(_, name)| needle.is_empty() || name.to_lowercase().contains(&needle))
        .collect();
    rows.sort_by(|(a, an), (b, bn)| {
        let by_key = if sort == SortKey::Name {
            an.cmp(bn)
        } else {
            location_key(a.stats.as_ref(), sort).cmp(&location_key(b.stats.as_ref(), sort))
        };
        let by_key = if descending { by_key.reverse() } else { by_key };
        by_key.then_with(|| an.cmp(bn))
    });
    rows.into_iter().map(|(e, _)| LocationRow { id: e.id, location: &e.location, stats: e.stats.as_ref() }).collect()
}

/// The stall log, newest first, filtered on its location, task id, classification and frames.
pub fn stall_rows<'a>(state: &'a State, filter: &str) -> Vec<&'a StallEntry> {
    let needle = filter.trim().to_lowercase();
    state
        .stalls()
        .filter(|e| {
            if needle.is_empty() {
                return true;
            }
            let ev = &e.latest;
            let loc = ev.location.as_ref().map(ToString::to_string).unwrap_or_default();
            let class = e.culprit.as_ref().map(|c| c.classification.to_string()).unwrap_or_default();
            let frame = e.culprit.as_ref().and_then(|c| c.first_user_frame()).map(|f| f.display_short());
            format!("{} {loc} {class} {}", ev.task_id, frame.unwrap_or_default()).to_lowercase().contains(&needle)
        })
        .collect()
}

/// A bucket's range as a short label: `<1.0µs`, `1.0µs`, ..., `≥4.29s` (the lower bound; buckets double).
pub fn bucket_label(h: &LogHistogram, i: usize) -> String {
    let (lo, hi) = h.bucket_range(i);
    match hi {
        _ if i == 0 => format!("<{}", fmt_duration(hi.unwrap_or(lo))),
        None => format!("≥{}", fmt_duration(lo)),
        Some(_) => fmt_duration(lo),
    }
}

/// The range of buckets worth showing: from the first to the last non-empty one, widened to at least
/// `min_len` buckets so that a narrow distribution still shows its neighbourhood.
pub fn shown_buckets(h: &LogHistogram, min_len: usize) -> std::ops::Range<usize> {
    let n = h.counts.len();
    let first = h.counts.iter().position(|&c| c > 0);
    let last = h.counts.iter().rposition(|&c| c > 0);
    let (mut lo, mut hi) = match (first, last) {
        (Some(a), Some(b)) => (a, b + 1),
        _ => (0, n.min(min_len)),
    };
    while hi - lo < min_len.min(n) {
        if hi < n {
            hi += 1;
        }
        if hi - lo < min_len.min(n) && lo > 0 {
            lo -= 1;
        }
    }
    lo..hi
}

#[cfg(test)]
mod tests;
