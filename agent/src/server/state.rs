//! The server's state shared by its threads (acceptor, writers, readers) and the [`Server`](super::Server)
//! handle: configuration, the client list, counters, and the thread count that shutdown waits on.

use super::queue::ClientSlot;
use crate::sync::lock;
use loopscope_wire::proto::{ProtoError, ServeAddr, ServerMessage};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Builds the messages a client receives first: a `FullState` followed by its `FullTasks` chunks (see
/// [`proto::full_state_messages`](loopscope_wire::proto::full_state_messages)). Called on a client's writer thread, possibly on several at once.
pub(crate) type FullStateFn = Arc<dyn Fn() -> Vec<ServerMessage> + Send + Sync + 'static>;

/// Tuning of a [`Server`](super::Server). The defaults suit a dashboard or two on the same machine.
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

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) handshakes: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) bad_handshakes: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) disconnected: AtomicU64,
    pub(super) dropped_frames: AtomicU64,
    pub(super) oversized: AtomicU64,
}

pub(super) struct Inner {
    pub(super) config: ServerConfig,
    /// The preamble followed by the encoded `ServerHello` frame.
    pub(super) greeting: Mutex<Arc<[u8]>>,
    pub(super) full_state: FullStateFn,
    pub(super) clients: Mutex<Vec<Arc<ClientSlot>>>,
    pub(super) stopping: AtomicBool,
    pub(super) next_id: AtomicU64,
    pub(super) pending: AtomicUsize,
    /// Threads (acceptor, writers, readers) still running, and a condvar signalled as each exits.
    pub(super) threads: Mutex<usize>,
    pub(super) threads_done: Condvar,
    pub(super) counters: Counters,
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

/// Starts a thread counted in `inner.threads`, so that shutdown can wait for it.
pub(super) fn spawn(inner: &Arc<Inner>, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
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
