//! What the agent thread keeps of tasks and threads that are gone: finished tasks' counts per location, a
//! bounded list of recently finished tasks, and exited threads' totals. Written by the agent thread's reclaim
//! pass, read by snapshots and the stream under the same lock, so that a task is counted live or retired,
//! never both.

use loopscope_wire::{LocationStats, LogHistogram, TaskStats};
use std::collections::{HashMap, VecDeque};

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
    /// Counts of finished tasks, per location index.
    pub(crate) retired: HashMap<u32, LocationStats>,
    /// Recently finished tasks, newest last.
    pub(crate) finished: VecDeque<TaskStats>,
    pub(crate) finished_count: u64,
    pub(crate) retired_workers: RetiredWorkers,
}
