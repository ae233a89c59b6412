//! # loopscope: see what is blocking your tokio event loop
//!
//! A tokio worker thread runs thousands of tasks, one poll at a time. That only works while every poll
//! returns quickly: one `std::thread::sleep`, blocking read, `std::sync::Mutex` wait or long CPU loop inside
//! a task stalls **every other task queued on that worker**. loopscope times every task poll, and a watchdog
//! flags a poll that holds its worker past a threshold *while it is still running*, naming the task and where
//! it was spawned.
//!
//! ## Attach with one line
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! builder.enable_all();
//! let agent = loopscope::Agent::builder().install(&mut builder)?; // <- the one line
//! let runtime = builder.build()?;
//! runtime.block_on(async {
//!     tokio::spawn(async { /* your app */ }).await.unwrap();
//! });
//! println!("{} polls so far", agent.snapshot().totals.poll_count);
//! # Ok(())
//! # }
//! ```
//!
//! Apps that start from `#[tokio::main]` can write [`#[loopscope::main]`](macro@main) instead. It takes
//! tokio's `flavor` and `worker_threads`, plus agent settings checked at compile time:
//!
//! ```
//! #[loopscope::main(flavor = "multi_thread", worker_threads = 2, stall_threshold = "5ms")]
//! async fn main() {
//!     let answer = tokio::spawn(async { 6 * 7 }).await.unwrap();
//!     assert_eq!(answer, 42);
//! }
//! ```
//!
//! ## Requirements
//!
//! Task hooks are an unstable tokio API: build with `RUSTFLAGS="--cfg tokio_unstable"` (or set it in
//! `.cargo/config.toml`) for every task's polls timed and every stall named by task and spawn location.
//! Without it, [`AgentBuilder::install`] runs in [`Mode::Stable`], built from stable tokio APIs only: the
//! workers' park/unpark hooks say when a worker is busy, and the probes confirm that one poll holds a worker
//! busy past the threshold before it is reported (with stack and classification, but no task id or spawn
//! location; [`Agent::spawn`] and [`Agent::instrument`] give those for the code that uses them).
//! [`Agent::capabilities`] says which mode runs and what it lacks.
//!
//! ## Configuration
//!
//! In code with [`AgentBuilder`], or with the `LOOPSCOPE_*` environment variables listed in [`ENV_VARS`].
//! The environment overrides the code. A malformed value is an error that names the variable.
//!
//! ## Prometheus
//!
//! [`AgentBuilder::metrics_addr`] (or `LOOPSCOPE_METRICS_ADDR`) serves `/metrics` for Prometheus: stall
//! counts by kind, classification and spawn location, stall and poll duration histograms, worker busy
//! ratios, queue depths, the lag probes and drop counters. Off by default; a port alone serves on
//! 127.0.0.1. The server runs on threads of its own and never touches the hooks or the app's runtime.
//!
//! ## tokio-console
//!
//! With the `console` feature, `AgentBuilder::console_addr` (or `LOOPSCOPE_CONSOLE_ADDR`) serves the
//! tokio-console gRPC API, so `tokio-console http://ADDR` can watch the app's tasks, polls, busy time and
//! stalls, from loopscope's own data: no `tracing` layer, nothing new in the poll hooks. Off by default; a
//! port alone serves on 127.0.0.1.
//!
//! ## Your own task hooks
//!
//! tokio keeps **one** callback per task hook, and `install` sets all four (`on_task_spawn`,
//! `on_before_task_poll`, `on_after_task_poll`, `on_task_terminate`). Setting one on the builder *before*
//! `install` would be silently replaced, and setting one *after* would silently disable loopscope. Pass
//! yours through [`AgentBuilder::on_task_spawn`] and friends instead: loopscope calls them from its own
//! hooks.
//!
//! ## What it costs
//!
//! The hooks take no lock, make no allocation and send on no channel; they read the TSC twice and update
//! counters that only the polling thread writes. See BENCHMARKS.md in the repository for measured figures.

#![forbid(unsafe_code)]
// Without tokio's task hooks the task table and the hooks' helpers are unused (stable mode watches busy spans);
// they still compile, so the two builds share one source.
#![cfg_attr(not(tokio_unstable), allow(dead_code, unused_imports, unused_variables))]

mod agent;
mod agent_thread;
mod busy;
mod capabilities;
pub mod check {
    //! CI mode: fail a test when any handler blocks the event loop, and name the culprit.
    //!
    //! Three ways in:
    //!
    //! * `#[loopscope::test(max_poll = "5ms")]`, a drop-in replacement for `#[tokio::test]`;
    //! * [`Check`], the same as a function, for custom runtimes and harnesses;
    //! * `loopscope check -- cargo test` (the CLI), which collects stalls from every runtime of every process
    //!   it runs, through files the agents write when `LOOPSCOPE_CHECK_DIR` is set (see [`CHECK_DIR_ENV`]).
    //!
    //! ```
    //! use std::time::Duration;
    //!
    //! let report = loopscope::check::Check::new()
    //!     .max_poll(Duration::from_millis(50))
    //!     .run_current_thread(async {
    //!         tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
    //!     });
    //! report.assert_no_stalls();
    //! assert_eq!(report.stalls().count(), 0);
    //! ```
    //!
    //! (Implemented in the crate's `ci` folder; this module is its public face, named as it always was.)
    pub use crate::ci::*;
}
mod ci;
mod config;
#[cfg(feature = "console")]
mod console;
#[cfg(feature = "console")]
mod console_settings;
mod exporter;
#[cfg(tokio_unstable)]
mod hooks;
mod instrument;
mod lifecycle;
mod os;
mod poll;
mod scan;
mod server;
mod shared;
mod stream;
mod sync;
mod taskid;
mod watch;

pub use agent::{Agent, AgentBuilder, BusySnapshot, Error, StallSubscription};
pub use busy::ThreadHook;
pub use capabilities::Capabilities;
pub use config::{Config, ConfigError, ENV_VARS, MIN_STALL_THRESHOLD, Mode, ReportTo};
#[cfg(feature = "console")]
pub use console::hub::ConsoleStats;
#[cfg(tokio_unstable)]
pub use hooks::TaskHook;
pub use instrument::Instrumented;
pub use loopscope_macros::{main, test};
/// The data types of snapshots and stall events (the `loopscope-wire` crate).
pub use loopscope_wire as wire;
pub use loopscope_wire::parse_duration;
pub use loopscope_wire::{Snapshot, SnapshotDelta, StallEvent, StallKind, StallPhase, StallSummary};
pub use server::{ClientStats as StreamClientStats, ServerStats as StreamStats};

#[doc(hidden)]
pub mod __private {
    //! Support for the macros. Not public API.
    pub use tokio;

    /// Installs the agent for `#[loopscope::main]`. An invalid configuration must not take the app down:
    /// it is reported loudly on stderr and the app runs without the agent.
    pub fn install_for_main(
        builder: &mut tokio::runtime::Builder,
        agent: crate::agent::AgentBuilder,
    ) -> Option<crate::agent::Agent> {
        match agent.install(builder) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("loopscope: {e}\nloopscope: the agent is NOT installed; the program runs unmonitored.");
                tracing::error!(target: "loopscope", "{e}; the agent is not installed");
                None
            }
        }
    }

    /// The body of `#[loopscope::main]`, timed like a task's polls (untimed when the agent isn't installed).
    #[track_caller]
    pub fn instrument_main<F: std::future::Future>(
        agent: Option<&crate::agent::Agent>,
        body: F,
    ) -> crate::instrument::Instrumented<F> {
        let location = std::panic::Location::caller();
        match agent {
            Some(a) => {
                crate::instrument::Instrumented::new(body, Some(a.shared.clone()), crate::lifecycle::start, location)
            }
            None => crate::instrument::Instrumented::new(body, None, crate::lifecycle::start, location),
        }
    }
}
