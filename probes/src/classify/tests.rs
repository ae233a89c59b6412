//! `classify.rs`'s tests, in a file of their own to keep that one short.
#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::*;

fn base(at: Instant) -> ThreadSample {
    ThreadSample {
        tid: 42,
        at,
        state: RunState::Sleeping,
        syscall: None,
        cpu_time: Some(Duration::from_millis(500)),
        run_queue_wait: Some(Duration::from_millis(20)),
        voluntary_ctxt_switches: 100,
        nonvoluntary_ctxt_switches: 10,
        minor_faults: 1000,
        major_faults: 5,
        wchan: None,
        processor: Some(1),
    }
}

fn syscall(number: i64, name: &'static str, fd_target: Option<&str>) -> SyscallInfo {
    SyscallInfo {
        number,
        name: Cow::Borrowed(name),
        args: [0x7f00_0000_1000, 0, 0, 0, 0, 0],
        stack_pointer: 0,
        instruction_pointer: 0,
        fd: fd_target.map(|_| 3),
        fd_target: fd_target.map(str::to_owned),
    }
}

fn later(first: &ThreadSample, ms: u64, cpu_ms: u64) -> ThreadSample {
    ThreadSample {
        at: first.at + Duration::from_millis(ms),
        cpu_time: first.cpu_time.map(|c| c + Duration::from_millis(cpu_ms)),
        ..first.clone()
    }
}

fn frame(name: &str, origin: FrameOrigin) -> Frame {
    Frame { ip: 0, function: Some(name.to_owned()), file: None, line: None, origin, inlined: false, object: None }
}

#[test]
fn sleeping_in_clock_nanosleep_is_a_syscall() {
    let mut first = base(Instant::now());
    first.syscall = Some(syscall(230, "clock_nanosleep", None));
    let last = later(&first, 200, 0);
    let v = classify(&first, &last, None);
    assert_eq!(v.classification, Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None });
    assert_eq!(v.on_cpu_ratio, Some(0.0));
    assert!(v.reason.contains("clock_nanosleep"), "{}", v.reason);
}

#[test]
fn read_keeps_the_fd_target() {
    let mut first = base(Instant::now());
    first.syscall = Some(syscall(0, "read", Some("/tmp/fifo")));
    let v = classify(&first, &first, None);
    assert_eq!(v.classification, Classification::Syscall { name: "read".into(), fd_target: Some("/tmp/fifo".into()) });
    assert_eq!(v.on_cpu_ratio, None, "same sample: no ratio");
    assert_eq!(v.voluntary_switches, 0);
    assert!(v.reason.contains("/tmp/fifo"));
}

#[test]
fn futex_is_a_lock_wait_with_the_lock_frame() {
    let mut first = base(Instant::now());
    first.syscall = Some(syscall(202, "futex", None));
    let last = later(&first, 100, 0);
    let frames = [
        frame("loopscope_probes::stack::imp::handler", FrameOrigin::Probe),
        frame("syscall", FrameOrigin::Std),
        frame("std::sys::sync::mutex::futex::Mutex::lock_contended", FrameOrigin::Std),
        frame("app::update", FrameOrigin::User),
    ];
    let v = classify(&first, &last, Some(&frames));
    assert_eq!(
        v.classification,
        Classification::LockWait { detail: Some("std::sys::sync::mutex::futex::Mutex::lock_contended".into()) }
    );
    let v = classify(&first, &last, None);
    let Classification::LockWait { detail: Some(d) } = v.classification else { panic!("{v:?}") };
    assert!(d.starts_with("futex 0x7f0000001000"), "{d}");
}

#[test]
fn a_thread_waking_others_is_not_waiting_for_a_lock() {
    let mut first = base(Instant::now());
    first.state = RunState::Running;
    let mut wake = syscall(202, "futex", None);
    wake.args[1] = 1 | 128; // FUTEX_WAKE_PRIVATE
    first.syscall = Some(wake);
    let v = classify(&first, &first, None);
    assert!(!matches!(v.classification, Classification::LockWait { .. }), "{v:?}");
    let mut wait = syscall(202, "futex", None);
    wait.args[1] = 9 | 128; // FUTEX_WAIT_BITSET_PRIVATE
    first.state = RunState::Sleeping;
    first.syscall = Some(wait);
    assert!(matches!(classify(&first, &first, None).classification, Classification::LockWait { .. }));
}

#[test]
fn waking_a_waiter_is_not_a_lock_frame() {
    let first = base(Instant::now());
    let frames = [
        frame("<parking_lot_core::thread_parker::imp::UnparkHandle as UnparkHandleT>::unpark", FrameOrigin::Runtime),
        frame("tokio::runtime::task::harness::Harness<T,S>::complete", FrameOrigin::Runtime),
    ];
    assert_eq!(classify(&first, &first, Some(&frames)).classification, Classification::Unknown);
}

#[test]
fn lock_frames_without_syscall_info() {
    let first = base(Instant::now());
    let frames = [frame("parking_lot::raw_mutex::RawMutex::lock_slow", FrameOrigin::Runtime)];
    let v = classify(&first, &first, Some(&frames));
    assert!(matches!(v.classification, Classification::LockWait { .. }), "{v:?}");
    let v = classify(&first, &first, None);
    assert_eq!(v.classification, Classification::Unknown);
}

#[test]
fn running_is_cpu_bound() {
    let mut first = base(Instant::now());
    first.state = RunState::Running;
    let mut last = later(&first, 100, 97);
    last.nonvoluntary_ctxt_switches += 4;
    let v = classify(&first, &last, None);
    assert_eq!(v.classification, Classification::CpuBound);
    assert!((v.on_cpu_ratio.unwrap() - 0.97).abs() < 1e-9);
    assert_eq!(v.involuntary_switches, 4);
    assert_eq!(v.voluntary_switches, 0);
}

#[test]
fn a_starved_runnable_thread_is_never_called_cpu_bound() {
    let mut first = base(Instant::now());
    first.state = RunState::Running;
    let last = later(&first, 100, 20);
    let v = classify(&first, &last, None);
    assert_eq!(v.classification, Classification::Unknown, "20% on CPU is not CPU-bound");
    assert!(v.reason.contains("starved"), "{}", v.reason);
    let mut last = later(&first, 100, 20);
    last.run_queue_wait = first.run_queue_wait.map(|w| w + Duration::from_millis(75));
    let v = classify(&first, &last, None);
    assert_eq!(v.classification, Classification::Preempted);
    assert!((v.run_queue_ratio.unwrap() - 0.75).abs() < 1e-9);
    assert!(v.reason.contains("waiting for a CPU 75%"), "{}", v.reason);
}

fn time(wall: u64, on_cpu: u64, off_cpu: u64, run_queue: u64) -> PollTime {
    let ms = Duration::from_millis;
    PollTime {
        wall: ms(wall),
        on_cpu: ms(on_cpu),
        off_cpu: ms(off_cpu),
        run_queue: ms(run_queue),
        unmeasured: ms(wall - on_cpu - off_cpu - run_queue),
        threshold: ms(10),
        ended: true,
    }
}

#[test]
fn poll_time_tells_preemption_from_blocking() {
    let mut running = base(Instant::now());
    running.state = RunState::Running;
    // 2 ms of code, 19 ms waiting for a CPU: the OS's doing, whatever the state says.
    let v = classify_poll(&running, &running, None, &time(22, 2, 0, 19));
    assert_eq!(v.classification, Classification::Preempted, "{v:?}");
    assert!(v.reason.contains("19.0ms of 22.0ms"), "{}", v.reason);
    assert!(v.reason.contains("the poll itself took 3.0ms"), "{}", v.reason);
    assert!((v.run_queue_ratio.unwrap() - 19.0 / 21.0).abs() < 1e-9);

    // A real spin on a busy machine: 20 ms of its own, all on CPU, and 30 ms of waiting on top.
    let v = classify_poll(&running, &running, None, &time(50, 20, 0, 30));
    assert_eq!(v.classification, Classification::CpuBound, "{v:?}");
    assert!(v.reason.contains("on CPU 100% of its own 20.0ms"), "{}", v.reason);
    assert!(v.reason.contains("waited for a CPU 30.0ms"), "{}", v.reason);

    // A real sleep on a busy machine: blocked 50 ms, a little waiting to get back on a CPU.
    let mut sleeping = base(Instant::now());
    sleeping.syscall = Some(syscall(230, "clock_nanosleep", None));
    let v = classify_poll(&sleeping, &sleeping, None, &time(53, 0, 50, 3));
    assert_eq!(v.classification, Classification::Syscall { name: "clock_nanosleep".into(), fd_target: None });

    // Woke from a lock wait and runs again: named by the first look, not called CPU-bound.
    let v = classify_poll(&sleeping, &running, None, &time(40, 1, 38, 1));
    assert!(matches!(v.classification, Classification::Syscall { .. }), "{v:?}");
    assert!(v.reason.contains("running again"), "{}", v.reason);
    let v = classify_poll(&running, &running, None, &time(40, 1, 38, 1));
    assert_eq!(v.classification, Classification::Unknown, "{v:?}");

    // Still running: a thread blocked in a call now is not "preempted" for a little waiting earlier.
    let in_flight = PollTime { ended: false, ..time(20, 0, 19, 1) };
    let v = classify_poll(&sleeping, &sleeping, None, &in_flight);
    assert!(matches!(v.classification, Classification::Syscall { .. }), "{v:?}");
    let waiting = PollTime { ended: false, ..time(20, 2, 0, 18) };
    assert_eq!(classify_poll(&running, &running, None, &waiting).classification, Classification::Preempted);

    // No run-queue wait at all: never "preempted", even when short.
    let v = classify_poll(&running, &running, None, &time(12, 11, 0, 0));
    assert_eq!(v.classification, Classification::CpuBound);
}

#[test]
fn busy_syscall_loop_is_cpu_bound() {
    let mut first = base(Instant::now());
    first.syscall = Some(syscall(0, "read", Some("socket:[1]")));
    let last = later(&first, 100, 95);
    let v = classify(&first, &last, None);
    assert_eq!(v.classification, Classification::CpuBound);
    assert!(v.reason.contains("momentarily in read"), "{}", v.reason);
}

#[test]
fn page_faults() {
    // D outside a syscall: page-in.
    let mut first = base(Instant::now());
    first.state = RunState::DiskSleep;
    first.syscall = Some(syscall(-1, "none", None));
    let v = classify(&first, &first, None);
    assert_eq!(v.classification, Classification::PageFault);

    // D in a syscall without faults: the syscall (e.g. fsync).
    let mut first = base(Instant::now());
    first.state = RunState::DiskSleep;
    first.syscall = Some(syscall(74, "fsync", Some("/var/db")));
    let v = classify(&first, &later(&first, 50, 0), None);
    assert!(matches!(v.classification, Classification::Syscall { ref name, .. } if name == "fsync"));

    // Running with major faults rising while mostly off-CPU.
    let mut first = base(Instant::now());
    first.state = RunState::Running;
    let mut last = later(&first, 100, 10);
    last.major_faults += 30;
    assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);

    // Running, minor-fault storm.
    let mut last = later(&first, 100, 40);
    last.minor_faults += 30_000;
    assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);

    // Sleeping outside a syscall with major faults.
    let mut first = base(Instant::now());
    first.syscall = Some(syscall(-1, "none", None));
    let mut last = later(&first, 100, 0);
    last.major_faults += 1;
    assert_eq!(classify(&first, &last, None).classification, Classification::PageFault);
}

#[test]
fn unknown_states() {
    let mut first = base(Instant::now());
    first.state = RunState::Zombie;
    assert_eq!(classify(&first, &first, None).classification, Classification::Unknown);
    first.state = RunState::Stopped;
    let v = classify(&first, &first, None);
    assert_eq!(v.classification, Classification::Unknown);
    assert!(v.reason.contains("stopped"));
    first.state = RunState::Other('X');
    assert_eq!(classify(&first, &first, None).classification, Classification::Unknown);
}

#[test]
fn missing_cpu_time_and_reversed_samples() {
    let mut first = base(Instant::now());
    first.state = RunState::Running;
    first.cpu_time = None;
    let v = classify(&first, &later(&first, 10, 0), None);
    assert_eq!(v.classification, Classification::Unknown, "runnable, but on a CPU or waiting for one?");
    assert_eq!(v.on_cpu_ratio, None);
    // Counters going backwards (a recycled tid) must not underflow.
    let mut last = later(&first, 10, 0);
    last.voluntary_ctxt_switches = 0;
    last.minor_faults = 0;
    let v = classify(&first, &last, None);
    assert_eq!(v.voluntary_switches, 0);
}
