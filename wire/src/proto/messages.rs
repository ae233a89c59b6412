//! The messages of the live stream.
//!
//! Everything a client learns arrives as a [`ServerMessage`]; the client only ever sends a [`ClientMessage`].
//! The per-task and per-location samples are compact on purpose (ids instead of strings, `u64` nanoseconds
//! instead of [`Duration`]s, varint-encoded by postcard), because a tick may carry tens of thousands of them.
//!
//! **All counters are cumulative** (since the agent started), and every sample carries its timestamps, so a
//! client computes rates from two samples with a pure function (see [`crate::state::rates`]) and a lost frame
//! loses resolution, never correctness.

use super::samples::{GlobalSample, LocationSample, TaskSample, WaitTimes, WorkerSample};
use crate::histogram::LogHistogram;
use crate::snapshot::{Dropped, RuntimeInfo, Totals};
use crate::stall::{Location, ProbeStatus, StallEvent, StallPart};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A protocol version. Two sides can talk when their **majors are equal** (see
/// [`ProtocolVersion::is_compatible_with`]); the minor only grows when new message kinds are added.
///
/// ```
/// use loopscope_wire::proto::ProtocolVersion;
/// let v1_0 = ProtocolVersion { major: 1, minor: 0 };
/// let v1_3 = ProtocolVersion { major: 1, minor: 3 };
/// let v2_0 = ProtocolVersion { major: 2, minor: 0 };
/// assert!(v1_0.is_compatible_with(v1_3));
/// assert!(!v1_3.is_compatible_with(v2_0));
/// assert_eq!(v1_3.to_string(), "1.3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Changes whenever an existing message's encoding changes. Different majors cannot talk.
    pub major: u16,
    /// Grows when message kinds are *added* (new variants at the end of [`ServerMessage`] or
    /// [`ClientMessage`]). A receiver skips kinds it does not know, so any two minors of one major can talk.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Whether two sides speaking `self` and `other` can talk: same major.
    pub const fn is_compatible_with(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }

    /// Whether a reader speaking `self` can decode data written at `written` (a recording): the same major, or
    /// protocol 2 read by 3 (3 only added an enum variant).
    ///
    /// ```
    /// use loopscope_wire::proto::ProtocolVersion;
    /// let v3 = ProtocolVersion { major: 3, minor: 1 };
    /// assert!(v3.can_read(ProtocolVersion { major: 2, minor: 1 }));
    /// assert!(!v3.can_read(ProtocolVersion { major: 1, minor: 1 }));
    /// ```
    pub const fn can_read(self, written: ProtocolVersion) -> bool {
        self.major == written.major || (self.major == 3 && written.major == 2)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version of the protocol this crate speaks.
///
/// 3.2 added [`ServerMessage::StallPart`]: a stall event as what changed since the stall's previous event
/// (each sample sent once, a repeated stack sent once). A 3.2 agent sends it only to clients of 3.2 and later,
/// and whole [`ServerMessage::Stall`] events to older ones.
///
/// 3.x added `StallKind::BlockOn` (stalls in a `block_on` body or an instrumented future): an enum variant
/// older decoders can't read, so a new major. Its encoding is otherwise 2.1's, so recordings of protocol 2 are
/// still read ([`ProtocolVersion::can_read`]).
///
/// 2.x added `time` and `agent_task` to `StallEvent` and the `Preempted` classification (a changed encoding, so
/// a new major). The major bump kept the minor: 2.1 has the same message kinds as 1.1, and minor 1 still means
/// "understands the compressed envelope".
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

/// What the agent can measure in this build, so a client can show "n/a" rather than a misleading zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCapabilities {
    /// Task polls are timed (the agent was built with `--cfg tokio_unstable`).
    pub poll_timing: bool,
    /// The watchdog flags stalls while they run.
    pub stall_detection: bool,
    /// tokio measures per-task wake→poll latency ([`TaskSample::schedule_latency`]).
    pub schedule_latency: bool,
    /// tokio's unstable runtime metrics are available: per-worker poll, steal, noop and overflow counts,
    /// local queue depths, blocking-pool figures, I/O driver events. Without them those fields are 0.
    pub runtime_metrics: bool,
    /// Why something is missing, in words for the user.
    pub missing: Vec<String>,
}

/// The agent introduces itself: the first frame a server sends, right after the preamble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The protocol version the agent speaks (also sent in the clear in the preamble).
    pub protocol_version: ProtocolVersion,
    /// The agent's crate version, e.g. `0.1.0`.
    pub agent_version: String,
    /// The runtime this stream describes.
    pub runtime: RuntimeInfo,
    /// The process id of the app.
    pub pid: u32,
    /// The app's program name (`argv[0]`'s file name), when known.
    pub program: Option<String>,
    /// Wall-clock time the agent was installed, in nanoseconds since the Unix epoch. Uptimes in ticks count
    /// from here.
    pub started_at_unix_nanos: u64,
    /// How often the agent sends a [`Tick`].
    pub sample_interval: Duration,
    /// A poll running longer than this is a stall.
    pub stall_threshold: Duration,
    /// Polls at least this long count as slow.
    pub slow_poll_threshold: Duration,
    /// What the agent can measure.
    pub capabilities: AgentCapabilities,
}

/// The agent refuses the connection. After this frame the server closes the socket.
///
/// Its encoding is **frozen across every protocol major** (it is always variant 1 of [`ServerMessage`] and
/// holds a single string), so that any client can print why it was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Why, in words for the user (names both versions on a version mismatch).
    pub reason: String,
}

/// The agent is going away (the runtime shut down, or the server stopped). The server closes the socket
/// after this frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why, in words for the user.
    pub reason: String,
}

/// A client introduces itself: the first frame a client sends, right after the preamble.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The protocol version the client speaks (also sent in the clear in the preamble).
    pub protocol_version: ProtocolVersion,
    /// What the client is, for the agent's logs and stats (e.g. `loopscope top 0.1.0`).
    pub client_name: String,
}

/// A liveness check from the client; the server answers with a [`Pong`] carrying the same nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Any value; echoed back.
    pub nonce: u64,
}

/// The answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// A spawn location and the id the stream uses for it. Ids are assigned by the agent, are never reused
/// within one agent, and stay valid for the whole connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationInfo {
    /// The id that [`TaskSample::location`] and [`LocationSample::id`] refer to.
    pub id: u32,
    /// The source location.
    pub location: Location,
}

/// Everything a new client needs: the first message after the handshake (and after a resync, see
/// PROTOCOL.md). The tasks follow in [`FullTasks`] frames, `task_count` in all, before any [`Tick`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FullState {
    /// Wall-clock time of the state, nanoseconds since the Unix epoch.
    pub at_unix_nanos: u64,
    /// Monotonic time since the agent started, in nanoseconds. A client ignores any [`Tick`] whose
    /// `uptime_nanos` is older: this state already includes it.
    pub uptime_nanos: u64,
    /// The sequence number of the last tick whose changes this state includes (0 before the first tick).
    pub tick_seq: u64,
    /// State of the OS probes.
    pub probes: Vec<ProbeStatus>,
    /// Every spawn location seen so far.
    pub locations: Vec<LocationInfo>,
    /// Counters of every location.
    pub location_stats: Vec<LocationSample>,
    /// Every worker.
    pub workers: Vec<WorkerSample>,
    /// Whole-runtime figures.
    pub global: GlobalSample,
    /// Wait-time distributions.
    pub waits: WaitTimes,
    /// Distribution of every poll's duration (live, finished and untracked tasks).
    pub poll_histogram: LogHistogram,
    /// Whole-runtime counters.
    pub totals: Totals,
    /// What the agent dropped to stay bounded.
    pub dropped: Dropped,
    /// Recent stalls, oldest first: the latest event of each.
    pub recent_stalls: Vec<StallEvent>,
    /// The number of tasks that follow in [`FullTasks`] frames.
    pub task_count: u64,
    /// Frames the server could not send to *this* client so far (it fell behind). Set by the server for
    /// each client. Kept last so the server can patch it in without re-encoding the rest.
    pub client_dropped_frames: u64,
}

/// A chunk of the live (and recently finished) tasks that follow a [`FullState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullTasks {
    /// Tasks, in no particular order.
    pub tasks: Vec<TaskSample>,
}

/// How many tasks one [`FullTasks`] frame carries (see [`full_state_messages`]). 16,384 tasks with full
/// histograms stay far below the frame limit.
pub const FULL_TASKS_CHUNK: usize = 16_384;

/// Splits a full state into the frames a server sends: the [`FullState`] (with `task_count` set) followed
/// by [`FullTasks`] chunks of at most [`FULL_TASKS_CHUNK`] tasks, so that no frame comes near the frame
/// limit even at a million tasks.
///
/// ```
/// use loopscope_wire::proto::{full_state_messages, FullState, ServerMessage, TaskSample};
/// let tasks: Vec<TaskSample> = (0..40_000).map(|id| TaskSample::new(id, 0)).collect();
/// let msgs = full_state_messages(FullState::default(), tasks);
/// assert_eq!(msgs.len(), 1 + 3);
/// assert!(matches!(&msgs[0], ServerMessage::Full(f) if f.task_count == 40_000));
/// ```
pub fn full_state_messages(mut full: FullState, tasks: Vec<TaskSample>) -> Vec<ServerMessage> {
    full.task_count = tasks.len() as u64;
    let mut out = Vec::with_capacity(1 + tasks.len().div_ceil(FULL_TASKS_CHUNK));
    out.push(ServerMessage::Full(Box::new(full)));
    let mut tasks = tasks.into_iter().peekable();
    while tasks.peek().is_some() {
        out.push(ServerMessage::FullTasks(FullTasks { tasks: tasks.by_ref().take(FULL_TASKS_CHUNK).collect() }));
    }
    out
}

/// One sample of the runtime, sent every [`ServerHello::sample_interval`]. Counters are cumulative;
/// per-task and per-location samples are sent only when they changed since the previous tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Increases by one per tick the agent produces (a gap means ticks were not delivered to this client).
    pub seq: u64,
    /// Wall-clock time of the sample, nanoseconds since the Unix epoch.
    pub at_unix_nanos: u64,
    /// Monotonic time since the agent started, in nanoseconds. Use this, not the wall clock, for rates.
    pub uptime_nanos: u64,
    /// Every worker.
    pub workers: Vec<WorkerSample>,
    /// Whole-runtime figures.
    pub global: GlobalSample,
    /// Wait-time distributions.
    pub waits: WaitTimes,
    /// Locations first seen since the previous tick. Sent before any sample that refers to them.
    pub new_locations: Vec<LocationInfo>,
    /// Locations whose counters changed since the previous tick.
    pub locations: Vec<LocationSample>,
    /// Tasks that are new or whose counters changed since the previous tick. A task that finished appears
    /// here once more with state `Finished` and its final counters, when the agent has them.
    pub tasks: Vec<TaskSample>,
    /// Tasks that finished (or were forgotten) since the previous tick: drop them from the live set.
    pub finished: Vec<u64>,
    /// Distribution of every poll's duration (live, finished and untracked tasks).
    pub poll_histogram: LogHistogram,
    /// Whole-runtime counters.
    pub totals: Totals,
    /// What the agent dropped to stay bounded.
    pub dropped: Dropped,
    /// Frames the server could not send to *this* client so far (it fell behind: its queue was full).
    /// Patched in by the server for each client; **must stay the last field** of `Tick`, because the server
    /// encodes a tick once and appends this value per client.
    pub client_dropped_frames: u64,
}

/// A message from the agent to a client.
///
/// Variants are only ever **added at the end** (with a minor version bump); a client skips kinds it does not
/// know. `Hello` (0) and `Refused` (1) keep their places and encodings in every protocol major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The agent introduces itself (first frame of a connection).
    Hello(Box<ServerHello>),
    /// The agent refuses the connection and closes it.
    Refused(Refused),
    /// Everything a new client needs; [`FullTasks`] frames follow.
    Full(Box<FullState>),
    /// Tasks that follow a [`FullState`].
    FullTasks(FullTasks),
    /// A periodic sample.
    Tick(Box<Tick>),
    /// A stall event (started, updated or ended).
    Stall(Box<StallEvent>),
    /// The answer to a [`Ping`].
    Pong(Pong),
    /// The agent is going away.
    Goodbye(Goodbye),
    /// Never sent: its tag (8) is the compressed envelope's ([`COMPRESSED_KIND`](super::COMPRESSED_KIND)),
    /// which protocol 1.1 placed just past the last message kind of its time. It holds the place so that the
    /// kinds after it get tags of their own; a decoder unwraps the envelope before it reads a kind.
    #[doc(hidden)]
    ReservedEnvelope,
    /// A stall event as what changed since the stall's previous event (protocol 3.2): sent instead of
    /// [`ServerMessage::Stall`] to clients of 3.2 and later. Rebuild the event with [`StallPart::apply`]
    /// (the client state does).
    StallPart(Box<StallPart>),
}

/// Number of [`ServerMessage`] variants this version knows; a frame with a higher tag is skipped.
pub(crate) const SERVER_MESSAGE_KINDS: u32 = 10;

impl ServerMessage {
    /// A short name of the message kind, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Hello(_) => "Hello",
            ServerMessage::Refused(_) => "Refused",
            ServerMessage::Full(_) => "Full",
            ServerMessage::FullTasks(_) => "FullTasks",
            ServerMessage::Tick(_) => "Tick",
            ServerMessage::Stall(_) => "Stall",
            ServerMessage::Pong(_) => "Pong",
            ServerMessage::Goodbye(_) => "Goodbye",
            ServerMessage::ReservedEnvelope => "ReservedEnvelope",
            ServerMessage::StallPart(_) => "StallPart",
        }
    }
}

/// A message from a client to the agent. Nothing else flows back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientMessage {
    /// The client introduces itself (first frame of a connection).
    Hello(ClientHello),
    /// A liveness check; the server answers with [`ServerMessage::Pong`].
    Ping(Ping),
}

/// Number of [`ClientMessage`] variants this version knows.
pub(crate) const CLIENT_MESSAGE_KINDS: u32 = 2;
