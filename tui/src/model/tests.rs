use super::*;
use loopscope_wire::proto::{FullState, LocationInfo, ServerMessage, Tick, full_state_messages};

#[test]
fn durations_counts_and_rates_read_well() {
    assert_eq!(fmt_nanos(850), "850ns");
    assert_eq!(fmt_nanos(12_345), "12.3µs");
    assert_eq!(fmt_nanos(4_500_000), "4.50ms");
    assert_eq!(fmt_nanos(1_234_000_000), "1.23s");
    assert_eq!(fmt_duration(Duration::from_secs(123)), "2m03s");
    assert_eq!(fmt_duration(Duration::from_secs(7300)), "2h01m");
    assert_eq!(fmt_count(9_999), "9999");
    assert_eq!(fmt_count(12_345), "12.3k");
    assert_eq!(fmt_count(4_560_000), "4560k");
    assert_eq!(fmt_count(45_600_000), "45.6M");
    assert_eq!(fmt_rate(0.0), "0");
    assert_eq!(fmt_rate(12.54), "12.5");
    assert_eq!(fmt_rate(f64::NAN), "0");
    assert_eq!(fmt_rate(12_300.0), "12.3k");
}

#[test]
fn sparkline_scales_and_right_aligns() {
    let v = [0.0, 1.0, 2.0, 4.0];
    assert_eq!(sparkline(v.iter().copied(), 6, 0.0), "  ▁▃▅█");
    assert_eq!(sparkline(v.iter().copied(), 2, 0.0), "▅█", "keeps the newest values");
    assert_eq!(sparkline([0.0, 0.0].iter().copied(), 2, 1.0), "▁▁");
    assert_eq!(sparkline([1.0].iter().copied(), 1, 8.0), "▂", "the floor keeps small values small");
}

fn state_with_tasks(n: u64) -> State {
    let mut s = State::new();
    let full = FullState {
        locations: vec![
            LocationInfo { id: 0, location: Location::new("src/handlers.rs", 10, 5) },
            LocationInfo { id: 1, location: Location::new("src/db.rs", 20, 9) },
        ],
        ..FullState::default()
    };
    let tasks = (0..n)
        .map(|id| {
            let mut t = TaskSample::new(id, (id % 2) as u32);
            t.busy_nanos = (id * 7919) % 1000;
            t.poll_count = id;
            t
        })
        .collect();
    for m in full_state_messages(full, tasks) {
        s.apply(&m);
    }
    s
}

#[test]
fn task_window_matches_a_full_sort_and_filters_by_location_or_id() {
    let s = state_with_tasks(1000);
    let mut all: Vec<&TaskSample> = s.tasks().values().collect();
    all.sort_by(|a, b| b.busy_nanos.cmp(&a.busy_nanos).then(a.id.cmp(&b.id)));
    let none = TaskScope::default();
    let mut order = TaskOrder::new(&s, "", SortKey::Busy, true, &none);
    assert_eq!(order.len(), 1000);
    let ids = |v: &[TaskRow<'_>]| v.iter().map(|t| t.task.id).collect::<Vec<_>>();
    let all_ids = |v: &[&TaskSample]| v.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&order.window(0, 10)), all_ids(&all[0..10]));
    assert_eq!(order.position(all[500].id), Some(500));
    assert_eq!(ids(&order.window(500, 7)), all_ids(&all[500..507]));
    assert_eq!(order.window(999, 10).len(), 1);
    assert!(order.window(2000, 10).is_empty());

    let mut db = TaskOrder::new(&s, "DB.rs", SortKey::Polls, false, &none);
    assert_eq!(db.len(), 500);
    assert_eq!(ids(&db.window(0, 3)), vec![1, 3, 5]);
    let by_id = TaskOrder::new(&s, "999", SortKey::Polls, false, &none);
    assert_eq!(by_id.len(), 1);
}

#[test]
fn finished_tasks_are_listed_when_asked_and_a_running_poll_counts() {
    let mut s = state_with_tasks(3);
    let mut t = Tick { seq: 1, uptime_nanos: 250_000_000, finished: vec![2], ..Tick::default() };
    t.tasks = vec![];
    s.apply(&ServerMessage::Tick(Box::new(t)));
    let ids = |o: &mut TaskOrder<'_>| o.window(0, 10).iter().map(|r| (r.task.id, r.finished)).collect::<Vec<_>>();
    let none = TaskScope::default();
    let mut live = TaskOrder::new(&s, "", SortKey::Name, false, &none);
    assert_eq!(ids(&mut live), vec![(0, false), (1, false)]);
    let scope = TaskScope { finished: true, in_flight: vec![(1, Duration::from_millis(40))], unsampled: vec![] };
    let mut all = TaskOrder::new(&s, "", SortKey::Name, false, &scope);
    assert_eq!(ids(&mut all), vec![(0, false), (1, false), (2, true)]);
    assert_eq!(all.live(), 2);
    // Task 1 is 40 ms into a poll: it counts, and sorts it first by busy time.
    let mut busy = TaskOrder::new(&s, "", SortKey::Busy, true, &scope);
    let first = busy.window(0, 1)[0];
    assert_eq!(first.task.id, 1);
    assert_eq!(first.polls(), 2);
    assert_eq!(first.max_poll_nanos(), 40_000_000);
    assert_eq!(busy.position(1), Some(0));
}

#[test]
fn a_finished_task_takes_its_stall_from_the_log() {
    use loopscope_wire::{StallEvent, StallPhase, ThreadInfo};
    let mut s = state_with_tasks(1);
    let ev = StallEvent {
        stall_id: 1,
        phase: StallPhase::Ended,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 1, name: None },
        task_id: 9,
        location: None,
        elapsed: Duration::from_millis(130),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 1,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: None,
    };
    s.apply(&ServerMessage::Stall(Box::new(ev)));
    // The agent sent task 9 while its poll ran (0 polls), then only its id as finished.
    let t = Tick { seq: 1, uptime_nanos: 250_000_000, tasks: vec![TaskSample::new(9, 0)], ..Tick::default() };
    s.apply(&ServerMessage::Tick(Box::new(t)));
    let t = Tick { seq: 2, uptime_nanos: 500_000_000, finished: vec![9], ..Tick::default() };
    s.apply(&ServerMessage::Tick(Box::new(t)));
    let scope = TaskScope { finished: true, ..TaskScope::default() };
    let mut o = TaskOrder::new(&s, "", SortKey::Stalls, true, &scope);
    let r = o.window(0, 1)[0];
    assert_eq!((r.task.id, r.finished), (9, true));
    assert_eq!((r.polls(), r.busy_nanos(), r.max_poll_nanos(), r.stall_count()), (1, 130_000_000, 130_000_000, 1));
    assert!(r.includes_unsampled());
}

#[test]
fn rates_are_averaged_over_the_window() {
    let mut s = State::new();
    for (i, polls) in [0u64, 1000, 1000, 3000, 3000].into_iter().enumerate() {
        let i = i as u64;
        let mut t = Tick { seq: i + 1, uptime_nanos: i * 250_000_000, ..Tick::default() };
        t.totals.poll_count = polls;
        s.apply(&ServerMessage::Tick(Box::new(t)));
    }
    // Per 250 ms sample: 4000/s, 0, 8000/s, 0 — it flickers; over a second it is 3000/s.
    assert_eq!(window_samples(&s, Duration::from_secs(1)), 4);
    assert_eq!(header_stats(&s, Duration::from_secs(1)).polls_per_second, 3000.0);
    assert_eq!(header_stats(&s, Duration::from_millis(250)).polls_per_second, 0.0);
    assert_eq!(fmt_window(&s, Duration::from_secs(1)), "1s avg");
    assert_eq!(fmt_window(&s, Duration::from_millis(100)), "per 250ms sample");
}

#[test]
fn locations_sort_with_names_breaking_ties() {
    let s = state_with_tasks(4);
    let rows = location_rows(&s, "", SortKey::Name, false);
    let names: Vec<String> = rows.iter().map(|r| r.location.to_string()).collect();
    assert_eq!(names, vec!["src/db.rs:20:9", "src/handlers.rs:10:5"]);
    assert_eq!(location_rows(&s, "handlers", SortKey::Busy, true).len(), 1);
}

#[test]
fn header_sums_what_was_dropped() {
    let mut s = state_with_tasks(1);
    let mut t = Tick { seq: 5, uptime_nanos: 1_000_000_000, ..Tick::default() };
    t.dropped.untracked_tasks = 3;
    s.apply(&ServerMessage::Tick(Box::new(t)));
    let h = header_stats(&s, Duration::from_secs(1));
    // Ticks 1..=4 never arrived.
    assert_eq!(h.dropped_total, 3 + 4);
    assert_eq!(h.dropped_detail, vec!["3 untracked tasks".to_string(), "4 missed ticks".to_string()]);
}

#[test]
fn shown_buckets_cover_the_data_and_a_minimum() {
    let mut h = LogHistogram::new(16);
    h.record(Duration::from_micros(3));
    h.record(Duration::from_millis(3));
    let r = shown_buckets(&h, 4);
    assert_eq!(r, 2..13);
    assert_eq!(shown_buckets(&LogHistogram::new(16), 6), 0..6);
    let mut one = LogHistogram::new(16);
    one.record(Duration::from_secs(10));
    assert_eq!(shown_buckets(&one, 4), 12..16);
    assert_eq!(bucket_label(&h, 0), "<1.02µs");
    assert_eq!(bucket_label(&h, 15), "≥16.8ms");
}

#[test]
fn short_locations_keep_two_path_components() {
    assert_eq!(short_location(&Location::new("/home/me/app/src/main.rs", 3, 4)), "src/main.rs:3:4");
    assert_eq!(short_location(&Location::new("main.rs", 3, 4)), "main.rs:3:4");
    assert_eq!(short_location(&Location::new("tui/src/demo.rs", 3, 4)), "src/demo.rs:3:4", "as frames show it");
}

/// Issue 14 item 5: the agent's per-task histograms now reach seconds, so a task's stalls of 50 ms and 300 ms
/// land in buckets of their own and its p99 reads a value, where every stall used to fall into `≥16.8ms` and
/// p99 read `>16.8ms`. Histograms from older agents (16 buckets, in recordings) still read as they did.
#[test]
fn per_task_histograms_reach_seconds_and_p99_reads_a_value() {
    let mut h = LogHistogram::new(loopscope_wire::TASK_HISTOGRAM_BUCKETS);
    for _ in 0..50 {
        h.record(Duration::from_micros(20));
    }
    h.record(Duration::from_millis(50));
    h.record(Duration::from_millis(300));
    let b50 = LogHistogram::bucket_index(50_000_000, h.counts.len());
    let b300 = LogHistogram::bucket_index(300_000_000, h.counts.len());
    assert_ne!(b50, b300, "50 ms and 300 ms told apart");
    assert_eq!((bucket_label(&h, b50), bucket_label(&h, b300)), ("33.6ms".to_string(), "268ms".to_string()));
    assert_eq!(bucket_label(&h, h.counts.len() - 1), "≥1.07s");
    // p99 of 52 polls is the slowest one: the bucket's bound, capped by the known maximum.
    assert_eq!(fmt_p99(&h, 300_000_000), "300ms");
    let mut old = LogHistogram::new(16);
    old.record(Duration::from_millis(50));
    old.record(Duration::from_millis(300));
    assert_eq!(fmt_p99(&old, 300_000_000), ">16.8ms", "an old recording says what it can");
}
