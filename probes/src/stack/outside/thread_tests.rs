//! `outside.rs`'s thread tests, in a file of their own to keep that one short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::*;
use crate::stack::{CaptureMethod, RawStack, Symbolizer, Unwinder};
use crate::thread::SyscallLine;

#[inline(never)]
fn sleeper(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// std's `thread::sleep` is built with frame pointers and libc's `clock_nanosleep` does not save `rbp`: the
/// frame-pointer search must bridge it, and the walk must reach the thread's first frame.
#[test]
fn unwinds_a_sleeping_thread_through_std_frame_pointer_frames() {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        tx.send(crate::current_tid()).expect("the test waits for the tid");
        sleeper(&flag)
    });
    let tid = rx.recv().expect("the thread sends its tid");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (pc, sp) = loop {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).expect("own thread");
        if let Ok(SyscallLine::Blocked { number, stack_pointer, instruction_pointer, .. }) =
            crate::thread::parse_syscall(&text)
            && number == libc::SYS_clock_nanosleep
        {
            break (instruction_pointer, stack_pointer);
        }
        assert!(Instant::now() < deadline, "the thread never slept");
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut state = State::load();
    state.stack.reset(sp);
    let unwound = state.unwind(pc, sp, 0, 64);
    stop.store(true, Ordering::SeqCst);
    handle.join().expect("the sleeper does not panic");
    let raw = RawStack {
        tid,
        ips: unwound.ips.clone(),
        probe_frames: 0,
        truncated: false,
        incomplete: false,
        unwinder: Unwinder::Dwarf,
        stack_pointer: sp as usize,
        latency: Duration::ZERO,
        method: CaptureMethod::Outside,
    };
    let names: Vec<String> = Symbolizer::new().symbolize(&raw).iter().map(|f| f.display_name()).collect();
    assert!(names.iter().any(|n| n.ends_with("::sleeper")), "{unwound:x?} {names:#?}");
    assert!(names.iter().any(|n| n.contains("start_thread")), "{unwound:x?} {names:#?}");
    assert_eq!(unwound.stopped, None);
}
