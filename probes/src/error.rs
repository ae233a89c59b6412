//! The crate-wide error type.

use std::io;
use std::path::PathBuf;

use crate::Tid;

/// Errors of the probes (thread sampling, stack sampler installation and thread preparation).
///
/// Every variant that stems from a failed system call keeps the [`io::Error`] as its `source`.
///
/// ```
/// use loopscope_probes::{ProbeError, thread};
///
/// // A thread id that cannot exist in this process.
/// match thread::sample(i32::MAX) {
///     Err(ProbeError::NoSuchThread { tid, .. }) => assert_eq!(tid, i32::MAX),
///     Err(ProbeError::Unsupported { .. }) => {} // not Linux
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The probe needs a Linux kernel (or a CPU architecture the stack sampler knows).
    #[error("{what} is not supported on this platform (needs Linux on x86_64 or aarch64)")]
    Unsupported {
        /// What was attempted.
        what: &'static str,
    },
    /// The thread does not exist in this process (it exited, or the tid belongs to another process).
    #[error("thread {tid} does not exist in this process")]
    NoSuchThread {
        /// The thread id asked for.
        tid: Tid,
        /// The underlying error (usually `ENOENT` from `/proc` or `ESRCH`).
        #[source]
        source: io::Error,
    },
    /// Reading a `/proc` file (or another OS interface) failed.
    #[error("reading {} failed", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A `/proc` file had an unexpected format.
    #[error("cannot parse {}: {detail}", path.display())]
    Parse {
        /// The file whose content could not be parsed.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Reading a thread's CPU clock failed (and the `/proc` fallback failed as well).
    #[error("reading the CPU clock of thread {tid} failed")]
    CpuClock {
        /// The thread.
        tid: Tid,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configured signal already has a handler (or is ignored): this crate never replaces a disposition it did
    /// not install itself.
    #[error("signal {signal} already has a handler or is ignored; refusing to overwrite the application's disposition")]
    SignalInUse {
        /// The signal that was asked for.
        signal: i32,
    },
    /// The configured signal is not a realtime signal (`SIGRTMIN..=SIGRTMAX`).
    #[error(
        "signal {signal} is not a realtime signal (SIGRTMIN={min}..SIGRTMAX={max}); classic signals such as SIGPROF \
         belong to the application and to profilers"
    )]
    InvalidSignal {
        /// The signal that was asked for.
        signal: i32,
        /// `SIGRTMIN` of this process.
        min: i32,
        /// `SIGRTMAX` of this process.
        max: i32,
    },
    /// Every candidate realtime signal already has a handler.
    #[error("no free realtime signal: every signal in {first}..={last} already has a handler")]
    NoFreeSignal {
        /// First signal tried.
        first: i32,
        /// Last signal tried.
        last: i32,
    },
    /// `sigaction(2)` failed.
    #[error("sigaction({signal}) failed")]
    Sigaction {
        /// The signal.
        signal: i32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The stack sampler is installed already, with a configuration that conflicts with the requested one.
    #[error("the stack sampler is already installed ({installed}); the requested configuration conflicts: {requested}")]
    AlreadyInstalled {
        /// The configuration in force.
        installed: String,
        /// The requested configuration.
        requested: String,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The fixed table of per-thread stack buffers is full; call `forget_thread` for threads that exited.
    #[error("the stack sampler's thread table is full ({capacity} threads); forget threads that exited")]
    TableFull {
        /// Number of threads the table holds.
        capacity: usize,
    },
}

impl ProbeError {
    /// Builds an error for a failed `/proc` read, mapping `ENOENT`/`ESRCH` to [`ProbeError::NoSuchThread`].
    pub(crate) fn proc_read(tid: Tid, path: impl Into<PathBuf>, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ProbeError::NoSuchThread { tid, source },
            _ => ProbeError::Io { path: path.into(), source },
        }
    }
}
