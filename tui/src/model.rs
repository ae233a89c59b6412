//! Figures derived from a [`State`] for display: the header line, sorted and filtered table rows, live
//! stalls, number formatting. Pure functions, shared by the widgets, the tests and the benchmark.
//!
//! Everything here must stay cheap at 100,000 tasks: a frame sorts only the rows it shows
//! (`select_nth_unstable` + a short sort), and filters match locations once per location, not per task.

use crate::view::SortKey;
use loopscope_wire::proto::{LocationSample, TaskSample};
use loopscope_wire::state::{History, LocationEntry, StallEntry, State, WorkerView};
use loopscope_wire::{Location, LogHistogram, StallKind};
use std::cmp::Ordering;
use std::collections::HashMap;
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

/// What the stall log says of one task: its stalls (in the log), the time the ended ones took, and the
/// longest. The agent's task samples may predate a stall: a task that stalls and then finishes between two
/// samples is sent as "0 polls" and then only as finished (its final counts go to its location), so the log is
/// the one record of that poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStalls {
    /// Stalls of the task in the log.
    pub count: u64,
    /// Stalls that ended (their polls are complete).
    pub ended: u64,
    /// Time the ended stalls took.
    pub ended_nanos: u64,
    /// The longest stall, ended or not.
    pub longest_nanos: u64,
}

/// One row of the by-task table: a task's counters with the poll it is in right now and its stalls from the
/// log folded in, so a task that is stalling (or stalled and ended) does not read `polls 0 busy 0ns`. Every
/// figure is a lower bound of the truth, never more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskRow<'a> {
    /// The counters the agent sent (completed polls only).
    pub task: &'a TaskSample,
    /// How long its poll in progress has run, when a worker is polling it now.
    pub running: Option<Duration>,
    /// Whether the task has finished (kept for display: `LOOPSCOPE_RETAIN_FINISHED`).
    pub finished: bool,
    /// What the stall log knows of it.
    pub stalls: TaskStalls,
}

impl TaskRow<'_> {
    fn running_nanos(&self) -> u64 {
        self.running.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Polls, counting the one in progress (and stalls the sample has not counted yet).
    pub fn polls(&self) -> u64 {
        (self.task.poll_count + u64::from(self.running.is_some())).max(self.stalls.ended)
    }

    /// Time spent polling, counting the poll in progress so far.
    pub fn busy_nanos(&self) -> u64 {
        self.task.busy_nanos.saturating_add(self.running_nanos()).max(self.stalls.ended_nanos)
    }

    /// The longest poll, the one in progress included.
    pub fn max_poll_nanos(&self) -> u64 {
        self.task.max_poll_nanos.max(self.running_nanos()).max(self.stalls.longest_nanos)
    }

    /// Stalls: as counted by the agent, or as many as the log shows.
    pub fn stall_count(&self) -> u64 {
        self.task.stall_count.max(self.stalls.count)
    }

    /// Whether the figures include polls the agent's sample has not counted (in progress, or from the log).
    pub fn includes_unsampled(&self) -> bool {
        self.running.is_some() || self.stalls.ended > self.task.poll_count
    }
}

/// What the stall log knows, by task id.
pub fn stalls_by_task(state: &State) -> HashMap<u64, TaskStalls> {
    let mut m: HashMap<u64, TaskStalls> = HashMap::new();
    for e in state.stalls().filter(|e| e.latest.agent_task.is_none()) {
        let s = m.entry(e.latest.task_id).or_default();
        let nanos = u64::try_from(e.latest.elapsed.as_nanos()).unwrap_or(u64::MAX);
        s.count += 1;
        if e.ended {
            s.ended += 1;
            s.ended_nanos = s.ended_nanos.saturating_add(nanos);
        }
        s.longest_nanos = s.longest_nanos.max(nanos);
    }
    m
}

/// The polls in progress now, by task: (task id, how long it has run as of `now_unix_nanos`). A poll past
/// the stall threshold ticks with the clock (see [`live_stall`]); a shorter one is as old as the sample says.
pub fn polls_in_flight(state: &State, now_unix_nanos: u64) -> Vec<(u64, Duration)> {
    state
        .workers()
        .filter_map(|w| {
            // A stall event may arrive before the sample that shows its poll: the stall names the task then.
            if let Some(s) = live_stall(state, w, now_unix_nanos) {
                return Some((s.task_id, s.elapsed));
            }
            let p = w.sample.current_poll.as_ref()?;
            Some((p.task_id, Duration::from_nanos(p.elapsed_nanos)))
        })
        .collect()
}

fn task_key(t: &TaskRow<'_>, sort: SortKey) -> u64 {
    match sort {
        SortKey::Busy => t.busy_nanos(),
        SortKey::Polls => t.polls(),
        SortKey::MaxPoll => t.max_poll_nanos(),
        SortKey::P99Poll => p99_nanos(&t.task.poll_histogram),
        SortKey::SlowPolls => t.task.slow_poll_count,
        SortKey::SchedP99 => t.task.schedule_latency.as_ref().map_or(0, |l| p99_nanos(&l.histogram)),
        SortKey::Stalls => t.stall_count(),
        SortKey::Name => t.task.id,
    }
}

/// Which tasks the by-task table lists, besides the filter.
#[derive(Clone, Debug, Default)]
pub struct TaskScope {
    /// Also list the recently finished tasks the agent kept (a task that stalled and then ended stays
    /// findable).
    pub finished: bool,
    /// Polls in progress, from [`polls_in_flight`].
    pub in_flight: Vec<(u64, Duration)>,
    /// Tasks the workers or the stall log name but no task sample has described yet: polled now (a task is
    /// sent with the first tick after it changes, and a stall may come first), or stalled and gone before any
    /// tick listed them (`true`: listed with the finished tasks).
    pub unsampled: Vec<(TaskSample, bool)>,
}

impl TaskScope {
    /// The scope for `state` as of `now_unix_nanos`.
    pub fn new(state: &State, now_unix_nanos: u64, finished: bool) -> TaskScope {
        let in_flight = polls_in_flight(state, now_unix_nanos);
        let known = |id: u64| state.task(id).is_some() || state.finished_tasks().any(|t| t.id == id);
        let mut unsampled: Vec<(TaskSample, bool)> = Vec::new();
        let location_id = |loc: Option<&loopscope_wire::Location>| {
            state.locations().find(|l| Some(&l.location) == loc).map_or(u32::MAX, |l| l.id)
        };
        for w in state.workers() {
            let polled = match live_stall(state, w, now_unix_nanos) {
                Some(s) => Some((s.task_id, location_id(s.location.as_ref()))),
                None => w.sample.current_poll.as_ref().map(|p| (p.task_id, p.location.unwrap_or(u32::MAX))),
            };
            if let Some((id, loc)) = polled
                && !known(id)
                && !unsampled.iter().any(|(t, _)| t.id == id)
            {
                unsampled.push((TaskSample::new(id, loc), false));
            }
        }
        if finished {
            for e in state.stalls().filter(|e| e.ended && e.latest.agent_task.is_none()) {
                let id = e.latest.task_id;
                if known(id) || unsampled.iter().any(|(t, _)| t.id == id) {
                    continue;
                }
                let mut t = TaskSample::new(id, location_id(e.latest.location.as_ref()));
                t.state = loopscope_wire::TaskState::Finished;
                unsampled.push((t, true));
            }
        }
        TaskScope { finished, in_flight, unsampled }
    }
}

type Ranked<'a> = (u64, u64, TaskRow<'a>);

/// Tasks, filtered and ordered, of which only the shown window is ever fully sorted.
#[derive(Debug)]
pub struct TaskOrder<'a> {
    /// (sort key, task id, row); the id breaks ties so the order is stable from frame to frame.
    rows: Vec<Ranked<'a>>,
    descending: bool,
    live: usize,
}

impl<'a> TaskOrder<'a> {
    /// Filters the tasks of `state` (case-insensitive substring of the spawn location, or of the task id)
    /// and prepares them for ordering by `sort`.
    pub fn new(state: &'a State, filter: &str, sort: SortKey, descending: bool, scope: &'a TaskScope) -> Self {
        let needle = filter.trim().to_lowercase();
        let locs = (!needle.is_empty()).then(|| location_matches(state, &needle));
        let id_filter = !needle.is_empty() && needle.bytes().all(|b| b.is_ascii_digit());
        let keep = |t: &TaskSample| match &locs {
            None => true,
            Some(m) => {
                m.get(t.location as usize).copied().unwrap_or(false)
                    || (id_filter && t.id.to_string().contains(&needle))
            }
        };
        let running = |id: u64| scope.in_flight.iter().find(|(t, _)| *t == id).map(|(_, d)| *d);
        let logged = stalls_by_task(state);
        let stalls = |id: u64| logged.get(&id).copied().unwrap_or_default();
        let mut rows: Vec<Ranked<'a>> = state
            .tasks()
            .values()
            .filter(|t| keep(t))
            .map(|t| TaskRow { task: t, running: running(t.id), finished: false, stalls: stalls(t.id) })
            .map(|r| (task_key(&r, sort), r.task.id, r))
            .collect();
        rows.extend(
            scope
                .unsampled
                .iter()
                .filter(|(t, done)| !done && keep(t))
                .map(|(t, _)| TaskRow { task: t, running: running(t.id), finished: false, stalls: stalls(t.id) })
                .map(|r| (task_key(&r, sort), r.task.id, r)),
        );
        let live = rows.len();
        if scope.finished {
            rows.extend(
                scope
                    .unsampled
                    .iter()
                    .filter(|(t, done)| *done && keep(t))
                    .map(|(t, _)| TaskRow { task: t, running: None, finished: true, stalls: stalls(t.id) })
                    .map(|r| (task_key(&r, sort), r.task.id, r)),
            );
            rows.extend(
                state
                    .finished_tasks()
                    .filter(|t| keep(t) && !state.tasks().contains_key(&t.id))
                    .map(|t| TaskRow { task: t, running: None, finished: true, stalls: stalls(t.id) })
                    .map(|r| (task_key(&r, sort), r.task.id, r)),
            );
        }
        TaskOrder { rows, descending, live }
    }

    /// Tasks that passed the filter.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Of those, the live ones.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether no task passed the filter.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn cmp(desc: bool) -> impl Fn(&Ranked<'_>, &Ranked<'_>) -> Ordering + Copy {
        move |a, b| {
            let by_key = if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) };
            // Finished tasks may share an id with nothing live, but sort them after live ones on a tie.
            by_key.then(a.2.finished.cmp(&b.2.finished)).then(a.1.cmp(&b.1))
        }
    }

    /// Where task `id` is in the order, if it passed the filter: O(n), without sorting (the selection
    /// follows its task as the order changes).
    pub fn position(&self, id: u64) -> Option<usize> {
        let cmp = Self::cmp(self.descending);
        let me = self.rows.iter().find(|r| r.1 == id)?;
        Some(self.rows.iter().filter(|r| cmp(r, me) == Ordering::Less).count())
    }

    /// Rows `start..start + len` of the ordered list. Costs O(n + (start + len) log(start + len)): the rows
    /// after the window are never sorted.
    pub fn window(&mut self, start: usize, len: usize) -> Vec<TaskRow<'a>> {
        let cmp = Self::cmp(self.descending);
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
        let none = TaskScope::default();
        let mut order = TaskOrder::new(&s, "", SortKey::Busy, true, &none);
        assert_eq!(order.len(), 1000);
        let ids = |v: &[TaskRow<'_>]| v.iter().map(|t| t.task.id).collect::<Vec<_>>();
        let all_ids = |v: &[&TaskSample]| v.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(ids(&order.window(0, 10)), all_ids(&all[0..10]));
        assert_eq!(order.position(all[500].id), Some(500));
        assert_eq!(ids(&order.window(500, 7)), all_ids(&all[500..507]));
        assert_eq!(order.window(999, 10).len(), 1);
        assert!(order.window(2000, 10).is_empty());

        let mut db = TaskOrder::new(&s, "DB.rs", SortKey::Polls, false, &none);
        assert_eq!(db.len(), 500);
        assert_eq!(ids(&db.window(0, 3)), vec![1, 3, 5]);
        let by_id = TaskOrder::new(&s, "999", SortKey::Polls, false, &none);
        assert_eq!(by_id.len(), 1);
    }

    #[test]
    fn finished_tasks_are_listed_when_asked_and_a_running_poll_counts() {
        let mut s = state_with_tasks(3);
        let mut t = Tick { seq: 1, uptime_nanos: 250_000_000, finished: vec![2], ..Tick::default() };
        t.tasks = vec![];
        s.apply(&ServerMessage::Tick(Box::new(t)));
        let ids = |o: &mut TaskOrder<'_>| o.window(0, 10).iter().map(|r| (r.task.id, r.finished)).collect::<Vec<_>>();
        let none = TaskScope::default();
        let mut live = TaskOrder::new(&s, "", SortKey::Name, false, &none);
        assert_eq!(ids(&mut live), vec![(0, false), (1, false)]);
        let scope = TaskScope { finished: true, in_flight: vec![(1, Duration::from_millis(40))], unsampled: vec![] };
        let mut all = TaskOrder::new(&s, "", SortKey::Name, false, &scope);
        assert_eq!(ids(&mut all), vec![(0, false), (1, false), (2, true)]);
        assert_eq!(all.live(), 2);
        // Task 1 is 40 ms into a poll: it counts, and sorts it first by busy time.
        let mut busy = TaskOrder::new(&s, "", SortKey::Busy, true, &scope);
        let first = busy.window(0, 1)[0];
        assert_eq!(first.task.id, 1);
        assert_eq!(first.polls(), 2);
        assert_eq!(first.max_poll_nanos(), 40_000_000);
        assert_eq!(busy.position(1), Some(0));
    }

    #[test]
    fn a_finished_task_takes_its_stall_from_the_log() {
        use loopscope_wire::{StallEvent, StallPhase, ThreadInfo};
        let mut s = state_with_tasks(1);
        let ev = StallEvent {
            stall_id: 1,
            phase: StallPhase::Ended,
            kind: StallKind::WorkerBlocked,
            runtime_id: 1,
            worker: Some(0),
            thread: ThreadInfo { tid: 1, name: None },
            task_id: 9,
            location: None,
            elapsed: Duration::from_millis(130),
            threshold: Duration::from_millis(10),
            at_unix_nanos: 1,
            suppressed: 0,
            caught_in_flight: true,
            time: None,
            agent_task: None,
            culprit: None,
        };
        s.apply(&ServerMessage::Stall(Box::new(ev)));
        // The agent sent task 9 while its poll ran (0 polls), then only its id as finished.
        let t = Tick { seq: 1, uptime_nanos: 250_000_000, tasks: vec![TaskSample::new(9, 0)], ..Tick::default() };
        s.apply(&ServerMessage::Tick(Box::new(t)));
        let t = Tick { seq: 2, uptime_nanos: 500_000_000, finished: vec![9], ..Tick::default() };
        s.apply(&ServerMessage::Tick(Box::new(t)));
        let scope = TaskScope { finished: true, ..TaskScope::default() };
        let mut o = TaskOrder::new(&s, "", SortKey::Stalls, true, &scope);
        let r = o.window(0, 1)[0];
        assert_eq!((r.task.id, r.finished), (9, true));
        assert_eq!((r.polls(), r.busy_nanos(), r.max_poll_nanos(), r.stall_count()), (1, 130_000_000, 130_000_000, 1));
        assert!(r.includes_unsampled());
    }

    #[test]
    fn rates_are_averaged_over_the_window() {
        let mut s = State::new();
        for (i, polls) in [0u64, 1000, 1000, 3000, 3000].into_iter().enumerate() {
            let i = i as u64;
            let mut t = Tick { seq: i + 1, uptime_nanos: i * 250_000_000, ..Tick::default() };
            t.totals.poll_count = polls;
            s.apply(&ServerMessage::Tick(Box::new(t)));
        }
        // Per 250 ms sample: 4000/s, 0, 8000/s, 0 — it flickers; over a second it is 3000/s.
        assert_eq!(window_samples(&s, Duration::from_secs(1)), 4);
        assert_eq!(header_stats(&s, Duration::from_secs(1)).polls_per_second, 3000.0);
        assert_eq!(header_stats(&s, Duration::from_millis(250)).polls_per_second, 0.0);
        assert_eq!(fmt_window(&s, Duration::from_secs(1)), "1s avg");
        assert_eq!(fmt_window(&s, Duration::from_millis(100)), "per 250ms sample");
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
        let h = header_stats(&s, Duration::from_secs(1));
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
        assert_eq!(short_location(&Location::new("tui/src/demo.rs", 3, 4)), "src/demo.rs:3:4", "as frames show it");
    }
}
