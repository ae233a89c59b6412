//! A client's writer loop: the full state, then its queue (pongs first), a fresh full state after it fell
//! behind, and the goodbye; and writing one frame with the client's drop count patched in.

use super::conn::Conn;
use super::queue::{ClientSlot, Phase};
use super::state::Inner;
use crate::sync::lock;
use loopscope_wire::proto::{self, ServerFrame};
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

pub(super) enum Next {
    Frame(ServerFrame),
    Full,
    Goodbye(ServerFrame),
    Done,
}

/// Sends the full state, then the queue, until the client or the server goes away. Returns why it stopped.
pub(super) fn write_loop(inner: &Inner, slot: &ClientSlot, conn: &mut Conn) -> String {
    let cfg = &inner.config;
    // Short write timeouts let a writer stuck on a client that stopped reading notice shutdown and closure.
    let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
    let mut next_full_allowed = Instant::now();
    let mut first = true;
    loop {
        let next = if first {
            first = false;
            Next::Full
        } else {
            let mut q = lock(&slot.queue);
            loop {
                if q.closed {
                    break Next::Done;
                }
                if let Some(p) = q.pongs.pop_front() {
                    break Next::Frame(p);
                }
                if q.phase == Phase::NeedsResync {
                    if let Some(bye) = q.goodbye.take() {
                        break Next::Goodbye(bye);
                    }
                    let now = Instant::now();
                    if now >= next_full_allowed {
                        q.phase = Phase::Streaming;
                        break Next::Full;
                    }
                    q = slot.wake.wait_timeout(q, next_full_allowed - now).map_or_else(|p| p.into_inner().0, |r| r.0);
                    continue;
                }
                if let Some(f) = q.frames.pop_front() {
                    q.bytes = q.bytes.saturating_sub(f.wire_len());
                    break Next::Frame(f);
                }
                if let Some(bye) = q.goodbye.take() {
                    break Next::Goodbye(bye);
                }
                q = slot.wake.wait_timeout(q, Duration::from_secs(1)).map_or_else(|p| p.into_inner().0, |r| r.0);
            }
        };
        let result = match next {
            Next::Done => return "closed".into(),
            Next::Goodbye(bye) => {
                let r = send(inner, slot, conn, &bye);
                // The reader thread keeps consuming what the client sends, so closing now is a clean FIN.
                conn.shutdown(Shutdown::Write);
                return match r {
                    Ok(()) => "goodbye sent".into(),
                    Err(e) => e,
                };
            }
            Next::Frame(f) => send(inner, slot, conn, &f),
            Next::Full => {
                next_full_allowed = Instant::now() + cfg.resync_interval;
                // Whatever is queued is older than the state about to be built, which includes it.
                let mut q = lock(&slot.queue);
                q.frames.clear();
                q.bytes = 0;
                drop(q);
                send_full(inner, slot, conn)
            }
        };
        if let Err(why) = result {
            return why;
        }
    }
}

pub(super) fn send_full(inner: &Inner, slot: &ClientSlot, conn: &mut Conn) -> Result<(), String> {
    if slot.frames_sent.load(Relaxed) > 0 {
        slot.resyncs.fetch_add(1, Relaxed);
    }
    for msg in (inner.full_state)() {
        match ServerFrame::encode(&msg) {
            Ok(f) => send(inner, slot, conn, &f)?,
            Err(e) => {
                inner.counters.oversized.fetch_add(1, Relaxed);
                tracing::warn!(target: "loopscope::server", "not sending a {} message: {e}", msg.kind());
            }
        }
    }
    Ok(())
}

/// Writes one frame, with the client's current drop count patched in. Gives up when the client hung up,
/// was closed, accepted nothing for `stuck_timeout`, or the server is stopping and the grace period passed.
pub(super) fn send(inner: &Inner, slot: &ClientSlot, conn: &mut Conn, frame: &ServerFrame) -> Result<(), String> {
    let parts = frame.parts_for(slot.version, slot.dropped.load(Relaxed));
    let total = parts.len();
    let mut done = 0;
    let mut last_progress = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    while done < total {
        let slices = parts.slices();
        let mut skip = done;
        let mut io = Vec::with_capacity(3);
        for s in slices {
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            io.push(IoSlice::new(&s[skip..]));
            skip = 0;
        }
        match conn.write_vectored(&io) {
            Ok(0) => return Err("the connection closed".into()),
            Ok(n) => {
                done += n;
                last_progress = Instant::now();
                slot.bytes_sent.fetch_add(n as u64, Relaxed);
            }
            Err(e) if proto::is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if lock(&slot.queue).closed {
                    return Err("closed while writing".into());
                }
                if last_progress.elapsed() >= inner.config.stuck_timeout {
                    return Err(format!("the client accepted nothing for {:?}", inner.config.stuck_timeout));
                }
                if inner.stopping.load(Acquire) {
                    let since = *stopping_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= inner.config.shutdown_grace {
                        return Err("the server stopped while the client was not reading".into());
                    }
                }
            }
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    slot.frames_sent.fetch_add(1, Relaxed);
    Ok(())
}
