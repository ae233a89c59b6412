//! The per-task, per-location and per-worker samples a [`Tick`](super::Tick) or [`FullState`](super::FullState)
//! carries, and the histograms inside them. Compact on purpose (ids instead of strings, `u64` nanoseconds,
//! varint-encoded by postcard): a tick may carry tens of thousands of them. Split out of `messages.rs`, which
//! holds the messages themselves.

use crate::histogram::LogHistogram;
use crate::snapshot::{LocationStats, ScheduleLatency, TaskState, TaskStats};
use crate::stall::Location;
use crate::stall::ThreadInfo;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Wake→poll latency counters, in compact form (all cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySample {
    /// Number of measured polls.
    pub count: u64,
    /// Sum of the measured latencies, in nanoseconds.
    pub total_nanos: u64,
    /// The largest measured latency, in nanoseconds.
    pub max_nanos: u64,
    /// Distribution (power-of-two buckets, see [`LogHistogram`]).
    pub histogram: LogHistogram,
}

impl LatencySample {
    /// Mean latency, or zero when nothing was measured.
    pub fn mean(&self) -> Duration {
        Duration::from_nanos(self.total_nanos.checked_div(self.count).unwrap_or(0))
    }

    /// Adds another set of measurements to `into`, which has none yet when it is `None`.
    fn add_to(into: &mut Option<LatencySample>, s: &LatencySample) {
        match into {
            Some(l) => {
                l.count += s.count;
                l.total_nanos += s.total_nanos;
                l.max_nanos = l.max_nanos.max(s.max_nanos);
                l.histogram.merge(&s.histogram);
            }
            None => *into = Some(s.clone()),
        }
    }
}

impl From<&ScheduleLatency> for LatencySample {
    fn from(s: &ScheduleLatency) -> Self {
        LatencySample {
            count: s.count,
            total_nanos: nanos(s.total),
            max_nanos: nanos(s.max),
            histogram: s.histogram.clone(),
        }
    }
}

impl From<&LatencySample> for ScheduleLatency {
    fn from(s: &LatencySample) -> Self {
        ScheduleLatency {
            count: s.count,
            total: Duration::from_nanos(s.total_nanos),
            max: Duration::from_nanos(s.max_nanos),
            histogram: s.histogram.clone(),
        }
    }
}

/// One task's cumulative counters, as the stream carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSample {
    /// tokio's task id.
    pub id: u64,
    /// Where it was spawned: an id from a [`LocationInfo`](super::LocationInfo).
    pub location: u32,
    /// Live or finished.
    pub state: TaskState,
    /// **Definition:** the number of times the task was polled.
    pub poll_count: u64,
    /// **Definition:** total time spent polling the task ("busy" time), in nanoseconds.
    pub busy_nanos: u64,
    /// **Definition:** its longest poll, in nanoseconds.
    pub max_poll_nanos: u64,
    /// **Definition:** polls at or above the slow-poll threshold.
    pub slow_poll_count: u64,
    /// **Definition:** how many of its polls passed the stall threshold.
    pub stall_count: u64,
    /// Distribution of its poll durations.
    pub poll_histogram: LogHistogram,
    /// Wake→poll latency, when tokio measures it ([`AgentCapabilities::schedule_latency`](super::AgentCapabilities::schedule_latency)).
    pub schedule_latency: Option<LatencySample>,
}

impl TaskSample {
    /// A live task that has not been polled yet.
    pub fn new(id: u64, location: u32) -> Self {
        TaskSample {
            id,
            location,
            state: TaskState::Live,
            poll_count: 0,
            busy_nanos: 0,
            max_poll_nanos: 0,
            slow_poll_count: 0,
            stall_count: 0,
            poll_histogram: LogHistogram::default(),
            schedule_latency: None,
        }
    }

    /// The compact form of a snapshot's [`TaskStats`], with `location` the id the stream uses for
    /// `t.location`.
    pub fn from_stats(t: &TaskStats, location: u32) -> Self {
        TaskSample {
            id: t.id,
            location,
            state: t.state,
            poll_count: t.poll_count,
            busy_nanos: nanos(t.total_poll_duration),
            max_poll_nanos: nanos(t.max_poll_duration),
            slow_poll_count: t.slow_poll_count,
            stall_count: t.stall_count,
            poll_histogram: t.poll_histogram.clone(),
            schedule_latency: t.schedule_latency.as_ref().map(LatencySample::from),
        }
    }

    /// Total time spent polling the task.
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos)
    }

    /// Mean poll duration, or zero before the first poll.
    pub fn mean_poll(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.checked_div(self.poll_count).unwrap_or(0))
    }
}

impl TaskStats {
    /// A snapshot's form of a stream [`TaskSample`], at `location` (what the sample's location id stands for).
    /// The agent builds its snapshots this way, from the same samples it streams, so the two always agree.
    pub fn from_sample(t: &TaskSample, location: Location) -> Self {
        TaskStats {
            id: t.id,
            location,
            state: t.state,
            poll_count: t.poll_count,
            total_poll_duration: Duration::from_nanos(t.busy_nanos),
            max_poll_duration: Duration::from_nanos(t.max_poll_nanos),
            slow_poll_count: t.slow_poll_count,
            stall_count: t.stall_count,
            poll_histogram: t.poll_histogram.clone(),
            schedule_latency: t.schedule_latency.as_ref().map(ScheduleLatency::from),
        }
    }
}

/// Cumulative counters of every task spawned at one location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationSample {
    /// The location's id (see [`LocationInfo`](super::LocationInfo)).
    pub id: u32,
    /// Tasks spawned here that are still alive (a gauge).
    pub live_tasks: u64,
    /// Tasks spawned here (live and finished) that the agent tracked.
    pub spawned_tasks: u64,
    /// Total polls of those tasks.
    pub poll_count: u64,
    /// Total time polling them, in nanoseconds.
    pub busy_nanos: u64,
    /// The longest single poll, in nanoseconds.
    pub max_poll_nanos: u64,
    /// Polls at or above the slow-poll threshold.
    pub slow_poll_count: u64,
    /// Polls that passed the stall threshold.
    pub stall_count: u64,
    /// Distribution of poll durations.
    pub poll_histogram: LogHistogram,
    /// Wake→poll latency, when tracked.
    pub schedule_latency: Option<LatencySample>,
}

impl LocationSample {
    /// A location with no tasks counted yet.
    pub fn new(id: u32) -> Self {
        LocationSample {
            id,
            live_tasks: 0,
            spawned_tasks: 0,
            poll_count: 0,
            busy_nanos: 0,
            max_poll_nanos: 0,
            slow_poll_count: 0,
            stall_count: 0,
            poll_histogram: LogHistogram::default(),
            schedule_latency: None,
        }
    }

    /// The compact form of a snapshot's [`LocationStats`], with `id` the id the stream uses for its location.
    pub fn from_stats(l: &LocationStats, id: u32) -> Self {
        LocationSample {
            id,
            live_tasks: l.live_tasks,
            spawned_tasks: l.spawned_tasks,
            poll_count: l.poll_count,
            busy_nanos: nanos(l.total_poll_duration),
            max_poll_nanos: nanos(l.max_poll_duration),
            slow_poll_count: l.slow_poll_count,
            stall_count: l.stall_count,
            poll_histogram: l.poll_histogram.clone(),
            schedule_latency: l.schedule_latency.as_ref().map(LatencySample::from),
        }
    }

    /// Adds one task's counters, and the task itself to `spawned_tasks` (and to `live_tasks` while it is
    /// live). The agent sums its locations this way, and so do [`LocationStats`]' own methods: a location's
    /// sums are defined here once.
    pub fn add_task(&mut self, t: &TaskSample) {
        self.live_tasks += u64::from(t.state == TaskState::Live);
        self.spawned_tasks += 1;
        self.add_counts(t);
    }

    /// Adds a task's counters without counting the task itself (used for retired totals).
    pub fn add_counts(&mut self, t: &TaskSample) {
        self.poll_count += t.poll_count;
        self.busy_nanos += t.busy_nanos;
        self.max_poll_nanos = self.max_poll_nanos.max(t.max_poll_nanos);
        self.slow_poll_count += t.slow_poll_count;
        self.stall_count += t.stall_count;
        self.poll_histogram.merge(&t.poll_histogram);
        if let Some(s) = &t.schedule_latency {
            LatencySample::add_to(&mut self.schedule_latency, s);
        }
    }

    /// Adds another location's sums (the same location under another id, or its finished tasks' totals).
    pub fn merge(&mut self, o: &LocationSample) {
        self.live_tasks += o.live_tasks;
        self.spawned_tasks += o.spawned_tasks;
        // Its counters are a task's, summed: added as one task's, they are summed once, in `add_counts`.
        let as_task = TaskSample {
            poll_count: o.poll_count,
            busy_nanos: o.busy_nanos,
            max_poll_nanos: o.max_poll_nanos,
            slow_poll_count: o.slow_poll_count,
            stall_count: o.stall_count,
            poll_histogram: o.poll_histogram.clone(),
            schedule_latency: o.schedule_latency.clone(),
            ..TaskSample::new(0, o.id)
        };
        self.add_counts(&as_task);
    }
}

/// [`LocationStats`]' sums are [`LocationSample`]'s, in the snapshot's units.
impl LocationStats {
    /// Adds one task's statistics.
    pub fn add_task(&mut self, t: &TaskStats) {
        self.in_sample_form(|l| l.add_task(&TaskSample::from_stats(t, 0)));
    }

    /// Adds a task's counters without counting the task itself (used for retired totals).
    pub fn add_counts(&mut self, t: &TaskStats) {
        self.in_sample_form(|l| l.add_counts(&TaskSample::from_stats(t, 0)));
    }

    /// Adds another location's statistics (same location, other bookkeeping entry).
    pub fn merge(&mut self, o: &LocationStats) {
        self.in_sample_form(|l| l.merge(&LocationSample::from_stats(o, 0)));
    }

    fn in_sample_form(&mut self, change: impl FnOnce(&mut LocationSample)) {
        let mut l = LocationSample::from_stats(self, 0);
        change(&mut l);
        let location = std::mem::replace(&mut self.location, Location::new("", 0, 0));
        *self = LocationStats::from_sample(&l, location);
    }

    /// A snapshot's form of a stream [`LocationSample`], at `location` (what the sample's id stands for).
    pub fn from_sample(l: &LocationSample, location: Location) -> Self {
        LocationStats {
            location,
            live_tasks: l.live_tasks,
            spawned_tasks: l.spawned_tasks,
            poll_count: l.poll_count,
            total_poll_duration: Duration::from_nanos(l.busy_nanos),
            max_poll_duration: Duration::from_nanos(l.max_poll_nanos),
            slow_poll_count: l.slow_poll_count,
            stall_count: l.stall_count,
            poll_histogram: l.poll_histogram.clone(),
            schedule_latency: l.schedule_latency.as_ref().map(ScheduleLatency::from),
        }
    }
}

/// The poll running on a worker at the moment of the sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentPoll {
    /// The task being polled.
    pub task_id: u64,
    /// Its spawn location's id, when the agent knows it.
    pub location: Option<u32>,
    /// How long the poll had been running, in nanoseconds.
    pub elapsed_nanos: u64,
}

/// One worker thread at one moment. Counters are cumulative since the runtime started (tokio's
/// `RuntimeMetrics`, plus loopscope's own poll timing); gauges are marked as such.
///
/// Fields marked *(runtime metrics)* are 0 unless [`AgentCapabilities::runtime_metrics`](super::AgentCapabilities::runtime_metrics) is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSample {
    /// The worker index, as in tokio's `RuntimeMetrics` (0 for a current-thread runtime).
    pub index: u32,
    /// The OS thread running this worker right now (it changes when `block_in_place` hands the worker to
    /// another thread).
    pub thread: ThreadInfo,
    /// **Definition:** total time the worker has been busy (not parked), in nanoseconds.
    ///
    /// **Interpretation:** its growth over an interval divided by the interval is the busy ratio; near 1.0
    /// the worker is saturated or stalled.
    pub busy_nanos: u64,
    /// **Definition:** task polls completed by this worker.
    pub poll_count: u64,
    /// **Definition:** times the worker parked (went to sleep for lack of work).
    pub park_count: u64,
    /// **Definition:** times the worker woke up without finding work *(runtime metrics)*.
    pub noop_count: u64,
    /// **Definition:** tasks this worker stole from other workers *(runtime metrics)*.
    pub steal_count: u64,
    /// **Definition:** times the local queue overflowed and half of it moved to the global queue
    /// *(runtime metrics)*.
    pub overflow_count: u64,
    /// **Definition:** tasks scheduled from this worker onto its own local queue *(runtime metrics)*.
    pub local_schedule_count: u64,
    /// **Gauge:** tasks waiting in this worker's local queue *(runtime metrics)*.
    ///
    /// **Interpretation:** a queue that grows while the worker is busy means tasks wait behind slow polls.
    pub local_queue_depth: u64,
    /// **Gauge:** tokio's moving average of this worker's poll durations, in nanoseconds *(runtime
    /// metrics)*.
    pub mean_poll_nanos: u64,
    /// **Definition:** polls at or above the slow-poll threshold (loopscope's timing).
    pub slow_poll_count: u64,
    /// **Definition:** the longest single poll on this worker, in nanoseconds (loopscope's timing).
    pub max_poll_nanos: u64,
    /// The poll in progress at the moment of the sample, if any.
    pub current_poll: Option<CurrentPoll>,
}

/// Whole-runtime figures from tokio's `RuntimeMetrics`. Fields marked *(runtime metrics)* are 0 unless
/// [`AgentCapabilities::runtime_metrics`](super::AgentCapabilities::runtime_metrics) is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalSample {
    /// Number of worker threads.
    pub workers: u32,
    /// **Gauge:** tasks waiting in the global (injection) queue: tasks spawned or woken from outside the
    /// runtime, and local-queue overflow.
    pub global_queue_depth: u64,
    /// **Gauge:** tasks alive (spawned, not yet finished).
    pub alive_tasks: u64,
    /// **Definition:** tasks spawned since the runtime started *(runtime metrics)*.
    pub spawned_tasks: u64,
    /// **Definition:** tasks scheduled from outside the runtime (remote schedules) *(runtime metrics)*.
    pub remote_schedule_count: u64,
    /// **Gauge:** threads in the blocking pool (`spawn_blocking`) *(runtime metrics)*.
    pub blocking_threads: u64,
    /// **Gauge:** of those, threads idle *(runtime metrics)*.
    pub idle_blocking_threads: u64,
    /// **Gauge:** `spawn_blocking` jobs waiting for a thread *(runtime metrics)*.
    ///
    /// **Interpretation:** non-zero for long means the blocking pool is saturated.
    pub blocking_queue_depth: u64,
    /// **Definition:** times a task was forced to yield because it used up its cooperative budget
    /// *(runtime metrics)*.
    pub budget_forced_yields: u64,
    /// **Definition:** ready events the I/O driver has processed *(runtime metrics)*.
    pub io_driver_ready_events: u64,
}

/// A wait-time distribution measured by one of the agent's lag probes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitHistogram {
    /// **Definition:** measurements since the agent started (cumulative).
    pub count: u64,
    /// **Definition:** the largest wait since the agent started, in nanoseconds.
    pub max_nanos: u64,
    /// Distribution of every measurement since the agent started (cumulative; power-of-two buckets, see
    /// [`LogHistogram`]). Subtract two samples' histograms ([`LogHistogram::delta`]) for an interval's.
    pub histogram: LogHistogram,
    /// The length of the agent's recent window that the `recent_*` fields cover, in nanoseconds.
    pub recent_window_nanos: u64,
    /// Median over the recent window (precise, not bucketed), when it has measurements.
    pub recent_p50_nanos: Option<u64>,
    /// 99th percentile over the recent window, when it has measurements.
    pub recent_p99_nanos: Option<u64>,
    /// Largest wait over the recent window, when it has measurements.
    pub recent_max_nanos: Option<u64>,
    /// **Gauge:** a probe still waiting at the moment of the sample, and for how long, in nanoseconds.
    ///
    /// **Interpretation:** a large value here is a stall happening right now, before any measurement
    /// completes.
    pub pending_nanos: Option<u64>,
}

/// How long work waits before it runs, measured from outside the tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitTimes {
    /// **Definition:** the delay between spawning a tiny probe task from outside the runtime and its first
    /// poll ("first-poll delay").
    ///
    /// **Interpretation:** what a new request waits before the runtime gets to it; it grows when workers
    /// are stalled or saturated.
    pub first_poll_delay: WaitHistogram,
    /// **Definition:** how late a timer fires compared with its deadline ("timer lateness").
    ///
    /// **Interpretation:** lateness well above a millisecond means the timer driver's worker is blocked.
    pub timer_lateness: WaitHistogram,
}

/// A duration as `u64` nanoseconds, saturating (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_sample() -> TaskSample {
        TaskSample {
            state: TaskState::Finished,
            poll_count: 7,
            busy_nanos: 1_234_567,
            max_poll_nanos: 900_001,
            slow_poll_count: 3,
            stall_count: 1,
            poll_histogram: LogHistogram { counts: (0..22).collect() },
            schedule_latency: Some(LatencySample {
                count: 5,
                total_nanos: 5_000,
                max_nanos: 2_000,
                histogram: LogHistogram { counts: vec![0, 5] },
            }),
            ..TaskSample::new(42, 3)
        }
    }

    /// A snapshot's task is the stream's sample read at its location: every field comes across, and back.
    #[test]
    fn a_task_sample_and_its_stats_are_one_model() {
        let sample = task_sample();
        let at = Location::new("src/main.rs", 10, 5);
        let stats = TaskStats::from_sample(&sample, at.clone());
        assert_eq!(stats.id, 42);
        assert_eq!(stats.location, at);
        assert_eq!(stats.total_poll_duration, Duration::from_nanos(1_234_567));
        assert_eq!(stats.max_poll_duration, Duration::from_nanos(900_001));
        assert_eq!(stats.schedule_latency.as_ref().map(|s| s.total), Some(Duration::from_nanos(5_000)));
        assert_eq!(TaskSample::from_stats(&stats, 3), sample);
        assert_eq!(TaskSample::from_stats(&TaskStats { schedule_latency: None, ..stats }, 3).schedule_latency, None);
    }

    #[test]
    fn a_location_sample_and_its_stats_are_one_model() {
        let t = task_sample();
        let sample = LocationSample {
            live_tasks: 2,
            spawned_tasks: 9,
            poll_count: t.poll_count,
            busy_nanos: t.busy_nanos,
            max_poll_nanos: t.max_poll_nanos,
            slow_poll_count: t.slow_poll_count,
            stall_count: t.stall_count,
            poll_histogram: t.poll_histogram,
            schedule_latency: t.schedule_latency,
            ..LocationSample::new(3)
        };
        let at = Location::new("src/lib.rs", 1, 1);
        let stats = LocationStats::from_sample(&sample, at.clone());
        assert_eq!((stats.location.clone(), stats.live_tasks, stats.spawned_tasks), (at, 2, 9));
        assert_eq!(stats.total_poll_duration, Duration::from_nanos(1_234_567));
        assert_eq!(LocationSample::from_stats(&stats, 3), sample);
    }

    /// A location's sums are defined once, on the sample: the snapshot's `LocationStats` add up the same.
    #[test]
    fn a_location_sums_its_tasks_the_same_in_both_forms() {
        let (a, b) = (task_sample(), TaskSample { id: 43, state: TaskState::Live, ..TaskSample::new(43, 3) });
        let at = Location::new("src/main.rs", 10, 5);
        let mut sample = LocationSample::new(3);
        sample.add_task(&a);
        sample.add_task(&b);
        let mut stats = LocationStats::new(at.clone());
        stats.add_task(&TaskStats::from_sample(&a, at.clone()));
        stats.add_task(&TaskStats::from_sample(&b, at.clone()));
        assert_eq!((sample.live_tasks, sample.spawned_tasks, sample.poll_count), (1, 2, 7));
        assert_eq!(stats, LocationStats::from_sample(&sample, at.clone()));

        // Merging (another id of the same location, or finished tasks' totals) and adding counts alone.
        let mut twice = sample.clone();
        twice.merge(&sample);
        let mut stats_twice = stats.clone();
        stats_twice.merge(&stats);
        assert_eq!((twice.spawned_tasks, twice.busy_nanos, twice.max_poll_nanos), (4, 2 * 1_234_567, 900_001));
        assert_eq!(twice.schedule_latency.as_ref().map(|l| (l.count, l.max_nanos)), Some((10, 2_000)));
        assert_eq!(stats_twice, LocationStats::from_sample(&twice, at.clone()));
        stats.add_counts(&TaskStats::from_sample(&a, at.clone()));
        sample.add_counts(&a);
        assert_eq!((sample.spawned_tasks, sample.poll_count), (2, 14));
        assert_eq!(stats, LocationStats::from_sample(&sample, at));
    }
}
