//! The latest runtime sample: tokio's per-worker and whole-runtime figures and the two lag probes. Written by
//! the sampler on the agent thread every sample interval, read by the stream feed and by new clients' full
//! states.

use loopscope_wire::LogHistogram;
use std::time::Duration;

/// Quantiles of the lag probes cover this much recent history.
pub(crate) const LAG_WINDOW: Duration = Duration::from_secs(10);

/// One worker's cumulative counters, straight from tokio.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerSample {
    pub(crate) index: usize,
    pub(crate) thread_id: Option<std::thread::ThreadId>,
    pub(crate) busy: Duration,
    pub(crate) polls: u64,
    pub(crate) parks: u64,
    pub(crate) noops: u64,
    pub(crate) steals: u64,
    pub(crate) overflows: u64,
    pub(crate) local_schedules: u64,
    pub(crate) local_queue_depth: usize,
    pub(crate) mean_poll: Duration,
}

/// Whole-runtime values: gauges as sampled, counters cumulative since the agent started sampling.
#[derive(Debug, Clone, Default)]
pub(crate) struct GlobalSample {
    pub(crate) workers: usize,
    pub(crate) global_queue_depth: usize,
    pub(crate) alive_tasks: usize,
    pub(crate) spawned_tasks: u64,
    pub(crate) blocking_threads: usize,
    pub(crate) idle_blocking_threads: usize,
    pub(crate) blocking_queue_depth: usize,
    pub(crate) budget_forced_yields: u64,
    pub(crate) io_ready_events: u64,
    pub(crate) remote_schedules: u64,
}

/// One lag probe's measurements.
#[derive(Debug, Clone, Default)]
pub(crate) struct LagSample {
    /// Every measurement since the agent started.
    pub(crate) histogram: LogHistogram,
    pub(crate) count: u64,
    /// The sum of every measurement since the agent started.
    pub(crate) sum: Duration,
    pub(crate) max: Duration,
    /// Over the last [`LAG_WINDOW`].
    pub(crate) p50: Option<Duration>,
    pub(crate) p99: Option<Duration>,
    pub(crate) window_max: Option<Duration>,
    /// A probe still waiting right now, and for how long (the runtime may be stalled).
    pub(crate) pending: Option<Duration>,
}

/// One sample of the runtime.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuntimeSample {
    pub(crate) workers: Vec<WorkerSample>,
    pub(crate) global: GlobalSample,
    pub(crate) first_poll_delay: LagSample,
    pub(crate) timer_lateness: LagSample,
}
