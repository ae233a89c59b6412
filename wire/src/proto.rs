//! The live stream protocol between an agent and its clients (the dashboard, the CI command, recorders).
//!
//! The full specification is in `wire/PROTOCOL.md`; in short:
//!
//! * **Transport:** any byte stream; the agent serves TCP on [`DEFAULT_ADDR`] (`127.0.0.1:6670`) or a Unix
//!   socket (`unix:/path/to.sock`, see [`ServeAddr`]).
//! * **Preamble:** each side first sends [`MAGIC`] and its [`ProtocolVersion`] in the clear (12 bytes), so
//!   that pointing a client at something else gives "not a loopscope agent" instead of garbage.
//! * **Frames:** then length-prefixed frames: a little-endian `u32` length, then a postcard-encoded
//!   [`ServerMessage`] or [`ClientMessage`]. Lengths above [`MAX_FRAME_LEN`] (16 MiB) are refused before
//!   anything is allocated.
//! * **Handshake:** the server sends its preamble and a [`ServerHello`]; the client sends its preamble and a
//!   [`ClientHello`]. Majors must match ([`ProtocolVersion::is_compatible_with`]); otherwise the client
//!   fails with an error naming both versions, and the server answers [`Refused`] and closes.
//! * **Stream:** a [`FullState`] followed by [`FullTasks`] chunks, then a [`Tick`] every sample interval
//!   (cumulative counters, only the tasks and locations that changed), [`ServerMessage::Stall`] events as
//!   they happen, and a [`Goodbye`] at the end. A client that falls behind loses frames; the server counts
//!   them (`client_dropped_frames`) and sends it a fresh `FullState` once it catches up.
//!
//! # Examples
//!
//! Encoding and decoding a frame by hand (the [`client`](crate::client) module does all of this for you):
//!
//! ```
//! use loopscope_wire::proto::{self, Decoded, ServerMessage, Pong};
//!
//! let msg = ServerMessage::Pong(Pong { nonce: 1 });
//! let mut wire = Vec::new();
//! proto::write_frame(&mut wire, &msg)?;
//! let payload = proto::read_frame(&mut &wire[..], proto::MAX_FRAME_LEN)?.expect("one frame");
//! assert_eq!(proto::decode_server(&payload)?, Decoded::Message(msg));
//! # Ok::<(), proto::ProtoError>(())
//! ```

mod addr;
mod frame;
mod messages;
mod samples;

pub use addr::{AddrError, DEFAULT_ADDR, DEFAULT_PORT, ServeAddr};
pub use frame::{
    COMPRESS_MIN_LEN, COMPRESSED_KIND, CodecError, Decoded, FRAME_HEADER_LEN, FrameDecoder, FrameParts, Kind, MAGIC,
    MAX_FRAME_LEN, MAX_HANDSHAKE_FRAME_LEN, PREAMBLE_LEN, ProtoError, ServerFrame, check_magic_prefix, decode_client,
    decode_server, encode_frame, encode_payload, encode_server_payload, is_timeout, parse_preamble, preamble,
    read_client_handshake, read_frame, read_preamble, write_client_handshake, write_frame, write_preamble,
};
pub use messages::{
    AgentCapabilities, ClientHello, ClientMessage, FULL_TASKS_CHUNK, FullState, FullTasks, Goodbye, LocationInfo,
    PROTOCOL_VERSION, Ping, Pong, ProtocolVersion, Refused, ServerHello, ServerMessage, Tick, full_state_messages,
};
pub use samples::{
    CurrentPoll, GlobalSample, LatencySample, LocationSample, TaskSample, WaitHistogram, WaitTimes, WorkerSample,
};
