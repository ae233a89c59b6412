//! The client state from hand-made streams: ticks, full states, resets, bounds.

use super::*;
use crate::proto::{CurrentPoll, FullTasks, Goodbye, LocationInfo, full_state_messages};
use crate::{StallKind, ThreadInfo};

fn worker(index: u32, busy_ms: u64, polls: u64, queue: u64) -> WorkerSample {
    WorkerSample {
        index,
        thread: ThreadInfo { tid: 100 + index as i32, name: Some("tokio-runtime-worker".into()) },
        busy_nanos: busy_ms * 1_000_000,
        poll_count: polls,
        park_count: 0,
        noop_count: 0,
        steal_count: 0,
        overflow_count: 0,
        local_schedule_count: 0,
        local_queue_depth: queue,
        mean_poll_nanos: 0,
        slow_poll_count: 0,
        max_poll_nanos: 0,
        current_poll: Some(CurrentPoll { task_id: 1, location: Some(0), elapsed_nanos: 5 }),
    }
}

fn stall(id: u64, phase: StallPhase, elapsed_ms: u64) -> StallEvent {
    StallEvent {
        stall_id: id,
        phase,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 1, name: None },
        task_id: 7,
        location: None,
        elapsed: Duration::from_millis(elapsed_ms),
        threshold: Duration::from_millis(10),
        at_unix_nanos: elapsed_ms,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: None,
    }
}

fn tick(seq: u64, uptime_ms: u64) -> Tick {
    Tick { seq, uptime_nanos: uptime_ms * 1_000_000, ..Tick::default() }
}

fn apply_tick(s: &mut State, t: Tick) {
    s.apply(&ServerMessage::Tick(Box::new(t)));
}

#[test]
fn worker_histories_and_rates() {
    let mut s = State::new();
    let full = FullState { workers: vec![worker(0, 0, 0, 0)], ..FullState::default() };
    for m in full_state_messages(full, vec![]) {
        s.apply(&m);
    }
    assert!(s.is_ready());
    let mut t = tick(1, 250);
    t.workers = vec![worker(0, 125, 1000, 3)];
    apply_tick(&mut s, t);
    let mut t = tick(2, 500);
    t.workers = vec![worker(0, 375, 1500, 9)];
    apply_tick(&mut s, t);
    let w = s.worker(0).unwrap();
    assert_eq!(w.local_queue.to_vec(), vec![3, 9]);
    assert_eq!(w.busy_ratio.to_vec(), vec![0.5, 1.0]);
    assert_eq!(w.polls_per_second.to_vec(), vec![4000.0, 2000.0]);
    assert_eq!(s.stream().ticks, 2);
    assert_eq!(s.stream().missed_ticks, 0);
}

#[test]
fn histories_are_bounded() {
    let mut s = State::with_limits(StateLimits { history: 5, ..StateLimits::default() });
    for i in 1..=50u64 {
        let mut t = tick(i, i * 250);
        t.workers = vec![worker(0, i, i, i)];
        t.global.global_queue_depth = i;
        apply_tick(&mut s, t);
    }
    assert_eq!(s.worker(0).unwrap().local_queue.to_vec(), vec![46, 47, 48, 49, 50]);
    assert_eq!(s.global_queue_history().len(), 5);
    assert_eq!(s.polls_per_second_history().len(), 5);
}

#[test]
fn stale_ticks_are_ignored_and_gaps_counted() {
    let mut s = State::new();
    let full = FullState { uptime_nanos: 1_000_000_000, tick_seq: 4, ..FullState::default() };
    for m in full_state_messages(full, vec![TaskSample::new(1, 0)]) {
        s.apply(&m);
    }
    let mut old = tick(4, 900);
    old.finished = vec![1];
    apply_tick(&mut s, old);
    assert_eq!(s.stream().stale_ticks, 1);
    assert!(s.task(1).is_some(), "a stale tick must not change anything");
    apply_tick(&mut s, tick(7, 1_750));
    assert_eq!(s.stream().missed_ticks, 2);
}

#[test]
fn tasks_finish_and_state_stays_bounded() {
    let limits = StateLimits { max_tasks: 10, max_finished: 3, max_locations: 2, ..StateLimits::default() };
    let mut s = State::with_limits(limits);
    let mut t = tick(1, 250);
    t.tasks = (0..100).map(|id| TaskSample::new(id, 0)).collect();
    t.new_locations = (0..5).map(|id| LocationInfo { id, location: Location::new("a.rs", id, 1) }).collect();
    apply_tick(&mut s, t);
    assert_eq!(s.tasks().len(), 10);
    assert_eq!(s.state_dropped().tasks, 90);
    assert_eq!(s.location_count(), 2);
    assert_eq!(s.state_dropped().locations, 3);
    let mut t = tick(2, 500);
    t.finished = (0..10).collect();
    let mut last = TaskSample::new(3, 0);
    last.state = TaskState::Finished;
    last.poll_count = 99;
    t.tasks = vec![last];
    apply_tick(&mut s, t);
    assert!(s.tasks().is_empty());
    let finished: Vec<u64> = s.finished_tasks().map(|t| t.id).collect();
    assert_eq!(finished, vec![9, 8, 7]);
    // The final counters of task 3 were applied before it left (it was evicted from the short ring).
    assert_eq!(s.state_dropped().tasks, 90);
}

#[test]
fn stalls_merge_by_id_newest_first_and_bounded() {
    let mut s = State::with_limits(StateLimits { max_stalls: 2, ..StateLimits::default() });
    s.apply(&ServerMessage::Stall(Box::new(stall(1, StallPhase::Started, 10))));
    s.apply(&ServerMessage::Stall(Box::new(stall(1, StallPhase::Updated, 20))));
    s.apply(&ServerMessage::Stall(Box::new(stall(2, StallPhase::Started, 10))));
    s.apply(&ServerMessage::Stall(Box::new(stall(1, StallPhase::Ended, 33))));
    let log: Vec<(u64, bool, u32)> = s.stalls().map(|e| (e.latest.stall_id, e.ended, e.events)).collect();
    assert_eq!(log, vec![(2, false, 1), (1, true, 3)]);
    // Stall 1's end is counted once, in the bucket of 33 ms (past the per-task histograms' last bucket).
    assert_eq!(s.stall_histogram().count(), 1);
    assert_eq!(s.stall_histogram().counts[LogHistogram::bucket_index(33_000_000, s.stall_histogram().counts.len())], 1);
    assert_eq!(s.stalls().nth(1).unwrap().latest.elapsed, Duration::from_millis(33));
    // A late copy (from a full state) does not reopen an ended stall, nor count it again.
    s.apply(&ServerMessage::Stall(Box::new(stall(1, StallPhase::Updated, 40))));
    s.apply(&ServerMessage::Stall(Box::new(stall(1, StallPhase::Ended, 33))));
    assert!(s.stalls().nth(1).unwrap().ended);
    assert_eq!(s.stall_histogram().count(), 1);
    s.apply(&ServerMessage::Stall(Box::new(stall(3, StallPhase::Started, 10))));
    assert_eq!(s.stalls().map(|e| e.latest.stall_id).collect::<Vec<_>>(), vec![3, 2]);
    assert_eq!(s.state_dropped().stalls_evicted, 1);
}

#[test]
fn stalls_per_minute_from_totals() {
    let mut s = State::new();
    for i in 0..=240u64 {
        let mut t = tick(i + 1, i * 250);
        t.totals.stall_count = i / 4; // one stall per second
        apply_tick(&mut s, t);
    }
    assert!((s.stalls_per_minute() - 60.0).abs() < 1.5, "{}", s.stalls_per_minute());
}

#[test]
fn resync_keeps_histories_and_replaces_tasks() {
    let mut s = State::new();
    let mut t = tick(1, 250);
    t.workers = vec![worker(0, 100, 10, 1)];
    t.tasks = vec![TaskSample::new(1, 0), TaskSample::new(2, 0)];
    apply_tick(&mut s, t);
    let full = FullState {
        uptime_nanos: 2_000_000_000,
        workers: vec![worker(0, 900, 90, 4)],
        client_dropped_frames: 12,
        ..FullState::default()
    };
    s.apply(&ServerMessage::Full(Box::new(FullState { task_count: 1, ..full })));
    assert!(!s.is_ready());
    s.apply(&ServerMessage::FullTasks(FullTasks { tasks: vec![TaskSample::new(2, 0)] }));
    assert!(s.is_ready());
    assert_eq!(s.tasks().keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(s.worker(0).unwrap().local_queue.to_vec(), vec![1]);
    assert_eq!(s.stream().client_dropped_frames, 12);
    s.apply(&ServerMessage::Goodbye(Goodbye { reason: "bye".into() }));
    assert_eq!(s.stream().goodbye.as_deref(), Some("bye"));
}
