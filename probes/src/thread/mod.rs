//! What a thread is doing right now, from the kernel's point of view: run state, current system call (and the
//! file behind its fd), CPU time, context switches and page faults.
//!
//! Everything is read from `/proc/self/task/<tid>/{stat,syscall,status,wchan}` and the thread's CPU clock. These
//! reads take microseconds, never block on the target thread, and work on any thread of this process without
//! privileges.
//!
//! ```
//! use loopscope_probes::{current_tid, thread};
//!
//! # #[cfg(target_os = "linux")] {
//! let sample = thread::sample(current_tid()).expect("own thread");
//! // We are obviously running while we sample ourselves (and the kernel reports our own thread as being in
//! // the `read` of its syscall file: sampling yourself is not very informative).
//! assert_eq!(sample.state, thread::RunState::Running);
//! # }
//! ```

mod parse;
mod syscalls;
mod syscalls_table;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::{ProbeError, Tid};

pub use parse::{StatFields, StatusFields, SyscallLine, parse_schedstat, parse_stat, parse_status, parse_syscall};
pub use syscalls::{fd_argument_index, is_futex_syscall, syscall_name, syscall_name_for_arch};

/// The scheduler state of a thread (the state letter in `/proc/<pid>/task/<tid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// `R`: running on a CPU or runnable (waiting for one).
    Running,
    /// `S`: interruptible sleep, i.e. blocked in a system call (or a page fault on userfaultfd, ...).
    Sleeping,
    /// `D`: uninterruptible sleep: disk or network filesystem I/O, page-ins, some kernel locks; also vfork parents.
    DiskSleep,
    /// `T` or `t`: stopped by a signal or by a tracer.
    Stopped,
    /// `Z`: exited, not yet reaped.
    Zombie,
    /// `I`: idle kernel thread (never an application thread).
    Idle,
    /// Any other letter (`X` dead, `P` parked, ...).
    Other(char),
}

impl RunState {
    /// Maps the state letter of `/proc/.../stat` to a [`RunState`].
    ///
    /// ```
    /// use loopscope_probes::thread::RunState;
    /// assert_eq!(RunState::from_letter('D'), RunState::DiskSleep);
    /// assert_eq!(RunState::from_letter('X'), RunState::Other('X'));
    /// ```
    pub fn from_letter(letter: char) -> RunState {
        match letter {
            'R' => RunState::Running,
            'S' => RunState::Sleeping,
            'D' => RunState::DiskSleep,
            'T' | 't' => RunState::Stopped,
            'Z' => RunState::Zombie,
            'I' => RunState::Idle,
            other => RunState::Other(other),
        }
    }

    /// The state letter, as the kernel prints it.
    pub fn letter(self) -> char {
        match self {
            RunState::Running => 'R',
            RunState::Sleeping => 'S',
            RunState::DiskSleep => 'D',
            RunState::Stopped => 'T',
            RunState::Zombie => 'Z',
            RunState::Idle => 'I',
            RunState::Other(c) => c,
        }
    }
}

/// The system call a thread is blocked in (`/proc/self/task/<tid>/syscall`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallInfo {
    /// The raw system call number; `-1` if the thread is blocked but not in a system call (for example in a page
    /// fault).
    pub number: i64,
    /// The system call's name (`"read"`, `"clock_nanosleep"`, `"futex"`, `"epoll_wait"`, ...); `"syscall_<n>"` for
    /// numbers this crate does not know, `"none"` for `-1`. Borrowed from a static table for known numbers.
    pub name: Cow<'static, str>,
    /// The six raw argument registers.
    pub args: [u64; 6],
    /// The thread's user stack pointer when it entered the kernel.
    pub stack_pointer: u64,
    /// The thread's user instruction pointer when it entered the kernel.
    pub instruction_pointer: u64,
    /// The file descriptor argument, for system calls whose argument is one (`read`, `write`, `recvfrom`, `fsync`,
    /// `epoll_wait`, ...).
    pub fd: Option<i32>,
    /// What `fd` refers to: `readlink /proc/self/fd/<fd>`, e.g. a path, `"pipe:[1234]"`, `"socket:[5678]"`.
    pub fd_target: Option<String>,
}

/// One observation of a thread, taken by [`sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSample {
    /// The thread.
    pub tid: Tid,
    /// When the sample was taken (right before the CPU clock was read).
    pub at: Instant,
    /// Scheduler state.
    pub state: RunState,
    /// The system call the thread is blocked in; `None` while it runs (the kernel prints `running`), or when
    /// `/proc/.../syscall` is not readable.
    pub syscall: Option<SyscallInfo>,
    /// CPU time consumed by the thread so far (user + system).
    pub cpu_time: Option<Duration>,
    /// Time the thread has spent runnable but waiting for a CPU so far (`/proc/.../schedstat`): tells a thread
    /// that is starved apart from one that is not trying to run.
    pub run_queue_wait: Option<Duration>,
    /// Context switches the thread made voluntarily (it blocked).
    pub voluntary_ctxt_switches: u64,
    /// Context switches forced on the thread (preemption).
    pub nonvoluntary_ctxt_switches: u64,
    /// Page faults served without I/O.
    pub minor_faults: u64,
    /// Page faults that needed I/O.
    pub major_faults: u64,
    /// The kernel function the thread sleeps in (`/proc/.../wchan`), when the kernel reveals it.
    pub wchan: Option<String>,
    /// The CPU the thread last ran on.
    pub processor: Option<u32>,
}

/// Samples thread `tid` of this process: state, syscall, CPU time, context switches and faults.
///
/// Errors: [`ProbeError::NoSuchThread`] if the thread does not exist (any more); [`ProbeError::Io`] /
/// [`ProbeError::Parse`] if `/proc/self/task/<tid>/stat` cannot be read or parsed. The other files are optional:
/// when they are unreadable the corresponding fields are `None` or `0`.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let tid = loopscope_probes::current_tid();
/// let s = loopscope_probes::thread::sample(tid).unwrap();
/// assert_eq!(s.tid, tid);
/// assert!(s.cpu_time.is_some());
/// # }
/// ```
pub fn sample(tid: Tid) -> Result<ThreadSample, ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::sample(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        Err(ProbeError::Unsupported { what: "thread sampling" })
    }
}

/// CPU time (user + system) consumed so far by thread `tid` of this process.
///
/// Reads the thread's CPU clock (`clock_gettime` on the clock id the kernel derives from the tid,
/// `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`, nanosecond resolution); falls back to
/// `/proc/self/task/<tid>/schedstat` if that fails.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let t = loopscope_probes::thread::cpu_time(loopscope_probes::current_tid()).unwrap();
/// assert!(t > std::time::Duration::ZERO);
/// # }
/// ```
pub fn cpu_time(tid: Tid) -> Result<Duration, ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::cpu_time(tid).map(|(d, _)| d)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        Err(ProbeError::Unsupported { what: "per-thread CPU time" })
    }
}

/// A thread's scheduler clocks at one moment: what [`sched_times`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedTimes {
    /// CPU time consumed so far (the thread's CPU clock, exact to the nanosecond even while it runs; the
    /// schedstat figure if the clock is unavailable).
    pub cpu: Option<Duration>,
    /// Time spent runnable but waiting for a CPU so far (`run_delay`, the second field of
    /// `/proc/self/task/<tid>/schedstat`). The kernel adds a wait when it *ends* (the thread gets a CPU), so a
    /// wait in progress is not in it yet: a reading taken after the thread ran again includes every earlier
    /// wait in full.
    pub run_queue_wait: Option<Duration>,
    /// How many times the thread has blocked so far: its voluntary context switches (`ru_nvcsw`, or
    /// `voluntary_ctxt_switches` in `/proc/self/task/<tid>/status`). Every sleep, lock wait, I/O wait or page
    /// fault that waits counts one as it begins. Two readings with the same count therefore prove that the
    /// thread never blocked between them: whatever of that time it was neither on a CPU nor in `run_delay` was
    /// taken from it (the hypervisor ran another guest on its virtual CPU, or interrupts ran on its CPU), not
    /// spent waiting for anything its code did.
    ///
    /// `Some` only where that proof holds for the reading's moment: taken by the thread itself (it was
    /// running), or read from outside *before* the thread's state, which was then running or runnable. (A
    /// thread blocked when its count was read, and still blocked after the reading, would otherwise block on
    /// without adding to the count.)
    pub voluntary_switches: Option<u64>,
}

/// Reads thread `tid`'s CPU time, run-queue wait and voluntary switches: one `clock_gettime` and three small
/// `/proc` reads (`status`, `stat` and `schedstat`; some 20 µs), cheap enough for the watchdog to take at the
/// start of every long poll. Errors only when neither the CPU time nor the wait can be read.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let t = loopscope_probes::thread::sched_times(loopscope_probes::current_tid()).unwrap();
/// assert!(t.cpu.unwrap() > std::time::Duration::ZERO);
/// # }
/// ```
pub fn sched_times(tid: Tid) -> Result<SchedTimes, ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::sched_times(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        Err(ProbeError::Unsupported { what: "per-thread scheduler times" })
    }
}

/// The calling thread's own [`SchedTimes`], read without allocating and without locks: one
/// `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` ([`own_cpu_time`]), then one read of `/proc/thread-self/schedstat`
/// into a stack buffer and one `getrusage(RUSAGE_THREAD)` ([`own_waits`]); about 5 µs. Because the caller is
/// running, no wait for a CPU is in progress, so the run-queue figure is complete. `None` where neither figure
/// can be read (not Linux, or `/proc` unavailable and no thread clock).
///
/// The two halves are public because *when* the CPU clock is read matters to a caller that pairs it with a wall
/// clock: the `/proc` read and `getrusage` usually take microseconds, but on a crowded virtual machine one of
/// them was measured taking milliseconds of the thread's CPU time. A caller closing a span reads the CPU clock
/// first (the slow part then falls after the span); one opening a span reads it last.
///
/// Hand-written rather than [`sched_times`] with the calling thread's id because that one formats a path and
/// reads into a `String`, and the task hooks that call this must not allocate.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let t = loopscope_probes::thread::own_sched_times().unwrap();
/// assert!(t.cpu.unwrap() > std::time::Duration::ZERO);
/// assert!(t.run_queue_wait.is_some());
/// # }
/// ```
pub fn own_sched_times() -> Option<SchedTimes> {
    let cpu = own_cpu_time();
    let (run_queue_wait, voluntary_switches) = own_waits();
    (cpu.is_some() || run_queue_wait.is_some()).then_some(SchedTimes { cpu, run_queue_wait, voluntary_switches })
}

/// The calling thread's CPU time (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, exact to the nanosecond): one
/// system call, no allocation, no lock, errno kept. `None` off Linux or if the clock can't be read.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let before = loopscope_probes::thread::own_cpu_time().unwrap();
/// let mut x = 0u64;
/// for i in 0..1_000_000u64 { x = std::hint::black_box(x ^ i); }
/// assert!(loopscope_probes::thread::own_cpu_time().unwrap() > before);
/// # }
/// ```
pub fn own_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        // Restored below: the app's code around the poll must see the errno it left.
        // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
        let saved_errno = unsafe { *libc::__errno_location() };
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the call writes nothing else.
        let cpu = (unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0).then(|| {
            Duration::from_secs(u64::try_from(ts.tv_sec).unwrap_or(0))
                + Duration::from_nanos(u64::try_from(ts.tv_nsec).unwrap_or(0))
        });
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved_errno };
        cpu
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The calling thread's run-queue wait so far (`run_delay` from `/proc/thread-self/schedstat`) and its
/// voluntary context switches (`getrusage(RUSAGE_THREAD)`), the rest of [`own_sched_times`]: no allocation, no
/// lock, errno kept. Either is `None` where it can't be read.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let (waited, switches) = loopscope_probes::thread::own_waits();
/// assert!(waited.is_some() && switches.is_some());
/// # }
/// ```
pub fn own_waits() -> (Option<Duration>, Option<u64>) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in `own_cpu_time`.
        let saved_errno = unsafe { *libc::__errno_location() };
        let run_queue_wait = own_schedstat().map(|(_, wait)| Duration::from_nanos(wait));
        // SAFETY: `rusage` is plain old data, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD reads the calling thread's counters only.
        let voluntary_switches = (unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0)
            .then(|| u64::try_from(usage.ru_nvcsw).ok())
            .flatten();
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved_errno };
        (run_queue_wait, voluntary_switches)
    }
    #[cfg(not(target_os = "linux"))]
    {
        (None, None)
    }
}

/// `(on CPU, run-queue wait)` in nanoseconds from `/proc/thread-self/schedstat`, without allocating.
#[cfg(target_os = "linux")]
fn own_schedstat() -> Option<(u64, u64)> {
    // SAFETY: the path is a NUL-terminated constant; open returns a new descriptor or -1.
    let fd = unsafe { libc::open(c"/proc/thread-self/schedstat".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let mut buf = [0u8; 96];
    let mut len = 0usize;
    if fd >= 0 {
        // SAFETY: `buf` is writable for its whole length; `fd` is the descriptor just opened.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        len = usize::try_from(n).unwrap_or(0);
        // SAFETY: `fd` is ours and closed exactly once.
        unsafe { libc::close(fd) };
    }
    let mut fields = buf.get(..len)?.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    let mut number = || -> Option<u64> {
        let f = fields.next()?;
        f.iter().try_fold(0u64, |acc, &b| {
            b.is_ascii_digit().then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
        })
    };
    Some((number()?, number()?))
}

/// Makes every running thread of this process execute a full memory barrier (`membarrier(2)`,
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`): the expensive half of an asymmetric fence. A thread that stores a flag,
/// calls this and then reads other threads' data sees every store those threads made before they read the
/// flag, so the other side (a hot path) needs no fence of its own. Returns false where the kernel has no
/// membarrier (before Linux 4.14) or refuses it; the caller must then allow for the race.
///
/// ```
/// // On Linux 4.14 and later this succeeds without privileges.
/// # #[cfg(target_os = "linux")]
/// let _ = loopscope_probes::thread::process_barrier();
/// ```
pub fn process_barrier() -> bool {
    #[cfg(target_os = "linux")]
    {
        const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
        const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;
        static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let registered = *REGISTERED.get_or_init(|| {
            // SAFETY: membarrier takes two integers (and a CPU id, unused here) and touches no memory of ours.
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
        });
        // SAFETY: as above; registration succeeded, so the private expedited command is allowed.
        registered && unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The scheduling priority [`raise_priority`] obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `SCHED_FIFO` at this real-time priority: the thread runs as soon as it wakes, ahead of every normal
    /// thread (the kernel's real-time throttling still leaves others 5% of each CPU).
    RealTime(i32),
    /// The normal scheduler at this nice value.
    Nice(i32),
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Priority::RealTime(p) => write!(f, "SCHED_FIFO priority {p}"),
            Priority::Nice(n) => write!(f, "nice {n}"),
        }
    }
}

/// Raises the calling thread's scheduling priority, for a watchdog that must run promptly on a busy machine
/// and does microseconds of work per wake-up: first `SCHED_FIFO` at priority 1 (needs root, `CAP_SYS_NICE`
/// or `RLIMIT_RTPRIO`), else nice `nice` (lower is more favoured; needs the same, or `RLIMIT_NICE`). Linux
/// gives each thread its own policy and nice value. The error says why neither was allowed; the thread then
/// keeps its priority.
///
/// ```
/// # #[cfg(target_os = "linux")]
/// std::thread::spawn(|| {
///     // Asking for the nice value a thread already has is always allowed, so this never fails.
///     let got = loopscope_probes::thread::raise_priority(false, 0).unwrap();
///     assert_eq!(got, loopscope_probes::thread::Priority::Nice(0));
/// }).join().unwrap();
/// ```
pub fn raise_priority(realtime: bool, nice: i32) -> std::io::Result<Priority> {
    #[cfg(target_os = "linux")]
    {
        let tid = crate::current_tid();
        let mut rt_error = None;
        if realtime {
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: `param` is a valid sched_param; pid 0 means the calling thread.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
                return Ok(Priority::RealTime(1));
            }
            rt_error = Some(std::io::Error::last_os_error());
        }
        // SAFETY: setpriority only reads its integer arguments; `tid` is this thread's id, so it changes the
        // nice value of this thread alone.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
        if rc == 0 {
            return Ok(Priority::Nice(nice));
        }
        let nice_error = std::io::Error::last_os_error();
        Err(match rt_error {
            Some(rt) => std::io::Error::new(nice_error.kind(), format!("SCHED_FIFO: {rt}; nice {nice}: {nice_error}")),
            None => nice_error,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (realtime, nice);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Which source [`cpu_time`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClockSource {
    /// `clock_gettime` on the thread's CPU clock.
    ThreadClock,
    /// `/proc/self/task/<tid>/schedstat` (the clock was unavailable).
    Schedstat,
}

/// Like [`cpu_time`], and also tells which source was used (for [`crate::Probes::status`]).
pub fn cpu_time_with_source(tid: Tid) -> Result<(Duration, CpuClockSource), ProbeError> {
    #[cfg(target_os = "linux")]
    {
        linux::cpu_time(tid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        Err(ProbeError::Unsupported { what: "per-thread CPU time" })
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use super::{CpuClockSource, RunState, SyscallInfo, ThreadSample, parse};
    use crate::{ProbeError, Tid};

    fn task_path(tid: Tid, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/task/{tid}/{file}"))
    }

    fn read(tid: Tid, file: &str) -> Result<String, ProbeError> {
        let path = task_path(tid, file);
        std::fs::read_to_string(&path).map_err(|e| ProbeError::proc_read(tid, path, e))
    }

    pub(super) fn sample(tid: Tid) -> Result<ThreadSample, ProbeError> {
        if tid <= 0 {
            return Err(ProbeError::NoSuchThread { tid, source: io::Error::from_raw_os_error(libc::ESRCH) });
        }
        // `at` and the CPU clock are read back to back so that Δcpu/Δwall between two samples is accurate.
        let at = Instant::now();
        let cpu = cpu_time(tid).ok().map(|(d, _)| d);
        let stat_text = read(tid, "stat")?;
        let stat = parse::parse_stat(&stat_text)
            .map_err(|detail| ProbeError::Parse { path: task_path(tid, "stat"), detail })?;
        // Optional files: an unreadable syscall/status file (e.g. restricted by a security module) degrades to
        // `None`/0 instead of failing the whole sample.
        let syscall =
            read(tid, "syscall").ok().and_then(|text| parse::parse_syscall(&text).ok()).and_then(syscall_info);
        let status = read(tid, "status").ok().map(|text| parse::parse_status(&text)).unwrap_or_default();
        let run_queue_wait =
            read(tid, "schedstat").ok().and_then(|text| parse::parse_schedstat(&text)).map(|(_, wait)| wait);
        let wchan = read(tid, "wchan").ok().map(|w| w.trim().to_owned()).filter(|w| !w.is_empty() && w != "0");
        Ok(ThreadSample {
            tid,
            at,
            state: RunState::from_letter(stat.state),
            syscall,
            cpu_time: cpu,
            run_queue_wait,
            voluntary_ctxt_switches: status.voluntary_ctxt_switches.unwrap_or(0),
            nonvoluntary_ctxt_switches: status.nonvoluntary_ctxt_switches.unwrap_or(0),
            minor_faults: stat.minor_faults,
            major_faults: stat.major_faults,
            wchan,
            processor: stat.processor,
        })
    }

    pub(super) fn sched_times(tid: Tid) -> Result<super::SchedTimes, ProbeError> {
        if tid <= 0 {
            return Err(ProbeError::NoSuchThread { tid, source: io::Error::from_raw_os_error(libc::ESRCH) });
        }
        // The switch count first, the state after it (see `SchedTimes::voluntary_switches`): if the thread is
        // running or runnable now, any block in progress when the count was read ended within these few µs.
        let switches = read(tid, "status").ok().and_then(|text| parse::parse_status(&text).voluntary_ctxt_switches);
        let runnable = read(tid, "stat").ok().and_then(|text| parse::parse_stat(&text).ok()).map(|s| s.state == 'R');
        let voluntary_switches = switches.filter(|_| runnable == Some(true));
        let clock = cpu_time(tid).ok().filter(|(_, src)| *src == CpuClockSource::ThreadClock).map(|(d, _)| d);
        let schedstat = read(tid, "schedstat").map(|text| parse::parse_schedstat(&text));
        match (clock, schedstat) {
            (cpu, Ok(Some((on_cpu, wait)))) => {
                Ok(super::SchedTimes { cpu: cpu.or(Some(on_cpu)), run_queue_wait: Some(wait), voluntary_switches })
            }
            (Some(cpu), _) => Ok(super::SchedTimes { cpu: Some(cpu), run_queue_wait: None, voluntary_switches }),
            (None, Err(e)) => Err(e),
            (None, Ok(None)) => Err(ProbeError::Parse {
                path: task_path(tid, "schedstat"),
                detail: "expected at least two numbers".into(),
            }),
        }
    }

    fn syscall_info(line: parse::SyscallLine) -> Option<SyscallInfo> {
        match line {
            parse::SyscallLine::Running => None,
            parse::SyscallLine::Blocked { number, args, stack_pointer, instruction_pointer } => {
                let fd = super::fd_argument_index(number).and_then(|i| {
                    // fds are C ints; the register holds them zero- or sign-extended.
                    let raw = args[i] as u32 as i32;
                    (raw >= 0).then_some(raw)
                });
                let fd_target = fd.and_then(|fd| {
                    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.to_string_lossy().into_owned())
                });
                Some(SyscallInfo {
                    number,
                    name: super::syscall_name(number),
                    args,
                    stack_pointer,
                    instruction_pointer,
                    fd,
                    fd_target,
                })
            }
        }
    }

    /// `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)` from the kernel's `include/linux/posix-timers.h`: the clock id
    /// encodes the bitwise-negated tid shifted left by 3, the "per thread" flag (4) and the clock type (SCHED = 2,
    /// nanosecond accounting). glibc's `pthread_getcpuclockid` builds the same value, but needs a `pthread_t`,
    /// which the agent does not have for another thread; the kernel accepts the tid form for any thread in the
    /// caller's thread group.
    fn thread_cpu_clock(tid: Tid) -> libc::clockid_t {
        const CPUCLOCK_PERTHREAD_MASK: libc::clockid_t = 4;
        const CPUCLOCK_SCHED: libc::clockid_t = 2;
        ((!tid) << 3) | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED
    }

    pub(super) fn cpu_time(tid: Tid) -> Result<(Duration, CpuClockSource), ProbeError> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; clock_gettime validates the clock id (EINVAL for a tid that
        // is not in our thread group or does not exist).
        let rc = unsafe { libc::clock_gettime(thread_cpu_clock(tid), &mut ts) };
        if rc == 0 {
            let d = Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0));
            return Ok((d, CpuClockSource::ThreadClock));
        }
        let clock_err = io::Error::last_os_error();
        // Fallback: the first field of schedstat is the time spent on the CPU, in nanoseconds.
        match read(tid, "schedstat") {
            Ok(text) => parse::parse_schedstat(&text)
                .map(|(on_cpu, _)| (on_cpu, CpuClockSource::Schedstat))
                .ok_or(ProbeError::CpuClock { tid, source: clock_err }),
            Err(e @ ProbeError::NoSuchThread { .. }) => Err(e),
            Err(_) => Err(ProbeError::CpuClock { tid, source: clock_err }),
        }
    }
}
