//! The agent's lifecycle: the stages' threads, started at the runtime's first poll and stopped by its drop.
//!
//! Nothing runs until the runtime polls its first task: the first before-poll hook calls [`start`], which
//! starts the three background threads (`loopscope-prober`, `loopscope-watchdog`, `loopscope-agent`), wires
//! them with bounded channels (watchdog → prober → agent thread) and hands each the shared state and a
//! runtime `Handle`. The `Handle` lives only inside those threads, never in [`Shared`]: the hooks hold
//! `Arc<Shared>` and tokio's scheduler holds the hooks, so a `Handle` in there would be a reference cycle
//! that keeps a dropped runtime alive. To notice the runtime going away, the agent thread spawns a tiny
//! sentinel task that never completes; tokio drops every task at shutdown, and the sentinel's drop guard
//! tells the threads to exit ([`Shared::stop`]).
//!
//! The hooks get this function from the installer rather than importing it, so the shared state and the
//! hooks never import the stages they feed.

use crate::agent_thread;
use crate::shared::Shared;
use crate::sync::lock;
use crate::watch::{prober, watchdog};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;

/// Starts the background threads. Runs once, from the first before-poll hook (inside the runtime), which
/// the installer hands this function to.
#[cold]
#[inline(never)]
pub(crate) fn start(shared: &Arc<Shared>) {
    if shared.started.swap(true, AcqRel) {
        return;
    }
    let me = shared;
    let handle = tokio::runtime::Handle::try_current().ok();
    // watchdog -> prober (looks) -> agent thread: the watchdog never waits on a probe.
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let (probe_tx, probe_rx) = std::sync::mpsc::sync_channel(1024);
    let prober = {
        let me = me.clone();
        // Not kept in `Shared`: the runtime holds the hooks, which hold `Shared`, so a handle there would keep
        // the runtime (its driver's file descriptors) alive forever. The threads drop theirs when they exit.
        let handle = handle.clone();
        std::thread::Builder::new().name("loopscope-prober".into()).spawn(move || prober::run(me, handle, probe_rx, tx))
    };
    let watchdog = {
        let me = me.clone();
        let handle = handle.clone();
        std::thread::Builder::new().name("loopscope-watchdog".into()).spawn(move || watchdog::run(me, handle, probe_tx))
    };
    let agent = {
        let me = me.clone();
        std::thread::Builder::new().name("loopscope-agent".into()).spawn(move || agent_thread::run(me, handle, rx))
    };
    let mut threads = lock(&shared.threads);
    for t in [prober, watchdog, agent] {
        match t {
            Ok(j) => threads.push(j.thread().clone()),
            Err(e) => {
                tracing::error!(target: "loopscope", "could not start a loopscope thread: {e}; stall detection is off");
            }
        }
    }
}
