//! Fixed-capacity, lock-free tables of per-task and per-location state, written by the task hooks.
//!
//! Why hand-written: the hooks run on every poll and may take no lock and make no allocation, and tokio hands
//! them only a task id and a spawn location. Off-the-shelf concurrent maps either lock, allocate on insert, or
//! use epoch reclamation that costs more than our whole per-poll budget. What makes a simple design work:
//!
//! * tokio task ids come from one process-wide counter, so a spawn storm inserts consecutive ids. The table is
//!   two halves. In the first, a task's slot is fixed by its id: blocks of 64 consecutive ids take 64
//!   consecutive entries (two pages), at a place picked by a multiplicative (Fibonacci) hash of the block
//!   number. A storm then streams through memory: its spawns, first polls and ends touch neighbouring entries
//!   on pages already in the TLB, instead of a random cold line of the whole table per task (issue 16: that
//!   was most of the spawn path's cost). One slot, one probe: a lookup reads one entry;
//! * a task whose slot is taken (by a task from an earlier block still alive there) goes to the second half,
//!   placed as the whole table used to be: the Fibonacci hash of the id, then a bounded window of 8 slots.
//!   That hash spreads any run of consecutive ids evenly, so the window nearly always has room. The halves
//!   are apart so that a block of long-lived tasks (connections accepted at startup), which fills whole runs of
//!   the first half, never lands in the second half's windows: with `id & mask` homes in one table, and with
//!   blocks in one table, later ids whose window fell in such a run found it full for as long as those tasks
//!   lived (issue 11). A lookup for a task in the second half reads its first-half slot, then its window;
//! * tokio never polls one task on two threads at once, and its task-state transitions order one poll before
//!   the next. Each task's entry therefore has exactly one writer at a time, so its counters are updated with
//!   plain `Relaxed` load + store, never with contended read-modify-write instructions.
//!
//! Reclamation (issue 16 item 1): an entry goes back to the table the moment its task ends, so a spawn storm
//! never waits for the agent thread's 100 ms tick to find room. The terminate hook (or, when it fires inside the
//! task's last poll, that poll's after-hook, because tokio runs the terminate hook before the final after-poll
//! hook) *retires* the entry: it folds the final figures into the location's totals ([`LocationTotals`],
//! lock-free atomics), copies them into the ring of recently finished tasks ([`FinishedRing`], for display),
//! clears the entry and frees the key. The table is its own free list: a free entry is one whose key is 0, and
//! claiming one is a CAS from 0 to the task id. Task ids are never reused, so that CAS has no ABA problem, and
//! the key doubles as the entry's generation: a reader checks it again after reading (a seqlock whose sequence
//! is the key; see [`TaskTable::read`]) and drops what it read if the entry changed hands meanwhile.
//!
//! One exception keeps clients right: a task that went out individually in a stream message or a full state
//! (it is `SEEN`, set with a CAS that races the hook's own CAS from `LIVE`) must be reported finished to those
//! clients, or they would show it alive forever (console#238). The hooks only mark such an entry finished and
//! queue it; the agent thread folds it, lists it in the next tick's `finished` and frees it, as before. Those
//! are the tasks alive at a tick, a small share of a storm.
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use loopscope_probes::mem::ZeroedSlice;
use loopscope_wire::LogHistogram;
use std::panic::Location;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::*, fence};

/// Buckets in per-task histograms (see [`LogHistogram`] for the layout): the last starts at ~1.07 s, so stalls
/// of 20 ms, 50 ms, 300 ms and a second land in buckets of their own (issue 14 item 5; it was 16, ending at
/// 16.8 ms, where every stall fell into one bucket).
pub(crate) const TASK_BUCKETS: usize = loopscope_wire::TASK_HISTOGRAM_BUCKETS;
const _: () = assert!(TASK_BUCKETS == 22, "the entry layout below counts on 16 wide and 6 narrow buckets");
/// The buckets a task entry counts in `u32`s: every poll under ~33.5 ms. The slower ones, which are stalls at
/// any sensible threshold, are counted in `u16`s (`TaskEntry::long_poll_hist`), which is what keeps the entry
/// at two cache lines.
const WIDE_BUCKETS: usize = 16;
/// How many slots of the second half (the overflow), from a task's home slot there on, an insert or lookup tries.
const PROBE: u64 = 8;
/// log2 of the ids in a block that take consecutive slots of the first half: 64 entries are two pages.
const BLOCK_BITS: u32 = 6;
/// 2^64 / φ, odd: multiplying by it sends consecutive ids to points spaced as evenly as any spacing can be
/// (the three-distance theorem), and the top bits of the product are the best mixed.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;
/// Task entries per 4 KiB page (of `sched` entries too: both are 128 bytes).
const ENTRIES_PER_PAGE: usize = 4096 / std::mem::size_of::<TaskEntry>();
const _: () = assert!(std::mem::size_of::<SchedEntry>() == std::mem::size_of::<TaskEntry>());
/// Shards of the termination count (a power of two).
pub(crate) const TERMINATION_SHARDS: usize = 4;
/// Marks "no entry" in `u32` indexes.
pub(crate) const NONE: u32 = u32::MAX;
/// The location index used when the location table is full.
pub(crate) const OTHER_LOCATION: u32 = u32::MAX - 1;

/// `TaskEntry::state`: the low two bits are the task's lifecycle (`state & LIFECYCLE`).
pub(crate) const FREE: u32 = 0;
pub(crate) const LIVE: u32 = 1;
/// The terminate hook fired inside the task's final poll; the after-poll hook will finish it.
pub(crate) const TERMINATING: u32 = 2;
pub(crate) const FINISHED: u32 = 3;
/// The lifecycle bits of `TaskEntry::state`.
pub(crate) const LIFECYCLE: u32 = 3;
/// Set in `TaskEntry::state` once the task went out individually to a client (see the module docs): from then
/// on only the agent thread frees the entry, after telling the clients. Set only on a `LIVE` entry, by CAS.
pub(crate) const SEEN: u32 = 4;
/// The key of an entry a hook is retiring: no task's, and not free yet (see [`TaskTable::retire`]).
const RETIRING: u64 = u64::MAX;

/// One task's counters: exactly two cache lines (the agent's memory per live task is dominated by this).
#[repr(C, align(64))]
#[derive(Debug, bytemuck::Zeroable)]
pub(crate) struct TaskEntry {
    /// tokio task id; 0 when free.
    pub(crate) key: AtomicU64,
    pub(crate) location: AtomicU32,
    pub(crate) state: AtomicU32,
    pub(crate) polls: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) max_poll_ns: AtomicU64,
    pub(crate) slow_polls: AtomicU32,
    /// Written by the watchdog (rarely), never by the hooks.
    pub(crate) stalls: AtomicU32,
    /// Buckets `0..WIDE_BUCKETS` of the poll histogram (polls under ~33.5 ms).
    pub(crate) poll_hist: [AtomicU32; WIDE_BUCKETS],
    /// The other buckets (~33.5 ms to ≥ 1.07 s), saturating at `u16::MAX`: 65,535 polls of a third of a
    /// second or more is 6 hours of stalls for one task, and a saturated bucket still reads as "that many or
    /// more" (the task's `max_poll_ns`, busy time and stall count stay exact).
    pub(crate) long_poll_hist: [AtomicU16; TASK_BUCKETS - WIDE_BUCKETS],
    /// What the stream feed last sent of this task (`feed::mark`; 0: nothing). Read and written only by the
    /// agent thread, which is also the only one to clear the entry: it lives in the entry's padding, so the
    /// feed's memory follows the entries in use at no cost.
    pub(crate) feed_mark: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<TaskEntry>() == 128);

/// One task's wake→poll latency, in a table parallel to the task table that exists only when schedule
/// latency is tracked (it is off by default, and would otherwise cost every task another cache line).
#[repr(C, align(64))]
#[derive(Debug, bytemuck::Zeroable)]
pub(crate) struct SchedEntry {
    pub(crate) total_ns: AtomicU64,
    pub(crate) max_ns: AtomicU64,
    // The number of samples is the sum of `hist`: not stored.
    pub(crate) hist: [AtomicU32; TASK_BUCKETS],
}

impl SchedEntry {
    /// Records the wake→poll latency tokio measured for the poll that is starting. Polling thread only.
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        self.total_ns.store(self.total_ns.load(Relaxed).wrapping_add(ns), Relaxed);
        if ns > self.max_ns.load(Relaxed) {
            self.max_ns.store(ns, Relaxed);
        }
        if let Some(b) = self.hist.get(LogHistogram::bucket_index(ns, TASK_BUCKETS)) {
            bump32(b);
        }
    }

    fn clear(&self) {
        self.total_ns.store(0, Relaxed);
        self.max_ns.store(0, Relaxed);
        for a in &self.hist {
            a.store(0, Relaxed);
        }
    }
}

impl TaskEntry {
    /// Records one completed poll. Called only by the thread that is polling the task.
    #[inline]
    pub(crate) fn record_poll(&self, ns: u64, slow: bool) {
        bump(&self.polls);
        self.busy_ns.store(self.busy_ns.load(Relaxed).wrapping_add(ns), Relaxed);
        if ns > self.max_poll_ns.load(Relaxed) {
            self.max_poll_ns.store(ns, Relaxed);
        }
        if slow {
            bump32(&self.slow_polls);
        }
        let i = LogHistogram::bucket_index(ns, TASK_BUCKETS);
        if let Some(b) = self.poll_hist.get(i) {
            bump32(b);
        } else if let Some(b) = self.long_poll_hist.get(i - WIDE_BUCKETS) {
            // Rare: a poll of 33.5 ms or more.
            let n = b.load(Relaxed);
            b.store(n.saturating_add(1), Relaxed);
        }
    }

    /// The poll histogram's count in bucket `i`.
    fn poll_bucket(&self, i: usize) -> u32 {
        match self.poll_hist.get(i) {
            Some(b) => b.load(Relaxed),
            None => self.long_poll_hist.get(i - WIDE_BUCKETS).map_or(0, |b| u32::from(b.load(Relaxed))),
        }
    }

    /// Resets every counter, before the key is freed: by the agent thread on a `SEEN` entry it finished, or by
    /// the hook that retires the entry. The `Release` store of the key publishes the zeroes to the next inserter.
    fn clear(&self) {
        for a in [&self.polls, &self.busy_ns, &self.max_poll_ns] {
            a.store(0, Relaxed);
        }
        for a in [&self.slow_polls, &self.stalls] {
            a.store(0, Relaxed);
        }
        for a in &self.poll_hist {
            a.store(0, Relaxed);
        }
        for a in &self.long_poll_hist {
            a.store(0, Relaxed);
        }
        self.location.store(0, Relaxed);
        self.feed_mark.store(0, Relaxed);
        self.state.store(FREE, Relaxed);
    }
}

/// Single-writer increment: a load and a store, not a locked RMW (see the module docs for why it is safe).
#[inline(always)]
pub(crate) fn bump(a: &AtomicU64) {
    a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
}

#[inline(always)]
pub(crate) fn bump32(a: &AtomicU32) {
    a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
}

/// A plain copy of a task entry's counters, read by the aggregator.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskCounts {
    pub(crate) id: u64,
    pub(crate) location: u32,
    /// The lifecycle (`FREE` .. `FINISHED`), without the `SEEN` bit.
    pub(crate) state: u32,
    /// Whether the task went out individually to a client (`SEEN`).
    pub(crate) seen: bool,
    pub(crate) polls: u64,
    pub(crate) busy_ns: u64,
    pub(crate) max_poll_ns: u64,
    pub(crate) slow_polls: u64,
    pub(crate) stalls: u64,
    pub(crate) sched_count: u64,
    pub(crate) sched_total_ns: u64,
    pub(crate) sched_max_ns: u64,
    pub(crate) poll_hist: [u32; TASK_BUCKETS],
    pub(crate) sched_hist: [u32; TASK_BUCKETS],
}

/// What the terminate hook does next with a task's entry ([`TaskTable::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Retire it now ([`TaskTable::retire`]).
    Retire,
    /// The task is inside its last poll: the after-poll hook retires or finishes it.
    AfterPoll,
    /// It was `SEEN`: queue it for the agent thread, which tells the clients and frees it.
    Queue,
    /// It was not live (already finished).
    Nothing,
}

/// The table of tracked tasks.
#[derive(Debug)]
pub(crate) struct TaskTable {
    entries: ZeroedSlice<TaskEntry>,
    /// Parallel to `entries` when schedule latency is tracked; empty otherwise.
    sched: ZeroedSlice<SchedEntry>,
    /// Entries in each half: `capacity / 2`.
    half: u64,
    /// log2 of the ids per block in the first half: [`BLOCK_BITS`], less in a table too small for two blocks.
    block_bits: u32,
    /// `64 - log2(half / block)`: a block's place is the top bits of the Fibonacci hash of its number.
    block_shift: u32,
    /// `64 - log2(half)`: a task's home in the second half is the top bits of its id's Fibonacci hash.
    shift: u32,
    /// One bit per page of `entries` (and of `sched`, which has the same number of entries per page): set once
    /// a spawn has written to that page. Full scans read only these pages (see [`TaskTable::indexes`]).
    touched: Box<[AtomicU64]>,
    /// Tasks that could not be inserted (their first-half slot and their whole overflow window taken).
    pub(crate) untracked: AtomicU64,
    /// All spawns seen by the hook, tracked or not. On a cache line of its own, and the terminations on lines
    /// of their own: in a spawn storm the spawning thread counts here while the workers count terminations,
    /// and with both counters on one line half of the spawn hook's time was that line moving between CPUs.
    pub(crate) spawned: CachePadded<AtomicU64>,
    /// Terminations of the tasks counted in `spawned` (see [`TaskTable::count_termination`]), sharded by
    /// thread so that two workers ending tasks don't contend for one line; read through
    /// [`TaskTable::spawn_counts`].
    terminated: [CachePadded<AtomicU64>; TERMINATION_SHARDS],
    /// Untracked tasks whose termination was not counted yet: how many terminations without an entry may
    /// still be counted.
    untracked_unfinished: AtomicU64,
}

impl TaskTable {
    pub(crate) fn new(max_tasks: usize, schedule_latency: bool) -> Self {
        // Each half holds at least one overflow window, and the first at least two blocks.
        let cap = max_tasks.max(2 * PROBE as usize).next_power_of_two();
        let half_bits = cap.trailing_zeros() - 1;
        let block_bits = BLOCK_BITS.min(half_bits - 1);
        // Mapped zeroed (all-zero is a valid, free entry), so the OS backs a page only once a task uses it:
        // a large `max_tasks` costs address space, not resident memory, until that many tasks are alive.
        let entries = ZeroedSlice::<TaskEntry>::new(cap);
        let sched = ZeroedSlice::<SchedEntry>::new(if schedule_latency { cap } else { 0 });
        TaskTable {
            entries,
            sched,
            touched: (0..cap.div_ceil(ENTRIES_PER_PAGE).div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            half: cap as u64 / 2,
            block_bits,
            block_shift: 64 - (half_bits - block_bits),
            shift: 64 - half_bits,
            untracked: AtomicU64::new(0),
            spawned: CachePadded::new(AtomicU64::new(0)),
            terminated: Default::default(),
            untracked_unfinished: AtomicU64::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, idx: u32) -> Option<&TaskEntry> {
        self.entries.get(idx as usize)
    }

    /// The schedule-latency counters of an entry, when tracked.
    #[inline]
    pub(crate) fn sched(&self, idx: u32) -> Option<&SchedEntry> {
        self.sched.get(idx as usize)
    }

    /// The slot of `id` in the first half: the block's place, plus the id's offset in its block.
    #[inline(always)]
    fn home(&self, id: u64) -> u64 {
        // `block_shift` is at most 63 (the first half holds at least two blocks), so it never overflows.
        let block = (id >> self.block_bits).wrapping_mul(FIBONACCI) >> self.block_shift;
        (block << self.block_bits) | (id & ((1 << self.block_bits) - 1))
    }

    /// The `i`th slot of `id`'s window in the second half.
    #[inline(always)]
    fn overflow(&self, id: u64, i: u64) -> u64 {
        // `shift` is at most 61 (each half holds at least `PROBE` entries).
        let home = id.wrapping_mul(FIBONACCI) >> self.shift;
        self.half + (home.wrapping_add(i) & (self.half - 1))
    }

    /// The slots an insert or lookup of `id` tries, in order: its first-half slot, then its overflow window.
    #[inline(always)]
    fn slots(&self, id: u64) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.home(id)).chain((0..PROBE).map(move |i| self.overflow(id, i))).map(|i| i as usize)
    }

    /// The word and bit of `touched` for the page holding entry `idx`.
    #[inline(always)]
    fn page_bit(&self, idx: usize) -> Option<(&AtomicU64, u64)> {
        let page = idx / ENTRIES_PER_PAGE;
        Some((self.touched.get(page / 64)?, 1 << (page % 64)))
    }

    /// Claims an entry for a new task. Returns its index, or `None` when its slot and its overflow window are
    /// all taken.
    pub(crate) fn insert(&self, id: u64, location: u32) -> Option<u32> {
        self.spawned.fetch_add(1, Relaxed);
        for idx in self.slots(id) {
            let Some(e) = self.entries.get(idx) else { continue };
            // The first access to a page of the table must be a write. A read first maps the kernel's shared
            // zero page, and the write after it must then replace that mapping, which flushes the TLB of every
            // CPU running the process: an inter-processor interrupt per page, 15-30 µs on a virtual machine.
            // Measured: 1,000 spawns in one poll took 19-64 ms instead of 0.3 ms, nearly all of it in
            // `flush_tlb_mm_range` under this function (perf). So on a page no spawn has written yet, the CAS
            // goes first, and the page is marked only after it, so full scans never read it before.
            let page = self.page_bit(idx);
            let fresh = page.is_some_and(|(word, bit)| word.load(Acquire) & bit == 0);
            let claimed =
                (fresh || e.key.load(Relaxed) == 0) && e.key.compare_exchange(0, id, Acquire, Relaxed).is_ok();
            if fresh && let Some((word, bit)) = page {
                word.fetch_or(bit, Release);
            }
            if claimed {
                // Orders the new key before every write of the new task, so that a reader that sees one of
                // them sees the new key when it checks again (see `read`).
                fence(Release);
                e.location.store(location, Relaxed);
                if let Some(s) = self.sched.get(idx) {
                    // A write, for the same reason: this entry's page of `sched` is first read by a scan.
                    s.total_ns.fetch_add(0, Relaxed);
                }
                e.state.store(LIVE, Release);
                return Some(idx as u32);
            }
        }
        self.untracked.fetch_add(1, Relaxed);
        self.untracked_unfinished.fetch_add(1, Relaxed);
        None
    }

    /// Counts a task's termination, from the terminate hook; `tracked` when the task has an entry. `shard`
    /// picks the counter (any number: the hook passes its thread's id, so that workers count apart).
    ///
    /// Only tasks the spawn hook counted may count here, or finished could exceed spawned. tokio fires the
    /// terminate hook, but never the spawn hook, for `spawn_blocking` tasks, and the agent's own probe tasks
    /// are spawned from its thread, where the spawn hook ignores them. A task with an entry was counted at
    /// spawn. One without is either untracked (counted at spawn, but the table was full) or one of those: the
    /// hook can't tell which, so it counts it only while some untracked task's termination is outstanding.
    /// Exact while the table has room (no untracked tasks: nothing without an entry counts); when it was full,
    /// a blocking task may use up an untracked task's turn, and finished stays at most spawned either way.
    pub(crate) fn count_termination(&self, tracked: bool, shard: usize) {
        if tracked || self.untracked_unfinished.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
            // Release: a reader that sees this count also sees the spawn it pairs with (`spawn_counts`).
            self.terminated[shard % TERMINATION_SHARDS].fetch_add(1, Release);
        }
    }

    /// Tasks spawned and finished so far, read so that finished never exceeds spawned: the spawn of every
    /// counted termination happened before it (tokio runs a task only after its spawn hook), and reading the
    /// terminations first (`Acquire`) makes those spawns visible to the second read.
    pub(crate) fn spawn_counts(&self) -> (u64, u64) {
        let finished = self.terminated.iter().map(|t| t.load(Acquire)).sum();
        let spawned = self.spawned.load(Relaxed);
        (spawned, finished)
    }

    /// Finds a live task's entry. Usually the first probe hits: most tasks sit in their first-half slot.
    #[inline]
    pub(crate) fn find(&self, id: u64) -> u32 {
        for idx in self.slots(id) {
            if let Some(e) = self.entries.get(idx)
                && e.key.load(Relaxed) == id
            {
                return idx as u32;
            }
        }
        NONE
    }

    /// Reads an entry's counters if it holds a task in a state other than FREE: a consistent copy of one task's
    /// figures, never a mix of two tasks'.
    ///
    /// A seqlock whose sequence is the key: task ids are never reused, and whoever frees or claims an entry
    /// changes the key before touching the counters (`retire` marks it `RETIRING` and fences; `insert` fences
    /// after its CAS), so if any counter read here came from the next owner, the second read of the key says so.
    pub(crate) fn read(&self, idx: usize) -> Option<TaskCounts> {
        let e = self.entries.get(idx)?;
        let id = e.key.load(Acquire);
        if id == 0 || id == RETIRING {
            return None;
        }
        let c = self.copy(idx, e, id)?;
        fence(Acquire);
        (e.key.load(Relaxed) == id).then_some(c)
    }

    /// The counters of entry `idx` (holding task `id`) as they are now; `None` if it is not in use.
    fn copy(&self, idx: usize, e: &TaskEntry, id: u64) -> Option<TaskCounts> {
        let state = e.state.load(Acquire);
        if state & LIFECYCLE == FREE {
            return None;
        }
        let sched = self.sched.get(idx);
        let sched_hist: [u32; TASK_BUCKETS] = std::array::from_fn(|i| sched.map_or(0, |s| s.hist[i].load(Relaxed)));
        Some(TaskCounts {
            id,
            location: e.location.load(Relaxed),
            state: state & LIFECYCLE,
            seen: state & SEEN != 0,
            polls: e.polls.load(Relaxed),
            busy_ns: e.busy_ns.load(Relaxed),
            max_poll_ns: e.max_poll_ns.load(Relaxed),
            slow_polls: e.slow_polls.load(Relaxed) as u64,
            stalls: e.stalls.load(Relaxed) as u64,
            sched_count: sched_hist.iter().map(|&n| u64::from(n)).sum(),
            sched_total_ns: sched.map_or(0, |s| s.total_ns.load(Relaxed)),
            sched_max_ns: sched.map_or(0, |s| s.max_ns.load(Relaxed)),
            poll_hist: std::array::from_fn(|i| e.poll_bucket(i)),
            sched_hist,
        })
    }

    /// Marks the task in entry `idx` `SEEN` before it goes out individually to a client; whether it may
    /// (false: the task is ending and its hook retires the entry, or the entry no longer holds task `id`).
    /// Called by the agent thread and the server's threads, never by the hooks.
    pub(crate) fn publish(&self, idx: usize, id: u64) -> bool {
        let Some(e) = self.entries.get(idx) else { return false };
        let seen = match e.state.compare_exchange(LIVE, LIVE | SEEN, AcqRel, Acquire) {
            Ok(_) => true,
            // Already seen (by this or another client's thread), in whatever state: the agent thread frees it.
            Err(actual) => actual & SEEN != 0,
        };
        // The CAS may have hit a later task in the same entry (it only becomes SEEN, which is harmless); the
        // key says whose state it was.
        seen && e.key.load(Acquire) == id
    }

    /// The terminate hook's transition for a `LIVE` entry: `in_poll` when it fires inside the task's last poll.
    pub(crate) fn finish(&self, e: &TaskEntry, in_poll: bool) -> Finish {
        let next = if in_poll { TERMINATING } else { FINISHED };
        match e.state.compare_exchange(LIVE, next, AcqRel, Relaxed) {
            Ok(_) if in_poll => Finish::AfterPoll,
            Ok(_) => Finish::Retire,
            Err(s) if s == LIVE | SEEN => {
                // Nobody else writes a SEEN entry's state until the agent thread frees it.
                e.state.store(next | SEEN, Release);
                Finish::Queue
            }
            Err(_) => Finish::Nothing,
        }
    }

    /// The after-poll hook's check, on every poll of a tracked task: if the terminate hook fired inside this
    /// poll, finish the entry now. Nothing reads the entry after this: from then on it may be freed and reused.
    #[inline]
    pub(crate) fn end_of_poll(&self, idx: u32, e: &TaskEntry, locations: &LocationTable, ring: &FinishedRing) {
        let state = e.state.load(Relaxed);
        if state & LIFECYCLE == TERMINATING {
            if state & SEEN != 0 {
                // The terminate hook queued it; the agent thread frees it.
                e.state.store(FINISHED | SEEN, Release);
            } else {
                e.state.store(FINISHED, Relaxed);
                self.retire(idx, locations, ring);
            }
        }
    }

    /// Retires the entry of a task that just ended and was never `SEEN`: folds its final figures into its
    /// location's totals, copies them into the ring of recently finished tasks, and frees the entry for the next
    /// spawn. Called by the hook that ended the task (its only writer now), never on a `SEEN` entry.
    ///
    /// The key becomes `RETIRING` before the totals change, so a scan that reads the totals first and the table
    /// second never counts the task twice (see `scan::retired_locations`).
    pub(crate) fn retire(&self, idx: u32, locations: &LocationTable, ring: &FinishedRing) {
        let Some(e) = self.entries.get(idx as usize) else { return };
        let id = e.key.load(Relaxed);
        let Some(c) = self.copy(idx as usize, e, id) else { return };
        e.key.store(RETIRING, Relaxed);
        // Orders RETIRING before the totals, the ring and the clearing: a reader that sees any of them, and
        // then fences, sees the key changed.
        fence(Release);
        locations.fold(c.location, &c);
        ring.push(&c);
        e.clear();
        if let Some(s) = self.sched.get(idx as usize) {
            s.clear();
        }
        e.key.store(0, Release);
    }

    /// Frees a `SEEN`, FINISHED entry after the agent thread harvested its counters. Agent thread only.
    pub(crate) fn free(&self, idx: usize) {
        if let Some(e) = self.entries.get(idx)
            && e.state.load(Acquire) & LIFECYCLE == FINISHED
        {
            e.clear();
            if let Some(s) = self.sched.get(idx) {
                s.clear();
            }
            e.key.store(0, Release);
        }
    }

    /// The location index of task `id`, if it has an entry; checked against the key after the read, so that
    /// an entry reused meanwhile never lends its location to another task.
    pub(crate) fn location_of(&self, id: u64) -> Option<u32> {
        let e = self.get(self.find(id))?;
        let location = e.location.load(Relaxed);
        fence(Acquire);
        (e.key.load(Relaxed) == id).then_some(location)
    }

    /// Indexes of every entry that may be in use, for full scans: those on pages a spawn has written. The
    /// others are skipped, not read, so a scan never maps a page of the table before a spawn writes it (see
    /// `insert`); an app with few tasks also keeps the rest of the table out of memory.
    pub(crate) fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        let len = self.entries.len();
        (0..len.div_ceil(ENTRIES_PER_PAGE))
            .filter(move |&page| self.page_bit(page * ENTRIES_PER_PAGE).is_some_and(|(w, b)| w.load(Acquire) & b != 0))
            .flat_map(move |page| page * ENTRIES_PER_PAGE..((page + 1) * ENTRIES_PER_PAGE).min(len))
    }
}

mod finished;
mod locations;
#[cfg(test)]
mod tests;

pub(crate) use finished::*;
pub(crate) use locations::*;
