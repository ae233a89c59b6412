//! The state every stage reads, built once per agent by the installer and handed down to each stage as an
//! `Arc<Shared>`; nothing in this folder imports a stage.
//!
//! It holds what the hooks write on the hot path ([`slots`]: one slot per thread; [`tables`]: the task and
//! location tables), the counters the watchdog and the agent thread keep, what the agent thread retires
//! ([`retired`]), the latest runtime sample ([`sample`]), what the stream shares with the server's threads
//! ([`stream`]), and the outputs built at install (the server, the recording, the CI records). Who starts
//! and stops the threads that read it: `lifecycle.rs`.

pub(crate) mod retired;
pub(crate) mod sample;
pub(crate) mod slots;
pub(crate) mod stalls;
pub(crate) mod stream;
pub(crate) mod tables;

use crate::config::Config;
use crate::exporter::http::MetricsServer;
use crate::server::Server;
use crate::sync::lock;
use loopscope_wire::StallEvent;
use loopscope_wire::ci_record::CheckWriter;
use retired::AggState;
use sample::RuntimeSample;
use slots::SlotRegistry;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stream::{FeedShared, FileRecorder};
use tables::{FinishedQueue, FinishedRing, LocationTable, TaskTable};

static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Set on loopscope's own threads: tasks they spawn (the sentinel) are not the app's and are not counted.
    pub(crate) static AGENT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// One stall-event subscriber.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) tx: SyncSender<StallEvent>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// Cached facts about the runtime, refreshed by the agent thread (the hooks can't hold a `Handle`).
#[derive(Debug, Default, Clone)]
pub(crate) struct RuntimeFacts {
    pub(crate) flavor: Option<String>,
    pub(crate) workers: Option<usize>,
    /// The OS thread currently running each worker index.
    pub(crate) worker_threads: Vec<Option<std::thread::ThreadId>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) clock: quanta::Clock,
    pub(crate) installed_at: Instant,
    pub(crate) slow_ns: u64,
    pub(crate) stall_ns: u64,
    /// Polls that end past this get the thread's own closing reading (`slots::FIRST_READING_DIVISOR`).
    pub(crate) closing_ns: u64,
    /// `closing_ns` in the clock's raw units: a poll that starts this long after its thread's newest own
    /// reading takes a new one (`begin_poll`), compared without converting the clock on every poll.
    pub(crate) own_reading_every_raw: u64,
    pub(crate) tasks: TaskTable,
    pub(crate) locations: LocationTable,
    pub(crate) slots: SlotRegistry,
    /// Indexes of `SEEN` entries the terminate hook finished; drained by the agent thread.
    pub(crate) finished: FinishedQueue,
    /// The final figures of the latest tasks whose hooks retired their entries; drained by the agent thread
    /// into its list of finished tasks.
    pub(crate) finished_ring: FinishedRing,
    /// The first poll happened and the background threads were started.
    pub(crate) started: AtomicBool,
    /// The runtime was dropped (or the agent is shutting down): background threads exit.
    pub(crate) stopping: AtomicBool,
    /// The agent thread has processed everything and exited.
    pub(crate) drained: AtomicBool,
    pub(crate) next_stall_id: AtomicU64,
    pub(crate) stall_count: AtomicU64,
    pub(crate) block_in_place_count: AtomicU64,
    pub(crate) stall_reports: AtomicU64,
    pub(crate) suppressed_reports: AtomicU64,
    pub(crate) dropped_events: AtomicU64,
    pub(crate) dropped_watchdog: AtomicU64,
    pub(crate) stalls_without_details: AtomicU64,
    /// Task id of the sentinel task, excluded from task tables.
    pub(crate) sentinel_task: AtomicU64,
    /// Task ids of the lag probes (the timer probe, and the latest first-poll probe): loopscope's own tasks,
    /// whose stalls are never the app's.
    pub(crate) timer_probe_task: AtomicU64,
    pub(crate) first_poll_probe_task: AtomicU64,
    /// Looks at a stalled thread thrown away because the poll ended while they were taken.
    pub(crate) discarded_looks: AtomicU64,
    /// Stable mode: workers found busy past the threshold and examined, and those not shown to be held by one
    /// poll (`Agent::busy_snapshot`).
    pub(crate) busy_candidates: AtomicU64,
    pub(crate) busy_rejected: AtomicU64,
    /// The watchdog thread's scheduling priority, as obtained.
    pub(crate) watchdog_priority: std::sync::OnceLock<String>,
    /// Set while the watchdog sleeps a whole threshold because no poll was in flight; the next poll wakes
    /// it, so that the poll's first scheduler reading comes early. Every poll reads it, and the watchdog
    /// writes it up to a few hundred times a second: a cache line of its own keeps those writes off the
    /// lines the hooks read.
    pub(crate) watchdog_asleep: Padded<AtomicBool>,
    /// Set each time the watchdog goes into that sleep; the lag probes take it. In stable mode the probes' own
    /// wake-ups of a worker wake the watchdog too (the unpark hook can't tell them from the app's), so the
    /// watchdog is seldom asleep at the moment a probe asks; "it slept since you last asked" tells an idle app
    /// all the same. Only the watchdog and the agent thread touch it.
    pub(crate) watchdog_slept: AtomicBool,
    /// The watchdog thread, to wake it.
    pub(crate) watchdog_thread: std::sync::OnceLock<std::thread::Thread>,
    pub(crate) subscribers: Mutex<Vec<Subscriber>>,
    /// The latest state of recent stalls, for `Agent::stalls` and new clients' full state.
    pub(crate) recent_stalls: Mutex<stalls::StallStore>,
    pub(crate) facts: Mutex<RuntimeFacts>,
    pub(crate) agg: Mutex<AggState>,
    pub(crate) threads: Mutex<Vec<std::thread::Thread>>,
    /// The latest runtime sample (tokio metrics and lag probes), refreshed every sample interval.
    pub(crate) runtime_sample: Mutex<Option<RuntimeSample>>,
    /// The stream server, when serving.
    pub(crate) server: OnceLock<Server>,
    /// The `/metrics` responder, when serving metrics (`LOOPSCOPE_METRICS_ADDR`).
    pub(crate) metrics: OnceLock<MetricsServer>,
    /// The tokio-console API server, when serving it (`LOOPSCOPE_CONSOLE_ADDR`).
    #[cfg(feature = "console")]
    pub(crate) console: OnceLock<crate::console::server::ConsoleServer>,
    /// Why the configured default address could not be served.
    pub(crate) serve_error: std::sync::OnceLock<String>,
    /// The agent-side recording, until the agent thread takes it.
    pub(crate) recorder: Mutex<Option<FileRecorder>>,
    /// CI records, until the agent thread takes them.
    pub(crate) check: Mutex<Option<CheckWriter>>,
    /// Writes the CI records' last line (the agent's totals, from a snapshot) when the runtime never polled
    /// a task, so the agent thread never ran to write it. The installer hands it down, so that this state
    /// never imports the stages that read it.
    finish_check: fn(&Shared, &mut CheckWriter),
    /// What the stream feed shares with the server's full-state builder.
    pub(crate) feed: Arc<FeedShared>,
}

/// A value alone on its cache line (two, for the adjacent-line prefetcher).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many stalls [`Agent::stalls`](crate::Agent::stalls) remembers.
pub(crate) const RECENT_STALLS: usize = 256;

impl Shared {
    /// The state of a new agent; `finish_check` writes the last CI record (see the field).
    pub(crate) fn new(config: Config, finish_check: fn(&Shared, &mut CheckWriter)) -> Arc<Self> {
        let clock = crate::os::clock();
        let slow_ns = u64::try_from(config.slow_poll_threshold.as_nanos()).unwrap_or(u64::MAX);
        let stall_ns = u64::try_from(config.stall_threshold.as_nanos()).unwrap_or(u64::MAX);
        let own_reading_every_raw = raw_ticks_for(&clock, stall_ns / slots::FIRST_READING_DIVISOR);
        let tasks = TaskTable::new(config.max_tasks, config.schedule_latency);
        let finished = FinishedQueue::new(tasks.capacity());
        Arc::new(Shared {
            id: NEXT_AGENT_ID.fetch_add(1, Relaxed),
            locations: LocationTable::new(config.max_locations),
            tasks,
            finished,
            finished_ring: FinishedRing::new(config.retain_finished, config.schedule_latency),
            clock,
            installed_at: Instant::now(),
            slow_ns,
            stall_ns,
            closing_ns: stall_ns / slots::FIRST_READING_DIVISOR,
            own_reading_every_raw,
            slots: SlotRegistry::default(),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            next_stall_id: AtomicU64::new(1),
            stall_count: AtomicU64::new(0),
            block_in_place_count: AtomicU64::new(0),
            stall_reports: AtomicU64::new(0),
            suppressed_reports: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
            dropped_watchdog: AtomicU64::new(0),
            stalls_without_details: AtomicU64::new(0),
            sentinel_task: AtomicU64::new(0),
            timer_probe_task: AtomicU64::new(0),
            first_poll_probe_task: AtomicU64::new(0),
            discarded_looks: AtomicU64::new(0),
            busy_candidates: AtomicU64::new(0),
            busy_rejected: AtomicU64::new(0),
            watchdog_priority: std::sync::OnceLock::new(),
            watchdog_asleep: Padded(AtomicBool::new(false)),
            watchdog_slept: AtomicBool::new(false),
            watchdog_thread: std::sync::OnceLock::new(),
            subscribers: Mutex::new(Vec::new()),
            recent_stalls: Mutex::new(stalls::StallStore::new(RECENT_STALLS)),
            facts: Mutex::new(RuntimeFacts::default()),
            agg: Mutex::new(AggState::default()),
            threads: Mutex::new(Vec::new()),
            runtime_sample: Mutex::new(None),
            server: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
            #[cfg(feature = "console")]
            console: std::sync::OnceLock::new(),
            serve_error: std::sync::OnceLock::new(),
            recorder: Mutex::new(None),
            check: Mutex::new(None),
            finish_check,
            feed: Arc::new(FeedShared::default()),
            config,
        })
    }

    /// Names the task if it is one of loopscope's own (ids are never 0).
    pub(crate) fn agent_task_name(&self, task_id: u64) -> Option<&'static str> {
        if task_id == 0 {
            None
        } else if task_id == self.timer_probe_task.load(Relaxed) {
            Some("timer-lateness probe")
        } else if task_id == self.first_poll_probe_task.load(Relaxed) {
            Some("first-poll delay probe")
        } else if task_id == self.sentinel_task.load(Relaxed) {
            Some("shutdown sentinel")
        } else {
            None
        }
    }

    /// Whether the app looks idle to the lag probes, which then check rarely (and don't wake it to check):
    /// the watchdog sleeps waiting for a poll, or (stable mode, see `watchdog_slept`) slept since the last ask
    /// when `take` is set, or since the last take otherwise.
    pub(crate) fn app_idle(&self, take: bool) -> bool {
        if self.watchdog_asleep.load(Relaxed) {
            return true;
        }
        if self.config.mode.effective() != crate::config::Mode::Stable {
            return false;
        }
        if take { self.watchdog_slept.swap(false, Relaxed) } else { self.watchdog_slept.load(Relaxed) }
    }

    /// Wakes the watchdog if it sleeps through an idle pause: stable mode's unpark hook, as a worker's busy span
    /// begins (a timed poll calls [`wake_watchdog`](Self::wake_watchdog) instead).
    #[cold]
    #[inline(never)]
    pub(crate) fn wake_sleeping_watchdog(&self) {
        if self.watchdog_asleep.swap(false, Relaxed)
            && let Some(t) = self.watchdog_thread.get()
        {
            t.unpark();
        }
    }

    /// Wakes the watchdog from its idle sleep: the first poll of an app task after a pause calls this (one swap
    /// and one futex wake per pause; every other poll only reads the flag).
    #[cold]
    #[inline(never)]
    pub(crate) fn wake_watchdog(&self, task_id: u64) {
        // loopscope's own lag probes poll for microseconds, 50 times a second: not worth waking for, and an
        // idle app would pay for it.
        if self.agent_task_name(task_id).is_some() {
            return;
        }
        // (The poll's own opening reading was taken in `begin_poll`: after a pause its thread's newest is old.)
        self.wake_sleeping_watchdog();
    }

    /// Takes the polling thread's own reading at the start of the poll in flight, for app task `task_id`: its
    /// newest is older than a quarter of the threshold (see `begin_poll`).
    #[cold]
    #[inline(never)]
    pub(crate) fn refresh_own_reading(&self, slot: &slots::WorkerSlot, task_id: u64) {
        // loopscope's own lag probes are not worth it: an idle app would pay for their polls.
        if self.agent_task_name(task_id).is_none() {
            slot.record_own_opening(&self.clock);
        }
    }

    /// Asks the background threads to exit and wakes them.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Release);
        for t in lock(&self.threads).iter() {
            t.unpark();
        }
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.installed_at.elapsed()
    }

    /// Delivers an event to every subscriber without ever blocking: a full subscriber loses the event and
    /// the loss is counted; a disconnected one is removed.
    pub(crate) fn publish(&self, ev: &StallEvent) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|s| match s.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.dropped.fetch_add(1, Relaxed);
                self.dropped_events.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

impl Drop for Shared {
    /// A runtime that never polled a task never started the agent thread, which finishes the CI records;
    /// finish them here so `loopscope check` sees a clean end rather than a crash.
    fn drop(&mut self) {
        if let Some(mut w) = lock(&self.check).take() {
            (self.finish_check)(self, &mut w);
        }
    }
}

/// The smallest raw clock delta that `clock` converts to at least `ns` nanoseconds (the conversion is linear and
/// monotonic, so a binary search finds it).
fn raw_ticks_for(clock: &quanta::Clock, ns: u64) -> u64 {
    let (mut lo, mut hi) = (0u64, 1u64 << 62);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if clock.delta_as_nanos(0, mid) >= ns { hi = mid } else { lo = mid + 1 }
    }
    lo
}
