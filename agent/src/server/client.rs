//! One client's life on its writer thread (`loopscope-client-N`): handshake, registration under the client
//! limit, its reader thread, the writer loop, and cleanup.

use super::conn::{Conn, refuse};
use super::handshake::handshake;
use super::queue::{ClientSlot, Phase, Queue};
use super::reader::read_loop;
use super::state::{Inner, spawn};
use super::writer::write_loop;
use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

pub(super) fn serve_client(inner: &Arc<Inner>, id: u64, mut conn: Conn, peer: String) {
    let handshake = handshake(inner, &mut conn, &peer);
    inner.pending.fetch_sub(1, AcqRel);
    let Some((name, version)) = handshake else { return };
    let (Ok(reader_conn), Ok(control_conn)) = (conn.try_clone(), conn.try_clone()) else { return };
    let slot = Arc::new(ClientSlot {
        id,
        peer: peer.clone(),
        name,
        version,
        connected_at: Instant::now(),
        queue: Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            phase: Phase::Streaming,
            closed: false,
            goodbye: None,
            pongs: VecDeque::new(),
        }),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        frames_sent: AtomicU64::new(0),
        bytes_sent: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        conn: Mutex::new(Some(control_conn)),
    });
    {
        let mut clients = lock(&inner.clients);
        // Checked again here, under the lock, so that racing handshakes cannot exceed the limit.
        if clients.len() >= inner.config.max_clients || inner.stopping.load(Acquire) {
            drop(clients);
            inner.counters.refused.fetch_add(1, Relaxed);
            let reason = format!("too many clients (the limit is {})", inner.config.max_clients);
            refuse(&mut conn, reason);
            return;
        }
        clients.push(slot.clone());
    }
    inner.counters.handshakes.fetch_add(1, Relaxed);
    tracing::debug!(target: "loopscope::server", client = id, peer = %peer, name = %slot.name, "client connected");
    let reader_slot = slot.clone();
    let reader_inner = inner.clone();
    if spawn(inner, format!("loopscope-client-{id}-rx"), move || read_loop(&reader_inner, &reader_slot, reader_conn))
        .is_err()
    {
        slot.close();
    }
    let why = write_loop(inner, &slot, &mut conn);
    slot.close();
    *lock(&slot.conn) = None;
    lock(&inner.clients).retain(|c| c.id != id);
    inner.counters.disconnected.fetch_add(1, Relaxed);
    tracing::debug!(target: "loopscope::server", client = id, peer = %peer, "client disconnected: {why}");
}
