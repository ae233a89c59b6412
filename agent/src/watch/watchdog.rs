//! The watchdog: a thread that looks at every polling thread's slot each tick (1 ms by default) and flags a
//! poll that has run past the stall threshold **while it is still running**.
//!
//! It does as little as possible per tick — a seqlock read per slot — and hands everything slow (formatting,
//! symbolizing, rate limiting, logging, fan-out) to the agent thread through a bounded channel, so its own
//! latency stays within the threshold + one tick. A full channel loses the message and counts it
//! (`Dropped::watchdog_messages`); the watchdog never blocks.

use crate::shared::Shared;
use crate::shared::slots::FIRST_READING_DIVISOR;
use crate::shared::slots::{Clocks, InFlight, LONG_POLLS, WorkerSlot};
use crate::shared::tables::NONE;
use crate::watch::accounting::{Reading, account};
use crate::watch::probing::{self, Look};
use loopscope_wire::{StallKind, StallTime};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

mod busy_spans;
mod messages;
mod readings;
mod sending;

pub(crate) use messages::*;

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
    /// Stacks captured so far (the prober counts; at most `MAX_CAPTURES` are asked for, but for busy spans).
    captured: Arc<AtomicUsize>,
    tid: i32,
    /// Stable mode: a busy span waiting for (or given) the agent thread's verdict.
    verdict: Option<Arc<Verdict>>,
    /// Stable mode: how far into the span the candidate was flagged.
    flagged_ns: u64,
}

/// Scheduler readings of the thread running one poll (see `accounting.rs`).
#[derive(Debug, Clone, Copy)]
struct PollReadings {
    seq: u64,
    start: u64,
    /// Taken when the poll passed a quarter of the threshold (or when first seen, if later).
    first: Reading,
    /// The newest reading taken while the poll was still in flight.
    latest: Option<Reading>,
    /// The earliest in-flight reading after `first` with the thread's voluntary-switch count (one taken while it
    /// was running or runnable): from there on, an unchanged count proves the thread never blocked, when
    /// `first`'s can't (`accounting::account`).
    proof: Option<Reading>,
}

impl PollReadings {
    /// Whether `first` is a reading the thread took of itself before the poll began (`opening_readings`: at
    /// 0 ns, with a lead), rather than one taken from outside while the poll ran.
    fn opened_before(&self) -> bool {
        self.first.at_ns == 0
    }
}

/// The watchdog's view of one slot.
#[derive(Debug, Default)]
struct SlotWatch {
    tracked: Option<Tracked>,
    /// Long polls of this slot already accounted for.
    seen_long: u64,
    /// Sequence numbers of polls recently flagged in flight, so the long-poll ring doesn't report them twice.
    flagged: VecDeque<u64>,
    /// Readings of the poll in flight, once it passed a quarter of the threshold.
    readings: Option<PollReadings>,
    /// Stable mode: when a timed poll (`Agent::spawn`, `instrument`) was last seen in flight during the busy
    /// span with this (tagged) sequence number. That poll is timed and reported on its own, so the span counts
    /// from here on: its time must not make the span a second stall.
    busy_floor: Option<(u64, u64)>,
    /// Stable mode: the busy span (tagged sequence number) whose candidates were rejected, how many times,
    /// and how far into it to look again.
    busy_retry: Option<BusyRetry>,
}

/// See [`SlotWatch::busy_retry`].
#[derive(Debug, Clone, Copy)]
struct BusyRetry {
    seq: u64,
    rejections: u32,
    /// Look again once the span is this old; `u64::MAX`: never (the thread is no worker).
    at_ns: u64,
}

struct Watchdog {
    shared: Arc<Shared>,
    /// Stable mode: watch the workers' busy spans (`busy.rs`) as well as timed polls.
    stable: bool,
    handle: Option<Handle>,
    tx: SyncSender<ProbeJob>,
    slots: Vec<Arc<WorkerSlot>>,
    generation: u64,
    watch: HashMap<usize, SlotWatch>,
    prepared: std::collections::HashSet<i32>,
    /// Messages that must reach the agent thread (a stall's start and end) but found its queue full; sent
    /// first at the next tick. A lost `Ended` would leave a stall open forever, with its stacks kept.
    backlog: VecDeque<ProbeJob>,
}

pub(crate) fn run(shared: Arc<Shared>, handle: Option<Handle>, tx: SyncSender<ProbeJob>) {
    let interval = shared.config.watchdog_interval;
    // On an oversubscribed machine a late watchdog means late reports and late readings (which lean toward
    // blaming the task). Ask for a better share of the CPU where the OS allows it; say what we got.
    let priority = match loopscope_probes::thread::raise_priority(shared.config.realtime_watchdog, WATCHDOG_NICE) {
        Ok(p) => p.to_string(),
        Err(e) => format!("unchanged ({e})"),
    };
    let _ = shared.watchdog_priority.set(priority);
    // Before the first tick: a poll that finds the watchdog asleep must be able to wake it.
    let _ = shared.watchdog_thread.set(std::thread::current());
    let mut w = Watchdog {
        stable: shared.config.mode.effective() == crate::config::Mode::Stable,
        shared,
        handle,
        tx,
        slots: Vec::new(),
        generation: u64::MAX,
        watch: HashMap::new(),
        prepared: Default::default(),
        backlog: VecDeque::new(),
    };
    while !w.shared.stopping.load(Acquire) {
        let started = Instant::now();
        // Sleep until the earliest moment a stall could need flagging, but never less than one interval:
        // waking every interval regardless cost 1.4% of a core at 1 ms on an idle app (see BENCHMARKS.md).
        let wait_ns = w.tick();
        let mut wait = Duration::from_nanos(wait_ns).clamp(interval, MAX_WAIT);
        // No poll in flight anywhere: sleep (a second where membarrier closes the race below, else a threshold),
        // and let the next poll wake us (one futex wake,
        // paid by that poll; every other poll only reads the flag). The flag is set before a last look, so a
        // poll that starts meanwhile is seen here or sees the flag.
        // In stable mode a worker's unpark hook wakes it instead (`busy.rs`): while the watchdog sleeps, the
        // sampler's timer probe runs once a second rather than every 20 ms, so that costs two short wake-ups a
        // second, where looking every threshold cost 100 (1.1% of a core in a debug build).
        let deep = wait_ns >= w.shared.stall_ns && w.shared.config.probes;
        if deep {
            w.shared.watchdog_asleep.store(true, SeqCst);
            // The hook stores its poll's sequence number and then reads the flag, with no fence (it runs on
            // every poll): a membarrier makes every thread's stores so far visible here, so the look below
            // sees the poll, or the poll's hook sees the flag. Without membarrier a poll can, rarely, slip
            // between the two and wait for the next wake.
            let fenced = loopscope_probes::thread::process_barrier();
            // A thread that registered since the tick isn't in `w.slots`; its first poll may have read the flag
            // before it was set: look again at once rather than sleep through that poll.
            if w.shared.slots.generation.load(Acquire) != w.generation
                || w.slots.iter().any(|s| s.in_flight().is_some() || (w.stable && s.busy().is_some()))
            {
                w.shared.watchdog_asleep.store(false, Relaxed);
                wait = interval;
            } else {
                w.shared.watchdog_slept.store(true, Relaxed);
                if fenced {
                    // With the race closed, the next poll is certain to wake us: an idle app pays nothing until
                    // then (a threshold's sleep woke the watchdog 100 times a second at 10 ms).
                    wait = MAX_WAIT;
                }
            }
        }
        let deadline = started + wait;
        let now = Instant::now();
        if deadline > now {
            std::thread::park_timeout(deadline - now);
        }
        if deep {
            w.shared.watchdog_asleep.store(false, Relaxed);
        }
    }
    // One last look, so stalls that ended just before shutdown are counted too.
    w.tick();
    // End any stall still open so subscribers see a closed record, split as well as it can be: by the thread's
    // own closing reading if the poll has ended by now (the agent can stop before the watchdog's last look sees
    // the end), else by the readings so far.
    for slot in w.slots.clone() {
        let Some(mut sw) = w.watch.remove(&key(&slot)) else { continue };
        let Some(t) = sw.tracked.take() else { continue };
        let readings = sw.readings.filter(|r| r.seq == t.seq);
        let ended_ns = slot.closing(t.seq).map(|_| slot.long_poll_ns(t.seq).unwrap_or(t.last_elapsed_ns));
        let (elapsed_ns, time) = match ended_ns {
            Some(ns) => (ns, w.final_time(&slot, t.seq, ns, readings)),
            None => (t.last_elapsed_ns, w.time_so_far(t.last_elapsed_ns, readings)),
        };
        w.send_msg(WatchMsg::Ended { stall_id: t.stall_id, elapsed_ns, at_unix_nanos: crate::os::unix_nanos(), time });
    }
    let open: Vec<_> = w.watch.drain().filter_map(|(_, sw)| sw.tracked).collect();
    for t in open {
        w.send_msg(WatchMsg::Ended {
            stall_id: t.stall_id,
            elapsed_ns: t.last_elapsed_ns,
            at_unix_nanos: crate::os::unix_nanos(),
            time: None,
        });
    }
    // The prober drains its queue until this thread exits, so waiting for room here ends.
    for msg in w.backlog.drain(..) {
        if w.tx.send(msg).is_err() {
            break;
        }
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

/// The watchdog's nice value where real-time scheduling is refused or off, where permitted (root,
/// CAP_SYS_NICE or RLIMIT_NICE).
const WATCHDOG_NICE: i32 = -10;

impl Watchdog {
    /// Looks at every slot. Returns how many nanoseconds may pass before anything could need a look: a poll
    /// seen in flight since `start` can't become a stall before `start + threshold`, and a poll that has not
    /// started yet can't before `now + threshold`; an open stall is watched every interval so that its end is
    /// reported promptly.
    fn tick(&mut self) -> u64 {
        self.flush_backlog();
        let mut wait = self.shared.stall_ns;
        let generation = self.shared.slots.generation.load(Acquire);
        if generation != self.generation {
            self.slots = self.shared.slots.list();
            self.generation = generation;
            let live: std::collections::HashSet<usize> = self.slots.iter().map(key).collect();
            self.watch.retain(|k, _| live.contains(k));
            // Open perf counters and reserve stack storage for new threads; release exited ones.
            let tids: std::collections::HashSet<i32> = self.slots.iter().map(|s| s.tid).collect();
            for tid in self.prepared.difference(&tids) {
                probing::forget(*tid);
            }
            self.prepared.retain(|t| tids.contains(t));
            // Stable mode registers every thread the runtime starts, `spawn_blocking`'s too (up to 512): perf
            // counters for each would cost file descriptors for threads that never stall a worker. There a thread is
            // prepared when it is first flagged (`prepare`), here at once.
            if !self.stable {
                for tid in tids {
                    self.prepare(tid);
                }
            }
        }
        for i in 0..self.slots.len() {
            let slot = self.slots[i].clone();
            let mut sw = self.watch.remove(&key(&slot)).unwrap_or_default();
            // The clock is read per slot: a scheduler reading of one thread must not make the next thread's
            // stall look younger than it is.
            wait = wait.min(self.look(&slot, &mut sw));
            self.watch.insert(key(&slot), sw);
        }
        if !self.backlog.is_empty() {
            // Come back soon for what the agent thread had no room for.
            wait = 0;
        }
        wait
    }

    /// Looks at one slot; returns the nanoseconds until it could need another look.
    fn look(&mut self, slot: &Arc<WorkerSlot>, sw: &mut SlotWatch) -> u64 {
        // A thread that exited can't be in a poll, whatever its slot last said (its runtime may have shut
        // down between the before- and after-poll hooks): a stall it was in ends here.
        let alive = slot.alive.load(Acquire);
        let timed = if alive { slot.in_flight() } else { None };
        // Stable mode: a worker's busy span stands for a poll when no timed poll runs (see `look_busy`).
        let busy = if self.stable && alive { self.busy_span(slot, sw, timed.is_some()) } else { None };
        let in_flight = timed.or(busy);
        // A stall we follow ended if its poll is no longer the one in flight.
        if let Some(t) = &sw.tracked
            && in_flight.is_none_or(|f| f.seq != t.seq)
            && let Some(t) = sw.tracked.take()
        {
            self.end(slot, t, sw.readings.take());
        }
        self.late_stalls(slot, sw);
        if let Some(b) = busy {
            return self.look_busy(slot, sw, b);
        }
        // Readings of another poll, or of this one before its thread restarted its clock (`WorkerSlot::restart`:
        // the readings were taken against a start that is no longer the poll's) are dropped.
        if sw.readings.is_some_and(|r| in_flight.is_none_or(|f| f.seq != r.seq || f.start != r.start)) {
            sw.readings = None;
        }
        let first_reading_ns = self.shared.stall_ns / FIRST_READING_DIVISOR;
        // A reading the thread took of itself just before this poll began is as good as one taken at its start.
        if sw.readings.is_none()
            && let Some(f) = in_flight
        {
            sw.readings = self.opening_readings(slot, f.seq, f.start, first_reading_ns);
        }
        // Nothing in flight: sleep a whole threshold. The next poll wakes the watchdog (see `run`), so its first
        // reading still comes at a quarter of the threshold.
        let Some(f) = in_flight else { return self.shared.stall_ns };
        let elapsed_ns = self.shared.clock.delta_as_nanos(f.start, self.shared.clock.raw());
        // The thread is taking its own opening reading (a few µs; on a crowded virtual machine, milliseconds),
        // after which the poll restarts: neither measure nor flag it against the start it leaves.
        if sw.tracked.is_none() && timed.is_some() && slot.restarted_since(f.start) {
            sw.readings = None;
            return u64::try_from(self.shared.config.watchdog_interval.as_nanos()).unwrap_or(u64::MAX);
        }
        let at_elapsed = Duration::from_nanos(elapsed_ns);
        match &mut sw.tracked {
            Some(t) => {
                t.last_elapsed_ns = elapsed_ns;
                let report = elapsed_ns >= t.next_report_ns;
                if report || elapsed_ns >= t.next_sample_ns {
                    if report {
                        t.next_report_ns = t.next_report_ns.saturating_mul(2);
                    }
                    t.next_sample_ns = u64::MAX;
                    // Only stacks that arrived count: a thread waiting for a CPU may miss the capture's
                    // deadline, and is tried again at the next doubling.
                    let captured = t.captured.load(Relaxed);
                    let with_stack = if report { captured < probing::MAX_CAPTURES } else { captured == 0 };
                    let look = LookRequest {
                        slot: slot.clone(),
                        seq: f.seq,
                        tid: t.tid,
                        at_elapsed,
                        with_stack,
                        captured: t.captured.clone(),
                        confirm: false,
                    };
                    let stall_id = t.stall_id;
                    self.refresh_latest(slot, f.seq, f.start, &mut sw.readings);
                    let time = self.time_so_far(elapsed_ns, sw.readings);
                    let msg = if report {
                        WatchMsg::Updated {
                            stall_id,
                            elapsed_ns,
                            at_unix_nanos: crate::os::unix_nanos(),
                            look: None,
                            time,
                        }
                    } else {
                        WatchMsg::Sampled { stall_id, look: None, time }
                    };
                    self.send(ProbeJob { msg, look: Some(look) });
                }
                0
            }
            None if elapsed_ns >= self.shared.stall_ns => {
                self.prepare(slot.tid);
                let location = self.shared.locations.find(f.location_addr);
                let mut flag = self.flag(slot, f.task_id, self.shared.tasks.find(f.task_id), location, elapsed_ns);
                // Seen for the first time past the threshold (the watchdog was late, or the threshold is below
                // its interval): the first reading is taken now.
                if sw.readings.is_none()
                    && let Some(r) = self.first_readings(slot, f.seq, f.start, elapsed_ns)
                {
                    sw.readings = Some(r);
                } else {
                    // The first report's figures cover the poll up to now.
                    self.refresh_latest(slot, f.seq, f.start, &mut sw.readings);
                }
                flag.time = self.time_so_far(elapsed_ns, sw.readings);
                let captured = Arc::new(AtomicUsize::new(0));
                // The prober looks at the thread now, mid-stall: state and syscall first, then the stack.
                let look = LookRequest {
                    slot: slot.clone(),
                    seq: f.seq,
                    tid: slot.tid,
                    at_elapsed,
                    with_stack: true,
                    captured: captured.clone(),
                    confirm: false,
                };
                sw.tracked = Some(Tracked {
                    seq: f.seq,
                    stall_id: flag.stall_id,
                    next_report_ns: self.shared.stall_ns.saturating_mul(2),
                    last_elapsed_ns: elapsed_ns,
                    next_sample_ns: elapsed_ns.saturating_add(CONFIRM_AFTER_NS.max(self.shared.stall_ns / 4)),
                    captured,
                    tid: slot.tid,
                    verdict: None,
                    flagged_ns: elapsed_ns,
                });
                if sw.flagged.len() >= LONG_POLLS {
                    sw.flagged.pop_front();
                }
                sw.flagged.push_back(f.seq);
                self.send(ProbeJob { msg: WatchMsg::Started(Box::new(flag)), look: Some(look) });
                0
            }
            None => {
                if !self.shared.config.probes {
                    return self.shared.stall_ns - elapsed_ns;
                }
                // A poll opened by the thread's own reading from before it began gets a look from outside at a
                // quarter of the threshold as well: the thread may have parked between its own reading and the
                // poll's start, so only a count taken inside the poll can prove that a wait for a CPU in
                // progress at the flagging look is one (see `PollReadings::proof`).
                let opened_before = sw.readings.is_some_and(|r| r.latest.is_none() && r.opened_before());
                if sw.readings.is_none() || opened_before {
                    if elapsed_ns < first_reading_ns {
                        return first_reading_ns - elapsed_ns;
                    }
                    if opened_before {
                        self.refresh_latest(slot, f.seq, f.start, &mut sw.readings);
                    } else {
                        sw.readings = self.first_readings(slot, f.seq, f.start, elapsed_ns);
                    }
                }
                // This poll may end and the thread's next one start any moment, without waking the watchdog
                // (it is awake): come back in time for that one's first reading.
                (self.shared.stall_ns - elapsed_ns).min(first_reading_ns)
            }
        }
    }

    /// Long polls that completed since the last look and were never seen in flight.
    fn late_stalls(&mut self, slot: &Arc<WorkerSlot>, sw: &mut SlotWatch) {
        let count = slot.long_count.load(Acquire);
        for n in sw.seen_long..count {
            match slot.long_poll(n) {
                Some(r) if sw.flagged.contains(&r.seq) => {}
                Some(r) => {
                    let mut flag = self.flag(slot, r.task_id, r.entry, r.location, r.ns);
                    // The watchdog may have taken the first reading before it was starved. If not, the thread's
                    // own readings open and close it: the poll's start is known from its closing reading.
                    flag.time = match sw.readings.filter(|p| p.seq == r.seq) {
                        Some(readings) => self.final_time(slot, r.seq, r.ns, Some(readings)),
                        None => self.own_time(slot, r.seq, r.ns),
                    };
                    self.send_msg(WatchMsg::Late(Box::new(flag)));
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
        // A future timed with `Agent::instrument` (a `block_on` body) is its own kind, whatever thread runs it;
        // a `LocalSet` task blocks the thread that drives it, worker or not.
        let kind = if crate::taskid::is_instrumented(task_id) {
            StallKind::BlockOn
        } else if task_id & crate::taskid::LOCAL_TASK_BIT != 0 {
            StallKind::WorkerBlocked
        } else {
            kind
        };
        let task_id = crate::taskid::reported_id(task_id);
        self.shared.stall_count.fetch_add(1, Relaxed);
        if kind == StallKind::BlockInPlace {
            self.shared.block_in_place_count.fetch_add(1, Relaxed);
        }
        let mut location = location;
        if entry != NONE
            && let Some(e) = self.shared.tasks.get(entry)
            && e.key.load(Acquire) == task_id
        {
            // The task's own hook may retire the entry at any moment once this poll has ended (and another
            // task may claim it): count, then check the key again. The add reads the hook's clearing if that
            // came first, and then the key shows the change; take the count back unless the clearing already
            // did, so a stall is never charged to the next task. (A task retired right then may miss it.)
            let before = e.stalls.fetch_add(1, AcqRel);
            let location_now = e.location.load(Relaxed);
            if e.key.load(Acquire) == task_id {
                location = location_now;
            } else {
                let _ = e.stalls.compare_exchange(before.wrapping_add(1), before, Relaxed, Relaxed);
            }
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
            time: None,
            agent_task: self.shared.agent_task_name(task_id),
            confirm: None,
            more_looks: Vec::new(),
            span_ended: false,
            motion: None,
            span_seq: 0,
        }
    }

    fn end(&mut self, slot: &WorkerSlot, t: Tracked, readings: Option<PollReadings>) {
        if let Some(v) = &t.verdict {
            match v.get() {
                // Never a stall, or one already ended by the agent thread.
                Verdict::REJECTED | Verdict::NOT_WORKER | Verdict::ENDED => return,
                // Confirmed or still undecided: the end follows the candidate through the prober, so the agent
                // thread sees it after its verdict and closes the stall if it confirmed it (else ignores it). The
                // span ended at the park: its duration is the last one seen (no long-poll ring records spans).
                _ => {
                    let readings = readings.filter(|r| r.seq == t.seq);
                    let time = self.final_time(slot, t.seq, t.last_elapsed_ns, readings);
                    self.send_msg(WatchMsg::Ended {
                        stall_id: t.stall_id,
                        elapsed_ns: t.last_elapsed_ns,
                        at_unix_nanos: crate::os::unix_nanos(),
                        time,
                    });
                    return;
                }
            }
        }
        let readings = readings.filter(|r| r.seq == t.seq);
        // The poll's exact duration, from the after-poll hook's record. A watchdog starved for longer than the
        // long-poll ring lasts still finds the thread's own closing reading (more are kept), taken a few µs
        // after the end: better than the last duration it saw in flight, which may be far short of the end.
        let elapsed_ns = slot
            .long_poll_ns(t.seq)
            .or_else(|| {
                let start = readings?.start;
                slot.closing(t.seq).map(|c| self.shared.clock.delta_as_nanos(start, c.raw))
            })
            .unwrap_or(t.last_elapsed_ns);
        let time = self.final_time(slot, t.seq, elapsed_ns, readings);
        self.send_msg(WatchMsg::Ended {
            stall_id: t.stall_id,
            elapsed_ns,
            at_unix_nanos: crate::os::unix_nanos(),
            time,
        });
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

    /// Opens thread `tid`'s perf counters and reserves its stack storage, once.
    fn prepare(&mut self, tid: i32) {
        if self.prepared.insert(tid) {
            probing::prepare(tid);
        }
    }
}

fn key(slot: &Arc<WorkerSlot>) -> usize {
    Arc::as_ptr(slot) as usize
}
