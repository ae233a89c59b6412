//! The agent's network server: serves the live stream (see `wire/PROTOCOL.md`) to any number of clients.
//!
//! It knows nothing about where the data comes from: the feed gives it a greeting, a function that builds
//! the full state for a new (or resynchronizing) client, and messages to [`Server::broadcast`].
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

use crate::sync::lock;
use loopscope_wire::proto::{
    self, ClientMessage, Decoded, FrameParts, Goodbye, MAX_HANDSHAKE_FRAME_LEN, PROTOCOL_VERSION, Pong, ProtoError,
    ProtocolVersion, Refused, ServeAddr, ServerFrame, ServerHello, ServerMessage,
};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Builds the messages a client receives first: a `FullState` followed by its `FullTasks` chunks (see
/// [`proto::full_state_messages`]). Called on a client's writer thread, possibly on several at once.
pub(crate) type FullStateFn = Arc<dyn Fn() -> Vec<ServerMessage> + Send + Sync + 'static>;

/// Tuning of a [`Server`]. The defaults suit a dashboard or two on the same machine.
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    /// Clients served at once; more are refused with a reason.
    pub(crate) max_clients: usize,
    /// Connections in the handshake at once; more are closed immediately (a connection flood costs nothing).
    pub(crate) max_pending: usize,
    /// Frames queued per client before it counts as fallen behind.
    pub(crate) queue_frames: usize,
    /// Bytes queued per client before it counts as fallen behind (frames are shared between clients, so this
    /// bounds memory per slow client, not per frame).
    pub(crate) queue_bytes: usize,
    /// A connection must complete its handshake within this.
    pub(crate) handshake_timeout: Duration,
    /// A client that accepts no byte for this long is disconnected.
    pub(crate) stuck_timeout: Duration,
    /// At most one full-state resync per client per this interval.
    pub(crate) resync_interval: Duration,
    /// How long `shutdown` waits for clients to receive their goodbye.
    pub(crate) shutdown_grace: Duration,
    /// How often the acceptor looks for new connections. A new client waits at most this long for its
    /// greeting; 200 ms keeps an idle server at about 0.03% of a core (50 ms cost 0.12%).
    pub(crate) accept_poll: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_clients: 16,
            max_pending: 8,
            queue_frames: 64,
            queue_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            stuck_timeout: Duration::from_secs(30),
            resync_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_millis(500),
            accept_poll: Duration::from_millis(200),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// Binding the address failed (in use, permission denied, no such directory...).
    #[error("loopscope cannot listen on {addr}")]
    Bind {
        addr: ServeAddr,
        #[source]
        source: io::Error,
    },
    /// A live process already serves on this Unix socket.
    #[error("loopscope cannot listen on unix:{}: another process is serving on it", path.display())]
    SocketInUse { path: PathBuf },
    /// The Unix socket path exists and is something else; it is not ours to delete.
    #[error("loopscope cannot listen on unix:{}: the path exists and is not a socket", path.display())]
    NotASocket { path: PathBuf },
    /// The greeting could not be encoded.
    #[error("loopscope could not encode its greeting")]
    Encode(#[source] ProtoError),
    /// The acceptor thread could not be started.
    #[error("loopscope could not start its server thread")]
    Spawn(#[source] io::Error),
}

/// Counters of one client connected to the live stream ([`Agent::stream_stats`](crate::Agent::stream_stats)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Server-assigned id, in connection order.
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// The name the client gave in its hello.
    pub name: String,
    /// Time since the handshake.
    pub connected_for: Duration,
    /// Frames written to it.
    pub frames_sent: u64,
    /// Bytes written to it.
    pub bytes_sent: u64,
    /// Frames it missed because it fell behind.
    pub dropped_frames: u64,
    /// Full states sent to it after it fell behind.
    pub resyncs: u64,
    /// Frames waiting in its queue.
    pub queued_frames: usize,
    /// Bytes waiting in its queue.
    pub queued_bytes: usize,
}

/// Counters of the live-stream server ([`Agent::stream_stats`](crate::Agent::stream_stats)). Connected
/// clients are listed; departed ones only counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Clients connected now.
    pub clients: Vec<ClientStats>,
    /// Connections accepted (before the handshake).
    pub accepted: u64,
    /// Clients that completed the handshake.
    pub handshakes: u64,
    /// Connections refused: version mismatch, too many clients.
    pub refused: u64,
    /// Connections closed for a bad handshake: not loopscope, garbage, oversized frames, silence.
    pub bad_handshakes: u64,
    /// Connections closed at once because too many handshakes were in progress.
    pub shed: u64,
    /// Clients that left after a handshake (hung up, were too slow, sent garbage, or the server stopped).
    pub disconnected: u64,
    /// Frames dropped for slow clients, over all clients (departed ones included).
    pub dropped_frames: u64,
    /// Messages not sent to anyone because they exceeded the frame limit.
    pub oversized: u64,
}

/// A connection, TCP or Unix.
#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            #[cfg(unix)]
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            #[cfg(unix)]
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_write_timeout(t),
            #[cfg(unix)]
            Conn::Unix(s) => s.set_write_timeout(t),
        }
    }

    fn shutdown(&self, how: Shutdown) {
        // Fails only when the peer is already gone, which is the goal anyway.
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(how),
            #[cfg(unix)]
            Conn::Unix(s) => s.shutdown(how),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write_vectored(bufs),
            #[cfg(unix)]
            Conn::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read with an overall deadline: each read waits at most until the deadline, so a client that trickles
/// one byte at a time cannot hold a handshake open forever.
struct DeadlineReader<'a> {
    conn: &'a mut Conn,
    until: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"));
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Normal streaming.
    Streaming,
    /// Fell behind: frames are dropped until the writer sends a fresh full state.
    NeedsResync,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<ServerFrame>,
    bytes: usize,
    phase: Phase,
    /// Set when the reader saw the client hang up, or the server gave up on it.
    closed: bool,
    /// The server is stopping: send this last, then close.
    goodbye: Option<ServerFrame>,
    /// Pongs to send, answered ahead of the stream (bounded by `queue_frames`).
    pongs: VecDeque<ServerFrame>,
}

/// One connected client, shared by the broadcaster, its writer and its reader.
#[derive(Debug)]
struct ClientSlot {
    id: u64,
    peer: String,
    name: String,
    /// The protocol the client speaks (same major as ours): a 1.0 client gets stall events uncompressed.
    version: ProtocolVersion,
    connected_at: Instant,
    queue: Mutex<Queue>,
    wake: Condvar,
    dropped: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    resyncs: AtomicU64,
    /// A second handle on the socket, to unblock the threads when the server stops.
    conn: Mutex<Option<Conn>>,
}

impl ClientSlot {
    fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_all();
        if let Some(c) = lock(&self.conn).as_ref() {
            c.shutdown(Shutdown::Both);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    handshakes: AtomicU64,
    refused: AtomicU64,
    bad_handshakes: AtomicU64,
    shed: AtomicU64,
    disconnected: AtomicU64,
    dropped_frames: AtomicU64,
    oversized: AtomicU64,
}

struct Inner {
    config: ServerConfig,
    /// The preamble followed by the encoded `ServerHello` frame.
    greeting: Mutex<Arc<[u8]>>,
    full_state: FullStateFn,
    clients: Mutex<Vec<Arc<ClientSlot>>>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    pending: AtomicUsize,
    /// Threads (acceptor, writers, readers) still running, and a condvar signalled as each exits.
    threads: Mutex<usize>,
    threads_done: Condvar,
    counters: Counters,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("clients", &lock(&self.clients).len())
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

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
        let clients: Vec<Arc<ClientSlot>> = lock(&self.inner.clients).clone();
        if clients.is_empty() {
            return 0;
        }
        let frame = match ServerFrame::encode(msg) {
            Ok(f) => f,
            Err(e) => {
                if self.inner.counters.oversized.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(target: "loopscope::server", "not sending a {} message: {e}", msg.kind());
                }
                return 0;
            }
        };
        let cfg = &self.inner.config;
        let mut queued = 0;
        for c in &clients {
            let mut q = lock(&c.queue);
            if q.closed || q.goodbye.is_some() {
                continue;
            }
            let len = frame.wire_len();
            let fits = q.frames.is_empty() || (q.frames.len() < cfg.queue_frames && q.bytes + len <= cfg.queue_bytes);
            if q.phase == Phase::NeedsResync || !fits {
                // Fallen behind: what is queued is stale now (a fresh full state will replace it), so free it
                // at once rather than hold memory for a client that may never catch up.
                let lost = 1 + q.frames.len() as u64;
                q.frames.clear();
                q.bytes = 0;
                q.phase = Phase::NeedsResync;
                drop(q);
                c.dropped.fetch_add(lost, Relaxed);
                self.inner.counters.dropped_frames.fetch_add(lost, Relaxed);
                c.wake.notify_all();
                continue;
            }
            q.bytes += len;
            q.frames.push_back(frame.clone());
            drop(q);
            c.wake.notify_all();
            queued += 1;
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

/// Starts a thread counted in `inner.threads`, so that shutdown can wait for it.
fn spawn(inner: &Arc<Inner>, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    *lock(&inner.threads) += 1;
    let guard_inner = inner.clone();
    let res = std::thread::Builder::new().name(name).stack_size(256 * 1024).spawn(move || {
        // Counted down even if `f` panics, so shutdown never waits for a thread that is gone.
        struct Exit(Arc<Inner>);
        impl Drop for Exit {
            fn drop(&mut self) {
                let mut n = lock(&self.0.threads);
                *n = n.saturating_sub(1);
                self.0.threads_done.notify_all();
            }
        }
        let _exit = Exit(guard_inner);
        f();
    });
    if res.is_err() {
        let mut n = lock(&inner.threads);
        *n = n.saturating_sub(1);
    }
    res
}

// ---- binding ----

enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nonblocking(false)?;
                // Frames go out whole (one writev each); small ones (pongs, stalls) should not wait for Nagle.
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), peer.to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Conn::Unix(s), "unix socket peer".to_string()))
            }
        }
    }
}

type Bound = (Listener, ServeAddr, Option<(PathBuf, (u64, u64))>);

fn bind(addr: &ServeAddr) -> Result<Bound, ServeError> {
    let bind_err = |source| ServeError::Bind { addr: addr.clone(), source };
    match addr {
        ServeAddr::Tcp(sa) => {
            let l = TcpListener::bind(sa).map_err(bind_err)?;
            l.set_nonblocking(true).map_err(bind_err)?;
            let local = l.local_addr().map_err(bind_err)?;
            Ok((Listener::Tcp(l), ServeAddr::Tcp(local), None))
        }
        #[cfg(unix)]
        ServeAddr::Unix(path) => {
            let (l, id) = bind_unix(path)?;
            l.set_nonblocking(true).map_err(bind_err)?;
            Ok((Listener::Unix(l), addr.clone(), Some((path.clone(), id))))
        }
        #[cfg(not(unix))]
        ServeAddr::Unix(_) => Err(bind_err(io::Error::new(io::ErrorKind::Unsupported, "Unix sockets need a Unix OS"))),
    }
}

/// Binds a Unix socket at `path` that only this user can connect to (mode 0600).
///
/// A socket file left by a dead process is replaced; one that a live process still serves is an error, and
/// so is a path that is not a socket (it is not ours to delete). To leave no moment where the socket exists
/// with looser permissions, it is bound inside a fresh private (0700) directory, restricted to 0600, then
/// renamed into place. Returns the listener and the file's (device, inode), to remove only our own file later.
#[cfg(unix)]
fn bind_unix(path: &Path) -> Result<(UnixListener, (u64, u64)), ServeError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    let addr = ServeAddr::Unix(path.to_path_buf());
    let bind_err = |source| ServeError::Bind { addr: addr.clone(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket { path: path.to_path_buf() });
        }
        match UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::SocketInUse { path: path.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::debug!(target: "loopscope::server", "replacing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let private = parent.join(format!(".loopscope-{}-{}", std::process::id(), NEXT.fetch_add(1, Relaxed)));
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(bind_err)?;
    let staged = private.join("s");
    let result = (|| {
        let l = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        let meta = std::fs::metadata(path)?;
        Ok((l, (meta.dev(), meta.ino())))
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(bind_err)
}

#[cfg(unix)]
fn remove_socket_file(path: &Path, id: (u64, u64)) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && (meta.dev(), meta.ino()) == id
    {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(not(unix))]
fn remove_socket_file(_: &Path, _: (u64, u64)) {}

// ---- accepting and serving ----

fn accept_loop(inner: &Arc<Inner>, listener: Listener) {
    while !inner.stopping.load(Acquire) {
        match listener.accept() {
            Ok((conn, peer)) => {
                inner.counters.accepted.fetch_add(1, Relaxed);
                if inner.pending.load(Acquire) >= inner.config.max_pending {
                    // A connection flood must not become a thread flood: drop it unanswered.
                    inner.counters.shed.fetch_add(1, Relaxed);
                    continue;
                }
                inner.pending.fetch_add(1, AcqRel);
                let id = inner.next_id.fetch_add(1, Relaxed);
                let me = inner.clone();
                if let Err(e) =
                    spawn(inner, format!("loopscope-client-{id}"), move || serve_client(&me, id, conn, peer))
                {
                    inner.pending.fetch_sub(1, AcqRel);
                    tracing::warn!(target: "loopscope::server", "could not start a client thread: {e}");
                }
            }
            Err(e) if proto::is_timeout(&e) => std::thread::sleep(inner.config.accept_poll),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, or the like: back off rather than spin.
                tracing::debug!(target: "loopscope::server", "accept failed: {e}");
                std::thread::sleep(inner.config.accept_poll);
            }
        }
    }
}

/// Ends a connection politely: says why, stops writing, and reads what the peer still sends for a moment
/// before closing, so the close is a FIN the peer reads after our last frame rather than a reset that could
/// discard it.
fn refuse(conn: &mut Conn, reason: String) {
    if let Ok(frame) = ServerFrame::encode(&ServerMessage::Refused(Refused { reason })) {
        let _ = write_all_parts(conn, &frame.parts(0));
    }
    linger_close(conn);
}

fn linger_close(conn: &mut Conn) {
    conn.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(200);
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn write_all_parts(conn: &mut Conn, parts: &FrameParts) -> io::Result<()> {
    conn.write_all(&parts.to_vec())
}

fn serve_client(inner: &Arc<Inner>, id: u64, mut conn: Conn, peer: String) {
    let handshake = handshake(inner, &mut conn, &peer);
    inner.pending.fetch_sub(1, AcqRel);
    let Some((name, version)) = handshake else { return };
    let (Ok(reader_conn), Ok(control_conn)) = (conn.try_clone(), conn.try_clone()) else { return };
    let slot = Arc::new(ClientSlot {
        id,
        peer: peer.clone(),
        name,
        version,
        connected_at: Instant::now(),
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            phase: Phase::Streaming,
            closed: false,
            goodbye: None,
            pongs: VecDeque::new(),
        }),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        frames_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        conn: Mutex::new(Some(control_conn)),
    });
    {
        let mut clients = lock(&inner.clients);
        // Checked again here, under the lock, so that racing handshakes cannot exceed the limit.
        if clients.len() >= inner.config.max_clients || inner.stopping.load(Acquire) {
            drop(clients);
            inner.counters.refused.fetch_add(1, Relaxed);
            let reason = format!("too many clients (the limit is {})", inner.config.max_clients);
            refuse(&mut conn, reason);
            return;
        }
        clients.push(slot.clone());
    }
    inner.counters.handshakes.fetch_add(1, Relaxed);
    tracing::debug!(target: "loopscope::server", client = id, peer = %peer, name = %slot.name, "client connected");
    let reader_slot = slot.clone();
    let reader_inner = inner.clone();
    if spawn(inner, format!("loopscope-client-{id}-rx"), move || read_loop(&reader_inner, &reader_slot, reader_conn))
        .is_err()
    {
        slot.close();
    }
    let why = write_loop(inner, &slot, &mut conn);
    slot.close();
    *lock(&slot.conn) = None;
    lock(&inner.clients).retain(|c| c.id != id);
    inner.counters.disconnected.fetch_add(1, Relaxed);
    tracing::debug!(target: "loopscope::server", client = id, peer = %peer, "client disconnected: {why}");
}

/// Greets the client and reads its hello. Returns the client's name, or `None` after refusing or dropping it.
fn handshake(inner: &Inner, conn: &mut Conn, peer: &str) -> Option<(String, ProtocolVersion)> {
    let cfg = &inner.config;
    let until = Instant::now() + cfg.handshake_timeout;
    if conn.set_write_timeout(Some(cfg.handshake_timeout)).is_err() {
        return None;
    }
    if lock(&inner.clients).len() >= cfg.max_clients {
        inner.counters.refused.fetch_add(1, Relaxed);
        let _ = conn.write_all(&proto::preamble(PROTOCOL_VERSION));
        refuse(conn, format!("too many clients (the limit is {})", cfg.max_clients));
        return None;
    }
    let greeting = lock(&inner.greeting).clone();
    if conn.write_all(&greeting).is_err() {
        inner.counters.bad_handshakes.fetch_add(1, Relaxed);
        return None;
    }
    let result = proto::read_client_handshake(&mut DeadlineReader { conn: &mut *conn, until });
    match result {
        Ok((version, hello)) => {
            // Bounded: the hello frame is at most MAX_HANDSHAKE_FRAME_LEN, but a name is for logs.
            let name: String = hello.client_name.chars().take(200).collect();
            tracing::trace!(target: "loopscope::server", peer, %version, "handshake");
            Some((name, version))
        }
        Err(ProtoError::VersionMismatch { local, remote }) => {
            inner.counters.refused.fetch_add(1, Relaxed);
            let reason = format!(
                "protocol version mismatch: the agent speaks loopscope protocol {local}, this client speaks \
                 {remote}; the major versions must match (upgrade the older of the two)"
            );
            refuse(conn, reason);
            None
        }
        Err(e) => {
            inner.counters.bad_handshakes.fetch_add(1, Relaxed);
            tracing::debug!(target: "loopscope::server", peer, "closing a connection with a bad handshake: {e}");
            None
        }
    }
}

/// Answers pings and notices when the client hangs up or misbehaves.
fn read_loop(inner: &Inner, slot: &ClientSlot, mut conn: Conn) {
    let _ = conn.set_read_timeout(None);
    loop {
        // Clients send only small commands; anything big is hostile.
        match proto::read_frame(&mut conn, MAX_HANDSHAKE_FRAME_LEN) {
            Ok(Some(payload)) => match proto::decode_client(&payload) {
                Ok(Decoded::Message(ClientMessage::Ping(p))) => {
                    let Ok(pong) = ServerFrame::encode(&ServerMessage::Pong(Pong { nonce: p.nonce })) else { continue };
                    let mut q = lock(&slot.queue);
                    if q.pongs.len() < inner.config.queue_frames {
                        q.pongs.push_back(pong);
                    }
                    drop(q);
                    slot.wake.notify_all();
                }
                // Commands from a newer minor version: ignore.
                Ok(Decoded::Unknown { .. }) => {}
                Ok(Decoded::Message(other)) => {
                    tracing::debug!(target: "loopscope::server", client = slot.id, "unexpected {other:?}; closing");
                    break;
                }
                Err(e) => {
                    tracing::debug!(target: "loopscope::server", client = slot.id, "bad frame: {e}; closing");
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::trace!(target: "loopscope::server", client = slot.id, "read ended: {e}");
                break;
            }
        }
    }
    slot.close();
}

enum Next {
    Frame(ServerFrame),
    Full,
    Goodbye(ServerFrame),
    Done,
}

/// Sends the full state, then the queue, until the client or the server goes away. Returns why it stopped.
fn write_loop(inner: &Inner, slot: &ClientSlot, conn: &mut Conn) -> String {
    let cfg = &inner.config;
    // Short write timeouts let a writer stuck on a client that stopped reading notice shutdown and closure.
    let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
    let mut next_full_allowed = Instant::now();
    let mut first = true;
    loop {
        let next = if first {
            first = false;
            Next::Full
        } else {
            let mut q = lock(&slot.queue);
            loop {
                if q.closed {
                    break Next::Done;
                }
                if let Some(p) = q.pongs.pop_front() {
                    break Next::Frame(p);
                }
                if q.phase == Phase::NeedsResync {
                    if let Some(bye) = q.goodbye.take() {
                        break Next::Goodbye(bye);
                    }
                    let now = Instant::now();
                    if now >= next_full_allowed {
                        q.phase = Phase::Streaming;
                        break Next::Full;
                    }
                    q = slot.wake.wait_timeout(q, next_full_allowed - now).map_or_else(|p| p.into_inner().0, |r| r.0);
                    continue;
                }
                if let Some(f) = q.frames.pop_front() {
                    q.bytes = q.bytes.saturating_sub(f.wire_len());
                    break Next::Frame(f);
                }
                if let Some(bye) = q.goodbye.take() {
                    break Next::Goodbye(bye);
                }
                q = slot.wake.wait_timeout(q, Duration::from_secs(1)).map_or_else(|p| p.into_inner().0, |r| r.0);
            }
        };
        let result = match next {
            Next::Done => return "closed".into(),
            Next::Goodbye(bye) => {
                let r = send(inner, slot, conn, &bye);
                // The reader thread keeps consuming what the client sends, so closing now is a clean FIN.
                conn.shutdown(Shutdown::Write);
                return match r {
                    Ok(()) => "goodbye sent".into(),
                    Err(e) => e,
                };
            }
            Next::Frame(f) => send(inner, slot, conn, &f),
            Next::Full => {
                next_full_allowed = Instant::now() + cfg.resync_interval;
                // Whatever is queued is older than the state about to be built, which includes it.
                let mut q = lock(&slot.queue);
                q.frames.clear();
                q.bytes = 0;
                drop(q);
                send_full(inner, slot, conn)
            }
        };
        if let Err(why) = result {
            return why;
        }
    }
}

fn send_full(inner: &Inner, slot: &ClientSlot, conn: &mut Conn) -> Result<(), String> {
    if slot.frames_sent.load(Relaxed) > 0 {
        slot.resyncs.fetch_add(1, Relaxed);
    }
    for msg in (inner.full_state)() {
        match ServerFrame::encode(&msg) {
            Ok(f) => send(inner, slot, conn, &f)?,
            Err(e) => {
                inner.counters.oversized.fetch_add(1, Relaxed);
                tracing::warn!(target: "loopscope::server", "not sending a {} message: {e}", msg.kind());
            }
        }
    }
    Ok(())
}

/// Writes one frame, with the client's current drop count patched in. Gives up when the client hung up,
/// was closed, accepted nothing for `stuck_timeout`, or the server is stopping and the grace period passed.
fn send(inner: &Inner, slot: &ClientSlot, conn: &mut Conn, frame: &ServerFrame) -> Result<(), String> {
    let parts = frame.parts_for(slot.version, slot.dropped.load(Relaxed));
    let total = parts.len();
    let mut done = 0;
    let mut last_progress = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    while done < total {
        let slices = parts.slices();
        let mut skip = done;
        let mut io = Vec::with_capacity(3);
        for s in slices {
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            io.push(IoSlice::new(&s[skip..]));
            skip = 0;
        }
        match conn.write_vectored(&io) {
            Ok(0) => return Err("the connection closed".into()),
            Ok(n) => {
                done += n;
                last_progress = Instant::now();
                slot.bytes_sent.fetch_add(n as u64, Relaxed);
            }
            Err(e) if proto::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if lock(&slot.queue).closed {
                    return Err("closed while writing".into());
                }
                if last_progress.elapsed() >= inner.config.stuck_timeout {
                    return Err(format!("the client accepted nothing for {:?}", inner.config.stuck_timeout));
                }
                if inner.stopping.load(Acquire) {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= inner.config.shutdown_grace {
                        return Err("the server stopped while the client was not reading".into());
                    }
                }
            }
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    slot.frames_sent.fetch_add(1, Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1 (ephemeral ports) and in a temporary directory; every wait has a deadline.

    use super::*;
    use loopscope_wire::Location;
    use loopscope_wire::client::{Client, ClientError};
    use loopscope_wire::proto::{
        FullState, LocationInfo, MAX_FRAME_LEN, ProtocolVersion, TaskSample, Tick, full_state_messages,
    };
    use loopscope_wire::state::State;
    use std::net::TcpStream;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn hello() -> ServerHello {
        loopscope_wire::record::example_hello()
    }

    fn config() -> ServerConfig {
        ServerConfig {
            handshake_timeout: Duration::from_millis(500),
            resync_interval: Duration::from_millis(20),
            accept_poll: Duration::from_millis(5),
            ..ServerConfig::default()
        }
    }

    fn full_state() -> Vec<ServerMessage> {
        let full = FullState { uptime_nanos: 1, ..FullState::default() };
        full_state_messages(full, vec![TaskSample::new(1, 0), TaskSample::new(2, 0)])
    }

    fn start(config: ServerConfig) -> Server {
        let addr: ServeAddr = "127.0.0.1:0".parse().unwrap();
        Server::start_with(&addr, config, hello(), full_state).unwrap()
    }

    fn connect_raw(server: &Server, name: &str) -> Client {
        Client::connect_named(server.local_addr(), name, DEADLINE).unwrap()
    }

    /// Connects and waits for the full state: only then does the client get every broadcast (frames queued
    /// before its full state is built are superseded by it).
    fn connect(server: &Server, name: &str) -> Client {
        let mut c = connect_raw(server, name);
        recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::FullTasks(_)));
        c
    }

    fn tick(seq: u64) -> ServerMessage {
        ServerMessage::Tick(Box::new(Tick { seq, uptime_nanos: 1 + seq, ..Tick::default() }))
    }

    /// Receives until `pred` matches, failing after the deadline with what arrived instead.
    fn recv_until(c: &mut Client, what: &str, mut pred: impl FnMut(&ServerMessage) -> bool) -> ServerMessage {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Some(m) = c.recv(Duration::from_millis(100)).unwrap() {
                if pred(&m) {
                    return m;
                }
                seen.push(m.kind());
            }
        }
        panic!("timed out waiting for {what}; saw {seen:?}");
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out waiting for {what}");
    }

    /// Reads a raw socket until the peer closes it; fails if it stays open past the deadline.
    fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
        let end = Instant::now() + DEADLINE;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the server did not close the connection");
            s.set_read_timeout(Some(left)).unwrap();
            match s.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
                Err(e) if proto::is_timeout(&e) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Parses what a server sent on a raw connection: the preamble, then frames.
    fn parse_server_bytes(bytes: &[u8]) -> Vec<ServerMessage> {
        let mut r = bytes;
        proto::read_preamble(&mut r).unwrap();
        let mut out = Vec::new();
        while let Some(p) = proto::read_frame(&mut r, MAX_FRAME_LEN).unwrap() {
            if let Decoded::Message(m) = proto::decode_server(&p).unwrap() {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn tcp_handshake_full_state_ticks_and_ping() {
        let addr: ServeAddr = "127.0.0.1:0".parse().unwrap();
        let server = Server::start(&addr, hello(), full_state).unwrap();
        let mut c = connect_raw(&server, "test client");
        assert_eq!(c.hello(), &hello());
        let mut state = State::new();
        state.apply_hello(c.hello());
        let full = recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::Full(_)));
        state.apply(&full);
        let chunk = recv_until(&mut c, "the tasks", |m| matches!(m, ServerMessage::FullTasks(_)));
        state.apply(&chunk);
        assert!(state.is_ready());
        assert_eq!(state.tasks().len(), 2);
        wait_until("the client to be listed", || server.client_count() == 1);
        assert_eq!(server.broadcast(&tick(1)), 1);
        let t = recv_until(&mut c, "a tick", |m| matches!(m, ServerMessage::Tick(_)));
        let ServerMessage::Tick(t) = t else { unreachable!() };
        assert_eq!((t.seq, t.client_dropped_frames), (1, 0));
        c.ping(77).unwrap();
        recv_until(&mut c, "the pong", |m| matches!(m, ServerMessage::Pong(Pong { nonce: 77 })));
        let stats = server.stats();
        assert_eq!(stats.clients.len(), 1);
        assert_eq!(stats.clients[0].name, "test client");
        assert_eq!(stats.handshakes, 1);
        // Clients that connect later get the updated greeting.
        let mut later = hello();
        later.runtime.flavor = Some("current_thread".into());
        server.set_hello(&later).unwrap();
        assert_eq!(connect_raw(&server, "later").hello(), &later);
    }

    #[cfg(unix)]
    #[test]
    fn unix_socket_is_private_replaces_stale_files_and_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        static N: AtomicU64 = AtomicU64::new(0);
        let dir =
            std::env::temp_dir().join(format!("loopscope-srv-{}-{}", std::process::id(), N.fetch_add(1, Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        // A stale socket file, as a crashed app leaves behind.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let addr = ServeAddr::Unix(path.clone());
        let server = Server::start_with(&addr, config(), hello(), full_state).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
        let mut c = Client::connect(&addr, DEADLINE).unwrap();
        recv_until(&mut c, "the full state", |m| matches!(m, ServerMessage::Full(_)));
        // A second server on the same live socket is refused rather than stealing it.
        let e = Server::start_with(&addr, config(), hello(), full_state).unwrap_err();
        assert!(matches!(e, ServeError::SocketInUse { .. }), "{e}");
        assert!(e.to_string().contains("another process"), "{e}");
        server.shutdown();
        recv_until(&mut c, "goodbye", |m| matches!(m, ServerMessage::Goodbye(_)));
        assert!(!path.exists(), "the socket file is removed on shutdown");
        // Something that is not a socket is never deleted.
        std::fs::write(&path, b"precious").unwrap();
        let e = Server::start_with(&addr, config(), hello(), full_state).unwrap_err();
        assert!(matches!(e, ServeError::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stall event as big as real ones: a 60-frame stack of long names, sampled three times.
    fn big_stall() -> ServerMessage {
        ServerMessage::Stall(Box::new(loopscope_wire::example_stall(1, 60, 3)))
    }

    #[test]
    fn stall_events_are_compressed_except_for_protocol_1_0_clients() {
        let server = start(config());
        let mut new = connect(&server, "1.1");
        // A 1.0 client, by hand: its preamble and hello name minor 0.
        let ServeAddr::Tcp(sa) = *server.local_addr() else { unreachable!() };
        let mut old = TcpStream::connect(sa).unwrap();
        let v1_0 = ProtocolVersion { major: PROTOCOL_VERSION.major, minor: 0 };
        old.write_all(&proto::preamble(v1_0)).unwrap();
        let hello = ClientMessage::Hello(loopscope_wire::proto::ClientHello {
            protocol_version: v1_0,
            client_name: "1.0".into(),
        });
        proto::write_frame(&mut old, &hello).unwrap();
        old.set_read_timeout(Some(DEADLINE)).unwrap();
        proto::read_preamble(&mut old).unwrap();
        let mut next_old = || proto::read_frame(&mut old, MAX_FRAME_LEN).unwrap().expect("a frame");
        // Once the old client has its full state, every broadcast reaches it.
        while !matches!(proto::decode_server(&next_old()).unwrap(), Decoded::Message(ServerMessage::FullTasks(_))) {}

        let stall = big_stall();
        assert_eq!(server.broadcast(&stall), 2);
        let plain = loop {
            let p = next_old();
            if matches!(proto::decode_server(&p).unwrap(), Decoded::Message(ServerMessage::Stall(_))) {
                break p;
            }
        };
        assert_eq!(u32::from(plain[0]), 5, "the 1.0 client gets a plain Stall (kind 5)");
        let packed = loop {
            match new.recv_raw(DEADLINE).unwrap() {
                Some((m @ ServerMessage::Stall(_), p)) => break (m, p),
                Some(_) => {}
                None => panic!("no stall within the deadline"),
            }
        };
        assert_eq!(u32::from(packed.1[0]), proto::COMPRESSED_KIND, "the 1.1 client gets the envelope");
        assert!(packed.1.len() * 4 < plain.len(), "{} vs {} bytes", packed.1.len(), plain.len());
        assert_eq!(packed.0, stall, "and decodes the same event");
    }

    #[test]
    fn client_with_another_major_is_refused_naming_both_versions() {
        let server = start(config());
        let ServeAddr::Tcp(sa) = server.local_addr() else { unreachable!() };
        let mut s = TcpStream::connect(sa).unwrap();
        let theirs = ProtocolVersion { major: PROTOCOL_VERSION.major + 1, minor: 3 };
        s.write_all(&proto::preamble(theirs)).unwrap();
        s.write_all(&[1, 0, 0, 0, 0]).unwrap();
        let msgs = parse_server_bytes(&read_to_close(&mut s));
        assert!(matches!(msgs.first(), Some(ServerMessage::Hello(_))), "{msgs:?}");
        let Some(ServerMessage::Refused(r)) = msgs.get(1) else { panic!("expected Refused, got {msgs:?}") };
        assert!(r.reason.contains(&PROTOCOL_VERSION.to_string()), "{}", r.reason);
        assert!(r.reason.contains(&theirs.to_string()), "{}", r.reason);
        assert_eq!(server.stats().refused, 1);
    }

    #[test]
    fn too_many_clients_are_refused() {
        let server = start(ServerConfig { max_clients: 1, ..config() });
        let _first = connect_raw(&server, "first");
        wait_until("the first client", || server.client_count() == 1);
        match Client::connect(server.local_addr(), DEADLINE) {
            Err(ClientError::Refused { reason, .. }) => assert!(reason.contains("too many clients"), "{reason}"),
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(mut c) => {
                // The refusal may come right after the greeting when two handshakes raced.
                let e = c.recv(DEADLINE).unwrap_err();
                assert!(matches!(e, ClientError::Refused { .. }), "{e}");
            }
        }
    }

    #[test]
    fn garbage_clients_are_closed_and_others_keep_receiving() {
        let server = start(config());
        let ServeAddr::Tcp(sa) = *server.local_addr() else { unreachable!() };
        let mut good = connect(&server, "good");

        let mut random = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..256 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            random.push(x as u8);
        }
        let mut huge = proto::preamble(PROTOCOL_VERSION).to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        let mut oversized_hello = proto::preamble(PROTOCOL_VERSION).to_vec();
        oversized_hello.extend((MAX_HANDSHAKE_FRAME_LEN + 1).to_le_bytes());
        let mut undecodable = proto::preamble(PROTOCOL_VERSION).to_vec();
        undecodable.extend([3, 0, 0, 0, 0, 0xff, 0xff]);
        let inputs: Vec<(&str, Vec<u8>)> = vec![
            ("random bytes", random),
            ("an HTTP request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
            ("a huge length prefix", huge),
            ("an oversized hello", oversized_hello),
            ("an undecodable hello", undecodable),
            ("silence", Vec::new()),
        ];
        let mut seq = 0;
        for (what, bytes) in &inputs {
            let mut s = TcpStream::connect(sa).unwrap();
            s.write_all(bytes).unwrap();
            let start = Instant::now();
            let got = read_to_close(&mut s);
            assert!(got.starts_with(&proto::MAGIC), "{what}: the server greets first");
            eprintln!("{what}: closed after {:?}", start.elapsed());
            seq += 1;
            server.broadcast(&tick(seq));
            recv_until(&mut good, "a tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == seq));
        }
        wait_until("all bad handshakes counted", || server.stats().bad_handshakes == inputs.len() as u64);
        assert_eq!(server.client_count(), 1);

        // Garbage after a good handshake closes that client only.
        let mut s = TcpStream::connect(sa).unwrap();
        proto::write_client_handshake(&mut s, "then garbage").unwrap();
        wait_until("the second client", || server.client_count() == 2);
        s.write_all(&(MAX_FRAME_LEN).to_le_bytes()).unwrap();
        read_to_close(&mut s);
        wait_until("the garbage client to be dropped", || server.client_count() == 1);
        server.broadcast(&tick(100));
        recv_until(&mut good, "a tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 100));
    }

    #[test]
    fn stalled_client_never_blocks_broadcast_and_learns_its_drop_count() {
        let server = start(ServerConfig { queue_frames: 8, queue_bytes: 2 * 1024 * 1024, ..config() });
        let mut slow = connect(&server, "slow");
        let mut fast = connect(&server, "fast");
        wait_until("both clients", || server.client_count() == 2);
        // `slow` stops reading. Ticks of 512 KiB soon fill the kernel's socket buffers and then its queue.
        let big = |seq: u64| {
            let location = Location::new("x".repeat(512 * 1024), 1, 1);
            ServerMessage::Tick(Box::new(Tick {
                seq,
                uptime_nanos: 1 + seq,
                new_locations: vec![LocationInfo { id: seq as u32, location }],
                ..Tick::default()
            }))
        };
        let mut worst = Duration::ZERO;
        let mut seq = 0;
        let fast_reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let end = Instant::now() + DEADLINE;
            while got < 60 {
                assert!(Instant::now() < end, "the fast client got only {got} ticks");
                match fast.recv(Duration::from_millis(100)) {
                    Ok(Some(ServerMessage::Tick(_))) => got += 1,
                    Ok(_) => {}
                    Err(e) => panic!("the fast client lost its connection: {e}"),
                }
            }
            fast
        });
        while seq < 60 {
            seq += 1;
            let m = big(seq);
            let t = Instant::now();
            server.broadcast(&m);
            worst = worst.max(t.elapsed());
            // Let the fast client's writer keep up (its queue holds only three such ticks); the slow one has no
            // excuse.
            wait_until("the fast client's queue to drain", || {
                server.stats().clients.iter().any(|c| c.name == "fast" && c.queued_frames == 0)
            });
        }
        eprintln!("slowest broadcast: {worst:?}");
        assert!(worst < Duration::from_millis(500), "broadcast blocked for {worst:?}");
        let _fast = fast_reader.join().unwrap();
        let stats = server.stats();
        let slow_stats = stats.clients.iter().find(|c| c.name == "slow").unwrap();
        assert!(slow_stats.dropped_frames > 0, "{stats:?}");
        assert!(slow_stats.queued_bytes <= 2 * 1024 * 1024 + 600 * 1024, "{stats:?}");
        let fast_stats = stats.clients.iter().find(|c| c.name == "fast").unwrap();
        assert_eq!(fast_stats.dropped_frames, 0, "{stats:?}");

        // `slow` reads again: it gets a fresh full state telling it how much it missed, then the stream.
        let full =
            recv_until(&mut slow, "a resync", |m| matches!(m, ServerMessage::Full(f) if f.client_dropped_frames > 0));
        let ServerMessage::Full(full) = full else { unreachable!() };
        server.broadcast(&tick(1000));
        let t = recv_until(&mut slow, "the next tick", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 1000));
        let ServerMessage::Tick(t) = t else { unreachable!() };
        let dropped = server.stats().clients.iter().find(|c| c.name == "slow").unwrap().dropped_frames;
        assert_eq!(t.client_dropped_frames, dropped);
        assert!(t.client_dropped_frames >= full.client_dropped_frames);
        assert!(server.stats().clients.iter().find(|c| c.name == "slow").unwrap().resyncs >= 1);
    }

    #[test]
    fn killed_client_is_dropped_and_others_keep_receiving() {
        let server = start(config());
        let mut clients: Vec<Client> = (0..4).map(|i| connect(&server, &format!("c{i}"))).collect();
        wait_until("four clients", || server.client_count() == 4);
        server.broadcast(&tick(1));
        for c in &mut clients {
            recv_until(c, "tick 1", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 1));
        }
        drop(clients.remove(0));
        wait_until("the killed client to be dropped", || {
            server.broadcast(&tick(2));
            server.client_count() == 3
        });
        server.broadcast(&tick(3));
        for c in &mut clients {
            recv_until(c, "tick 3", |m| matches!(m, ServerMessage::Tick(t) if t.seq == 3));
        }
        assert_eq!(server.stats().disconnected, 1);
    }

    #[test]
    fn shutdown_says_goodbye_and_stops_promptly() {
        let server = start(config());
        let mut c = connect(&server, "c");
        wait_until("the client", || server.client_count() == 1);
        let t = Instant::now();
        server.shutdown_with("the runtime shut down");
        let took = t.elapsed();
        let bye = recv_until(&mut c, "goodbye", |m| matches!(m, ServerMessage::Goodbye(_)));
        assert_eq!(bye, ServerMessage::Goodbye(Goodbye { reason: "the runtime shut down".into() }));
        assert!(matches!(c.recv(DEADLINE), Err(ClientError::Closed { .. })));
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        assert_eq!(*lock(&server.inner.threads), 0, "every server thread exited");
        // New connections are no longer accepted.
        assert!(Client::connect(server.local_addr(), Duration::from_millis(500)).is_err());
    }
}
