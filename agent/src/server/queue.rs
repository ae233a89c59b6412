//! A connected client's bounded queue and its resync policy: what the broadcaster pushes, the writer
//! drains, and the reader adds pongs to.

use super::conn::Conn;
use crate::sync::lock;
use loopscope_wire::proto::{ProtocolVersion, ServerFrame};
use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Normal streaming.
    Streaming,
    /// Fell behind: frames are dropped until the writer sends a fresh full state.
    NeedsResync,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) frames: VecDeque<ServerFrame>,
    pub(super) bytes: usize,
    pub(super) phase: Phase,
    /// Set when the reader saw the client hang up, or the server gave up on it.
    pub(super) closed: bool,
    /// The server is stopping: send this last, then close.
    pub(super) goodbye: Option<ServerFrame>,
    /// Pongs to send, answered ahead of the stream (bounded by `queue_frames`).
    pub(super) pongs: VecDeque<ServerFrame>,
}

/// One connected client, shared by the broadcaster, its writer and its reader.
#[derive(Debug)]
pub(super) struct ClientSlot {
    pub(super) id: u64,
    pub(super) peer: String,
    pub(super) name: String,
    /// The protocol the client speaks (same major as ours): a 1.0 client gets stall events uncompressed.
    pub(super) version: ProtocolVersion,
    pub(super) connected_at: Instant,
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    pub(super) dropped: AtomicU64,
    pub(super) frames_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) resyncs: AtomicU64,
    /// A second handle on the socket, to unblock the threads when the server stops.
    pub(super) conn: Mutex<Option<Conn>>,
}

impl ClientSlot {
    pub(super) fn close(&self) {
        lock(&self.queue).closed = true;
        self.wake.notify_all();
        if let Some(c) = lock(&self.conn).as_ref() {
            c.shutdown(Shutdown::Both);
        }
    }
}
