//! An incremental frame decoder for callers that can't block in [`read_frame`](super::read_frame): bytes
//! are pushed in as they arrive and whole frames taken out. Split out of `frame.rs`.

use super::{FRAME_HEADER_LEN, ProtoError};
use std::io::{self, Read};

/// An incremental frame decoder: push bytes in as they arrive, take complete frames out.
///
/// It never holds more than one incomplete frame (at most `max` bytes plus its header) besides complete
/// frames not yet taken, and rejects an oversized length prefix as soon as the prefix arrives. Useful where
/// a blocking [`read_frame`](super::read_frame) is not, e.g. reading with timeouts without losing a partial frame.
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
