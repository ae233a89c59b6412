//! Degradation: perf denied by a seccomp policy (in a child process, since a seccomp filter cannot be removed),
//! and hardware counters missing on a machine without a PMU. In both cases the other probes keep working and
//! the status explains why perf is off.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use loopscope_probes::thread::RunState;
use loopscope_probes::{ProbeConfig, ProbeStatus, Probes};

const CHILD_ENV: &str = "LOOPSCOPE_PROBES_SECCOMP_CHILD";
const CHILD_OK: &str = "SECCOMP-CHILD-OK";

/// Makes `perf_event_open` fail with `EPERM` for this thread and the threads it creates later, like Docker's
/// default seccomp profile does.
fn deny_perf_event_open() {
    loopscope_probes::sandbox::deny_perf_event_open().expect("install the seccomp filter");
}

fn find<'a>(statuses: &'a [ProbeStatus], name: &str) -> &'a ProbeStatus {
    statuses.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no status {name} in {statuses:#?}"))
}

#[inline(never)]
fn spin_in_child(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    x
}

#[inline(never)]
fn sleep_in_child(stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child half of `perf_denied_by_seccomp_degrades`; does nothing unless started by it.
#[test]
fn seccomp_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    deny_perf_event_open();
    // SAFETY: a perf_event_open call with a null attr pointer; seccomp answers before the kernel reads it.
    let rc = unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::null::<u8>(), 0, -1, -1, 0) };
    assert_eq!(rc, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));

    let probes = Probes::new(ProbeConfig::default());
    let statuses = probes.status();
    for s in &statuses {
        println!("{:<24} {:<5} {}", s.name, s.active, s.detail);
    }
    for counter in ["task-clock", "page-faults", "context-switches", "cycles", "instructions"] {
        let s = find(&statuses, &format!("perf:{counter}"));
        assert!(!s.active, "{s:?}");
        assert!(s.detail.contains("denied"), "{s:?}");
        assert!(s.detail.contains("EPERM"), "{s:?}");
    }
    for name in ["stack", "symbolizer", "thread-state", "syscall", "cpu-time"] {
        assert!(find(&statuses, name).active, "{:?}", find(&statuses, name));
    }
    // Without perf, running threads are captured with the signal again, and the status says what that risks.
    let running = find(&statuses, "stack-running");
    assert!(
        !running.active && running.detail.contains("not permitted") && running.detail.contains("EINTR"),
        "{running:?}"
    );
    let spinner = Target::spawn("child-spinner", spin_in_child);
    wait_for_sample(spinner.tid, "spinning", |s| s.state == RunState::Running);
    let raw = probes.sampler().unwrap().capture(spinner.tid, CAPTURE_TIMEOUT).unwrap();
    assert_eq!(raw.method, loopscope_probes::stack::CaptureMethod::Signal);
    spinner.stop();

    // The other probes really work.
    let t = Target::spawn("child-sleeper", sleep_in_child);
    probes.prepare_thread(t.tid).unwrap();
    wait_for_sample(t.tid, "sleeping", |s| s.state == RunState::Sleeping);
    let snapshot = probes.snapshot(t.tid, Some(CAPTURE_TIMEOUT));
    assert!(snapshot.perf.is_none(), "no perf counters were opened");
    let sample = snapshot.sample.as_ref().unwrap();
    assert!(sample.cpu_time.is_some());
    let diagnosis = probes.diagnose(&snapshot, &snapshot);
    assert!(has_function(&diagnosis.frames, "sleep_in_child"), "{:#?}", names(&diagnosis.frames));
    assert!(diagnosis.verdict.is_some());
    t.stop();
    println!("{CHILD_OK}");
}

#[test]
fn perf_denied_by_seccomp_degrades() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "seccomp_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(CHILD_OK), "child did not run the check:\n{stdout}\n{stderr}");
}

#[test]
fn missing_hardware_counters_are_reported_not_fatal() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let probes = Probes::new(ProbeConfig::default());
    let statuses = probes.status();
    for s in &statuses {
        println!("{:<24} {:<5} {}", s.name, s.active, s.detail);
    }
    for counter in ["cycles", "instructions"] {
        let s = find(&statuses, &format!("perf:{counter}"));
        // On this project's VMs (no PMU) the kernel answers ENOENT; on bare metal the counter works.
        assert!(s.active || s.detail.starts_with("no PMU") || s.detail.starts_with("denied"), "{s:?}");
    }
    let task_clock = find(&statuses, "perf:task-clock");
    assert!(task_clock.active || task_clock.detail.starts_with("denied"), "{task_clock:?}");
    // Whatever perf says, stacks and /proc sampling are on.
    assert!(find(&statuses, "stack").active);
    assert!(find(&statuses, "thread-state").active);
    // And software counters are read for prepared threads when available.
    let t = Target::spawn("pmu-less", sleep_in_child);
    probes.prepare_thread(t.tid).unwrap();
    let snapshot = probes.snapshot(t.tid, None);
    if task_clock.active {
        let values = snapshot.perf.unwrap().unwrap();
        assert!(values.task_clock.is_some());
        let cycles = find(&statuses, "perf:cycles");
        assert_eq!(values.cycles.is_some(), cycles.active, "{values:?}");
    }
    t.stop();
}
