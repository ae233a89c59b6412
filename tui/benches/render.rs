//! One dashboard frame at 100,000 live tasks (target: ≤ 10 ms), drawn into ratatui's `TestBackend` at
//! 160×48. The Tasks screen is the expensive one: it filters and orders every task for each frame.
//!
//! ```text
//! cargo bench -p loopscope-tui --bench render
//! ```

use loopscope_tui::ui::{self, Status};
use loopscope_tui::view::{Screen, SortKey, ViewState};
use loopscope_wire::proto::{
    CurrentPoll, FullState, LocationInfo, ServerMessage, TaskSample, Tick, WorkerSample, full_state_messages,
};
use loopscope_wire::state::State;
use loopscope_wire::{Location, LogHistogram, ThreadInfo};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Duration;

const TASKS: u64 = 100_000;

fn worker(index: u32, tick: u64) -> WorkerSample {
    WorkerSample {
        index,
        thread: ThreadInfo { tid: 1000 + index as i32, name: Some("tokio-runtime-worker".into()) },
        busy_nanos: tick * 100_000_000,
        poll_count: tick * 50_000,
        park_count: tick,
        noop_count: 0,
        steal_count: tick,
        overflow_count: 0,
        local_schedule_count: tick * 10,
        local_queue_depth: (tick * 7 + u64::from(index)) % 13,
        mean_poll_nanos: 2_000,
        slow_poll_count: tick,
        max_poll_nanos: 3_000_000,
        current_poll: Some(CurrentPoll { task_id: u64::from(index), location: Some(0), elapsed_nanos: 1_000 }),
    }
}

/// A runtime with 100,000 live tasks over 200 spawn locations, each task with a populated histogram, and
/// 30 s of history.
fn big_state() -> State {
    let mut state = State::new();
    let locations: Vec<LocationInfo> = (0..200)
        .map(|id| LocationInfo { id, location: Location::new(format!("src/service/handler_{id}.rs"), 40 + id, 9) })
        .collect();
    let full = FullState { locations, workers: (0..8).map(|i| worker(i, 0)).collect(), ..FullState::default() };
    let tasks = (0..TASKS)
        .map(|id| {
            let mut t = TaskSample::new(id, (id % 200) as u32);
            t.poll_count = id % 977;
            t.busy_nanos = (id * 7919) % 50_000_000;
            t.max_poll_nanos = (id * 104_729) % 20_000_000;
            t.slow_poll_count = id % 13;
            t.stall_count = u64::from(id % 5000 == 0);
            let mut h = LogHistogram::new(16);
            for k in 0..(id % 7 + 1) {
                h.record(Duration::from_nanos(1_000 << (k * 2)));
            }
            t.poll_histogram = h;
            t
        })
        .collect();
    for m in full_state_messages(full, tasks) {
        state.apply(&m);
    }
    for seq in 1..=120 {
        let tick = Tick {
            seq,
            uptime_nanos: seq * 250_000_000,
            at_unix_nanos: 1_700_000_000_000_000_000 + seq * 250_000_000,
            workers: (0..8).map(|i| worker(i, seq)).collect(),
            ..Tick::default()
        };
        state.apply(&ServerMessage::Tick(Box::new(tick)));
    }
    state
}

fn frame(state: &State, view: &ViewState, terminal: &mut Terminal<TestBackend>) {
    let status = Status::at_latest_sample(state, "bench");
    terminal
        .draw(|f| {
            ui::draw(f, state, view, &status);
        })
        .expect("TestBackend cannot fail");
}

fn main() {
    divan::main();
}

#[divan::bench(args = [Screen::Tasks, Screen::Overview, Screen::Stalls, Screen::Histograms])]
fn frame_100k_tasks(bencher: divan::Bencher<'_, '_>, screen: Screen) {
    let state = big_state();
    assert_eq!(state.tasks().len(), TASKS as usize);
    let view = ViewState { screen, ..ViewState::new() };
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("TestBackend");
    bencher.bench_local(|| frame(&state, &view, &mut terminal));
}

/// The worst case of the Tasks screen: a filter (every location name is matched) and a sort key computed
/// from each task's histogram.
#[divan::bench]
fn tasks_filtered_by_p99_100k_tasks(bencher: divan::Bencher<'_, '_>) {
    let state = big_state();
    let view =
        ViewState { screen: Screen::Tasks, filter: "handler_1".into(), sort: SortKey::P99Poll, ..ViewState::new() };
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("TestBackend");
    bencher.bench_local(|| frame(&state, &view, &mut terminal));
}
