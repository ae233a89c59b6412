//! OS-level probes for loopscope. All `unsafe`, FFI and signal code of the project lives here, behind safe types.
//!
//! This crate deliberately has no tokio dependency: it knows about OS threads (Linux tids), not tasks. When the
//! loopscope agent notices that a task poll has held a worker thread for too long *while the poll is still
//! running*, it asks this crate what that worker thread is doing:
//!
//! * [`stack`]: the thread's call stack, captured mid-stall from a signal handler, and symbolized afterwards;
//! * [`thread`]: run state, current syscall (with the file behind its fd), CPU time, context switches and page
//!   faults, from `/proc/self/task/<tid>/*` and the thread's CPU clock;
//! * [`perf`]: per-thread perf counters (task-clock, page faults, context switches, cycles, instructions), each
//!   of which may be unavailable independently;
//! * [`classify`]: a pure function that turns two samples (and optionally a stack) into a one-line verdict:
//!   CPU-bound, blocked in a syscall, waiting for a lock, or stuck on page faults.
//!
//! [`Probes`] is the facade the agent uses: it never fails, it degrades, and it reports which probes are active
//! and why the others are not.
//!
//! ```
//! use loopscope_probes::{ProbeConfig, Probes, current_tid};
//!
//! let probes = Probes::new(ProbeConfig::default());
//! for status in probes.status() {
//!     println!("{:<24} {:<5} {}", status.name, status.active, status.detail);
//! }
//! let tid = current_tid();
//! probes.prepare_thread(tid).ok();
//! let snapshot = probes.snapshot(tid, None);
//! assert_eq!(snapshot.tid, tid);
//! ```
//!
//! Linux is the only fully supported platform. On other unix systems the crate compiles, and every probe
//! reports itself as unsupported ([`ProbeError::Unsupported`]).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod classify;
mod error;
#[cfg(target_os = "linux")]
pub mod kernel;
pub mod mem;
pub mod perf;
mod probes;
pub mod sandbox;
pub mod stack;
#[cfg(target_os = "linux")]
mod sys;
pub mod thread;

pub use error::ProbeError;
pub use probes::{Diagnosis, ProbeConfig, ProbeStatus, Probes, StallSnapshot};

/// A Linux thread id (what `gettid(2)` returns; the `tid` in `/proc/self/task/<tid>`).
pub type Tid = i32;

/// Returns the calling thread's kernel thread id (`gettid(2)`).
///
/// On platforms other than Linux there is no such id that the rest of this crate could use; `0` is returned.
///
/// ```
/// let tid = loopscope_probes::current_tid();
/// # #[cfg(target_os = "linux")]
/// assert!(tid > 0);
/// ```
pub fn current_tid() -> Tid {
    #[cfg(target_os = "linux")]
    {
        sys::gettid()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Returns the name of thread `tid` of this process (`/proc/self/task/<tid>/comm`), or `None` if the thread does
/// not exist (any more) or the platform has no such file.
///
/// Linux truncates thread names to 15 bytes, so a tokio worker shows up as e.g. `"tokio-runtime-w"`.
///
/// ```
/// let name = loopscope_probes::thread_name(loopscope_probes::current_tid());
/// # #[cfg(target_os = "linux")]
/// assert!(name.is_some());
/// ```
pub fn thread_name(tid: Tid) -> Option<String> {
    if tid <= 0 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}
