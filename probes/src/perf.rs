//! Per-thread perf counters (`perf_event_open(2)` through the `perf-event` crate).
//!
//! Each counter is opened on its own, so that one missing counter never takes the others down:
//!
//! * software counters (task-clock, page-faults, context-switches) work almost everywhere, including VMs;
//! * hardware counters (cycles, instructions) need a PMU, which many VMs (like Firecracker guests) do not expose:
//!   the kernel answers `ENOENT`/`EOPNOTSUPP`, reported as [`Unavailable::NoPmu`];
//! * with `perf_event_paranoid >= 2`, unprivileged processes may only count user-space events. Each counter is
//!   first tried with kernel events included and, on `EACCES`/`EPERM`, again with `exclude_kernel`. Context
//!   switches happen in the kernel, so such a counter would always read 0: it is reported as
//!   [`Unavailable::KernelEventsExcluded`] instead of as a fake 0 (the `/proc` context-switch counts in
//!   [`crate::thread::ThreadSample`] remain available);
//! * a seccomp policy (Docker's default profile) or a container makes `perf_event_open` fail with `EPERM`:
//!   [`Unavailable::Denied`]; a kernel without perf support answers `ENOSYS`: [`Unavailable::NoKernelSupport`].
//!
//! ```
//! use loopscope_probes::perf::{Counter, PerfCounters};
//!
//! match PerfCounters::open(loopscope_probes::current_tid()) {
//!     Ok(mut counters) => {
//!         for status in counters.status() {
//!             println!("{}: {}", status.counter, status.detail());
//!         }
//!         let values = counters.read().expect("read");
//!         if counters.is_active(Counter::TaskClock) {
//!             assert!(values.task_clock.is_some());
//!         }
//!     }
//!     Err(e) => println!("perf unavailable: {e}"),
//! }
//! ```

use std::fmt;
use std::io;
use std::time::Duration;

use crate::Tid;

/// The counters this crate opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// CPU time of the thread (software, nanoseconds).
    TaskClock,
    /// Page faults (software).
    PageFaults,
    /// Context switches (software, counted in the kernel).
    ContextSwitches,
    /// CPU cycles (hardware).
    Cycles,
    /// Retired instructions (hardware).
    Instructions,
}

impl Counter {
    /// All counters, in reporting order.
    pub const ALL: [Counter; 5] =
        [Counter::TaskClock, Counter::PageFaults, Counter::ContextSwitches, Counter::Cycles, Counter::Instructions];

    /// The name `perf` uses (`"task-clock"`, `"page-faults"`, `"context-switches"`, `"cycles"`,
    /// `"instructions"`).
    pub fn name(self) -> &'static str {
        match self {
            Counter::TaskClock => "task-clock",
            Counter::PageFaults => "page-faults",
            Counter::ContextSwitches => "context-switches",
            Counter::Cycles => "cycles",
            Counter::Instructions => "instructions",
        }
    }

    /// Whether the counter needs a hardware PMU.
    pub fn is_hardware(self) -> bool {
        matches!(self, Counter::Cycles | Counter::Instructions)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a counter is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// No PMU for hardware events (`ENOENT`, `EOPNOTSUPP`, `ENODEV`): usual in VMs.
    NoPmu,
    /// Not allowed (`EACCES`, `EPERM`): `perf_event_paranoid`, seccomp, containers.
    Denied,
    /// The kernel has no perf events (`ENOSYS`), or the platform is not Linux.
    NoKernelSupport,
    /// The thread does not exist (`ESRCH`).
    NoSuchThread,
    /// The counter could only be opened with kernel events excluded, which makes it meaningless (context
    /// switches).
    KernelEventsExcluded,
    /// Any other failure.
    Failed,
}

impl Unavailable {
    /// Classifies a `perf_event_open` error.
    ///
    /// ```
    /// use loopscope_probes::perf::Unavailable;
    /// let e = std::io::Error::from_raw_os_error(libc::ENOENT);
    /// assert_eq!(Unavailable::from_error(&e), Unavailable::NoPmu);
    /// let e = std::io::Error::from_raw_os_error(libc::EACCES);
    /// assert_eq!(Unavailable::from_error(&e), Unavailable::Denied);
    /// ```
    pub fn from_error(err: &io::Error) -> Unavailable {
        match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => Unavailable::NoPmu,
            Some(libc::EACCES) | Some(libc::EPERM) => Unavailable::Denied,
            Some(libc::ENOSYS) => Unavailable::NoKernelSupport,
            Some(libc::ESRCH) => Unavailable::NoSuchThread,
            _ => Unavailable::Failed,
        }
    }
}

/// The state of one counter of a [`PerfCounters`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterState {
    /// Counting. `kernel_excluded`: only user-space events are counted (unprivileged with
    /// `perf_event_paranoid >= 2`).
    Active {
        /// Kernel events are excluded.
        kernel_excluded: bool,
    },
    /// Not counting.
    Unavailable {
        /// Why.
        reason: Unavailable,
        /// The errno of `perf_event_open`, if any.
        errno: Option<i32>,
        /// A one-line human explanation.
        detail: String,
    },
}

/// One counter and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterStatus {
    /// The counter.
    pub counter: Counter,
    /// Its state.
    pub state: CounterState,
}

impl CounterStatus {
    /// Whether the counter is counting.
    pub fn is_active(&self) -> bool {
        matches!(self.state, CounterState::Active { .. })
    }

    /// A one-line explanation, e.g. `"active"` or `"no PMU (ENOENT): hardware counters unavailable ..."`.
    pub fn detail(&self) -> String {
        match &self.state {
            CounterState::Active { kernel_excluded: false } => "active".to_owned(),
            CounterState::Active { kernel_excluded: true } => {
                "active (user-space events only: kernel events excluded by perf_event_paranoid)".to_owned()
            }
            CounterState::Unavailable { detail, .. } => detail.clone(),
        }
    }
}

/// Counter values read by [`PerfCounters::read`]; `None` for counters that are not available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValues {
    /// CPU time.
    pub task_clock: Option<Duration>,
    /// Page faults.
    pub page_faults: Option<u64>,
    /// Context switches.
    pub context_switches: Option<u64>,
    /// CPU cycles.
    pub cycles: Option<u64>,
    /// Retired instructions.
    pub instructions: Option<u64>,
}

impl CounterValues {
    /// `self - earlier`, per counter (saturating; `None` where either side is `None`).
    ///
    /// ```
    /// use loopscope_probes::perf::CounterValues;
    /// let a = CounterValues { page_faults: Some(10), ..Default::default() };
    /// let b = CounterValues { page_faults: Some(25), cycles: Some(5), ..Default::default() };
    /// let d = b.delta(&a);
    /// assert_eq!(d.page_faults, Some(15));
    /// assert_eq!(d.cycles, None);
    /// ```
    pub fn delta(&self, earlier: &CounterValues) -> CounterValues {
        fn d(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            Some(a?.saturating_sub(b?))
        }
        CounterValues {
            task_clock: match (self.task_clock, earlier.task_clock) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            },
            page_faults: d(self.page_faults, earlier.page_faults),
            context_switches: d(self.context_switches, earlier.context_switches),
            cycles: d(self.cycles, earlier.cycles),
            instructions: d(self.instructions, earlier.instructions),
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn set(&mut self, counter: Counter, value: u64) {
        match counter {
            Counter::TaskClock => self.task_clock = Some(Duration::from_nanos(value)),
            Counter::PageFaults => self.page_faults = Some(value),
            Counter::ContextSwitches => self.context_switches = Some(value),
            Counter::Cycles => self.cycles = Some(value),
            Counter::Instructions => self.instructions = Some(value),
        }
    }
}

/// Errors of [`PerfCounters`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PerfError {
    /// Not a single counter could be opened.
    #[error("no perf counter could be opened for thread {tid} ({reason:?})")]
    NoCounters {
        /// The thread.
        tid: Tid,
        /// The reason shared by the failures (that of task-clock if they differ).
        reason: Unavailable,
        /// Every counter's state, for reporting.
        statuses: Vec<CounterStatus>,
        /// The error of the first counter (task-clock).
        #[source]
        source: io::Error,
    },
    /// Reading a counter failed.
    #[error("reading the {counter} counter failed")]
    Read {
        /// The counter.
        counter: Counter,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// Perf events exist only on Linux.
    #[error("perf counters are only supported on Linux")]
    Unsupported,
}

/// The perf counters of one thread. Dropping it closes the counters.
#[derive(Debug)]
pub struct PerfCounters {
    tid: Tid,
    #[cfg(target_os = "linux")]
    open: Vec<(Counter, perf_event::Counter)>,
    statuses: Vec<CounterStatus>,
}

impl PerfCounters {
    /// Opens and enables every counter of [`Counter::ALL`] for thread `tid` of this process. Succeeds if at
    /// least one counter could be opened; [`status`](Self::status) tells which.
    pub fn open(tid: Tid) -> Result<PerfCounters, PerfError> {
        #[cfg(target_os = "linux")]
        {
            linux::open(tid)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tid;
            Err(PerfError::Unsupported)
        }
    }

    /// The thread the counters observe.
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// The state of every counter, in [`Counter::ALL`] order.
    pub fn status(&self) -> &[CounterStatus] {
        &self.statuses
    }

    /// Whether `counter` is counting.
    pub fn is_active(&self, counter: Counter) -> bool {
        self.statuses.iter().any(|s| s.counter == counter && s.is_active())
    }

    /// Reads every active counter. Values of multiplexed hardware counters are scaled by
    /// `time_enabled / time_running`.
    pub fn read(&mut self) -> Result<CounterValues, PerfError> {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut values = CounterValues::default();
        #[cfg(target_os = "linux")]
        for (counter, handle) in &mut self.open {
            let cat = handle.read_count_and_time().map_err(|source| PerfError::Read { counter: *counter, source })?;
            if cat.time_running == 0 {
                // Never scheduled onto the PMU (multiplexing): no information rather than a fake 0. Software
                // counters of a thread that has not run since they were enabled are a true 0.
                if !counter.is_hardware() {
                    values.set(*counter, cat.count);
                }
            } else if cat.time_running < cat.time_enabled {
                let scaled = u128::from(cat.count) * u128::from(cat.time_enabled) / u128::from(cat.time_running);
                values.set(*counter, u64::try_from(scaled).unwrap_or(u64::MAX));
            } else {
                values.set(*counter, cat.count);
            }
        }
        Ok(values)
    }
}

/// `/proc/sys/kernel/perf_event_paranoid`, if readable.
pub fn perf_event_paranoid() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok()?.trim().parse().ok()
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENODEV => "ENODEV",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::ESRCH => "ESRCH",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::EBUSY => "EBUSY",
        libc::E2BIG => "E2BIG",
        _ => "errno",
    }
}

/// Builds the `Unavailable` state for a failed open.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unavailable(counter: Counter, tid: Tid, err: &io::Error) -> CounterState {
    let reason = Unavailable::from_error(err);
    let errno = err.raw_os_error();
    let code = errno.map_or_else(|| err.to_string(), |e| format!("{} {e}", errno_name(e)));
    let paranoid = perf_event_paranoid().map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    let detail = match reason {
        Unavailable::NoPmu => format!(
            "no PMU ({code}): hardware counters are unavailable on this machine (usual in VMs without PMU \
             passthrough); CPU time comes from task-clock and the thread CPU clock"
        ),
        Unavailable::Denied => format!(
            "denied ({code}): perf_event_paranoid={paranoid}, or a seccomp/container policy forbids \
             perf_event_open; thread state and CPU time still come from /proc and the thread CPU clock"
        ),
        Unavailable::NoKernelSupport => {
            format!("not supported ({code}): the kernel has no perf events; using /proc")
        }
        Unavailable::NoSuchThread => format!("thread {tid} not found ({code})"),
        Unavailable::KernelEventsExcluded | Unavailable::Failed => {
            format!("perf_event_open({counter}) failed ({code}): {err}")
        }
    };
    CounterState::Unavailable { reason, errno, detail }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    use perf_event::Builder;
    use perf_event::events::{Event, Hardware, Software};

    use super::{Counter, CounterState, CounterStatus, PerfCounters, PerfError, Unavailable};
    use crate::Tid;

    fn event(counter: Counter) -> Event {
        match counter {
            Counter::TaskClock => Software::TASK_CLOCK.into(),
            Counter::PageFaults => Software::PAGE_FAULTS.into(),
            Counter::ContextSwitches => Software::CONTEXT_SWITCHES.into(),
            Counter::Cycles => Hardware::CPU_CYCLES.into(),
            Counter::Instructions => Hardware::INSTRUCTIONS.into(),
        }
    }

    fn build(tid: Tid, counter: Counter, exclude_kernel: bool) -> io::Result<perf_event::Counter> {
        let mut builder = Builder::new().observe_pid(tid).any_cpu().kind(event(counter));
        builder.exclude_kernel(exclude_kernel).exclude_hv(true);
        builder.build()
    }

    /// Opens one counter: with kernel events first (complete counts when allowed), then user-only.
    fn open_one(tid: Tid, counter: Counter) -> Result<(perf_event::Counter, bool), (CounterState, io::Error)> {
        let first = match build(tid, counter, false) {
            Ok(c) => return Ok((c, false)),
            Err(e) => e,
        };
        if Unavailable::from_error(&first) != Unavailable::Denied {
            return Err((super::unavailable(counter, tid, &first), first));
        }
        match build(tid, counter, true) {
            Ok(c) if counter == Counter::ContextSwitches => {
                drop(c);
                let paranoid = super::perf_event_paranoid().map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                Err((
                    CounterState::Unavailable {
                        reason: Unavailable::KernelEventsExcluded,
                        errno: first.raw_os_error(),
                        detail: format!(
                            "restricted: kernel events must be excluded (perf_event_paranoid={paranoid}, \
                             unprivileged) and context switches happen in the kernel, so this counter would \
                             always read 0; use the /proc voluntary/nonvoluntary_ctxt_switches instead"
                        ),
                    },
                    first,
                ))
            }
            Ok(c) => Ok((c, true)),
            Err(e) => Err((super::unavailable(counter, tid, &e), e)),
        }
    }

    pub(super) fn open(tid: Tid) -> Result<PerfCounters, PerfError> {
        let mut open = Vec::new();
        let mut statuses = Vec::new();
        let mut failures: Vec<(Unavailable, io::Error)> = Vec::new();
        for counter in Counter::ALL {
            match open_one(tid, counter) {
                Ok((mut handle, kernel_excluded)) => match handle.enable() {
                    Ok(()) => {
                        open.push((counter, handle));
                        statuses.push(CounterStatus { counter, state: CounterState::Active { kernel_excluded } });
                    }
                    Err(e) => {
                        statuses.push(CounterStatus { counter, state: super::unavailable(counter, tid, &e) });
                        failures.push((Unavailable::Failed, e));
                    }
                },
                Err((state, err)) => {
                    let reason = match &state {
                        CounterState::Unavailable { reason, .. } => *reason,
                        CounterState::Active { .. } => Unavailable::Failed,
                    };
                    statuses.push(CounterStatus { counter, state });
                    failures.push((reason, err));
                }
            }
        }
        if open.is_empty() {
            let reason = failures.first().map_or(Unavailable::Failed, |(r, _)| *r);
            let source = failures.into_iter().next().map_or_else(|| io::Error::other("no counters"), |(_, e)| e);
            return Err(PerfError::NoCounters { tid, reason, statuses, source });
        }
        Ok(PerfCounters { tid, open, statuses })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_classification() {
        let cases = [
            (libc::ENOENT, Unavailable::NoPmu),
            (libc::EOPNOTSUPP, Unavailable::NoPmu),
            (libc::ENODEV, Unavailable::NoPmu),
            (libc::EACCES, Unavailable::Denied),
            (libc::EPERM, Unavailable::Denied),
            (libc::ENOSYS, Unavailable::NoKernelSupport),
            (libc::ESRCH, Unavailable::NoSuchThread),
            (libc::EINVAL, Unavailable::Failed),
        ];
        for (errno, expected) in cases {
            assert_eq!(Unavailable::from_error(&io::Error::from_raw_os_error(errno)), expected);
        }
        let state = unavailable(Counter::Cycles, 1, &io::Error::from_raw_os_error(libc::ENOENT));
        let CounterState::Unavailable { detail, .. } = state else { panic!("unavailable") };
        assert!(detail.starts_with("no PMU (ENOENT"), "{detail}");
        let state = unavailable(Counter::TaskClock, 1, &io::Error::from_raw_os_error(libc::EPERM));
        let CounterState::Unavailable { detail, .. } = state else { panic!("unavailable") };
        assert!(detail.starts_with("denied (EPERM"), "{detail}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn counts_own_thread() {
        let mut counters = match PerfCounters::open(crate::current_tid()) {
            Ok(c) => c,
            // A policy may forbid perf entirely; that is what the status reports, not a test failure.
            Err(PerfError::NoCounters { reason, .. }) => {
                assert_ne!(reason, Unavailable::Failed);
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(counters.status().len(), Counter::ALL.len());
        let before = counters.read().unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = counters.read().unwrap();
        if counters.is_active(Counter::TaskClock) {
            let d = after.delta(&before).task_clock.unwrap();
            assert!(d > Duration::from_micros(100), "{d:?}");
        }
        for status in counters.status() {
            if status.counter.is_hardware() && !status.is_active() {
                let CounterState::Unavailable { reason, .. } = &status.state else { unreachable!() };
                assert!(matches!(reason, Unavailable::NoPmu | Unavailable::Denied), "{status:?}");
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn nonexistent_thread() {
        match PerfCounters::open(i32::MAX) {
            Err(PerfError::NoCounters { reason, .. }) => {
                assert!(matches!(reason, Unavailable::NoSuchThread | Unavailable::Denied), "{reason:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
