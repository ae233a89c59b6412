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

mod decoder;
mod shared;

pub use decoder::FrameDecoder;
use shared::varint;
pub use shared::{FrameParts, ServerFrame};

#[cfg(test)]
mod tests;
