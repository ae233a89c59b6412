//! What the status line shows besides the data: the source, the connection, the replay clock. A leaf, so the
//! widgets that read it never import the module that lays them out.

use loopscope_wire::state::State;
use std::time::Duration;

/// The connection, as the status line shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Trying to connect (the first time, or again after losing the app).
    Connecting,
    /// Receiving the stream.
    Connected,
    /// Lost; the data on screen is the last received. The reason, in words.
    Disconnected(String),
    /// Never connected yet: waiting for the app to start (`top` before the app). What it waits for.
    Waiting(String),
    /// Playing a recording.
    Replay,
}

/// Where a replay is.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayPosition {
    /// Position from the start of the recording.
    pub at: Duration,
    /// Length of the recording.
    pub total: Duration,
    /// Playback speed (1.0 = real time).
    pub speed: f64,
    /// Whether the end was reached.
    pub ended: bool,
}

/// Everything the widgets need besides the data and the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// What is being watched: an address or a recording's file name.
    pub source: String,
    /// The connection.
    pub connection: Connection,
    /// The replay clock, in `loopscope replay`.
    pub replay: Option<ReplayPosition>,
    /// The moment shown, nanoseconds since the Unix epoch: live stalls tick up to it.
    pub now_unix_nanos: u64,
    /// A note for the status line (for example, a damaged recording's error).
    pub note: Option<String>,
    /// The window rates are averaged over (`--refresh`): raw samples flicker.
    pub rate_window: Duration,
}

/// The default `--refresh`: rates averaged over a second.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(1);

impl Status {
    /// A status for rendering a state as of its latest sample (tests, benchmarks).
    pub fn at_latest_sample(state: &State, source: &str) -> Status {
        Status {
            source: source.to_string(),
            connection: Connection::Connected,
            replay: None,
            now_unix_nanos: state.sampled_at_unix_nanos(),
            note: None,
            rate_window: DEFAULT_RATE_WINDOW,
        }
    }
}
