//! Tasks that finished: the queue of entries the agent thread must still reclaim, the ring of the latest
//! finished tasks' figures (for display), and each location's totals of its finished tasks.

use super::*;

/// Indexes of `SEEN` task entries the terminate hook finished, for the agent thread to reclaim (every 100 ms;
/// the hooks retire every other entry themselves).
///
/// Memory follows the backlog, not the table: the queue grows in blocks of 31 indexes while terminations
/// outpace the agent thread and hands each block back once drained, so an idle runtime holds nothing. (It was
/// an `ArrayQueue` sized to the table, 16 bytes per entry written up front: 1 MiB per runtime at defaults.)
/// The price is one small allocation per 31 terminations, in the terminate hook, never in the poll hooks.
/// Bounded by the table's capacity, more than there can be finished entries at once, so it never grows
/// without bound even if the agent thread is gone; past that a push fails and the agent thread's periodic
/// sweep of the table finds the entry instead.
#[derive(Debug)]
pub(crate) struct FinishedQueue {
    queue: SegQueue<u32>,
    capacity: usize,
}

impl FinishedQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        FinishedQueue { queue: SegQueue::new(), capacity }
    }

    /// Queues an entry index; gives it back when the queue is full.
    pub(crate) fn push(&self, idx: u32) -> Result<(), u32> {
        // Several threads may pass this check at once, so the bound can be exceeded by at most one index per
        // terminating thread: still bounded.
        if self.queue.len() >= self.capacity {
            return Err(idx);
        }
        self.queue.push(idx);
        Ok(())
    }

    /// The next queued index, oldest first.
    pub(crate) fn pop(&self) -> Option<u32> {
        self.queue.pop()
    }
}

/// One slot of the [`FinishedRing`]: a finished task's final figures behind a seqlock.
#[repr(C, align(64))]
#[derive(Debug, bytemuck::Zeroable)]
struct FinishedRecord {
    /// `2 * ticket + 1` while the ticket's writer writes, `2 * ticket + 2` once it is done; 0 never written.
    seq: AtomicU64,
    id: AtomicU64,
    location: AtomicU32,
    slow_polls: AtomicU32,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    max_poll_ns: AtomicU64,
    stalls: AtomicU64,
    sched_total_ns: AtomicU64,
    sched_max_ns: AtomicU64,
    poll_hist: [AtomicU32; TASK_BUCKETS],
    sched_hist: [AtomicU32; TASK_BUCKETS],
}

/// The final figures of the most recently finished tasks that the hooks retired, for the agent thread's list
/// of finished tasks (`LOOPSCOPE_RETAIN_FINISHED`): a ring that overwrites its oldest records, since only the
/// newest ones can end up in that list anyway.
///
/// Lock-free for any number of writers: a writer takes a ticket (one `fetch_add`), claims the ticket's slot by
/// CAS on its sequence number, and publishes the record seqlock-style. If the slot is still being written by a
/// writer a whole lap behind (preempted mid-write), the newer record is skipped and counted in `skipped`
/// rather than mixed into that one; the agent thread skips tickets whose record never appeared. Mapped zeroed,
/// so an unused ring costs no memory.
#[derive(Debug)]
pub(crate) struct FinishedRing {
    records: ZeroedSlice<FinishedRecord>,
    /// The next ticket.
    head: AtomicU64,
    /// Records given up because their slot was busy.
    pub(crate) skipped: AtomicU64,
    sched: bool,
}

impl FinishedRing {
    /// A ring for the newest `retain` finished tasks (none when 0).
    pub(crate) fn new(retain: usize, schedule_latency: bool) -> Self {
        let len = if retain == 0 { 0 } else { retain.next_power_of_two() };
        FinishedRing {
            records: ZeroedSlice::new(len),
            head: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            sched: schedule_latency,
        }
    }

    /// Copies a finished task's figures into the ring. From the hook that retires the task's entry.
    pub(super) fn push(&self, c: &TaskCounts) {
        let len = self.records.len() as u64;
        if len == 0 {
            return;
        }
        let ticket = self.head.fetch_add(1, Relaxed);
        let Some(r) = self.records.get((ticket & (len - 1)) as usize) else { return };
        let seq = r.seq.load(Relaxed);
        if seq & 1 == 1 || seq > 2 * ticket || r.seq.compare_exchange(seq, 2 * ticket + 1, Acquire, Relaxed).is_err() {
            self.skipped.fetch_add(1, Relaxed);
            return;
        }
        fence(Release);
        r.id.store(c.id, Relaxed);
        r.location.store(c.location, Relaxed);
        r.slow_polls.store(u32::try_from(c.slow_polls).unwrap_or(u32::MAX), Relaxed);
        r.polls.store(c.polls, Relaxed);
        r.busy_ns.store(c.busy_ns, Relaxed);
        r.max_poll_ns.store(c.max_poll_ns, Relaxed);
        r.stalls.store(c.stalls, Relaxed);
        for (a, &n) in r.poll_hist.iter().zip(&c.poll_hist) {
            a.store(n, Relaxed);
        }
        if self.sched {
            r.sched_total_ns.store(c.sched_total_ns, Relaxed);
            r.sched_max_ns.store(c.sched_max_ns, Relaxed);
            for (a, &n) in r.sched_hist.iter().zip(&c.sched_hist) {
                a.store(n, Relaxed);
            }
        }
        r.seq.store(2 * ticket + 2, Release);
    }

    /// The records written since `cursor` (oldest first, at most the ring's length: older ones were
    /// overwritten), advancing it. A ticket whose writer has not finished is waited for once (one call), then
    /// skipped. Agent thread only.
    pub(crate) fn drain(&self, cursor: &mut RingCursor) -> Vec<TaskCounts> {
        let len = self.records.len() as u64;
        let head = self.head.load(Acquire);
        let mut out = Vec::new();
        let mut t = cursor.next.max(head.saturating_sub(len));
        while t < head {
            let Some(r) = self.records.get((t & (len - 1)) as usize) else { break };
            let seq = r.seq.load(Acquire);
            if seq < 2 * t + 2 {
                // Not written yet (or given up): wait for it once.
                if cursor.waited != Some(t) {
                    cursor.waited = Some(t);
                    break;
                }
            } else if seq == 2 * t + 2
                && let Some(c) = self.read(r, seq)
            {
                out.push(c);
            }
            t += 1;
        }
        cursor.next = t;
        out
    }

    fn read(&self, r: &FinishedRecord, seq: u64) -> Option<TaskCounts> {
        let sched_hist: [u32; TASK_BUCKETS] = std::array::from_fn(|i| r.sched_hist[i].load(Relaxed));
        let c = TaskCounts {
            id: r.id.load(Relaxed),
            location: r.location.load(Relaxed),
            state: FINISHED,
            seen: false,
            polls: r.polls.load(Relaxed),
            busy_ns: r.busy_ns.load(Relaxed),
            max_poll_ns: r.max_poll_ns.load(Relaxed),
            slow_polls: u64::from(r.slow_polls.load(Relaxed)),
            stalls: r.stalls.load(Relaxed),
            sched_count: sched_hist.iter().map(|&n| u64::from(n)).sum(),
            sched_total_ns: r.sched_total_ns.load(Relaxed),
            sched_max_ns: r.sched_max_ns.load(Relaxed),
            poll_hist: std::array::from_fn(|i| r.poll_hist[i].load(Relaxed)),
            sched_hist,
        };
        fence(Acquire);
        (r.seq.load(Relaxed) == seq).then_some(c)
    }
}

/// Where the agent thread is in the [`FinishedRing`].
#[derive(Debug, Default)]
pub(crate) struct RingCursor {
    next: u64,
    /// A ticket found unwritten once already.
    waited: Option<u64>,
}

/// What the tasks of one spawn location that have finished add up to: the hooks (and the agent thread, for
/// `SEEN` tasks) fold each task's final figures in when its entry is freed. Atomic read-modify-writes, but only
/// once per task and only for the buckets it used; the location's live tasks are read from the task table.
#[repr(C, align(64))]
#[derive(Debug, bytemuck::Zeroable)]
pub(crate) struct LocationTotals {
    finished: AtomicU64,
    polls: AtomicU64,
    busy_ns: AtomicU64,
    max_poll_ns: AtomicU64,
    slow_polls: AtomicU64,
    stalls: AtomicU64,
    poll_hist: [AtomicU64; TASK_BUCKETS],
    sched_total_ns: AtomicU64,
    sched_max_ns: AtomicU64,
    sched_hist: [AtomicU64; TASK_BUCKETS],
}

/// A plain copy of a location's [`LocationTotals`].
#[derive(Debug, Clone)]
pub(crate) struct FinishedTotals {
    pub(crate) finished: u64,
    pub(crate) polls: u64,
    pub(crate) busy_ns: u64,
    pub(crate) max_poll_ns: u64,
    pub(crate) slow_polls: u64,
    pub(crate) stalls: u64,
    pub(crate) poll_hist: [u64; TASK_BUCKETS],
    pub(crate) sched_count: u64,
    pub(crate) sched_total_ns: u64,
    pub(crate) sched_max_ns: u64,
    pub(crate) sched_hist: [u64; TASK_BUCKETS],
}

fn add_if(a: &AtomicU64, n: u64) {
    if n > 0 {
        a.fetch_add(n, Relaxed);
    }
}

fn max_if(a: &AtomicU64, n: u64) {
    if n > a.load(Relaxed) {
        a.fetch_max(n, Relaxed);
    }
}

impl LocationTotals {
    pub(super) fn fold(&self, c: &TaskCounts) {
        self.finished.fetch_add(1, Relaxed);
        add_if(&self.polls, c.polls);
        add_if(&self.busy_ns, c.busy_ns);
        max_if(&self.max_poll_ns, c.max_poll_ns);
        add_if(&self.slow_polls, c.slow_polls);
        add_if(&self.stalls, c.stalls);
        for (a, &n) in self.poll_hist.iter().zip(&c.poll_hist) {
            add_if(a, u64::from(n));
        }
        if c.sched_count > 0 {
            add_if(&self.sched_total_ns, c.sched_total_ns);
            max_if(&self.sched_max_ns, c.sched_max_ns);
            for (a, &n) in self.sched_hist.iter().zip(&c.sched_hist) {
                add_if(a, u64::from(n));
            }
        }
    }

    /// Every load acquires: a scan that sees a retiring hook's contribution here then sees that entry's key
    /// changed (see `TaskTable::retire`), so it never counts the task twice.
    pub(super) fn read(&self) -> Option<FinishedTotals> {
        let finished = self.finished.load(Acquire);
        if finished == 0 {
            return None;
        }
        let sched_hist: [u64; TASK_BUCKETS] = std::array::from_fn(|i| self.sched_hist[i].load(Acquire));
        Some(FinishedTotals {
            finished,
            polls: self.polls.load(Acquire),
            busy_ns: self.busy_ns.load(Acquire),
            max_poll_ns: self.max_poll_ns.load(Acquire),
            slow_polls: self.slow_polls.load(Acquire),
            stalls: self.stalls.load(Acquire),
            poll_hist: std::array::from_fn(|i| self.poll_hist[i].load(Acquire)),
            sched_count: sched_hist.iter().sum(),
            sched_total_ns: self.sched_total_ns.load(Acquire),
            sched_max_ns: self.sched_max_ns.load(Acquire),
            sched_hist,
        })
    }
}
