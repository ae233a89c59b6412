//! Reading the tables: what every view of the agent's state (snapshots, the stream's ticks and full states,
//! the CI records' totals) reports the same way is read here once.
//!
//! It reads the shared state (the task and location tables, the threads' slots, the stall counters, the drop
//! counters, the runtime facts the agent thread cached) and writes nothing but what the caller's `keep` does.
//! [`pass`] is the one pass over the tables: it turns them into the stream's samples (`TaskSample`,
//! `LocationSample`), which the stream's feed (`crate::stream`) sends as they are and [`snapshot`] turns into
//! a [`Snapshot`](loopscope_wire::Snapshot).

pub(crate) mod pass;
pub(crate) mod snapshot;

use crate::shared::tables::FinishedTotals;
use crate::shared::{RuntimeFacts, Shared};
use loopscope_wire::{Dropped, LogHistogram, RuntimeInfo, Totals};
use std::sync::atomic::Ordering::*;

/// Adds the totals kept outside the task table (spawns, finishes, stalls, reports) to `totals`.
pub(crate) fn add_counters(shared: &Shared, totals: &mut Totals) {
    (totals.spawned_tasks, totals.finished_tasks) = shared.tasks.spawn_counts();
    totals.stall_count = shared.stall_count.load(Relaxed);
    totals.block_in_place_count = shared.block_in_place_count.load(Relaxed);
    totals.stall_reports = shared.stall_reports.load(Relaxed);
    totals.suppressed_reports = shared.suppressed_reports.load(Relaxed);
}

/// What the agent lost and counted: tasks and locations past the tables' capacity, events subscribers
/// missed, watchdog messages and stall details dropped.
pub(crate) fn dropped(shared: &Shared) -> Dropped {
    Dropped {
        untracked_tasks: shared.tasks.untracked.load(Relaxed),
        untracked_locations: shared.locations.overflow.load(Relaxed),
        events: shared.dropped_events.load(Relaxed),
        watchdog_messages: shared.dropped_watchdog.load(Relaxed),
        stall_details: shared.stalls_without_details.load(Relaxed),
    }
}

/// Which runtime this is, with the facts the agent thread last cached.
pub(crate) fn runtime_info(shared: &Shared, facts: RuntimeFacts) -> RuntimeInfo {
    RuntimeInfo {
        id: shared.id,
        name: shared.config.name.clone(),
        flavor: facts.flavor,
        workers: facts.workers,
        pid: std::process::id(),
    }
}

/// The totals of finished tasks per location index, for a scan that then reads the task table.
///
/// Read *before* the table: a hook retiring a task changes the entry's key before it adds to these totals (see
/// `TaskTable::retire`), so a task whose figures are in what this returns is no longer in the table when the
/// scan gets there. The only inexactness is the other way round: a task retired between the two reads is in
/// neither for that one scan (its location's figures dip by one task's, and the next scan has it; deltas
/// saturate). Tasks the agent thread frees are folded and freed under the lock scans hold, and are exact.
pub(crate) fn finished_totals(shared: &Shared) -> Vec<(u32, FinishedTotals)> {
    shared.locations.finished_totals()
}

/// A table entry's bucket counts (a task's poll times or schedule latencies) as a histogram.
pub(crate) fn hist<const N: usize>(counts: &[u32; N]) -> LogHistogram {
    LogHistogram { counts: counts.iter().map(|&c| u64::from(c)).collect() }
}
