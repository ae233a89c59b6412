//! What the agent thread keeps of tasks and threads that are gone: a bounded list of recently finished tasks
//! and exited threads' totals. (Finished tasks' counts per location are kept in the location table, where the
//! hooks fold them in: `tables::LocationTotals`.) Written by the agent thread's reclaim pass, read by snapshots
//! and the stream under the same lock.

use loopscope_wire::LogHistogram;
use loopscope_wire::proto::TaskSample;
use std::collections::VecDeque;

/// Totals of exited threads whose slots were dropped.
#[derive(Debug, Default, Clone)]
pub(crate) struct RetiredWorkers {
    pub(crate) polls: u64,
    pub(crate) busy_ns: u64,
    pub(crate) slow_polls: u64,
    pub(crate) untracked_hist: LogHistogram,
}

/// Everything the agent thread accumulates; read by snapshots.
#[derive(Debug, Default)]
pub(crate) struct AggState {
    /// Recently finished tasks, newest last, in the form a scan reads them (`scan::pass::recent_finished`),
    /// with their location-table index as `location`: a snapshot shows them as it shows the tasks it scans.
    pub(crate) finished: VecDeque<TaskSample>,
    pub(crate) retired_workers: RetiredWorkers,
}
