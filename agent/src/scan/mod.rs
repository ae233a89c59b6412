//! Reading the tables: what every view of the agent's state (snapshots, the stream's ticks and full states,
//! the CI records' totals) reports the same way is read here once.
//!
//! It reads the shared state (the task and location tables, the threads' slots, the stall counters, the drop
//! counters, the runtime facts the agent thread cached) and writes nothing but what the caller's `keep` does.
//! [`pass`] is the one pass over the tables: it turns them into the stream's samples (`TaskSample`,
//! `LocationSample`) and the totals, which the stream's feed (`crate::stream`) sends as they are and
//! [`snapshot`] turns into a [`Snapshot`](loopscope_wire::Snapshot). What the views report alike besides
//! the tables (the drop counters, the runtime's identity) is here.

pub(crate) mod pass;
pub(crate) mod snapshot;

use crate::shared::{RuntimeFacts, Shared};
use loopscope_wire::{Dropped, RuntimeInfo};
use std::sync::atomic::Ordering::*;

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
