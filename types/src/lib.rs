//! Vocabulary shared by every loopscope crate, defined once.
//!
//! * [`Classification`]: what the probes found a stalled thread doing. The probes (`loopscope-probes`)
//!   produce it, the stream and CI records (`loopscope-wire`) carry it, and the agent passes it through
//!   unchanged.
//! * [`FrameOrigin`]: whose code a stack frame is (the app's, the runtime's, the standard library's, the
//!   probe's own), so reports can show the app's frames first.
//! * [`parse_duration`]: durations as people write them (`10ms`, `250us`), for settings, environment
//!   variables and the macros' compile-time checks.
//!
//! This crate has no dependencies, so the probes and the macros can use it without pulling in the wire
//! format; the `serde` feature (on in `loopscope-wire`) derives the serde traits the stream needs.

#![forbid(unsafe_code)]

mod classification;
mod duration;
mod frame;

pub use classification::Classification;
pub use duration::parse_duration;
pub use frame::{Frame, FrameOrigin};
