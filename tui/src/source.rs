//! Where the data comes from: a live agent (read on its own thread) or a recording (played on a clock).
//!
//! The live feed owns the socket on a separate thread and hands messages to the UI through a **bounded**
//! channel, so a key press never waits on the network; when the UI falls behind, the network thread waits
//! instead, and the agent (which never blocks on a client) drops frames for us and later sends a fresh full
//! state, which the dashboard counts and shows as dropped data.

use crate::console::{ConsoleEvent, FirstContact};
use loopscope_wire::client::{Client, ClientError};
use loopscope_wire::proto::{ServeAddr, ServerHello, ServerMessage};
use loopscope_wire::record::{Record, RecordError, RecordingHeader, RecordingReader};
use loopscope_wire::state::State;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many messages may wait between the network thread and the UI. A few seconds of ticks at the
/// default rate; the full-state chunks of a large app fit too.
const CHANNEL_CAPACITY: usize = 256;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a lost agent is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What the network thread tells the UI.
#[derive(Debug)]
pub enum NetEvent {
    /// A (new) connection: its greeting. A different agent than before resets the state.
    Connected(Box<ServerHello>),
    /// A message of the stream.
    Message(ServerMessage),
    /// The connection is gone (or a retry failed); the reason in words. The thread keeps retrying.
    Disconnected(String),
    /// No app has answered yet (`top` started first); what it waits for, in words. The thread keeps trying.
    Waiting(String),
}

/// A short reason for the status line.
pub fn disconnect_reason(e: &ClientError, goodbye: Option<&str>) -> String {
    match e {
        ClientError::Closed { .. } => match goodbye {
            Some(reason) => format!("the app said goodbye: {reason}"),
            None => "the app closed the connection".into(),
        },
        ClientError::Unreachable { .. } => "nothing is listening; is the app running?".into(),
        other => other.to_string(),
    }
}

/// The live stream, read on its own thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct LiveFeed {
    rx: Receiver<NetEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: ServeAddr,
    /// What the status line should say about this source (console mode's limits).
    note: Option<String>,
}

impl LiveFeed {
    /// Starts reading `client` on a new thread. The first event is always [`NetEvent::Connected`].
    pub fn start(client: Client) -> std::io::Result<LiveFeed> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let addr = client.addr().clone();
        let thread = std::thread::Builder::new().name("loopscope-net".into()).spawn({
            let stop = stop.clone();
            move || net_thread(client, &tx, &stop)
        })?;
        Ok(LiveFeed { rx, stop, thread: Some(thread), addr, note: None })
    }

    /// Waits on a new thread for an app to serve at `addr` (nothing listens there yet), then reads it as
    /// [`LiveFeed::start`] does. Until then the UI gets one [`NetEvent::Disconnected`] saying it waits.
    pub fn wait_for(addr: ServeAddr, client_name: &'static str) -> std::io::Result<LiveFeed> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("loopscope-net".into()).spawn({
            let stop = stop.clone();
            let addr = addr.clone();
            move || {
                let waiting = format!("Waiting for the app at {addr}: nothing listens there yet.");
                if !send(&tx, &stop, NetEvent::Waiting(waiting)) {
                    return;
                }
                let Some(client) = first_connection(&addr, client_name, &tx, &stop) else { return };
                net_thread(client, &tx, &stop);
            }
        })?;
        Ok(LiveFeed { rx, stop, thread: Some(thread), addr, note: None })
    }

    /// Reads the tokio-console API of an app that runs console-subscriber at `addr` on a new thread (see
    /// [`crate::console`]), flagging polls longer than `threshold`. Returns once the first connection attempt
    /// is decided, with its outcome: on [`FirstContact::Unreachable`] the thread keeps trying (the UI gets a
    /// [`NetEvent::Waiting`]) until the feed is dropped; on [`FirstContact::Failed`] it has stopped.
    pub fn console(addr: SocketAddr, threshold: Duration) -> std::io::Result<(LiveFeed, FirstContact)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("loopscope-console".into()).spawn({
            let stop = stop.clone();
            move || {
                let forward = |ev| {
                    let ev = match ev {
                        ConsoleEvent::Connected(hello) => NetEvent::Connected(hello),
                        ConsoleEvent::Message(m) => NetEvent::Message(m),
                        ConsoleEvent::Disconnected(why) => NetEvent::Disconnected(why),
                        ConsoleEvent::Waiting(what) => NetEvent::Waiting(what),
                    };
                    send(&tx, &stop, ev)
                };
                crate::console::client::run(addr, threshold, first_tx, &forward, &stop)
            }
        })?;
        let feed = LiveFeed {
            rx,
            stop,
            thread: Some(thread),
            addr: ServeAddr::Tcp(addr),
            note: Some(crate::console::CONSOLE_MODE_NOTE.to_string()),
        };
        // The thread always answers (it sends before any return); a dead thread is a failure to report.
        let first = first_rx.recv().unwrap_or_else(|_| {
            FirstContact::Failed(crate::console::ConsoleError::Lost {
                addr,
                detail: "the client thread stopped before connecting".into(),
            })
        });
        Ok((feed, first))
    }

    /// What the status line should say about this source, if anything.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The agent's address.
    pub fn addr(&self) -> &ServeAddr {
        &self.addr
    }

    /// The events waiting now, without blocking.
    pub fn try_recv(&self) -> Option<NetEvent> {
        self.rx.try_recv().ok()
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a pending send: the thread sees a closed channel.
        let (_, dummy) = std::sync::mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dummy));
        if let Some(t) = self.thread.take() {
            // The thread wakes at least every 100 ms (receive timeout); never wait long on quit.
            let deadline = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Sends unless the UI is gone; waits while the channel is full (backpressure), checking `stop`.
fn send(tx: &SyncSender<NetEvent>, stop: &AtomicBool, mut ev: NetEvent) -> bool {
    loop {
        match tx.try_send(ev) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                ev = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn net_thread(mut client: Client, tx: &SyncSender<NetEvent>, stop: &AtomicBool) {
    if !send(tx, stop, NetEvent::Connected(Box::new(client.hello().clone()))) {
        return;
    }
    let mut goodbye: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        match client.recv(Duration::from_millis(100)) {
            Ok(Some(msg)) => {
                if let ServerMessage::Goodbye(g) = &msg {
                    goodbye = Some(g.reason.clone());
                }
                if !send(tx, stop, NetEvent::Message(msg)) {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if !send(tx, stop, NetEvent::Disconnected(disconnect_reason(&e, goodbye.as_deref()))) {
                    return;
                }
                let Some(c) = reconnect(&client, tx, stop) else { return };
                client = c;
                goodbye = None;
                if !send(tx, stop, NetEvent::Connected(Box::new(client.hello().clone()))) {
                    return;
                }
            }
        }
    }
}

/// Tries every second until an agent answers at `addr`, or the UI quits (`None`). Says so when the reason it
/// cannot connect changes (something else took the port, say).
fn first_connection(
    addr: &ServeAddr,
    client_name: &str,
    tx: &SyncSender<NetEvent>,
    stop: &AtomicBool,
) -> Option<Client> {
    let mut last_reason = String::new();
    loop {
        match Client::connect_named(addr, client_name, CONNECT_TIMEOUT) {
            Ok(c) => return Some(c),
            Err(ClientError::Unreachable { .. }) => {}
            Err(e) => {
                let reason = disconnect_reason(&e, None);
                if reason != last_reason {
                    if !send(tx, stop, NetEvent::Disconnected(reason.clone())) {
                        return None;
                    }
                    last_reason = reason;
                }
            }
        }
        let next = Instant::now() + RETRY_EVERY;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Retries every second until it connects, or the UI quits (`None`).
fn reconnect(old: &Client, tx: &SyncSender<NetEvent>, stop: &AtomicBool) -> Option<Client> {
    let mut last_reason = String::new();
    loop {
        let next = Instant::now() + RETRY_EVERY;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match old.reconnect(CONNECT_TIMEOUT) {
            Ok(c) => return Some(c),
            // Something else on the port now, or another version: say so, and keep trying (the right app
            // may come back).
            Err(e) => {
                let reason = disconnect_reason(&e, None);
                if reason != last_reason {
                    if !send(tx, stop, NetEvent::Disconnected(reason.clone())) {
                        return None;
                    }
                    last_reason = reason;
                }
            }
        }
    }
}

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file cannot be opened, is not a recording, or has an unsupported version.
    #[error("cannot replay {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// What is wrong (part of the message, so not also a `#[source]`: it would print twice).
        source: RecordError,
    },
    /// The file is damaged after some good records.
    #[error(
        "cannot replay {path}: {source}; the {good} records before that point are intact (pass --allow-damaged to \
         replay them)"
    )]
    Damaged {
        /// The file.
        path: String,
        /// Records read before the damage.
        good: usize,
        /// What is wrong, and where (part of the message).
        source: RecordError,
    },
    /// The file has no records after its header.
    #[error("cannot replay {path}: {why}")]
    Empty {
        /// The file.
        path: String,
        /// Why, in words: cut short after its header, or stopped before the agent sent anything.
        why: String,
    },
}

/// A recording played back on a clock that can pause, step, seek and change speed.
#[derive(Debug)]
pub struct Replay {
    header: RecordingHeader,
    records: Vec<Record>,
    /// Records applied so far.
    next: usize,
    position: Duration,
    total: Duration,
    speed: f64,
    /// Why the recording ends early, when it does (unfinished or damaged and replayed anyway).
    note: Option<String>,
}

impl Replay {
    /// Reads a whole recording into memory. A file that lacks only its end marker (the recorder was killed)
    /// plays with a note; a truncated or corrupt file is an error unless `allow_damaged`, in which case the
    /// good records play with a note.
    pub fn load(path: &Path, allow_damaged: bool) -> Result<Replay, ReplayError> {
        let shown = path.display().to_string();
        let reader = RecordingReader::open(path).map_err(|source| ReplayError::Open { path: shown.clone(), source })?;
        Replay::from_reader(reader, &shown, allow_damaged)
    }

    /// Like [`Replay::load`], from any reader.
    pub fn from_reader<R: std::io::Read>(
        mut reader: RecordingReader<R>,
        shown: &str,
        allow_damaged: bool,
    ) -> Result<Replay, ReplayError> {
        let header = reader.header().clone();
        let mut records = Vec::new();
        let mut note = None;
        let mut ending: Option<RecordError> = None;
        for r in reader.by_ref() {
            match r {
                Ok(rec) => records.push(rec),
                Err(e) if e.is_unfinished() => {
                    note = Some("recording unfinished (recorder stopped early)".into());
                    ending = Some(e);
                }
                Err(e) if allow_damaged => {
                    note = Some(format!("damaged: {e}"));
                    ending = Some(e);
                }
                Err(source) => {
                    return Err(ReplayError::Damaged { path: shown.to_string(), good: records.len(), source });
                }
            }
        }
        if records.is_empty() {
            let why = match ending {
                // A recording is cut or killed just after its header: say that, not that the app was silent.
                Some(RecordError::Unfinished { byte, .. }) => format!(
                    "the file ends after its header (byte {byte}) with no records and no end marker: it was cut \
                     short, or the recorder was stopped before the agent sent anything"
                ),
                Some(e) => format!("nothing intact to replay: {e}"),
                None => "the recording holds no data: the recorder was stopped before the agent sent anything".into(),
            };
            return Err(ReplayError::Empty { path: shown.to_string(), why });
        }
        let total = records.last().map_or(Duration::ZERO, |r| r.offset);
        Ok(Replay { header, records, next: 0, position: Duration::ZERO, total, speed: 1.0, note })
    }

    /// A fresh state for this recording, with its greeting applied and everything up to the first full
    /// state (so the first frame is not empty).
    pub fn start(&mut self) -> State {
        let mut state = State::new();
        state.apply_hello(&self.header.hello);
        self.next = 0;
        let first_full = self.records.iter().position(|r| matches!(r.message, ServerMessage::Full(_)));
        let until = first_full.map_or(Duration::ZERO, |i| self.records[i].offset);
        self.position = until;
        self.apply_until(&mut state, until);
        // The tasks of that full state follow it immediately.
        while let Some(r) = self.records.get(self.next) {
            if !matches!(r.message, ServerMessage::FullTasks(_)) {
                break;
            }
            state.apply(&r.message);
            self.next += 1;
        }
        state
    }

    fn apply_until(&mut self, state: &mut State, until: Duration) -> bool {
        let mut any = false;
        while let Some(r) = self.records.get(self.next) {
            if r.offset > until {
                break;
            }
            state.apply(&r.message);
            self.next += 1;
            any = true;
        }
        any
    }

    /// Moves the clock forward by `real` wall time times the speed, applying what it passes. True when
    /// something was applied.
    pub fn advance(&mut self, state: &mut State, real: Duration) -> bool {
        self.position = (self.position + real.mul_f64(self.speed)).min(self.total);
        self.apply_until(state, self.position)
    }

    /// Applies records up to and including the next tick, and moves the clock there.
    pub fn step(&mut self, state: &mut State) {
        while let Some(r) = self.records.get(self.next) {
            state.apply(&r.message);
            self.position = self.position.max(r.offset);
            self.next += 1;
            if matches!(r.message, ServerMessage::Tick(_)) {
                break;
            }
        }
    }

    /// Jumps by `secs` seconds. Going back rebuilds the state from the start (states are cumulative, so
    /// there is no undo); going forward applies what it passes.
    pub fn seek(&mut self, state: &mut State, secs: i32) {
        let delta = Duration::from_secs(u64::from(secs.unsigned_abs()));
        if secs >= 0 {
            self.position = (self.position + delta).min(self.total);
            self.apply_until(state, self.position);
        } else {
            let target = self.position.saturating_sub(delta);
            *state = self.start();
            self.position = self.position.max(target);
            self.apply_until(state, self.position);
        }
    }

    /// Back to the start.
    pub fn restart(&mut self, state: &mut State) {
        *state = self.start();
    }

    /// Doubles (`faster`) or halves the speed, within 1/16× to 64×.
    pub fn change_speed(&mut self, faster: bool) {
        self.speed = if faster { self.speed * 2.0 } else { self.speed / 2.0 }.clamp(1.0 / 16.0, 64.0);
    }

    /// The position in the recording.
    pub fn position(&self) -> Duration {
        self.position
    }

    /// The recording's length.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// The playback speed.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Whether every record was applied.
    pub fn ended(&self) -> bool {
        self.next >= self.records.len()
    }

    /// The wall-clock moment the position corresponds to, nanoseconds since the Unix epoch.
    pub fn now_unix_nanos(&self) -> u64 {
        self.header.started_at_unix_nanos.saturating_add(u64::try_from(self.position.as_nanos()).unwrap_or(0))
    }

    /// The recording's header.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// A warning about the file (unfinished, or damaged and replayed anyway).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The records, for tests that stop at a chosen moment.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}
