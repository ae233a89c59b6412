//! Call stacks of *other* threads, captured while they are stalled.
//!
//! # How a capture works
//!
//! 1. [`StackSampler::install`] installs a `SA_SIGINFO | SA_RESTART` handler for one realtime signal, chosen
//!    among those whose disposition is still `SIG_DFL` (so no handler of the application is ever replaced), and
//!    warms the unwinder with one capture on a helper thread.
//! 2. [`StackSampler::prepare_thread`] reserves, for a thread id, a slot in a fixed table with a preallocated
//!    buffer of instruction pointers.
//! 3. [`StackSampler::capture`] first reads `/proc/self/task/<tid>/syscall`. A thread blocked in a system call
//!    that would fail with `EINTR` after a handler (`poll`, `epoll_wait`, `nanosleep`, socket calls with a
//!    timeout, ...; see `restart.rs`) or in uninterruptible sleep is **never signalled**: its frozen stack is
//!    unwound from outside ([`CaptureMethod::Outside`], `outside.rs`). Otherwise the capture arms the slot with a
//!    fresh request number, sends the signal with
//!    `tgkill(getpid(), tid, sig)` and waits on a futex until the handler reports completion or the timeout
//!    expires.
//! 4. The handler, running on the target thread, finds its slot by `gettid()` with a lock-free scan, claims the
//!    request with a compare-and-swap (so a handler that runs late, after its capture timed out, can never write
//!    into a buffer that another capture is reading), unwinds into the buffer, publishes the result and wakes
//!    the capturer. It does not allocate, lock, format or resolve symbols, and it restores `errno`.
//! 5. [`Symbolizer::symbolize`] turns the raw instruction pointers into functions, files and lines afterwards,
//!    on the caller's thread, with a cache.
//!
//! See `probes/README.md` for the design notes (async-signal-safety of DWARF unwinding, warm-up, signal choice).
//!
//! ```
//! use std::time::Duration;
//! use loopscope_probes::stack::{SamplerConfig, StackSampler, Symbolizer, first_user_frame};
//!
//! # #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))] {
//! let sampler = StackSampler::install(SamplerConfig::default()).expect("install");
//! let tid = loopscope_probes::current_tid();
//! sampler.prepare_thread(tid).unwrap();
//! let raw = sampler.capture(tid, Duration::from_secs(5)).expect("capture");
//! let mut symbolizer = Symbolizer::new();
//! let frames = symbolizer.symbolize(&raw);
//! assert!(!frames.is_empty());
//! println!("{:?}", first_user_frame(&frames).and_then(|f| f.function.as_deref()));
//! # }
//! ```

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod baseline;
mod debuginfo;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp;
mod names;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod outside;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod perf_sample;
#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod restart;
mod symbolize;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{ProbeError, Tid};

pub use symbolize::{Frame, FrameOrigin, Symbolizer, collapsed, first_user_frame, folded, without_probe_frames};

/// The largest supported [`SamplerConfig::max_depth`].
pub const MAX_DEPTH_LIMIT: usize = 128;

/// How the signal handler walks the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Unwinder {
    /// DWARF CFI unwinding with libgcc's `_Unwind_Backtrace` (through the `backtrace` crate). Works for every
    /// binary built with unwind tables (Rust's default on Linux), without frame pointers. Not strictly
    /// async-signal-safe; see the README for why it is acceptable on glibc >= 2.35 + libgcc >= 12 and what the
    /// residual risk is.
    #[default]
    Dwarf,
    /// Walks the frame-pointer chain from the interrupted `rbp`/`x29`, validating every address. Async-signal-safe
    /// and never faults, but only complete for code built with `-C force-frame-pointers=yes` (and a std built the
    /// same way); frames without a frame pointer are skipped or end the walk.
    FramePointer,
}

/// Configuration of [`StackSampler::install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerConfig {
    /// The realtime signal to use; `None` picks the first of `SIGRTMIN+4 ..= SIGRTMAX` whose disposition is
    /// `SIG_DFL`. An explicit signal that already has a handler is refused with [`ProbeError::SignalInUse`].
    pub signal: Option<i32>,
    /// The default unwinder of [`StackSampler::capture`].
    pub unwinder: Unwinder,
    /// Maximum number of frames recorded per capture (1..=128; the signal-handler frames are not counted).
    pub max_depth: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { signal: None, unwinder: Unwinder::Dwarf, max_depth: 64 }
    }
}

/// Per-capture options of [`StackSampler::capture_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureOptions {
    /// The unwinder of the signal handler, for this capture. Stacks taken without a signal
    /// ([`CaptureMethod::Outside`], [`CaptureMethod::PerfSample`]) are always unwound with DWARF CFI.
    pub unwinder: Unwinder,
    /// Maximum number of frames (1..=128).
    pub max_depth: usize,
    /// How a thread found running is captured.
    pub running: RunningCapture,
}

impl CaptureOptions {
    /// `unwinder` and `max_depth`, capturing running threads the default way ([`RunningCapture::Auto`]).
    ///
    /// ```
    /// use loopscope_probes::stack::{CaptureOptions, RunningCapture, Unwinder};
    /// let o = CaptureOptions::new(Unwinder::Dwarf, 64);
    /// assert_eq!(o.running, RunningCapture::Auto);
    /// ```
    pub fn new(unwinder: Unwinder, max_depth: usize) -> CaptureOptions {
        CaptureOptions { unwinder, max_depth, running: RunningCapture::Auto }
    }
}

/// How [`StackSampler::capture`] takes the stack of a thread that is running (not blocked in a system call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RunningCapture {
    /// A perf-event sample of the thread's user registers and stack, taken by the kernel's timer interrupt once
    /// the thread has run 100 µs of its own code ([`CaptureMethod::PerfSample`]; x86_64 Linux, where perf events
    /// allow it, as they do for a process's own threads at `perf_event_paranoid` 2). The thread is never
    /// signalled, so no system call it enters can fail with `EINTR` because of the capture. Where perf sampling
    /// is unavailable ([`StackSampler::perf_sampling`] says why), falls back to [`RunningCapture::Signal`].
    #[default]
    Auto,
    /// The signal handler, once the thread has proven to run its own code (its CPU clock advanced 50 µs while
    /// `/proc` showed it running). A thread can still enter a call that does not restart in the microseconds
    /// before the signal arrives, which then fails with `EINTR`: rare, but not impossible.
    Signal,
}

/// How a stack was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureMethod {
    /// The thread ran the sampler's signal handler, which unwound its own stack. Used for running threads and
    /// threads blocked in a system call that restarts transparently after a handler (`SA_RESTART`).
    Signal,
    /// The thread was blocked in a system call that a signal would have interrupted with `EINTR` (or in
    /// uninterruptible sleep): it was not signalled, and its stack was unwound from outside, from the stack and
    /// instruction pointers `/proc/self/task/<tid>/syscall` shows, while it slept.
    Outside,
    /// The thread was running its own code: the kernel sampled its user registers and copied its stack (a
    /// perf-event sample, [`RunningCapture::Auto`]), which was unwound afterwards. No signal was sent.
    PerfSample,
}

/// A captured stack: raw instruction pointers, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStack {
    /// The thread the stack belongs to.
    pub tid: Tid,
    /// Instruction pointers, innermost first. The first [`probe_frames`](Self::probe_frames) entries are the
    /// signal handler and the kernel's signal trampoline; `ips[probe_frames]` is the exact instruction the thread
    /// was interrupted at; the rest are return addresses.
    pub ips: Vec<usize>,
    /// The number of leading entries of `ips` that belong to the probe itself (handler, unwinder, trampoline).
    pub probe_frames: usize,
    /// More frames existed beyond `max_depth`.
    pub truncated: bool,
    /// The unwinder could not get past the signal frame (or the frame-pointer chain was invalid right away): only
    /// the interrupted instruction is known.
    pub incomplete: bool,
    /// The unwinder used.
    pub unwinder: Unwinder,
    /// The stack pointer of the thread when it was interrupted.
    pub stack_pointer: usize,
    /// From sending the signal to seeing the handler's result (for [`CaptureMethod::Outside`]: the whole
    /// outside unwind).
    pub latency: Duration,
    /// How the stack was captured. For [`CaptureMethod::Outside`], `probe_frames` is 0, `ips[0]` is the
    /// instruction after the system call (inside libc's wrapper) and `unwinder` is [`Unwinder::Dwarf`]; for
    /// [`CaptureMethod::PerfSample`], the same with `ips[0]` the instruction the thread was sampled at.
    pub method: CaptureMethod,
}

impl RawStack {
    /// The thread's own frames: `ips` without the probe's handler frames.
    ///
    /// ```
    /// use loopscope_probes::stack::{CaptureMethod, RawStack, Unwinder};
    /// let raw = RawStack { tid: 1, ips: vec![1, 2, 3], probe_frames: 1, truncated: false, incomplete: false,
    ///     unwinder: Unwinder::Dwarf, stack_pointer: 0, latency: Default::default(), method: CaptureMethod::Signal };
    /// assert_eq!(raw.thread_ips(), &[2, 3]);
    /// ```
    pub fn thread_ips(&self) -> &[usize] {
        self.ips.get(self.probe_frames..).unwrap_or(&[])
    }
}

/// Why a [`StackSampler::capture`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The thread could not be registered with the sampler.
    #[error("cannot prepare thread {tid} for stack capture")]
    Prepare {
        /// The thread.
        tid: Tid,
        /// Why.
        #[source]
        source: ProbeError,
    },
    /// The thread does not exist (any more) in this process (`tgkill` returned `ESRCH`).
    #[error("thread {tid} does not exist in this process")]
    NoSuchThread {
        /// The thread.
        tid: Tid,
        /// The `tgkill` error.
        #[source]
        source: std::io::Error,
    },
    /// `tgkill` failed for another reason (e.g. `EAGAIN`: the realtime signal queue is full).
    #[error("sending signal {signal} to thread {tid} failed")]
    Signal {
        /// The thread.
        tid: Tid,
        /// The signal.
        signal: i32,
        /// The `tgkill` error.
        #[source]
        source: std::io::Error,
    },
    /// The handler did not finish within the timeout. Typical causes: the thread is in uninterruptible sleep
    /// (`D`: disk I/O, page-in, vfork), is stopped, or blocks the signal. A late handler will not write anything.
    #[error("{}", timeout_message(*.tid, *.timeout, *.state, *.handler_started))]
    Timeout {
        /// The thread.
        tid: Tid,
        /// The timeout that expired.
        timeout: Duration,
        /// The thread's state letter when the timeout expired, if it could be read.
        state: Option<char>,
        /// The handler had already started unwinding (it was slow, e.g. descheduled), as opposed to never running.
        handler_started: bool,
    },
    /// Another capture of the same thread, or a late handler of an earlier one, still holds the thread's slot.
    #[error("stack capture of thread {tid} is busy (concurrent capture or a late handler still running)")]
    Busy {
        /// The thread.
        tid: Tid,
    },
    /// The thread is blocked in a system call that a signal would interrupt with `EINTR` (signal(7): `poll`,
    /// `epoll_wait`, `nanosleep`, socket calls with a timeout, ...), so it was not signalled, and unwinding it from
    /// outside did not work.
    #[error(
        "thread {tid} is blocked in {call}; it was not signalled (that would make the call fail with EINTR) and unwinding it from outside failed: {reason}"
    )]
    NotInterruptible {
        /// The thread.
        tid: Tid,
        /// The system call, and why it must not be interrupted.
        call: String,
        /// Why the outside unwind failed.
        reason: String,
    },
    /// Stack capture was switched off for the rest of the process (for example because the application changed
    /// the sampler's signal disposition); the string says why.
    #[error("stack capture is off: {0}")]
    Disabled(String),
    /// Stack capture is not supported on this platform, or the sampler is not installed.
    #[error("stack capture is not supported here: {0}")]
    Unsupported(&'static str),
    /// An invalid option (e.g. `max_depth` out of range).
    #[error("invalid capture option: {0}")]
    InvalidOption(String),
}

fn timeout_message(tid: Tid, timeout: Duration, state: Option<char>, started: bool) -> String {
    let why = match (state, started) {
        (_, true) => "the handler started but did not finish (descheduled?)".to_owned(),
        (Some('D'), _) => {
            "the thread is in uninterruptible sleep (D): signals are delivered only when it wakes".to_owned()
        }
        (Some('T') | Some('t'), _) => "the thread is stopped".to_owned(),
        (Some(c), _) => format!("thread state {c}; it may block the signal"),
        (None, _) => "thread state unknown".to_owned(),
    };
    format!("no stack from thread {tid} within {timeout:?}: {why}")
}

/// The process-wide stack sampler. Cheap to share (`Arc`), `Send + Sync`; all methods take `&self`.
pub struct StackSampler {
    config: SamplerConfig,
    signal: i32,
    warm_up: Result<Duration, String>,
    /// Why DWARF unwinding in the handler is refused on this system (then frame pointers are used instead).
    dwarf_refused: Option<String>,
}

impl fmt::Debug for StackSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackSampler")
            .field("signal", &self.signal)
            .field("config", &self.config)
            .field("warm_up", &self.warm_up)
            .field("dwarf_refused", &self.dwarf_refused)
            .finish()
    }
}

impl StackSampler {
    /// Installs the signal handler process-wide and warms the unwinder.
    ///
    /// The handler is installed once per process and never removed. A second call returns the same sampler when
    /// its configuration is compatible (same unwinder and depth; `signal` `None` or equal to the installed one),
    /// and [`ProbeError::AlreadyInstalled`] otherwise.
    ///
    /// Errors: [`ProbeError::SignalInUse`] / [`ProbeError::InvalidSignal`] for a bad explicit signal,
    /// [`ProbeError::NoFreeSignal`], [`ProbeError::InvalidConfig`] (depth), [`ProbeError::Unsupported`] off Linux.
    ///
    /// ```
    /// use loopscope_probes::stack::{SamplerConfig, StackSampler};
    /// # #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))] {
    /// let a = StackSampler::install(SamplerConfig::default()).unwrap();
    /// let b = StackSampler::install(SamplerConfig::default()).unwrap();
    /// assert!(std::sync::Arc::ptr_eq(&a, &b));
    /// assert!(a.signal() >= libc::SIGRTMIN());
    /// # }
    /// ```
    pub fn install(config: SamplerConfig) -> Result<Arc<StackSampler>, ProbeError> {
        if config.max_depth == 0 || config.max_depth > MAX_DEPTH_LIMIT {
            return Err(ProbeError::InvalidConfig(format!(
                "max_depth {} is outside 1..={MAX_DEPTH_LIMIT}",
                config.max_depth
            )));
        }
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::install(config)
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            let _ = config;
            Err(ProbeError::Unsupported { what: "stack capture" })
        }
    }

    /// Returns the sampler if [`install`](Self::install) succeeded earlier in this process.
    pub fn installed() -> Option<Arc<StackSampler>> {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::installed()
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            None
        }
    }

    /// The signal number the handler is installed for.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// The configuration in force (as requested; see [`unwinder`](Self::unwinder) for the unwinder used).
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Whether running threads are captured from perf-event samples, without a signal ([`RunningCapture::Auto`]),
    /// and if not, why: perf events refused (`kernel.perf_event_paranoid` above 2, a seccomp policy, a kernel
    /// without them), or not implemented on this architecture. Then running threads are signalled.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))] {
    /// let sampler = loopscope_probes::stack::StackSampler::install(Default::default()).unwrap();
    /// match sampler.perf_sampling() {
    ///     Ok(()) => println!("running threads are sampled without a signal"),
    ///     Err(why) => println!("running threads are signalled: {why}"),
    /// }
    /// # }
    /// ```
    pub fn perf_sampling(&self) -> Result<(), &str> {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            perf_sample::usable()
        }
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        {
            Err("perf sampling of running threads is implemented for x86_64 Linux only")
        }
    }

    /// Why [`Unwinder::Dwarf`] is not used in the signal handler on this system, if it is not: it needs glibc >=
    /// 2.35 (`_dl_find_object`) and libgcc >= 12, checked at install. Captures that ask for DWARF then walk frame
    /// pointers instead (threads unwound from outside are not affected: that DWARF unwinder runs on the capturing
    /// thread).
    pub fn dwarf_refused(&self) -> Option<&str> {
        self.dwarf_refused.as_deref()
    }

    /// The unwinder the signal handler really uses for the configured one (see
    /// [`dwarf_refused`](Self::dwarf_refused)).
    pub fn unwinder(&self) -> Unwinder {
        self.effective(self.config.unwinder)
    }

    fn effective(&self, asked: Unwinder) -> Unwinder {
        match asked {
            Unwinder::Dwarf if self.dwarf_refused.is_some() => Unwinder::FramePointer,
            other => other,
        }
    }

    /// How long the warm-up capture at install took (the first DWARF unwind loads unwind tables and faults in
    /// their pages), or why it failed. A failed warm-up does not disable the sampler.
    pub fn warm_up(&self) -> Result<Duration, &str> {
        self.warm_up.as_ref().copied().map_err(|e| e.as_str())
    }

    /// Why stack capture is switched off for the rest of the process, if it is: the application changed the
    /// sampler's signal disposition after install (reset it to `SIG_DFL`, ignored it, or installed its own
    /// handler). The disposition is checked before every signal and by this call, so the answer reflects
    /// changes made since install; once off, captures fail with [`CaptureError::Disabled`].
    pub fn disabled(&self) -> Option<String> {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::check_disposition(self.signal).err()
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            None
        }
    }

    /// Reserves the preallocated per-thread storage for `tid`. Callable from any thread, idempotent, and cheap
    /// after the first call for a slot (a lock-free lookup). Fails with [`ProbeError::TableFull`] when
    /// 1024 threads are registered.
    pub fn prepare_thread(&self, tid: Tid) -> Result<(), ProbeError> {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::prepare(tid)
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            let _ = tid;
            Err(ProbeError::Unsupported { what: "stack capture" })
        }
    }

    /// Releases the slot of a thread that exited, so the table stays bounded. Harmless for unknown tids.
    pub fn forget_thread(&self, tid: Tid) {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        imp::forget(tid);
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        let _ = tid;
    }

    /// Captures the stack of thread `tid` with the configured unwinder and depth.
    ///
    /// Sends the signal with `tgkill` and waits, never longer than `timeout`, for the handler. A thread that has
    /// not been [`prepare_thread`](Self::prepare_thread)d is prepared first (which allocates once). Concurrent
    /// callers are safe: captures of the same thread are serialized (each waiting at most its own timeout).
    pub fn capture(&self, tid: Tid, timeout: Duration) -> Result<RawStack, CaptureError> {
        self.capture_with(tid, timeout, CaptureOptions::new(self.config.unwinder, self.config.max_depth))
    }

    /// Like [`capture`](Self::capture), with a per-capture unwinder and depth.
    pub fn capture_with(&self, tid: Tid, timeout: Duration, options: CaptureOptions) -> Result<RawStack, CaptureError> {
        if options.max_depth == 0 || options.max_depth > MAX_DEPTH_LIMIT {
            return Err(CaptureError::InvalidOption(format!(
                "max_depth {} is outside 1..={MAX_DEPTH_LIMIT}",
                options.max_depth
            )));
        }
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let options = CaptureOptions { unwinder: self.effective(options.unwinder), ..options };
            imp::capture(self.signal, tid, timeout, options)
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            let _ = (tid, timeout);
            Err(CaptureError::Unsupported("needs Linux on x86_64 or aarch64"))
        }
    }

    /// Whether `tid` currently has a slot (lock-free lookup).
    pub fn is_prepared(&self, tid: Tid) -> bool {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::is_prepared(tid)
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            let _ = tid;
            false
        }
    }

    /// The threads currently registered, in no particular order.
    pub fn prepared_tids(&self) -> Vec<Tid> {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::prepared_tids()
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            Vec::new()
        }
    }

    /// The number of threads currently registered.
    pub fn prepared_threads(&self) -> usize {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            imp::prepared_count()
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            0
        }
    }
}
