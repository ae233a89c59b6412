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
mod tests;
