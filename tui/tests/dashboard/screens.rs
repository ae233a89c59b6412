//! Snapshot tests of every screen, drawn with ratatui's `TestBackend` from a recording of the real demo app
//! (`tests/fixtures/demo.lsrec`), at 80×24 and 160×48.
//!
//! Regenerate the fixture (then review and accept the snapshots with `cargo insta review`):
//!
//! ```text
//! cargo test -p loopscope-tui --test dashboard -- --ignored regenerate_fixture
//! ```

use loopscope_tui::demo::{DemoApp, DemoOptions};
use loopscope_tui::source::Replay;
use loopscope_tui::ui::{self, Connection, ReplayPosition, Status};
use loopscope_tui::view::{Screen, SortKey, TaskTable, ViewState};
use loopscope_wire::StallPhase;
use loopscope_wire::client::Client;
use loopscope_wire::proto::ServerMessage;
use loopscope_wire::record::Recorder;
use loopscope_wire::state::State;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::{Duration, Instant};

use super::fixture;

/// The screen as text, one line per row, trailing spaces trimmed.
fn render(state: &State, view: &ViewState, status: &Status, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| {
        ui::draw(f, state, view, status);
    })
    .expect("draw");
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The whole recording applied.
fn state_at_end() -> (State, Status) {
    let mut r = Replay::load(&fixture(), false).expect("fixture loads");
    let mut s = r.start();
    r.advance(&mut s, r.total());
    let status = Status {
        source: "demo.lsrec".into(),
        connection: Connection::Replay,
        replay: Some(ReplayPosition { at: r.position(), total: r.total(), speed: 1.0, ended: r.ended() }),
        now_unix_nanos: s.sampled_at_unix_nanos(),
        note: None,
    };
    (s, status)
}

/// The recording applied up to the first stall event that is not its end: the moment a worker shows
/// `STALLED`.
fn state_mid_stall() -> (State, Status) {
    let r = Replay::load(&fixture(), false).expect("fixture loads");
    let mut s = State::new();
    s.apply_hello(&r.header().hello);
    let mut now = 0;
    let mut seen_stall = false;
    for rec in r.records() {
        s.apply(&rec.message);
        match &rec.message {
            ServerMessage::Stall(ev) if ev.phase != StallPhase::Ended && s.is_ready() => {
                seen_stall = true;
                // A little later than the event, as a live dashboard would show it: the timer has ticked on.
                now = ev.at_unix_nanos + 7_000_000;
                break;
            }
            _ => {}
        }
    }
    assert!(seen_stall, "the fixture must contain a stall in progress");
    (s, Status { now_unix_nanos: now, ..Status::at_latest_sample(&State::new(), "demo.lsrec") })
}

fn view(screen: Screen) -> ViewState {
    ViewState { screen, ..ViewState::new() }
}

macro_rules! snap {
    ($name:expr, $state:expr, $view:expr, $status:expr) => {
        for (w, h) in [(80u16, 24u16), (160, 48)] {
            insta::assert_snapshot!(format!("{}_{w}x{h}", $name), render($state, $view, $status, w, h));
        }
    };
}

#[test]
fn overview() {
    let (s, st) = state_at_end();
    snap!("overview", &s, &view(Screen::Overview), &st);
}

#[test]
fn overview_while_a_worker_is_stalled() {
    let (s, st) = state_mid_stall();
    let text = render(&s, &view(Screen::Overview), &st, 80, 24);
    assert!(text.contains("STALLED"), "{text}");
    snap!("overview_stalled", &s, &view(Screen::Overview), &st);
}

#[test]
fn tasks_by_task_and_by_location() {
    let (s, st) = state_at_end();
    snap!("tasks_by_task", &s, &view(Screen::Tasks), &st);
    let by_loc = ViewState { task_table: TaskTable::ByLocation, ..view(Screen::Tasks) };
    snap!("tasks_by_location", &s, &by_loc, &st);
    let filtered = ViewState {
        task_table: TaskTable::ByLocation,
        filter: "demo.rs".into(),
        sort: SortKey::Stalls,
        detail: true,
        ..view(Screen::Tasks)
    };
    snap!("tasks_by_location_filtered_detail", &s, &filtered, &st);
}

#[test]
fn stalls_log_and_detail() {
    let (s, st) = state_at_end();
    let text = render(&s, &view(Screen::Stalls), &st, 160, 48);
    assert!(text.contains("demo.rs"), "the stall's location is the demo's handler:\n{text}");
    snap!("stalls", &s, &view(Screen::Stalls), &st);
}

#[test]
fn histograms() {
    let (s, st) = state_at_end();
    snap!("histograms", &s, &view(Screen::Histograms), &st);
}

#[test]
fn help_overlay() {
    let (s, st) = state_at_end();
    let v = ViewState { help: true, ..ViewState::for_replay() };
    snap!("help", &s, &v, &st);
}

#[test]
fn disconnected_keeps_the_last_data() {
    let (s, mut st) = state_at_end();
    st.connection = Connection::Disconnected("the app closed the connection".into());
    st.replay = None;
    let text = render(&s, &view(Screen::Overview), &st, 160, 48);
    assert!(text.contains("disconnected"), "{text}");
    assert!(text.contains("Workers"), "the last data stays on screen:\n{text}");
    snap!("disconnected", &s, &view(Screen::Overview), &st);
}

/// Records the real demo app until two stalls have ended (with their culprits) and at least twelve ticks
/// arrived. Run by hand, see the module docs.
#[test]
#[ignore = "regenerates tests/fixtures/demo.lsrec from a live demo app"]
fn regenerate_fixture() {
    let app = DemoApp::start(&DemoOptions { serve: "127.0.0.1:0".into(), workers: 4 }).expect("demo starts");
    let addr = app.agent_addr().expect("agent serves");
    let mut client = Client::connect(&addr, Duration::from_secs(5)).expect("connect");
    let path = fixture();
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create fixture"));
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    let mut rec = Recorder::with_name(file, client.hello(), started as u64, "loopscope tests").expect("recorder");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut ended, mut ticks) = (0, 0);
    while Instant::now() < deadline && (ended < 2 || ticks < 12) {
        let Some((msg, payload)) = client.recv_raw(Duration::from_millis(100)).expect("stream") else { continue };
        match &msg {
            ServerMessage::Tick(_) => ticks += 1,
            ServerMessage::Stall(ev) if ev.phase == StallPhase::Ended && ev.culprit.is_some() => ended += 1,
            _ => {}
        }
        rec.write_payload(&payload).expect("write");
    }
    rec.finish().expect("finish");
    drop(app);
    assert!(ended >= 2, "the demo produced {ended} stalls in a minute");
}
