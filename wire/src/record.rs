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

use crate::client::{Client, ClientError};
use crate::proto::{
    self, Decoded, MAX_FRAME_LEN, PROTOCOL_VERSION, ProtoError, ProtocolVersion, ServerHello, ServerMessage,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
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

/// Writes a recording. See the [module docs](self).
///
/// Dropping a recorder finishes it (writes the end marker) on a best-effort basis; call
/// [`Recorder::finish`] to see errors.
#[derive(Debug)]
pub struct Recorder<W: Write> {
    out: Option<W>,
    start: Instant,
    records: u64,
    bytes: u64,
    last_flush: Instant,
    flush_interval: Duration,
}

impl Recorder<BufWriter<File>> {
    /// Creates (or truncates) a recording file.
    pub fn create(path: impl AsRef<Path>, hello: &ServerHello) -> Result<Self, RecordError> {
        let at = Position { record: None, byte: 0 };
        let f = File::create(path).map_err(|source| RecordError::Io { at, source })?;
        Recorder::new(BufWriter::new(f), hello, unix_now())
    }
}

impl<W: Write> Recorder<W> {
    /// Starts a recording on `out`, writing the header at once. Offsets of later records count from now;
    /// `started_at_unix_nanos` is the wall-clock time to store for this moment.
    pub fn new(out: W, hello: &ServerHello, started_at_unix_nanos: u64) -> Result<Self, RecordError> {
        Recorder::with_name(out, hello, started_at_unix_nanos, concat!("loopscope-wire ", env!("CARGO_PKG_VERSION")))
    }

    /// Like [`Recorder::new`], naming what wrote the recording.
    pub fn with_name(
        mut out: W,
        hello: &ServerHello,
        started_at_unix_nanos: u64,
        recorder: &str,
    ) -> Result<Self, RecordError> {
        let header = RecordingHeader { started_at_unix_nanos, hello: hello.clone(), recorder: recorder.to_string() };
        let payload = proto::encode_payload(&header, "RecordingHeader").map_err(RecordError::Encode)?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_FRAME_LEN)
            .ok_or(RecordError::Encode(ProtoError::FrameTooLarge { len: payload.len() as u64, max: MAX_FRAME_LEN }))?;
        let mut bytes = Vec::with_capacity(28 + payload.len());
        bytes.extend_from_slice(&RECORDING_MAGIC);
        for v in [RECORDING_FORMAT.major, RECORDING_FORMAT.minor, PROTOCOL_VERSION.major, PROTOCOL_VERSION.minor] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&payload);
        // The checksum covers the versions too, so a flipped minor version is caught as well.
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        out.write_all(&bytes).map_err(|source| RecordError::Io { at: Position { record: None, byte: 0 }, source })?;
        let now = Instant::now();
        Ok(Recorder {
            out: Some(out),
            start: now,
            records: 0,
            bytes: bytes.len() as u64,
            last_flush: now,
            flush_interval: Duration::from_secs(1),
        })
    }

    /// Flush at least this often (default 1 s), so a killed process leaves a useful recording.
    pub fn set_flush_interval(&mut self, every: Duration) {
        self.flush_interval = every;
    }

    /// Records a message, timestamped now.
    pub fn write(&mut self, msg: &ServerMessage) -> Result<(), RecordError> {
        let offset = self.start.elapsed();
        self.write_at(offset, msg)
    }

    /// Records a message with an explicit offset from the start.
    pub fn write_at(&mut self, offset: Duration, msg: &ServerMessage) -> Result<(), RecordError> {
        let payload = proto::encode_server_payload(msg).map_err(RecordError::Encode)?;
        self.write_payload_at(offset, &payload)?;
        if matches!(msg, ServerMessage::Stall(_) | ServerMessage::StallPart(_) | ServerMessage::Goodbye(_)) {
            self.flush()?;
        }
        Ok(())
    }

    /// Records a frame payload exactly as received (see [`Client::recv_raw`]), timestamped now. The payload
    /// is not checked; a reader reports a payload that does not decode as corrupt.
    pub fn write_payload(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        let offset = self.start.elapsed();
        self.write_payload_at(offset, payload)
    }

    /// Records a frame payload with an explicit offset from the start.
    pub fn write_payload_at(&mut self, offset: Duration, payload: &[u8]) -> Result<(), RecordError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_FRAME_LEN)
            .ok_or(RecordError::Encode(ProtoError::FrameTooLarge { len: payload.len() as u64, max: MAX_FRAME_LEN }))?;
        let head = record_header(proto_nanos(offset), len);
        let crc = crc32fast::hash(payload).to_le_bytes();
        self.put(&[&head, payload, &crc])?;
        self.records += 1;
        if self.last_flush.elapsed() >= self.flush_interval {
            self.flush()?;
        }
        Ok(())
    }

    fn put(&mut self, parts: &[&[u8]]) -> Result<(), RecordError> {
        let at = Position { record: Some(self.records), byte: self.bytes };
        let Some(out) = self.out.as_mut() else {
            return Err(RecordError::Io { at, source: io::Error::other("the recording was already finished") });
        };
        for p in parts {
            out.write_all(p).map_err(|source| RecordError::Io { at, source })?;
            self.bytes += p.len() as u64;
        }
        Ok(())
    }

    /// Flushes buffered records to the underlying writer.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.last_flush = Instant::now();
        let at = Position { record: Some(self.records), byte: self.bytes };
        match self.out.as_mut() {
            Some(out) => out.flush().map_err(|source| RecordError::Io { at, source }),
            None => Ok(()),
        }
    }

    /// Records written so far.
    pub fn records_written(&self) -> u64 {
        self.records
    }

    /// Bytes written so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes the end marker, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W, RecordError> {
        self.write_end()?;
        let at = Position { record: Some(self.records), byte: self.bytes };
        self.out.take().ok_or(RecordError::Io { at, source: io::Error::other("the recording was already finished") })
    }

    fn write_end(&mut self) -> Result<(), RecordError> {
        let head = record_header(proto_nanos(self.start.elapsed()), END_MARKER);
        self.put(&[&head])?;
        self.flush()
    }
}

impl<W: Write> Drop for Recorder<W> {
    fn drop(&mut self) {
        if self.out.is_some() {
            // Best effort: an error here has nowhere to go; `finish` reports it.
            let _ = self.write_end();
        }
    }
}

fn record_header(offset_nanos: u64, len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..8].copy_from_slice(&offset_nanos.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads a recording: an iterator over its [`Record`]s. See the [module docs](self).
///
/// The iterator yields every good record, then, if the file is damaged or incomplete, exactly one error
/// saying where, then ends.
#[derive(Debug)]
pub struct RecordingReader<R: Read> {
    input: R,
    header: RecordingHeader,
    byte: u64,
    records: u64,
    skipped: u64,
    done: bool,
    clean_end: bool,
}

impl RecordingReader<BufReader<File>> {
    /// Opens a recording file and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordError> {
        let at = Position { record: None, byte: 0 };
        let f = File::open(path).map_err(|source| RecordError::Io { at, source })?;
        RecordingReader::new(BufReader::new(f))
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(n < len)` only at end of input.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl<R: Read> RecordingReader<R> {
    /// Reads the header from `input`.
    pub fn new(mut input: R) -> Result<Self, RecordError> {
        let head_at = |byte| Position { record: None, byte };
        let mut fixed = [0u8; 20];
        let got = read_full(&mut input, &mut fixed).map_err(|source| RecordError::Io { at: head_at(0), source })?;
        let magic_len = got.min(RECORDING_MAGIC.len());
        if fixed[..magic_len] != RECORDING_MAGIC[..magic_len] {
            let shown: String =
                fixed[..got].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
            return Err(RecordError::NotARecording {
                found: format!("it starts with {shown:?}, expected \"LSRECORD\""),
            });
        }
        if got < fixed.len() {
            return Err(RecordError::Truncated {
                at: head_at(got as u64),
                detail: format!("the fixed header needs {} bytes, the file has {got}", fixed.len()),
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let format = ProtocolVersion { major: u16_at(8), minor: u16_at(10) };
        let protocol = ProtocolVersion { major: u16_at(12), minor: u16_at(14) };
        if !RECORDING_FORMAT.is_compatible_with(format) {
            return Err(RecordError::Unsupported { what: "format", found: format, supported: RECORDING_FORMAT });
        }
        if !PROTOCOL_VERSION.can_read(protocol) {
            return Err(RecordError::Unsupported { what: "protocol", found: protocol, supported: PROTOCOL_VERSION });
        }
        let len = u32::from_le_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]);
        if len > MAX_FRAME_LEN {
            return Err(RecordError::Corrupt {
                at: head_at(16),
                detail: format!("header length {len} exceeds the limit of {MAX_FRAME_LEN} bytes"),
                source: None,
            });
        }
        let payload = read_payload(&mut input, len).map_err(|source| RecordError::Io { at: head_at(20), source })?;
        let mut crc = [0u8; 4];
        let crc_got = read_full(&mut input, &mut crc).map_err(|source| RecordError::Io { at: head_at(20), source })?;
        let after = 20 + payload.len() as u64 + crc_got as u64;
        if payload.len() < len as usize || crc_got < 4 {
            return Err(RecordError::Truncated {
                at: head_at(after),
                detail: format!("the header needs {} bytes", 20 + u64::from(len) + 4),
            });
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&fixed);
        hasher.update(&payload);
        if hasher.finalize() != u32::from_le_bytes(crc) {
            return Err(RecordError::Corrupt {
                at: head_at(20),
                detail: "header checksum mismatch".into(),
                source: None,
            });
        }
        let header: RecordingHeader = postcard::from_bytes(&payload).map_err(|e| RecordError::Corrupt {
            at: head_at(20),
            detail: format!("header does not decode: {e}"),
            source: None,
        })?;
        Ok(RecordingReader { input, header, byte: after, records: 0, skipped: 0, done: false, clean_end: false })
    }

    /// The recording's header.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// Records read so far (including skipped ones).
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Records of message kinds this version does not know (written by a newer agent), skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Whether the end marker was reached: the recording is complete.
    pub fn finished_cleanly(&self) -> bool {
        self.clean_end
    }

    fn next_record(&mut self) -> Result<Option<Record>, RecordError> {
        loop {
            let at = Position { record: Some(self.records), byte: self.byte };
            let mut head = [0u8; RECORD_HEADER_LEN];
            let got = read_full(&mut self.input, &mut head).map_err(|source| RecordError::Io { at, source })?;
            if got == 0 {
                return Err(RecordError::Unfinished { records: self.records, byte: self.byte });
            }
            if got < RECORD_HEADER_LEN {
                return Err(RecordError::Truncated {
                    at,
                    detail: format!("the record header needs {RECORD_HEADER_LEN} bytes, the file has {got}"),
                });
            }
            if crc32fast::hash(&head[..12]).to_le_bytes() != head[12..] {
                return Err(RecordError::Corrupt {
                    at,
                    detail: "record header checksum mismatch".into(),
                    source: None,
                });
            }
            let offset = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
            let len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            if len == END_MARKER {
                self.byte += RECORD_HEADER_LEN as u64;
                self.clean_end = true;
                return Ok(None);
            }
            if len > MAX_FRAME_LEN {
                return Err(RecordError::Corrupt {
                    at,
                    detail: format!("record length {len} exceeds the limit of {MAX_FRAME_LEN} bytes"),
                    source: None,
                });
            }
            let payload = read_payload(&mut self.input, len).map_err(|source| RecordError::Io { at, source })?;
            let mut crc = [0u8; 4];
            let crc_got = read_full(&mut self.input, &mut crc).map_err(|source| RecordError::Io { at, source })?;
            if payload.len() < len as usize || crc_got < 4 {
                return Err(RecordError::Truncated {
                    at,
                    detail: format!(
                        "the record needs {} bytes, the file has {}",
                        RECORD_HEADER_LEN + len as usize + 4,
                        RECORD_HEADER_LEN + payload.len() + crc_got
                    ),
                });
            }
            if crc32fast::hash(&payload).to_le_bytes() != crc {
                return Err(RecordError::Corrupt { at, detail: "record checksum mismatch".into(), source: None });
            }
            let decoded = proto::decode_server(&payload).map_err(|e| RecordError::Corrupt {
                at,
                detail: "the record does not decode".into(),
                source: Some(e),
            })?;
            self.byte += (RECORD_HEADER_LEN + payload.len() + 4) as u64;
            let index = self.records;
            self.records += 1;
            match decoded {
                Decoded::Message(message) => {
                    return Ok(Some(Record { index, offset: Duration::from_nanos(offset), message }));
                }
                Decoded::Unknown { .. } => self.skipped += 1,
            }
        }
    }
}

/// Reads up to `len` bytes, growing the buffer only as bytes arrive (a corrupt length costs nothing).
fn read_payload<R: Read + ?Sized>(r: &mut R, len: u32) -> io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut payload)?;
    Ok(payload)
}

impl<R: Read> Iterator for RecordingReader<R> {
    type Item = Result<Record, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
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
