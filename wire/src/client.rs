//! A blocking client for an agent's live stream (std sockets, no async runtime).
//!
//! [`Client::connect`] opens the connection and does the handshake; [`Client::recv`] returns the next
//! [`ServerMessage`] or `None` after a timeout. Feed the messages to a [`State`](crate::state::State) to get
//! an up-to-date picture of the runtime.
//!
//! # Examples
//!
//! ```no_run
//! use loopscope_wire::client::Client;
//! use loopscope_wire::state::State;
//! use std::time::Duration;
//!
//! let addr = "127.0.0.1:6670".parse()?;
//! let mut client = Client::connect(&addr, Duration::from_secs(2))?;
//! let mut state = State::new();
//! state.apply_hello(client.hello());
//! while let Some(msg) = client.recv(Duration::from_secs(1))? {
//!     state.apply(&msg);
//!     println!("{} live tasks", state.tasks().len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Reconnecting
//!
//! A connection ends when the app exits or restarts ([`ClientError::Closed`], usually after a
//! [`Goodbye`](crate::proto::Goodbye)). Whether trying again can help is [`ClientError::is_retryable`]:
//! connection failures and closed connections are, a version mismatch or a peer that is not an agent are
//! not. [`Client::reconnect`] connects to the same address again; the new connection starts with a fresh
//! `ServerHello` and `FullState`, which [`State`](crate::state::State) handles (it resets when the agent is
//! a different one).
//!
//! ```no_run
//! # use loopscope_wire::client::{Client, ClientError};
//! # use std::time::Duration;
//! # fn run(client: &mut Client) -> Result<(), ClientError> { Ok(()) }
//! # let addr = "127.0.0.1:6670".parse().unwrap();
//! let mut client = Client::connect(&addr, Duration::from_secs(2))?;
//! loop {
//!     match run(&mut client) {
//!         Err(e) if e.is_retryable() => {
//!             eprintln!("{e}; reconnecting");
//!             std::thread::sleep(Duration::from_secs(1));
//!             match client.reconnect(Duration::from_secs(2)) {
//!                 Ok(c) => client = c,
//!                 Err(e) if e.is_retryable() => continue,
//!                 Err(e) => return Err(e),
//!             }
//!         }
//!         other => return other,
//!     }
//! }
//! # Ok::<(), ClientError>(())
//! ```

use crate::proto::{
    self, ClientMessage, Decoded, FrameDecoder, MAX_FRAME_LEN, PREAMBLE_LEN, PROTOCOL_VERSION, Ping, ProtoError,
    ProtocolVersion, ServeAddr, ServerHello, ServerMessage,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Why a client could not connect or lost its connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("cannot connect to the loopscope agent at {addr}: {hint}")]
    Unreachable {
        /// The address.
        addr: ServeAddr,
        /// What probably went wrong, in words for the user.
        hint: String,
        /// The connection error.
        #[source]
        source: io::Error,
    },
    /// Something answered, but it is not a loopscope agent.
    #[error("{addr} is not a loopscope agent: {found}")]
    NotLoopscope {
        /// The address.
        addr: ServeAddr,
        /// What it sent instead.
        found: String,
    },
    /// The peer accepted the connection but sent no loopscope greeting in time.
    #[error(
        "{addr} accepted the connection but sent no loopscope greeting within {waited:?}; is it a loopscope agent?"
    )]
    NoGreeting {
        /// The address.
        addr: ServeAddr,
        /// How long the client waited.
        waited: Duration,
    },
    /// The agent speaks an incompatible protocol version.
    #[error(
        "protocol version mismatch with the agent at {addr}: this client speaks loopscope protocol {client}, the \
         agent speaks {agent}; the major versions must match (upgrade the older of the two)"
    )]
    VersionMismatch {
        /// The address.
        addr: ServeAddr,
        /// The version this client speaks.
        client: ProtocolVersion,
        /// The version the agent speaks.
        agent: ProtocolVersion,
    },
    /// The agent refused the connection (for example, too many clients).
    #[error("the agent at {addr} refused the connection: {reason}")]
    Refused {
        /// The address.
        addr: ServeAddr,
        /// The agent's reason.
        reason: String,
    },
    /// The connection ended (the app exited, or the agent said goodbye).
    #[error("the connection to the agent at {addr} was closed")]
    Closed {
        /// The address.
        addr: ServeAddr,
    },
    /// The agent sent something malformed.
    #[error("protocol error on the connection to {addr}")]
    Protocol {
        /// The address.
        addr: ServeAddr,
        /// What was wrong.
        #[source]
        source: ProtoError,
    },
    /// Reading or writing failed.
    #[error("I/O error on the connection to {addr}")]
    Io {
        /// The address.
        addr: ServeAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ClientError {
    /// Whether connecting again later may succeed: true for an unreachable agent, a closed or broken
    /// connection, a refusal (the agent may have too many clients) and a missing greeting; false for a peer
    /// that is not an agent, a version mismatch or a protocol error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Closed { .. }
                | ClientError::Io { .. }
                | ClientError::Refused { .. }
                | ClientError::NoGreeting { .. }
        )
    }
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            #[cfg(unix)]
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The name a client sends in its [`ClientHello`](crate::proto::ClientHello) unless told otherwise.
pub const DEFAULT_CLIENT_NAME: &str = concat!("loopscope-wire ", env!("CARGO_PKG_VERSION"));

/// A connection to an agent, after a successful handshake.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    addr: ServeAddr,
    name: String,
    server_version: ProtocolVersion,
    hello: ServerHello,
    decoder: FrameDecoder,
    closed: bool,
    skipped: u64,
    frames: u64,
    bytes: u64,
}

/// The shortest read timeout used: sockets take no zero timeout, and a zero `recv` timeout still checks the
/// socket once.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl Client {
    /// Connects to an agent and does the handshake, all within `timeout`.
    ///
    /// Errors say what went wrong: [`ClientError::Unreachable`] (nothing listening),
    /// [`ClientError::NotLoopscope`] (something else answered), [`ClientError::NoGreeting`],
    /// [`ClientError::VersionMismatch`] (naming both versions) or [`ClientError::Refused`].
    pub fn connect(addr: &ServeAddr, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_named(addr, DEFAULT_CLIENT_NAME, timeout)
    }

    /// Like [`Client::connect`], telling the agent what this client is (shown in the agent's logs and stats).
    pub fn connect_named(addr: &ServeAddr, name: &str, timeout: Duration) -> Result<Client, ClientError> {
        let deadline = Instant::now() + timeout;
        let unreachable = |source: io::Error| ClientError::Unreachable {
            addr: addr.clone(),
            hint: unreachable_hint(addr, &source),
            source,
        };
        let stream = match addr {
            ServeAddr::Tcp(sa) => {
                let s = TcpStream::connect_timeout(sa, timeout.max(MIN_WAIT)).map_err(unreachable)?;
                // Frames are written whole; small ones (pings) should not wait for Nagle.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            #[cfg(unix)]
            ServeAddr::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(unreachable)?),
            #[cfg(not(unix))]
            ServeAddr::Unix(_) => {
                return Err(unreachable(io::Error::new(io::ErrorKind::Unsupported, "Unix sockets need a Unix OS")));
            }
        };
        let io_err = |source| ClientError::Io { addr: addr.clone(), source };
        stream.set_write_timeout(Some(remaining(deadline))).map_err(io_err)?;
        let mut client = Client {
            stream,
            addr: addr.clone(),
            name: name.to_string(),
            server_version: PROTOCOL_VERSION,
            hello: placeholder_hello(),
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            closed: false,
            skipped: 0,
            frames: 0,
            bytes: 0,
        };
        // Send our opening first: both sides speak without waiting, which saves a round trip, and a peer that
        // waits for a request before answering (HTTP) then answers with something we can recognize.
        match proto::write_client_handshake(&mut client.stream, name) {
            Ok(()) => {}
            // A peer that closed right away may still have sent a refusal or a foreign banner; read on.
            Err(ProtoError::Io { source, .. }) if is_disconnect(&source) => {}
            Err(ProtoError::Io { source, .. }) => return Err(io_err(source)),
            Err(e) => return Err(client.protocol(e)),
        }
        client.read_greeting(deadline, timeout)?;
        Ok(client)
    }

    /// Connects again to the same address with the same name. The new connection starts over with a
    /// `ServerHello` and a `FullState`.
    pub fn reconnect(&self, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_named(&self.addr, &self.name, timeout)
    }

    fn read_greeting(&mut self, deadline: Instant, timeout: Duration) -> Result<(), ClientError> {
        // The preamble.
        loop {
            let b = self.decoder.buffered();
            if let Err(e) = proto::check_magic_prefix(b) {
                let found = match e {
                    ProtoError::NotLoopscope { found } => found,
                    other => other.to_string(),
                };
                return Err(ClientError::NotLoopscope { addr: self.addr.clone(), found });
            }
            if b.len() >= PREAMBLE_LEN {
                let mut p = [0u8; PREAMBLE_LEN];
                p.copy_from_slice(&b[..PREAMBLE_LEN]);
                let version = proto::parse_preamble(&p).map_err(|e| self.protocol(e))?;
                self.decoder.consume(PREAMBLE_LEN);
                if !PROTOCOL_VERSION.is_compatible_with(version) {
                    return Err(ClientError::VersionMismatch {
                        addr: self.addr.clone(),
                        client: PROTOCOL_VERSION,
                        agent: version,
                    });
                }
                self.server_version = version;
                break;
            }
            if !self.fill(deadline, timeout, true)? {
                return Err(ClientError::NoGreeting { addr: self.addr.clone(), waited: timeout });
            }
        }
        // The first frame: ServerHello, or Refused.
        loop {
            if let Some(msg) = self.next_buffered()? {
                return match msg {
                    ServerMessage::Hello(h) => {
                        self.hello = *h;
                        Ok(())
                    }
                    ServerMessage::Refused(r) => {
                        Err(ClientError::Refused { addr: self.addr.clone(), reason: r.reason })
                    }
                    other => Err(self
                        .protocol(ProtoError::Unexpected { expected: "ServerHello", got: other.kind().to_string() })),
                };
            }
            if !self.fill(deadline, timeout, true)? {
                return Err(ClientError::NoGreeting { addr: self.addr.clone(), waited: timeout });
            }
        }
    }

    /// Reads once into the decoder, waiting at most until `deadline`. `Ok(false)` on timeout. At the end of
    /// the stream: during the greeting, a peer that hung up after sending nothing is not an agent; later, it
    /// is [`ClientError::Closed`] (or a truncation error when it hung up mid-frame).
    fn fill(&mut self, deadline: Instant, timeout: Duration, greeting: bool) -> Result<bool, ClientError> {
        loop {
            let wait = remaining(deadline);
            if wait.is_zero() {
                return Ok(false);
            }
            self.stream.set_read_timeout(Some(wait.max(MIN_WAIT))).map_err(|e| self.io(e))?;
            match self.decoder.read_from(&mut self.stream) {
                Ok(0) => {
                    self.closed = true;
                    let partial = self.decoder.buffered().len() as u64;
                    // Closed before sending a single byte: an agent that is shutting down or has too many
                    // connections in progress does that, so it is worth another try.
                    if greeting && partial == 0 && self.bytes == 0 {
                        return Err(ClientError::Closed { addr: self.addr.clone() });
                    }
                    if greeting {
                        return Err(ClientError::NotLoopscope {
                            addr: self.addr.clone(),
                            found: format!(
                                "it closed the connection after sending {partial} bytes and no loopscope greeting \
                                 (waited up to {timeout:?})"
                            ),
                        });
                    }
                    if partial > 0 {
                        return Err(self.protocol(ProtoError::Truncated {
                            what: "a frame",
                            got: partial,
                            expected: partial + self.decoder.wanted() as u64,
                        }));
                    }
                    return Err(ClientError::Closed { addr: self.addr.clone() });
                }
                Ok(n) => {
                    self.bytes += n as u64;
                    return Ok(true);
                }
                Err(e) if proto::is_timeout(&e) => {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_disconnect(&e) => {
                    self.closed = true;
                    return Err(ClientError::Closed { addr: self.addr.clone() });
                }
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// The next complete message already buffered, skipping kinds this version does not know.
    fn next_buffered(&mut self) -> Result<Option<ServerMessage>, ClientError> {
        Ok(self.next_buffered_raw()?.map(|(m, _)| m))
    }

    fn next_buffered_raw(&mut self) -> Result<Option<(ServerMessage, Vec<u8>)>, ClientError> {
        loop {
            let Some(payload) = self.decoder.next_frame().map_err(|e| self.protocol(e))? else { return Ok(None) };
            self.frames += 1;
            match proto::decode_server(&payload).map_err(|e| self.protocol(e))? {
                Decoded::Message(m) => return Ok(Some((m, payload))),
                Decoded::Unknown { .. } => self.skipped += 1,
            }
        }
    }

    /// Waits up to `timeout` for the next message. `Ok(None)` when none arrived in time (a partial frame
    /// stays buffered for the next call). After a [`Goodbye`](crate::proto::Goodbye) the agent closes the
    /// connection, and the next call returns [`ClientError::Closed`]. A [`ServerMessage::Refused`] arriving
    /// mid-stream becomes [`ClientError::Refused`].
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<ServerMessage>, ClientError> {
        Ok(self.recv_raw(timeout)?.map(|(m, _)| m))
    }

    /// Like [`Client::recv`], also returning the frame's payload exactly as received (for recording without
    /// re-encoding, see [`Recorder::write_payload`](crate::record::Recorder::write_payload)).
    pub fn recv_raw(&mut self, timeout: Duration) -> Result<Option<(ServerMessage, Vec<u8>)>, ClientError> {
        let deadline = Instant::now() + timeout.max(MIN_WAIT);
        loop {
            if let Some((msg, payload)) = self.next_buffered_raw()? {
                if let ServerMessage::Refused(r) = msg {
                    return Err(ClientError::Refused { addr: self.addr.clone(), reason: r.reason });
                }
                return Ok(Some((msg, payload)));
            }
            if self.closed {
                return Err(ClientError::Closed { addr: self.addr.clone() });
            }
            if !self.fill(deadline, timeout, false)? {
                return Ok(None);
            }
        }
    }

    /// Sends a [`Ping`]; the agent answers with a [`Pong`](crate::proto::Pong) carrying `nonce`, which
    /// [`Client::recv`] returns in turn.
    pub fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        let bytes =
            proto::encode_frame(&ClientMessage::Ping(Ping { nonce }), MAX_FRAME_LEN).map_err(|e| self.protocol(e))?;
        self.stream.write_all(&bytes).map_err(|e| self.io(e))
    }

    /// The agent's greeting.
    pub fn hello(&self) -> &ServerHello {
        &self.hello
    }

    /// The protocol version the agent announced in its preamble.
    pub fn server_version(&self) -> ProtocolVersion {
        self.server_version
    }

    /// The address this client connected to.
    pub fn addr(&self) -> &ServeAddr {
        &self.addr
    }

    /// Frames received, including skipped ones.
    pub fn frames_received(&self) -> u64 {
        self.frames
    }

    /// Bytes received.
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }

    /// Frames of kinds this version does not know (sent by a newer agent) that were skipped.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }

    fn protocol(&self, source: ProtoError) -> ClientError {
        ClientError::Protocol { addr: self.addr.clone(), source }
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io { addr: self.addr.clone(), source }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

fn unreachable_hint(addr: &ServeAddr, e: &io::Error) -> String {
    let serving = "is the app running, with the loopscope agent serving on this address?";
    match (e.kind(), addr) {
        (io::ErrorKind::ConnectionRefused, ServeAddr::Tcp(_)) => format!("nothing is listening there; {serving}"),
        (io::ErrorKind::ConnectionRefused, ServeAddr::Unix(_)) => {
            format!("the socket exists but nothing is listening (a stale socket file?); {serving}")
        }
        (io::ErrorKind::NotFound, _) => format!("no such socket file; {serving}"),
        (io::ErrorKind::PermissionDenied, ServeAddr::Unix(_)) => {
            "permission denied: the agent's socket is readable only by the user running the app (mode 0600)".into()
        }
        (io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock, _) => {
            "timed out (a firewall, or a host that is not there)".into()
        }
        _ => e.to_string(),
    }
}

/// Stands in until the real hello arrives; never visible to callers (connect fails without a hello).
fn placeholder_hello() -> ServerHello {
    ServerHello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: String::new(),
        runtime: crate::RuntimeInfo { id: 0, name: None, flavor: None, workers: None, pid: 0 },
        pid: 0,
        program: None,
        started_at_unix_nanos: 0,
        sample_interval: Duration::ZERO,
        stall_threshold: Duration::ZERO,
        slow_poll_threshold: Duration::ZERO,
        capabilities: Default::default(),
    }
}
