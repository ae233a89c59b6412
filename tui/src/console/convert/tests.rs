//! The converter on updates written by hand, for the cases a live app produces only by chance: a poll
//! seen in flight over several updates, a stall's end pinned down by busy time, blocking tasks, drops.
use super::task::duration_nanos;
use super::*;
use console_api::tasks::Stats;
use console_api::tasks::TaskUpdate;
use console_api::{Field, Id, PollStats};
use loopscope_wire::state::State;

const BASE: i64 = 1_764_547_200;
const MS: u64 = 1_000_000;

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: BASE + ms / 1000, nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap() }
}

fn field(name: &str, value: Value) -> Field {
    Field { name: Some(Name::StrName(name.into())), value: Some(value), metadata_id: None }
}

fn task(span_id: u64, tokio_id: u64, line: u32, kind: &str) -> Task {
    Task {
        id: Some(Id { id: span_id }),
        metadata: None,
        kind: 0,
        fields: vec![field("task.id", Value::U64Val(tokio_id)), field("kind", Value::DebugVal(kind.into()))],
        parents: Vec::new(),
        location: Some(console_api::Location {
            file: Some("src/app.rs".into()),
            module_path: None,
            line: Some(line),
            column: Some(5),
        }),
    }
}

/// Stats with `polls` polls, the latest started (and ended) at these milliseconds, and `busy_ms` of
/// completed polls.
fn stats(polls: u64, started: Option<i64>, ended: Option<i64>, busy_ms: i64) -> Stats {
    Stats {
        created_at: Some(ts(0)),
        poll_stats: Some(PollStats {
            polls,
            first_poll: Some(ts(0)),
            last_poll_started: started.map(ts),
            last_poll_ended: ended.map(ts),
            busy_time: Some(prost_types::Duration {
                seconds: busy_ms / 1000,
                nanos: i32::try_from((busy_ms % 1000) * 1_000_000).unwrap(),
            }),
        }),
        scheduled_time: Some(prost_types::Duration { seconds: 0, nanos: 3_000_000 }),
        ..Stats::default()
    }
}

fn update(now_ms: i64, new_tasks: Vec<Task>, stats: Vec<(u64, Stats)>) -> Update {
    Update {
        now: Some(ts(now_ms)),
        task_update: Some(TaskUpdate { new_tasks, stats_update: stats.into_iter().collect(), dropped_events: 0 }),
        ..Update::default()
    }
}

/// Applies `u` received "now" (our clock 5 ms ahead of the app's) to `state`; returns the stall events.
fn feed(conv: &mut Converter, state: &mut State, u: &Update) -> Vec<StallEvent> {
    let now = u.now.as_ref().and_then(timestamp_nanos).unwrap() + 5 * i128::from(MS);
    let mut events = Vec::new();
    for m in conv.apply(u, u64::try_from(now).unwrap()) {
        if let ServerMessage::Stall(ev) = &m {
            events.push((**ev).clone());
        }
        state.apply(&m);
    }
    events
}

fn setup() -> (Converter, State) {
    let conv = Converter::new("test", Duration::from_millis(50), 1);
    let mut state = State::new();
    state.apply_hello(conv.hello());
    (conv, state)
}

#[test]
fn a_poll_in_flight_is_a_stall_at_the_update_that_shows_it_past_the_threshold_and_ends_exactly() {
    let (mut conv, mut state) = setup();
    // At 1000 ms the poll started at 980 ms is 20 ms old: not a stall yet.
    let evs = feed(
        &mut conv,
        &mut state,
        &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(3, Some(980), Some(970), 5))]),
    );
    assert!(evs.is_empty(), "{evs:?}");
    assert!(state.is_ready());
    // No new stats for it at 1100: the poll is still running (its end would have marked them changed).
    let evs = feed(&mut conv, &mut state, &update(1100, vec![], vec![]));
    assert_eq!(evs.len(), 1, "{evs:?}");
    let ev = &evs[0];
    assert_eq!((ev.phase, ev.task_id, ev.elapsed), (StallPhase::Started, 7, Duration::from_millis(120)));
    assert_eq!(ev.location, Some(Location::new("src/app.rs", 10, 5)));
    assert!(ev.caught_in_flight);
    // Shown on our clock (5 ms ahead), so the dashboard's live timer starts at the poll's real start.
    assert_eq!(ev.at_unix_nanos, u64::try_from(BASE).unwrap() * 1_000_000_000 + 1105 * MS);
    // At 1200 it is 220 ms old: past 2x the threshold, an update.
    let evs = feed(&mut conv, &mut state, &update(1200, vec![], vec![]));
    assert_eq!(evs.iter().map(|e| e.phase).collect::<Vec<_>>(), vec![StallPhase::Updated]);
    // It ended at 1250: exactly 270 ms.
    let evs = feed(&mut conv, &mut state, &update(1300, vec![], vec![(1, stats(3, Some(980), Some(1250), 275))]));
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!((evs[0].phase, evs[0].elapsed), (StallPhase::Ended, Duration::from_millis(270)));
    // Counted once, in the task's, the location's and the runtime's figures.
    let t = state.task(7).expect("task");
    assert_eq!((t.stall_count, t.max_poll_nanos, t.busy_nanos), (1, 270 * MS, 275 * MS));
    assert_eq!(state.totals().stall_count, 1);
    assert_eq!(state.locations().filter_map(|l| l.stats.as_ref()).map(|s| s.stall_count).sum::<u64>(), 1);
    assert!(feed(&mut conv, &mut state, &update(1400, vec![], vec![])).is_empty());
}

#[test]
fn a_stall_ended_by_the_next_poll_takes_its_length_from_the_busy_time_added() {
    let (mut conv, mut state) = setup();
    feed(
        &mut conv,
        &mut state,
        &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(4, Some(900), Some(890), 40))]),
    );
    // The poll from 900 ended, and the next one (polls 4 -> 5) started at 1150 and runs: 40 -> 190 ms busy,
    // so the first poll took 150 ms, not the 100 ms seen in flight.
    let evs = feed(&mut conv, &mut state, &update(1160, vec![], vec![(1, stats(5, Some(1150), Some(1050), 190))]));
    let ended: Vec<_> = evs.iter().filter(|e| e.phase == StallPhase::Ended).collect();
    assert_eq!(ended.len(), 1, "{evs:?}");
    assert_eq!(ended[0].elapsed, Duration::from_millis(150));
    // Several polls later instead: only the lower bound seen in flight is known.
    let (mut conv, mut state) = setup();
    feed(
        &mut conv,
        &mut state,
        &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(4, Some(900), Some(890), 40))]),
    );
    let evs = feed(&mut conv, &mut state, &update(1200, vec![], vec![(1, stats(9, Some(1190), Some(1180), 300))]));
    let ended: Vec<_> = evs.iter().filter(|e| e.phase == StallPhase::Ended).collect();
    assert_eq!(ended[0].elapsed, Duration::from_millis(100));
}

#[test]
fn a_completed_long_poll_is_found_once_and_blocking_tasks_and_short_polls_never() {
    let (mut conv, mut state) = setup();
    let tasks = vec![task(1, 7, 10, "task"), task(2, 8, 20, "blocking"), task(3, 9, 30, "task")];
    let evs = feed(
        &mut conv,
        &mut state,
        &update(
            1000,
            tasks,
            vec![
                // Completed between two updates: 80 ms.
                (1, stats(2, Some(700), Some(780), 81)),
                // spawn_blocking: its one "poll" is the whole closure, running for seconds.
                (2, stats(1, Some(0), None, 0)),
                // Short polls.
                (3, stats(50, Some(990), Some(991), 20)),
            ],
        ),
    );
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!((evs[0].phase, evs[0].task_id, evs[0].caught_in_flight), (StallPhase::Ended, 7, false));
    assert_eq!(evs[0].elapsed, Duration::from_millis(80));
    let evs = feed(&mut conv, &mut state, &update(5000, vec![], vec![(1, stats(2, Some(700), Some(780), 81))]));
    assert!(evs.is_empty(), "the same poll is not found twice, and blocking tasks never: {evs:?}");
    assert_eq!(state.task(9).map(|t| t.stall_count), Some(0));
}

#[test]
fn a_dropped_task_is_finished_and_its_counts_stay_with_its_location() {
    let (mut conv, mut state) = setup();
    feed(
        &mut conv,
        &mut state,
        &update(1000, vec![task(1, 7, 10, "task")], vec![(1, stats(2, Some(900), Some(901), 2))]),
    );
    let mut gone = stats(3, Some(950), Some(951), 3);
    gone.dropped_at = Some(ts(960));
    feed(&mut conv, &mut state, &update(1100, vec![], vec![(1, gone)]));
    assert!(state.task(7).is_none());
    assert_eq!(state.finished_tasks().next().map(|t| (t.id, t.poll_count)), Some((7, 3)));
    feed(
        &mut conv,
        &mut state,
        &update(1200, vec![task(2, 8, 10, "task")], vec![(2, stats(1, Some(1150), Some(1151), 1))]),
    );
    let loc = state.locations().find_map(|l| l.stats.clone()).expect("location stats");
    assert_eq!((loc.spawned_tasks, loc.live_tasks, loc.poll_count), (2, 1, 4));
    assert_eq!(state.totals().poll_count, 4);
}

#[test]
fn console_timestamps_convert_exactly_and_refuse_nonsense() {
    let t = prost_types::Timestamp { seconds: 1_764_547_200, nanos: 123_456_789 };
    assert_eq!(timestamp_nanos(&t), Some(1_764_547_200_123_456_789));
    assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: -1, nanos: 0 }), None);
    assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: 1, nanos: 1_000_000_000 }), None);
    assert_eq!(timestamp_nanos(&prost_types::Timestamp { seconds: 1, nanos: -1 }), None);
    assert_eq!(duration_nanos(&prost_types::Duration { seconds: 2, nanos: 5 }), 2_000_000_005);
    assert_eq!(duration_nanos(&prost_types::Duration { seconds: -2, nanos: 0 }), 0);
    assert_eq!(span(10, 4), 0);
}
