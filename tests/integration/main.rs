//! loopscope's integration tests: real runtimes, real blocking, deadlines instead of sleeps.
//!
//! One test binary with modules, so the workspace links fewer binaries.

#![allow(unreachable_pub, missing_docs, clippy::unwrap_used, dead_code)]

mod blind_spots;
mod check;
mod console;
mod culprits;
mod lifecycle;
mod metrics;
mod module_graph;
mod probe_leaks;
mod reporting;
mod stalls;
mod stream;
mod support;
mod task_table;
