//! Runtime sampling, every `sample_interval` (250 ms by default), on the agent thread:
//!
//! * per worker, tokio's own cumulative counters (busy time, polls, steals, parks, noops, overflows, local
//!   queue depth, mean poll time), read directly from `RuntimeMetrics`;
//! * globally, the gauges and interval counters of tokio-metrics' [`RuntimeMonitor`](tokio_metrics::RuntimeMonitor)
//!   (global and blocking queue depths, live tasks, blocking threads, budget-forced yields, I/O driver ready
//!   events, remote schedules), accumulated into cumulative totals because the stream carries cumulative
//!   values;
//! * two **event-loop lag** probes that work on any runtime, as Node's `monitorEventLoopDelay` does:
//!   - *first-poll delay*: a tiny task handed to the runtime from outside (this thread), and how long it waits
//!     for its first poll;
//!   - *timer lateness*: a task that sleeps 20 ms at a time, and how late each wake-up is.
//!
//! The probe tasks are spawned from this thread, so the hooks don't count them as the app's tasks; they add
//! about 55 polls per second to the worker totals.

use crate::shared::Shared;
use crate::shared::sample::{GlobalSample, LAG_WINDOW, LagSample, RuntimeSample, WorkerSample};
use crossbeam_queue::ArrayQueue;
use loopscope_wire::LogHistogram;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// How often the timer-lateness probe wakes.
pub(crate) const TIMER_PERIOD: Duration = Duration::from_millis(20);

/// How often it wakes while the app is idle.
const IDLE_TIMER_PERIOD: Duration = Duration::from_secs(1);
/// Collects one lag probe's values: a cumulative histogram for the stream and a ring of per-tick
/// hdrhistograms for precise recent quantiles.
#[derive(Debug)]
struct LagStats {
    cumulative: LogHistogram,
    count: u64,
    /// The sum of every value, for the Prometheus histogram's `_sum`.
    sum: Duration,
    max: Duration,
    ring: VecDeque<hdrhistogram::Histogram<u64>>,
    ring_len: usize,
}

impl LagStats {
    fn new(ring_len: usize) -> Self {
        LagStats {
            cumulative: LogHistogram::new(24),
            count: 0,
            sum: Duration::ZERO,
            max: Duration::ZERO,
            ring: VecDeque::new(),
            ring_len: ring_len.max(1),
        }
    }

    fn hdr() -> Option<hdrhistogram::Histogram<u64>> {
        // Nanoseconds from 1 µs to 60 s at 2 significant digits: a few KiB each.
        hdrhistogram::Histogram::new_with_bounds(1_000, 60_000_000_000, 2).ok()
    }

    /// Starts a new tick's bucket of the ring.
    fn rotate(&mut self) {
        if self.ring.len() >= self.ring_len {
            self.ring.pop_front();
        }
        if let Some(h) = Self::hdr() {
            self.ring.push_back(h);
        }
    }

    fn record(&mut self, ns: u64) {
        let d = Duration::from_nanos(ns);
        self.cumulative.record(d);
        self.count += 1;
        self.sum = self.sum.saturating_add(d);
        self.max = self.max.max(d);
        if let Some(h) = self.ring.back_mut() {
            h.saturating_record(ns.clamp(1_000, 60_000_000_000));
        }
    }

    fn sample(&self, pending: Option<Duration>) -> LagSample {
        let mut merged = Self::hdr();
        if let Some(m) = &mut merged {
            for h in &self.ring {
                let _ = m.add(h);
            }
        }
        let q =
            |q: f64| merged.as_ref().filter(|m| !m.is_empty()).map(|m| Duration::from_nanos(m.value_at_quantile(q)));
        LagSample {
            histogram: self.cumulative.clone(),
            count: self.count,
            sum: self.sum,
            max: self.max,
            p50: q(0.5),
            p99: q(0.99),
            window_max: merged.as_ref().filter(|m| !m.is_empty()).map(|m| Duration::from_nanos(m.max())),
            pending,
        }
    }
}

/// Samples one runtime. Lives on the agent thread.
pub(crate) struct Sampler {
    handle: Handle,
    intervals: Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>,
    global: GlobalSample,
    first_poll: LagStats,
    timer: LagStats,
    /// First-poll probe measurements (ns), pushed by the probe tasks.
    first_poll_q: Arc<ArrayQueue<u64>>,
    /// Timer lateness measurements (ns), pushed by the timer task.
    timer_q: Arc<ArrayQueue<u64>>,
    /// The first-poll probe in flight: when it was spawned, and whether it has run.
    outstanding: Option<(Instant, Arc<std::sync::atomic::AtomicBool>)>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("global", &self.global).finish_non_exhaustive()
    }
}

impl Sampler {
    /// Creates the sampler and starts the timer-lateness task on the runtime.
    pub(crate) fn new(handle: Handle, shared: &Arc<Shared>) -> Self {
        let ring_len = (LAG_WINDOW.as_millis() / shared.config.sample_interval.as_millis().max(1)) as usize;
        let intervals = Box::new(tokio_metrics::RuntimeMonitor::new(&handle).intervals());
        let mut s = Sampler {
            handle,
            intervals,
            global: GlobalSample::default(),
            first_poll: LagStats::new(ring_len),
            timer: LagStats::new(ring_len),
            first_poll_q: Arc::new(ArrayQueue::new(1024)),
            timer_q: Arc::new(ArrayQueue::new(4096)),
            outstanding: None,
        };
        s.first_poll.rotate();
        s.timer.rotate();
        s.start_timer_probe(shared);
        s
    }

    fn start_timer_probe(&self, shared: &Arc<Shared>) {
        let q = self.timer_q.clone();
        let shared = shared.clone();
        let marks = shared.clone();
        let j = self.handle.spawn(async move {
            while !shared.stopping.load(Relaxed) {
                // While the app is idle (the watchdog saw no poll in flight and sleeps until one starts), a
                // wake-up every 20 ms would be most of loopscope's idle cost in the app's own threads: check
                // once a second instead. The app's next poll wakes the watchdog, and the next check is back at
                // 20 ms.
                let period = if shared.app_idle(true) { IDLE_TIMER_PERIOD } else { TIMER_PERIOD };
                let deadline = tokio::time::Instant::now() + period;
                tokio::time::sleep_until(deadline).await;
                let late = tokio::time::Instant::now().saturating_duration_since(deadline);
                // Full queue: the agent thread is behind; dropping a lag sample loses nothing that matters.
                let _ = q.push(u64::try_from(late.as_nanos()).unwrap_or(u64::MAX));
            }
        });
        marks.timer_probe_task.store(crate::taskid::task_id(j.id()), Relaxed);
    }

    /// Hands a tiny task to the runtime from outside, unless the previous one hasn't run yet.
    fn launch_first_poll_probe(&mut self, shared: &Shared) {
        if let Some((_, done)) = &self.outstanding
            && !done.load(Acquire)
        {
            return;
        }
        // An idle app (see the timer probe) isn't woken to measure a delay nothing is waiting through.
        if shared.app_idle(false) {
            return;
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let q = self.first_poll_q.clone();
        let t0 = Instant::now();
        let j = self.handle.spawn(async move {
            let _ = q.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            d.store(true, Release);
        });
        shared.first_poll_probe_task.store(crate::taskid::task_id(j.id()), Relaxed);
        self.outstanding = Some((t0, done));
    }

    /// Reads everything. Call once per sample interval.
    pub(crate) fn sample(&mut self, shared: &Shared) -> RuntimeSample {
        let m = self.handle.metrics();
        let workers = (0..m.num_workers())
            .map(|i| {
                #[cfg_attr(not(tokio_unstable), allow(unused_mut))]
                let mut w = WorkerSample {
                    index: i,
                    busy: m.worker_total_busy_duration(i),
                    parks: m.worker_park_count(i),
                    ..WorkerSample::default()
                };
                #[cfg(tokio_unstable)]
                {
                    w.thread_id = m.worker_thread_id(i);
                    w.polls = m.worker_poll_count(i);
                    w.noops = m.worker_noop_count(i);
                    w.steals = m.worker_steal_count(i);
                    w.overflows = m.worker_overflow_count(i);
                    w.local_schedules = m.worker_local_schedule_count(i);
                    w.local_queue_depth = m.worker_local_queue_depth(i);
                    w.mean_poll = m.worker_mean_poll_time(i);
                }
                w
            })
            .collect();

        let g = &mut self.global;
        g.workers = m.num_workers();
        g.alive_tasks = m.num_alive_tasks();
        g.global_queue_depth = m.global_queue_depth();
        // tokio-metrics offers these only under `--cfg tokio_unstable`; without it the stream carries zeros.
        #[cfg_attr(not(tokio_unstable), allow(unused_variables))]
        if let Some(iv) = self.intervals.next() {
            #[cfg(tokio_unstable)]
            {
                g.budget_forced_yields += iv.budget_forced_yield_count;
                g.io_ready_events += iv.io_driver_ready_count;
                g.remote_schedules += iv.num_remote_schedules;
                g.blocking_threads = iv.blocking_threads_count;
                g.idle_blocking_threads = iv.idle_blocking_threads_count;
                g.blocking_queue_depth = iv.blocking_queue_depth;
            }
        }
        #[cfg(tokio_unstable)]
        {
            g.spawned_tasks = m.spawned_tasks_count();
        }

        while let Some(ns) = self.first_poll_q.pop() {
            self.first_poll.record(ns);
        }
        while let Some(ns) = self.timer_q.pop() {
            self.timer.record(ns);
        }
        let pending = match &self.outstanding {
            Some((t0, done)) if !done.load(Acquire) => Some(t0.elapsed()),
            _ => None,
        };
        // A timer that should have fired long ago is lag too, even though it has not reported yet.
        let sample = RuntimeSample {
            workers,
            global: self.global.clone(),
            first_poll_delay: self.first_poll.sample(pending),
            timer_lateness: self.timer.sample(None),
        };
        self.first_poll.rotate();
        self.timer.rotate();
        self.launch_first_poll_probe(shared);
        sample
    }
}
