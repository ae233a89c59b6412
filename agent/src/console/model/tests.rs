//! `model.rs`'s tests, in a file of their own to keep that one short.

use super::*;
use loopscope_wire::proto::LocationInfo;

fn tick(at_ms: u64) -> Tick {
    Tick { at_unix_nanos: 1_700_000_000_000_000_000 + at_ms * 1_000_000, ..Tick::default() }
}

#[test]
fn a_task_is_announced_once_with_its_location_and_its_stats_follow() {
    let mut m = ConsoleModel::new(&Config::default());
    let mut t = tick(0);
    t.new_locations.push(LocationInfo { id: 7, location: Location::new("src/main.rs", 12, 5) });
    let mut s = TaskSample::new(42, 7);
    s.poll_count = 3;
    s.busy_nanos = 3_000;
    t.tasks.push(s.clone());
    let first = m.delta_after(&t);
    assert_eq!(first.len(), 1);
    let meta = first[0].new_metadata.as_ref().expect("metadata before the task");
    assert_eq!(meta.metadata.len(), 1);
    let tu = first[0].task_update.as_ref().unwrap();
    assert_eq!(tu.new_tasks.len(), 1);
    let task = &tu.new_tasks[0];
    assert_eq!(task.metadata, meta.metadata[0].id);
    assert_eq!(task.location.as_ref().unwrap().file.as_deref(), Some("src/main.rs"));
    assert_eq!(tu.stats_update[&42].poll_stats.as_ref().unwrap().polls, 3);

    let mut t = tick(250);
    s.poll_count = 5;
    t.tasks.push(s);
    let second = m.delta_after(&t);
    let tu = second[0].task_update.as_ref().unwrap();
    assert!(tu.new_tasks.is_empty(), "announced once");
    assert!(second[0].new_metadata.is_none());
    let poll = tu.stats_update[&42].poll_stats.unwrap();
    assert_eq!(poll.polls, 5);
    assert!(poll.last_poll_ended.is_some() && poll.first_poll.is_some());

    let mut t = tick(500);
    t.finished.push(42);
    let third = m.delta_after(&t);
    let stats = &third[0].task_update.as_ref().unwrap().stats_update[&42];
    assert!(stats.dropped_at.is_some());
    assert!(m.tasks.is_empty() && m.finished.len() == 1);
}

#[test]
fn a_stall_reannounces_its_task_with_a_field() {
    let mut m = ConsoleModel::new(&Config::default());
    let mut ev = loopscope_wire::example_stall(1, 9, 1);
    ev.agent_task = None;
    ev.phase = StallPhase::Updated;
    ev.at_unix_nanos = tick(100).at_unix_nanos;
    m.stall(&ev);
    let d = m.delta_after(&tick(250));
    let task = &d[0].task_update.as_ref().unwrap().new_tasks[0];
    let stall = task.fields.iter().find(|f| f.name == Some(api::field::Name::StrName("loopscope.stall".into())));
    let Some(api::field::Value::StrVal(text)) = stall.and_then(|f| f.value.clone()) else {
        panic!("no stall field: {task:?}")
    };
    assert!(text.contains("still running"), "{text}");
    let poll = d[0].task_update.as_ref().unwrap().stats_update[&ev.task_id].poll_stats.unwrap();
    let time = |t: Option<prost_types::Timestamp>| t.map(|t| SystemTime::try_from(t).unwrap());
    assert!(time(poll.last_poll_started) > time(poll.last_poll_ended), "the stalled poll shows as running");
}

#[test]
fn a_task_known_only_from_its_stall_is_shown_finished_when_the_feed_never_sends_it() {
    let mut m = ConsoleModel::new(&Config::default());
    let mut ev = loopscope_wire::example_stall(1, 9, 1);
    ev.agent_task = None;
    ev.phase = StallPhase::Ended;
    ev.at_unix_nanos = tick(100).at_unix_nanos;
    m.stall(&ev);
    let mut dropped = None;
    for i in 1..=4 {
        for u in m.delta_after(&tick(100 + i * 250)) {
            if let Some(s) = u.task_update.unwrap().stats_update.get(&ev.task_id) {
                dropped = dropped.or(s.dropped_at);
            }
        }
    }
    assert!(dropped.is_some(), "shown finished");
    assert!(m.tasks.is_empty() && m.unconfirmed.is_empty());
}

#[test]
fn updates_are_split_to_stay_small() {
    let mut m = ConsoleModel::new(&Config::default());
    let mut t = tick(0);
    t.new_locations.push(LocationInfo { id: 1, location: Location::new("a.rs", 1, 1) });
    t.tasks = (1..=2500).map(|id| TaskSample::new(id, 1)).collect();
    let d = m.delta_after(&t);
    assert_eq!(d.len(), 3);
    assert!(d.iter().all(|u| u.task_update.as_ref().unwrap().new_tasks.len() <= TASKS_PER_UPDATE));
}

#[test]
fn the_histogram_is_hdr_v2() {
    let mut h = LogHistogram::new(24);
    h.record(Duration::from_micros(20));
    h.record(Duration::from_millis(30));
    let d = histogram(&h, 30_000_000).unwrap();
    let hdr: hdrhistogram::Histogram<u64> =
        hdrhistogram::serialization::Deserializer::new().deserialize(&mut d.raw_histogram.as_slice()).unwrap();
    assert_eq!(hdr.len(), 2);
}

impl ConsoleModel {
    /// The delta a connected, primed console gets for `t`.
    fn delta_after(&mut self, t: &Tick) -> Vec<Update> {
        let hub = Hub::default();
        let mut rx = hub.add_client().unwrap();
        // Prime it with whatever it is sent now, then read the next tick's batch.
        hub.publish(&[], Vec::new);
        while rx.try_recv().is_ok() {}
        self.tick(t, &hub);
        std::iter::from_fn(|| rx.try_recv().ok().map(Result::unwrap)).collect()
    }
}
