//! The network half of `top --console`: the gRPC client tokio-console uses (`console-api`'s
//! `InstrumentClient`), run on a small runtime of its own on the feed's thread, reconnecting every second.

use super::convert::Converter;
use console_api::instrument::instrument_client::InstrumentClient;
use console_api::instrument::{InstrumentRequest, Update};
use loopscope_wire::proto::{ServerHello, ServerMessage};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// tokio-console's default address (console-subscriber's `Server::DEFAULT_PORT`).
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:6669";

/// How long connecting, and then the server's first answer, may take.
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a lost console server is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Why a console server could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Nothing listens at the address (connection refused).
    #[error("nothing is listening at {addr}; is the app running with console-subscriber?")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
    },
    /// Something answered, but not as a console server: another protocol, garbage, or a gRPC server without the
    /// console service.
    #[error("{addr} is not a tokio-console server (console-subscriber): {detail}")]
    NotConsole {
        /// The address.
        addr: SocketAddr,
        /// What went wrong, in words.
        detail: String,
    },
    /// The server stopped sending, or the connection broke.
    #[error("the console stream from {addr} ended: {detail}")]
    Lost {
        /// The address.
        addr: SocketAddr,
        /// Why, in words.
        detail: String,
    },
}

/// Parses `top --console`'s address: `HOST:PORT`, `:PORT`, `PORT`, or tokio-console's `http://HOST:PORT`.
pub fn parse_console_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let t = text.trim();
    let t = t.strip_prefix("http://").unwrap_or(t).trim_end_matches('/');
    if t.starts_with("https://") {
        anyhow::bail!("{text:?}: console-subscriber serves plain gRPC (http://), not https");
    }
    let with_host = if let Some(port) = t.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if t.parse::<u16>().is_ok() {
        format!("127.0.0.1:{t}")
    } else {
        t.to_string()
    };
    if let Ok(a) = with_host.parse::<SocketAddr>() {
        return Ok(a);
    }
    // A host name: resolve it once, here, so a typo is an error now rather than a retry loop later.
    use std::net::ToSocketAddrs as _;
    match with_host.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| anyhow::anyhow!("{text:?} resolves to no address")),
        Err(e) => anyhow::bail!("{text:?} is not a console address (HOST:PORT, :PORT or PORT): {e}"),
    }
}

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable);
        }
        cur = err.source();
    }
    false
}

/// The error's chain in one line (tonic's own messages are terse: "transport error").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cur = err.source();
    }
    line
}

/// An open `WatchUpdates` stream and its first update (console sends the current state at once).
pub struct Watch {
    stream: Streaming<Update>,
    first: Update,
    /// Keeps the connection's channel alive with the stream.
    _client: InstrumentClient<Channel>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    /// Connects to the console server at `addr` and waits for its first update, each within
    /// [`CONSOLE_TIMEOUT`]. Must run inside a tokio runtime with I/O and time enabled.
    pub async fn open(addr: SocketAddr) -> Result<Watch, ConsoleError> {
        let not_console = |detail: String| ConsoleError::NotConsole { addr, detail };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| not_console(chain(&e)))?
            .connect_timeout(CONSOLE_TIMEOUT);
        let channel = match tokio::time::timeout(CONSOLE_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if is_refused(&e) => return Err(ConsoleError::Unreachable { addr }),
            Ok(Err(e)) => return Err(not_console(chain(&e))),
            Err(_) => return Err(not_console(format!("no connection within {CONSOLE_TIMEOUT:?}"))),
        };
        let mut client = InstrumentClient::new(channel);
        let call = client.watch_updates(InstrumentRequest {});
        let mut stream = match tokio::time::timeout(CONSOLE_TIMEOUT, call).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => return Err(not_console(describe_status(&status))),
            Err(_) => return Err(not_console(format!("no gRPC answer within {CONSOLE_TIMEOUT:?}"))),
        };
        let first = match tokio::time::timeout(CONSOLE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(u))) => u,
            Ok(Ok(None)) => return Err(not_console("the server closed the stream without an update".into())),
            Ok(Err(status)) => return Err(not_console(describe_status(&status))),
            Err(_) => return Err(not_console(format!("no update within {CONSOLE_TIMEOUT:?}"))),
        };
        Ok(Watch { stream, first, _client: client })
    }

    /// The next update; `Ok(None)` when none arrived within `wait`.
    pub async fn next(&mut self, wait: Duration, addr: SocketAddr) -> Result<Option<Update>, ConsoleError> {
        let lost = |detail: String| ConsoleError::Lost { addr, detail };
        match tokio::time::timeout(wait, self.stream.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(u))) => Ok(Some(u)),
            Ok(Ok(None)) => Err(lost("the app closed the stream".into())),
            Ok(Err(status)) => Err(lost(describe_status(&status))),
        }
    }

    /// The update the server sent first.
    pub fn first(&self) -> &Update {
        &self.first
    }
}

/// A gRPC status in words; the codes a non-console peer gives are explained.
fn describe_status(s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    match s.code() {
        Code::Unimplemented => "it speaks gRPC but has no tokio-console Instrument service".into(),
        Code::Unavailable | Code::Internal | Code::Unknown if msg.is_empty() => format!("{:?}", s.code()),
        code => {
            // tonic's message often repeats its source's first words ("transport error"): say each part once.
            let mut line = format!("{code:?}: {msg}");
            if let Some(src) = std::error::Error::source(s) {
                for part in chain(src).split(": ") {
                    if !line.contains(part) {
                        line.push_str(": ");
                        line.push_str(part);
                    }
                }
            }
            line
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What the client tells the feed (which passes it on to the UI as its own events, so this module does not
/// depend on the feed's).
#[derive(Debug)]
pub enum ConsoleEvent {
    /// A (new) connection: the greeting built for it.
    Connected(Box<ServerHello>),
    /// A message converted from the console stream.
    Message(ServerMessage),
    /// The connection is gone, or a retry failed: why, in words. The client keeps retrying.
    Disconnected(String),
    /// Nothing listens yet: what it waits for, in words.
    Waiting(String),
}

/// The outcome of the first connection attempt, for `top` to act on before the screen changes.
#[derive(Debug)]
pub enum FirstContact {
    /// Connected; the dashboard follows the stream.
    Connected,
    /// Nothing listens yet; the thread keeps trying (unless told to give up).
    Unreachable(ConsoleError),
    /// Something else answered, or broke: an error for the user.
    Failed(ConsoleError),
}

/// The body of the feed's thread: connects (reporting the first outcome on `first`), converts every update
/// into stream messages for the UI, and reconnects every second until `stop`.
pub fn run(
    addr: SocketAddr,
    threshold: Duration,
    first: std::sync::mpsc::Sender<FirstContact>,
    send: &dyn Fn(ConsoleEvent) -> bool,
    stop: &AtomicBool,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = first.send(FirstContact::Failed(ConsoleError::Lost {
                addr,
                detail: format!("cannot start the client's runtime: {e}"),
            }));
            return;
        }
    };
    rt.block_on(async move {
        let mut first = Some(first);
        let mut last_reason = String::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match Watch::open(addr).await {
                Ok(mut watch) => {
                    if let Some(f) = first.take() {
                        let _ = f.send(FirstContact::Connected);
                    }
                    last_reason.clear();
                    let mut conv = Converter::new(&addr.to_string(), threshold, unix_now());
                    if !send(ConsoleEvent::Connected(Box::new(conv.hello().clone()))) {
                        return;
                    }
                    let mut update = Some(watch.first().clone());
                    let why = loop {
                        if let Some(u) = update.take() {
                            for m in conv.apply(&u, unix_now()) {
                                if !send(ConsoleEvent::Message(m)) {
                                    return;
                                }
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // Short waits, so that quitting never waits for the app's next publish.
                        match watch.next(Duration::from_millis(100), addr).await {
                            Ok(u) => update = u,
                            Err(e) => break e.to_string(),
                        }
                    };
                    if !send(ConsoleEvent::Disconnected(why)) {
                        return;
                    }
                }
                Err(e) => {
                    let unreachable = matches!(e, ConsoleError::Unreachable { .. });
                    if let Some(f) = first.take() {
                        let failed = !unreachable;
                        let _ =
                            f.send(if unreachable { FirstContact::Unreachable(e) } else { FirstContact::Failed(e) });
                        if failed {
                            return;
                        }
                        if !send(ConsoleEvent::Waiting(format!(
                            "Waiting for the app at {addr}: nothing listens there yet (console mode: the app must run \
                             console-subscriber)."
                        ))) {
                            return;
                        }
                    } else {
                        let reason = e.to_string();
                        if reason != last_reason && !unreachable {
                            if !send(ConsoleEvent::Disconnected(reason.clone())) {
                                return;
                            }
                            last_reason = reason;
                        }
                    }
                }
            }
            let next = Instant::now() + RETRY_EVERY;
            while Instant::now() < next {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
}
