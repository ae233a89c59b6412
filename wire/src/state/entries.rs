//! What a [`State`](super::State) hands out: one worker, one spawn location, one stall, and facts about the
//! stream.

use super::history::History;
use crate::Culprit;
use crate::proto::{LocationSample, WorkerSample};
use crate::{Location, StallEvent};

/// One worker: its latest sample and recent history.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    /// The latest sample.
    pub sample: WorkerSample,
    /// Monotonic time of the latest sample, in nanoseconds since the agent started.
    pub uptime_nanos: u64,
    /// Local queue depth per tick.
    pub local_queue: History<u64>,
    /// Busy ratio (0.0..=1.0) per tick interval; see [`rates::worker_busy_ratio`].
    pub busy_ratio: History<f64>,
    /// Polls per second per tick interval.
    pub polls_per_second: History<f64>,
    /// Tasks stolen per second per tick interval.
    pub steals_per_second: History<f64>,
}

/// A spawn location and its counters.
#[derive(Clone, Debug, PartialEq)]
pub struct LocationEntry {
    /// The stream's id for it.
    pub id: u32,
    /// The source location.
    pub location: Location,
    /// Its counters, once the agent sent them.
    pub stats: Option<LocationSample>,
}

/// One stall in the log: the latest of its events, merged by `stall_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct StallEntry {
    /// The latest event (its `Ended` event once the poll returned).
    pub latest: StallEvent,
    /// Wall-clock time of its first event seen, nanoseconds since the Unix epoch.
    pub first_at_unix_nanos: u64,
    /// Whether the poll has returned.
    pub ended: bool,
    /// Events received for it.
    pub events: u32,
    /// The most recent culprit analysis any of its events carried (a later event may come without one).
    pub culprit: Option<Culprit>,
}

/// Facts about the stream itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamFacts {
    /// Full states received (1 per connection, plus one per resync after the client fell behind).
    pub fulls: u64,
    /// Ticks applied.
    pub ticks: u64,
    /// Ticks ignored because they were older than the latest full state (it already included them).
    pub stale_ticks: u64,
    /// Ticks that never arrived, judged from gaps in their sequence numbers.
    pub missed_ticks: u64,
    /// Stall events received.
    pub stall_events: u64,
    /// Frames the agent could not send to this client (it fell behind), as the agent last reported.
    pub client_dropped_frames: u64,
    /// The sequence number of the latest tick applied.
    pub last_tick_seq: Option<u64>,
    /// The latest `Pong` nonce received.
    pub last_pong: Option<u64>,
    /// The agent's reason, when it said goodbye.
    pub goodbye: Option<String>,
    /// The agent's reason, when it refused the connection.
    pub refused: Option<String>,
}
