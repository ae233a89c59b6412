//! CI mode's in-process half (the public module `loopscope::check`): `#[loopscope::test]` and [`Check`] install
//! an agent whose stall threshold is the limit, with no rate limit and no server, run the test body as a
//! task, drop the runtime and judge every stall the agent kept.
//!
//! It reads the agent's kept stalls ([`Agent::stalls`](crate::Agent::stalls)) and snapshot once the runtime
//! is gone, and writes a [`Report`]. (The other half, `loopscope check -- CMD`, goes through the CI records
//! `stream/outputs.rs` writes and the CLI reads.)
//!
//! * `check.rs`: the check's settings and the agent it installs;
//! * `report.rs`: what it found, and the failure message.

mod check;
mod report;
#[cfg(test)]
mod tests;

pub use check::{CHECK_DIR_ENV, Check, CheckGuard};
pub use report::{CheckedStall, Report};
