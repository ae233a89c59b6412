//! The `Probes` facade: snapshots and diagnoses of whole threads, and what is left with every probe off.
//! Split out of `main.rs`.

use super::*;

#[test]
fn sampler_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<loopscope_probes::stack::StackSampler>();
    assert_send_sync::<Probes>();
    assert_send_sync::<loopscope_probes::stack::Symbolizer>();
}

#[test]
fn capture_of_own_thread() {
    let sampler = sampler();
    let raw = sampler.capture(current_tid(), CAPTURE_TIMEOUT).unwrap();
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(has_function(&frames, "capture_of_own_thread"), "stack: {:#?}", names(&frames));
}

#[test]
fn forgotten_and_exited_threads() {
    let sampler = sampler();
    let mut tids = Vec::new();
    for _ in 0..20 {
        let t = Target::spawn("short-lived", |stop| {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        sampler.prepare_thread(t.tid).unwrap();
        assert!(sampler.is_prepared(t.tid));
        tids.push(t.tid);
        t.stop();
    }
    for &tid in &tids {
        // The slot is still there, but the thread is gone: tgkill says ESRCH.
        let err = sampler.capture(tid, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(err, CaptureError::NoSuchThread { .. }), "capture of exited thread {tid}: {err:?}");
        sampler.forget_thread(tid);
        assert!(!sampler.is_prepared(tid));
        sampler.forget_thread(tid); // harmless twice
    }
    // Unprepared and exited: preparing fails, so the table never fills up with dead threads.
    assert!(matches!(sampler.prepare_thread(tids[0]), Err(loopscope_probes::ProbeError::NoSuchThread { .. })));
    assert!(!sampler.is_prepared(tids[0]));
    for bogus in [-5, -1, 0] {
        assert!(matches!(sampler.prepare_thread(bogus), Err(loopscope_probes::ProbeError::NoSuchThread { .. })));
        assert!(!sampler.is_prepared(bogus));
        assert!(matches!(sampler.capture(bogus, Duration::from_millis(100)), Err(CaptureError::NoSuchThread { .. })));
    }
    assert!(matches!(sampler.capture(i32::MAX, Duration::from_millis(100)), Err(CaptureError::NoSuchThread { .. })));
}

#[test]
fn facade_snapshot_and_diagnosis() {
    let probes = Probes::new(ProbeConfig::default());
    let statuses = probes.status();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "stack",
        "stack-running",
        "symbolizer",
        "thread-state",
        "syscall",
        "cpu-time",
        "irq-time",
        "perf:task-clock",
        "perf:page-faults",
        "perf:context-switches",
        "perf:cycles",
        "perf:instructions",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    for s in &statuses {
        assert!(!s.detail.is_empty(), "{s:?}");
    }
    for always in ["stack", "thread-state", "syscall", "cpu-time"] {
        let s = statuses.iter().find(|s| s.name == always).unwrap();
        assert!(s.active, "{s:?}");
    }

    let t = Target::spawn("diagnosed", sleep_here);
    probes.prepare_thread(t.tid).unwrap();
    probes.prepare_thread(t.tid).unwrap(); // idempotent
    wait_for_sample(t.tid, "sleeping", |s| is_sleeping_in(s, "clock_nanosleep"));
    let first = probes.snapshot(t.tid, Some(CAPTURE_TIMEOUT));
    std::thread::sleep(Duration::from_millis(30)); // measurement window
    let last = probes.snapshot(t.tid, Some(CAPTURE_TIMEOUT));
    assert!(first.stack.as_ref().unwrap().is_ok());
    let diagnosis = probes.diagnose(&first, &last);
    assert_eq!(diagnosis.thread_name.as_deref(), Some("diagnosed"));
    assert!(has_function(&diagnosis.frames, "sleep_here"));
    let verdict = diagnosis.verdict.unwrap();
    assert!(
        matches!(&verdict.classification, Classification::Syscall { name, .. } if name == "clock_nanosleep"),
        "{verdict:?}"
    );
    let task_clock_active = statuses.iter().any(|s| s.name == "perf:task-clock" && s.active);
    if task_clock_active {
        assert!(diagnosis.perf_delta.unwrap().task_clock.is_some());
    }
    probes.forget_thread(t.tid);
    t.stop();
}

#[test]
fn facade_with_probes_disabled() {
    let probes = Probes::new(ProbeConfig { stacks: false, perf: false, ..ProbeConfig::default() });
    assert!(probes.sampler().is_none());
    for s in probes.status() {
        if s.name.starts_with("stack") || s.name == "symbolizer" || s.name.starts_with("perf:") {
            assert!(!s.active, "{s:?}");
            assert_eq!(s.detail, "disabled by configuration");
        } else if s.name == "irq-time" {
            // A fact about the kernel, not a probe that configuration turns off.
            assert!(!s.detail.is_empty(), "{s:?}");
        } else {
            assert!(s.active, "{s:?}");
        }
    }
    let me = current_tid();
    probes.prepare_thread(me).unwrap();
    assert!(matches!(probes.prepare_thread(i32::MAX), Err(loopscope_probes::ProbeError::NoSuchThread { .. })));
    let snapshot = probes.snapshot(me, Some(CAPTURE_TIMEOUT));
    assert!(snapshot.stack.is_none() && snapshot.perf.is_none());
    assert_eq!(snapshot.sample.as_ref().unwrap().state, RunState::Running);
    let diagnosis = probes.diagnose(&snapshot, &snapshot);
    assert!(diagnosis.frames.is_empty());
    assert!(diagnosis.verdict.is_some());
}
