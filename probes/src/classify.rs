//! Turns thread samples (and optionally a symbolized stack) into a verdict: what is the stalled thread doing?
//!
//! [`classify`] is a pure function of its inputs, so its rules are unit-tested with hand-built samples.
//!
//! The rules, in order (the *last* sample describes "now"; the pair gives rates):
//!
//! 1. Zombie / stopped threads: [`Classification::Unknown`] with the reason.
//! 2. Uninterruptible sleep (`D`) outside a system call, or with major faults rising: [`Classification::PageFault`].
//!    `D` inside a system call (`fsync`, `read` of a slow disk): [`Classification::Syscall`].
//! 3. On the CPU at least 80% of the time between the two samples: [`Classification::CpuBound`], whatever the
//!    instantaneous state (a thread that spins on non-blocking calls is momentarily "in a syscall" but burns CPU).
//! 4. Running (`R`): [`Classification::PageFault`] if major faults rose while it was mostly off the CPU, or if
//!    minor faults are estimated to cost more than half of its CPU time; else [`Classification::CpuBound`]
//!    (the reason mentions CPU starvation when the on-CPU ratio is low).
//! 5. Blocked (`S`) in a futex, or with a lock/condvar/parking frame on the stack: [`Classification::LockWait`].
//!    In another system call: [`Classification::Syscall`] with the name and the fd's target.
//! 6. Otherwise: [`Classification::Unknown`].

use std::time::Duration;

use crate::stack::{Frame, FrameOrigin};
use crate::thread::{RunState, SyscallInfo, ThreadSample, is_futex_syscall};

/// What the thread is doing; defined in `loopscope-types`, so the stream and CI records carry the probes'
/// verdict as it is.
pub use loopscope_types::Classification;

/// The verdict of [`classify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What the thread is doing.
    pub classification: Classification,
    /// `Δcpu_time / Δwall` between the two samples, when they differ and both have a CPU time.
    pub on_cpu_ratio: Option<f64>,
    /// `Δrun_queue_wait / Δwall`: the share of the window the thread was runnable but waiting for a CPU.
    pub run_queue_ratio: Option<f64>,
    /// Voluntary context switches between the two samples (0 if they are the same sample).
    pub voluntary_switches: u64,
    /// Involuntary context switches between the two samples.
    pub involuntary_switches: u64,
    /// One line: why this verdict.
    pub reason: String,
}

/// Fraction of time on the CPU above which a thread counts as CPU-bound whatever its instantaneous state.
const CPU_BOUND_RATIO: f64 = 0.8;
/// Rough cost of one minor page fault (allocate + zero or map a page), to estimate the share of CPU time spent
/// in faults. A heuristic: the exact figure varies between 0.5 and a few microseconds.
const MINOR_FAULT_COST_NS: u128 = 1_000;

/// Frame-name fragments that identify a thread blocking on a lock or a similar primitive.
const LOCK_MARKERS: &[&str] = &[
    "::Mutex",
    "::mutex::",
    "::RwLock",
    "::rwlock::",
    "::Condvar",
    "::condvar::",
    "lock_contended",
    "parking_lot",
    "std::thread::park",
    "std::sys::sync::once",
    "std::sync::Barrier",
    "std::sync::mpmc",
    "std::sync::mpsc",
    "std::sync::once_lock",
    "std::sync::lazy_lock",
    "pthread_mutex_lock",
    "pthread_rwlock",
    "pthread_cond_",
    "__lll_lock_wait",
    "___pthread_mutex_lock",
];

/// The innermost frame (below the probe's frames) that names a lock primitive.
fn lock_frame(frames: &[Frame]) -> Option<&str> {
    frames
        .iter()
        .filter(|f| f.origin != FrameOrigin::Probe)
        .filter_map(|f| f.function.as_deref())
        // Waking a waiter (unlocking, notifying, unparking) goes through the same types but never waits.
        .filter(|name| !["unpark", "notify", "unlock", "wake"].iter().any(|w| name.to_ascii_lowercase().contains(w)))
        .find(|name| LOCK_MARKERS.iter().any(|m| name.contains(m)))
}

/// Whether a `futex` call waits (a lock, condvar or park), rather than wakes others: a thread caught in
/// `FUTEX_WAKE` (unlocking, notifying a join handle) is not waiting for anything. `futex_waitv` always waits.
fn futex_waits(sc: &SyscallInfo) -> bool {
    const FUTEX_CMD_MASK: u64 = !(128 | 256); // FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME
    // FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI, FUTEX_LOCK_PI2.
    const WAITING_OPS: [u64; 5] = [0, 6, 9, 11, 13];
    sc.name != "futex" || WAITING_OPS.contains(&(sc.args[1] & FUTEX_CMD_MASK))
}

fn describe_syscall(sc: &SyscallInfo) -> String {
    match &sc.fd_target {
        Some(target) => format!("{}({} -> {target})", sc.name, sc.fd.unwrap_or(-1)),
        None => format!("{}()", sc.name),
    }
}

/// Classifies a stalled thread from `first` (taken when the stall was flagged), `last` (the latest sample; may be
/// the same as `first`) and, optionally, its symbolized stack.
///
/// ```
/// use std::time::{Duration, Instant};
/// use loopscope_probes::classify::{classify, Classification};
/// use loopscope_probes::thread::{RunState, ThreadSample};
///
/// let t0 = Instant::now();
/// let first = ThreadSample { tid: 7, at: t0, state: RunState::Running, syscall: None,
///     cpu_time: Some(Duration::from_millis(1000)), run_queue_wait: Some(Duration::ZERO),
///     voluntary_ctxt_switches: 10, nonvoluntary_ctxt_switches: 2,
///     minor_faults: 50, major_faults: 0, wchan: None, processor: Some(0) };
/// let last = ThreadSample { at: t0 + Duration::from_millis(100), cpu_time: Some(Duration::from_millis(1099)),
///     nonvoluntary_ctxt_switches: 3, ..first.clone() };
/// let verdict = classify(&first, &last, None);
/// assert_eq!(verdict.classification, Classification::CpuBound);
/// assert!(verdict.on_cpu_ratio.unwrap() > 0.95);
/// assert_eq!(verdict.involuntary_switches, 1);
/// ```
pub fn classify(first: &ThreadSample, last: &ThreadSample, frames: Option<&[Frame]>) -> Verdict {
    classify_inner(first, last, frames, None)
}

/// How a stalled poll's wall time split, measured over the whole poll (not only between two looks): the
/// input of [`classify_poll`]. `wall = on_cpu + off_cpu + run_queue + unmeasured`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTime {
    /// The poll's wall time so far (or final).
    pub wall: Duration,
    /// On a CPU.
    pub on_cpu: Duration,
    /// Off the CPU and not runnable (blocked).
    pub off_cpu: Duration,
    /// Runnable, waiting for a CPU.
    pub run_queue: Duration,
    /// Not covered by a reading; counted as the poll's own time.
    pub unmeasured: Duration,
    /// The stall threshold: a poll whose own time (`wall - run_queue`) stays under it was made a stall by the
    /// OS, not by its code.
    pub threshold: Duration,
    /// The poll has returned, so `wall` is final. While it still runs its own time may yet pass the threshold:
    /// it is called preempted only if it is runnable now and waiting for a CPU was most of its time so far.
    pub ended: bool,
}

impl PollTime {
    /// The poll's own time: wall time less run-queue wait.
    pub fn self_time(&self) -> Duration {
        self.wall.saturating_sub(self.run_queue)
    }

    /// The measured part of the poll's own time (on CPU plus blocked).
    fn own_measured(&self) -> Duration {
        self.on_cpu + self.off_cpu
    }
}

/// Like [`classify`], but judges the shares over the whole poll (`time`) rather than between the two looks, and
/// can tell the OS's preemption from the code's blocking:
///
/// * a poll whose own time stayed under the threshold while it waited for a CPU is
///   [`Classification::Preempted`], whatever its state at the looks;
/// * [`Classification::CpuBound`] needs at least half of the poll's own measured time on a CPU, so the verdict
///   never contradicts its figures.
///
/// ```
/// use std::time::{Duration, Instant};
/// use loopscope_probes::classify::{classify_poll, Classification, PollTime};
/// use loopscope_probes::thread::{RunState, ThreadSample};
///
/// let ms = Duration::from_millis;
/// let sample = ThreadSample { tid: 7, at: Instant::now(), state: RunState::Running, syscall: None,
///     cpu_time: Some(ms(1000)), run_queue_wait: Some(ms(40)), voluntary_ctxt_switches: 10,
///     nonvoluntary_ctxt_switches: 2, minor_faults: 50, major_faults: 0, wchan: None, processor: Some(0) };
/// // 12.4 ms of wall time, 9.1 of them waiting for a CPU: the code itself ran 3.3 ms.
/// let time = PollTime { wall: Duration::from_micros(12_400), on_cpu: Duration::from_micros(3_300),
///     off_cpu: Duration::ZERO, run_queue: Duration::from_micros(9_100), unmeasured: Duration::ZERO,
///     threshold: ms(10), ended: true };
/// let verdict = classify_poll(&sample, &sample, None, &time);
/// assert_eq!(verdict.classification, Classification::Preempted);
/// assert!(verdict.reason.contains("9.1ms of 12.4ms"), "{}", verdict.reason);
/// ```
pub fn classify_poll(first: &ThreadSample, last: &ThreadSample, frames: Option<&[Frame]>, time: &PollTime) -> Verdict {
    classify_inner(first, last, frames, Some(time))
}

fn classify_inner(
    first: &ThreadSample,
    last: &ThreadSample,
    frames: Option<&[Frame]>,
    time: Option<&PollTime>,
) -> Verdict {
    let wall = last.at.saturating_duration_since(first.at);
    let cpu = match (first.cpu_time, last.cpu_time) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if !wall.is_zero() => {
            Some((b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64()).min(1.0))
        }
        _ => None,
    };
    let share = |part: Duration, whole: Duration| {
        if whole.is_zero() { None } else { Some((part.as_secs_f64() / whole.as_secs_f64()).min(1.0)) }
    };
    // With the poll's own accounting, the shares cover the measured part of the whole poll; without it, the
    // window between the two looks.
    let (on_cpu_ratio, run_queue_ratio) = match time {
        Some(t) => {
            let measured = t.own_measured() + t.run_queue;
            (share(t.on_cpu, measured), share(t.run_queue, measured))
        }
        None => (ratio(first.cpu_time, last.cpu_time), ratio(first.run_queue_wait, last.run_queue_wait)),
    };
    let voluntary_switches = last.voluntary_ctxt_switches.saturating_sub(first.voluntary_ctxt_switches);
    let involuntary_switches = last.nonvoluntary_ctxt_switches.saturating_sub(first.nonvoluntary_ctxt_switches);
    let major = last.major_faults.saturating_sub(first.major_faults);
    let minor = last.minor_faults.saturating_sub(first.minor_faults);
    let lock = frames.and_then(lock_frame);
    let window = if wall.is_zero() { "single sample".to_owned() } else { format!("over {wall:.1?}") };
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    // The blocked-thread verdicts, shared by the sleeping state and a thread that woke up from one.
    let blocked = |s: &ThreadSample| -> Option<(Classification, String)> {
        match &s.syscall {
            Some(sc) if is_futex_syscall(&sc.name) && futex_waits(sc) => {
                let detail = lock.map(str::to_owned).or_else(|| Some(format!("futex {:#x}", sc.args[0])));
                let reason = match lock {
                    Some(l) => format!("blocked in futex under {l}"),
                    None => format!("blocked in futex at {:#x} (a lock, condvar or park)", sc.args[0]),
                };
                Some((Classification::LockWait { detail }, reason))
            }
            Some(sc) if sc.number >= 0 => Some((
                Classification::Syscall { name: sc.name.to_string(), fd_target: sc.fd_target.clone() },
                // The classification already says "blocked in X"; the reason adds the thread state and the
                // call's arguments.
                format!("sleeping (S) in {}", describe_syscall(sc)),
            )),
            _ if lock.is_some() => Some((
                Classification::LockWait { detail: lock.map(str::to_owned) },
                format!("sleeping with {} on the stack", lock.unwrap_or_default()),
            )),
            _ => None,
        }
    };

    let (classification, reason) = 'verdict: {
        match last.state {
            RunState::Zombie => {
                break 'verdict (Classification::Unknown, "the thread has exited (zombie)".to_owned());
            }
            RunState::Stopped => {
                break 'verdict (Classification::Unknown, "the thread is stopped (SIGSTOP or a tracer)".to_owned());
            }
            _ => {}
        }
        if let Some(t) = time
            && !t.run_queue.is_zero()
            && t.self_time() < t.threshold
            && (t.ended || (last.state == RunState::Running && t.run_queue * 2 >= t.wall))
        {
            let estimated = if t.unmeasured * 5 > t.wall {
                format!(" ({:.1?} of it unmeasured, counted as its own)", t.unmeasured)
            } else {
                String::new()
            };
            break 'verdict (
                Classification::Preempted,
                format!(
                    "the OS kept the thread waiting for a CPU {:.1?} of {:.1?}; the poll itself took {:.1?} \
                     (on CPU {:.1?}){estimated}, under the {:.1?} threshold",
                    t.run_queue,
                    t.wall,
                    t.self_time(),
                    t.on_cpu,
                    t.threshold
                ),
            );
        }
        if last.state == RunState::DiskSleep {
            let in_syscall = last.syscall.as_ref().filter(|sc| sc.number >= 0);
            break 'verdict match in_syscall {
                Some(sc) if major == 0 => (
                    Classification::Syscall { name: sc.name.to_string(), fd_target: sc.fd_target.clone() },
                    format!("uninterruptible sleep (D) in {}", describe_syscall(sc)),
                ),
                _ => (
                    Classification::PageFault,
                    format!(
                        "uninterruptible sleep (D) outside a system call, {major} major fault(s) {window}: \
                         waiting for a page-in"
                    ),
                ),
            };
        }
        // The share of the poll's own (measured) time spent on a CPU, and what waiting for a CPU added.
        let own = time.map(|t| (t.on_cpu, t.own_measured(), t.run_queue, t.wall));
        let waited = |rq: Duration, wall: Duration| {
            if rq * 5 >= wall { format!("; it also waited for a CPU {rq:.1?}") } else { String::new() }
        };
        match own {
            Some((on, own, rq, total)) if own >= Duration::from_millis(1) => {
                let r = on.as_secs_f64() / own.as_secs_f64();
                if r >= CPU_BOUND_RATIO || (last.state == RunState::Running && r >= 0.5) {
                    let now = match &last.syscall {
                        Some(sc) if sc.number >= 0 => format!(", momentarily in {}", describe_syscall(sc)),
                        _ => String::new(),
                    };
                    break 'verdict (
                        Classification::CpuBound,
                        format!(
                            "on CPU {} of its own {own:.1?} ({:.1?} wall){now}{}",
                            pct(r.min(1.0)),
                            total,
                            waited(rq, total)
                        ),
                    );
                }
            }
            _ => {
                if let Some(r) = on_cpu_ratio
                    && r >= CPU_BOUND_RATIO
                    && wall.as_millis() >= 1
                    && time.is_none()
                {
                    let now = match &last.syscall {
                        Some(sc) if sc.number >= 0 => format!(", momentarily in {}", describe_syscall(sc)),
                        _ => String::new(),
                    };
                    break 'verdict (Classification::CpuBound, format!("on CPU {} of the time {window}{now}", pct(r)));
                }
            }
        }
        match last.state {
            RunState::Running => {
                let ratio = on_cpu_ratio.unwrap_or(1.0);
                if major > 0 && ratio < 0.5 {
                    break 'verdict (
                        Classification::PageFault,
                        format!("{major} major page fault(s) {window}, on CPU only {}", pct(ratio)),
                    );
                }
                if let Some(cpu) = cpu
                    && !cpu.is_zero()
                    && u128::from(minor) * MINOR_FAULT_COST_NS * 2 > cpu.as_nanos()
                {
                    break 'verdict (
                        Classification::PageFault,
                        format!("{minor} minor page faults {window}: most of the CPU time goes to faulting pages in"),
                    );
                }
                if let Some(t) = time
                    && t.own_measured() >= Duration::from_millis(1)
                {
                    // Mostly off the CPU yet runnable now: it was blocked and has just woken up. Name what
                    // blocked it if the first look saw it asleep.
                    if matches!(first.state, RunState::Sleeping | RunState::DiskSleep)
                        && let Some((c, why)) = blocked(first)
                    {
                        break 'verdict (c, format!("{why} at the first look; running again at the last"));
                    }
                    break 'verdict (
                        Classification::Unknown,
                        format!(
                            "off the CPU {:.1?} of its own {:.1?}, but not in a system call at either look",
                            t.off_cpu,
                            t.own_measured()
                        ),
                    );
                }
                match (on_cpu_ratio, run_queue_ratio) {
                    (Some(r), Some(w)) if w >= 0.5 => (
                        Classification::Preempted,
                        format!("runnable (R), waiting for a CPU {} {window}, on CPU only {}", pct(w), pct(r)),
                    ),
                    (Some(r), _) if r < 0.5 => (
                        Classification::Unknown,
                        format!(
                            "runnable (R) but on CPU only {} {window}: starved by other threads or CPU throttling",
                            pct(r)
                        ),
                    ),
                    (Some(r), _) => (Classification::CpuBound, format!("running (R), on CPU {} {window}", pct(r))),
                    // One look at a runnable thread can't tell running from waiting for a CPU.
                    (None, _) => (
                        Classification::Unknown,
                        "runnable (R) at the only look: on a CPU or waiting for one; no CPU share measured yet"
                            .to_owned(),
                    ),
                }
            }
            RunState::Sleeping | RunState::Idle => match blocked(last) {
                Some(v) => v,
                None => match &last.syscall {
                    _ if major > 0 => (
                        Classification::PageFault,
                        format!("sleeping outside a system call with {major} major fault(s) {window}"),
                    ),
                    Some(_) => (Classification::Unknown, "sleeping (S) outside a system call".to_owned()),
                    None => (
                        Classification::Unknown,
                        "sleeping (S); the system call is unknown (/proc/.../syscall unreadable)".to_owned(),
                    ),
                },
            },
            other => (Classification::Unknown, format!("thread state {}", other.letter())),
        }
    };
    Verdict { classification, on_cpu_ratio, run_queue_ratio, voluntary_switches, involuntary_switches, reason }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, Instant};

    use super::*;

    fn base(at: Instant) -> ThreadSample {
        ThreadSample {
            tid: 42,
            at,
            state: RunState::Sleeping,
            syscall: None,
            cpu_time: Some(Duration::from_millis(500)),
            run_queue_wait: Some(Duration::from_millis(20)),
            voluntary_ctxt_switches: 100,
            nonvoluntary_ctxt_switches: 10,
            minor_faults: 1000,
            major_faults: 5,
            wchan: None,
            processor: Some(1),
        }
    }

    fn syscall(number: i64, name: &'static str, fd_target: Option<&str>) -> SyscallInfo {
        SyscallInfo {
            number,
            name: Cow::Borrowed(name),
            args: [0x7f00_0000_1000, 0, 0, 0, 0, 0],
            stack_pointer: 0,
            instruction_pointer: 0,
            fd: fd_target.map(|_| 3),
            fd_target: fd_target.map(str::to_owned),
        }
    }

    fn later(first: &ThreadSample, ms: u64, cpu_ms: u64) -> ThreadSample {
        ThreadSample {
            at: first.at + Duration::from_millis(ms),
            cpu_time: first.cpu_time.map(|c| c + Duration::from_millis(cpu_ms)),
            ..first.clone()
        }
    }

    fn frame(name: &str, origin: FrameOrigin) -> Frame {
        Frame { ip: 0, function: Some(name.to_owned()), file: None, line: None, origin, inlined: false, object: None }
    }

    #[test]
    fn sleeping_in_clock_nanosleep_is_a_syscall() {
        let mut first = base(Instant::now());
        first.syscall = Some(syscall(230, "clock_nanosleep", None));
        let last = later(&first, 200, 0);
        let v = classify(&first, &last, None);
        assert_eq!(v.classification, Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None });
        assert_eq!(v.on_cpu_ratio, Some(0.0));
        assert!(v.reason.contains("clock_nanosleep"), "{}", v.reason);
    }

    #[test]
    fn read_keeps_the_fd_target() {
        let mut first = base(Instant::now());
        first.syscall = Some(syscall(0, "read", Some("/tmp/fifo")));
        let v = classify(&first, &first, None);
        assert_eq!(
            v.classification,
            Classification::Syscall { name: "read".into(), fd_target: Some("/tmp/fifo".into()) }
        );
        assert_eq!(v.on_cpu_ratio, None, "same sample: no ratio");
        assert_eq!(v.voluntary_switches, 0);
        assert!(v.reason.contains("/tmp/fifo"));
    }

    #[test]
    fn futex_is_a_lock_wait_with_the_lock_frame() {
        let mut first = base(Instant::now());
        first.syscall = Some(syscall(202, "futex", None));
        let last = later(&first, 100, 0);
        let frames = [
            frame("loopscope_probes::stack::imp::handler", FrameOrigin::Probe),
            frame("syscall", FrameOrigin::Std),
            frame("std::sys::sync::mutex::futex::Mutex::lock_contended", FrameOrigin::Std),
            frame("app::update", FrameOrigin::User),
        ];
        let v = classify(&first, &last, Some(&frames));
        assert_eq!(
            v.classification,
            Classification::LockWait { detail: Some("std::sys::sync::mutex::futex::Mutex::lock_contended".into()) }
        );
        let v = classify(&first, &last, None);
        let Classification::LockWait { detail: Some(d) } = v.classification else { panic!("{v:?}") };
        assert!(d.starts_with("futex 0x7f0000001000"), "{d}");
    }

    #[test]
    fn a_thread_waking_others_is_not_waiting_for_a_lock() {
        let mut first = base(Instant::now());
        first.state = RunState::Running;
        let mut wake = syscall(202, "futex", None);
        wake.args[1] = 1 | 128; // FUTEX_WAKE_PRIVATE
        first.syscall = Some(wake);
        let v = classify(&first, &first, None);
        assert!(!matches!(v.classification, Classification::LockWait { .. }), "{v:?}");
        let mut wait = syscall(202, "futex", None);
        wait.args[1] = 9 | 128; // FUTEX_WAIT_BITSET_PRIVATE
        first.state = RunState::Sleeping;
        first.syscall = Some(wait);
        assert!(matches!(classify(&first, &first, None).classification, Classification::LockWait { .. }));
    }

    #[test]
    fn waking_a_waiter_is_not_a_lock_frame() {
        let first = base(Instant::now());
        let frames = [
            frame(
                "<parking_lot_core::thread_parker::imp::UnparkHandle as UnparkHandleT>::unpark",
                FrameOrigin::Runtime,
            ),
            frame("tokio::runtime::task::harness::Harness<T,S>::complete", FrameOrigin::Runtime),
        ];
        assert_eq!(classify(&first, &first, Some(&frames)).classification, Classification::Unknown);
    }

    #[test]
    fn lock_frames_without_syscall_info() {
        let first = base(Instant::now());
        let frames = [frame("parking_lot::raw_mutex::RawMutex::lock_slow", FrameOrigin::Runtime)];
        let v = classify(&first, &first, Some(&frames));
        assert!(matches!(v.classification, Classification::LockWait { .. }), "{v:?}");
        let v = classify(&first, &first, None);
        assert_eq!(v.classification, Classification::Unknown);
    }

    #[test]
    fn running_is_cpu_bound() {
        let mut first = base(Instant::now());
        first.state = RunState::Running;
        let mut last = later(&first, 100, 97);
        last.nonvoluntary_ctxt_switches += 4;
        let v = classify(&first, &last, None);
        assert_eq!(v.classification, Classification::CpuBound);
        assert!((v.on_cpu_ratio.unwrap() - 0.97).abs() < 1e-9);
        assert_eq!(v.involuntary_switches, 4);
        assert_eq!(v.voluntary_switches, 0);
    }

    #[test]
    fn a_starved_runnable_thread_is_never_called_cpu_bound() {
        let mut first = base(Instant::now());
        first.state = RunState::Running;
        let last = later(&first, 100, 20);
        let v = classify(&first, &last, None);
        assert_eq!(v.classification, Classification::Unknown, "20% on CPU is not CPU-bound");
        assert!(v.reason.contains("starved"), "{}", v.reason);
        let mut last = later(&first, 100, 20);
        last.run_queue_wait = first.run_queue_wait.map(|w| w + Duration::from_millis(75));
        let v = classify(&first, &last, None);
        assert_eq!(v.classification, Classification::Preempted);
        assert!((v.run_queue_ratio.unwrap() - 0.75).abs() < 1e-9);
        assert!(v.reason.contains("waiting for a CPU 75%"), "{}", v.reason);
    }

    fn time(wall: u64, on_cpu: u64, off_cpu: u64, run_queue: u64) -> PollTime {
        let ms = Duration::from_millis;
        PollTime {
            wall: ms(wall),
            on_cpu: ms(on_cpu),
            off_cpu: ms(off_cpu),
            run_queue: ms(run_queue),
            unmeasured: ms(wall - on_cpu - off_cpu - run_queue),
            threshold: ms(10),
            ended: true,
        }
    }

    #[test]
    fn poll_time_tells_preemption_from_blocking() {
        let mut running = base(Instant::now());
        running.state = RunState::Running;
        // 2 ms of code, 19 ms waiting for a CPU: the OS's doing, whatever the state says.
        let v = classify_poll(&running, &running, None, &time(22, 2, 0, 19));
        assert_eq!(v.classification, Classification::Preempted, "{v:?}");
        assert!(v.reason.contains("19.0ms of 22.0ms"), "{}", v.reason);
        assert!(v.reason.contains("the poll itself took 3.0ms"), "{}", v.reason);
        assert!((v.run_queue_ratio.unwrap() - 19.0 / 21.0).abs() < 1e-9);

        // A real spin on a busy machine: 20 ms of its own, all on CPU, and 30 ms of waiting on top.
        let v = classify_poll(&running, &running, None, &time(50, 20, 0, 30));
        assert_eq!(v.classification, Classification::CpuBound, "{v:?}");
        assert!(v.reason.contains("on CPU 100% of its own 20.0ms"), "{}", v.reason);
        assert!(v.reason.contains("waited for a CPU 30.0ms"), "{}", v.reason);

        // A real sleep on a busy machine: blocked 50 ms, a little waiting to get back on a CPU.
        let mut sleeping = base(Instant::now());
        sleeping.syscall = Some(syscall(230, "clock_nanosleep", None));
        let v = classify_poll(&sleeping, &sleeping, None, &time(53, 0, 50, 3));
        assert_eq!(v.classification, Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None });

        // Woke from a lock wait and runs again: named by the first look, not called CPU-bound.
        let v = classify_poll(&sleeping, &running, None, &time(40, 1, 38, 1));
        assert!(matches!(v.classification, Classification::Syscall { .. }), "{v:?}");
        assert!(v.reason.contains("running again"), "{}", v.reason);
        let v = classify_poll(&running, &running, None, &time(40, 1, 38, 1));
        assert_eq!(v.classification, Classification::Unknown, "{v:?}");

        // Still running: a thread blocked in a call now is not "preempted" for a little waiting earlier.
        let in_flight = PollTime { ended: false, ..time(20, 0, 19, 1) };
        let v = classify_poll(&sleeping, &sleeping, None, &in_flight);
        assert!(matches!(v.classification, Classification::Syscall { .. }), "{v:?}");
        let waiting = PollTime { ended: false, ..time(20, 2, 0, 18) };
        assert_eq!(classify_poll(&running, &running, None, &waiting).classification, Classification::Preempted);

        // No run-queue wait at all: never "preempted", even when short.
        let v = classify_poll(&running, &running, None, &time(12, 11, 0, 0));
        assert_eq!(v.classification, Classification::CpuBound);
    }

    #[test]
    fn busy_syscall_loop_is_cpu_bound() {
        let mut first = base(Instant::now());
        first.syscall = Some(syscall(0, "read", Some("socket:[1]")));
        let last = later(&first, 100, 95);
        let v = classify(&first, &last, None);
        assert_eq!(v.classification, Classification::CpuBound);
        assert!(v.reason.contains("momentarily in read"), "{}", v.reason);
    }

    #[test]
    fn page_faults() {
        // D outside a syscall: page-in.
        let mut first = base(Instant::now());
        first.state = RunState::DiskSleep;
        first.syscall = Some(syscall(-1, "none", None));
        let v = classify(&first, &first, None);
        assert_eq!(v.classification, Classification::PageFault);

        // D in a syscall without faults: the syscall (e.g. fsync).
        let mut first = base(Instant::now());
        first.state = RunState::DiskSleep;
        first.syscall = Some(syscall(74, "fsync", Some("/var/db")));
        let v = classify(&first, &later(&first, 50, 0), None);
        assert!(matches!(v.classification, Classification::Syscall { ref name, .. } if name == "fsync"));

        // Running with major faults rising while mostly off-CPU.
        let mut first = base(Instant::now());
        first.state = RunState::Running;
        let mut last = later(&first, 100, 10);
        last.major_faults += 30;
        assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);

        // Running, minor-fault storm.
        let mut last = later(&first, 100, 40);
        last.minor_faults += 30_000;
        assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);

        // Sleeping outside a syscall with major faults.
        let mut first = base(Instant::now());
        first.syscall = Some(syscall(-1, "none", None));
        let mut last = later(&first, 100, 0);
        last.major_faults += 1;
        assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);
    }

    #[test]
    fn unknown_states() {
        let mut first = base(Instant::now());
        first.state = RunState::Zombie;
        assert_eq!(classify(&first, &first, None).classification, Classification::Unknown);
        first.state = RunState::Stopped;
        let v = classify(&first, &first, None);
        assert_eq!(v.classification, Classification::Unknown);
        assert!(v.reason.contains("stopped"));
        first.state = RunState::Other('X');
        assert_eq!(classify(&first, &first, None).classification, Classification::Unknown);
    }

    #[test]
    fn missing_cpu_time_and_reversed_samples() {
        let mut first = base(Instant::now());
        first.state = RunState::Running;
        first.cpu_time = None;
        let v = classify(&first, &later(&first, 10, 0), None);
        assert_eq!(v.classification, Classification::Unknown, "runnable, but on a CPU or waiting for one?");
        assert_eq!(v.on_cpu_ratio, None);
        // Counters going backwards (a recycled tid) must not underflow.
        let mut last = later(&first, 10, 0);
        last.voluntary_ctxt_switches = 0;
        last.minor_faults = 0;
        let v = classify(&first, &last, None);
        assert_eq!(v.voluntary_switches, 0);
    }
}
