//! The handshake: the agent's greeting, the client's hello within a deadline, and refusals that say why.

use super::conn::{Conn, DeadlineReader, refuse};
use super::state::Inner;
use crate::sync::lock;
use loopscope_wire::proto::{self, PROTOCOL_VERSION, ProtoError, ProtocolVersion};
use std::io::Write;
use std::sync::atomic::Ordering::*;
use std::time::Instant;

/// Greets the client and reads its hello. Returns the client's name, or `None` after refusing or dropping it.
pub(super) fn handshake(inner: &Inner, conn: &mut Conn, peer: &str) -> Option<(String, ProtocolVersion)> {
    let cfg = &inner.config;
    let until = Instant::now() + cfg.handshake_timeout;
    if conn.set_write_timeout(Some(cfg.handshake_timeout)).is_err() {
        return None;
    }
    if lock(&inner.clients).len() >= cfg.max_clients {
        inner.counters.refused.fetch_add(1, Relaxed);
        let _ = conn.write_all(&proto::preamble(PROTOCOL_VERSION));
        refuse(conn, format!("too many clients (the limit is {})", cfg.max_clients));
        return None;
    }
    let greeting = lock(&inner.greeting).clone();
    if conn.write_all(&greeting).is_err() {
        inner.counters.bad_handshakes.fetch_add(1, Relaxed);
        return None;
    }
    let result = proto::read_client_handshake(&mut DeadlineReader { conn: &mut *conn, until });
    match result {
        Ok((version, hello)) => {
            // Bounded: the hello frame is at most MAX_HANDSHAKE_FRAME_LEN, but a name is for logs.
            let name: String = hello.client_name.chars().take(200).collect();
            tracing::trace!(target: "loopscope::server", peer, %version, "handshake");
            Some((name, version))
        }
        Err(ProtoError::VersionMismatch { local, remote }) => {
            inner.counters.refused.fetch_add(1, Relaxed);
            let reason = format!(
                "protocol version mismatch: the agent speaks loopscope protocol {local}, this client speaks \
                 {remote}; the major versions must match (upgrade the older of the two)"
            );
            refuse(conn, reason);
            None
        }
        Err(e) => {
            inner.counters.bad_handshakes.fetch_add(1, Relaxed);
            tracing::debug!(target: "loopscope::server", peer, "closing a connection with a bad handshake: {e}");
            None
        }
    }
}
