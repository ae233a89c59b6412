//! Figures derived from a [`State`] for display: the header line, sorted and filtered table rows, live
//! stalls, number formatting. Pure functions, shared by the widgets, the tests and the benchmark.
//!
//! Everything here must stay cheap at 100,000 tasks: a frame sorts only the rows it shows
//! (`select_nth_unstable` + a short sort), and filters match locations once per location, not per task.

use crate::view::SortKey;
use loopscope_wire::proto::{LocationSample, TaskSample};
use loopscope_wire::state::{LocationEntry, StallEntry, State, WorkerView};
use loopscope_wire::{Location, LogHistogram, StallKind};
use std::cmp::Ordering;
use std::time::Duration;

/// A duration in the shortest readable form: `850ns`, `12.3µs`, `4.5ms`, `1.23s`, `2m03s`.
pub fn fmt_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        fmt_3(n as f64 / 1e3, "µs")
    } else if n < 1_000_000_000 {
        fmt_3(n as f64 / 1e6, "ms")
    } else if n < 60_000_000_000 {
        fmt_3(n as f64 / 1e9, "s")
    } else {
        let s = d.as_secs();
        if s < 3600 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{}h{:02}m", s / 3600, (s / 60) % 60) }
    }
}

/// Three significant digits at most (`1.23`, `12.3`, `123`), so columns stay narrow.
fn fmt_3(v: f64, unit: &str) -> String {
    if v < 10.0 {
        format!("{v:.2}{unit}")
    } else if v < 100.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// A duration given in nanoseconds; see [`fmt_duration`].
pub fn fmt_nanos(n: u64) -> String {
    fmt_duration(Duration::from_nanos(n))
}

/// A count with a k/M/G suffix past 10,000: `9999`, `12.3k`, `4.56M`.
pub fn fmt_count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else if n < 10_000_000 {
        fmt_3(n as f64 / 1e3, "k")
    } else if n < 10_000_000_000 {
        fmt_3(n as f64 / 1e6, "M")
    } else {
        fmt_3(n as f64 / 1e9, "G")
    }
}

/// A rate with a k/M suffix: `0`, `12.5`, `340`, `12.3k`.
pub fn fmt_rate(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "0".into()
    } else if r < 100.0 {
        format!("{r:.1}")
    } else if r < 10_000.0 {
        format!("{r:.0}")
    } else if r < 10_000_000.0 {
        fmt_3(r / 1e3, "k")
    } else {
        fmt_3(r / 1e6, "M")
    }
}

/// The blocks sparklines are drawn with, lowest first.
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The last `width` values as a one-line sparkline scaled to `max(values, floor)`. A series of zeros is a
/// flat line of the lowest block, so an idle queue still reads as "measured, empty".
pub fn sparkline<I>(values: I, width: usize, floor: f64) -> String
where
    I: DoubleEndedIterator<Item = f64> + ExactSizeIterator,
{
    let skip = values.len().saturating_sub(width);
    let vals: Vec<f64> = values.skip(skip).collect();
    let max = vals.iter().copied().fold(floor, f64::max);
    let mut s: String = vals
        .iter()
        .map(|v| {
            let i = if max > 0.0 { ((v / max) * (SPARK.len() - 1) as f64).round() as usize } else { 0 };
            SPARK[i.min(SPARK.len() - 1)]
        })
        .collect();
    // Right-align: the newest value sits at the right edge, as in htop and bottom.
    let pad = width.saturating_sub(vals.len());
    s.insert_str(0, &" ".repeat(pad));
    s
}

/// The dashboard's header figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderStats {
    /// Time since the agent started.
    pub uptime: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Alive tasks, as tokio counts them.
    pub alive_tasks: u64,
    /// Polls per second over the last tick.
    pub polls_per_second: f64,
    /// Mean busy ratio of the workers over the last tick (0.0..=1.0).
    pub busy_ratio: f64,
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

/// Computes the header figures.
pub fn header_stats(state: &State) -> HeaderStats {
    let workers: Vec<&WorkerView> = state.workers().collect();
    let busy: Vec<f64> = workers.iter().filter_map(|w| w.busy_ratio.latest().copied()).collect();
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
        alive_tasks: state.global().alive_tasks,
        polls_per_second: state.polls_per_second_history().latest().copied().unwrap_or(0.0),
        busy_ratio,
        stalls_per_minute: state.stalls_per_minute(),
        stalls_total: state.totals().stall_count,
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
/// people recognize; absolute paths would eat the whole column.
pub fn short_location(l: &Location) -> String {
    let parts: Vec<&str> = l.file.rsplit('/').take(2).collect();
    let file: Vec<&str> = parts.into_iter().rev().collect();
    format!("{}:{}:{}", file.join("/"), l.line, l.column)
}

/// A sort key that orders histograms by their 99th percentile: the index of the bucket holding it (+1; 0 when
/// empty). Integer-only, because it runs for every task of every frame when sorting by p99; it uses the same
/// rank rule as [`LogHistogram::quantile`] (rank = ceil(0.99 × count)), in integers.
fn p99_nanos(h: &LogHistogram) -> u64 {
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
fn location_matches(state: &State, needle: &str) -> Vec<bool> {
    let len = state.locations().map(|e| e.id as usize + 1).max().unwrap_or(0);
    let mut m = vec![false; len];
    for e in state.locations() {
        m[e.id as usize] = e.location.to_string().to_lowercase().contains(needle);
    }
    m
}

fn task_key(t: &TaskSample, sort: SortKey) -> u64 {
    match sort {
        SortKey::Busy => t.busy_nanos,
        SortKey::Polls => t.poll_count,
        SortKey::MaxPoll => t.max_poll_nanos,
        SortKey::P99Poll => p99_nanos(&t.poll_histogram),
        SortKey::SlowPolls => t.slow_poll_count,
        SortKey::SchedP99 => t.schedule_latency.as_ref().map_or(0, |l| p99_nanos(&l.histogram)),
        SortKey::Stalls => t.stall_count,
        SortKey::Name => t.id,
    }
}

/// Live tasks, filtered and ordered, of which only the shown window is ever fully sorted.
#[derive(Debug)]
pub struct TaskOrder<'a> {
    /// (sort key, task id, task); the id breaks ties so the order is stable from frame to frame.
    rows: Vec<(u64, u64, &'a TaskSample)>,
    descending: bool,
}

impl<'a> TaskOrder<'a> {
    /// Filters the live tasks of `state` (case-insensitive substring of the spawn location, or of the task
    /// id) and prepares them for ordering by `sort`.
    pub fn new(state: &'a State, filter: &str, sort: SortKey, descending: bool) -> Self {
        let needle = filter.trim().to_lowercase();
        let locs = (!needle.is_empty()).then(|| location_matches(state, &needle));
        let id_filter = !needle.is_empty() && needle.bytes().all(|b| b.is_ascii_digit());
        let rows = state
            .tasks()
            .values()
            .filter(|t| match &locs {
                None => true,
                Some(m) => {
                    m.get(t.location as usize).copied().unwrap_or(false)
                        || (id_filter && t.id.to_string().contains(&needle))
                }
            })
            .map(|t| (task_key(t, sort), t.id, t))
            .collect();
        TaskOrder { rows, descending }
    }

    /// Tasks that passed the filter.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no task passed the filter.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows `start..start + len` of the ordered list. Costs O(n + (start + len) log(start + len)): the rows
    /// after the window are never sorted.
    pub fn window(&mut self, start: usize, len: usize) -> Vec<&'a TaskSample> {
        let desc = self.descending;
        let cmp = move |a: &(u64, u64, &TaskSample), b: &(u64, u64, &TaskSample)| -> Ordering {
            let by_key = if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) };
            by_key.then(a.1.cmp(&b.1))
        };
        let end = start.saturating_add(len).min(self.rows.len());
        if start >= end {
            return Vec::new();
        }
        if end < self.rows.len() {
            self.rows.select_nth_unstable_by(end, cmp);
        }
        let head = &mut self.rows[..end];
        head.sort_unstable_by(cmp);
        head[start..].iter().map(|r| r.2).collect()
    }
}

/// One row of the by-location table.
#[derive(Clone, Debug, PartialEq)]
pub struct LocationRow<'a> {
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
    rows.into_iter().map(|(e, _)| LocationRow { location: &e.location, stats: e.stats.as_ref() }).collect()
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
mod tests {
    use super::*;
    use loopscope_wire::proto::{FullState, LocationInfo, ServerMessage, Tick, full_state_messages};

    #[test]
    fn durations_counts_and_rates_read_well() {
        assert_eq!(fmt_nanos(850), "850ns");
        assert_eq!(fmt_nanos(12_345), "12.3µs");
        assert_eq!(fmt_nanos(4_500_000), "4.50ms");
        assert_eq!(fmt_nanos(1_234_000_000), "1.23s");
        assert_eq!(fmt_duration(Duration::from_secs(123)), "2m03s");
        assert_eq!(fmt_duration(Duration::from_secs(7300)), "2h01m");
        assert_eq!(fmt_count(9_999), "9999");
        assert_eq!(fmt_count(12_345), "12.3k");
        assert_eq!(fmt_count(4_560_000), "4560k");
        assert_eq!(fmt_count(45_600_000), "45.6M");
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(12.54), "12.5");
        assert_eq!(fmt_rate(f64::NAN), "0");
        assert_eq!(fmt_rate(12_300.0), "12.3k");
    }

    #[test]
    fn sparkline_scales_and_right_aligns() {
        let v = [0.0, 1.0, 2.0, 4.0];
        assert_eq!(sparkline(v.iter().copied(), 6, 0.0), "  ▁▃▅█");
        assert_eq!(sparkline(v.iter().copied(), 2, 0.0), "▅█", "keeps the newest values");
        assert_eq!(sparkline([0.0, 0.0].iter().copied(), 2, 1.0), "▁▁");
        assert_eq!(sparkline([1.0].iter().copied(), 1, 8.0), "▂", "the floor keeps small values small");
    }

    fn state_with_tasks(n: u64) -> State {
        let mut s = State::new();
        let full = FullState {
            locations: vec![
                LocationInfo { id: 0, location: Location::new("src/handlers.rs", 10, 5) },
                LocationInfo { id: 1, location: Location::new("src/db.rs", 20, 9) },
            ],
            ..FullState::default()
        };
        let tasks = (0..n)
            .map(|id| {
                let mut t = TaskSample::new(id, (id % 2) as u32);
                t.busy_nanos = (id * 7919) % 1000;
                t.poll_count = id;
                t
            })
            .collect();
        for m in full_state_messages(full, tasks) {
            s.apply(&m);
        }
        s
    }

    #[test]
    fn task_window_matches_a_full_sort_and_filters_by_location_or_id() {
        let s = state_with_tasks(1000);
        let mut all: Vec<&TaskSample> = s.tasks().values().collect();
        all.sort_by(|a, b| b.busy_nanos.cmp(&a.busy_nanos).then(a.id.cmp(&b.id)));
        let mut order = TaskOrder::new(&s, "", SortKey::Busy, true);
        assert_eq!(order.len(), 1000);
        let ids = |v: &[&TaskSample]| v.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(&order.window(0, 10)), ids(&all[0..10]));
        assert_eq!(ids(&order.window(500, 7)), ids(&all[500..507]));
        assert_eq!(order.window(999, 10).len(), 1);
        assert!(order.window(2000, 10).is_empty());

        let mut db = TaskOrder::new(&s, "DB.rs", SortKey::Polls, false);
        assert_eq!(db.len(), 500);
        assert_eq!(ids(&db.window(0, 3)), vec![1, 3, 5]);
        let by_id = TaskOrder::new(&s, "999", SortKey::Polls, false);
        assert_eq!(by_id.len(), 1);
    }

    #[test]
    fn locations_sort_with_names_breaking_ties() {
        let s = state_with_tasks(4);
        let rows = location_rows(&s, "", SortKey::Name, false);
        let names: Vec<String> = rows.iter().map(|r| r.location.to_string()).collect();
        assert_eq!(names, vec!["src/db.rs:20:9", "src/handlers.rs:10:5"]);
        assert_eq!(location_rows(&s, "handlers", SortKey::Busy, true).len(), 1);
    }

    #[test]
    fn header_sums_what_was_dropped() {
        let mut s = state_with_tasks(1);
        let mut t = Tick { seq: 5, uptime_nanos: 1_000_000_000, ..Tick::default() };
        t.dropped.untracked_tasks = 3;
        s.apply(&ServerMessage::Tick(Box::new(t)));
        let h = header_stats(&s);
        // Ticks 1..=4 never arrived.
        assert_eq!(h.dropped_total, 3 + 4);
        assert_eq!(h.dropped_detail, vec!["3 untracked tasks".to_string(), "4 missed ticks".to_string()]);
    }

    #[test]
    fn shown_buckets_cover_the_data_and_a_minimum() {
        let mut h = LogHistogram::new(16);
        h.record(Duration::from_micros(3));
        h.record(Duration::from_millis(3));
        let r = shown_buckets(&h, 4);
        assert_eq!(r, 2..13);
        assert_eq!(shown_buckets(&LogHistogram::new(16), 6), 0..6);
        let mut one = LogHistogram::new(16);
        one.record(Duration::from_secs(10));
        assert_eq!(shown_buckets(&one, 4), 12..16);
        assert_eq!(bucket_label(&h, 0), "<1.02µs");
        assert_eq!(bucket_label(&h, 15), "≥16.8ms");
    }

    #[test]
    fn short_locations_keep_two_path_components() {
        assert_eq!(short_location(&Location::new("/home/me/app/src/main.rs", 3, 4)), "src/main.rs:3:4");
        assert_eq!(short_location(&Location::new("main.rs", 3, 4)), "main.rs:3:4");
    }
}
