//! End-to-end scenarios on real threads: what does a stalled thread look like to the probes?
#![allow(missing_docs, clippy::unwrap_used)]

mod capture;
#[path = "../common/mod.rs"]
mod common;
mod facade;

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use loopscope_probes::classify::{Classification, classify};
use loopscope_probes::stack::{
    CaptureError, CaptureMethod, CaptureOptions, FrameOrigin, RunningCapture, Symbolizer, Unwinder, first_user_frame,
};
use loopscope_probes::thread::{self, RunState};
use loopscope_probes::{ProbeConfig, Probes, current_tid};

/// Tests that keep a CPU busy run one at a time, so their on-CPU ratios are not distorted by each other.
static CPU_HEAVY: Mutex<()> = Mutex::new(());

fn cpu_heavy() -> std::sync::MutexGuard<'static, ()> {
    CPU_HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

#[inline(never)]
fn sleep_here(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[inline(never)]
fn spin_here(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    x
}

#[inline(never)]
fn lock_here(m: &Mutex<u64>) -> u64 {
    *m.lock().unwrap()
}

#[inline(never)]
fn read_fifo_here(path: &Path) -> Vec<u8> {
    // O_RDWR on a FIFO never blocks in open (Linux), and the read then blocks until a writer writes.
    let mut f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut buf = [0u8; 16];
    let n = f.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn is_sleeping_in(s: &thread::ThreadSample, name: &str) -> bool {
    s.state == RunState::Sleeping && in_syscall(s, name)
}

#[test]
fn sleeping_thread_is_in_clock_nanosleep() {
    let sampler = sampler();
    let t = Target::spawn("sleeper", sleep_here);
    sampler.prepare_thread(t.tid).unwrap();
    let first = wait_for_sample(t.tid, "sleeper in clock_nanosleep", |s| {
        is_sleeping_in(s, "clock_nanosleep") || is_sleeping_in(s, "nanosleep")
    });
    let syscall = first.syscall.clone().unwrap();
    assert_eq!(syscall.fd, None);

    let raw = sampler.capture(t.tid, CAPTURE_TIMEOUT).unwrap();
    assert_eq!(raw.tid, t.tid);
    // A signal would make clock_nanosleep fail with EINTR: the sleeper is unwound from outside, no handler frames.
    assert_eq!(raw.method, CaptureMethod::Outside, "{raw:?}");
    assert_eq!(raw.probe_frames, 0);
    assert!(!raw.incomplete);
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(frames.iter().all(|f| f.origin != FrameOrigin::Probe), "stack: {:#?}", names(&frames));
    assert!(names(&frames)[0].contains("clock_nanosleep"), "stack: {:#?}", names(&frames));
    assert!(has_function(&frames, "sleep_here"), "stack: {:#?}", names(&frames));
    let user = first_user_frame(&frames).unwrap();
    assert!(
        user.function.as_deref().unwrap().ends_with("sleep_here"),
        "first user frame {user:?} of {:#?}",
        names(&frames)
    );
    assert!(user.file.as_deref().unwrap().ends_with("scenarios/main.rs"));

    std::thread::sleep(Duration::from_millis(50)); // measurement window, not synchronization
    let last = wait_for_sample(t.tid, "still sleeping", |s| is_sleeping_in(s, &syscall.name));
    let verdict = classify(&first, &last, Some(&frames));
    assert_eq!(
        verdict.classification,
        Classification::Syscall { name: syscall.name.to_string(), fd_target: None },
        "{verdict:?}"
    );
    assert!(verdict.on_cpu_ratio.unwrap() < 0.5, "{verdict:?}");
    t.stop();
}

#[test]
fn spinning_thread_is_cpu_bound() {
    let _serial = cpu_heavy();
    let sampler = sampler();
    let t = Target::spawn("spinner", spin_here);
    let first = wait_for_sample(t.tid, "spinner running", |s| s.state == RunState::Running);
    let last = wait_for("a 300 ms window", || {
        std::thread::sleep(Duration::from_millis(10));
        thread::sample(t.tid).ok().filter(|s| s.at.duration_since(first.at) >= Duration::from_millis(300))
    });
    assert_eq!(last.state, RunState::Running);
    assert!(last.syscall.is_none(), "{:?}", last.syscall);

    let raw = sampler.capture(t.tid, CAPTURE_TIMEOUT).unwrap();
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(has_function(&frames, "spin_here"), "stack: {:#?}", names(&frames));
    // A running thread is sampled by the kernel, not signalled, wherever perf events allow it.
    let expected = if sampler.perf_sampling().is_ok() { CaptureMethod::PerfSample } else { CaptureMethod::Signal };
    assert_eq!(raw.method, expected, "{:?}", sampler.perf_sampling());
    // The sample is unwound all the way out, through the thread's start.
    assert!(has_function(&frames, "std::thread"), "stack: {:#?}", names(&frames));
    // Asked for, the signal handler still captures it.
    let signalled = sampler
        .capture_with(
            t.tid,
            CAPTURE_TIMEOUT,
            CaptureOptions { running: RunningCapture::Signal, ..CaptureOptions::new(Unwinder::Dwarf, 64) },
        )
        .unwrap();
    assert_eq!(signalled.method, CaptureMethod::Signal);
    assert!(has_function(&Symbolizer::new().symbolize(&signalled), "spin_here"));

    let verdict = classify(&first, &last, Some(&frames));
    // CPU-bound, unless other processes kept it waiting for a CPU most of the window: then the figures say
    // so, and a verdict may not contradict its figures.
    if verdict.run_queue_ratio.unwrap_or(0.0) >= 0.5 {
        assert_eq!(verdict.classification, Classification::Preempted, "{verdict:?}");
    } else {
        assert_eq!(verdict.classification, Classification::CpuBound, "{verdict:?}");
    }
    let ratio = verdict.on_cpu_ratio.unwrap();
    // On an idle machine the ratio is ~1. Other processes may take CPUs away, but then the thread was waiting
    // in a run queue for the rest of the window: a spinner is always either on a CPU or waiting for one.
    let waiting = verdict.run_queue_ratio.unwrap_or(0.0);
    assert!(ratio + waiting > 0.85, "a spinning thread is on a CPU or waiting for one: {verdict:?}");
    assert!(ratio > 0.05, "{verdict:?}");
    t.stop();
}

#[test]
fn thread_waiting_for_a_mutex_is_a_lock_wait() {
    let sampler = sampler();
    let m = Arc::new(Mutex::new(41u64));
    let guard = m.lock().unwrap();
    let m2 = Arc::clone(&m);
    let t = Target::spawn("locker", move |_| lock_here(&m2));
    let first = wait_for_sample(t.tid, "locker in futex", |s| is_sleeping_in(s, "futex"));

    let raw = sampler.capture(t.tid, CAPTURE_TIMEOUT).unwrap();
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(has_function(&frames, "lock_here"), "stack: {:#?}", names(&frames));

    let last = wait_for_sample(t.tid, "still in futex", |s| is_sleeping_in(s, "futex"));
    let verdict = classify(&first, &last, Some(&frames));
    let Classification::LockWait { detail } = &verdict.classification else {
        panic!("expected a lock wait: {verdict:?}")
    };
    assert!(detail.is_some(), "{verdict:?}");
    // Without a stack the futex alone is enough.
    assert!(matches!(classify(&first, &last, None).classification, Classification::LockWait { .. }));

    drop(guard);
    assert_eq!(t.stop(), 41);
}

struct Fifo(PathBuf);

impl Fifo {
    fn new() -> Fifo {
        let path = temp_path("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
        Fifo(path)
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn blocking_read_on_a_fifo_names_the_fifo() {
    let sampler = sampler();
    let fifo = Fifo::new();
    let expected = std::fs::canonicalize(&fifo.0).unwrap().to_string_lossy().into_owned();
    let path = fifo.0.clone();
    let t = Target::spawn("fifo-reader", move |_| read_fifo_here(&path));
    let first = wait_for_sample(t.tid, "reader in read", |s| is_sleeping_in(s, "read"));
    let sc = first.syscall.clone().unwrap();
    assert_eq!(sc.fd_target.as_deref(), Some(expected.as_str()), "{sc:?}");
    assert!(sc.fd.unwrap() >= 0);

    // Interrupting the read must not break it (SA_RESTART): capture several times.
    let mut frames = Vec::new();
    for _ in 0..20 {
        let raw = sampler.capture(t.tid, CAPTURE_TIMEOUT).unwrap();
        frames = Symbolizer::new().symbolize(&raw);
    }
    assert!(has_function(&frames, "read_fifo_here"), "stack: {:#?}", names(&frames));

    let verdict = classify(&first, &first, Some(&frames));
    assert_eq!(
        verdict.classification,
        Classification::Syscall { name: "read".into(), fd_target: Some(expected.clone()) }
    );

    let mut w = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo.0).unwrap();
    w.write_all(b"done").unwrap();
    assert_eq!(t.stop(), b"done");
}
