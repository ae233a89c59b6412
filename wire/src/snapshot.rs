use crate::histogram::LogHistogram;
use crate::stall::{InFlightPoll, Location, ThreadInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Which runtime a snapshot describes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Identifies the agent (one per runtime) within the process.
    pub id: u64,
    /// A name given by the app, if any.
    pub name: Option<String>,
    /// `multi_thread` or `current_thread`, once the runtime has run.
    pub flavor: Option<String>,
    /// Number of worker threads, once the runtime has run.
    pub workers: Option<usize>,
    /// Process id.
    pub pid: u32,
}

/// Cumulative statistics of one thread that polls tasks (a worker, or the `block_on` thread of a
/// current-thread runtime).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// The OS thread.
    pub thread: ThreadInfo,
    /// The worker index in tokio's `RuntimeMetrics`, when the thread currently holds a worker.
    pub worker: Option<u32>,
    /// False once the thread has exited; its counts stay in the totals.
    pub alive: bool,
    /// **Definition:** the number of task polls this thread has completed.
    pub poll_count: u64,
    /// **Definition:** the total time spent inside task polls.
    ///
    /// **Interpretation:** the growth of this value over an interval, divided by the interval, is how busy
    /// the thread was running tasks (see [`WorkerDelta::busy_ratio`]).
    pub total_poll_duration: Duration,
    /// **Definition:** the longest single poll this thread completed.
    pub max_poll_duration: Duration,
    /// **Definition:** polls that took at least the slow-poll threshold (50 µs by default, as in
    /// tokio-metrics).
    pub slow_poll_count: u64,
    /// The poll running on this thread right now, if any.
    pub current_poll: Option<InFlightPoll>,
}

/// Whether a task is still alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Spawned and not yet finished.
    Live,
    /// Finished (completed, cancelled or panicked); kept for a while for display.
    Finished,
}

/// Schedule latency: the time from a task being woken to the start of its poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleLatency {
    /// Number of measured polls.
    pub count: u64,
    /// Sum of the measured latencies.
    pub total: Duration,
    /// The largest measured latency.
    pub max: Duration,
    /// Distribution (16 power-of-two buckets).
    pub histogram: LogHistogram,
}

impl ScheduleLatency {
    /// Mean latency, or zero when nothing was measured.
    pub fn mean(&self) -> Duration {
        if self.count == 0 { Duration::ZERO } else { self.total / self.count.min(u32::MAX as u64) as u32 }
    }
}

/// Cumulative statistics of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// tokio's task id.
    pub id: u64,
    /// Where it was spawned.
    pub location: Location,
    /// Live or finished.
    pub state: TaskState,
    /// **Definition:** the number of times the task was polled.
    pub poll_count: u64,
    /// **Definition:** total time spent polling the task ("busy" time).
    pub total_poll_duration: Duration,
    /// **Definition:** its longest poll.
    pub max_poll_duration: Duration,
    /// **Definition:** polls at or above the slow-poll threshold.
    pub slow_poll_count: u64,
    /// **Definition:** how many of its polls passed the stall threshold.
    pub stall_count: u64,
    /// Distribution of its poll durations (16 power-of-two buckets).
    pub poll_histogram: LogHistogram,
    /// Wake-to-poll latency, when tokio's schedule-latency tracking is on.
    pub schedule_latency: Option<ScheduleLatency>,
}

/// Cumulative statistics of every task spawned at one source location. Tasks come and go; locations stay,
/// so this is usually the table to look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocationStats {
    /// The spawn location.
    pub location: Location,
    /// Tasks spawned here that are still alive.
    pub live_tasks: u64,
    /// Tasks spawned here (live and finished) that the agent tracked.
    pub spawned_tasks: u64,
    /// Total polls of those tasks.
    pub poll_count: u64,
    /// Total time polling them.
    pub total_poll_duration: Duration,
    /// The longest single poll.
    pub max_poll_duration: Duration,
    /// Polls at or above the slow-poll threshold.
    pub slow_poll_count: u64,
    /// Polls that passed the stall threshold.
    pub stall_count: u64,
    /// Distribution of poll durations.
    pub poll_histogram: LogHistogram,
    /// Wake-to-poll latency, when tracked.
    pub schedule_latency: Option<ScheduleLatency>,
}

impl LocationStats {
    /// Empty statistics for `location`.
    pub fn new(location: Location) -> Self {
        LocationStats {
            location,
            live_tasks: 0,
            spawned_tasks: 0,
            poll_count: 0,
            total_poll_duration: Duration::ZERO,
            max_poll_duration: Duration::ZERO,
            slow_poll_count: 0,
            stall_count: 0,
            poll_histogram: LogHistogram::new(crate::histogram::TASK_HISTOGRAM_BUCKETS),
            schedule_latency: None,
        }
    }
}

/// Whole-runtime counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Tasks spawned (tracked or not).
    pub spawned_tasks: u64,
    /// Tasks that finished.
    pub finished_tasks: u64,
    /// Polls completed on all threads (including threads that have exited).
    pub poll_count: u64,
    /// Time spent in polls on all threads.
    pub total_poll_duration: Duration,
    /// Polls at or above the slow-poll threshold.
    pub slow_poll_count: u64,
    /// Stalls detected (every one, whether reported or rate-limited).
    pub stall_count: u64,
    /// Of those, `block_in_place` stalls.
    pub block_in_place_count: u64,
    /// Stall events delivered (started, updated and ended).
    pub stall_reports: u64,
    /// Stall events suppressed by the rate limit.
    pub suppressed_reports: u64,
}

/// Data the agent had to drop to stay within its memory bounds. If everything is working normally, every
/// field is 0; anything else means some numbers are incomplete (never wrong).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Tasks not tracked individually because the task table was full (raise `max_tasks`). Their polls still
    /// count in worker totals and stall detection.
    pub untracked_tasks: u64,
    /// Spawn locations folded into `<other locations>` because the location table was full.
    pub untracked_locations: u64,
    /// Stall events not delivered to a subscriber because its buffer was full.
    pub events: u64,
    /// Watchdog messages lost because the agent's internal queue was full.
    pub watchdog_messages: u64,
    /// Stalls counted without details: more than four completed on one thread between two watchdog looks.
    pub stall_details: u64,
}

/// Cumulative values of one runtime at one moment. Compare two with [`Snapshot::delta`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The runtime.
    pub runtime: RuntimeInfo,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub taken_at_unix_nanos: u64,
    /// Monotonic time since the agent was installed. Use this, not the wall clock, for rates.
    pub uptime: Duration,
    /// Threads that poll tasks, live and exited.
    pub workers: Vec<WorkerStats>,
    /// Live tasks plus recently finished ones.
    pub tasks: Vec<TaskStats>,
    /// Every spawn location seen.
    pub locations: Vec<LocationStats>,
    /// Distribution of every poll's duration (16 power-of-two buckets): live, finished and untracked tasks.
    pub poll_histogram: LogHistogram,
    /// Whole-runtime counters.
    pub totals: Totals,
    /// What was dropped to stay bounded.
    pub dropped: Dropped,
}

/// Per-worker change between two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerDelta {
    /// The thread.
    pub thread: ThreadInfo,
    /// Worker index, when known.
    pub worker: Option<u32>,
    /// Polls completed in the interval.
    pub poll_count: u64,
    /// Time spent polling in the interval.
    pub total_poll_duration: Duration,
    /// Slow polls in the interval.
    pub slow_poll_count: u64,
    /// **Definition:** `total_poll_duration / interval`, clamped to `0.0..=1.0`.
    ///
    /// **Interpretation:** near 1.0 the thread is saturated (or stalled); near 0.0 it is mostly parked.
    pub busy_ratio: f64,
}

/// The change between two snapshots: what happened in the interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDelta {
    /// Time between the two snapshots (monotonic).
    pub interval: Duration,
    /// Polls completed in the interval.
    pub poll_count: u64,
    /// Time spent polling in the interval, summed over threads.
    pub total_poll_duration: Duration,
    /// Slow polls in the interval.
    pub slow_poll_count: u64,
    /// Stalls detected in the interval.
    pub stall_count: u64,
    /// Tasks spawned in the interval.
    pub spawned_tasks: u64,
    /// Tasks finished in the interval.
    pub finished_tasks: u64,
    /// Per thread, for threads present in the later snapshot.
    pub workers: Vec<WorkerDelta>,
    /// Poll-duration distribution of the interval.
    pub poll_histogram: LogHistogram,
}

impl SnapshotDelta {
    /// Mean poll duration in the interval.
    pub fn mean_poll_duration(&self) -> Duration {
        if self.poll_count == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos((self.total_poll_duration.as_nanos() / self.poll_count as u128) as u64)
        }
    }

    /// Polls per second in the interval.
    pub fn polls_per_second(&self) -> f64 {
        let secs = self.interval.as_secs_f64();
        if secs > 0.0 { self.poll_count as f64 / secs } else { 0.0 }
    }
}

impl Snapshot {
    /// What changed since `prev`, an earlier snapshot of the same runtime. A pure function: calling it again
    /// with the same arguments gives the same answer.
    ///
    /// Threads are matched by tid. A thread that is new in `self` counts from zero. Counters that went
    /// backwards (a different runtime was passed) count as zero rather than wrapping to huge numbers.
    ///
    /// # Examples
    /// ```
    /// use loopscope_wire::{Snapshot, Totals};
    /// # fn snap(uptime_ms: u64, polls: u64) -> Snapshot {
    /// #     Snapshot {
    /// #         runtime: loopscope_wire::RuntimeInfo { id: 1, name: None, flavor: None, workers: None, pid: 1 },
    /// #         taken_at_unix_nanos: 0,
    /// #         uptime: std::time::Duration::from_millis(uptime_ms),
    /// #         workers: vec![], tasks: vec![], locations: vec![],
    /// #         poll_histogram: loopscope_wire::LogHistogram::new(16),
    /// #         totals: Totals { poll_count: polls, ..Totals::default() },
    /// #         dropped: Default::default(),
    /// #     }
    /// # }
    /// let earlier = snap(1_000, 10_000);
    /// let later = snap(1_500, 15_000);
    /// let d = later.delta(&earlier);
    /// assert_eq!(d.poll_count, 5_000);
    /// assert_eq!(d.polls_per_second(), 10_000.0);
    /// ```
    pub fn delta(&self, prev: &Snapshot) -> SnapshotDelta {
        let interval = self.uptime.saturating_sub(prev.uptime);
        let prev_workers: HashMap<i32, &WorkerStats> = prev.workers.iter().map(|w| (w.thread.tid, w)).collect();
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let p = prev_workers.get(&w.thread.tid);
                let poll_count = w.poll_count.saturating_sub(p.map_or(0, |p| p.poll_count));
                let total_poll_duration =
                    w.total_poll_duration.saturating_sub(p.map_or(Duration::ZERO, |p| p.total_poll_duration));
                let slow_poll_count = w.slow_poll_count.saturating_sub(p.map_or(0, |p| p.slow_poll_count));
                let busy_ratio = if interval.is_zero() {
                    0.0
                } else {
                    (total_poll_duration.as_secs_f64() / interval.as_secs_f64()).clamp(0.0, 1.0)
                };
                WorkerDelta {
                    thread: w.thread.clone(),
                    worker: w.worker,
                    poll_count,
                    total_poll_duration,
                    slow_poll_count,
                    busy_ratio,
                }
            })
            .collect();
        let t = &self.totals;
        let p = &prev.totals;
        SnapshotDelta {
            interval,
            poll_count: t.poll_count.saturating_sub(p.poll_count),
            total_poll_duration: t.total_poll_duration.saturating_sub(p.total_poll_duration),
            slow_poll_count: t.slow_poll_count.saturating_sub(p.slow_poll_count),
            stall_count: t.stall_count.saturating_sub(p.stall_count),
            spawned_tasks: t.spawned_tasks.saturating_sub(p.spawned_tasks),
            finished_tasks: t.finished_tasks.saturating_sub(p.finished_tasks),
            workers,
            poll_histogram: self.poll_histogram.delta(&prev.poll_histogram),
        }
    }

    /// The task with this id, if present.
    pub fn task(&self, id: u64) -> Option<&TaskStats> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Statistics for spawn locations whose file ends with `file_suffix` and whose line is `line`.
    pub fn location(&self, file_suffix: &str, line: u32) -> Option<&LocationStats> {
        self.locations.iter().find(|l| l.location.line == line && l.location.file.ends_with(file_suffix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(tid: i32, polls: u64, busy_ms: u64) -> WorkerStats {
        WorkerStats {
            thread: ThreadInfo { tid, name: None },
            worker: Some(0),
            alive: true,
            poll_count: polls,
            total_poll_duration: Duration::from_millis(busy_ms),
            max_poll_duration: Duration::ZERO,
            slow_poll_count: 0,
            current_poll: None,
        }
    }

    fn snap(uptime_ms: u64, workers: Vec<WorkerStats>) -> Snapshot {
        Snapshot {
            runtime: RuntimeInfo { id: 1, name: None, flavor: None, workers: None, pid: 1 },
            taken_at_unix_nanos: 0,
            uptime: Duration::from_millis(uptime_ms),
            workers,
            tasks: vec![],
            locations: vec![],
            poll_histogram: LogHistogram::new(16),
            totals: Totals::default(),
            dropped: Dropped::default(),
        }
    }

    #[test]
    fn delta_matches_workers_by_tid_and_is_pure() {
        let a = snap(1000, vec![worker(10, 100, 100), worker(11, 50, 10)]);
        let b = snap(2000, vec![worker(11, 150, 510), worker(12, 7, 1)]);
        let d1 = b.delta(&a);
        let d2 = b.delta(&a);
        assert_eq!(d1, d2);
        assert_eq!(d1.interval, Duration::from_secs(1));
        assert_eq!(d1.workers.len(), 2);
        assert_eq!(d1.workers[0].poll_count, 100);
        assert!((d1.workers[0].busy_ratio - 0.5).abs() < 1e-9);
        assert_eq!(d1.workers[1].poll_count, 7);
    }

    #[test]
    fn delta_against_wrong_runtime_never_wraps() {
        let a = snap(5000, vec![worker(10, 1000, 100)]);
        let b = snap(1000, vec![worker(10, 5, 1)]);
        let d = b.delta(&a);
        assert_eq!(d.interval, Duration::ZERO);
        assert_eq!(d.workers[0].poll_count, 0);
        assert_eq!(d.workers[0].busy_ratio, 0.0);
    }
}
