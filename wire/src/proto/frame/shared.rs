//! A server message encoded once and sent to many clients: [`ServerFrame`] keeps the shared bytes and
//! appends each client's own `client_dropped_frames` when the frame is written ([`FrameParts`]). Split out
//! of `frame.rs`, which encodes and decodes single frames.

use super::{FRAME_HEADER_LEN, MAX_FRAME_LEN, ProtoError, check_len, compress_stall, encode_payload};
use crate::proto::messages::{PROTOCOL_VERSION, ProtocolVersion, ServerMessage};
use std::sync::Arc;

/// A server message encoded once, to be sent to many clients.
///
/// [`Tick`](crate::proto::Tick) and [`FullState`](crate::proto::FullState) end with a per-client field
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
pub(super) fn varint(mut v: u64) -> ([u8; MAX_VARINT_LEN], usize) {
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
