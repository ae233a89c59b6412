//! End-to-end scenarios on real threads: what does a stalled thread look like to the probes?
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

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
    assert!(user.file.as_deref().unwrap().ends_with("scenarios.rs"));

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

#[test]
fn capture_of_a_thread_that_blocks_the_signal_times_out_and_the_late_handler_writes_nothing() {
    let sampler = sampler();
    let signal = sampler.signal();
    let blocked = Arc::new(AtomicBool::new(false));
    let unblock = Arc::new(AtomicBool::new(false));
    let unblocked = Arc::new(AtomicBool::new(false));
    let (b, u, ud) = (Arc::clone(&blocked), Arc::clone(&unblock), Arc::clone(&unblocked));
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<()>();
    let t = Target::spawn("masked", move |stop| {
        set_signal_blocked(signal, true);
        b.store(true, Ordering::SeqCst);
        // An untimed futex wait restarts after a handler, so the capture uses the signal (a sleep would be
        // unwound from outside instead).
        while !u.load(Ordering::SeqCst) {
            let _ = wake_rx.recv();
        }
        // The pending signal is delivered right here: the handler runs late, after its capture gave up.
        set_signal_blocked(signal, false);
        ud.store(true, Ordering::SeqCst);
        sleep_here(stop);
    });
    wait_for("signal blocked", || blocked.load(Ordering::SeqCst).then_some(()));
    wait_for_sample(t.tid, "masked thread in futex", |s| s.state == RunState::Sleeping && in_syscall(s, "futex"));

    let start = Instant::now();
    let err = sampler.capture(t.tid, Duration::from_millis(200)).unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        CaptureError::Timeout { tid, handler_started, .. } => {
            assert_eq!(*tid, t.tid);
            assert!(!handler_started);
        }
        other => panic!("expected a timeout: {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "bounded by the timeout: {elapsed:?}");
    assert!(err.to_string().contains("within"), "{err}");

    unblock.store(true, Ordering::SeqCst);
    wake_tx.send(()).unwrap();
    wait_for("signal unblocked", || unblocked.load(Ordering::SeqCst).then_some(()));
    // The slot is usable again and yields this thread's real stack.
    let raw = sampler.capture(t.tid, CAPTURE_TIMEOUT).unwrap();
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(has_function(&frames, "sleep_here"), "stack: {:#?}", names(&frames));
    t.stop();
}

fn set_signal_blocked(signal: i32, blocked: bool) {
    // SAFETY: plain sigset manipulation on a local set; pthread_sigmask only changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        assert_eq!(libc::sigemptyset(&mut set), 0);
        assert_eq!(libc::sigaddset(&mut set, signal), 0);
        let how = if blocked { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

/// Runs in a `CLONE_VM | CLONE_VFORK` child: sleeps with raw system calls only (it shares our memory and must
/// not touch libc state), then exits.
extern "C" fn vfork_child(_arg: *mut libc::c_void) -> libc::c_int {
    let ts = libc::timespec { tv_sec: 1, tv_nsec: 0 };
    // SAFETY: raw system calls with valid arguments; SYS_exit ends only this child.
    unsafe {
        libc::syscall(libc::SYS_nanosleep, &ts as *const libc::timespec, std::ptr::null_mut::<libc::timespec>());
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

#[inline(never)]
fn vfork_here() {
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the child runs `vfork_child` on `stack` (16-byte aligned top), which outlives it because the parent
    // is suspended until the child exits (CLONE_VFORK).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            vfork_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
}

#[test]
fn capture_of_a_thread_in_uninterruptible_sleep_unwinds_it_from_outside() {
    let sampler = sampler();
    let t = Target::spawn("vforker", |_| vfork_here());
    let Some(_) = (|| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if thread::sample(t.tid).ok()?.state == RunState::DiskSleep {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })() else {
        panic!("the vfork parent never showed up in D state");
    };
    // A signal would wait until the child exits; the parent's stack is frozen meanwhile, so it is read now.
    let start = Instant::now();
    let raw = sampler.capture(t.tid, Duration::from_millis(150)).unwrap();
    assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
    assert_eq!(raw.method, CaptureMethod::Outside);
    let frames = Symbolizer::new().symbolize(&raw);
    assert!(has_function(&frames, "vfork_here"), "stack: {:#?}", names(&frames));
    t.stop();
}

#[test]
fn frame_pointer_unwinder_on_a_sleeping_thread() {
    let sampler = sampler();
    // Blocked in an untimed futex wait (restartable): the capture goes through the signal handler.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = Target::spawn("fp-sleeper", move |_| rx.recv());
    wait_for_sample(t.tid, "waiting", |s| s.state == RunState::Sleeping && in_syscall(s, "futex"));
    let options = CaptureOptions::new(Unwinder::FramePointer, 64);
    // First capture: no cached stack bounds, every read goes through process_vm_readv. Later: direct reads.
    for _ in 0..3 {
        let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, options).unwrap();
        assert_eq!(raw.unwinder, Unwinder::FramePointer);
        assert_eq!(raw.probe_frames, 0);
        assert!(!raw.ips.is_empty());
        assert_ne!(raw.ips[0], 0);
        let frames = Symbolizer::new().symbolize(&raw);
        assert!(frames.iter().all(|f| f.origin != FrameOrigin::Probe));
    }
    tx.send(()).unwrap();
    t.stop().unwrap();
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn spin_with_bogus_frame_pointer(bogus: usize, stop: &AtomicBool) {
    // SAFETY: rbp is saved on the stack and restored before the block ends; no other register is modified; the
    // loop only reads the flag. The asm pushes, so `nostack` is deliberately not given.
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov rbp, {bogus}",
            "2:",
            "pause",
            "cmp byte ptr [{flag}], 0",
            "je 2b",
            "pop rbp",
            bogus = in(reg) bogus,
            flag = in(reg) stop.as_ptr(),
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn frame_pointer_walker_never_faults_on_garbage() {
    let _serial = cpu_heavy();
    let sampler = sampler();
    // A PROT_NONE page: reading it would raise SIGSEGV.
    // SAFETY: anonymous mapping, checked below, unmapped at the end.
    let guard = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(guard, libc::MAP_FAILED);
    let local = 0u64;
    let on_our_stack = &local as *const u64 as usize;
    let candidates = [
        0usize,
        8,
        usize::MAX & !7,
        guard as usize,
        guard as usize + 4096 - 8,
        0x7fff_ffff_f000,
        on_our_stack,     // another thread's stack: readable, meaningless
        on_our_stack + 3, // unaligned
        1 << 47,
    ];
    for bogus in candidates {
        let entered = Arc::new(AtomicBool::new(false));
        let e = Arc::clone(&entered);
        let t = Target::spawn("bogus-rbp", move |stop| {
            e.store(true, Ordering::SeqCst);
            spin_with_bogus_frame_pointer(bogus, stop)
        });
        wait_for("the asm loop", || entered.load(Ordering::SeqCst).then_some(()));
        let options =
            CaptureOptions { unwinder: Unwinder::FramePointer, max_depth: 128, running: RunningCapture::Signal };
        let mut symbolizer = Symbolizer::new();
        let mut in_loop = |raw: &loopscope_probes::stack::RawStack| {
            let frames = symbolizer.symbolize(raw);
            let first = frames[0].function.clone().unwrap_or_default();
            first.contains("spin_with_bogus_frame_pointer")
        };
        // The first captures may land between the flag store and the loop; every one of them walks the bogus
        // chain once the thread is in the loop.
        wait_for("a capture inside the asm loop", || {
            let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, options).unwrap();
            in_loop(&raw).then_some(())
        });
        for _ in 0..3 {
            let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, options).unwrap();
            assert!(!raw.ips.is_empty(), "{bogus:#x}");
            assert!(in_loop(&raw), "{bogus:#x}: {raw:?}");
        }
        t.stop();
    }
    // SAFETY: unmapping the page mapped above.
    assert_eq!(unsafe { libc::munmap(guard, 4096) }, 0);
}

#[inline(never)]
fn recurse_then_sleep(depth: u32, stop: &AtomicBool) -> u32 {
    if depth == 0 {
        sleep_here(stop);
        0
    } else {
        std::hint::black_box(recurse_then_sleep(depth - 1, stop)) + 1
    }
}

#[test]
fn deep_stacks_are_truncated_at_max_depth() {
    let sampler = sampler();
    let t = Target::spawn("deep", |stop| recurse_then_sleep(150, stop));
    wait_for_sample(t.tid, "deep sleeper", |s| is_sleeping_in(s, "clock_nanosleep"));
    let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, CaptureOptions::new(Unwinder::Dwarf, 8)).unwrap();
    assert!(raw.truncated, "{raw:?}");
    assert_eq!(raw.thread_ips().len(), 8, "{raw:?}");
    let full = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, CaptureOptions::new(Unwinder::Dwarf, 128)).unwrap();
    assert_eq!(full.thread_ips().len(), 128);
    assert!(full.truncated);
    let frames = Symbolizer::new().symbolize(&full);
    let recursion =
        frames.iter().filter(|f| f.function.as_deref().is_some_and(|n| n.ends_with("recurse_then_sleep"))).count();
    assert!(recursion > 100, "{recursion}");
    assert!(matches!(
        sampler.capture_with(t.tid, CAPTURE_TIMEOUT, CaptureOptions::new(Unwinder::Dwarf, 0)),
        Err(CaptureError::InvalidOption(_))
    ));
    assert_eq!(t.stop(), 150);
}

#[test]
fn concurrent_captures_of_one_thread() {
    let sampler = sampler();
    let t = Target::spawn("shared-target", sleep_here);
    let tid = t.tid;
    let capturers: Vec<_> = (0..4)
        .map(|_| {
            let sampler = Arc::clone(&sampler);
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..200 {
                    let raw = sampler.capture(tid, CAPTURE_TIMEOUT).unwrap();
                    assert_eq!(raw.tid, tid);
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: usize = capturers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 800);
    t.stop();
}

#[test]
#[ignore = "debugging aid: prints stacks"]
fn print_stacks() {
    let sampler = sampler();
    let t = Target::spawn("printed", sleep_here);
    wait_for_sample(t.tid, "sleeping", |s| is_sleeping_in(s, "clock_nanosleep"));
    for unwinder in [Unwinder::Dwarf, Unwinder::FramePointer] {
        for _ in 0..2 {
            let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, CaptureOptions::new(unwinder, 64)).unwrap();
            let frames = Symbolizer::new().symbolize(&raw);
            println!(
                "{unwinder:?} {:?} probe_frames={} truncated={} incomplete={}",
                raw.latency, raw.probe_frames, raw.truncated, raw.incomplete
            );
            for f in &frames {
                println!(
                    "  {:#x} {:?} {} {}:{} inl={} {:?}",
                    f.ip,
                    f.origin,
                    f.display_name(),
                    f.file.as_deref().unwrap_or("?"),
                    f.line.unwrap_or(0),
                    f.inlined,
                    f.object
                );
            }
        }
    }
    t.stop();
}

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
