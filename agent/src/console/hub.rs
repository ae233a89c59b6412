//! Where the agent thread (which publishes) meets the server's streams (which read): one bounded queue per
//! stream, and the pause flag.

use crate::sync::lock;
use console_api::instrument::{State, Temporality, Update};
use console_api::tasks::TaskDetails;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use tokio::sync::mpsc;
use tonic::Status;

/// `watch_updates` streams open at once; more are refused (`RESOURCE_EXHAUSTED`).
pub(crate) const MAX_UPDATE_CLIENTS: usize = 8;
/// `watch_task_details` and `watch_state` streams open at once, each.
pub(crate) const MAX_WATCHERS: usize = 32;
/// Updates queued for one client, at least. A full state is several updates ([`TASKS_PER_UPDATE`] tasks
/// each), sent only when the queue has room for all of them, so the queue is made long enough for the
/// largest full state the agent's bounds allow ([`queue_for`]).
pub(crate) const CLIENT_QUEUE: usize = 32;

/// The queue length for an agent that tracks at most `tasks` tasks (live and recently finished): room for
/// a whole full state, and a few deltas besides.
pub(crate) fn queue_for(tasks: usize) -> usize {
    CLIENT_QUEUE.max(tasks.div_ceil(TASKS_PER_UPDATE) + 4)
}
/// Tasks per update, so that no message passes tonic's default 4 MiB decoding limit (a task and its stats
/// take about 200 bytes).
pub(crate) const TASKS_PER_UPDATE: usize = 1024;

/// What the tokio-console API server has done so far (`Agent::console_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsoleStats {
    /// `watch_updates` streams (consoles) open now.
    pub clients: usize,
    /// Updates put on clients' queues.
    pub sent_updates: u64,
    /// Updates a client did not get because its queue was full (it read too slowly, or not at all). Such a
    /// client is sent a full state again once its queue has room.
    pub dropped_updates: u64,
    /// Streams refused because too many were open.
    pub refused_streams: u64,
}

type Tx<T> = mpsc::Sender<Result<T, Status>>;

#[derive(Debug)]
struct UpdateClient {
    tx: Tx<Update>,
    /// It has the full state, so the next delta is enough; false for a new client, and for one that missed an
    /// update.
    primed: bool,
}

#[derive(Debug)]
struct DetailsClient {
    task: u64,
    tx: Tx<TaskDetails>,
}

/// Where the agent thread (which publishes) meets the server's streams (which read). Every lock here is held
/// for a few queue operations, never across a wait.
#[derive(Debug)]
pub(crate) struct Hub {
    /// Each update stream's queue length.
    queue: usize,
    clients: Mutex<Vec<UpdateClient>>,
    details: Mutex<Vec<DetailsClient>>,
    states: Mutex<Vec<Tx<State>>>,
    paused: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new(CLIENT_QUEUE)
    }
}

impl Hub {
    pub(crate) fn new(queue: usize) -> Hub {
        Hub {
            queue,
            clients: Mutex::default(),
            details: Mutex::default(),
            states: Mutex::default(),
            paused: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    fn refuse(&self, what: &str) -> Status {
        self.refused.fetch_add(1, Relaxed);
        Status::resource_exhausted(format!("loopscope serves at most {what} at once"))
    }

    /// A new `watch_updates` stream; it gets a full state at the next tick.
    pub(crate) fn add_client(&self) -> Result<mpsc::Receiver<Result<Update, Status>>, Status> {
        let mut clients = lock(&self.clients);
        clients.retain(|c| !c.tx.is_closed());
        if clients.len() >= MAX_UPDATE_CLIENTS {
            return Err(self.refuse(&format!("{MAX_UPDATE_CLIENTS} update streams")));
        }
        let (tx, rx) = mpsc::channel(self.queue);
        clients.push(UpdateClient { tx, primed: false });
        Ok(rx)
    }

    /// A new `watch_task_details` stream for `task`; it gets the task's details at every tick while the
    /// agent knows the task.
    pub(crate) fn add_details(&self, task: u64) -> Result<mpsc::Receiver<Result<TaskDetails, Status>>, Status> {
        let mut details = lock(&self.details);
        details.retain(|c| !c.tx.is_closed());
        if details.len() >= MAX_WATCHERS {
            return Err(self.refuse(&format!("{MAX_WATCHERS} task detail streams")));
        }
        let (tx, rx) = mpsc::channel(4);
        details.push(DetailsClient { task, tx });
        Ok(rx)
    }

    /// A new `watch_state` stream: the current temporality now, and each change.
    pub(crate) fn add_state(&self) -> Result<mpsc::Receiver<Result<State, Status>>, Status> {
        let mut states = lock(&self.states);
        states.retain(|tx| !tx.is_closed());
        if states.len() >= MAX_WATCHERS {
            return Err(self.refuse(&format!("{MAX_WATCHERS} state streams")));
        }
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.try_send(Ok(self.state()));
        states.push(tx);
        Ok(rx)
    }

    fn state(&self) -> State {
        let t = if self.paused.load(Relaxed) { Temporality::Paused } else { Temporality::Live };
        State { temporality: t as i32 }
    }

    /// Pause or resume the updates (for every console, as console-subscriber does). While paused, consoles
    /// get nothing; on resume each gets a full state, so nothing that changed meanwhile is missed.
    pub(crate) fn set_paused(&self, paused: bool) {
        if self.paused.swap(paused, Relaxed) == paused {
            return;
        }
        if !paused {
            for c in lock(&self.clients).iter_mut() {
                c.primed = false;
            }
        }
        let state = self.state();
        let mut states = lock(&self.states);
        states.retain(|tx| !tx.is_closed());
        for tx in states.iter() {
            // A full queue holds a state already; the latest matters, but a stuck client may miss it.
            let _ = tx.try_send(Ok(state));
        }
    }

    /// Whether any console is connected (and not paused): the model builds updates only then.
    pub(crate) fn wants_updates(&self) -> bool {
        !self.paused.load(Relaxed) && !lock(&self.clients).is_empty()
    }

    /// Called by the agent thread every tick: `delta` to clients that have the full state, `full()` (built at
    /// most once) to the others. A client whose queue can't take the whole batch gets none of it and is
    /// resynchronized later; nothing here waits.
    pub(crate) fn publish(&self, delta: &[Update], full: impl FnOnce() -> Vec<Update>) {
        let mut clients = lock(&self.clients);
        clients.retain(|c| !c.tx.is_closed());
        if clients.is_empty() || self.paused.load(Relaxed) {
            return;
        }
        // Built once, and only when some client needs it.
        let full_batch = if clients.iter().any(|c| !c.primed) { full() } else { Vec::new() };
        for c in clients.iter_mut() {
            let batch = if c.primed { delta } else { &full_batch };
            let n = batch.len() as u64;
            if c.tx.capacity() < batch.len() {
                c.primed = false;
                self.dropped.fetch_add(n, Relaxed);
                continue;
            }
            // Only this thread sends, so the room just checked is still there; a failure means the client
            // just went away.
            c.primed = batch.iter().all(|u| c.tx.try_send(Ok(u.clone())).is_ok());
            self.sent.fetch_add(n, Relaxed);
        }
    }

    /// The detail streams' tasks, to build their details.
    pub(crate) fn detail_tasks(&self) -> Vec<u64> {
        let mut details = lock(&self.details);
        details.retain(|c| !c.tx.is_closed());
        details.iter().map(|c| c.task).collect()
    }

    /// Sends each detail stream its task's details, when `details` has them.
    pub(crate) fn publish_details(&self, details: impl Fn(u64) -> Option<TaskDetails>) {
        for c in lock(&self.details).iter() {
            if let Some(d) = details(c.task) {
                // A full queue: the client reads slowly, and the next tick brings fresher details anyway.
                let _ = c.tx.try_send(Ok(d));
            }
        }
    }

    /// Ends every stream (the runtime is gone).
    pub(crate) fn close(&self) {
        lock(&self.clients).clear();
        lock(&self.details).clear();
        lock(&self.states).clear();
    }

    pub(crate) fn stats(&self) -> ConsoleStats {
        ConsoleStats {
            clients: lock(&self.clients).iter().filter(|c| !c.tx.is_closed()).count(),
            sent_updates: self.sent.load(Relaxed),
            dropped_updates: self.dropped.load(Relaxed),
            refused_streams: self.refused.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_the_largest_full_state() {
        // The default bounds: 65,536 tasks, 256 retained finished, 1024 kept by the view.
        let tasks: usize = 65_536 + 256 + 1024;
        let full_state_updates = tasks.div_ceil(TASKS_PER_UPDATE);
        assert!(queue_for(tasks) > full_state_updates);
        assert_eq!(queue_for(10), CLIENT_QUEUE);
        let hub = Hub::new(queue_for(tasks));
        let mut rx = hub.add_client().unwrap();
        let full = vec![Update::default(); full_state_updates];
        hub.publish(&[], || full);
        assert_eq!(hub.stats().dropped_updates, 0);
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), full_state_updates);
    }
}
