//! The Prometheus view of the stream (`LOOPSCOPE_METRICS_ADDR`): the agent thread derives each
//! [`Exposition`] from the same ticks the stream sends and from every stall event, and publishes it to the
//! exporter (`crate::exporter`), which serves it from its own threads.
//!
//! Stalls are counted here, not read from the tables: their labels (kind, final classification, spawn
//! location) exist only in the events. A stall is counted once, when it ends (its classification is final
//! then), whether or not the rate limit suppressed its report; stalls still going on show in
//! `loopscope_stalled_workers`. Label values are bounded: kinds and classifications are fixed lists (the
//! syscall's name is left out), and only the first `metrics_max_locations` spawn locations get a label of
//! their own; the rest count under `location="other"`.

use crate::config::Config;
use crate::exporter::{Exposition, Hist, StallSeries, WorkerSeries};
use crate::shared::sample::RuntimeSample;
use crate::shared::tables::TASK_BUCKETS;
use loopscope_wire::proto::Tick;
use loopscope_wire::{Classification, LogHistogram, StallEvent, StallKind, StallPhase};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// Buckets of the stall-duration histogram: as the dashboard's, the last starts at 2^36 ns (about 69 s),
/// so stalls of seconds have buckets of their own.
const STALL_BUCKETS: usize = 28;

/// The label of stalls at spawn locations past the cap.
pub(crate) const OTHER: &str = "other";

/// What the Prometheus view keeps between ticks, on the agent thread.
#[derive(Debug)]
pub(crate) struct MetricsModel {
    max_locations: usize,
    threshold_ns: u64,
    /// Locations with a label of their own.
    labelled: HashSet<String>,
    stalls: BTreeMap<StallSeries, u64>,
    stall_hist: LogHistogram,
    stall_sum: Duration,
    /// Each worker's busy time and the uptime at the previous tick, for the busy ratio.
    prev_busy: HashMap<u32, (u64, u64)>,
    latest: Exposition,
}

impl MetricsModel {
    pub(crate) fn new(config: &Config, runtime_id: u64) -> MetricsModel {
        MetricsModel {
            max_locations: config.metrics_max_locations,
            threshold_ns: u64::try_from(config.stall_threshold.as_nanos()).unwrap_or(u64::MAX),
            labelled: HashSet::new(),
            stalls: BTreeMap::new(),
            stall_hist: LogHistogram::new(STALL_BUCKETS),
            stall_sum: Duration::ZERO,
            prev_busy: HashMap::new(),
            latest: Exposition {
                runtime_id,
                runtime_name: config.name.clone().unwrap_or_default(),
                // Every histogram has its buckets (`+Inf` included) from the first scrape on, before the
                // runtime's first tick: a histogram without `+Inf` is not valid OpenMetrics.
                stall_duration: Hist::from_log(&LogHistogram::new(STALL_BUCKETS), Duration::ZERO),
                poll_duration: Hist::from_log(&LogHistogram::new(TASK_BUCKETS), Duration::ZERO),
                ..Exposition::default()
            },
        }
    }

    /// The exposition as it stands: before the first tick, the agent's identity and empty histograms.
    pub(crate) fn exposition(&self) -> Exposition {
        self.latest.clone()
    }

    /// Counts a stall when it ends. Every event of every stall comes here, rate-limited or not.
    pub(crate) fn stall(&mut self, ev: &StallEvent) {
        // loopscope's own tasks (the lag probes) are never counted as the app's stalls.
        if ev.phase != StallPhase::Ended || ev.agent_task.is_some() {
            return;
        }
        let location = match &ev.location {
            None => "unknown".to_string(),
            Some(l) => {
                let l = l.to_string();
                if self.labelled.contains(&l) {
                    l
                } else if self.labelled.len() < self.max_locations {
                    self.labelled.insert(l.clone());
                    l
                } else {
                    OTHER.to_string()
                }
            }
        };
        let classification = ev.culprit.as_ref().map_or("unknown", |c| classification_label(&c.classification));
        *self.stalls.entry(StallSeries { kind: kind_label(ev.kind), classification, location }).or_default() += 1;
        self.stall_hist.record(ev.elapsed);
        self.stall_sum = self.stall_sum.saturating_add(ev.elapsed);
    }

    /// The exposition after a tick. `flavor` is the runtime's, once known; `stream_dropped_frames` the
    /// frames the stream server dropped for clients that fell behind.
    pub(crate) fn tick(
        &mut self,
        tick: &Tick,
        sample: Option<&RuntimeSample>,
        flavor: Option<&str>,
        stream_dropped_frames: u64,
    ) -> Exposition {
        let e = &mut self.latest;
        if let Some(f) = flavor {
            f.clone_into(&mut e.flavor);
        }
        e.stalls = self.stalls.iter().map(|(k, v)| (k.clone(), *v)).collect();
        e.stall_duration = Hist::from_log(&self.stall_hist, self.stall_sum);
        e.poll_duration = Hist::from_log(&tick.poll_histogram, tick.totals.total_poll_duration);
        e.polls_total = tick.totals.poll_count;
        e.stalled_workers = tick
            .workers
            .iter()
            .filter(|w| w.current_poll.as_ref().is_some_and(|p| p.elapsed_nanos >= self.threshold_ns))
            .count() as u64;
        e.workers = tick
            .workers
            .iter()
            .map(|w| {
                let busy_ratio = match self.prev_busy.insert(w.index, (w.busy_nanos, tick.uptime_nanos)) {
                    Some((busy, at)) if tick.uptime_nanos > at => {
                        (w.busy_nanos.saturating_sub(busy) as f64 / (tick.uptime_nanos - at) as f64).clamp(0.0, 1.0)
                    }
                    _ => 0.0,
                };
                WorkerSeries {
                    index: w.index,
                    busy_seconds_total: Duration::from_nanos(w.busy_nanos).as_secs_f64(),
                    busy_ratio,
                    local_queue_depth: w.local_queue_depth,
                }
            })
            .collect();
        e.global_queue_depth = tick.global.global_queue_depth;
        e.blocking_queue_depth = tick.global.blocking_queue_depth;
        if let Some(s) = sample {
            e.scheduling_delay = vec![
                ("first_poll", Hist::from_log(&s.first_poll_delay.histogram, s.first_poll_delay.sum)),
                ("timer", Hist::from_log(&s.timer_lateness.histogram, s.timer_lateness.sum)),
            ];
        }
        let d = &tick.dropped;
        e.dropped = vec![
            ("untracked_tasks", d.untracked_tasks),
            ("untracked_locations", d.untracked_locations),
            ("stall_events", d.events),
            ("watchdog_messages", d.watchdog_messages),
            ("stall_details", d.stall_details),
            ("stream_frames", stream_dropped_frames),
        ];
        e.clone()
    }
}

fn kind_label(k: StallKind) -> &'static str {
    match k {
        StallKind::WorkerBlocked => "worker_blocked",
        StallKind::BlockInPlace => "block_in_place",
        StallKind::BlockOn => "block_on",
    }
}

/// The classification without its details (a syscall's name, a lock's kind), so the label has six values.
fn classification_label(c: &Classification) -> &'static str {
    match c {
        Classification::CpuBound => "cpu_bound",
        Classification::Syscall { .. } => "syscall",
        Classification::LockWait { .. } => "lock_wait",
        Classification::PageFault => "page_fault",
        Classification::Unknown => "unknown",
        Classification::Preempted => "preempted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(file: &str) -> StallEvent {
        let mut ev = loopscope_wire::example_stall(1, 2, 1);
        ev.phase = StallPhase::Ended;
        ev.agent_task = None;
        ev.location = Some(loopscope_wire::Location::new(file, 1, 1));
        ev
    }

    #[test]
    fn locations_past_the_cap_count_as_other() {
        let config = Config { metrics_max_locations: 2, ..Config::default() };
        let mut m = MetricsModel::new(&config, 1);
        for file in ["a.rs", "b.rs", "c.rs", "d.rs", "a.rs"] {
            m.stall(&ended(file));
        }
        let mut started = ended("e.rs");
        started.phase = StallPhase::Started;
        m.stall(&started);
        let e = m.tick(&Tick::default(), None, Some("multi_thread"), 0);
        let by_location: BTreeMap<&str, u64> = e.stalls.iter().map(|(s, n)| (s.location.as_str(), *n)).collect();
        assert_eq!(by_location, BTreeMap::from([("a.rs:1:1", 2), ("b.rs:1:1", 1), (OTHER, 2)]));
        assert_eq!(e.stall_duration.count, 5);
        assert_eq!(e.flavor, "multi_thread");
    }
}
