//! The server's public counters, as [`Agent::stream_stats`](crate::Agent::stream_stats) returns them.

use std::time::Duration;

/// Counters of one client connected to the live stream ([`Agent::stream_stats`](crate::Agent::stream_stats)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Server-assigned id, in connection order.
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// The name the client gave in its hello.
    pub name: String,
    /// Time since the handshake.
    pub connected_for: Duration,
    /// Frames written to it.
    pub frames_sent: u64,
    /// Bytes written to it.
    pub bytes_sent: u64,
    /// Frames it missed because it fell behind.
    pub dropped_frames: u64,
    /// Full states sent to it after it fell behind.
    pub resyncs: u64,
    /// Frames waiting in its queue.
    pub queued_frames: usize,
    /// Bytes waiting in its queue.
    pub queued_bytes: usize,
}

/// Counters of the live-stream server ([`Agent::stream_stats`](crate::Agent::stream_stats)). Connected
/// clients are listed; departed ones only counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Clients connected now.
    pub clients: Vec<ClientStats>,
    /// Connections accepted (before the handshake).
    pub accepted: u64,
    /// Clients that completed the handshake.
    pub handshakes: u64,
    /// Connections refused: version mismatch, too many clients.
    pub refused: u64,
    /// Connections closed for a bad handshake: not loopscope, garbage, oversized frames, silence.
    pub bad_handshakes: u64,
    /// Connections closed at once because too many handshakes were in progress.
    pub shed: u64,
    /// Clients that left after a handshake (hung up, were too slow, sent garbage, or the server stopped).
    pub disconnected: u64,
    /// Frames dropped for slow clients, over all clients (departed ones included).
    pub dropped_frames: u64,
    /// Messages not sent to anyone because they exceeded the frame limit.
    pub oversized: u64,
}
