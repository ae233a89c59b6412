//! The interactive loop: terminal setup and restore, input, feeding the state, drawing.
//!
//! Input is read with a short poll timeout and handled before any data, and data is applied within a time
//! budget per frame, so the dashboard answers keys even while a large app floods it.

use crate::source::{LiveFeed, NetEvent, Replay};
use crate::terminal::{InputReady, TerminalInput};
use crate::ui::{self, Connection, ReplayPosition, Status};
use crate::view::{Action, ReplayCommand, ViewState};
use loopscope_wire::state::State;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::{cursor, execute};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the dashboard's data comes from.
#[derive(Debug)]
pub enum Driver {
    /// A running app.
    Live(LiveFeed),
    /// A recording.
    Replay(Box<Replay>),
}

/// Restores the terminal when dropped, whichever way the dashboard ends (return, error, or panic: the
/// panic hook that `ratatui::try_init` installs restores it before the message is printed).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
        let _ = execute!(std::io::stdout(), cursor::Show);
    }
}

/// The signal that set the [`termination_flag`], if one did (SIGINT 2, SIGHUP 1, SIGTERM 15).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signal that asked this process to stop, if any.
pub fn termination_signal() -> Option<i32> {
    Some(SIGNAL.load(Ordering::Relaxed)).filter(|&s| s != 0)
}

/// Sets the returned flag when the process gets SIGINT, SIGTERM or SIGHUP, so that the dashboard (and
/// `record`) stop cleanly and restore the terminal instead of dying in raw mode. The signal is kept for
/// [`termination_signal`].
pub fn termination_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    // A tiny runtime of its own: the demo's runtime is the app being watched and must not run our tasks.
    let spawned = std::thread::Builder::new().name("loopscope-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().build() else { return };
        rt.block_on(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let kinds = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()];
                let (tx, mut rx) = tokio::sync::mpsc::channel::<i32>(1);
                for kind in kinds {
                    let Ok(mut s) = signal(kind) else { continue };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        s.recv().await;
                        let _ = tx.send(kind.as_raw_value()).await;
                    });
                }
                if let Some(sig) = rx.recv().await {
                    SIGNAL.store(sig, Ordering::Relaxed);
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            set.store(true, Ordering::Relaxed);
        });
    });
    if spawned.is_err() {
        // Without the thread, signals keep their default action; the dashboard still works.
    }
    flag
}

/// How long the dashboard may take to stop after a signal before the process exits without it.
const STOP_GRACE: Duration = Duration::from_millis(800);

/// A backstop for the rule that a signal always ends the dashboard: if the loop has not returned
/// [`STOP_GRACE`] after SIGINT/SIGTERM/SIGHUP (it is stuck, say in a read of a dead terminal), this thread
/// restores what it can of the terminal and exits the process, which also stops an embedded demo app.
/// Dropping the returned guard (the loop ended) disarms it.
fn arm_stop_backstop(stop: Arc<AtomicBool>) -> impl Drop {
    struct Disarm(Arc<AtomicBool>);
    impl Drop for Disarm {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done = Arc::new(AtomicBool::new(false));
    let seen_done = done.clone();
    let _ = std::thread::Builder::new().name("loopscope-stop-backstop".into()).spawn(move || {
        // Polls two flags; a wake-up every 50 ms costs nothing next to the dashboard's own loop.
        while !stop.load(Ordering::Relaxed) {
            if seen_done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if seen_done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
        std::process::exit(128 + termination_signal().unwrap_or(15));
    });
    Disarm(done)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// How long applying data may hold up one frame.
const DATA_BUDGET: Duration = Duration::from_millis(30);
/// Redraw at least this often, so that live stall timers tick.
const REDRAW_EVERY: Duration = Duration::from_millis(200);

/// Runs the dashboard until the user quits, a signal stops it or its terminal goes away. `source` names what
/// is watched (address or file); rates on screen are averaged over `rate_window` (`--refresh`).
pub fn run(driver: Driver, source: String, rate_window: Duration) -> anyhow::Result<()> {
    let stop = termination_flag();
    let input = TerminalInput::open()?;
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    // Clicks select rows and tabs, the wheel scrolls (as in htop and k9s).
    execute!(std::io::stdout(), EnableMouseCapture)?;
    let _backstop = arm_stop_backstop(stop.clone());
    let mut last_size = terminal.size()?;
    let mut input_stuck = false;
    let mut driver = driver;
    let mut view = match driver {
        Driver::Live(_) => ViewState::new(),
        Driver::Replay(_) => ViewState::for_replay(),
    };
    let mut state = match &mut driver {
        Driver::Live(_) => State::new(),
        Driver::Replay(r) => r.start(),
    };
    let mut connection = match driver {
        Driver::Live(_) => Connection::Connecting,
        Driver::Replay(_) => Connection::Replay,
    };
    // Live pause: the state on screen is a frozen copy while the real one keeps up with the stream.
    let mut frozen: Option<(State, u64)> = None;
    // When the app went away, stall timers stop at the last moment we heard from it.
    let mut last_heard = unix_now();
    let mut last_draw: Option<Instant> = None;
    let mut last_clock = Instant::now();
    let mut dirty = true;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if dirty || last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY) {
            let (shown, now) = match &frozen {
                Some((s, at)) => (s, *at),
                None => {
                    let now = match (&driver, &connection) {
                        (Driver::Replay(r), _) => r.now_unix_nanos(),
                        (Driver::Live(_), Connection::Connected) => unix_now(),
                        (Driver::Live(_), _) => last_heard,
                    };
                    (&state, now)
                }
            };
            let status = Status {
                source: source.clone(),
                connection: connection.clone(),
                replay: match &driver {
                    Driver::Replay(r) => {
                        Some(ReplayPosition { at: r.position(), total: r.total(), speed: r.speed(), ended: r.ended() })
                    }
                    Driver::Live(_) => None,
                },
                now_unix_nanos: now,
                note: match &driver {
                    Driver::Replay(r) => r.note().map(str::to_string),
                    Driver::Live(feed) => feed.note().map(str::to_string),
                },
                rate_window,
            };
            let mut drawn = None;
            terminal.draw(|f| drawn = Some(ui::draw(f, shown, &view, &status)))?;
            if let Some(d) = drawn {
                view.clamp(d);
            }
            last_draw = Some(Instant::now());
            dirty = false;
        }
        // Input first, and never blocked by data: wait at most a short while for a key. The kernel is asked
        // first (see `terminal`): crossterm reads only a terminal that has input and has not hung up.
        let ready = if input_stuck {
            input.wait_for_hang_up(Duration::from_millis(50))
        } else {
            input.wait(Duration::from_millis(50))
        };
        if ready == InputReady::Gone {
            return Ok(());
        }
        // crossterm is asked every time, not only when keys wait: it also reports resizes (SIGWINCH), and one
        // left pending until a key arrives would be returned in the key's place, and the key (whose readiness
        // crossterm's edge-triggered poll has then consumed) not read until the next one.
        let mut events = 0;
        while event::poll(Duration::ZERO)? {
            events += 1;
            match event::read()? {
                Event::Key(k) => {
                    dirty = true;
                    match view.handle_key(k) {
                        Action::None => {}
                        Action::Quit => return Ok(()),
                        Action::TogglePause => {
                            view.paused = !view.paused;
                            if let Driver::Live(_) = driver {
                                frozen = view.paused.then(|| (state.clone(), unix_now()));
                            }
                        }
                        Action::Replay(cmd) => {
                            if let Driver::Replay(r) = &mut driver {
                                match cmd {
                                    ReplayCommand::Step => {
                                        view.paused = true;
                                        r.step(&mut state);
                                    }
                                    ReplayCommand::Seek(s) => r.seek(&mut state, s),
                                    ReplayCommand::Faster => r.change_speed(true),
                                    ReplayCommand::Slower => r.change_speed(false),
                                    ReplayCommand::Restart => r.restart(&mut state),
                                }
                            }
                        }
                    }
                }
                Event::Mouse(m) => {
                    dirty = true;
                    view.handle_mouse(m);
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        // Keys are waiting that crossterm did not read (it lost their readiness, see above): it reads them when
        // the next key arrives. Until then wait for a hang-up only, or this loop would spin.
        input_stuck = ready == InputReady::Input && events == 0;
        // Resizes also show in the size itself, whenever crossterm reports them.
        let size = terminal.size()?;
        if size != last_size {
            last_size = size;
            dirty = true;
        }
        // Then data.
        let elapsed = last_clock.elapsed();
        last_clock = Instant::now();
        match &mut driver {
            Driver::Live(feed) => {
                let budget = Instant::now() + DATA_BUDGET;
                while Instant::now() < budget {
                    let Some(ev) = feed.try_recv() else { break };
                    dirty = true;
                    match ev {
                        NetEvent::Connected(hello) => {
                            state.apply_hello(&hello);
                            connection = Connection::Connected;
                        }
                        NetEvent::Message(m) => {
                            state.apply(&m);
                            last_heard = unix_now();
                        }
                        NetEvent::Disconnected(why) => connection = Connection::Disconnected(why),
                        NetEvent::Waiting(what) => connection = Connection::Waiting(what),
                    }
                }
            }
            Driver::Replay(r) => {
                if !view.paused && !r.ended() {
                    dirty |= r.advance(&mut state, elapsed);
                }
            }
        }
    }
    Ok(())
}
