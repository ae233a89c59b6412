//! Per-thread slots: one per OS thread that polls tasks of one runtime.
//!
//! Each slot has a single writer (its thread), is aligned to 128 bytes so two workers never share a cache line
//! (adjacent-line prefetch pairs lines on x86), and publishes plain counters with `Relaxed` stores, as tokio's
//! own worker metrics do. It also publishes the poll in progress (start time, task) under a sequence number so
//! the watchdog can see a poll that is blocking *right now*, not only after it returns.
//!
//! Slots are keyed by OS thread, not by tokio worker index: `block_in_place` moves a worker's core to another
//! thread while the original thread is still inside a poll, so two threads can briefly both claim one index.
//!
//! The poll in flight and the long-poll ring are seqlocks (one writer, readers that retry or give up, never
//! block it). The writer side is: mark the record as changing (the poll sequence even, or a ring entry's
//! generation 0), a `Release` fence, the fields with `Relaxed` stores, then the new sequence with a `Release`
//! store. The reader side: the sequence with `Acquire`, the fields, an `Acquire` fence, the sequence again. The
//! fence pair is what makes a reader that saw *any* new field also see the "changing" mark when it re-reads, so
//! it never pairs one poll's fields with another poll's sequence (Boehm, "Can seqlocks get along with
//! programming language memory models?", 2012). A `Release` store alone orders only what comes before it, and
//! on aarch64 the next poll's fields could otherwise become visible before the previous poll's end. On x86 both
//! fences compile to nothing. The `loom` tests at the bottom check both seqlocks (see `sync.rs` for how to run
//! them).

use crate::shared::tables::TASK_BUCKETS;
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};
use loopscope_wire::LogHistogram;
use std::cell::RefCell;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

mod clocks;
mod registry;
pub(crate) use clocks::{Birth, Clocks};
use clocks::{off_cpu_between, off_cpu_since};
pub(crate) use registry::*;

/// Single-writer increment: a load and a store, not a locked read-modify-write. The same as `tables::bump`,
/// but on the slot's own atomic type, which the loom tests swap.
#[inline(always)]
fn bump(a: &AtomicU64) {
    a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
}

/// Completed long polls remembered per thread, so the watchdog learns a stall's exact final duration even if
/// the thread completed more polls before the watchdog's next look.
pub(crate) const LONG_POLLS: usize = 4;

/// A completed poll that passed the stall threshold. Written only on that (rare) path, as a seqlock.
#[derive(Debug, Default)]
pub(crate) struct LongPoll {
    /// Which long poll of this thread this is, plus one (`n + 1` for the `n`th): 0 while being written,
    /// set last with `Release`. Readers ask for a given `n`, so an entry already overwritten by a later lap
    /// of the ring reads as missing, never as the wrong poll.
    generation: AtomicU64,
    /// The poll's (odd) sequence number.
    seq: AtomicU64,
    ns: AtomicU64,
    task_id: AtomicU64,
    entry: AtomicU32,
    location: AtomicU32,
}

/// The thread's own scheduler reading, taken in the after-poll hook of a poll that ran past a quarter of the
/// stall threshold, just before the poll's end is published (a seqlock like a ring entry: `seq` 0 while being
/// written). The last [`CLOSINGS`] are kept. They serve twice:
/// * as the *closing* reading of the poll that took it: exact, where the watchdog's own would come late (its
///   next tick, or never if the thread exits), so no time after the poll's end is guessed at;
/// * as the *opening* reading of the thread's next poll, when that starts soon after: the thread was running
///   when it took it, so no wait for a CPU was in progress, and the next poll's run-queue wait can be bounded
///   from it even if the watchdog (late on a busy machine) never saw that poll start. See `accounting.rs`.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    /// The (odd) sequence number of the poll it closes; 0 while being written or before the first.
    seq: AtomicU64,
    /// The agent's raw clock when it was taken.
    raw: AtomicU64,
    /// CPU time and run-queue wait in nanoseconds, and voluntary switches; `u64::MAX` where unreadable.
    cpu_ns: AtomicU64,
    run_queue_ns: AtomicU64,
    switches: AtomicU64,
}

/// How many closing readings a slot keeps: enough that the watchdog, late on a busy machine, still finds a poll's
/// own closing reading after the thread ran a few more long polls.
const CLOSINGS: usize = 8;

/// A plain copy of a [`Closing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClosingRecord {
    /// The sequence number of the poll it closed.
    pub(crate) seq: u64,
    pub(crate) raw: u64,
    pub(crate) clocks: Clocks,
}

/// A plain copy of a [`LongPoll`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LongPollRecord {
    pub(crate) seq: u64,
    pub(crate) ns: u64,
    pub(crate) task_id: u64,
    pub(crate) entry: u32,
    pub(crate) location: u32,
}

/// What the watchdog reads about the poll in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    pub(crate) start: u64,
    pub(crate) task_id: u64,
    pub(crate) location_addr: usize,
}

#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct WorkerSlot {
    // --- written by the owning thread on every poll ---
    /// Odd while a poll is in flight: the seqlock's sequence for the three fields below (module docs). Stored
    /// with `Release` last on poll start and first on poll end.
    pub(crate) seq: AtomicU64,
    pub(crate) poll_start: AtomicU64,
    pub(crate) task_id: AtomicU64,
    /// Address of the task's `&'static Location` (its spawn site). The watchdog maps it back through the
    /// location table, so the hot path never touches the table.
    pub(crate) task_location: AtomicUsize,
    pub(crate) polls: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) max_poll_ns: AtomicU64,
    pub(crate) slow_polls: AtomicU64,
    /// Poll durations of tasks without a table entry (table full). Tracked tasks' durations live in their
    /// entries; keeping a per-thread histogram for every poll would cost an extra write per poll.
    pub(crate) untracked_hist: [AtomicU64; TASK_BUCKETS],
    pub(crate) long_count: AtomicU64,
    pub(crate) long_polls: [LongPoll; LONG_POLLS],
    pub(crate) closings: [Closing; CLOSINGS],
    pub(crate) closing_count: AtomicU64,
    /// The thread's own readings at the start of a poll that began more than a quarter of the threshold after
    /// its previous reading (same layout as a closing reading, with `raw` the poll's start): the watchdog, late
    /// on a busy machine, may come too late to open that poll. The last [`CLOSINGS`] are kept, so a late
    /// watchdog still finds a poll's opening after the thread started a few more.
    pub(crate) openings: [Closing; CLOSINGS],
    pub(crate) opening_count: AtomicU64,
    /// Set while the owner thread takes its own opening reading, before it restarts the poll's clock
    /// (`record_own_opening`): the watchdog neither measures nor flags the poll against the start it is leaving.
    pub(crate) restarting: AtomicBool,
    /// The sequence number of the poll the watchdog is measuring (it took that poll's first reading; 0: none).
    /// Written by the watchdog, read by the owner thread as a poll past a quarter of the threshold ends.
    pub(crate) watched: AtomicU64,
    /// The closing reading of the `watched` poll, kept apart from the ring: on a busy machine the watchdog can
    /// be starved for longer than the thread takes to end [`CLOSINGS`] more polls past a quarter of the
    /// threshold (each of them preempted once is enough). Without this copy the watchdog then closed the poll
    /// with a reading of its own taken after those polls, and their CPU time could only be bounded, not taken
    /// off: a 2 ms poll preempted for 20 ms was reported as 10–20 ms on a CPU and failed the check.
    watched_closing: Closing,
    /// The agent's raw clock at the thread's newest own reading (closing, opening, or at registration): a poll
    /// that starts more than a quarter of the threshold after it takes a new one (`Shared::begin_poll`).
    pub(crate) own_at: AtomicU64,
    /// Polls whose before-hook found a poll already in flight on this thread (should stay 0).
    pub(crate) nested: AtomicU64,
    // --- written by the owning thread in tokio's park/unpark hooks (stable mode only) ---
    /// Odd while the worker is busy (between an unpark and the next park): a seqlock over `busy_start`,
    /// written as the poll in flight is (module docs), but only twice per park, never per poll.
    pub(crate) busy_seq: AtomicU64,
    /// The agent's raw clock at the unpark that began the busy span.
    pub(crate) busy_start: AtomicU64,
    /// Which of tokio's workers (bit `i` for worker `i`) this thread may be running, narrowed at each unpark
    /// (`busy.rs`); 0 until known. Stable mode has no API that says (`worker_thread_id` is unstable).
    pub(crate) worker_mask: AtomicU64,
    // --- identity, fixed at registration ---
    pub(crate) tid: i32,
    pub(crate) thread_id: ThreadId,
    pub(crate) thread_name: Option<String>,
    pub(crate) alive: AtomicBool,
    /// Set when the agent that owns this slot shut down, so threads drop their reference lazily.
    pub(crate) agent_gone: AtomicBool,
    /// The thread's scheduler clocks when it registered, read by the thread itself (so no wait for a CPU can be
    /// in progress): the first reading of its first poll, which the watchdog (perhaps not even running yet)
    /// could not take in time. Cold path: once per thread.
    pub(crate) born: Option<Birth>,
}

impl WorkerSlot {
    fn new() -> Self {
        let current = std::thread::current();
        let born = Birth::now();
        WorkerSlot {
            seq: AtomicU64::new(0),
            poll_start: AtomicU64::new(0),
            task_id: AtomicU64::new(0),
            task_location: AtomicUsize::new(0),
            polls: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            max_poll_ns: AtomicU64::new(0),
            slow_polls: AtomicU64::new(0),
            untracked_hist: std::array::from_fn(|_| AtomicU64::new(0)),
            long_count: AtomicU64::new(0),
            long_polls: Default::default(),
            closings: Default::default(),
            closing_count: AtomicU64::new(0),
            openings: Default::default(),
            opening_count: AtomicU64::new(0),
            restarting: AtomicBool::new(false),
            watched: AtomicU64::new(0),
            watched_closing: Closing::default(),
            own_at: AtomicU64::new(born.as_ref().map_or(0, |b| b.raw)),
            nested: AtomicU64::new(0),
            busy_seq: AtomicU64::new(0),
            busy_start: AtomicU64::new(0),
            worker_mask: AtomicU64::new(0),
            tid: crate::os::current_tid(),
            thread_id: current.id(),
            thread_name: current.name().map(str::to_string),
            alive: AtomicBool::new(true),
            agent_gone: AtomicBool::new(false),
            born,
        }
    }

    /// Publishes a poll start. Owner thread only.
    #[inline]
    pub(crate) fn begin(&self, task_id: u64, location_addr: usize, start: u64) {
        let mut seq = self.seq.load(Relaxed);
        if seq & 1 == 1 {
            // A before-hook without an after-hook on this thread; see `nested`. End that poll first, so that
            // the fence below orders its end before the new fields, as it does for an `end`.
            bump(&self.nested);
            seq = seq.wrapping_add(1);
            self.seq.store(seq, Relaxed);
        }
        // Seqlock writer (module docs): the even sequence stored by `end` (or just above) must be visible to a
        // reader before any field of this new poll is, or the reader could pair these fields with the previous
        // poll's odd sequence and charge that poll's stall to this task.
        fence(Release);
        self.task_id.store(task_id, Relaxed);
        self.task_location.store(location_addr, Relaxed);
        self.poll_start.store(start, Relaxed);
        self.seq.store(seq.wrapping_add(1), Release);
    }

    /// The task of the poll in flight on this thread, if any. Owner thread only.
    #[inline]
    pub(crate) fn in_flight_task(&self) -> Option<u64> {
        (self.seq.load(Relaxed) & 1 == 1).then(|| self.task_id.load(Relaxed))
    }

    /// Publishes the end of the poll in flight and records it; nothing when no poll is in flight (hooks
    /// installed while a poll ran). Owner thread only.
    #[inline]
    pub(crate) fn end(&self, ns: u64, slow: bool) {
        let seq = self.seq.load(Relaxed);
        if seq & 1 == 0 {
            return;
        }
        self.seq.store(seq + 1, Release);
        bump(&self.polls);
        self.busy_ns.store(self.busy_ns.load(Relaxed).wrapping_add(ns), Relaxed);
        if ns > self.max_poll_ns.load(Relaxed) {
            self.max_poll_ns.store(ns, Relaxed);
        }
        if slow {
            bump(&self.slow_polls);
        }
    }

    /// Remembers the poll in flight, which is about to end past the stall threshold, with its location
    /// resolved now, while the task is certainly alive. Called before [`end`](Self::end), whose `Release` store
    /// publishes it with the end: a watchdog that sees the poll ended finds its exact duration. The after-poll
    /// hook is the authority on long polls: even if the OS starved the watchdog for the whole poll, the
    /// watchdog finds it here on its next look. Owner thread only; rare.
    pub(crate) fn record_long(&self, ns: u64, entry: u32, location: u32) {
        let seq = self.seq.load(Relaxed);
        if seq & 1 == 0 {
            return;
        }
        let n = self.long_count.load(Relaxed);
        if let Some(lp) = self.long_polls.get((n % LONG_POLLS as u64) as usize) {
            // Seqlock writer (module docs): "being written" must be visible before any new field is.
            lp.generation.store(0, Relaxed);
            fence(Release);
            lp.seq.store(seq, Relaxed);
            lp.ns.store(ns, Relaxed);
            lp.task_id.store(self.task_id.load(Relaxed), Relaxed);
            lp.entry.store(entry, Relaxed);
            lp.location.store(location, Relaxed);
            lp.generation.store(n.wrapping_add(1), Release);
        }
        self.long_count.store(n.wrapping_add(1), Release);
    }

    /// [`record_closing`](Self::record_closing) with the calling thread's clocks read now. The CPU clock and
    /// `clock` are read back to back, first, so that the reading's moment is the poll's end: the `/proc` read
    /// and `getrusage` after them usually take a few µs, but were seen taking 8 ms of the thread's CPU time on a
    /// crowded virtual machine, and read first they made the next poll look 8 ms longer on a CPU than it was
    /// (its opening is this reading, and the time after it counted as the poll's; the 16-test crate of issue
    /// 10 failed on exactly that). A wait for a CPU that begins inside this hook would come after the end but
    /// be in the run-queue figure read last: the hook's own off-CPU time, measured around those reads, is taken
    /// off it, which can only leave the poll's figure short of its waits (toward "blocked").
    pub(crate) fn record_own_closing(&self, clock: &quanta::Clock) {
        let cpu = loopscope_probes::thread::own_cpu_time();
        let raw = clock.raw();
        let (run_queue, switches) = loopscope_probes::thread::own_waits();
        let off_cpu = off_cpu_since(clock, raw, cpu);
        let clocks = Clocks::of(cpu, run_queue.map(|w| w.saturating_sub(off_cpu)), switches);
        self.record_closing(raw, clocks);
    }

    /// [`record_opening`](Self::record_opening) with the calling thread's clocks read now, and the poll's start
    /// moved to the moment of that reading (`restart`), so that the syscalls of this rare path (a few µs, but
    /// up to milliseconds on a crowded virtual machine, see `record_own_closing`) are neither the poll's wall
    /// time nor its CPU time: they are loopscope's, not the task's. The CPU clock is read last, back to back
    /// with the new start; a wait for a CPU inside the hook, before that, would be missing from the run-queue
    /// figure read first and so counted in the poll's: the hook's off-CPU time is added to the figure, which can
    /// only leave the poll short of its waits.
    pub(crate) fn record_own_opening(&self, clock: &quanta::Clock) {
        self.restarting.store(true, Release);
        let cpu_before = loopscope_probes::thread::own_cpu_time();
        let raw_before = clock.raw();
        let (run_queue, switches) = loopscope_probes::thread::own_waits();
        let cpu = loopscope_probes::thread::own_cpu_time();
        let raw = clock.raw();
        let off_cpu = off_cpu_between(clock, (raw_before, cpu_before), (raw, cpu));
        self.restart(raw);
        self.record_opening(Clocks::of(cpu, run_queue.map(|w| w + off_cpu), switches));
        self.restarting.store(false, Release);
    }

    /// Whether the poll that started at `start` is (or was) moving its start past the owner's own opening
    /// reading: measured against `start`, it would be charged with loopscope's work. The watchdog asks after
    /// reading the clock, so a restart that completed while it was preempted is seen too.
    pub(crate) fn restarted_since(&self, start: u64) -> bool {
        self.restarting.load(Acquire) || self.poll_start.load(Relaxed) != start
    }

    /// Moves the start of the poll in flight to `start` (later than the one [`begin`](Self::begin) published):
    /// the before-poll hook's own rare work is not the task's. Owner thread only. A watchdog that read the old
    /// start sees the new one at its next look and drops what it measured against the old (`watchdog.rs`).
    fn restart(&self, start: u64) {
        if self.seq.load(Relaxed) & 1 == 1 {
            self.poll_start.store(start, Relaxed);
        }
    }

    /// Stores the thread's own scheduler reading for the poll in flight, which is about to end past a quarter of
    /// the stall threshold. Called before [`end`](Self::end), whose `Release` store publishes it together with
    /// the end: a watchdog that sees the poll ended finds its closing reading. Owner thread only; rare (a few µs
    /// of syscalls, no allocation, no lock: see `own_sched_times`).
    pub(crate) fn record_closing(&self, raw: u64, clocks: Clocks) {
        let seq = self.seq.load(Relaxed);
        if seq & 1 == 0 {
            return;
        }
        let n = self.closing_count.load(Relaxed);
        let Some(c) = self.closings.get((n % CLOSINGS as u64) as usize) else { return };
        Self::write_reading(c, seq, raw, clocks);
        self.closing_count.store(n.wrapping_add(1), Relaxed);
        if self.watched.load(Relaxed) == seq {
            Self::write_reading(&self.watched_closing, seq, raw, clocks);
        }
        self.own_at.store(raw, Relaxed);
    }

    /// The watchdog took the first reading of poll `seq`: keep that poll's closing reading apart from the ring
    /// (`watched_closing`), however many more the thread takes before the watchdog looks again. If the poll
    /// ends before the thread sees this, its closing is in the ring as before.
    pub(crate) fn watch(&self, seq: u64) {
        self.watched.store(seq, Relaxed);
    }

    /// Seqlock writer of one own reading (module docs): "being written" is visible before any new field is.
    fn write_reading(c: &Closing, seq: u64, raw: u64, clocks: Clocks) {
        c.seq.store(0, Relaxed);
        fence(Release);
        c.raw.store(raw, Relaxed);
        Self::store_clocks(c, clocks);
        c.seq.store(seq, Release);
    }

    /// Stores the thread's own reading for the poll in flight, taken just after it started, as if taken at its
    /// start (the hook's few µs in between are the thread's own CPU time, never a wait). Owner thread only;
    /// rare (a poll that starts more than a quarter of the threshold after the thread's previous reading).
    pub(crate) fn record_opening(&self, clocks: Clocks) {
        let seq = self.seq.load(Relaxed);
        if seq & 1 == 0 {
            return;
        }
        let n = self.opening_count.load(Relaxed);
        let Some(c) = self.openings.get((n % CLOSINGS as u64) as usize) else { return };
        self.opening_count.store(n.wrapping_add(1), Relaxed);
        let start = self.poll_start.load(Relaxed);
        Self::write_reading(c, seq, start, clocks);
        self.own_at.store(start, Relaxed);
    }

    /// The seqlock's payload of a [`Closing`] being written.
    fn store_clocks(c: &Closing, clocks: Clocks) {
        c.cpu_ns.store(clocks.cpu_ns.unwrap_or(u64::MAX), Relaxed);
        c.run_queue_ns.store(clocks.run_queue_ns.unwrap_or(u64::MAX), Relaxed);
        c.switches.store(clocks.switches.unwrap_or(u64::MAX), Relaxed);
    }

    fn read_closing(c: &Closing) -> Option<ClosingRecord> {
        let seq = c.seq.load(Acquire);
        if seq == 0 {
            return None;
        }
        let some = |v: u64| (v != u64::MAX).then_some(v);
        let r = ClosingRecord {
            seq,
            raw: c.raw.load(Relaxed),
            clocks: Clocks {
                cpu_ns: some(c.cpu_ns.load(Relaxed)),
                run_queue_ns: some(c.run_queue_ns.load(Relaxed)),
                switches: some(c.switches.load(Relaxed)),
            },
        };
        fence(Acquire);
        (c.seq.load(Relaxed) == seq).then_some(r)
    }

    /// The thread's own closing reading of the poll with sequence number `seq`, if still kept and read
    /// consistently.
    pub(crate) fn closing(&self, seq: u64) -> Option<ClosingRecord> {
        std::iter::once(&self.watched_closing)
            .chain(&self.closings)
            .filter_map(Self::read_closing)
            .find(|r| r.seq == seq && seq != 0)
    }

    /// The newest of the thread's own readings taken at or before `raw` (the start of a later poll), if any.
    /// Includes the opening readings (whose `raw` is their poll's start).
    pub(crate) fn closing_before(&self, raw: u64) -> Option<ClosingRecord> {
        std::iter::once(&self.watched_closing)
            .chain(&self.closings)
            .chain(&self.openings)
            .filter_map(Self::read_closing)
            .filter(|r| r.raw <= raw)
            .max_by_key(|r| r.raw)
    }

    /// The worker unparked (stable mode): it is busy from `start` until [`park`](Self::park). Owner thread only;
    /// tokio's unpark hook.
    pub(crate) fn unpark(&self, start: u64) {
        let mut seq = self.busy_seq.load(Relaxed);
        if seq & 1 == 1 {
            // Two unparks without a park between them (the agent installed mid-span cannot happen, but a
            // missed hook must not leave the span's start stale): close the old span first.
            seq = seq.wrapping_add(1);
            self.busy_seq.store(seq, Relaxed);
        }
        // Seqlock writer, as in `begin`: the even sequence before the new start.
        fence(Release);
        self.busy_start.store(start, Relaxed);
        self.busy_seq.store(seq.wrapping_add(1), Release);
    }

    /// The worker is about to park (stable mode): its busy span ends. Owner thread only; tokio's park hook.
    pub(crate) fn park(&self) {
        let seq = self.busy_seq.load(Relaxed);
        if seq & 1 == 1 {
            self.busy_seq.store(seq.wrapping_add(1), Release);
        }
    }

    /// A consistent read of the busy span in flight (stable mode), as [`in_flight`](Self::in_flight) reads the
    /// poll: its sequence number tagged with [`BUSY_SEQ`] (so it is never mistaken for a poll's) and its start.
    pub(crate) fn busy(&self) -> Option<(u64, u64)> {
        let seq = self.busy_seq.load(Acquire);
        if seq & 1 == 0 {
            return None;
        }
        let start = self.busy_start.load(Relaxed);
        fence(Acquire);
        (self.busy_seq.load(Relaxed) == seq).then_some((seq | BUSY_SEQ, start))
    }

    /// Whether the poll or busy span with sequence number `seq` (a poll's, or a busy span's tagged with
    /// [`BUSY_SEQ`]) is still the one in flight: a look at the thread must describe it. A busy span counts as
    /// in flight only while no timed poll interrupts it.
    pub(crate) fn still_in(&self, seq: u64) -> bool {
        if seq & BUSY_SEQ == 0 {
            return self.seq.load(Acquire) == seq;
        }
        self.busy_seq.load(Acquire) | BUSY_SEQ == seq && self.seq.load(Acquire) & 1 == 0
    }

    /// Whether this thread is inside a poll of `task_id` right now. Owner thread only.
    #[inline]
    pub(crate) fn is_polling(&self, task_id: u64) -> bool {
        self.seq.load(Relaxed) & 1 == 1 && self.task_id.load(Relaxed) == task_id
    }

    /// A consistent read of the poll in flight, for the watchdog (seqlock read side). `None` when idle or
    /// when the owner changed it during the read (the next tick will see it).
    pub(crate) fn in_flight(&self) -> Option<InFlight> {
        let seq = self.seq.load(Acquire);
        if seq & 1 == 0 {
            return None;
        }
        let start = self.poll_start.load(Relaxed);
        let task_id = self.task_id.load(Relaxed);
        let location_addr = self.task_location.load(Relaxed);
        fence(Acquire);
        if self.seq.load(Relaxed) != seq {
            return None;
        }
        Some(InFlight { seq, start, task_id, location_addr })
    }

    /// The final duration of the long poll that had sequence number `seq`, if remembered.
    pub(crate) fn long_poll_ns(&self, seq: u64) -> Option<u64> {
        self.long_polls.iter().find_map(|lp| {
            let generation = lp.generation.load(Acquire);
            if generation == 0 {
                return None;
            }
            let (s, ns) = (lp.seq.load(Relaxed), lp.ns.load(Relaxed));
            fence(Acquire);
            (s == seq && lp.generation.load(Relaxed) == generation).then_some(ns)
        })
    }

    /// The `n`th long poll this thread completed (counting from 0; the caller saw `long_count > n`), if it is
    /// still in the ring and was read consistently.
    pub(crate) fn long_poll(&self, n: u64) -> Option<LongPollRecord> {
        let lp = self.long_polls.get((n % LONG_POLLS as u64) as usize)?;
        let generation = n.wrapping_add(1);
        // Anything else: overwritten by a later lap (the thread completed LONG_POLLS more long polls), or
        // being overwritten right now. Either way the caller reports it as missed.
        if lp.generation.load(Acquire) != generation {
            return None;
        }
        let r = LongPollRecord {
            seq: lp.seq.load(Relaxed),
            ns: lp.ns.load(Relaxed),
            task_id: lp.task_id.load(Relaxed),
            entry: lp.entry.load(Relaxed),
            location: lp.location.load(Relaxed),
        };
        fence(Acquire);
        (lp.generation.load(Relaxed) == generation).then_some(r)
    }

    /// Records an untracked task's poll. Owner thread only; rare (task table full).
    pub(crate) fn record_untracked(&self, ns: u64) {
        if let Some(b) = self.untracked_hist.get(LogHistogram::bucket_index(ns, TASK_BUCKETS)) {
            bump(b);
        }
    }

    pub(crate) fn untracked_histogram(&self) -> LogHistogram {
        LogHistogram { counts: self.untracked_hist.iter().map(|a| a.load(Relaxed)).collect() }
    }
}

/// Tags a busy span's sequence number (stable mode) so that it never equals a poll's: polls would need 2^63 of
/// them to reach it.
pub(crate) const BUSY_SEQ: u64 = 1 << 63;

/// A poll's first scheduler reading is taken when it passes this fraction of the threshold:
/// early enough that the unmeasured start of a stall is small, late enough that short polls cost nothing. A
/// poll that ends past it gets the thread's own closing reading ([`Closing`]).
pub(crate) const FIRST_READING_DIVISOR: u64 = 4;
// (Here rather than in `watch/accounting.rs`, which uses it too: the shared state sizes the hooks' closing
// threshold from it, and the shared state imports no stage.)

/// Model checks of the two seqlocks under every interleaving and every visibility the C++/Rust memory model
/// allows (which is more than x86 ever shows). Each fails if either `fence(Release)` above is removed. They
/// need `--cfg loopscope_loom` (see `sync.rs` for why exactly this command):
///
/// ```text
/// RUSTFLAGS="--cfg loopscope_loom --cfg tokio_unstable" CARGO_TARGET_DIR=target/loom \
///     cargo test --release -p loopscope --lib shared::slots::loom
/// ```

#[cfg(all(test, loopscope_loom))]
mod loom;

#[cfg(all(test, not(loopscope_loom)))]
mod tests;
