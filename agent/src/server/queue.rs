//! A connected client's bounded queue and its resync policy: what the broadcaster pushes, the writer
//! drains, and the reader adds pongs to.

use super::conn::Conn;
use crate::sync::lock;
use loopscope_wire::proto::{ProtocolVersion, ServerFrame};
use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

/// What [`ClientSlot::offer`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// Queued for the writer.
    Queued,
    /// The client fell behind: this frame and the ones it had queued (this many in all) are lost, and it will
    /// be resynchronized with a fresh full state.
    Lost(u64),
    /// The client is closing or saying goodbye.
    Skipped,
}

impl ClientSlot {
    /// Queues `frame` if it fits the client's bounds (`queue_frames` frames, `queue_bytes` bytes; an empty
    /// queue takes any frame). Never blocks on the client: it takes the queue's lock only.
    ///
    /// The resync policy: a client whose queue is full, or that already fell behind, loses the frame, and
    /// what it had queued is freed at once (a fresh full state will replace it, so holding memory for a
    /// client that may never catch up buys nothing). Its writer sends that full state once it has finished
    /// the frame it was writing.
    pub(super) fn offer(&self, frame: &ServerFrame, queue_frames: usize, queue_bytes: usize) -> Offered {
        let mut q = lock(&self.queue);
        if q.closed || q.goodbye.is_some() {
            return Offered::Skipped;
        }
        let len = frame.wire_len();
        let fits = q.frames.is_empty() || (q.frames.len() < queue_frames && q.bytes + len <= queue_bytes);
        if q.phase == Phase::NeedsResync || !fits {
            let lost = 1 + q.frames.len() as u64;
            q.frames.clear();
            q.bytes = 0;
            q.phase = Phase::NeedsResync;
            drop(q);
            self.dropped.fetch_add(lost, Relaxed);
            self.wake.notify_all();
            return Offered::Lost(lost);
        }
        q.bytes += len;
        q.frames.push_back(frame.clone());
        drop(q);
        self.wake.notify_all();
        Offered::Queued
    }
}
