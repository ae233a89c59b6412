//! The stream feed: turns the agent's tables and runtime samples into protocol messages (`wire/PROTOCOL.md`)
//! and hands them to the server, the agent-side recorder and CI reporting.
//!
//! It runs on the agent thread, once per sample interval, never on the hot path. A tick carries only the tasks
//! whose poll count or state changed since the previous tick: the feed remembers, in each task-table entry in
//! use, the low 32 bits of the poll count it last sent (in the entry's padding, so it costs no memory) and
//! learns which tasks finished from the agent thread's reclaim pass.
//!
//! A new client gets a full state instead, built on its own server thread by
//! [`FullStateSource`](super::full_state::FullStateSource) from the same pass over the tables
//! (`crate::scan::pass`), which snapshots read too.

use crate::scan::dropped;
use crate::scan::pass::{Recent, scan, scan_totals};
use crate::shared::Shared;
use crate::shared::stream::{FeedShared, Latest, LocationIds};
use crate::shared::tables::{FINISHED, LIFECYCLE, NONE, TaskEntry};
use crate::sync::lock;
use loopscope_wire::ThreadInfo;
use loopscope_wire::proto::{self, GlobalSample, Tick, WaitHistogram, WaitTimes, WorkerSample};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

pub(super) fn proto_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The feed's own state, on the agent thread.
#[derive(Debug)]
pub(crate) struct Feed {
    shared_feed: Arc<FeedShared>,
    seq: u64,
    /// Location ids announced in ticks so far.
    announced: usize,
    /// Poll count and live tasks last sent per location id.
    location_sent: HashMap<u32, (u64, u64, u64)>,
}

const FINISHED_BIT: u32 = 1 << 31;

/// What the feed remembers of a task it sent: the low 31 bits of its poll count plus one (never 0, which
/// means "nothing sent"), and whether it was finished.
fn mark(polls: u64, state: u32) -> u32 {
    ((polls as u32 & !FINISHED_BIT).wrapping_add(1) & !FINISHED_BIT).max(1)
        | if state == FINISHED { FINISHED_BIT } else { 0 }
}

/// Stores `m` as what the feed sent of the task `id` in entry `e`, unless it is already there. Only the agent
/// thread writes marks, but a hook may retire the entry (clearing the mark) at any moment, and the next task
/// must not inherit this one's mark: the swap reads the clearing if it came first, and then the key check sees
/// the entry changed hands (the hook changes the key, and fences, before it clears), and takes the mark back.
fn update_mark(e: &TaskEntry, id: u64, m: u32) {
    if e.feed_mark.load(Relaxed) == m {
        return;
    }
    e.feed_mark.swap(m, AcqRel);
    if e.key.load(Acquire) != id {
        let _ = e.feed_mark.compare_exchange(m, 0, Relaxed, Relaxed);
    }
}

impl Feed {
    pub(crate) fn new(shared_feed: Arc<FeedShared>) -> Feed {
        Feed { shared_feed, seq: 0, announced: 0, location_sent: HashMap::new() }
    }

    /// Records every task's current poll count as sent, without building anything: a pass over the table
    /// that reads two words per entry and writes a mark only into entries in use, and only when it changed
    /// (so it never touches a page the tasks left alone).
    pub(super) fn mark_all(&mut self, shared: &Shared) {
        for i in shared.tasks.indexes() {
            let Some(e) = u32::try_from(i).ok().and_then(|i| shared.tasks.get(i)) else { break };
            let id = e.key.load(Acquire);
            if id == 0 {
                continue;
            }
            let state = e.state.load(Acquire) & LIFECYCLE;
            if state != crate::shared::tables::FREE {
                update_mark(e, id, mark(e.polls.load(Relaxed), state));
            }
        }
    }

    /// The runtime-wide part of a tick (workers, globals, lag probes, totals, the poll histogram, drops)
    /// for the metrics while no client listens: no task or location samples, and nothing recorded as sent.
    pub(crate) fn totals_tick(&self, shared: &Shared, sample: Option<&crate::shared::sample::RuntimeSample>) -> Tick {
        let (totals, poll_histogram) = scan_totals(shared);
        let workers = match sample {
            Some(s) => workers(shared, &mut lock(&self.shared_feed.ids), s),
            None => Vec::new(),
        };
        let (global, waits) = sample.map(|s| (global(s), waits(s))).unwrap_or_default();
        Tick {
            seq: self.seq,
            at_unix_nanos: crate::os::unix_nanos(),
            uptime_nanos: proto_nanos(shared.uptime()),
            workers,
            global,
            waits,
            poll_histogram,
            totals,
            dropped: dropped(shared),
            ..Tick::default()
        }
    }

    /// Builds the next tick. `finished` are the ids of tasks whose entries the agent thread's reclaim pass
    /// freed since the previous tick.
    pub(crate) fn tick(
        &mut self,
        shared: &Shared,
        sample: Option<&crate::shared::sample::RuntimeSample>,
        finished: Vec<u64>,
    ) -> Tick {
        self.seq += 1;
        let uptime = shared.uptime();
        let mut ids = lock(&self.shared_feed.ids);
        let location = |index| ids.id(&shared.locations, index);
        let mut scan = scan(
            shared,
            location,
            |i, c| {
                // An empty entry has no mark: the reclaim that freed it cleared it, and put the task it held in
                // `finished`.
                let Some(c) = c else { return false };
                let Some(e) = u32::try_from(i).ok().and_then(|i| shared.tasks.get(i)) else { return false };
                let m = mark(c.polls, c.state);
                // Unchanged since the last tick: not sent. Changed: sent if it can be published (marked `SEEN`,
                // so that its end reaches the clients), and then the mark is stored (a task that can't be is
                // ending, and its entry is being retired).
                if e.feed_mark.load(Relaxed) == m || !shared.tasks.publish(i, c.id) {
                    return false;
                }
                update_mark(e, c.id, m);
                true
            },
            Recent::Skip,
        );
        let workers = sample.map(|s| workers(shared, &mut ids, s)).unwrap_or_default();
        let new_locations = ids.infos[self.announced.min(ids.infos.len())..].to_vec();
        self.announced = ids.infos.len();
        drop(ids);
        let mut locations = Vec::new();
        for (id, l) in scan.locations.drain() {
            let key = (l.poll_count, l.live_tasks, l.spawned_tasks);
            if self.location_sent.get(&id) != Some(&key) {
                self.location_sent.insert(id, key);
                locations.push(l);
            }
        }
        locations.sort_by_key(|l| l.id);
        let (global, waits) = sample.map(|s| (global(s), waits(s))).unwrap_or_default();
        *lock(&self.shared_feed.latest) =
            Latest { seq: self.seq, workers: workers.clone(), global: global.clone(), waits: waits.clone() };
        Tick {
            seq: self.seq,
            at_unix_nanos: crate::os::unix_nanos(),
            uptime_nanos: proto_nanos(uptime),
            workers,
            global,
            waits,
            new_locations,
            locations,
            tasks: std::mem::take(&mut scan.tasks),
            finished,
            poll_histogram: scan.poll_histogram,
            totals: scan.totals,
            dropped: dropped(shared),
            client_dropped_frames: 0,
        }
    }
}

fn workers(shared: &Shared, ids: &mut LocationIds, s: &crate::shared::sample::RuntimeSample) -> Vec<WorkerSample> {
    let slots = shared.slots.list();
    let now = shared.clock.raw();
    s.workers
        .iter()
        .map(|w| {
            let slot = w.thread_id.and_then(|t| slots.iter().find(|s| s.thread_id == t && s.alive.load(Relaxed)));
            let current_poll = slot.and_then(|sl| sl.in_flight()).map(|f| {
                let index = shared.locations.find(f.location_addr);
                let location = (index != NONE).then(|| ids.id(&shared.locations, index));
                proto::CurrentPoll {
                    task_id: f.task_id,
                    location,
                    elapsed_nanos: shared.clock.delta_as_nanos(f.start, now),
                }
            });
            WorkerSample {
                index: u32::try_from(w.index).unwrap_or(u32::MAX),
                thread: slot.map_or(ThreadInfo { tid: 0, name: None }, |sl| ThreadInfo {
                    tid: sl.tid,
                    name: sl.thread_name.clone(),
                }),
                busy_nanos: proto_nanos(w.busy),
                poll_count: w.polls,
                park_count: w.parks,
                noop_count: w.noops,
                steal_count: w.steals,
                overflow_count: w.overflows,
                local_schedule_count: w.local_schedules,
                local_queue_depth: w.local_queue_depth as u64,
                mean_poll_nanos: proto_nanos(w.mean_poll),
                slow_poll_count: slot.map_or(0, |sl| sl.slow_polls.load(Relaxed)),
                max_poll_nanos: slot.map_or(0, |sl| sl.max_poll_ns.load(Relaxed)),
                current_poll,
            }
        })
        .collect()
}

fn global(s: &crate::shared::sample::RuntimeSample) -> GlobalSample {
    let g = &s.global;
    GlobalSample {
        workers: u32::try_from(g.workers).unwrap_or(u32::MAX),
        global_queue_depth: g.global_queue_depth as u64,
        alive_tasks: g.alive_tasks as u64,
        spawned_tasks: g.spawned_tasks,
        remote_schedule_count: g.remote_schedules,
        blocking_threads: g.blocking_threads as u64,
        idle_blocking_threads: g.idle_blocking_threads as u64,
        blocking_queue_depth: g.blocking_queue_depth as u64,
        budget_forced_yields: g.budget_forced_yields,
        io_driver_ready_events: g.io_ready_events,
    }
}

fn waits(s: &crate::shared::sample::RuntimeSample) -> WaitTimes {
    let w = |l: &crate::shared::sample::LagSample| WaitHistogram {
        count: l.count,
        max_nanos: proto_nanos(l.max),
        histogram: l.histogram.clone(),
        recent_window_nanos: proto_nanos(crate::shared::sample::LAG_WINDOW),
        recent_p50_nanos: l.p50.map(proto_nanos),
        recent_p99_nanos: l.p99.map(proto_nanos),
        recent_max_nanos: l.window_max.map(proto_nanos),
        pending_nanos: l.pending.map(proto_nanos),
    };
    WaitTimes { first_poll_delay: w(&s.first_poll_delay), timer_lateness: w(&s.timer_lateness) }
}
