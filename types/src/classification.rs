//! What the probes found a stalled thread doing.

use std::fmt;

/// How the blocked thread spent the stall.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Classification {
    /// The thread was running on a CPU: a busy loop or heavy computation.
    CpuBound,
    /// The thread was blocked in a system call.
    Syscall {
        /// The system call's name, e.g. `read`, `clock_nanosleep`.
        name: String,
        /// What the file descriptor argument points to (a path, `pipe:[..]`, `socket:[..]`), when relevant.
        fd_target: Option<String>,
    },
    /// The thread was waiting for a lock (a futex wait).
    LockWait {
        /// What kind of lock, when the stack tells (e.g. `std::sync::Mutex`).
        detail: Option<String>,
    },
    /// The thread was stalled by page faults (memory paged in from disk).
    PageFault,
    /// The probes could not tell.
    Unknown,
    /// The thread was runnable but the OS kept it off the CPU (other threads, CPU limits, the hypervisor):
    /// the poll's own time stayed under the threshold, its wall time did not. Not the task's fault.
    Preempted,
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Classification::CpuBound => f.write_str("CPU-bound"),
            Classification::Syscall { name, fd_target: Some(t) } => write!(f, "blocked in syscall {name} on {t}"),
            Classification::Syscall { name, fd_target: None } => write!(f, "blocked in syscall {name}"),
            Classification::LockWait { detail: Some(d) } => write!(f, "waiting on a lock ({d})"),
            Classification::LockWait { detail: None } => f.write_str("waiting on a lock"),
            Classification::PageFault => f.write_str("page-faulting"),
            Classification::Unknown => f.write_str("unclassified"),
            Classification::Preempted => f.write_str("delayed by the OS (waiting for a CPU)"),
        }
    }
}
