//! `loopscope top --console` against real apps instrumented with console-subscriber 0.5, in this process: the
//! converter flags a task that blocks its worker (with its spawn location) and not a clean one; the real binary
//! shows it in a pseudo-terminal and says what console mode lacks; a server that is not a console server is
//! one clear line; and an app that runs both console-subscriber and the loopscope agent serves a console-api
//! client and a loopscope client at once.
//!
//! One console server per process (console-subscriber's layer is part of the global tracing subscriber), so the
//! apps share it: each test looks only at the tasks spawned at its own locations.

use console_api::instrument::Update;
use loopscope_tui::console::{Converter, Watch};
use loopscope_wire::Location;
use loopscope_wire::client::Client;
use loopscope_wire::state::State;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing_subscriber::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_loopscope");

/// The threshold the tests use: far above a clean poll even on a loaded machine (where the OS may hold a
/// worker thread off its CPU for tens of milliseconds mid-poll), well below the blocker's polls.
const THRESHOLD: Duration = Duration::from_millis(100);

/// How long the blocking tasks block per poll.
const BLOCK: Duration = Duration::from_millis(200);

/// The console server of this process: console-subscriber's layer installed once, publishing every 100 ms
/// (rather than every second) so the tests see polls soon. Returns its address.
fn console_addr() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        // console-subscriber binds its own listener: find it a free loopback port (freed just before it binds).
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port").local_addr().expect("addr").port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let layer = console_subscriber::ConsoleLayer::builder()
            .server_addr(addr)
            .publish_interval(Duration::from_millis(100))
            .spawn();
        tracing_subscriber::registry().with(layer).init();
        addr
    })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A task that blocks its worker with `std::thread::sleep` at every poll.
async fn blocker() {
    loop {
        std::thread::sleep(BLOCK);
        tokio::task::yield_now().await;
    }
}

/// A task whose polls take microseconds.
async fn clean() {
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Spawns `fut` on `rt` and returns where tokio records it was spawned (the caller's line).
#[track_caller]
fn spawn_here<F>(rt: &tokio::runtime::Runtime, fut: F) -> Location
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    drop(rt.spawn(fut));
    Location::from_std(std::panic::Location::caller())
}

/// The app of the console-only tests: console-subscriber and nothing else, a blocking and a clean task.
struct ConsoleApp {
    _runtime: tokio::runtime::Runtime,
    blocker: Location,
    clean: Location,
}

fn console_app() -> &'static ConsoleApp {
    static APP: OnceLock<ConsoleApp> = OnceLock::new();
    APP.get_or_init(|| {
        console_addr();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let blocker = spawn_here(&runtime, blocker());
        let clean = spawn_here(&runtime, clean());
        ConsoleApp { _runtime: runtime, blocker, clean }
    })
}

/// The converter on a real console stream, feeding a dashboard `State`, until `done` says so or the deadline.
/// Returns the state; the stream stays open until then.
fn watch_console(within: Duration, mut done: impl FnMut(&State) -> bool) -> State {
    let addr = console_addr();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    rt.block_on(async move {
        let deadline = Instant::now() + within;
        // The server starts on console-subscriber's own thread: retry until it listens.
        let mut watch = loop {
            match Watch::open(addr).await {
                Ok(w) => break w,
                Err(e) => {
                    assert!(Instant::now() < deadline, "the console server never answered: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut conv = Converter::new(&addr.to_string(), THRESHOLD, unix_now());
        let mut state = State::new();
        state.apply_hello(conv.hello());
        let mut update: Option<Update> = Some(watch.first().clone());
        loop {
            if let Some(u) = update.take() {
                for m in conv.apply(&u, unix_now()) {
                    state.apply(&m);
                }
            }
            if done(&state) {
                return state;
            }
            assert!(Instant::now() < deadline, "gave up after {within:?}; stalls: {:?}", stall_locations(&state));
            update = watch.next(Duration::from_millis(100), addr).await.expect("the console stream stays up");
        }
    })
}

fn stall_locations(state: &State) -> Vec<String> {
    state.stalls().map(|e| e.latest.location.as_ref().map_or("?".into(), ToString::to_string)).collect()
}

fn stalls_at(state: &State, at: &Location) -> usize {
    state.stalls().filter(|e| e.latest.location.as_ref() == Some(at)).count()
}

fn task_at<'a>(state: &'a State, at: &Location) -> Option<&'a loopscope_wire::proto::TaskSample> {
    state.tasks().values().find(|t| state.task_location(t) == Some(at))
}

#[test]
fn the_blocking_task_is_flagged_with_its_spawn_location_and_the_clean_one_is_not() {
    let app = console_app();
    let state = watch_console(Duration::from_secs(20), |s| {
        // Two stalls of the blocker, and the clean task polled many times meanwhile.
        stalls_at(s, &app.blocker) >= 2 && task_at(s, &app.clean).is_some_and(|t| t.poll_count >= 20)
    });
    let stall = state.stalls().find(|e| e.latest.location.as_ref() == Some(&app.blocker)).expect("a stall");
    let ev = &stall.latest;
    assert!(ev.elapsed >= THRESHOLD, "{ev:?}");
    assert!(ev.elapsed < 2 * BLOCK || !stall.ended, "one poll, not several: {ev:?}");
    assert!(ev.culprit.as_ref().is_some_and(|c| c.classification == loopscope_wire::Classification::Unknown));
    assert!(ev.culprit.as_ref().is_some_and(|c| c.frames().is_empty()), "console mode has no stacks");
    assert_eq!(stalls_at(&state, &app.clean), 0, "the clean task is never flagged: {:?}", stall_locations(&state));
    let blocked = task_at(&state, &app.blocker).expect("the blocker is listed");
    assert!(blocked.stall_count >= 1 && blocked.busy() >= BLOCK, "{blocked:?}");
    let clean = task_at(&state, &app.clean).expect("the clean task is listed");
    assert_eq!(clean.stall_count, 0);
    assert!(clean.max_poll_nanos < THRESHOLD.as_nanos() as u64, "{clean:?}");
    // The header's figures: tasks and stalls counted, no workers (console does not say which thread polls).
    assert!(state.totals().stall_count >= 2);
    assert_eq!(state.workers().count(), 0);
    assert!(state.hello().is_some_and(|h| h.capabilities.missing.iter().any(|m| m.contains("no stacks"))));
}

/// The binary run to completion: (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN).args(args).output().expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_clear_line(code: i32, stderr: &str, expected: &str) {
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("loopscope: ") && stderr.contains(expected), "expected {expected:?} in {stderr:?}");
}

#[test]
fn what_is_not_a_console_server_is_one_clear_line() {
    // Nothing listens (with --no-wait).
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("port").local_addr().expect("addr");
    let (code, err) = run(&["top", "--console", &free.to_string(), "--no-wait"]);
    assert_one_clear_line(code, &err, "nothing is listening");
    // Something that answers garbage and hangs up.
    let garbage = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("port");
    let g_addr = garbage.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in garbage.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\nnot grpc\n");
        }
    });
    let (code, err) = run(&["top", "--console", &g_addr.to_string()]);
    assert_one_clear_line(code, &err, "is not a tokio-console server");
    // A bad address.
    let (code, err) = run(&["top", "--console", "nowhere:port"]);
    assert_one_clear_line(code, &err, "not a console address");
}

#[test]
fn the_dashboard_shows_the_console_apps_stall_and_what_console_mode_lacks() {
    let app = console_app();
    let addr = console_addr().to_string();
    let (cols, rows) = (160, 45);
    let pty = native_pty_system().openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("pty");
    let mut cmd = CommandBuilder::new(BIN);
    cmd.args(["top", "--console", &addr, "--max-poll", "100ms"]);
    cmd.env("TERM", "xterm-256color");
    let mut child = pty.slave.spawn_command(cmd).expect("spawn the dashboard");
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().expect("reader");
    let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
    let feed = screen.clone();
    let master = pty.master;
    std::thread::spawn(move || {
        let _master = master;
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            feed.lock().expect("parser").process(&buf[..n]);
        }
    });
    let file = app.blocker.file.rsplit('/').next().unwrap_or_default().to_string();
    let needle = format!("{file}:{}", app.blocker.line);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = screen.lock().expect("parser").screen().contents();
        if text.contains("console mode") && text.contains(&needle) {
            break text;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the stall at {needle} and the console-mode note did not appear; screen:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    assert!(text.contains("no stacks, classification or probes"), "{text}");
}

#[test]
fn an_app_with_console_subscriber_and_loopscope_serves_both_clients_at_once() {
    console_addr();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    let agent = loopscope::Agent::builder()
        .serve("127.0.0.1:0")
        .ignore_env()
        .stall_threshold(THRESHOLD)
        .sample_interval(Duration::from_millis(100))
        .tracing(false)
        .install(&mut builder)
        .expect("the agent installs next to console-subscriber");
    let runtime = builder.build().expect("runtime");
    let blocker_at = spawn_here(&runtime, blocker());
    // loopscope's own client attaches first and stays attached while the console client watches.
    let agent_addr = agent.serve_addr().expect("the agent serves");
    let mut ls = Client::connect(&agent_addr, Duration::from_secs(3)).expect("the loopscope client attaches");
    let ls_state = Arc::new(Mutex::new(State::new()));
    ls_state.lock().expect("state").apply_hello(ls.hello());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let ls_state = ls_state.clone();
        let stop = stop.clone();
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match ls.recv(Duration::from_millis(100)) {
                    Ok(Some(m)) => ls_state.lock().expect("state").apply(&m),
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }
    });
    // Done when each client has the stall, while both are attached (the agent counts its client).
    let console_state = watch_console(Duration::from_secs(20), |s| {
        stalls_at(s, &blocker_at) >= 1
            && stalls_at(&ls_state.lock().expect("state"), &blocker_at) >= 1
            && agent.stream_clients() == 1
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().expect("reader").expect("the loopscope stream stayed up while the console client watched");
    let ls_state = ls_state.lock().expect("state");
    // The agent's stall has what console mode lacks: the thread, and (probes permitting) a culprit.
    let ev = &ls_state.stalls().find(|e| e.latest.location.as_ref() == Some(&blocker_at)).expect("agent stall").latest;
    assert!(ev.thread.tid != 0, "{ev:?}");
    assert!(stalls_at(&console_state, &blocker_at) >= 1);
    runtime.shutdown_timeout(Duration::from_secs(2));
}
