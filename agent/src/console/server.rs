//! The tonic server: a thread (`loopscope-console`) running a current-thread tokio runtime of its own.

use crate::console::hub::Hub;
use crate::console::service::Service;
use crate::sync::lock;
use console_api::instrument::instrument_server::InstrumentServer;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// HTTP/2 streams per connection (tokio-console opens two, plus one per task detail view).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;

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

impl Drop for ConsoleServer {
    /// An agent whose runtime never ran has no agent thread to stop the server: the last owner does.
    fn drop(&mut self) {
        self.shutdown();
    }
}
