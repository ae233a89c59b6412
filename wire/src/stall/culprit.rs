//! What the probes found about a stall: the [`Culprit`], its stack samples (of [`Frame`]s, defined in
//! `loopscope-types`), and the hardware counters. Split out of `stall.rs`, which holds the events that carry them.

use loopscope_types::{Classification, Frame, FrameOrigin};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared [`Frame`] keeps the stream's encoding: the symbolizer's two fields are neither written nor
    /// read, so a frame is the same bytes as the five-field frame the wire defined before (recordings and
    /// older peers read it unchanged).
    #[test]
    fn a_frame_encodes_as_its_five_stream_fields() {
        #[derive(serde::Serialize)]
        struct StreamFrame {
            ip: u64,
            function: Option<String>,
            file: Option<String>,
            line: Option<u32>,
            origin: FrameOrigin,
        }
        let f = Frame {
            ip: 0x5555_0000_1234,
            function: Some("app::handler".into()),
            file: Some("src/main.rs".into()),
            line: Some(42),
            origin: FrameOrigin::User,
            inlined: true,
            object: Some("/usr/bin/app".into()),
        };
        let plain = StreamFrame {
            ip: f.ip,
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
            origin: f.origin,
        };
        let bytes = postcard::to_allocvec(&f).expect("encodes");
        assert_eq!(bytes, postcard::to_allocvec(&plain).expect("encodes"));
        let back: Frame = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, Frame { inlined: false, object: None, ..f });
    }
}
