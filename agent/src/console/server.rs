//! The tonic server: a thread (`loopscope-console`) running a current-thread tokio runtime of its own.

use crate::console::hub::Hub;
use crate::console::service::Service;
use crate::sync::lock;
use console_api::instrument::instrument_server::InstrumentServer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tonic::codegen::tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// HTTP/2 streams per connection (tokio-console opens two, plus one per task detail view).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// Connections served at once. A console needs one; past this many, a new connection is closed as it arrives,
/// so a client that opens connections without end costs the app a bounded amount of memory (it can keep other
/// consoles out while it holds them, and nothing more).
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// How long connections may take to close once the agent stops the server; any left (a client that never
/// reads) are dropped with the server's runtime, so the thread always ends.
const DRAIN: Duration = Duration::from_secs(1);

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
    /// `queue` is each update stream's queue length (`hub::queue_for`).
    pub(crate) fn start(addr: SocketAddr, queue: usize) -> io::Result<ConsoleServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // A plain builder: none of loopscope's hooks, so the server's own polls are never timed, reported as
        // the app's stalls, or counted in its tasks.
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let hub = Arc::new(Hub::new(queue));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = InstrumentServer::new(Service::new(hub.clone()));
        std::thread::Builder::new().name("loopscope-console".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(target: "loopscope::console", "loopscope cannot serve the console API: {e}");
                        return;
                    }
                };
                let open = Arc::new(AtomicUsize::new(0));
                let incoming = TcpListenerStream::new(listener).filter_map(move |conn| {
                    // Accept errors (a connection reset before it was accepted, no file descriptors left) lose
                    // that connection only.
                    let io = conn.ok()?;
                    if open.load(Relaxed) >= MAX_CONNECTIONS {
                        return None; // dropped: closed at once
                    }
                    let _ = io.set_nodelay(true);
                    Some(Ok::<_, io::Error>(Counted::new(io, &open)))
                });
                let (drain, drained) = oneshot::channel::<()>();
                let served = tokio::spawn(
                    tonic::transport::Server::builder()
                        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                        // A console that vanished without closing its connection is found and dropped.
                        .http2_keepalive_interval(Some(Duration::from_secs(10)))
                        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = drained.await;
                        }),
                );
                let _ = stopped.await;
                let _ = drain.send(());
                if let Ok(Ok(Err(e))) = tokio::time::timeout(DRAIN, served).await {
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

impl Drop for ConsoleServer {
    /// An agent whose runtime never ran has no agent thread to stop the server: the last owner does.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An accepted connection, counted among the open ones until it is dropped (`MAX_CONNECTIONS`).
struct Counted {
    io: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Counted {
    fn new(io: tokio::net::TcpStream, open: &Arc<AtomicUsize>) -> Counted {
        open.fetch_add(1, Relaxed);
        Counted { io, open: open.clone() }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
