//! A thread's scheduler clocks as the slot keeps them ([`Clocks`]), the reading a thread takes as it registers
//! ([`Birth`]), and the off-CPU time of the hooks' own readings (`off_cpu_since`): split out of `slots.rs`.

use std::time::Duration;

/// A thread's scheduler clocks at one moment: CPU time and run-queue wait in nanoseconds, and its voluntary
/// switches (how many times it blocked: see `loopscope_probes::thread::SchedTimes`). `None` where unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Clocks {
    pub(crate) cpu_ns: Option<u64>,
    pub(crate) run_queue_ns: Option<u64>,
    pub(crate) switches: Option<u64>,
}

impl Clocks {
    /// The calling thread's clocks now (`own_sched_times`: no lock, no allocation, errno kept, so the hooks
    /// may call it). `u64::MAX` is kept free: it means "unreadable" in a [`Closing`](super::Closing).
    pub(crate) fn own() -> Clocks {
        loopscope_probes::thread::own_sched_times().map_or_else(Clocks::default, Clocks::from_sched)
    }

    /// Figures from the thread's own reading, in nanoseconds.
    pub(super) fn of(cpu: Option<Duration>, run_queue: Option<Duration>, switches: Option<u64>) -> Clocks {
        Clocks::from_sched(loopscope_probes::thread::SchedTimes {
            cpu,
            run_queue_wait: run_queue,
            voluntary_switches: switches,
        })
    }

    /// The probes' figures in nanoseconds.
    pub(crate) fn from_sched(t: loopscope_probes::thread::SchedTimes) -> Clocks {
        let ns = |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1));
        Clocks {
            cpu_ns: ns(t.cpu),
            run_queue_ns: ns(t.run_queue_wait),
            switches: t.voluntary_switches.map(|n| n.min(u64::MAX - 1)),
        }
    }
}

/// A thread's scheduler clocks as it registered with the agent (taken by the thread itself, on its way into
/// its first poll): an opening reading for that poll (see `watchdog::own_reading_before`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Birth {
    /// The agent's raw clock when it was taken.
    pub(crate) raw: u64,
    pub(crate) clocks: Clocks,
}

impl Birth {
    /// The calling thread's clocks now; `None` where they can't be read.
    pub(crate) fn now() -> Option<Birth> {
        let raw = crate::os::clock().raw();
        let clocks = Clocks::own();
        (clocks.cpu_ns.is_some() || clocks.run_queue_ns.is_some()).then_some(Birth { raw, clocks })
    }
}

/// How long the calling thread spent off its CPU since it read its CPU clock (`cpu`) and then `raw`: the wall
/// time since, less the CPU time since. Zero where the CPU clock can't be read.
pub(super) fn off_cpu_since(clock: &quanta::Clock, raw: u64, cpu: Option<Duration>) -> Duration {
    let now = loopscope_probes::thread::own_cpu_time();
    off_cpu_between(clock, (raw, cpu), (clock.raw(), now))
}

/// The calling thread's time off its CPU between two of its own `(raw clock, CPU clock)` readings: the wall
/// time between them less the CPU time between them. Zero where either CPU clock is missing.
pub(super) fn off_cpu_between(
    clock: &quanta::Clock,
    (raw_a, cpu_a): (u64, Option<Duration>),
    (raw_b, cpu_b): (u64, Option<Duration>),
) -> Duration {
    let (Some(a), Some(b)) = (cpu_a, cpu_b) else { return Duration::ZERO };
    Duration::from_nanos(clock.delta_as_nanos(raw_a, raw_b)).saturating_sub(b.saturating_sub(a))
}
