//! Data types shared by the loopscope agent and everything that reads its output: the dashboard, the CI
//! command, recordings and your own code.
//!
//! This crate is deliberately separate from the agent (the `loopscope` crate), so that clients such as the
//! terminal dashboard never link the runtime hooks. It has no tokio dependency.
//!
//! All values are **cumulative** and carry timestamps. A client computes rates with a pure function of two
//! snapshots ([`Snapshot::delta`]) rather than with hidden iterator state.
//!
//! The live stream between an agent and its clients: [`proto`] (the protocol, specified in `PROTOCOL.md`),
//! [`client`] (a blocking client), [`state`] (the client-side picture of a runtime, kept from the stream) and
//! [`record`] (recordings of a stream).

#![forbid(unsafe_code)]

pub mod ci_record;
/// The former name of [`ci_record`], kept so existing code (the CLI among it) builds unchanged.
#[doc(hidden)]
pub use ci_record as check;
pub mod client;
mod histogram;
pub mod proto;
pub mod record;
mod snapshot;
mod stall;
pub mod state;

pub use histogram::{LogHistogram, TASK_HISTOGRAM_BUCKETS};
pub use loopscope_types::{Classification, FrameOrigin, parse_duration};
pub use snapshot::{
    Dropped, LocationStats, RuntimeInfo, ScheduleLatency, Snapshot, SnapshotDelta, TaskState, TaskStats, Totals,
    WorkerDelta, WorkerStats,
};
#[doc(hidden)]
pub use stall::example_stall;
pub use stall::{
    CopiedFrames, CounterDeltas, Culprit, CulpritSample, Frame, InFlightPoll, Location, ProbeStatus,
    SAMPLE_NOT_RECEIVED, StallEvent, StallKind, StallPart, StallPhase, StallSummary, StallTime, ThreadInfo,
    UNKNOWN_TASK,
};
