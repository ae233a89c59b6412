//! What the agent thread keeps of tasks and threads that are gone: a bounded list of recently finished tasks
//! and exited threads' totals. (Finished tasks' counts per location are kept in the location table, where the
//! hooks fold them in: `tables::LocationTotals`.) Written by the agent thread's reclaim pass, read by snapshots
//! and the stream under the same lock.

use loopscope_wire::{LogHistogram, TaskStats};
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
    /// Recently finished tasks, newest last.
    pub(crate) finished: VecDeque<TaskStats>,
    pub(crate) retired_workers: RetiredWorkers,
}
