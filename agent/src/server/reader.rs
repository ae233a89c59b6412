//! A client's reader thread (`loopscope-client-N-rx`): answers pings and notices a client that hung up or
//! misbehaves.

use super::conn::Conn;
use super::queue::ClientSlot;
use super::state::Inner;
use crate::sync::lock;
use loopscope_wire::proto::{self, ClientMessage, Decoded, MAX_HANDSHAKE_FRAME_LEN, Pong, ServerFrame, ServerMessage};

/// Answers pings and notices when the client hangs up or misbehaves.
pub(super) fn read_loop(inner: &Inner, slot: &ClientSlot, mut conn: Conn) {
    let _ = conn.set_read_timeout(None);
    loop {
        // Clients send only small commands; anything big is hostile.
        match proto::read_frame(&mut conn, MAX_HANDSHAKE_FRAME_LEN) {
            Ok(Some(payload)) => match proto::decode_client(&payload) {
                Ok(Decoded::Message(ClientMessage::Ping(p))) => {
                    let Ok(pong) = ServerFrame::encode(&ServerMessage::Pong(Pong { nonce: p.nonce })) else { continue };
                    let mut q = lock(&slot.queue);
                    if q.pongs.len() < inner.config.queue_frames {
                        q.pongs.push_back(pong);
                    }
                    drop(q);
                    slot.wake.notify_all();
                }
                // Commands from a newer minor version: ignore.
                Ok(Decoded::Unknown { .. }) => {}
                Ok(Decoded::Message(other)) => {
                    tracing::debug!(target: "loopscope::server", client = slot.id, "unexpected {other:?}; closing");
                    break;
                }
                Err(e) => {
                    tracing::debug!(target: "loopscope::server", client = slot.id, "bad frame: {e}; closing");
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::trace!(target: "loopscope::server", client = slot.id, "read ended: {e}");
                break;
            }
        }
    }
    slot.close();
}
