//! What the watchdog sends: flagged stalls and their looks, to the prober and on to the agent thread.

use super::*;

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
    /// What the thread was doing when the stall was flagged (none for stalls found after they ended, or when
    /// the poll ended while the look was being taken).
    pub(crate) look: Option<Look>,
    /// Where the poll's wall time went so far (final for a stall found after it ended).
    pub(crate) time: Option<StallTime>,
    /// The name of loopscope's own task, when the stalled task is one.
    pub(crate) agent_task: Option<&'static str>,
    /// Stable mode: a worker busy past the threshold, not yet a stall. The agent thread decides from the looks
    /// (`probing::confirm_busy`) and tells the watchdog here; until then nothing counts it.
    pub(crate) confirm: Option<Arc<Verdict>>,
    /// Stable mode: the looks the prober took after the first, a couple of milliseconds apart, to confirm.
    pub(crate) more_looks: Vec<Look>,
    /// Stable mode: the busy span ended (the worker parked) before those looks were all taken.
    pub(crate) span_ended: bool,
    /// Stable mode: how many of the runtime's workers reached a scheduling point (a park, or tokio's maintenance
    /// every 61 ticks) while the prober took `more_looks` (`prober::confirm_looks`).
    pub(crate) motion: Option<crate::watch::probing::WorkerMotion>,
    /// Stable mode: the busy span's (tagged) sequence number; 0 for a poll.
    pub(crate) span_seq: u64,
}

/// The agent thread's verdict on a candidate stall (stable mode), read by the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Verdict(AtomicU8);

impl Verdict {
    /// Not decided yet.
    pub(crate) const PENDING: u8 = 0;
    /// One poll holds the worker: a stall, reported and followed like a timed poll's.
    pub(crate) const CONFIRMED: u8 = 1;
    /// Not one poll (many short ones, or the scheduler's own work): try again later in the span.
    pub(crate) const REJECTED: u8 = 2;
    /// The thread runs no worker (a `spawn_blocking` thread, or one back in the blocking pool after
    /// `block_in_place`; no park hook ends their spans): stop looking until its span changes.
    pub(crate) const NOT_WORKER: u8 = 3;
    /// A confirmed stall whose poll a later look found over, though the worker has not parked: the agent thread
    /// reported its end; look at the rest of the span afresh.
    pub(crate) const ENDED: u8 = 4;

    pub(crate) fn set(&self, v: u8) {
        self.0.store(v, Release);
    }

    pub(crate) fn get(&self) -> u8 {
        self.0.load(Acquire)
    }
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
        /// None when the poll ended while the look was taken (the look would describe other code).
        look: Option<Look>,
        time: Option<StallTime>,
    },
    /// Another look at a stalled thread, for the on-CPU share; produces no event by itself. The prober fills
    /// in the look, and drops the message if the poll ended first.
    Sampled {
        stall_id: u64,
        look: Option<Look>,
        time: Option<StallTime>,
    },
    /// `elapsed_ns` is exact when the thread's long-poll ring still had the poll, else the last value seen.
    Ended {
        stall_id: u64,
        elapsed_ns: u64,
        at_unix_nanos: u64,
        time: Option<StallTime>,
    },
}

/// A look the watchdog wants taken at thread `tid`, which runs poll `seq` of `slot`.
#[derive(Debug)]
pub(crate) struct LookRequest {
    pub(crate) slot: Arc<WorkerSlot>,
    pub(crate) seq: u64,
    pub(crate) tid: i32,
    /// How far into the poll the watchdog asked.
    pub(crate) at_elapsed: Duration,
    pub(crate) with_stack: bool,
    /// Stacks captured so far for this stall, counted here and read by the watchdog (which stops asking
    /// for stacks after a few).
    pub(crate) captured: Arc<AtomicUsize>,
    /// Stable mode: a candidate stall, to be confirmed from several looks a little apart.
    pub(crate) confirm: bool,
}

/// A message for the agent thread, with the look to take first, if any.
#[derive(Debug)]
pub(crate) struct ProbeJob {
    pub(crate) msg: WatchMsg,
    pub(crate) look: Option<LookRequest>,
}
