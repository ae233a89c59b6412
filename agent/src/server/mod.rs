//! The agent's network server: serves the live stream (see `wire/PROTOCOL.md`) to any number of clients.
//!
//! It knows nothing about where the data comes from: the feed gives it a greeting, a function that builds
//! the full state for a new (or resynchronizing) client, and messages to [`Server::broadcast`]. It reads
//! only those and its clients' sockets, and writes frames to the sockets and counters to [`ServerStats`];
//! it imports nothing of the agent but `sync::lock`, so the shared state can hold it without a cycle.
//!
//! One file per job: `bind.rs` (the listening socket), `acceptor.rs`, `client.rs` (one client's life),
//! `handshake.rs`, `queue.rs` (the bounded queue and its resync policy), `reader.rs`, `writer.rs`,
//! `conn.rs` (a TCP or Unix connection), `state.rs` (what the threads share), `stats.rs`.
//!
//! # Threads and bounds
//!
//! * One **acceptor** thread (`loopscope-serve`). It polls a non-blocking listener, so it can stop without a
//!   wake-up trick, and hands each connection to its own thread. At most `max_pending` handshakes run at
//!   once; connections beyond that are closed at once.
//! * Per client, a **writer** thread (`loopscope-client-N`) that does the handshake, sends the full state and
//!   then drains the client's queue, and a **reader** thread (`loopscope-client-N-rx`) that answers pings and
//!   notices a client that hung up.
//! * `broadcast` encodes a message once and pushes the shared bytes onto each client's **bounded** queue
//!   (`queue_frames` frames and `queue_bytes` bytes). It takes two short locks per client and never touches a
//!   socket, so it never blocks on a client.
//!
//! # A client that falls behind
//!
//! When a client's queue is full, its queued frames are discarded, the frame is dropped, and the client is
//! marked for a **resync**: until its writer catches up, further frames are dropped too. Every frame it
//! misses is counted (per client, in [`ServerStats`]). Once the writer has finished the frame it was
//! writing, it sends a fresh full state (at most once per `resync_interval`), so the client's picture is
//! complete again, and then the frames broadcast since. Every `Tick` and `FullState` tells each client its
//! own drop count: the server encodes the message once and appends the client's count as the final field
//! (see [`ServerFrame`]).
//!
//! A client that accepts no byte at all for `stuck_timeout` is disconnected; a client that hung up
//! (EPIPE/ECONNRESET) is dropped at the next write. None of this blocks or panics the host app.

mod acceptor;
mod bind;
mod client;
mod conn;
mod handshake;
mod queue;
mod reader;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use state::{ServeError, ServerConfig};
pub use stats::{ClientStats, ServerStats};

use crate::sync::lock;
use acceptor::accept_loop;
use bind::{bind, remove_socket_file};
use loopscope_wire::proto::{self, Goodbye, PROTOCOL_VERSION, ServeAddr, ServerFrame, ServerHello, ServerMessage};
use queue::{ClientSlot, Offered};
use state::{Counters, Inner, spawn};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// The protocol minor (of this major) from which a client reads [`ServerMessage::StallPart`].
const STALL_PART_MINOR: u16 = 2;

/// The agent's stream server. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Server {
    inner: Arc<Inner>,
    local_addr: ServeAddr,
    /// The Unix socket file we created, with its identity, so we remove only our own file.
    socket_file: Option<(PathBuf, (u64, u64))>,
    stopped: AtomicBool,
}

impl Server {
    /// Starts serving on `addr` with the default configuration.
    pub(crate) fn start(
        addr: &ServeAddr,
        hello: ServerHello,
        full_state: impl Fn() -> Vec<ServerMessage> + Send + Sync + 'static,
    ) -> Result<Server, ServeError> {
        Server::start_with(addr, ServerConfig::default(), hello, full_state)
    }

    /// Starts serving on `addr`: binds, then starts the acceptor thread. Returns once the address accepts
    /// connections.
    pub(crate) fn start_with(
        addr: &ServeAddr,
        config: ServerConfig,
        hello: ServerHello,
        full_state: impl Fn() -> Vec<ServerMessage> + Send + Sync + 'static,
    ) -> Result<Server, ServeError> {
        let greeting = encode_greeting(&hello)?;
        let (listener, local_addr, socket_file) = bind(addr)?;
        if !local_addr.is_local() {
            tracing::warn!(
                target: "loopscope::server",
                "serving the loopscope stream on {local_addr}, which other machines may reach: it shows task \
                 names, spawn locations and stacks"
            );
        }
        let inner = Arc::new(Inner {
            config,
            greeting: Mutex::new(greeting),
            full_state: Arc::new(full_state),
            clients: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            pending: AtomicUsize::new(0),
            threads: Mutex::new(0),
            threads_done: Condvar::new(),
            counters: Counters::default(),
        });
        let acceptor_inner = inner.clone();
        if let Err(e) = spawn(&inner, "loopscope-serve".into(), move || accept_loop(&acceptor_inner, listener)) {
            if let Some((path, id)) = &socket_file {
                remove_socket_file(path, *id);
            }
            return Err(ServeError::Spawn(e));
        }
        tracing::info!(target: "loopscope::server", "serving the loopscope stream on {local_addr}");
        Ok(Server { inner, local_addr, socket_file, stopped: AtomicBool::new(false) })
    }

    /// The address clients connect to (with the real port when started on port 0).
    pub(crate) fn local_addr(&self) -> &ServeAddr {
        &self.local_addr
    }

    /// Replaces the greeting sent to clients that connect from now on (e.g. once the runtime's flavor and
    /// worker count are known).
    pub(crate) fn set_hello(&self, hello: &ServerHello) -> Result<(), ServeError> {
        *lock(&self.inner.greeting) = encode_greeting(hello)?;
        Ok(())
    }

    /// Clients connected now (after their handshake).
    pub(crate) fn client_count(&self) -> usize {
        lock(&self.inner.clients).len()
    }

    /// Sends `msg` to every connected client without blocking: encodes it once and queues the bytes for each
    /// client. A client whose queue is full misses it (counted, and the client is resynchronized later; see
    /// the module docs). A `Tick` or `FullState` gets each client's own drop count patched in. Returns the
    /// number of clients it was queued for.
    pub(crate) fn broadcast(&self, msg: &ServerMessage) -> usize {
        self.broadcast_with(msg, None)
    }

    /// Sends a stall event: `part` ([`ServerMessage::StallPart`]) to clients of protocol 3.2 and later, and
    /// `whole` ([`ServerMessage::Stall`]) to older ones, which do not know parts and would skip them.
    pub(crate) fn broadcast_stall(&self, whole: &ServerMessage, part: &ServerMessage) -> usize {
        self.broadcast_with(part, Some(whole))
    }

    fn broadcast_with(&self, msg: &ServerMessage, older: Option<&ServerMessage>) -> usize {
        let clients: Vec<Arc<ClientSlot>> = lock(&self.inner.clients).clone();
        if clients.is_empty() {
            return 0;
        }
        let encode = |msg: &ServerMessage| match ServerFrame::encode(msg) {
            Ok(f) => Some(f),
            Err(e) => {
                if self.inner.counters.oversized.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(target: "loopscope::server", "not sending a {} message: {e}", msg.kind());
                }
                None
            }
        };
        let wants_older = |c: &ClientSlot| older.is_some() && c.version.minor < STALL_PART_MINOR;
        let frame = if clients.iter().all(|c| wants_older(c)) { None } else { encode(msg) };
        // Encoded only when some client needs it: usually every client is as new as the agent.
        let older_frame = older.filter(|_| clients.iter().any(|c| wants_older(c))).and_then(encode);
        let cfg = &self.inner.config;
        let mut queued = 0;
        for c in &clients {
            let frame = if wants_older(c) { &older_frame } else { &frame };
            let Some(frame) = frame else { continue };
            match c.offer(frame, cfg.queue_frames, cfg.queue_bytes) {
                Offered::Queued => queued += 1,
                Offered::Lost(lost) => {
                    self.inner.counters.dropped_frames.fetch_add(lost, Relaxed);
                }
                Offered::Skipped => {}
            }
        }
        queued
    }

    /// Counters of the server and of each client.
    pub(crate) fn stats(&self) -> ServerStats {
        let clients = lock(&self.inner.clients)
            .iter()
            .map(|c| {
                let q = lock(&c.queue);
                ClientStats {
                    id: c.id,
                    peer: c.peer.clone(),
                    name: c.name.clone(),
                    connected_for: c.connected_at.elapsed(),
                    frames_sent: c.frames_sent.load(Relaxed),
                    bytes_sent: c.bytes_sent.load(Relaxed),
                    dropped_frames: c.dropped.load(Relaxed),
                    resyncs: c.resyncs.load(Relaxed),
                    queued_frames: q.frames.len(),
                    queued_bytes: q.bytes,
                }
            })
            .collect();
        let k = &self.inner.counters;
        ServerStats {
            clients,
            accepted: k.accepted.load(Relaxed),
            handshakes: k.handshakes.load(Relaxed),
            refused: k.refused.load(Relaxed),
            bad_handshakes: k.bad_handshakes.load(Relaxed),
            shed: k.shed.load(Relaxed),
            disconnected: k.disconnected.load(Relaxed),
            dropped_frames: k.dropped_frames.load(Relaxed),
            oversized: k.oversized.load(Relaxed),
        }
    }

    /// Stops serving: sends every client a `Goodbye` with a generic reason, waits up to `shutdown_grace` for
    /// them to receive it, then closes everything and removes the Unix socket file. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.shutdown_with("the loopscope server stopped");
    }

    /// Like [`Server::shutdown`], with the reason clients are given (e.g. "the runtime shut down").
    pub(crate) fn shutdown_with(&self, reason: &str) {
        if self.stopped.swap(true, AcqRel) {
            return;
        }
        let inner = &self.inner;
        inner.stopping.store(true, Release);
        let deadline = Instant::now() + inner.config.shutdown_grace;
        let clients: Vec<Arc<ClientSlot>> = lock(&inner.clients).clone();
        match ServerFrame::encode(&ServerMessage::Goodbye(Goodbye { reason: reason.to_string() })) {
            Ok(bye) => {
                for c in &clients {
                    lock(&c.queue).goodbye = Some(bye.clone());
                    c.wake.notify_all();
                }
            }
            Err(_) => clients.iter().for_each(|c| c.close()),
        }
        // Wait (bounded) for the writers to deliver their goodbyes and every thread to exit.
        let mut running = lock(&inner.threads);
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            running = inner.threads_done.wait_timeout(running, left).map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
        drop(running);
        // Whoever is still there (a client that stopped reading) is cut off; its threads exit on their own.
        for c in lock(&inner.clients).iter() {
            c.close();
        }
        if let Some((path, id)) = &self.socket_file {
            remove_socket_file(path, *id);
        }
        tracing::debug!(target: "loopscope::server", "stopped serving on {}", self.local_addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn encode_greeting(hello: &ServerHello) -> Result<Arc<[u8]>, ServeError> {
    let mut bytes = proto::preamble(PROTOCOL_VERSION).to_vec();
    let frame = ServerFrame::encode(&ServerMessage::Hello(Box::new(hello.clone()))).map_err(ServeError::Encode)?;
    bytes.extend(frame.parts(0).to_vec());
    Ok(bytes.into())
}
