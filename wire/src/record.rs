//! Recordings: a live stream saved to a file, to replay or analyze later.
//!
//! A recording is a header (magic, format version, the wall-clock start time and the agent's
//! [`ServerHello`]) followed by records, each one frame of the stream with its time offset from the start,
//! and an end marker. Every record carries checksums, so a damaged file gives an error at the exact record
//! and byte where it breaks, and everything before that point is still read. The layout is specified in
//! `wire/PROTOCOL.md`.
//!
//! * [`Recorder`] writes a recording (flushing at least every [`Recorder::set_flush_interval`], and after
//!   every stall event).
//! * [`RecordingReader`] iterates over the messages with their timestamps: all good records, then at most one
//!   error.
//! * [`record_stream`] records a live [`Client`] connection.
//!
//! # Examples
//!
//! ```
//! use loopscope_wire::proto::{ServerMessage, Tick};
//! use loopscope_wire::record::{Recorder, RecordingReader};
//! # let hello = loopscope_wire::record::example_hello();
//!
//! let mut rec = Recorder::new(Vec::new(), &hello, 1_700_000_000_000_000_000)?;
//! rec.write(&ServerMessage::Tick(Box::new(Tick { seq: 1, ..Tick::default() })))?;
//! let bytes = rec.finish()?;
//!
//! let mut reader = RecordingReader::new(&bytes[..])?;
//! assert_eq!(reader.header().hello.pid, hello.pid);
//! let records: Vec<_> = reader.by_ref().collect::<Result<_, _>>()?;
//! assert_eq!(records.len(), 1);
//! assert!(reader.finished_cleanly());
//! # Ok::<(), loopscope_wire::record::RecordError>(())
//! ```

mod reader;
mod writer;

pub use reader::RecordingReader;
pub use writer::Recorder;

use crate::client::{Client, ClientError};
use crate::proto::{PROTOCOL_VERSION, ProtoError, ProtocolVersion, ServerHello, ServerMessage};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// The first eight bytes of a recording.
pub const RECORDING_MAGIC: [u8; 8] = *b"LSRECORD";

/// The recording format this version writes. Readers accept any minor of the same major.
pub const RECORDING_FORMAT: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// The length value that marks the end of a recording.
const END_MARKER: u32 = u32::MAX;

/// Bytes of a record's header: offset (u64), length (u32), header checksum (u32).
const RECORD_HEADER_LEN: usize = 16;

/// What a recording says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingHeader {
    /// Wall-clock time the recording started, nanoseconds since the Unix epoch. Record offsets count from
    /// here.
    pub started_at_unix_nanos: u64,
    /// The agent's greeting.
    pub hello: ServerHello,
    /// What wrote the recording (e.g. `loopscope record 0.1.0`, or `agent` for an in-process recording).
    pub recorder: String,
}

/// A place in a recording, for error messages: the record number (0-based; none for the file header) and
/// the byte offset from the start of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The record being read, or `None` in the file header.
    pub record: Option<u64>,
    /// Byte offset from the start of the file.
    pub byte: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            Some(r) => write!(f, "record {r} (byte {})", self.byte),
            None => write!(f, "the file header (byte {})", self.byte),
        }
    }
}

/// An error reading or writing a recording. Reading errors say where the file breaks; everything before that
/// point was delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The file does not start with [`RECORDING_MAGIC`].
    #[error("not a loopscope recording: {found}")]
    NotARecording {
        /// What the file starts with.
        found: String,
    },
    /// A recording format or protocol major this version cannot read.
    #[error("unsupported recording: it uses {what} {found}, this version reads {supported}")]
    Unsupported {
        /// `format` or `protocol`.
        what: &'static str,
        /// The version in the file.
        found: ProtocolVersion,
        /// The version this crate handles (any minor of its major).
        supported: ProtocolVersion,
    },
    /// The file ends in the middle of something.
    #[error("the recording is truncated in {at}: {detail}")]
    Truncated {
        /// Where.
        at: Position,
        /// What was being read.
        detail: String,
    },
    /// A record (or the header) failed its checksum or does not decode.
    #[error("the recording is corrupt at {at}: {detail}")]
    Corrupt {
        /// Where.
        at: Position,
        /// What is wrong.
        detail: String,
        /// The decoder's error, when decoding failed.
        #[source]
        source: Option<ProtoError>,
    },
    /// The file ends cleanly between records but without the end marker: the recorder was killed or the
    /// file was cut at a record boundary. Everything before is intact.
    #[error(
        "the recording ends after {records} records (byte {byte}) without its end marker: the recorder stopped \
         abruptly or the file was cut; everything before is intact"
    )]
    Unfinished {
        /// Records read.
        records: u64,
        /// File length.
        byte: u64,
    },
    /// Reading or writing failed.
    #[error("I/O error at {at} of the recording")]
    Io {
        /// Where.
        at: Position,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A message could not be encoded for writing.
    #[error("could not encode a message for the recording")]
    Encode(#[source] ProtoError),
}

impl RecordError {
    /// True for [`RecordError::Unfinished`]: the file lacks only its end marker (a recorder that was killed),
    /// which a replay may treat as a warning.
    pub fn is_unfinished(&self) -> bool {
        matches!(self, RecordError::Unfinished { .. })
    }
}

/// One message of a recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The record number, from 0.
    pub index: u64,
    /// Time since the recording started (monotonic, as measured by the recorder).
    pub offset: Duration,
    /// The message.
    pub message: ServerMessage,
}

impl Record {
    /// Wall-clock time of the record, given the recording's header.
    pub fn at_unix_nanos(&self, header: &RecordingHeader) -> u64 {
        header.started_at_unix_nanos.saturating_add(proto_nanos(self.offset))
    }
}

fn proto_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How a [`record_stream`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The agent said goodbye (the app shut down its runtime).
    Goodbye(String),
    /// The connection closed without a goodbye (the app exited or was killed).
    Closed,
    /// The deadline passed.
    Deadline,
    /// The caller's stop condition became true.
    Stopped,
}

/// What [`record_stream`] recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSummary {
    /// Messages recorded.
    pub messages: u64,
    /// Bytes written to the recording so far (header included).
    pub bytes: u64,
    /// How it ended.
    pub end: StreamEnd,
}

/// An error while recording a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordStreamError {
    /// The connection failed (other than by closing).
    #[error("recording the stream failed")]
    Client(#[from] ClientError),
    /// Writing the recording failed.
    #[error("writing the recording failed")]
    Record(#[from] RecordError),
}

/// Records a live connection into `recorder` until the agent says goodbye, the connection closes, `until`
/// passes, or `stop()` returns true (checked at least every 100 ms). Frames are stored exactly as received.
///
/// Create the recorder from the client's greeting: `Recorder::new(file, client.hello(), now)`.
pub fn record_stream<W: Write>(
    client: &mut Client,
    recorder: &mut Recorder<W>,
    until: Option<Instant>,
    mut stop: impl FnMut() -> bool,
) -> Result<RecordSummary, RecordStreamError> {
    let mut messages = 0;
    let end = loop {
        if stop() {
            break StreamEnd::Stopped;
        }
        let now = Instant::now();
        let wait = match until {
            Some(t) if t <= now => break StreamEnd::Deadline,
            Some(t) => (t - now).min(Duration::from_millis(100)),
            None => Duration::from_millis(100),
        };
        match client.recv_raw(wait) {
            Ok(Some((msg, payload))) => {
                recorder.write_payload(&payload)?;
                messages += 1;
                match msg {
                    ServerMessage::Goodbye(g) => break StreamEnd::Goodbye(g.reason),
                    ServerMessage::Stall(_) | ServerMessage::StallPart(_) => recorder.flush()?,
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(ClientError::Closed { .. }) => break StreamEnd::Closed,
            Err(e) => {
                recorder.flush()?;
                return Err(e.into());
            }
        }
    };
    recorder.flush()?;
    Ok(RecordSummary { messages, bytes: recorder.bytes_written(), end })
}

/// A greeting for examples and tests.
#[doc(hidden)]
pub fn example_hello() -> ServerHello {
    ServerHello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        runtime: crate::RuntimeInfo {
            id: 1,
            name: Some("example".into()),
            flavor: Some("multi_thread".into()),
            workers: Some(2),
            pid: 4242,
        },
        pid: 4242,
        program: Some("example".into()),
        started_at_unix_nanos: 1_700_000_000_000_000_000,
        sample_interval: Duration::from_millis(250),
        stall_threshold: Duration::from_millis(10),
        slow_poll_threshold: Duration::from_micros(50),
        capabilities: Default::default(),
    }
}
