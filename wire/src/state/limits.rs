//! What a [`State`](super::State) keeps at most, and what it dropped to stay within that.

/// The most values one [`History`](super::History) or collection of a [`State`](super::State) keeps. See [`State::with_limits`](super::State::with_limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Live tasks tracked (default 1,000,000). Further tasks are dropped and counted.
    pub max_tasks: usize,
    /// Recently finished tasks kept (default 1,024).
    pub max_finished: usize,
    /// Spawn locations tracked (default 100,000).
    pub max_locations: usize,
    /// Workers tracked (default 4,096).
    pub max_workers: usize,
    /// Stalls in the log (default 256).
    pub max_stalls: usize,
    /// Probe statuses kept (default 256).
    pub max_probes: usize,
    /// Samples kept per history series (default 120: 30 s at the default 250 ms interval).
    pub history: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_tasks: 1_000_000,
            max_finished: 1_024,
            max_locations: 100_000,
            max_workers: 4_096,
            max_stalls: 256,
            max_probes: 256,
            history: 120,
        }
    }
}

/// What the [`State`](super::State) itself dropped to stay within its [`StateLimits`], and ticks it could not use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDropped {
    /// Task samples not kept because `max_tasks` tasks were already tracked.
    pub tasks: u64,
    /// Locations not kept because `max_locations` were already tracked.
    pub locations: u64,
    /// Worker samples not kept because `max_workers` were already tracked.
    pub workers: u64,
    /// Stall log entries evicted to make room for newer ones.
    pub stalls_evicted: u64,
    /// Probe statuses beyond `max_probes`.
    pub probes: u64,
}
