//! The tokio-console API, served by the agent (the `console` feature; `LOOPSCOPE_CONSOLE_ADDR` or
//! [`AgentBuilder::console_addr`]), so that the existing `tokio-console` can watch an app that runs loopscope
//! instead of console-subscriber.
//!
//! It is one more output of the stream's feed, like the Prometheus exporter: the agent thread turns each tick
//! (the tasks that changed, the poll in flight on each worker) and every stall event into console-api
//! [`Update`]s (`model.rs`) and hands them to a [`Hub`], which puts them on each client's bounded queue. A
//! tonic server on a thread and a current-thread tokio runtime of its own (built here, without loopscope's
//! hooks: its polls are neither timed nor charged to the app) serves those queues (`service.rs`). So nothing
//! new runs in the poll hooks: the hot path is loopscope's, whether or not a console listens; the agent
//! thread never waits for a client, and a client that reads slowly or not at all loses only its own updates
//! (counted), and is sent a full state again once its queue has room.
//!
//! What the console gets, and what it doesn't, is in the README ("tokio-console").

mod model;
mod service;

pub(crate) use model::ConsoleModel;

use crate::sync::lock;
use crate::{Agent, AgentBuilder};
use console_api::instrument::{State, Temporality, Update, instrument_server::InstrumentServer};
use console_api::tasks::TaskDetails;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// `watch_updates` streams open at once; more are refused (`RESOURCE_EXHAUSTED`).
pub(crate) const MAX_UPDATE_CLIENTS: usize = 8;
/// `watch_task_details` and `watch_state` streams open at once, each.
pub(crate) const MAX_WATCHERS: usize = 32;
/// Updates queued for one client. A full state is several updates ([`TASKS_PER_UPDATE`] tasks each), sent
/// only when the queue has room for all of them.
pub(crate) const CLIENT_QUEUE: usize = 32;
/// Tasks per update, so that no message passes tonic's default 4 MiB decoding limit (a task and its stats
/// take about 200 bytes).
pub(crate) const TASKS_PER_UPDATE: usize = 1024;
/// HTTP/2 streams per connection (tokio-console opens two, plus one per task detail view).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// What the tokio-console API server has done so far ([`Agent::console_stats`]).
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
#[derive(Debug, Default)]
pub(crate) struct Hub {
    clients: Mutex<Vec<UpdateClient>>,
    details: Mutex<Vec<DetailsClient>>,
    states: Mutex<Vec<Tx<State>>>,
    paused: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
}

impl Hub {
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
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
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
    fn close(&self) {
        lock(&self.clients).clear();
        lock(&self.details).clear();
        lock(&self.states).clear();
    }

    fn stats(&self) -> ConsoleStats {
        ConsoleStats {
            clients: lock(&self.clients).iter().filter(|c| !c.tx.is_closed()).count(),
            sent_updates: self.sent.load(Relaxed),
            dropped_updates: self.dropped.load(Relaxed),
            refused_streams: self.refused.load(Relaxed),
        }
    }
}

/// The running server: a thread (`loopscope-console`) with a current-thread runtime of its own.
#[derive(Debug)]
pub(crate) struct ConsoleServer {
    addr: SocketAddr,
    hub: Arc<Hub>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl ConsoleServer {
    /// Binds `addr` and starts serving. Fails when the address can't be bound, or the runtime or thread
    /// can't start.
    pub(crate) fn start(addr: SocketAddr) -> io::Result<ConsoleServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // A plain builder: none of loopscope's hooks, so the server's own polls are never timed, reported as
        // the app's stalls, or counted in its tasks.
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let hub = Arc::new(Hub::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = InstrumentServer::new(service::Service::new(hub.clone()));
        std::thread::Builder::new().name("loopscope-console".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(target: "loopscope::console", "loopscope cannot serve the console API: {e}");
                        return;
                    }
                };
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let served = tonic::transport::Server::builder()
                    .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                    // A console that vanished without closing its connection is found and dropped.
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(target: "loopscope::console", "the console API server stopped: {e}");
                }
            });
        })?;
        Ok(ConsoleServer { addr, hub, stop: Mutex::new(Some(stop)) })
    }

    /// The bound address (with the real port when bound to port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Ends the streams and stops the server (the runtime is gone).
    pub(crate) fn shutdown(&self) {
        self.hub.close();
        if let Some(stop) = lock(&self.stop).take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the server at install when configured, so that a bad or taken address fails `install`.
pub(crate) fn start(shared: &crate::shared::Shared) -> Result<(), String> {
    if let Some(addr) = shared.config.console {
        let server = ConsoleServer::start(addr).map_err(|e| {
            format!("loopscope cannot serve the console API on {addr} (LOOPSCOPE_CONSOLE_ADDR / console_addr): {e}")
        })?;
        let _ = shared.console.set(server);
    }
    Ok(())
}

impl AgentBuilder {
    /// Serve the tokio-console gRPC API (`console-api` 0.9, what `tokio-console` 0.1 speaks), so that
    /// `tokio-console http://ADDR` watches this app's tasks: their spawn locations, polls, busy and
    /// scheduled time, and loopscope's stalls (default: off; needs the `console` feature).
    /// `LOOPSCOPE_CONSOLE_ADDR` overrides it.
    ///
    /// `addr` is `HOST:PORT` with an IP address, a port alone (`"6669"`, tokio-console's default, served on
    /// 127.0.0.1), or `off`. Port 0 picks a free port (see [`Agent::console_addr`]). An address that does
    /// not parse, or cannot be bound, makes [`install`](Self::install) fail with an error that names it.
    ///
    /// The server runs on a thread with a tokio runtime of its own, fed by the agent thread every sample
    /// interval; nothing is added to the poll hooks, and a console that reads slowly loses only its own
    /// updates. What tokio-console shows is in the README.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder()
    ///     .console_addr("127.0.0.1:0")
    ///     .serve("off")
    ///     .ignore_env()
    ///     .install(&mut builder)?;
    /// let addr = agent.console_addr().expect("serving the console API");
    /// assert!(addr.ip().is_loopback());
    /// // `tokio-console http://{addr}` attaches to it.
    /// # Ok(())
    /// # }
    /// ```
    pub fn console_addr(mut self, addr: &str) -> Self {
        match crate::config::parse_console_addr(addr) {
            Ok(a) => {
                self.config.console = a;
                self.bad_console = None;
            }
            Err(reason) => self.bad_console = Some((addr.to_string(), reason)),
        }
        self
    }
}

impl Agent {
    /// The address the tokio-console API is served on, with the real port when configured with port 0;
    /// `None` when it is off (the default; see [`AgentBuilder::console_addr`]).
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("off").ignore_env().install(&mut builder).unwrap();
    /// assert_eq!(agent.console_addr(), None);
    /// ```
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.shared.console.get().map(ConsoleServer::local_addr)
    }

    /// What the tokio-console API server has done so far; `None` when it is off.
    ///
    /// ```
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder()
    ///     .console_addr("127.0.0.1:0")
    ///     .serve("off")
    ///     .ignore_env()
    ///     .install(&mut builder)
    ///     .unwrap();
    /// assert_eq!(agent.console_stats().map(|s| s.clients), Some(0));
    /// ```
    pub fn console_stats(&self) -> Option<ConsoleStats> {
        self.shared.console.get().map(|s| s.hub.stats())
    }
}
