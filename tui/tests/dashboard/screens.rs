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
        rate_window: ui::DEFAULT_RATE_WINDOW,
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
        match stall_event(&rec.message) {
            Some(ev) if ev.phase != StallPhase::Ended && s.is_ready() => {
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
        match (&msg, stall_event(&msg)) {
            (ServerMessage::Tick(_), _) => ticks += 1,
            (_, Some(ev)) if ev.phase == StallPhase::Ended && ev.culprit.is_some() => ended += 1,
            _ => {}
        }
        rec.write_payload(&payload).expect("write");
    }
    rec.finish().expect("finish");
    drop(app);
    assert!(ended >= 2, "the demo produced {ended} stalls in a minute");
}

/// Draws like the app does: the frame's report goes back into the view (selections follow their items).
fn draw_and_sync(state: &State, view: &mut ViewState, status: &Status, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let mut drawn = None;
    t.draw(|f| drawn = Some(ui::draw(f, state, view, status))).expect("draw");
    view.clamp(drawn.expect("drawn"));
    render(state, view, status, w, h)
}

#[test]
fn the_selected_stall_stays_selected_when_a_newer_one_arrives() {
    let r = Replay::load(&fixture(), false).expect("fixture loads");
    let mut s = State::new();
    s.apply_hello(&r.header().hello);
    let records = r.records();
    // Up to the first stall's end: one stall in the log.
    let first_end = records
        .iter()
        .position(|rec| stall_event(&rec.message).is_some_and(|ev| ev.phase == StallPhase::Ended))
        .expect("a stall ends in the fixture");
    for rec in &records[..=first_end] {
        s.apply(&rec.message);
    }
    let mut v = view(Screen::Stalls);
    let st = Status::at_latest_sample(&s, "demo.lsrec");
    let before = draw_and_sync(&s, &mut v, &st, 160, 48);
    let selected = v.stalls.id.expect("a stall is selected");
    assert!(before.contains(&format!(" Stall {selected} ")), "{before}");
    // The rest of the recording: a newer stall goes on top of the list, above the selected one.
    for rec in &records[first_end + 1..] {
        s.apply(&rec.message);
    }
    assert!(s.stalls().count() >= 2, "the fixture has a second stall");
    let after = draw_and_sync(&s, &mut v, &st, 160, 48);
    assert_eq!(v.stalls.id, Some(selected), "the selection moved to another stall");
    assert_eq!(v.stalls.selected, 1, "the selected stall is now the second row");
    assert!(after.contains(&format!(" Stall {selected} ")), "the detail shows another stall:\n{after}");
}

#[test]
fn a_stalling_task_counts_its_poll_in_progress() {
    let (s, st) = state_mid_stall();
    let text = render(&s, &view(Screen::Tasks), &st, 160, 48);
    let row = text.lines().find(|l| l.contains('▶')).unwrap_or_else(|| panic!("no task marked as polling:\n{text}"));
    assert!(!row.contains(" 0ns "), "the stalled task reads as idle: {row}");
    assert!(row.contains("17.0ms"), "its poll in progress (17 ms so far) counts: {row}");
    snap!("tasks_while_a_task_is_stalled", &s, &view(Screen::Tasks), &st);
}

#[test]
fn finished_tasks_are_marked_and_toggle() {
    let (s, st) = state_at_end();
    let shown = render(&s, &view(Screen::Tasks), &st, 160, 48);
    assert!(shown.contains("358✓"), "the task that stalled and finished is listed, marked:\n{shown}");
    // Wide enough for the name column: fed by the function the stall found (the wire has no task names yet).
    let row = shown.lines().find(|l| l.contains("358✓")).unwrap_or_default();
    assert!(row.contains("demo::blocking_sleep"), "{row}");
    let hidden = ViewState { finished: false, ..view(Screen::Tasks) };
    let text = render(&s, &hidden, &st, 160, 48);
    assert!(!text.contains('✓'), "{text}");
    assert!(text.contains("(f shows 42 finished)"), "{text}");
    // The detail of the task that stalled and ended (first by poll time): its stall counts, marked as such.
    let detail = ViewState { detail: true, ..view(Screen::Tasks) };
    let text = render(&s, &detail, &st, 160, 48);
    assert!(text.contains("task 358  finished"), "{text}");
    snap!("tasks_detail_of_a_finished_task", &s, &detail, &st);
}

#[test]
fn every_sort_column_shows_its_marker() {
    let (s, st) = state_at_end();
    for table in [TaskTable::ByTask, TaskTable::ByLocation] {
        let mut v = ViewState { task_table: table, ..view(Screen::Tasks) };
        for _ in 0..8 {
            for (w, h) in [(80, 24), (160, 48)] {
                let text = render(&s, &v, &st, w, h);
                let header = text.lines().nth(4).unwrap_or_default();
                let marker = if v.descending { '▼' } else { '▲' };
                assert!(
                    header.contains(marker),
                    "{table:?} sorted by {:?} at {w}x{h}: no marker in {header:?}",
                    v.sort
                );
            }
            v.sort = v.sort.next();
            v.descending = v.sort.default_descending();
        }
    }
}

#[test]
fn a_small_terminal_says_what_it_hides() {
    let (s, st) = state_at_end();
    let overview = render(&s, &view(Screen::Overview), &st, 40, 12);
    assert!(overview.contains("  3 "), "the workers come before the queues:\n{overview}");
    let overview = render(&s, &view(Screen::Overview), &st, 40, 9);
    assert!(overview.contains("+2 more"), "hidden workers are counted:\n{overview}");
    let tasks = render(&s, &view(Screen::Tasks), &st, 40, 12);
    assert!(tasks.contains("cols ▶"), "hidden columns are counted:\n{tasks}");
    let scrolled = ViewState { hscroll: 6, ..view(Screen::Tasks) };
    let text = render(&s, &scrolled, &st, 40, 12);
    assert!(text.contains("stall"), "scrolled to the last column:\n{text}");
    for (name, v) in
        [("overview", view(Screen::Overview)), ("tasks", view(Screen::Tasks)), ("tasks_scrolled", scrolled)]
    {
        insta::assert_snapshot!(format!("{name}_40x12"), render(&s, &v, &st, 40, 12));
    }
    insta::assert_snapshot!("overview_40x9", render(&s, &view(Screen::Overview), &st, 40, 9));
}

/// The stall event a message reports: whole (the fixture, protocol 2.1) or as a part (a fixture regenerated
/// with protocol 3.2). A part's event carries the phase and times; its samples need the state to rebuild.
fn stall_event(msg: &ServerMessage) -> Option<&loopscope_wire::StallEvent> {
    match msg {
        ServerMessage::Stall(ev) => Some(ev),
        ServerMessage::StallPart(p) => Some(&p.event),
        _ => None,
    }
}
