//! The acceptor thread (`loopscope-serve`): takes connections and hands each to a client thread, shedding
//! connections past `max_pending` handshakes so a flood never becomes a thread flood.

use super::bind::Listener;
use super::client::serve_client;
use super::state::{Inner, spawn};
use loopscope_wire::proto::{self};
use std::io::{self};
use std::sync::Arc;
use std::sync::atomic::Ordering::*;

pub(super) fn accept_loop(inner: &Arc<Inner>, listener: Listener) {
    while !inner.stopping.load(Acquire) {
        match listener.accept() {
            Ok((conn, peer)) => {
                inner.counters.accepted.fetch_add(1, Relaxed);
                if inner.pending.load(Acquire) >= inner.config.max_pending {
                    // A connection flood must not become a thread flood: drop it unanswered.
                    inner.counters.shed.fetch_add(1, Relaxed);
                    continue;
                }
                inner.pending.fetch_add(1, AcqRel);
                let id = inner.next_id.fetch_add(1, Relaxed);
                let me = inner.clone();
                if let Err(e) =
                    spawn(inner, format!("loopscope-client-{id}"), move || serve_client(&me, id, conn, peer))
                {
                    inner.pending.fetch_sub(1, AcqRel);
                    tracing::warn!(target: "loopscope::server", "could not start a client thread: {e}");
                }
            }
            Err(e) if proto::is_timeout(&e) => std::thread::sleep(inner.config.accept_poll),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, or the like: back off rather than spin.
                tracing::debug!(target: "loopscope::server", "accept failed: {e}");
                std::thread::sleep(inner.config.accept_poll);
            }
        }
    }
}
