//! The handles an app holds. [`AgentBuilder`] configures an agent and installs it on a tokio runtime
//! builder (building the shared state, starting the outputs and the probes, and setting the task hooks; the
//! hooks start the rest at the runtime's first poll, see `lifecycle.rs`). [`Agent`] reads an installed
//! agent's snapshots, stalls and status, and [`StallSubscription`] receives its stall events.

use crate::capabilities::Capabilities;
use crate::config::Config;
use crate::server::ServerStats as StreamStats;
use crate::shared::{Shared, Subscriber};
use crate::sync::lock;
use crate::watch::probing;
use loopscope_wire::{self as wire, Snapshot, StallEvent, StallSummary};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::mpsc::Receiver;
use std::time::Duration;

mod builder;
#[cfg(all(test, tokio_unstable))]
mod stable_tests;

pub use builder::{AgentBuilder, Error};

/// An installed agent: read its snapshots and stall events.
///
/// Cheap to clone. Holding it does not keep the runtime alive; after the runtime is dropped, the agent keeps
/// its last values and subscriptions end.
#[derive(Debug, Clone)]
pub struct Agent {
    pub(crate) shared: Arc<Shared>,
}

impl Agent {
    /// Starts configuring an agent.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Times every poll of `fut` as the hooks time a task's poll, for futures that are not tasks: the body of
    /// your own `block_on`, or any future you want watched on its own. A poll that holds its thread past the
    /// stall threshold is reported while it still runs, as [`StallKind::BlockOn`](crate::StallKind::BlockOn),
    /// at the place `instrument` was called, with its stack and classification; `check` counts it like a
    /// task's stall. (`#[loopscope::main]` does this for its body.)
    ///
    /// Polled inside a task's poll it adds nothing, so no poll is charged twice.
    ///
    /// The agent's background threads start at the first poll it sees, and its lag probes go to the runtime
    /// that poll runs on. Poll an instrumented future on another runtime only once the agent's own runtime has
    /// run: polled first on a runtime without a time driver, it leaves the agent without its timer probe (tokio
    /// reports the probe task's panic once).
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("off").install(&mut builder).unwrap();
    /// let rt = builder.enable_all().build().unwrap();
    /// // The accept loop of many servers runs in the body, on the thread every task shares.
    /// let answer = rt.block_on(agent.instrument(async { 6 * 7 }));
    /// assert_eq!(answer, 42);
    /// ```
    #[track_caller]
    pub fn instrument<F: std::future::Future>(&self, fut: F) -> crate::Instrumented<F> {
        crate::instrument::Instrumented::new(
            fut,
            Some(self.shared.clone()),
            crate::lifecycle::start,
            std::panic::Location::caller(),
        )
    }

    /// Spawns `fut` onto the current `LocalSet` (as `tokio::task::spawn_local`) with each of its polls timed
    /// like a task's, under tokio's task id and the location of this call: tokio fires no task hooks for
    /// `LocalSet` tasks, so without this their stalls go unseen. Panics outside a `LocalSet`, as tokio's does.
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("off").install(&mut builder).unwrap();
    /// let rt = builder.enable_all().build().unwrap();
    /// let local = tokio::task::LocalSet::new();
    /// let n = local.block_on(&rt, async {
    ///     let shared = std::rc::Rc::new(21); // not Send: a LocalSet's task
    ///     agent.spawn_local(async move { *shared * 2 }).await.unwrap()
    /// });
    /// assert_eq!(n, 42);
    /// ```
    #[track_caller]
    pub fn spawn_local<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + 'static,
        F::Output: 'static,
    {
        let location = std::panic::Location::caller();
        let timed =
            crate::instrument::Instrumented::new(fut, Some(self.shared.clone()), crate::lifecycle::start, location)
                .local_task();
        tokio::task::spawn_local(timed)
    }

    /// Spawns `fut` as a task (as `tokio::spawn`) with each of its polls timed exactly, under tokio's task id and
    /// the location of this call: in [`Mode::Stable`](crate::Mode::Stable), where tokio's task hooks are missing, this is how a task
    /// gets per-poll timing and a stall report that names it and its spawn site. (With the task hooks it adds
    /// nothing but the same figures, charged once.) Panics outside a runtime, as tokio's does.
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// let agent = loopscope::Agent::builder().mode(loopscope::Mode::Stable).serve("off").install(&mut builder).unwrap();
    /// let rt = builder.enable_all().build().unwrap();
    /// let answer = rt.block_on(async { agent.spawn(async { 6 * 7 }).await.unwrap() });
    /// assert_eq!(answer, 42);
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let location = std::panic::Location::caller();
        let timed =
            crate::instrument::Instrumented::new(fut, Some(self.shared.clone()), crate::lifecycle::start, location)
                .local_task();
        tokio::spawn(timed)
    }

    /// Stable mode's candidates so far: workers found busy past the threshold, and how many of them the probes
    /// did not show to be held by one poll (many short polls, or the scheduler's own work), so no stall was
    /// reported. Always zero in [`Mode::TaskHooks`](crate::Mode::TaskHooks).
    pub fn busy_snapshot(&self) -> BusySnapshot {
        BusySnapshot {
            candidates: self.shared.busy_candidates.load(Relaxed),
            rejected: self.shared.busy_rejected.load(Relaxed),
        }
    }

    /// Identifies this agent (one per runtime) within the process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The address the live stream is served on (with the real port when configured with port 0), or `None`
    /// when serving is off or failed (see [`Agent::serve_error`]). Connect with `loopscope top ADDR`.
    pub fn serve_addr(&self) -> Option<loopscope_wire::proto::ServeAddr> {
        self.shared.server.get().map(|s| s.local_addr().clone())
    }

    /// The address `/metrics` is served on, with the real port when configured with port 0; `None` when
    /// metrics are off (the default; see [`AgentBuilder::metrics_addr`]).
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("off").ignore_env().install(&mut builder).unwrap();
    /// assert_eq!(agent.metrics_addr(), None);
    /// ```
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.shared.metrics.get().map(|m| m.local_addr())
    }

    /// Why the stream is not served although it was configured: the default address was taken (usually by
    /// another runtime or process with loopscope). Set another address with `LOOPSCOPE_ADDR`.
    pub fn serve_error(&self) -> Option<String> {
        self.shared.serve_error.get().cloned()
    }

    /// Clients connected to the live stream now.
    pub fn stream_clients(&self) -> usize {
        self.shared.server.get().map_or(0, |s| s.client_count())
    }

    /// Counters of the live-stream server: clients, bytes and frames sent, and frames dropped because a
    /// client fell behind (`None` when not serving).
    pub fn stream_stats(&self) -> Option<StreamStats> {
        self.shared.server.get().map(|s| s.stats())
    }

    /// The configuration in force (code settings with the environment applied).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// What this build of the agent can observe, and why not.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::of(&self.shared.config)
    }

    /// Cumulative values now. Compare two snapshots with [`Snapshot::delta`].
    ///
    /// Costs time proportional to the task table's capacity; meant for periodic use (every 100 ms or
    /// slower), not per request.
    pub fn snapshot(&self) -> Snapshot {
        crate::scan::snapshot::build(&self.shared)
    }

    /// The latest state of recent stalls (up to 256), oldest first, including those whose reports the rate
    /// limit suppressed.
    pub fn stalls(&self) -> Vec<StallSummary> {
        lock(&self.shared.recent_stalls).summaries()
    }

    /// Receives stall events as they happen, with a buffer of 1,024 events.
    pub fn subscribe(&self) -> StallSubscription {
        self.subscribe_with_capacity(1024)
    }

    /// Receives stall events with a buffer of `capacity` events. When the buffer is full, new events are
    /// dropped and counted ([`StallSubscription::dropped`]); the app is never blocked.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> StallSubscription {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.shared.subscribers).push(Subscriber { tx, dropped: dropped.clone() });
        StallSubscription { rx, dropped }
    }

    /// Whether the runtime this agent watches has been dropped.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Acquire)
    }

    /// Which OS probes work in this process (stack capture, thread state, CPU time, each perf counter), and
    /// why the others don't.
    pub fn probe_status(&self) -> Vec<wire::ProbeStatus> {
        let mut status = probing::status();
        // This runtime's own: how its watchdog is scheduled (see `realtime_watchdog`).
        let priority = self.shared.watchdog_priority.get();
        status.push(wire::ProbeStatus {
            name: "watchdog-priority".into(),
            active: priority.is_some_and(|p| !p.starts_with("unchanged")),
            detail: priority.cloned().unwrap_or_else(|| "the watchdog has not started yet".into()),
        });
        status
    }

    /// Whether the process-wide probes have started (at the first install), so stall reports carry stacks. Symbols
    /// are read lazily, one compilation unit at a time, when a stack first needs them.
    pub fn probes_ready(&self) -> bool {
        probing::ready()
    }

    /// Whether the agent has stopped and delivered everything it saw (or never started because the runtime
    /// never polled a task). After this, [`Agent::stalls`] and [`Agent::snapshot`] are final.
    pub fn is_drained(&self) -> bool {
        self.shared.drained.load(Acquire) || !self.shared.started.load(Acquire)
    }
}

/// A stream of [`StallEvent`]s from one agent. Ends (returns `None` / disconnects) when the runtime is
/// dropped.
#[derive(Debug)]
pub struct StallSubscription {
    rx: Receiver<StallEvent>,
    dropped: Arc<AtomicU64>,
}

impl StallSubscription {
    /// Waits up to `timeout` for the next event. `None` on timeout or when the agent stopped.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<StallEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<StallEvent> {
        self.rx.try_recv().ok()
    }

    /// Blocks until the next event; `None` once the agent stopped.
    pub fn recv(&self) -> Option<StallEvent> {
        self.rx.recv().ok()
    }

    /// Events lost because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// Stable mode's busy workers so far ([`Agent::busy_snapshot`]).
///
/// # Examples
/// ```
/// let mut builder = tokio::runtime::Builder::new_current_thread();
/// let agent = loopscope::Agent::builder().serve("off").install(&mut builder).unwrap();
/// let busy = agent.busy_snapshot();
/// assert!(busy.rejected <= busy.candidates);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusySnapshot {
    /// Workers found busy past the stall threshold and looked at.
    pub candidates: u64,
    /// Of those, the ones not reported: the looks did not show one poll holding the worker.
    pub rejected: u64,
}
