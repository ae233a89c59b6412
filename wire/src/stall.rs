//! Stall events: what a stall was (thread, task, location, phase, time split) and the events that carry it.
//! What the probes found is in `culprit.rs`, the protocol-3.2 form that sends only what changed in `part.rs`.

mod culprit;
mod part;

pub use culprit::{CounterDeltas, Culprit, CulpritSample};
pub use loopscope_types::Frame;
pub use part::{CopiedFrames, SAMPLE_NOT_RECEIVED, StallPart};

use loopscope_types::{Classification, FrameOrigin};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// An OS thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Linux thread id (`gettid`), or 0 where unknown.
    pub tid: i32,
    /// Thread name, e.g. `tokio-runtime-worker`.
    pub name: Option<String>,
}

/// A source location: where a task was spawned, or a stack frame's position.
///
/// # Examples
/// ```
/// use loopscope_wire::Location;
/// let loc = Location::new("src/handlers.rs", 42, 9);
/// assert_eq!(loc.to_string(), "src/handlers.rs:42:9");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// Source file, as the compiler recorded it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl Location {
    /// A location from its parts.
    pub fn new(file: impl Into<String>, line: u32, column: u32) -> Self {
        Location { file: file.into(), line, column }
    }

    /// The location a `#[track_caller]` function was called from, e.g. `tokio::spawn`'s caller.
    pub fn from_std(loc: &std::panic::Location<'_>) -> Self {
        Location { file: loc.file().to_string(), line: loc.line(), column: loc.column() }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Which phase of a stall a [`StallEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StallPhase {
    /// The poll has just passed the stall threshold and is **still running**.
    Started,
    /// The poll is still running and has passed another doubling of the threshold (2×, 4×, 8×, ...).
    Updated,
    /// The poll returned; `elapsed` is its final duration.
    Ended,
}

/// What kind of blocking a stall is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StallKind {
    /// A task poll is holding a worker thread, so every other task queued on that worker waits.
    WorkerBlocked,
    /// A task called `tokio::task::block_in_place`. Tokio handed the worker's core (and its queue) to another
    /// thread, so other tasks keep running; the thread that blocks is no longer a worker. Reported apart
    /// because it is legitimate use of the API, though it still occupies a thread and the task itself.
    BlockInPlace,
    /// A poll of a future that is not a task: the body of `#[loopscope::main]` or of a `block_on`, or any
    /// future timed with `Agent::instrument`. On a current-thread runtime that body shares its thread with every
    /// task. `task_id` is an id loopscope gave the future, and `location` where it was instrumented.
    BlockOn,
}

impl fmt::Display for StallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StallKind::WorkerBlocked => "worker blocked",
            StallKind::BlockInPlace => "block_in_place",
            StallKind::BlockOn => "block_on body",
        })
    }
}

/// A poll that is running right now on some thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InFlightPoll {
    /// The task being polled.
    pub task_id: u64,
    /// Where that task was spawned, when known.
    pub location: Option<Location>,
    /// How long the poll has been running when the value was read.
    pub elapsed: Duration,
}

/// One report about a poll that blocked its thread past the stall threshold.
///
/// A stall produces one `Started` event while the poll is still running, `Updated` events at 2×, 4×, ... the
/// threshold, and one `Ended` event with the final duration. All share `stall_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallEvent {
    /// Identifies the stall across its events; unique within one agent.
    pub stall_id: u64,
    /// Which phase this event reports.
    pub phase: StallPhase,
    /// A plain stalled worker, or `block_in_place`.
    pub kind: StallKind,
    /// The agent (runtime) that saw it.
    pub runtime_id: u64,
    /// Index of the worker that is stalled, as in tokio's `RuntimeMetrics`, when known.
    pub worker: Option<u32>,
    /// The OS thread running the poll.
    pub thread: ThreadInfo,
    /// The task being polled; 0 when unknown: an agent in stable mode (no tokio task hooks) finds a stall from
    /// the worker's busy span and its stack, not from the task's poll, unless the task was spawned with
    /// `Agent::spawn`.
    pub task_id: u64,
    /// Where the task was spawned, when known (never in stable mode, unless spawned with `Agent::spawn`).
    pub location: Option<Location>,
    /// How long the poll had run when this event was produced; for `Ended`, the poll's final duration.
    pub elapsed: Duration,
    /// The stall threshold in force.
    pub threshold: Duration,
    /// Wall-clock time of the event, in nanoseconds since the Unix epoch.
    pub at_unix_nanos: u64,
    /// Reports suppressed by the rate limit since the previous event that was delivered.
    pub suppressed: u64,
    /// True when the watchdog saw the poll while it was still running. False for a stall found only after
    /// it ended (the watchdog thread was starved by the OS, or the stall was shorter than its interval): such
    /// a stall has a single `Ended` event and no stack.
    pub caught_in_flight: bool,
    /// What the thread was doing, from the OS probes, when available.
    pub culprit: Option<Culprit>,
    /// Where the poll's wall time went: on a CPU, blocked, or runnable but waiting for a CPU (from the
    /// kernel's accounting of the thread). `None` when the thread could not be measured (probes off, or a
    /// stall found after it ended with no look during it); the poll's own time is then taken to be its wall
    /// time.
    #[serde(default)]
    pub time: Option<StallTime>,
    /// Set when the stalled task is one of loopscope's own (a lag probe, the shutdown sentinel): such a
    /// stall is the OS or the app delaying loopscope, never the app's own code, and `check` never counts it.
    #[serde(default)]
    pub agent_task: Option<String>,
}

/// How a report names a stall whose task is unknown (task id 0, no location): an agent in stable mode, without
/// tokio's task hooks; the words say how to get them.
pub const UNKNOWN_TASK: &str = "an unknown task (stable mode has no task hooks: build with --cfg tokio_unstable, or \
                                spawn it with Agent::spawn, to name it)";

impl StallEvent {
    /// A one-line human description, e.g. for logs.
    pub fn summary(&self) -> String {
        let loc = self.location.as_ref().map_or_else(|| "unknown location".to_string(), ToString::to_string);
        let worker = self.worker.map_or_else(|| "thread".to_string(), |w| format!("worker {w}"));
        let what = match self.phase {
            StallPhase::Started | StallPhase::Updated => "has blocked",
            StallPhase::Ended => "blocked",
        };
        let still = match self.phase {
            StallPhase::Started | StallPhase::Updated => " (still running)",
            StallPhase::Ended if !self.caught_in_flight => " (found after it ended)",
            StallPhase::Ended => "",
        };
        let kind = match self.kind {
            StallKind::WorkerBlocked | StallKind::BlockOn => String::new(),
            StallKind::BlockInPlace => " in block_in_place".to_string(),
        };
        let task = match (&self.agent_task, self.kind) {
            (Some(name), _) => format!("loopscope's own task {} ({name})", self.task_id),
            (None, StallKind::BlockOn) => format!("the block_on body at {loc}"),
            (None, _) if self.task_id == 0 && self.location.is_none() => UNKNOWN_TASK.to_string(),
            (None, _) => format!("task {} spawned at {loc}", self.task_id),
        };
        let mut s = format!("{task} {what} {worker} (tid {}){kind} for {:.1?}{still}", self.thread.tid, self.elapsed);
        if let Some(c) = &self.culprit {
            s.push_str(&format!("; {}", c.classification));
            if let Some(t) = &self.time {
                s.push_str(&format!(" ({})", t.describe()));
            }
            if c.classification != Classification::Preempted
                && let Some(f) = c.first_user_frame()
            {
                s.push_str(&format!(" in {}", f.display_short()));
            }
        } else if let Some(t) = &self.time {
            s.push_str(&format!("; {}", t.describe()));
        }
        s
    }

    /// The poll's own time: its wall time less the time its thread spent runnable but waiting for a CPU.
    /// This is what `check` holds against `max_poll`. Without measurements it is the wall time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let mut ev = loopscope_wire::example_stall(1, 4, 1);
    /// assert_eq!(ev.self_time(), ev.elapsed);
    /// ev.time = Some(loopscope_wire::StallTime {
    ///     wall: Duration::from_millis(12),
    ///     on_cpu: Duration::from_millis(3),
    ///     off_cpu: Duration::ZERO,
    ///     run_queue: Duration::from_millis(9),
    ///     unmeasured: Duration::ZERO,
    ///     estimated: false,
    /// });
    /// assert_eq!(ev.self_time(), Duration::from_millis(3));
    /// ```
    pub fn self_time(&self) -> Duration {
        self.time.as_ref().map_or(self.elapsed, StallTime::self_time)
    }

    /// Whether the OS, not the task's code, made this poll a stall at `limit`: its wall time passed the limit
    /// but its own time ([`self_time`](Self::self_time)) did not, because its thread waited for a CPU.
    /// Always false without measurements (an unmeasured stall is never explained away), and for a poll that
    /// had not returned yet (its own time could still grow).
    pub fn delayed_by_os(&self, limit: Duration) -> bool {
        self.phase == StallPhase::Ended
            && self.time.as_ref().is_some_and(|t| t.run_queue > Duration::ZERO && t.self_time() < limit)
    }
}

/// Where a stalled poll's wall time went, from the kernel's scheduler accounting of its thread
/// (`/proc/self/task/<tid>/schedstat` and the thread's CPU clock), read when the poll passed a fraction of the
/// threshold, while it ran, and just after it ended.
///
/// `wall = on_cpu + off_cpu + run_queue + unmeasured`. The part before the first reading (and, for a poll
/// still running, after the latest one) is `unmeasured` and counts as the poll's own time: an estimate errs
/// only toward "blocked", never hides a real stall.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use loopscope_wire::StallTime;
/// let t = StallTime {
///     wall: Duration::from_millis(20),
///     on_cpu: Duration::from_millis(2),
///     off_cpu: Duration::ZERO,
///     run_queue: Duration::from_millis(17),
///     unmeasured: Duration::from_millis(1),
///     estimated: false,
/// };
/// assert_eq!(t.self_time(), Duration::from_millis(3));
/// assert_eq!(t.describe(), "waiting for a CPU 17.0ms of 20.0ms, own time 3.0ms, on CPU 2.0ms");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallTime {
    /// The poll's wall time that these figures split (the event's `elapsed` when they were computed).
    pub wall: Duration,
    /// On a CPU, running the poll (user and kernel time).
    pub on_cpu: Duration,
    /// Off the CPU and not runnable: blocked in a system call, on a lock, or paging in.
    pub off_cpu: Duration,
    /// Runnable but waiting for a CPU: other threads, or the hypervisor, kept the worker off the CPU. Time
    /// that is in neither of the thread's clocks counts here too, not as `off_cpu`, when the thread provably
    /// never blocked (not one voluntary context switch): a virtual CPU taken away by the hypervisor (steal
    /// time), or interrupts on the thread's CPU.
    pub run_queue: Duration,
    /// Not covered by a reading (before the first, or after the latest while the poll still runs); counted
    /// as the poll's own time.
    pub unmeasured: Duration,
    /// True when the readings cover too little of the poll to be exact (the first came late, e.g. because
    /// the machine starved loopscope's watchdog): the figures then lean toward "blocked".
    pub estimated: bool,
}

impl StallTime {
    /// Wall time less run-queue wait: the time the poll itself took.
    pub fn self_time(&self) -> Duration {
        self.wall.saturating_sub(self.run_queue)
    }

    /// The part of the wall time that was measured.
    pub fn measured(&self) -> Duration {
        self.wall.saturating_sub(self.unmeasured)
    }

    /// `part` as a share of the wall time (0.0..=1.0).
    pub fn share(&self, part: Duration) -> f64 {
        if self.wall.is_zero() { 0.0 } else { (part.as_secs_f64() / self.wall.as_secs_f64()).min(1.0) }
    }

    /// One clause for logs and reports, e.g. `on CPU 29.8ms of 30.1ms` or
    /// `waiting for a CPU 9.1ms of 12.4ms, own time 3.3ms, on CPU 3.0ms`.
    pub fn describe(&self) -> String {
        let est = if self.estimated { " (estimated)" } else { "" };
        if self.measured().is_zero() {
            format!("not measured yet at {:.1?}", self.wall)
        } else if self.run_queue * 5 >= self.wall {
            format!(
                "waiting for a CPU {:.1?} of {:.1?}, own time {:.1?}, on CPU {:.1?}{est}",
                self.run_queue,
                self.wall,
                self.self_time(),
                self.on_cpu
            )
        } else if self.off_cpu > self.on_cpu {
            format!("off CPU {:.1?} of {:.1?}{est}", self.off_cpu, self.wall)
        } else {
            format!("on CPU {:.1?} of {:.1?}{est}", self.on_cpu, self.wall)
        }
    }
}

/// State of one probe, as reported to users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// Probe name, e.g. `stack`, `perf:cycles`.
    pub name: String,
    /// Whether it works in this process.
    pub active: bool,
    /// Why not, or what it uses instead.
    pub detail: String,
}

/// A stall as a whole: its latest state, for summaries and CI reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallSummary {
    /// The latest event of the stall (its `Ended` event once the poll returned).
    pub last: StallEvent,
    /// Whether the poll has returned.
    pub ended: bool,
}

/// A stall as deep as real ones, for tests and benchmarks of sizes and encodings: `samples` samples of a
/// `depth`-frame stack of long, distinct generic function names (the shape of a tokio stack).
#[doc(hidden)]
pub fn example_stall(stall_id: u64, depth: u64, samples: usize) -> StallEvent {
    let frames: Vec<Frame> = (0..depth)
        .map(|i| Frame {
            ip: 0x5555_0000_0000 + i * 0x40,
            function: Some(format!(
                "tokio::runtime::task::harness::Harness<app::handlers::Handler{i}<alloc::sync::Arc<\
                 tokio::runtime::scheduler::multi_thread::handle::Handle>>, S>::poll_inner::{{{{closure}}}}"
            )),
            file: Some(format!("/rustc/0123456789abcdef/library/core/src/future/module{}.rs", i % 7)),
            line: Some(100 + (i % 1000) as u32),
            origin: if i == 5 { FrameOrigin::User } else { FrameOrigin::Runtime },
            inlined: false,
            object: None,
        })
        .collect();
    let sample = CulpritSample {
        at_elapsed: Duration::from_millis(10),
        frames,
        symbolized: true,
        stack_error: None,
        state: Some('R'),
        syscall: None,
        fd_target: None,
    };
    StallEvent {
        stall_id,
        phase: StallPhase::Ended,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 4242, name: Some("tokio-runtime-worker".into()) },
        task_id: stall_id,
        location: Some(Location::new("src/handlers.rs", 42, 9)),
        elapsed: Duration::from_millis(120),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 1_700_000_000_000_000_000,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: Some(Culprit {
            classification: Classification::CpuBound,
            reason: "on CPU 99% of the time over 110ms".into(),
            on_cpu_ratio: Some(0.99),
            run_queue_ratio: Some(0.0),
            counters: None,
            voluntary_switches: Some(0),
            involuntary_switches: Some(1),
            samples: vec![sample; samples],
            stack_moved: Some(false),
        }),
    }
}
