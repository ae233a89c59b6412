//! CI-mode records: the real writer and reader, round trips, de-duplication by phase, several agents in one
//! directory, and files damaged the way a crashing process damages them.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use loopscope_wire::ci_record::{
    AgentInfo, CHECK_FORMAT, CheckRecord, CheckSummary, CheckWriter, check_dir_from_env, read_dir, read_file,
};
use loopscope_wire::{
    Classification, Culprit, CulpritSample, Frame, FrameOrigin, Location, ProbeStatus, StallEvent, StallKind,
    StallPhase, ThreadInfo, Totals,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("loopscope-wire-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn info(pid: u32, runtime_id: u64) -> AgentInfo {
    AgentInfo {
        format: CHECK_FORMAT,
        pid,
        program: "/repo/target/debug/examples/blocking_sleep".into(),
        thread: Some("main".into()),
        runtime_id,
        runtime_name: None,
        flavor: Some("multi_thread".into()),
        workers: Some(2),
        stall_threshold_nanos: 10_000_000,
        started_at_unix_nanos: 1_700_000_000_000_000_000 + u64::from(pid),
        probes: vec![ProbeStatus { name: "stack".into(), active: true, detail: "dwarf".into() }],
        missing: vec![],
        no_stall_detection: None,
    }
}

fn culprit(function: &str) -> Culprit {
    Culprit {
        classification: Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None },
        reason: "in clock_nanosleep for the whole stall".into(),
        on_cpu_ratio: Some(0.01),
        run_queue_ratio: None,
        counters: None,
        voluntary_switches: Some(1),
        involuntary_switches: None,
        samples: vec![CulpritSample {
            at_elapsed: Duration::from_millis(10),
            frames: vec![
                Frame {
                    ip: 0x1234,
                    function: Some("std::thread::sleep".into()),
                    file: None,
                    line: None,
                    origin: FrameOrigin::Std,
                    inlined: false,
                    object: None,
                },
                Frame {
                    ip: 0x5678,
                    function: Some(function.into()),
                    file: Some("/repo/examples/blocking_sleep.rs".into()),
                    line: Some(17),
                    origin: FrameOrigin::User,
                    inlined: false,
                    object: None,
                },
            ],
            symbolized: true,
            stack_error: None,
            state: Some('S'),
            syscall: Some("clock_nanosleep".into()),
            fd_target: None,
        }],
        stack_moved: Some(false),
    }
}

fn event(runtime_id: u64, stall_id: u64, phase: StallPhase, elapsed_ms: u64) -> StallEvent {
    StallEvent {
        stall_id,
        phase,
        kind: StallKind::WorkerBlocked,
        runtime_id,
        worker: Some(1),
        thread: ThreadInfo { tid: 77, name: Some("tokio-runtime-worker".into()) },
        task_id: 9,
        location: Some(Location::new("examples/blocking_sleep.rs", 66, 26)),
        elapsed: Duration::from_millis(elapsed_ms),
        threshold: Duration::from_millis(10),
        at_unix_nanos: 1_700_000_000_123_000_000,
        suppressed: 0,
        caught_in_flight: true,
        time: None,
        agent_task: None,
        culprit: Some(culprit("blocking_sleep::blocking_sleep")),
    }
}

fn summary(stall_count: u64) -> CheckSummary {
    CheckSummary {
        finished_at_unix_nanos: 1_700_000_001_000_000_000,
        totals: Totals { stall_count, poll_count: 1000, ..Totals::default() },
        ..CheckSummary::default()
    }
}

#[test]
fn a_full_file_round_trips_and_keeps_each_stalls_latest_phase() {
    let dir = TempDir::new("roundtrip");
    let mut w = CheckWriter::create(dir.path(), &info(100, 1)).unwrap();
    assert_eq!(w.path(), dir.path().join("agent-100-1.jsonl"));
    w.write_stall(&event(1, 1, StallPhase::Started, 10)).unwrap();
    w.write_stall(&event(1, 2, StallPhase::Started, 10)).unwrap();
    w.write_stall(&event(1, 1, StallPhase::Updated, 20)).unwrap();
    w.write_stall(&event(1, 1, StallPhase::Ended, 120)).unwrap();
    w.finish(&summary(2)).unwrap();
    drop(w);

    let reports = read_dir(dir.path()).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.info, info(100, 1));
    assert!(r.damage.is_empty(), "{:?}", r.damage);
    assert!(!r.is_torn());
    assert_eq!(r.stalls.len(), 2, "one entry per stall id");
    // Stall 1 ended at 120 ms; stall 2 never ended (the runtime shut down mid-stall).
    assert_eq!(r.stalls[0].last.stall_id, 1);
    assert!(r.stalls[0].ended);
    assert_eq!(r.stalls[0].last.elapsed, Duration::from_millis(120));
    assert_eq!(r.stalls[0].last, event(1, 1, StallPhase::Ended, 120), "the whole event survives JSON");
    assert_eq!(r.stalls[1].last.stall_id, 2);
    assert!(!r.stalls[1].ended);
    assert_eq!(r.finished.as_ref().unwrap().totals.stall_count, 2);
    assert_eq!(r.stall_count(), 2);
    assert_eq!(r.unlisted_stalls(), 0);
}

#[test]
fn each_line_is_one_tagged_json_object() {
    let dir = TempDir::new("lines");
    let mut w = CheckWriter::create(dir.path(), &info(101, 3)).unwrap();
    w.write_stall(&event(3, 1, StallPhase::Ended, 50)).unwrap();
    w.finish(&summary(1)).unwrap();
    let text = std::fs::read_to_string(w.path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let types: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["agent", "stall", "finished"]);
    let first: CheckRecord = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(first, CheckRecord::Agent(info(101, 3)));
    assert!(text.ends_with('\n'));
}

#[test]
fn a_process_killed_mid_line_keeps_everything_before_the_torn_line() {
    let dir = TempDir::new("torn");
    let mut w = CheckWriter::create(dir.path(), &info(102, 1)).unwrap();
    w.write_stall(&event(1, 1, StallPhase::Ended, 40)).unwrap();
    w.write_stall(&event(1, 2, StallPhase::Started, 10)).unwrap();
    let path = w.path().to_path_buf();
    drop(w);
    // What a process killed in the middle of a write leaves: half a line, no newline.
    let full = serde_json::to_string(&CheckRecord::Stall(Box::new(event(1, 2, StallPhase::Updated, 20)))).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&full.as_bytes()[..full.len() / 2])
        .unwrap();

    let r = read_file(&path).unwrap();
    assert!(r.is_torn(), "{:?}", r.damage);
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].line, 4);
    assert!(r.finished.is_none(), "the process never finished");
    assert_eq!(r.stalls.len(), 2);
    assert!(!r.stalls[1].ended, "stall 2 is still reported, from its Started event");
    assert_eq!(r.stall_count(), 2);
}

#[test]
fn a_bad_line_in_the_middle_is_damage_and_the_rest_still_reads() {
    let dir = TempDir::new("middle");
    let mut w = CheckWriter::create(dir.path(), &info(103, 1)).unwrap();
    let path = w.path().to_path_buf();
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{not json}\n\n").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"type\":\"a_record_from_a_newer_agent\",\"x\":1}\n")
        .unwrap();
    w.write_stall(&event(1, 5, StallPhase::Ended, 30)).unwrap();
    w.finish(&summary(1)).unwrap();

    let r = read_file(&path).unwrap();
    assert_eq!(r.damage.len(), 1, "{:?}", r.damage);
    assert_eq!(r.damage[0].line, 2);
    assert!(!r.damage[0].torn);
    assert!(!r.is_torn());
    assert_eq!(r.unknown_records, 1);
    assert_eq!(r.stalls.len(), 1);
    assert!(r.finished.is_some());
}

#[test]
fn a_file_without_its_first_line_takes_pid_and_runtime_from_its_name() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.path().join("agent-104-2.jsonl"), b"{\"type\":\"ag").unwrap();
    let reports = read_dir(dir.path()).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].info.pid, reports[0].info.runtime_id), (104, 2));
    assert!(reports[0].is_torn());
}

#[test]
fn many_agents_share_a_directory_and_other_files_are_ignored() {
    let dir = TempDir::new("many");
    // Two processes, one with two runtimes; agents write from their own threads at the same time.
    let threads: Vec<_> = [(200, 1), (200, 2), (201, 1)]
        .into_iter()
        .map(|(pid, rt)| {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut w = CheckWriter::create(&d, &info(pid, rt)).unwrap();
                for id in 0..50 {
                    w.write_stall(&event(rt, id, StallPhase::Started, 10)).unwrap();
                    w.write_stall(&event(rt, id, StallPhase::Ended, 15)).unwrap();
                }
                w.finish(&summary(50)).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not an agent file").unwrap();
    std::fs::create_dir(dir.path().join("agent-sub.jsonl")).unwrap();

    let reports = read_dir(dir.path()).unwrap();
    let ids: Vec<(u32, u64)> = reports.iter().map(|r| (r.info.pid, r.info.runtime_id)).collect();
    assert_eq!(ids, [(200, 1), (200, 2), (201, 1)], "ordered by start, pid, runtime");
    for r in &reports {
        assert_eq!(r.stalls.len(), 50);
        assert!(r.stalls.iter().all(|s| s.ended));
        assert!(r.damage.is_empty());
    }
}

#[test]
fn a_reused_pid_gets_a_second_file() {
    let dir = TempDir::new("reuse");
    let a = CheckWriter::create(dir.path(), &info(300, 1)).unwrap();
    let b = CheckWriter::create(dir.path(), &info(300, 1)).unwrap();
    assert_ne!(a.path(), b.path());
    assert_eq!(b.path(), dir.path().join("agent-300-1-1.jsonl"));
    assert_eq!(read_dir(dir.path()).unwrap().len(), 2);
}

#[test]
fn stalls_counted_without_events_are_unlisted() {
    let dir = TempDir::new("unlisted");
    let mut w = CheckWriter::create(dir.path(), &info(400, 1)).unwrap();
    w.write_stall(&event(1, 1, StallPhase::Ended, 30)).unwrap();
    // The rate limit suppressed the events of four more stalls; the totals still count them.
    w.finish(&summary(5)).unwrap();
    let r = read_file(w.path()).unwrap();
    assert_eq!(r.stall_count(), 5);
    assert_eq!(r.unlisted_stalls(), 4);
}

#[test]
fn a_later_phase_without_a_culprit_keeps_the_earlier_stack() {
    let dir = TempDir::new("culprit");
    let mut w = CheckWriter::create(dir.path(), &info(500, 1)).unwrap();
    w.write_stall(&event(1, 1, StallPhase::Started, 10)).unwrap();
    let mut ended = event(1, 1, StallPhase::Ended, 99);
    ended.culprit = None;
    w.write_stall(&ended).unwrap();
    let r = read_file(w.path()).unwrap();
    assert_eq!(r.stalls[0].last.elapsed, Duration::from_millis(99));
    let c = r.stalls[0].last.culprit.as_ref().unwrap();
    assert_eq!(c.first_user_frame().unwrap().function.as_deref(), Some("blocking_sleep::blocking_sleep"));
}

#[test]
fn errors_name_the_path() {
    let missing = std::env::temp_dir().join("loopscope-wire-does-not-exist-at-all");
    let e = read_dir(&missing).unwrap_err();
    assert!(e.to_string().contains("loopscope-wire-does-not-exist-at-all"), "{e}");
    let e = CheckWriter::create(&missing, &info(1, 1)).unwrap_err();
    assert!(e.to_string().contains("loopscope-wire-does-not-exist-at-all"), "{e}");
}

#[test]
fn the_env_var_is_read_only_when_not_empty() {
    // This test binary never sets the variable; the CLI's end-to-end tests cover the set case.
    if std::env::var_os(loopscope_wire::ci_record::CHECK_DIR_ENV).is_none() {
        assert_eq!(check_dir_from_env(), None);
    }
    let me = AgentInfo::for_this_process(7, Duration::from_millis(5));
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.runtime_id, 7);
    assert_eq!(me.stall_threshold(), Duration::from_millis(5));
    assert!(me.program.contains("check_records"), "{}", me.program);
    // The harness names each test's thread after the test (when it runs tests on threads of their own).
    assert!(me.thread.is_some());
}
