//! Reading a recording back: [`RecordingReader`] yields every good record, then at most one error saying
//! where the file breaks. Split out of `record.rs`, which holds the format's constants and errors.

use super::{
    END_MARKER, Position, RECORD_HEADER_LEN, RECORDING_FORMAT, RECORDING_MAGIC, Record, RecordError, RecordingHeader,
};
use crate::proto::{self, Decoded, MAX_FRAME_LEN, PROTOCOL_VERSION, ProtocolVersion};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::Duration;

/// Reads a recording: an iterator over its [`Record`]s. See the [module docs](super).
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
