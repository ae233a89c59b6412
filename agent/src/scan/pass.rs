//! The one pass over the tables that every view of the tasks starts from.
//!
//! A task's counters become a [`TaskSample`] in one place ([`task_sample`]), and a location's sums are a
//! [`LocationSample`]'s (`LocationSample::add_task`, `LocationSample::merge` in the wire crate): the stream
//! sends these as they are, and a [`Snapshot`](loopscope_wire::Snapshot) is derived from them
//! (`TaskStats::from_sample`, `LocationStats::from_sample`). So a new per-task counter is read here once,
//! whichever view shows it.

use crate::shared::Shared;
use crate::shared::retired::RetiredWorkers;
use crate::shared::slots::WorkerSlot;
use crate::shared::tables::{FINISHED, FinishedTotals, TASK_BUCKETS, TaskCounts};
use crate::sync::lock;
use loopscope_wire::proto::{LatencySample, LocationSample, TaskSample};
use loopscope_wire::{LogHistogram, TaskState, Totals};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

/// A task entry's counters as a sample, with `location` the id the view uses for the entry's location (the
/// stream's id, or the location-table index itself).
fn task_sample(c: &TaskCounts, location: u32) -> TaskSample {
    TaskSample {
        id: c.id,
        location,
        state: if c.state == FINISHED { TaskState::Finished } else { TaskState::Live },
        poll_count: c.polls,
        busy_nanos: c.busy_ns,
        max_poll_nanos: c.max_poll_ns,
        slow_poll_count: c.slow_polls,
        stall_count: c.stalls,
        poll_histogram: hist(&c.poll_hist),
        schedule_latency: (c.sched_count > 0).then(|| LatencySample {
            count: c.sched_count,
            total_nanos: c.sched_total_ns,
            max_nanos: c.sched_max_ns,
            histogram: hist(&c.sched_hist),
        }),
    }
}

/// A finished task as the agent thread keeps it after freeing its entry (`AggState::finished`): keyed by its
/// location-table index, which a pass that lists it ([`Recent::Include`]) turns into the view's id.
pub(crate) fn recent_finished(c: &TaskCounts) -> TaskSample {
    TaskSample { state: TaskState::Finished, ..task_sample(c, c.location) }
}

/// A location with nothing added yet. Its histogram starts with every bucket, so that a location's is as
/// long as its tasks' whatever was added first.
fn empty_location(id: u32) -> LocationSample {
    LocationSample { poll_histogram: LogHistogram::new(TASK_BUCKETS), ..LocationSample::new(id) }
}

/// A location's finished tasks (already out of the table) as one location's sums, to merge into its live
/// tasks'.
fn finished_sample(id: u32, t: &FinishedTotals) -> LocationSample {
    LocationSample {
        id,
        live_tasks: 0,
        spawned_tasks: t.finished,
        poll_count: t.polls,
        busy_nanos: t.busy_ns,
        max_poll_nanos: t.max_poll_ns,
        slow_poll_count: t.slow_polls,
        stall_count: t.stalls,
        poll_histogram: LogHistogram { counts: t.poll_hist.to_vec() },
        schedule_latency: (t.sched_count > 0).then(|| LatencySample {
            count: t.sched_count,
            total_nanos: t.sched_total_ns,
            max_nanos: t.sched_max_ns,
            histogram: LogHistogram { counts: t.sched_hist.to_vec() },
        }),
    }
}

/// One polling thread's counters as the pass read them (the same reading its totals add up).
#[derive(Debug)]
pub(crate) struct ThreadReading {
    pub(crate) slot: Arc<WorkerSlot>,
    pub(crate) polls: u64,
    pub(crate) busy_ns: u64,
    pub(crate) slow_polls: u64,
}

/// Whether a pass also lists the tasks the agent thread keeps after freeing their entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recent {
    /// Snapshots list them (`AggState::finished`); a task still in the table is listed once.
    Include,
    /// The stream says a task finished in the tick's `finished` list instead.
    Skip,
}

/// The result of one pass over the tables.
#[derive(Debug)]
pub(crate) struct Scan {
    /// The tasks the pass was asked to keep, in table order (then the recent finished ones, if asked).
    pub(crate) tasks: Vec<TaskSample>,
    /// Every location's sums, live and finished tasks, by the id the pass's `location` gave.
    pub(crate) locations: HashMap<u32, LocationSample>,
    /// Every poll: live, finished and untracked tasks.
    pub(crate) poll_histogram: LogHistogram,
    pub(crate) totals: Totals,
    /// The live polling threads, as their counts were read into `totals`.
    pub(crate) threads: Vec<ThreadReading>,
}

/// Scans the task table once. `location` gives the id a location-table index goes by in this view (tasks
/// and locations are keyed by it; the stream's ids merge the indexes of one location value). `keep` decides,
/// per entry index and counters, whether the task goes into [`Scan::tasks`] (it also sees empty entries, as
/// `None`); every task counts toward its location whatever it says. The stream's `keep` marks a task `SEEN`
/// (`TaskTable::publish`) before it lets it in, so that its end reaches the clients.
///
/// Holds the agent thread's lock, under which it frees entries, and reads the finished tasks' totals before
/// the table (see `scan::finished_totals`), so a task is counted live or finished, never both.
pub(crate) fn scan(
    shared: &Shared,
    mut location: impl FnMut(u32) -> u32,
    mut keep: impl FnMut(usize, Option<&TaskCounts>) -> bool,
    recent: Recent,
) -> Scan {
    let sentinel = shared.sentinel_task.load(Relaxed);
    let mut locations: HashMap<u32, LocationSample> = HashMap::new();
    let mut tasks = Vec::new();
    let mut totals = Totals::default();
    let mut poll_histogram = LogHistogram::new(TASK_BUCKETS);
    let threads = add_slots(shared, &mut totals, &mut poll_histogram);
    let agg = lock(&shared.agg);
    let finished = finished_totals(shared);
    for i in shared.tasks.indexes() {
        let Some(c) = shared.tasks.read(i) else {
            keep(i, None);
            continue;
        };
        if c.id == sentinel {
            continue;
        }
        let id = location(c.location);
        let t = task_sample(&c, id);
        locations.entry(id).or_insert_with(|| empty_location(id)).add_task(&t);
        if keep(i, Some(&c)) {
            tasks.push(t);
        }
    }
    for (index, t) in finished {
        let id = location(index);
        locations.entry(id).or_insert_with(|| empty_location(id)).merge(&finished_sample(id, &t));
    }
    if recent == Recent::Include {
        let present: HashSet<u64> = tasks.iter().map(|t| t.id).collect();
        let gone = agg.finished.iter().filter(|t| !present.contains(&t.id));
        tasks.extend(gone.map(|t| TaskSample { location: location(t.location), ..t.clone() }));
    }
    let retired_workers = agg.retired_workers.clone();
    drop(agg);
    add_retired_workers(&retired_workers, &mut totals, &mut poll_histogram);
    for l in locations.values() {
        poll_histogram.merge(&l.poll_histogram);
    }
    add_counters(shared, &mut totals);
    Scan { tasks, locations, poll_histogram, totals, threads }
}

/// The live threads' poll counts, and the polls of tasks the task table doesn't track.
fn add_slots(shared: &Shared, totals: &mut Totals, poll_histogram: &mut LogHistogram) -> Vec<ThreadReading> {
    let threads: Vec<ThreadReading> = shared
        .slots
        .list()
        .into_iter()
        .map(|s| ThreadReading {
            polls: s.polls.load(Relaxed),
            busy_ns: s.busy_ns.load(Relaxed),
            slow_polls: s.slow_polls.load(Relaxed),
            slot: s,
        })
        .collect();
    for t in &threads {
        totals.poll_count += t.polls;
        totals.total_poll_duration += Duration::from_nanos(t.busy_ns);
        totals.slow_poll_count += t.slow_polls;
        poll_histogram.merge(&t.slot.untracked_histogram());
    }
    threads
}

/// The counts of threads that exited.
fn add_retired_workers(r: &RetiredWorkers, totals: &mut Totals, poll_histogram: &mut LogHistogram) {
    totals.poll_count += r.polls;
    totals.total_poll_duration += Duration::from_nanos(r.busy_ns);
    totals.slow_poll_count += r.slow_polls;
    poll_histogram.merge(&r.untracked_hist);
}

/// The totals and the poll histogram of [`scan`] without the per-task and per-location samples: what the
/// metrics need while no stream client listens. The same pass over the table (under the same lock), but it
/// only adds each entry's histogram buckets, allocating nothing per task; a full scan builds a sample per
/// task, which with 10,000 tasks costs the agent thread several times more.
pub(crate) fn scan_totals(shared: &Shared) -> (Totals, LogHistogram) {
    let sentinel = shared.sentinel_task.load(Relaxed);
    let mut totals = Totals::default();
    let mut poll_histogram = LogHistogram::new(TASK_BUCKETS);
    add_slots(shared, &mut totals, &mut poll_histogram);
    let mut counts = [0u64; TASK_BUCKETS];
    let agg = lock(&shared.agg);
    // Before the table, as in `scan`: a task is counted finished or live, never both.
    let finished = finished_totals(shared);
    for i in shared.tasks.indexes() {
        let Some(c) = shared.tasks.read(i) else { continue };
        if c.id == sentinel {
            continue;
        }
        for (sum, n) in counts.iter_mut().zip(c.poll_hist) {
            *sum += u64::from(n);
        }
    }
    for (_, t) in finished {
        for (sum, n) in counts.iter_mut().zip(t.poll_hist) {
            *sum += n;
        }
    }
    let retired_workers = agg.retired_workers.clone();
    drop(agg);
    add_retired_workers(&retired_workers, &mut totals, &mut poll_histogram);
    poll_histogram.merge(&LogHistogram { counts: counts.to_vec() });
    add_counters(shared, &mut totals);
    (totals, poll_histogram)
}

/// Adds the totals kept outside the task table (spawns, finishes, stalls, reports) to `totals`.
fn add_counters(shared: &Shared, totals: &mut Totals) {
    (totals.spawned_tasks, totals.finished_tasks) = shared.tasks.spawn_counts();
    totals.stall_count = shared.stall_count.load(Relaxed);
    totals.block_in_place_count = shared.block_in_place_count.load(Relaxed);
    totals.stall_reports = shared.stall_reports.load(Relaxed);
    totals.suppressed_reports = shared.suppressed_reports.load(Relaxed);
}

/// The totals of finished tasks per location index, for a scan that then reads the task table.
///
/// Read *before* the table: a hook retiring a task changes the entry's key before it adds to these totals (see
/// `TaskTable::retire`), so a task whose figures are in what this returns is no longer in the table when the
/// scan gets there. The only inexactness is the other way round: a task retired between the two reads is in
/// neither for that one scan (its location's figures dip by one task's, and the next scan has it; deltas
/// saturate). Tasks the agent thread frees are folded and freed under the lock scans hold, and are exact.
fn finished_totals(shared: &Shared) -> Vec<(u32, FinishedTotals)> {
    shared.locations.finished_totals()
}

/// A table entry's bucket counts (a task's poll times or schedule latencies) as a histogram.
fn hist<const N: usize>(counts: &[u32; N]) -> LogHistogram {
    LogHistogram { counts: counts.iter().map(|&c| u64::from(c)).collect() }
}
