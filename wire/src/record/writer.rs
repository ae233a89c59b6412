//! Writing a recording: [`Recorder`] appends one record per stream frame, with checksums, and flushes on a
//! schedule and after every stall event. Split out of `record.rs`, which holds the format's constants and
//! errors.

use super::{
    END_MARKER, Position, RECORD_HEADER_LEN, RECORDING_FORMAT, RECORDING_MAGIC, RecordError, RecordingHeader,
    proto_nanos,
};
use crate::proto::{self, MAX_FRAME_LEN, PROTOCOL_VERSION, ProtoError, ServerHello, ServerMessage};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes a recording. See the [module docs](super).
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

    /// Records a frame payload exactly as received (see [`Client::recv_raw`](crate::client::Client::recv_raw)), timestamped now. The payload
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
