//! The facade the agent uses: never fails, degrades, and says which probes work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::classify::{Verdict, classify};
use crate::perf::{Counter, CounterState, CounterValues, PerfCounters, PerfError};
use crate::stack::{CaptureError, Frame, RawStack, SamplerConfig, StackSampler, Symbolizer};
use crate::thread::{self, CpuClockSource, ThreadSample};
use crate::{ProbeError, Tid};

/// Which probes [`Probes::new`] should try to enable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Install the stack sampler (a signal handler) and the symbolizer.
    pub stacks: bool,
    /// Open perf counters for prepared threads.
    pub perf: bool,
    /// Stack sampler configuration.
    pub sampler: SamplerConfig,
    /// Kept for compatibility and ignored: the symbolizer reads debug information on demand, per compilation
    /// unit, so there is nothing to load ahead of time (see [`Probes::warm_symbolizer`]).
    pub warm_symbolizer: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig { stacks: true, perf: true, sampler: SamplerConfig::default(), warm_symbolizer: true }
    }
}

/// Whether one probe works, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// `"stack"`, `"stack-running"`, `"symbolizer"`, `"thread-state"`, `"syscall"`, `"cpu-time"`, `"irq-time"`, `"perf:task-clock"`,
    /// `"perf:page-faults"`, `"perf:context-switches"`, `"perf:cycles"`, `"perf:instructions"`.
    pub name: String,
    /// Whether the probe is usable.
    pub active: bool,
    /// One line, e.g. `"no PMU (ENOENT 2): hardware counters are unavailable ..."`.
    pub detail: String,
}

impl ProbeStatus {
    fn new(name: impl Into<String>, active: bool, detail: impl Into<String>) -> Self {
        ProbeStatus { name: name.into(), active, detail: detail.into() }
    }
}

/// What a thread was doing at one moment: the result of [`Probes::snapshot`]. Each part that could not be
/// obtained carries its error.
#[derive(Debug)]
pub struct StallSnapshot {
    /// The thread.
    pub tid: Tid,
    /// When the snapshot started.
    pub at: Instant,
    /// Thread state, syscall, CPU time, switches, faults (taken first, before the stack signal perturbs it).
    pub sample: Result<ThreadSample, ProbeError>,
    /// Perf counter values (`None` if perf is disabled or no counters are open for the thread).
    pub perf: Option<Result<CounterValues, PerfError>>,
    /// The raw stack (`None` if no stack was requested or the stack probe is inactive).
    pub stack: Option<Result<RawStack, CaptureError>>,
}

/// The interpretation of a stall: [`Probes::diagnose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// The thread.
    pub tid: Tid,
    /// Its name, if it still exists.
    pub thread_name: Option<String>,
    /// The symbolized stack of the latest snapshot that has one (empty if none).
    pub frames: Vec<Frame>,
    /// The verdict, if both snapshots have a thread sample.
    pub verdict: Option<Verdict>,
    /// Perf counter deltas between the two snapshots.
    pub perf_delta: Option<CounterValues>,
}

/// All probes behind one facade. Construction never fails; [`status`](Self::status) reports what works.
///
/// Typical use by the agent's watchdog:
///
/// ```
/// use std::time::Duration;
/// use loopscope_probes::{Probes, ProbeConfig, current_tid};
///
/// let probes = Probes::new(ProbeConfig::default());
/// // When a worker thread is first seen:
/// let tid = current_tid();
/// let _ = probes.prepare_thread(tid);
/// // When a poll on it is flagged as stalled, and again later:
/// let first = probes.snapshot(tid, Some(Duration::from_millis(500)));
/// let last = probes.snapshot(tid, Some(Duration::from_millis(500)));
/// let diagnosis = probes.diagnose(&first, &last);
/// # #[cfg(target_os = "linux")]
/// assert!(diagnosis.verdict.is_some());
/// // When the thread exits:
/// probes.forget_thread(tid);
/// ```
#[derive(Debug)]
pub struct Probes {
    config: ProbeConfig,
    sampler: Option<Arc<StackSampler>>,
    statuses: Vec<ProbeStatus>,
    perf_usable: bool,
    symbolizer: Mutex<Symbolizer>,
    counters: Mutex<HashMap<Tid, PerfCounters>>,
    /// Prepared threads: how many callers prepared each (the probes are process-wide and every agent prepares
    /// its own workers), and the thread's start time, which tells a reused tid from the thread that had it.
    prepared: Mutex<HashMap<Tid, Prepared>>,
    /// When [`Probes::sweep`] last ran from `prepare_thread` (rate limit while the stack table is nearly full).
    last_sweep: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone, Copy)]
struct Prepared {
    refs: usize,
    start_time: Option<u64>,
}

/// `prepare_thread` sweeps exited threads once this many stack slots are taken (of 1,024), at most once a second.
const SWEEP_WHEN_PREPARED: usize = 768;
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The start time of thread `tid` (field 22 of `/proc/self/task/<tid>/stat`, in clock ticks since boot), or
/// `None` if the thread does not exist (any more). Together with the tid it names one thread for good: a tid
/// reused by a new thread comes with a new start time.
fn thread_start_time(tid: Tid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The name field may contain spaces and parentheses: the fields after it start after the last ')'. The
    // first of them is field 3 (state), so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Probes {
    /// Probes what works on this machine and enables it. Never fails.
    pub fn new(config: ProbeConfig) -> Probes {
        let mut statuses = Vec::new();
        let me = crate::current_tid();

        // Stack sampler + symbolizer.
        let symbolizer = Symbolizer::new();
        let sampler = if config.stacks {
            match StackSampler::install(config.sampler.clone()) {
                Ok(sampler) => {
                    let warm = match sampler.warm_up() {
                        Ok(d) => format!("warm-up capture {d:?}"),
                        Err(e) => format!("warm-up failed: {e}"),
                    };
                    statuses.push(ProbeStatus::new(
                        "stack",
                        true,
                        format!(
                            "signal {} (SIGRTMIN+{}), {:?} unwinder{}, {warm}",
                            sampler.signal(),
                            sampler.signal() - rtmin(),
                            sampler.unwinder(),
                            match sampler.dwarf_refused() {
                                Some(why) if sampler.config().unwinder == crate::stack::Unwinder::Dwarf => {
                                    format!(" (DWARF refused in the signal handler: {why})")
                                }
                                _ => String::new(),
                            }
                        ),
                    ));
                    statuses.push(match sampler.perf_sampling() {
                        Ok(()) => ProbeStatus::new(
                            "stack-running",
                            true,
                            "running threads are sampled with perf (user registers and stack), never signalled",
                        ),
                        Err(why) => ProbeStatus::new(
                            "stack-running",
                            false,
                            format!(
                                "running threads are signalled once they have run 50µs of their own code (a call \
                                 they enter in the microseconds before the signal can fail with EINTR); perf \
                                 sampling is unavailable: {why}"
                            ),
                        ),
                    });
                    // Nothing to load: the symbolizer reads debug info on demand, per compilation unit.
                    let mut detail =
                        "on demand: debug info is read per compilation unit when a stack needs it".to_string();
                    for hint in symbolizer.hints() {
                        detail.push_str("; ");
                        detail.push_str(&hint);
                    }
                    statuses.push(ProbeStatus::new("symbolizer", true, detail));
                    Some(sampler)
                }
                Err(e) => {
                    statuses.push(ProbeStatus::new("stack", false, error_chain(&e)));
                    statuses.push(ProbeStatus::new("stack-running", false, "stack probe inactive"));
                    statuses.push(ProbeStatus::new("symbolizer", false, "stack probe inactive"));
                    None
                }
            }
        } else {
            statuses.push(ProbeStatus::new("stack", false, "disabled by configuration"));
            statuses.push(ProbeStatus::new("stack-running", false, "disabled by configuration"));
            statuses.push(ProbeStatus::new("symbolizer", false, "disabled by configuration"));
            None
        };

        // /proc thread state and syscall.
        match thread::sample(me) {
            Ok(_) => statuses.push(ProbeStatus::new("thread-state", true, "/proc/self/task/<tid>/stat and status")),
            Err(e) => statuses.push(ProbeStatus::new("thread-state", false, error_chain(&e))),
        }
        let syscall_path = format!("/proc/self/task/{me}/syscall");
        match std::fs::read_to_string(&syscall_path) {
            Ok(_) => statuses.push(ProbeStatus::new("syscall", true, "/proc/self/task/<tid>/syscall")),
            Err(e) => statuses.push(ProbeStatus::new(
                "syscall",
                false,
                format!("{syscall_path}: {e}; blocked threads are classified from their state and stack only"),
            )),
        }
        match thread::cpu_time_with_source(me) {
            Ok((_, CpuClockSource::ThreadClock)) => {
                statuses.push(ProbeStatus::new("cpu-time", true, "clock_gettime on the thread CPU clock"))
            }
            Ok((_, CpuClockSource::Schedstat)) => statuses.push(ProbeStatus::new(
                "cpu-time",
                true,
                "thread CPU clock unavailable; using /proc/self/task/<tid>/schedstat",
            )),
            Err(e) => statuses.push(ProbeStatus::new("cpu-time", false, error_chain(&e))),
        }

        #[cfg(target_os = "linux")]
        statuses.push(match crate::kernel::irq_time_accounting() {
            Some(true) => ProbeStatus::new("irq-time", true, "interrupt time is kept out of threads' CPU time"),
            Some(false) => ProbeStatus::new(
                "irq-time",
                false,
                "this kernel charges interrupt and softirq time to the thread it interrupts \
                 (CONFIG_IRQ_TIME_ACCOUNTING is off): on a busy machine a poll's \"on CPU\" time can include \
                 milliseconds it did not run",
            ),
            None => ProbeStatus::new(
                "irq-time",
                false,
                "unknown: neither /proc/config.gz nor /boot/config-$(uname -r) is readable, so whether \
                 interrupt time counts as threads' CPU time can't be told",
            ),
        });

        // Perf counters: opened once on this thread to learn what the machine allows; the real counters are
        // opened per thread in `prepare_thread`.
        let mut perf_usable = false;
        if config.perf {
            let per_counter = match PerfCounters::open(me) {
                Ok(counters) => {
                    perf_usable = true;
                    counters.status().to_vec()
                }
                Err(PerfError::NoCounters { statuses, .. }) => statuses,
                Err(e) => Counter::ALL
                    .iter()
                    .map(|&counter| crate::perf::CounterStatus {
                        counter,
                        state: CounterState::Unavailable {
                            reason: crate::perf::Unavailable::NoKernelSupport,
                            errno: None,
                            detail: e.to_string(),
                        },
                    })
                    .collect(),
            };
            for status in per_counter {
                statuses.push(ProbeStatus::new(
                    format!("perf:{}", status.counter),
                    status.is_active(),
                    status.detail(),
                ));
            }
        } else {
            for counter in Counter::ALL {
                statuses.push(ProbeStatus::new(format!("perf:{counter}"), false, "disabled by configuration"));
            }
        }

        Probes {
            config,
            sampler,
            statuses,
            perf_usable,
            symbolizer: Mutex::new(symbolizer),
            counters: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
        }
    }

    /// One entry per probe, in a stable order. Reflects changes since construction: when the application took
    /// the stack sampler's signal back, `"stack"` is inactive with the reason.
    pub fn status(&self) -> Vec<ProbeStatus> {
        let mut statuses = self.statuses.clone();
        if let Some(why) = self.sampler.as_ref().and_then(|s| s.disabled()) {
            for s in statuses.iter_mut().filter(|s| s.name == "stack") {
                s.active = false;
                s.detail = format!("switched off: {why}");
            }
        }
        statuses
    }

    /// The configuration this facade was built with.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The stack sampler, if the stack probe is active.
    pub fn sampler(&self) -> Option<&Arc<StackSampler>> {
        self.sampler.as_ref()
    }

    /// Registers a thread the agent watches: reserves its stack slot and opens its perf counters. Reference
    /// counted: the probes are shared by every agent of the process, so each `prepare_thread` must be paired
    /// with one [`forget_thread`](Self::forget_thread), and the thread's resources are released when the last
    /// caller forgets it (or [`sweep`](Self::sweep) finds it exited). A tid that was reused by a new thread is
    /// prepared afresh (the old thread's counters are closed) rather than inheriting the dead thread's.
    ///
    /// Fails only if the thread does not exist or the stack table is full even after a sweep; perf problems are
    /// reported by [`status`](Self::status), not here.
    pub fn prepare_thread(&self, tid: Tid) -> Result<(), ProbeError> {
        let start_time = thread_start_time(tid);
        if let Some(sampler) = &self.sampler
            && sampler.prepared_threads() >= SWEEP_WHEN_PREPARED
        {
            let mut last = lock(&self.last_sweep);
            if last.is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL) {
                *last = Some(Instant::now());
                drop(last);
                self.sweep();
            }
        }
        let mut prepared = lock(&self.prepared);
        match prepared.get_mut(&tid) {
            Some(p) if p.start_time == start_time => {
                p.refs += 1;
                return Ok(());
            }
            // The tid now names another thread: drop everything the old one had.
            Some(_) => {
                prepared.remove(&tid);
                self.release(tid);
            }
            None => {}
        }
        match &self.sampler {
            Some(sampler) => match sampler.prepare_thread(tid) {
                Err(ProbeError::TableFull { .. }) => {
                    drop(prepared);
                    self.sweep();
                    prepared = lock(&self.prepared);
                    sampler.prepare_thread(tid)?;
                }
                other => other?,
            },
            None => {
                // Without the stack probe, still refuse threads that do not exist, as documented.
                let task = format!("/proc/self/task/{tid}");
                if cfg!(target_os = "linux")
                    && let Err(source) = std::fs::metadata(&task)
                {
                    return Err(ProbeError::proc_read(tid, task, source));
                }
            }
        }
        if self.perf_usable {
            let mut counters = lock(&self.counters);
            if let std::collections::hash_map::Entry::Vacant(slot) = counters.entry(tid)
                && let Ok(c) = PerfCounters::open(tid)
            {
                slot.insert(c);
            }
        }
        prepared.entry(tid).and_modify(|p| p.refs += 1).or_insert(Prepared { refs: 1, start_time });
        Ok(())
    }

    /// Drops one reference to a prepared thread (see [`prepare_thread`](Self::prepare_thread)); the last one
    /// frees its stack slot and closes its perf counters. Harmless for threads that are not prepared.
    pub fn forget_thread(&self, tid: Tid) {
        let mut prepared = lock(&self.prepared);
        match prepared.get_mut(&tid) {
            Some(p) if p.refs > 1 => p.refs -= 1,
            Some(_) => {
                prepared.remove(&tid);
                self.release(tid);
            }
            // Not prepared through the facade (e.g. captured directly, which prepares a slot): release anyway.
            None => self.release(tid),
        }
    }

    /// Forgets every thread whose `/proc/self/task/<tid>` is gone or now belongs to a newer thread (whatever
    /// its reference count): frees stack slots, including those a capture prepared implicitly, and closes perf
    /// counters. Called by [`prepare_thread`](Self::prepare_thread) when stack slots run low; callable any time
    /// (agents call it when a runtime shuts down). Returns how many threads were forgotten.
    pub fn sweep(&self) -> usize {
        let mut gone: Vec<Tid> = Vec::new();
        {
            let mut prepared = lock(&self.prepared);
            prepared.retain(|&tid, p| {
                let alive = thread_start_time(tid).is_some_and(|t| Some(t) == p.start_time);
                if !alive {
                    gone.push(tid);
                }
                alive
            });
            if let Some(sampler) = &self.sampler {
                for tid in sampler.prepared_tids() {
                    if !prepared.contains_key(&tid) && thread_start_time(tid).is_none() {
                        gone.push(tid);
                    }
                }
            }
            let counters: Vec<Tid> = lock(&self.counters).keys().copied().collect();
            gone.extend(counters.into_iter().filter(|tid| !prepared.contains_key(tid)));
        }
        gone.sort_unstable();
        gone.dedup();
        for &tid in &gone {
            self.release(tid);
        }
        gone.len()
    }

    /// The number of threads holding a stack slot (when the stack probe is active) or prepared through this
    /// facade (otherwise). Bounded by the stack table's 1,024 slots.
    pub fn prepared_threads(&self) -> usize {
        match &self.sampler {
            Some(sampler) => sampler.prepared_threads(),
            None => lock(&self.prepared).len(),
        }
    }

    fn release(&self, tid: Tid) {
        if let Some(sampler) = &self.sampler {
            sampler.forget_thread(tid);
        }
        lock(&self.counters).remove(&tid);
    }

    /// Observes thread `tid` now: thread sample first (unperturbed), then perf counters, then, if
    /// `stack_timeout` is `Some` and the stack probe is active, the stack (waiting at most `stack_timeout`).
    pub fn snapshot(&self, tid: Tid, stack_timeout: Option<Duration>) -> StallSnapshot {
        let at = Instant::now();
        let sample = thread::sample(tid);
        let perf = lock(&self.counters).get_mut(&tid).map(|c| c.read());
        let stack = match (&self.sampler, stack_timeout) {
            (Some(sampler), Some(timeout)) => Some(sampler.capture(tid, timeout)),
            _ => None,
        };
        StallSnapshot { tid, at, sample, perf, stack }
    }

    /// Symbolizes a raw stack with the facade's shared, cached symbolizer. Waits if another thread is using
    /// it. The first stack in a compilation unit parses that unit (milliseconds); cached addresses take
    /// microseconds.
    pub fn symbolize(&self, stack: &RawStack) -> Vec<Frame> {
        lock(&self.symbolizer).symbolize(stack)
    }

    /// Like [`symbolize`](Self::symbolize), but returns `None` instead of waiting when the symbolizer is busy,
    /// so a caller with a deadline (a stall report that must go out while the stall is still running) can
    /// send what it has and add the symbols later.
    pub fn try_symbolize(&self, stack: &RawStack) -> Option<Vec<Frame>> {
        match self.symbolizer.try_lock() {
            Ok(mut s) => Some(s.symbolize(stack)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner().symbolize(stack)),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Kept for callers of the former eager symbolizer: debug information is read on demand, per compilation
    /// unit, at the first symbolization that needs it, so this does nothing and returns at once (the time it
    /// took).
    pub fn warm_symbolizer(&self) -> Duration {
        let start = Instant::now();
        lock(&self.symbolizer).warm();
        start.elapsed()
    }

    /// Interprets a stall from two snapshots of the same thread (`first` when the stall was flagged, `last`
    /// later; they may be the same snapshot): symbolizes the newest stack and classifies.
    pub fn diagnose(&self, first: &StallSnapshot, last: &StallSnapshot) -> Diagnosis {
        let raw = [last, first].into_iter().find_map(|s| s.stack.as_ref().and_then(|r| r.as_ref().ok()));
        let frames = raw.map(|r| self.symbolize(r)).unwrap_or_default();
        let verdict = match (&first.sample, &last.sample) {
            (Ok(a), Ok(b)) => Some(classify(a, b, (!frames.is_empty()).then_some(&frames[..]))),
            (Ok(a), Err(_)) => Some(classify(a, a, (!frames.is_empty()).then_some(&frames[..]))),
            (Err(_), Ok(b)) => Some(classify(b, b, (!frames.is_empty()).then_some(&frames[..]))),
            (Err(_), Err(_)) => None,
        };
        let perf_delta = match (&first.perf, &last.perf) {
            (Some(Ok(a)), Some(Ok(b))) => Some(b.delta(a)),
            _ => None,
        };
        Diagnosis { tid: last.tid, thread_name: crate::thread_name(last.tid), frames, verdict, perf_delta }
    }
}

fn rtmin() -> i32 {
    #[cfg(target_os = "linux")]
    {
        libc::SIGRTMIN()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}
