//! The watchdog: a thread that looks at every polling thread's slot each tick (1 ms by default) and flags a
//! poll that has run past the stall threshold **while it is still running**.
//!
//! It does as little as possible per tick — a seqlock read per slot — and hands everything slow (formatting,
//! symbolizing, rate limiting, logging, fan-out) to the agent thread through a bounded channel, so its own
//! latency stays within the threshold + one tick. A full channel loses the message and counts it
//! (`Dropped::watchdog_messages`); the watchdog never blocks.

use crate::probing::{self, Look};
use crate::shared::Shared;
use crate::slots::{LONG_POLLS, WorkerSlot};
use crate::tables::NONE;
use loopscope_wire::StallKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// A newly flagged stall.
#[derive(Debug)]
pub(crate) struct Flag {
    pub(crate) stall_id: u64,
    pub(crate) kind: StallKind,
    pub(crate) worker: Option<u32>,
    pub(crate) slot: Arc<WorkerSlot>,
    pub(crate) task_id: u64,
    /// Resolved when flagged: by the time the agent thread reads it, the task may be gone.
    pub(crate) location: u32,
    pub(crate) elapsed_ns: u64,
    pub(crate) at_unix_nanos: u64,
    /// What the thread was doing when the stall was flagged (none for stalls found after they ended).
    pub(crate) look: Option<Look>,
}

/// What the watchdog tells the agent thread.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    Started(Box<Flag>),
    /// A stall that began and ended between two looks (the watchdog was starved or the threshold is below
    /// its interval): found afterwards in the thread's long-poll ring. `elapsed_ns` is the final duration.
    Late(Box<Flag>),
    Updated {
        stall_id: u64,
        elapsed_ns: u64,
        at_unix_nanos: u64,
        look: Look,
    },
    /// Another look at a stalled thread, for the on-CPU share; produces no event by itself.
    Sampled {
        stall_id: u64,
        look: Look,
    },
    /// `elapsed_ns` is exact when the thread's long-poll ring still had the poll, else the last value seen.
    Ended {
        stall_id: u64,
        elapsed_ns: u64,
        at_unix_nanos: u64,
    },
}

/// A stall the watchdog is following.
#[derive(Debug)]
struct Tracked {
    seq: u64,
    stall_id: u64,
    /// Report again when the poll passes this (2×, 4×, ... the threshold).
    next_report_ns: u64,
    last_elapsed_ns: u64,
    /// Take a second /proc look at this point, so even a short stall gets an on-CPU share.
    next_sample_ns: u64,
    /// Stack captures taken so far (capped at `MAX_CAPTURES`).
    captures: usize,
    tid: i32,
}

/// The watchdog's view of one slot.
#[derive(Debug, Default)]
struct SlotWatch {
    tracked: Option<Tracked>,
    /// Long polls of this slot already accounted for.
    seen_long: u64,
    /// Sequence numbers of polls recently flagged in flight, so the long-poll ring doesn't report them twice.
    flagged: VecDeque<u64>,
}

struct Watchdog {
    shared: Arc<Shared>,
    handle: Option<Handle>,
    tx: SyncSender<WatchMsg>,
    slots: Vec<Arc<WorkerSlot>>,
    generation: u64,
    watch: HashMap<usize, SlotWatch>,
    prepared: std::collections::HashSet<i32>,
}

pub(crate) fn run(shared: Arc<Shared>, handle: Option<Handle>, tx: SyncSender<WatchMsg>) {
    let interval = shared.config.watchdog_interval;
    let mut w = Watchdog {
        shared,
        handle,
        tx,
        slots: Vec::new(),
        generation: u64::MAX,
        watch: HashMap::new(),
        prepared: Default::default(),
    };
    while !w.shared.stopping.load(Acquire) {
        let started = Instant::now();
        // Sleep until the earliest moment a stall could need flagging, but never less than one interval:
        // waking every interval regardless cost 1.4% of a core at 1 ms on an idle app (see BENCHMARKS.md).
        let wait = Duration::from_nanos(w.tick()).clamp(interval, MAX_WAIT);
        let deadline = started + wait;
        let now = Instant::now();
        if deadline > now {
            std::thread::park_timeout(deadline - now);
        }
    }
    // One last look, so stalls that ended just before shutdown are counted too.
    w.tick();
    // End any stall still open so subscribers see a closed record.
    let open: Vec<_> = w.watch.drain().filter_map(|(_, sw)| sw.tracked).collect();
    for t in open {
        let _ = w.tx.try_send(WatchMsg::Ended {
            stall_id: t.stall_id,
            elapsed_ns: t.last_elapsed_ns,
            at_unix_nanos: crate::os::unix_nanos(),
        });
    }
    // Release what this runtime's threads hold in the process-wide probes (perf fds, stack slots): they are
    // reference-counted per agent, and the threads leave with the runtime without the watchdog seeing them go.
    for tid in w.prepared.drain() {
        probing::forget(tid);
    }
}

/// A stalled thread gets a second /proc look this long after it was flagged (or a quarter of the threshold,
/// if longer), so that even a stall shorter than 2× the threshold gets an on-CPU share.
const CONFIRM_AFTER_NS: u64 = 2_000_000;

/// The longest the watchdog sleeps, whatever the threshold.
const MAX_WAIT: Duration = Duration::from_secs(1);

impl Watchdog {
    /// Looks at every slot. Returns how many nanoseconds may pass before anything could need a look: a poll
    /// seen in flight since `start` can't become a stall before `start + threshold`, and a poll that has not
    /// started yet can't before `now + threshold`; an open stall is watched every interval so that its end is
    /// reported promptly.
    fn tick(&mut self) -> u64 {
        let mut wait = self.shared.stall_ns;
        let generation = self.shared.slots.generation.load(Acquire);
        if generation != self.generation {
            self.slots = self.shared.slots.list();
            self.generation = generation;
            let live: std::collections::HashSet<usize> = self.slots.iter().map(key).collect();
            self.watch.retain(|k, _| live.contains(k));
            // Open perf counters and reserve stack storage for new threads; release exited ones.
            let tids: std::collections::HashSet<i32> = self.slots.iter().map(|s| s.tid).collect();
            for tid in tids.difference(&self.prepared) {
                probing::prepare(*tid);
            }
            for tid in self.prepared.difference(&tids) {
                probing::forget(*tid);
            }
            self.prepared = tids;
        }
        let now = self.shared.clock.raw();
        for i in 0..self.slots.len() {
            let slot = self.slots[i].clone();
            let mut sw = self.watch.remove(&key(&slot)).unwrap_or_default();
            wait = wait.min(self.look(&slot, &mut sw, now));
            self.watch.insert(key(&slot), sw);
        }
        wait
    }

    /// Looks at one slot; returns the nanoseconds until it could need another look.
    fn look(&mut self, slot: &Arc<WorkerSlot>, sw: &mut SlotWatch, now: u64) -> u64 {
        let in_flight = slot.in_flight();
        // A stall we follow ended if its poll is no longer the one in flight.
        if let Some(t) = &sw.tracked
            && in_flight.is_none_or(|f| f.seq != t.seq)
            && let Some(t) = sw.tracked.take()
        {
            self.end(slot, t);
        }
        self.late_stalls(slot, sw);
        let Some(f) = in_flight else { return self.shared.stall_ns };
        let elapsed_ns = self.shared.clock.delta_as_nanos(f.start, now);
        match &mut sw.tracked {
            Some(t) => {
                t.last_elapsed_ns = elapsed_ns;
                if elapsed_ns >= t.next_report_ns {
                    t.next_report_ns = t.next_report_ns.saturating_mul(2);
                    t.next_sample_ns = u64::MAX;
                    let with_stack = t.captures < probing::MAX_CAPTURES;
                    t.captures += usize::from(with_stack);
                    let look = Look {
                        at_elapsed: Duration::from_nanos(elapsed_ns),
                        snapshot: probing::look(t.tid, with_stack),
                    };
                    let msg = WatchMsg::Updated {
                        stall_id: t.stall_id,
                        elapsed_ns,
                        at_unix_nanos: crate::os::unix_nanos(),
                        look,
                    };
                    self.send(msg);
                } else if elapsed_ns >= t.next_sample_ns {
                    t.next_sample_ns = u64::MAX;
                    let look =
                        Look { at_elapsed: Duration::from_nanos(elapsed_ns), snapshot: probing::look(t.tid, false) };
                    self.send(WatchMsg::Sampled { stall_id: t.stall_id, look });
                }
                0
            }
            None if elapsed_ns >= self.shared.stall_ns => {
                let location = self.shared.locations.find(f.location_addr);
                let mut flag = self.flag(slot, f.task_id, self.shared.tasks.find(f.task_id), location, elapsed_ns);
                // Look at the thread now, mid-stall: state and syscall first, then the stack.
                flag.look = Some(Look {
                    at_elapsed: Duration::from_nanos(elapsed_ns),
                    snapshot: probing::look(slot.tid, true),
                });
                sw.tracked = Some(Tracked {
                    seq: f.seq,
                    stall_id: flag.stall_id,
                    next_report_ns: self.shared.stall_ns.saturating_mul(2),
                    last_elapsed_ns: elapsed_ns,
                    next_sample_ns: elapsed_ns.saturating_add(CONFIRM_AFTER_NS.max(self.shared.stall_ns / 4)),
                    captures: 1,
                    tid: slot.tid,
                });
                if sw.flagged.len() >= LONG_POLLS {
                    sw.flagged.pop_front();
                }
                sw.flagged.push_back(f.seq);
                self.send(WatchMsg::Started(Box::new(flag)));
                0
            }
            None => self.shared.stall_ns - elapsed_ns,
        }
    }

    /// Long polls that completed since the last look and were never seen in flight.
    fn late_stalls(&mut self, slot: &Arc<WorkerSlot>, sw: &mut SlotWatch) {
        let count = slot.long_count.load(Acquire);
        for n in sw.seen_long..count {
            match slot.long_poll(n) {
                Some(r) if sw.flagged.contains(&r.seq) => {}
                Some(r) => {
                    let flag = self.flag(slot, r.task_id, r.entry, r.location, r.ns);
                    self.send(WatchMsg::Late(Box::new(flag)));
                }
                None => {
                    // Overwritten before we looked: still a stall, but its details are gone.
                    self.shared.stall_count.fetch_add(1, Relaxed);
                    self.shared.stalls_without_details.fetch_add(1, Relaxed);
                }
            }
        }
        sw.seen_long = count;
    }

    /// Counts a new stall and describes it.
    fn flag(&self, slot: &Arc<WorkerSlot>, task_id: u64, entry: u32, location: u32, elapsed_ns: u64) -> Flag {
        let stall_id = self.shared.next_stall_id.fetch_add(1, Relaxed);
        let (kind, worker) = self.locate(slot);
        self.shared.stall_count.fetch_add(1, Relaxed);
        if kind == StallKind::BlockInPlace {
            self.shared.block_in_place_count.fetch_add(1, Relaxed);
        }
        let mut location = location;
        if entry != NONE
            && let Some(e) = self.shared.tasks.get(entry)
            && e.key.load(Relaxed) == task_id
        {
            e.stalls.fetch_add(1, Relaxed);
            location = e.location.load(Relaxed);
        }
        Flag {
            stall_id,
            kind,
            worker,
            slot: slot.clone(),
            task_id,
            location,
            elapsed_ns,
            at_unix_nanos: crate::os::unix_nanos(),
            look: None,
        }
    }

    fn end(&mut self, slot: &WorkerSlot, t: Tracked) {
        let elapsed_ns = slot.long_poll_ns(t.seq).unwrap_or(t.last_elapsed_ns);
        self.send(WatchMsg::Ended { stall_id: t.stall_id, elapsed_ns, at_unix_nanos: crate::os::unix_nanos() });
    }

    /// Which worker the stalled thread is, and whether it still is one: after `block_in_place`, tokio gives
    /// the worker's core to another thread, so no worker maps to this thread any more.
    fn locate(&self, slot: &WorkerSlot) -> (StallKind, Option<u32>) {
        let Some(handle) = &self.handle else { return (StallKind::WorkerBlocked, None) };
        let metrics = handle.metrics();
        #[cfg(tokio_unstable)]
        for i in 0..metrics.num_workers() {
            if metrics.worker_thread_id(i) == Some(slot.thread_id) {
                return (StallKind::WorkerBlocked, u32::try_from(i).ok());
            }
        }
        match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => (StallKind::BlockInPlace, None),
            _ => (StallKind::WorkerBlocked, None),
        }
    }

    fn send(&self, msg: WatchMsg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_watchdog.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn key(slot: &Arc<WorkerSlot>) -> usize {
    Arc::as_ptr(slot) as usize
}
