//! Framing: the preamble, length-prefixed postcard frames, and the handshake.
//!
//! Everything here works over plain `std::io::{Read, Write}` (or, for [`FrameDecoder`], over bytes pushed
//! in by the caller), so it serves TCP, Unix sockets and recording files alike, and can be fuzzed directly.

use super::messages::{
    CLIENT_MESSAGE_KINDS, ClientHello, ClientMessage, PROTOCOL_VERSION, ProtocolVersion, SERVER_MESSAGE_KINDS,
    ServerMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// The first eight bytes of every connection, in both directions.
pub const MAGIC: [u8; 8] = *b"LOOPSCOP";

/// Length of the preamble: [`MAGIC`], then the protocol major and minor as little-endian `u16`s.
pub const PREAMBLE_LEN: usize = 12;

/// The largest frame payload accepted or sent (16 MiB). A larger length prefix is an error before anything
/// is allocated.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// The largest handshake frame a server accepts: a [`ClientHello`] is tiny, and a peer that has not yet
/// shown it speaks the protocol gets no large buffers.
pub const MAX_HANDSHAKE_FRAME_LEN: u32 = 64 * 1024;

/// Bytes of the length prefix in front of every frame (a little-endian `u32`).
pub const FRAME_HEADER_LEN: usize = 4;

/// A protocol error: the peer is not a loopscope peer, speaks another version, or sent a malformed frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The stream does not start with the loopscope magic: the peer is something else.
    #[error("not a loopscope agent or client: {found}")]
    NotLoopscope {
        /// What was received instead, described for a human (e.g. "it answered like an HTTP server").
        found: String,
    },
    /// The two sides speak different protocol majors.
    #[error(
        "protocol version mismatch: this side speaks loopscope protocol {local}, the peer speaks {remote}; the \
         major versions must match (upgrade the older side)"
    )]
    VersionMismatch {
        /// The version this side speaks.
        local: ProtocolVersion,
        /// The version the peer announced.
        remote: ProtocolVersion,
    },
    /// A length prefix above the limit: refused before allocating.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced (or, when encoding, the actual) payload length.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// A frame's payload is not a valid message.
    #[error("could not decode a {what} frame of {len} bytes")]
    Decode {
        /// What was expected (`ServerMessage`, `ClientMessage`, ...).
        what: &'static str,
        /// The payload length.
        len: usize,
        /// The decoder's complaint.
        #[source]
        source: CodecError,
    },
    /// A message could not be encoded (in practice never: every type is plain data).
    #[error("could not encode a {what} message")]
    Encode {
        /// The message kind.
        what: &'static str,
        /// The encoder's complaint.
        #[source]
        source: CodecError,
    },
    /// The stream ended in the middle of something.
    #[error("the stream ended in the middle of {what} (after {got} of {expected} bytes)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes received.
        got: u64,
        /// Bytes needed.
        expected: u64,
    },
    /// The peer sent a valid message at a point where another was required.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol requires here.
        expected: &'static str,
        /// What arrived.
        got: String,
    },
    /// Reading or writing failed.
    #[error("I/O error while {doing}")]
    Io {
        /// What was being done, e.g. "reading a frame".
        doing: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ProtoError {
    pub(crate) fn io(doing: &'static str) -> impl FnOnce(io::Error) -> ProtoError {
        move |source| ProtoError::Io { doing, source }
    }

    /// Whether this is an I/O timeout (`WouldBlock`/`TimedOut`), i.e. the peer was merely silent.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProtoError::Io { source, .. } if is_timeout(source))
    }
}

/// Whether an I/O error is a read/write timeout. Sockets report an expired `SO_RCVTIMEO`/`SO_SNDTIMEO` as
/// `WouldBlock` on Unix and `TimedOut` elsewhere.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// An encoding or decoding error from the codec. Opaque, so that the codec crate is not part of this crate's
/// public API; its message says what was wrong.
#[derive(Debug)]
pub struct CodecError(postcard::Error);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for CodecError {}

/// The preamble a side sends first: [`MAGIC`] and `version`.
///
/// ```
/// use loopscope_wire::proto::{parse_preamble, preamble, PROTOCOL_VERSION};
/// let p = preamble(PROTOCOL_VERSION);
/// assert_eq!(&p[..8], b"LOOPSCOP");
/// assert_eq!(parse_preamble(&p).unwrap(), PROTOCOL_VERSION);
/// ```
pub fn preamble(version: ProtocolVersion) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&version.major.to_le_bytes());
    p[10..12].copy_from_slice(&version.minor.to_le_bytes());
    p
}

/// Parses a preamble. A wrong magic is [`ProtoError::NotLoopscope`], describing what the peer sent.
pub fn parse_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<ProtocolVersion, ProtoError> {
    check_magic_prefix(p)?;
    Ok(ProtocolVersion { major: u16::from_le_bytes([p[8], p[9]]), minor: u16::from_le_bytes([p[10], p[11]]) })
}

/// Checks that `bytes` (the first bytes of a stream, possibly fewer than the magic) agree with [`MAGIC`].
/// Lets a reader reject a foreign peer as soon as its first byte arrives.
pub fn check_magic_prefix(bytes: &[u8]) -> Result<(), ProtoError> {
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] == MAGIC[..n] { Ok(()) } else { Err(ProtoError::NotLoopscope { found: describe_foreign(bytes) }) }
}

/// Describes the first bytes of a stream that is not loopscope, for error messages.
pub(crate) fn describe_foreign(bytes: &[u8]) -> String {
    let text: String =
        bytes.iter().take(32).map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    let what = if bytes.starts_with(b"HTTP/") || bytes.starts_with(b"<") {
        "it answered like an HTTP server"
    } else if bytes.starts_with(b"GET ") || bytes.starts_with(b"POST ") || bytes.starts_with(b"PUT ") {
        "it sent an HTTP request"
    } else if bytes.starts_with(b"SSH-") {
        "it answered like an SSH server"
    } else if bytes.starts_with(&[0x16, 0x03]) {
        "it sent a TLS handshake"
    } else {
        "it sent unknown bytes"
    };
    format!("{what} ({:?}, expected {:?})", text, String::from_utf8_lossy(&MAGIC))
}

/// Writes the preamble for `version`.
pub fn write_preamble<W: Write + ?Sized>(w: &mut W, version: ProtocolVersion) -> Result<(), ProtoError> {
    w.write_all(&preamble(version)).map_err(ProtoError::io("writing the preamble"))
}

/// Reads a preamble. EOF before it is complete is [`ProtoError::Truncated`]; a wrong magic is
/// [`ProtoError::NotLoopscope`] (detected as early as the first byte).
pub fn read_preamble<R: Read + ?Sized>(r: &mut R) -> Result<ProtocolVersion, ProtoError> {
    let mut p = [0u8; PREAMBLE_LEN];
    let mut got = 0;
    while got < PREAMBLE_LEN {
        match r.read(&mut p[got..]) {
            Ok(0) => {
                check_magic_prefix(&p[..got])?;
                return Err(ProtoError::Truncated {
                    what: "the preamble",
                    got: got as u64,
                    expected: PREAMBLE_LEN as u64,
                });
            }
            Ok(n) => {
                got += n;
                check_magic_prefix(&p[..got])?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::Io { doing: "reading the preamble", source: e }),
        }
    }
    parse_preamble(&p)
}

/// Encodes a message's payload (no length prefix).
pub fn encode_payload<M: Serialize>(msg: &M, what: &'static str) -> Result<Vec<u8>, ProtoError> {
    postcard::to_allocvec(msg).map_err(|e| ProtoError::Encode { what, source: CodecError(e) })
}

/// The kind tag of a compressed envelope (protocol 1.1): the payload is this varint followed by the raw
/// DEFLATE compression of another server message's payload. It is not a [`ServerMessage`] variant: decoding
/// unwraps it ([`decode_server`]), so receivers only ever see the message inside.
pub const COMPRESSED_KIND: u32 = 8;

/// Payloads at least this long are worth compressing. Only stall events are compressed: their stacks (tens of
/// frames of long, generic function names, several samples per stall) are most of the stream's bytes, and
/// they repeat within an event. Ticks and full states carry a per-client suffix and compress less.
pub const COMPRESS_MIN_LEN: usize = 1024;

/// DEFLATE level 1: at ~50 KB per stall event it costs well under a millisecond on the agent's thread (never on
/// the app's threads) and already removes most of the repetition; higher levels gain little on this data.
const COMPRESS_LEVEL: u8 = 1;

/// Encodes a server message's payload the way it is sent and recorded: a large [`ServerMessage::Stall`] or
/// [`ServerMessage::StallPart`] is
/// wrapped in a compressed envelope ([`COMPRESSED_KIND`]), everything else is plain postcard. Decode
/// either with [`decode_server`].
///
/// ```
/// use loopscope_wire::proto::{decode_server, encode_server_payload, Decoded, Goodbye, ServerMessage};
/// let msg = ServerMessage::Goodbye(Goodbye { reason: "done".into() });
/// let payload = encode_server_payload(&msg).unwrap();
/// assert_eq!(decode_server(&payload).unwrap(), Decoded::Message(msg));
/// ```
pub fn encode_server_payload(msg: &ServerMessage) -> Result<Vec<u8>, ProtoError> {
    let plain = encode_payload(msg, msg.kind())?;
    Ok(compress_stall(msg, &plain).unwrap_or(plain))
}

/// The compressed envelope of `plain` (the payload of `msg`), when `msg` is a stall event big enough to gain.
fn compress_stall(msg: &ServerMessage, plain: &[u8]) -> Option<Vec<u8>> {
    if !matches!(msg, ServerMessage::Stall(_) | ServerMessage::StallPart(_)) || plain.len() < COMPRESS_MIN_LEN {
        return None;
    }
    let packed = miniz_oxide::deflate::compress_to_vec(plain, COMPRESS_LEVEL);
    let (tag, tag_len) = varint(u64::from(COMPRESSED_KIND));
    let mut out = Vec::with_capacity(tag_len + packed.len());
    out.extend_from_slice(&tag[..tag_len]);
    out.extend_from_slice(&packed);
    // Stacks nearly always shrink several times over; keep the plain form in the rare case they do not.
    (out.len() < plain.len()).then_some(out)
}

/// Encodes a message as a whole frame: length prefix and payload. Fails with [`ProtoError::FrameTooLarge`]
/// when the payload exceeds `max`.
///
/// ```
/// use loopscope_wire::proto::{encode_frame, read_frame, decode_server, Decoded, Goodbye, ServerMessage,
///     MAX_FRAME_LEN};
/// let msg = ServerMessage::Goodbye(Goodbye { reason: "runtime shut down".into() });
/// let bytes = encode_frame(&msg, MAX_FRAME_LEN).unwrap();
/// let payload = read_frame(&mut &bytes[..], MAX_FRAME_LEN).unwrap().unwrap();
/// assert_eq!(decode_server(&payload).unwrap(), Decoded::Message(msg));
/// ```
pub fn encode_frame<M: Serialize + Kind>(msg: &M, max: u32) -> Result<Vec<u8>, ProtoError> {
    let payload = encode_payload(msg, msg.kind_name())?;
    let len = check_len(payload.len(), max)?;
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Encodes and writes one frame.
pub fn write_frame<W: Write + ?Sized, M: Serialize + Kind>(w: &mut W, msg: &M) -> Result<(), ProtoError> {
    let bytes = encode_frame(msg, MAX_FRAME_LEN)?;
    w.write_all(&bytes).map_err(ProtoError::io("writing a frame"))
}

fn check_len(len: usize, max: u32) -> Result<u32, ProtoError> {
    match u32::try_from(len) {
        Ok(l) if l <= max => Ok(l),
        _ => Err(ProtoError::FrameTooLarge { len: len as u64, max }),
    }
}

/// Reads one frame's payload. `Ok(None)` on a clean end of stream (EOF exactly between frames); EOF inside a
/// frame is [`ProtoError::Truncated`]. A length prefix above `max` is refused before anything is allocated,
/// and the buffer only grows as bytes actually arrive, so a peer that announces a large frame and sends
/// little costs little.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: u32) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(ProtoError::Truncated {
                    what: "a frame header",
                    got: got as u64,
                    expected: FRAME_HEADER_LEN as u64,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::Io { doing: "reading a frame header", source: e }),
        }
    }
    let len = u32::from_le_bytes(header);
    if len > max {
        return Err(ProtoError::FrameTooLarge { len: u64::from(len), max });
    }
    let mut payload = Vec::new();
    let n = r.take(u64::from(len)).read_to_end(&mut payload).map_err(ProtoError::io("reading a frame"))?;
    if n < len as usize {
        return Err(ProtoError::Truncated { what: "a frame", got: n as u64, expected: u64::from(len) });
    }
    Ok(Some(payload))
}

/// A decoded frame: a message this version knows, or the tag of a kind added by a newer minor version,
/// which the receiver should skip.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded<M> {
    /// A message.
    Message(M),
    /// A message kind this version does not know (from a newer minor version): skip it.
    Unknown {
        /// The message kind's tag.
        kind: u32,
    },
}

/// Names of message kinds, for errors and logs.
pub trait Kind {
    /// The message kind, e.g. `Tick`.
    fn kind_name(&self) -> &'static str;
}

impl Kind for ServerMessage {
    fn kind_name(&self) -> &'static str {
        self.kind()
    }
}

impl Kind for ClientMessage {
    fn kind_name(&self) -> &'static str {
        match self {
            ClientMessage::Hello(_) => "ClientHello",
            ClientMessage::Ping(_) => "Ping",
        }
    }
}

fn decode_enum<M: DeserializeOwned>(payload: &[u8], known: u32, what: &'static str) -> Result<Decoded<M>, ProtoError> {
    let err = |source| ProtoError::Decode { what, len: payload.len(), source: CodecError(source) };
    // The first thing in every payload is the enum tag (a varint). Peeking at it lets a receiver skip kinds
    // added by a newer minor version instead of failing on them.
    let (tag, _) = postcard::take_from_bytes::<u32>(payload).map_err(err)?;
    if tag >= known {
        return Ok(Decoded::Unknown { kind: tag });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(payload).map_err(err)?;
    if !rest.is_empty() {
        // Trailing bytes mean the two sides disagree about the encoding; better an error than a guess.
        return Err(ProtoError::Decode {
            what,
            len: payload.len(),
            source: CodecError(postcard::Error::DeserializeBadEncoding),
        });
    }
    Ok(Decoded::Message(msg))
}

/// Decodes a frame payload sent by a server (or stored in a recording), unwrapping a compressed envelope
/// ([`COMPRESSED_KIND`]). The inflated message may be at most [`MAX_FRAME_LEN`] bytes: a small payload that
/// claims to inflate to more is an error, never a large allocation. An envelope inside an envelope is a kind
/// this version does not know, and skipped.
pub fn decode_server(payload: &[u8]) -> Result<Decoded<ServerMessage>, ProtoError> {
    let what = "ServerMessage";
    let err = |source| ProtoError::Decode { what, len: payload.len(), source: CodecError(source) };
    let (tag, rest) = postcard::take_from_bytes::<u32>(payload).map_err(err)?;
    if tag != COMPRESSED_KIND {
        return decode_enum(payload, SERVER_MESSAGE_KINDS, what);
    }
    let inner = miniz_oxide::inflate::decompress_to_vec_with_limit(rest, MAX_FRAME_LEN as usize).map_err(|e| {
        ProtoError::Decode {
            what: "a compressed ServerMessage",
            len: payload.len(),
            source: CodecError(match e.status {
                miniz_oxide::inflate::TINFLStatus::HasMoreOutput => postcard::Error::DeserializeUnexpectedEnd,
                _ => postcard::Error::DeserializeBadEncoding,
            }),
        }
    })?;
    // An envelope in an envelope: its tag is a placeholder variant's, never a message to decode.
    if postcard::take_from_bytes::<u32>(&inner).is_ok_and(|(t, _)| t == COMPRESSED_KIND) {
        return Ok(Decoded::Unknown { kind: COMPRESSED_KIND });
    }
    decode_enum(&inner, SERVER_MESSAGE_KINDS, what)
}

/// Decodes a frame payload sent by a client.
pub fn decode_client(payload: &[u8]) -> Result<Decoded<ClientMessage>, ProtoError> {
    decode_enum(payload, CLIENT_MESSAGE_KINDS, "ClientMessage")
}

/// The server side of the handshake: reads a client's preamble and its [`ClientHello`].
///
/// Fails with [`ProtoError::NotLoopscope`] on a foreign peer, [`ProtoError::VersionMismatch`] (without
/// reading further) when the majors differ, and [`ProtoError::Unexpected`] when the first frame is not a
/// `ClientHello`. Frames above [`MAX_HANDSHAKE_FRAME_LEN`] are refused.
pub fn read_client_handshake<R: Read + ?Sized>(r: &mut R) -> Result<(ProtocolVersion, ClientHello), ProtoError> {
    let version = read_preamble(r)?;
    if !PROTOCOL_VERSION.is_compatible_with(version) {
        return Err(ProtoError::VersionMismatch { local: PROTOCOL_VERSION, remote: version });
    }
    let Some(payload) = read_frame(r, MAX_HANDSHAKE_FRAME_LEN)? else {
        return Err(ProtoError::Truncated { what: "the handshake", got: PREAMBLE_LEN as u64, expected: 0 });
    };
    match decode_client(&payload)? {
        Decoded::Message(ClientMessage::Hello(hello)) => Ok((version, hello)),
        Decoded::Message(other) => {
            Err(ProtoError::Unexpected { expected: "ClientHello", got: other.kind_name().to_string() })
        }
        Decoded::Unknown { kind } => {
            Err(ProtoError::Unexpected { expected: "ClientHello", got: format!("unknown message kind {kind}") })
        }
    }
}

/// Writes a client's opening: the preamble and a [`ClientHello`].
pub fn write_client_handshake<W: Write + ?Sized>(w: &mut W, client_name: &str) -> Result<(), ProtoError> {
    let mut bytes = preamble(PROTOCOL_VERSION).to_vec();
    bytes.extend(encode_frame(
        &ClientMessage::Hello(ClientHello { protocol_version: PROTOCOL_VERSION, client_name: client_name.into() }),
        MAX_HANDSHAKE_FRAME_LEN,
    )?);
    w.write_all(&bytes).map_err(ProtoError::io("writing the client handshake"))
}

/// An incremental frame decoder: push bytes in as they arrive, take complete frames out.
///
/// It never holds more than one incomplete frame (at most `max` bytes plus its header) besides complete
/// frames not yet taken, and rejects an oversized length prefix as soon as the prefix arrives. Useful where
/// a blocking [`read_frame`] is not, e.g. reading with timeouts without losing a partial frame.
///
/// ```
/// use loopscope_wire::proto::{encode_frame, FrameDecoder, Pong, ServerMessage, MAX_FRAME_LEN};
/// let bytes = encode_frame(&ServerMessage::Pong(Pong { nonce: 7 }), MAX_FRAME_LEN).unwrap();
/// let mut d = FrameDecoder::new(MAX_FRAME_LEN);
/// d.push(&bytes[..3]);
/// assert_eq!(d.next_frame().unwrap(), None); // incomplete
/// d.push(&bytes[3..]);
/// assert_eq!(d.next_frame().unwrap().unwrap().len(), bytes.len() - 4);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: u32,
}

impl FrameDecoder {
    /// A decoder that refuses frames above `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, max }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Drops the first `n` buffered bytes (used to take a preamble off the front).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// How many more bytes the decoder needs before the next frame can complete (at least 1). A reader uses
    /// it to avoid over-reading.
    pub fn wanted(&self) -> usize {
        let b = self.buffered();
        if b.len() < FRAME_HEADER_LEN {
            return FRAME_HEADER_LEN - b.len();
        }
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]).min(self.max) as usize;
        (FRAME_HEADER_LEN + len).saturating_sub(b.len()).max(1)
    }

    /// Reads once from `r` into the buffer (at most 64 KiB, and no more than the frame in progress needs
    /// when it is large). Returns the number of bytes read; 0 means end of stream.
    pub fn read_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        self.compact();
        let want = self.wanted().clamp(4096, 64 * 1024);
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let res = r.read(&mut self.buf[old..]);
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        res
    }

    /// Takes the next complete frame's payload, if one is buffered. Fails (and stays failed: the stream is out
    /// of sync) on a length prefix above the limit.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        let b = self.buffered();
        if b.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if len > self.max {
            return Err(ProtoError::FrameTooLarge { len: u64::from(len), max: self.max });
        }
        let end = FRAME_HEADER_LEN + len as usize;
        if b.len() < end {
            return Ok(None);
        }
        let payload = b[FRAME_HEADER_LEN..end].to_vec();
        self.start += end;
        Ok(Some(payload))
    }

    fn compact(&mut self) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// A server message encoded once, to be sent to many clients.
///
/// [`Tick`](super::Tick) and [`FullState`](super::FullState) end with a per-client field
/// (`client_dropped_frames`). Because postcard writes fields in order and that field is last, the encoding
/// of such a message is "everything else" followed by the varint of that one value: a `ServerFrame` keeps
/// the shared part and appends each client's own value when the frame is written ([`ServerFrame::parts`]).
/// Other messages are sent as they are.
///
/// ```
/// use loopscope_wire::proto::{decode_server, Decoded, ServerFrame, ServerMessage, Tick};
/// let tick = ServerMessage::Tick(Box::new(Tick { seq: 1, ..Tick::default() }));
/// let frame = ServerFrame::encode(&tick).unwrap();
/// let bytes = frame.parts(42).to_vec();
/// let Decoded::Message(ServerMessage::Tick(t)) = decode_server(&bytes[4..]).unwrap() else { panic!() };
/// assert_eq!((t.seq, t.client_dropped_frames), (1, 42));
/// ```
#[derive(Clone, Debug)]
pub struct ServerFrame {
    body: Arc<[u8]>,
    /// When `body` is a compressed envelope: the plain payload, for clients of protocol 1.0, which would skip
    /// the envelope as an unknown kind.
    plain: Option<Arc<[u8]>>,
    kind: &'static str,
    per_client: bool,
}

/// Room left in a frame for the per-client varint (a `u64` takes at most 10 bytes).
const MAX_VARINT_LEN: usize = 10;

impl ServerFrame {
    /// Encodes `msg`. Fails with [`ProtoError::FrameTooLarge`] above [`MAX_FRAME_LEN`].
    pub fn encode(msg: &ServerMessage) -> Result<ServerFrame, ProtoError> {
        let mut body = encode_payload(msg, msg.kind())?;
        let per_client_value = match msg {
            ServerMessage::Tick(t) => Some(t.client_dropped_frames),
            ServerMessage::Full(f) => Some(f.client_dropped_frames),
            _ => None,
        };
        if let Some(v) = per_client_value {
            let n = varint(v).1;
            body.truncate(body.len().saturating_sub(n));
        }
        check_len(body.len() + if per_client_value.is_some() { MAX_VARINT_LEN } else { 0 }, MAX_FRAME_LEN)?;
        let (body, plain) = match compress_stall(msg, &body) {
            Some(packed) => (packed.into(), Some(body.into())),
            None => (body.into(), None),
        };
        Ok(ServerFrame { body, plain, kind: msg.kind(), per_client: per_client_value.is_some() })
    }

    /// Whether the frame is sent as a compressed envelope to clients that read it (protocol 1.1 and later).
    pub fn is_compressed(&self) -> bool {
        self.plain.is_some()
    }

    /// The message kind, for logs.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether the frame carries a per-client `client_dropped_frames` value.
    pub fn is_per_client(&self) -> bool {
        self.per_client
    }

    /// Bytes this frame occupies on the wire (for a zero per-client value; at most 9 more otherwise), in the
    /// larger of its two forms when it has two.
    pub fn wire_len(&self) -> usize {
        let body = self.plain.as_ref().map_or(self.body.len(), |p| p.len().max(self.body.len()));
        FRAME_HEADER_LEN + body + usize::from(self.per_client)
    }

    /// The frame as written for a client that has lost `client_dropped_frames` frames so far: a length
    /// prefix, the shared body and the client's own suffix.
    pub fn parts(&self, client_dropped_frames: u64) -> FrameParts {
        self.parts_for(PROTOCOL_VERSION, client_dropped_frames)
    }

    /// [`ServerFrame::parts`] for a client that speaks `client` (same major): a 1.0 client gets the plain
    /// form of a compressed frame.
    pub fn parts_for(&self, client: ProtocolVersion, client_dropped_frames: u64) -> FrameParts {
        let body = match &self.plain {
            Some(plain) if client.minor < 1 => plain.clone(),
            _ => self.body.clone(),
        };
        let (suffix, suffix_len) = if self.per_client { varint(client_dropped_frames) } else { ([0; 10], 0) };
        // `encode` checked that the body plus the largest suffix fits in MAX_FRAME_LEN (a u32).
        let len = u32::try_from(body.len() + suffix_len).unwrap_or(u32::MAX);
        FrameParts { header: len.to_le_bytes(), body, suffix, suffix_len: suffix_len as u8 }
    }
}

/// One frame ready to be written: length prefix, shared body, per-client suffix. See [`ServerFrame::parts`].
#[derive(Clone, Debug)]
pub struct FrameParts {
    header: [u8; FRAME_HEADER_LEN],
    body: Arc<[u8]>,
    suffix: [u8; MAX_VARINT_LEN],
    suffix_len: u8,
}

impl FrameParts {
    /// The three pieces, in order.
    pub fn slices(&self) -> [&[u8]; 3] {
        [&self.header, &self.body, &self.suffix[..usize::from(self.suffix_len)]]
    }

    /// Total length on the wire.
    pub fn len(&self) -> usize {
        self.slices().iter().map(|s| s.len()).sum()
    }

    /// Always false: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole frame as one buffer (copies; prefer [`FrameParts::slices`] to write without copying).
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// postcard's varint encoding of a `u64` (LEB128: 7 bits per byte, low bits first), and its length.
fn varint(mut v: u64) -> ([u8; MAX_VARINT_LEN], usize) {
    let mut out = [0u8; MAX_VARINT_LEN];
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            return (out, i + 1);
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

#[cfg(test)]
mod tests;
