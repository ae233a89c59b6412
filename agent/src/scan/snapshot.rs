//! Building [`Snapshot`]s: the samples of one pass over the tables (`super::pass`), in the snapshot's types.

use super::pass::{Recent, scan};
use super::{dropped, runtime_info};
use crate::shared::Shared;
use crate::shared::tables::{NONE, OTHER_LOCATION};
use crate::sync::lock;
use loopscope_wire::proto::LocationSample;
use loopscope_wire::{InFlightPoll, Location, LocationStats, Snapshot, TaskStats, ThreadInfo, WorkerStats};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
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

/// The location a task or a location's sums at location-table index `index` are shown at.
fn task_location(shared: &Shared, index: u32) -> Location {
    location_for_index(shared, index).unwrap_or_else(|| Location::new("<unknown>", 0, 0))
}

/// Reads everything into a snapshot: one [`pass`](super::pass) over the tables, keyed by location-table index,
/// its samples turned into the snapshot's types. Costs O(task table capacity); called on demand, never by the
/// hooks.
pub(crate) fn build(shared: &Shared) -> Snapshot {
    let now_raw = shared.clock.raw();
    let scan = scan(shared, |index| index, |_, c| c.is_some(), Recent::Include);
    let facts = lock(&shared.facts).clone();
    let workers: Vec<WorkerStats> = scan
        .threads
        .iter()
        .map(|t| {
            let s = &t.slot;
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
                worker: facts
                    .worker_threads
                    .iter()
                    .position(|w| *w == Some(s.thread_id))
                    .and_then(|i| u32::try_from(i).ok()),
                alive: s.alive.load(Relaxed),
                poll_count: t.polls,
                total_poll_duration: Duration::from_nanos(t.busy_ns),
                max_poll_duration: Duration::from_nanos(s.max_poll_ns.load(Relaxed)),
                slow_poll_count: t.slow_polls,
                current_poll,
            }
        })
        .collect();

    let mut tasks: Vec<TaskStats> =
        scan.tasks.iter().map(|t| TaskStats::from_sample(t, task_location(shared, t.location))).collect();
    tasks.sort_by_key(|t| t.id);

    // One location may have several `&'static Location` addresses (one per codegen unit); merge by value.
    let mut merged: HashMap<Location, LocationSample> = HashMap::new();
    for (index, l) in scan.locations {
        match merged.entry(task_location(shared, index)) {
            Entry::Occupied(mut m) => m.get_mut().merge(&l),
            Entry::Vacant(v) => {
                v.insert(l);
            }
        }
    }
    let mut locations: Vec<LocationStats> =
        merged.into_iter().map(|(location, l)| LocationStats::from_sample(&l, location)).collect();
    locations.sort_by(|a, b| a.location.cmp(&b.location));

    Snapshot {
        runtime: runtime_info(shared, facts),
        taken_at_unix_nanos: crate::os::unix_nanos(),
        uptime: shared.uptime(),
        workers,
        tasks,
        locations,
        poll_histogram: scan.poll_histogram,
        totals: scan.totals,
        dropped: dropped(shared),
    }
}
