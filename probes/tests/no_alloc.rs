//! The signal handler must not allocate: a counting global allocator counts every allocation made on the target
//! thread (a thread-local flag), while that thread spins or sleeps without allocating and gets captured
//! thousands of times. This binary has its own allocator, so it lives in its own test file.
//!
//! Limitation: only allocations through Rust's global allocator are seen; a `malloc` inside libgcc or libc would
//! not be (neither allocates on the unwinding path used here).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use loopscope_probes::stack::{CaptureOptions, RunningCapture, Unwinder};
use loopscope_probes::thread::RunState;

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn count() {
        // `try_with`: the allocator may run during thread teardown, after the TLS value is gone.
        if TRACKED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// SAFETY: forwards every call to the system allocator unchanged; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[inline(never)]
fn spin_without_allocating(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
    x
}

#[inline(never)]
fn sleep_without_allocating(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn tracked<T>(f: impl FnOnce() -> T) -> T {
    TRACKED.with(|t| t.set(true));
    let r = f();
    TRACKED.with(|t| t.set(false));
    r
}

#[test]
fn handler_does_not_allocate() {
    let sampler = sampler();
    let spinner = Target::spawn("no-alloc-spin", |stop| tracked(|| spin_without_allocating(stop)));
    let sleeper = Target::spawn("no-alloc-sleep", |stop| tracked(|| sleep_without_allocating(stop)));
    sampler.prepare_thread(spinner.tid).unwrap();
    sampler.prepare_thread(sleeper.tid).unwrap();
    wait_for_sample(sleeper.tid, "sleeper asleep", |s| s.state == RunState::Sleeping);
    // Reset after start-up: only what happens during the captures counts.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for unwinder in [Unwinder::Dwarf, Unwinder::FramePointer] {
        let options = CaptureOptions { unwinder, max_depth: 128, running: RunningCapture::Signal };
        for _ in 0..1_000 {
            for tid in [spinner.tid, sleeper.tid] {
                let raw = sampler.capture_with(tid, CAPTURE_TIMEOUT, options).unwrap();
                assert!(!raw.ips.is_empty());
            }
        }
    }
    let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
    spinner.stop();
    sleeper.stop();
    assert_eq!(during, 0, "allocations on the target threads during 4,000 captures");

    // The counter itself works: an allocation on a tracked thread is seen.
    let seen = std::thread::spawn(|| {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        tracked(|| std::hint::black_box(Box::new(7u64)));
        ALLOCATIONS.load(Ordering::SeqCst) - before
    })
    .join()
    .unwrap();
    assert_eq!(seen, 1);
}

/// `own_sched_times` is called from the after-poll hook of a long poll: it must not allocate, must leave the
/// app's errno as it found it, and must agree with the watchdog's reading of the same thread.
#[cfg(target_os = "linux")]
#[test]
fn own_sched_times_does_not_allocate_and_keeps_errno() {
    std::thread::spawn(|| {
        let tid = loopscope_probes::current_tid();
        // 20 ms of CPU time (by the thread's own clock, whatever the load) and a switch, so both figures are
        // non-trivial.
        while loopscope_probes::thread::cpu_time(tid).unwrap() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let mut last = None;
        tracked(|| {
            for _ in 0..1_000 {
                // SAFETY: `__errno_location` is this thread's errno.
                unsafe { *libc::__errno_location() = libc::EAGAIN };
                last = loopscope_probes::thread::own_sched_times();
                // SAFETY: as above.
                assert_eq!(unsafe { *libc::__errno_location() }, libc::EAGAIN, "errno changed");
            }
        });
        assert_eq!(ALLOCATIONS.load(Ordering::SeqCst) - before, 0, "own_sched_times allocated");
        let own = last.unwrap();
        let other = loopscope_probes::thread::sched_times(tid).unwrap();
        let (own_cpu, other_cpu) = (own.cpu.unwrap(), other.cpu.unwrap());
        assert!(own_cpu >= std::time::Duration::from_millis(15), "{own:?}");
        assert!(other_cpu >= own_cpu, "the later reading has less CPU: {own:?} then {other:?}");
        let (own_rq, other_rq) = (own.run_queue_wait.unwrap(), other.run_queue_wait.unwrap());
        assert!(other_rq >= own_rq, "the run-queue wait went back: {own:?} then {other:?}");
        // Both sources count the same voluntary switches (the reading thread is running, so the outside reading
        // gives its count too); a sleep adds at least one.
        let own_switches = own.voluntary_switches.expect("getrusage(RUSAGE_THREAD)");
        assert!(other.voluntary_switches.unwrap() >= own_switches, "{own:?} then {other:?}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = loopscope_probes::thread::own_sched_times().unwrap();
        assert!(after.voluntary_switches.unwrap() > own_switches, "a sleep is a voluntary switch: {after:?}");
    })
    .join()
    .unwrap();
}

/// A thread blocked when read from outside gives no switch count: an unchanged count must prove that it never
/// blocked, and this block began before the reading and goes on after it. A spinning thread gives one.
#[cfg(target_os = "linux")]
#[test]
fn a_blocked_thread_read_from_outside_gives_no_switch_count() {
    use std::sync::atomic::AtomicI32;
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};
    let tid = Arc::new(AtomicI32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(2));
    let sleeper = {
        let (tid, ready) = (tid.clone(), ready.clone());
        std::thread::spawn(move || {
            tid.store(loopscope_probes::current_tid(), Ordering::SeqCst);
            ready.wait();
            std::thread::sleep(Duration::from_secs(2));
        })
    };
    ready.wait();
    let sleeping = tid.load(Ordering::SeqCst);
    // Wait (with a deadline) until the kernel shows it asleep, then read it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while loopscope_probes::thread::sample(sleeping).unwrap().state.letter() != 'S' {
        assert!(Instant::now() < deadline, "the sleeper never slept");
        std::thread::yield_now();
    }
    let t = loopscope_probes::thread::sched_times(sleeping).unwrap();
    assert_eq!(t.voluntary_switches, None, "{t:?}");
    assert!(t.run_queue_wait.is_some(), "the other figures stay: {t:?}");
    let spinner = {
        let (tid, stop) = (tid.clone(), stop.clone());
        std::thread::spawn(move || {
            tid.store(loopscope_probes::current_tid(), Ordering::SeqCst);
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let spinning = loop {
        let t = tid.load(Ordering::SeqCst);
        if t != sleeping {
            break t;
        }
        assert!(Instant::now() < deadline, "the spinner never started");
        std::thread::yield_now();
    };
    // Running or waiting for a CPU (both state R), never blocked: a count each time.
    let t = loopscope_probes::thread::sched_times(spinning).unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(t.voluntary_switches.is_some(), "{t:?}");
    spinner.join().unwrap();
    sleeper.join().unwrap();
}
