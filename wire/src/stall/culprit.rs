//! What the probes found about a stall: the [`Culprit`], its stack samples and their [`Frame`]s, and the
//! hardware counters. Split out of `stall.rs`, which holds the events that carry them.

use loopscope_types::{Classification, FrameOrigin};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One symbolized stack frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Instruction pointer.
    pub ip: u64,
    /// Demangled function name, without the hash suffix.
    pub function: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Whose code this is.
    pub origin: FrameOrigin,
}

impl Frame {
    /// `function (file:line)`, shortened for one-line displays.
    pub fn display_short(&self) -> String {
        let func = self.function.as_deref().unwrap_or("??");
        match (&self.file, self.line) {
            (Some(file), Some(line)) => {
                let short = file.rsplit('/').take(2).collect::<Vec<_>>();
                let short = short.into_iter().rev().collect::<Vec<_>>().join("/");
                format!("{func} ({short}:{line})")
            }
            _ => func.to_string(),
        }
    }
}

/// One look at the blocked thread: its stack and state at a point of the stall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CulpritSample {
    /// How long the poll had run when the sample was taken.
    pub at_elapsed: Duration,
    /// The stack, innermost frame first. Empty when the capture failed (see `stack_error`).
    pub frames: Vec<Frame>,
    /// False while the frames are raw addresses still waiting for symbols (the first report of a stall is
    /// never delayed for symbolization; a later event of the same stall carries the names).
    pub symbolized: bool,
    /// Why there is no stack, when there is none.
    pub stack_error: Option<String>,
    /// Scheduler state letter from `/proc` (`R` running, `S` sleeping, `D` disk sleep, ...).
    pub state: Option<char>,
    /// The system call the thread was in, by name.
    pub syscall: Option<String>,
    /// What the system call's file descriptor points to.
    pub fd_target: Option<String>,
}

/// What the probes learned about a stall's culprit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    /// How the thread spent the stall.
    pub classification: Classification,
    /// One line: why this classification.
    pub reason: String,
    /// Share of the measured wall time the thread spent on a CPU (0.0..=1.0), once two samples exist.
    pub on_cpu_ratio: Option<f64>,
    /// Share of the measured wall time the thread was runnable but waiting for a CPU: a high value means the
    /// OS (CPU contention, or the hypervisor) stalled the worker, not the task's code.
    pub run_queue_ratio: Option<f64>,
    /// Changes in the thread's perf counters over the measured part of the stall, where perf is available.
    pub counters: Option<CounterDeltas>,
    /// Voluntary context switches during the measured part of the stall.
    pub voluntary_switches: Option<u64>,
    /// Involuntary context switches during the measured part of the stall.
    pub involuntary_switches: Option<u64>,
    /// Samples at 1×, 2×, 4× ... the threshold; the first was taken when the stall was flagged.
    pub samples: Vec<CulpritSample>,
    /// Whether the user-code part of the stack changed between the first and the latest sample.
    pub stack_moved: Option<bool>,
}

impl Culprit {
    /// The latest sample's stack (or the first one that has frames).
    pub fn frames(&self) -> &[Frame] {
        self.samples.iter().rev().find(|s| !s.frames.is_empty()).map_or(&[], |s| s.frames.as_slice())
    }

    /// The innermost frame of the application's own code, which is usually the culprit.
    pub fn first_user_frame(&self) -> Option<&Frame> {
        self.frames().iter().find(|f| f.origin == FrameOrigin::User)
    }
}

/// Changes in one thread's perf counters. A counter that is unavailable (no PMU, not permitted) is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDeltas {
    /// Time on a CPU (perf task-clock).
    pub task_clock: Option<Duration>,
    /// Page faults.
    pub page_faults: Option<u64>,
    /// Context switches.
    pub context_switches: Option<u64>,
    /// CPU cycles (needs a hardware PMU).
    pub cycles: Option<u64>,
    /// Instructions retired (needs a hardware PMU).
    pub instructions: Option<u64>,
}
