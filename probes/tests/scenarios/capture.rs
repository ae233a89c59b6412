//! Capturing stacks of blocked and running threads: signals that can't be delivered, threads unwound from
//! outside, frame-pointer walks over garbage, deep and concurrent captures. Split out of `main.rs`, which
//! classifies what a stalled thread is doing.

use super::*;

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
