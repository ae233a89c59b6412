//! Building [`Snapshot`]s: cumulative values read from the hooks' tables and the agent thread's totals.

use super::{add_counters, dropped, finished_totals, hist, runtime_info};
use crate::shared::Shared;
use crate::shared::tables::{NONE, OTHER_LOCATION, TASK_BUCKETS, TaskCounts};
use crate::sync::lock;
use loopscope_wire::{
    InFlightPoll, Location, LocationStats, LogHistogram, ScheduleLatency, Snapshot, TaskState, TaskStats, ThreadInfo,
    Totals, WorkerStats,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

/// The wire location for a location index (or, when the task has an entry, the entry's location).
pub(crate) fn location_of(shared: &Shared, location: u32) -> Option<Location> {
    location_for_index(shared, location)
}

fn location_for_index(shared: &Shared, idx: u32) -> Option<Location> {
    match idx {
        OTHER_LOCATION => Some(Location::new("<other locations: location table full>", 0, 0)),
        NONE => None,
        i => shared.locations.get(i).map(Location::from_std),
    }
}

/// A task's counters in wire form.
pub(crate) fn task_stats(shared: &Shared, c: &TaskCounts, state: TaskState) -> TaskStats {
    let location = location_for_index(shared, c.location).unwrap_or_else(|| Location::new("<unknown>", 0, 0));
    let schedule_latency = (c.sched_count > 0).then(|| ScheduleLatency {
        count: c.sched_count,
        total: Duration::from_nanos(c.sched_total_ns),
        max: Duration::from_nanos(c.sched_max_ns),
        histogram: hist(&c.sched_hist),
    });
    TaskStats {
        id: c.id,
        location,
        state,
        poll_count: c.polls,
        total_poll_duration: Duration::from_nanos(c.busy_ns),
        max_poll_duration: Duration::from_nanos(c.max_poll_ns),
        slow_poll_count: c.slow_polls,
        stall_count: c.stalls,
        poll_histogram: hist(&c.poll_hist),
        schedule_latency,
    }
}

/// Reads everything into a snapshot. Costs O(task table capacity); called on demand, never by the hooks.
pub(crate) fn build(shared: &Shared) -> Snapshot {
    let now_raw = shared.clock.raw();
    let sentinel = shared.sentinel_task.load(Relaxed);

    let mut totals = Totals::default();
    let slot_list = shared.slots.list();
    let workers: Vec<WorkerStats> = slot_list
        .iter()
        .map(|s| {
            let poll_count = s.polls.load(Relaxed);
            let busy = s.busy_ns.load(Relaxed);
            let slow = s.slow_polls.load(Relaxed);
            totals.poll_count += poll_count;
            totals.total_poll_duration += Duration::from_nanos(busy);
            totals.slow_poll_count += slow;
            let current_poll = s.in_flight().map(|f| InFlightPoll {
                task_id: f.task_id,
                location: location_of(
                    shared,
                    shared.tasks.location_of(f.task_id).unwrap_or_else(|| shared.locations.find(f.location_addr)),
                ),
                elapsed: Duration::from_nanos(shared.clock.delta_as_nanos(f.start, now_raw)),
            });
            WorkerStats {
                thread: ThreadInfo { tid: s.tid, name: s.thread_name.clone() },
                worker: None,
                alive: s.alive.load(Relaxed),
                poll_count,
                total_poll_duration: Duration::from_nanos(busy),
                max_poll_duration: Duration::from_nanos(s.max_poll_ns.load(Relaxed)),
                slow_poll_count: slow,
                current_poll,
            }
        })
        .collect();

    // Hold the agent thread's lock across the table scan: it frees entries only while holding it, so a task is
    // counted either live (here) or retired (below), never both.
    let agg = lock(&shared.agg);
    let facts = lock(&shared.facts).clone();
    let workers: Vec<WorkerStats> = workers
        .into_iter()
        .zip(slot_list.iter())
        .map(|(mut w, s)| {
            w.worker =
                facts.worker_threads.iter().position(|t| *t == Some(s.thread_id)).and_then(|i| u32::try_from(i).ok());
            w
        })
        .collect();

    // Finished tasks' totals first, then live tasks (see `finished_totals` for why in this order), and their
    // per-location sums.
    let finished = finished_totals(shared);
    let mut tasks = Vec::new();
    let mut by_index: HashMap<u32, LocationStats> = HashMap::new();
    for i in shared.tasks.indexes() {
        let Some(c) = shared.tasks.read(i) else { continue };
        if c.id == sentinel {
            continue;
        }
        let state = if c.state == crate::shared::tables::FINISHED { TaskState::Finished } else { TaskState::Live };
        let t = task_stats(shared, &c, state);
        by_index.entry(c.location).or_insert_with(|| LocationStats::new(t.location.clone())).add_task(&t);
        tasks.push(t);
    }

    totals.poll_count += agg.retired_workers.polls;
    totals.total_poll_duration += Duration::from_nanos(agg.retired_workers.busy_ns);
    totals.slow_poll_count += agg.retired_workers.slow_polls;
    let mut poll_histogram = LogHistogram::new(TASK_BUCKETS);
    poll_histogram.merge(&agg.retired_workers.untracked_hist);
    for s in &slot_list {
        poll_histogram.merge(&s.untracked_histogram());
    }
    let present: std::collections::HashSet<u64> = tasks.iter().map(|t| t.id).collect();
    tasks.extend(agg.finished.iter().filter(|t| !present.contains(&t.id)).cloned());
    drop(agg);
    for (idx, t) in finished {
        let Some(location) = location_for_index(shared, idx) else { continue };
        let done = LocationStats {
            location: location.clone(),
            live_tasks: 0,
            spawned_tasks: t.finished,
            poll_count: t.polls,
            total_poll_duration: Duration::from_nanos(t.busy_ns),
            max_poll_duration: Duration::from_nanos(t.max_poll_ns),
            slow_poll_count: t.slow_polls,
            stall_count: t.stalls,
            poll_histogram: LogHistogram { counts: t.poll_hist.to_vec() },
            schedule_latency: (t.sched_count > 0).then(|| ScheduleLatency {
                count: t.sched_count,
                total: Duration::from_nanos(t.sched_total_ns),
                max: Duration::from_nanos(t.sched_max_ns),
                histogram: LogHistogram { counts: t.sched_hist.to_vec() },
            }),
        };
        by_index.entry(idx).or_insert_with(|| LocationStats::new(location)).merge(&done);
    }

    // One location may have several `&'static Location` addresses (one per codegen unit); merge by value.
    let mut merged: HashMap<Location, LocationStats> = HashMap::new();
    for (_, l) in by_index {
        match merged.get_mut(&l.location) {
            Some(m) => m.merge(&l),
            None => {
                merged.insert(l.location.clone(), l);
            }
        }
    }
    let mut locations: Vec<LocationStats> = merged.into_values().collect();
    for l in &locations {
        poll_histogram.merge(&l.poll_histogram);
    }
    locations.sort_by(|a, b| a.location.cmp(&b.location));
    tasks.sort_by_key(|t| t.id);

    add_counters(shared, &mut totals);

    Snapshot {
        runtime: runtime_info(shared, facts),
        taken_at_unix_nanos: crate::os::unix_nanos(),
        uptime: shared.uptime(),
        workers,
        tasks,
        locations,
        poll_histogram,
        totals,
        dropped: dropped(shared),
    }
}
