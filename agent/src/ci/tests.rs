//! Reports from real checks and from hand-made stalls: what counts, what is exempt, and how it reads.

use super::report::allowed_by;
use super::*;
use loopscope_wire::ci_record::AllowList;
use loopscope_wire::{Location, ThreadInfo};
use loopscope_wire::{StallEvent, StallKind, StallPhase, StallTime};
use std::time::Duration;

fn ev(file: &str, line: u32) -> StallEvent {
    StallEvent {
        stall_id: 1,
        phase: StallPhase::Ended,
        kind: StallKind::WorkerBlocked,
        runtime_id: 1,
        worker: Some(0),
        thread: ThreadInfo { tid: 1, name: None },
        task_id: 3,
        location: Some(Location::new(file, line, 5)),
        elapsed: Duration::from_millis(30),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 0,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: None,
    }
}

#[test]
fn allow_list_by_spawn_location() {
    let e = ev("/home/x/src/legacy.rs", 42);
    let spawn = |a: &str| AllowList { spawn: vec![a.into()], functions: vec![] };
    assert_eq!(allowed_by(&e, &spawn("src/legacy.rs")).as_deref(), Some("allow_spawn \"src/legacy.rs\""));
    assert!(allowed_by(&e, &spawn("src/legacy.rs:42")).is_some());
    assert!(allowed_by(&e, &spawn("src/legacy.rs:43")).is_none());
    assert!(allowed_by(&e, &spawn("src/other.rs")).is_none());
}

#[test]
fn report_counts_and_formats() {
    let check = Check::new().max_poll(Duration::from_millis(10)).allow_spawn("legacy.rs");
    let stalls = vec![
        CheckedStall { event: ev("src/a.rs", 1), allowed_by: None, delayed_by_os: false },
        CheckedStall { event: ev("src/legacy.rs", 2), allowed_by: Some("allow_spawn".into()), delayed_by_os: false },
    ];
    let r = Report { max_poll: check.max_poll, max_stalls: 0, count_preemption: false, stalls, unlisted: 0 };
    assert_eq!(r.violations(), 1);
    assert!(!r.passed());
    let text = r.to_string();
    assert!(text.contains("1 poll held a worker thread longer than max_poll = 10ms"), "{text}");
    assert!(text.contains("task 3 spawned at src/a.rs:1:5, on worker 0"), "{text}");
    assert!(text.contains("1 stall(s) exempted by the allow-list"), "{text}");
    let tolerant = Report { max_stalls: 1, ..r };
    assert!(tolerant.passed());
}

#[test]
fn polls_delayed_by_the_os_are_listed_apart_and_count_only_when_asked() {
    let ms = Duration::from_millis;
    let mut preempted = ev("src/busy.rs", 7);
    preempted.elapsed = ms(22);
    preempted.time = Some(StallTime {
        wall: ms(22),
        on_cpu: ms(2),
        off_cpu: Duration::ZERO,
        run_queue: ms(19),
        unmeasured: ms(1),
        estimated: false,
    });
    let mut own = ev("src/loopscope/sampler.rs", 1);
    own.agent_task = Some("timer-lateness probe".into());
    let max_poll = ms(10);
    let stalls: Vec<_> = [preempted, own]
        .into_iter()
        .map(|e| CheckedStall { delayed_by_os: e.delayed_by_os(max_poll), event: e, allowed_by: None })
        .collect();
    let r = Report { max_poll, max_stalls: 0, count_preemption: false, stalls, unlisted: 0 };
    assert!(r.passed(), "{r}");
    assert_eq!(r.delayed_by_os().count(), 1);
    let text = r.to_string();
    assert!(text.contains("1 poll was delayed by the OS, not by its code"), "{text}");
    assert!(text.contains("waiting for a CPU 19.0ms of 22.0ms, own time 3.0ms"), "{text}");
    assert!(text.contains("1 stall(s) of loopscope's own tasks"), "{text}");
    let strict = Report { count_preemption: true, ..r };
    assert_eq!(strict.violations(), 1, "wall-time verdicts count the OS's delay, never loopscope's tasks");
}
