//! The Linux implementation of the stack sampler: the per-thread slot table, the signal handler and the two
//! unwinders. This is the only code of loopscope that runs inside a signal handler.
//!
//! # The slot protocol
//!
//! Each registered thread owns a [`Slot`] in a fixed table. A capture goes through these states of
//! `Slot::request`:
//!
//! ```text
//!   0 (idle) --capturer arms--> KEY --handler claims (CAS)--> KEY|WRITING --handler finishes--> 0
//!                                 \--capturer times out (CAS)--> 0
//! ```
//!
//! `KEY = tid << 32 | seq << 1` is unique per capture (a per-slot counter) and names the thread. The handler
//! only writes the buffer after its compare-and-swap from `KEY` to `KEY|WRITING` succeeded, and a capturer that
//! times out only gives up after its compare-and-swap from `KEY` to `0` succeeded, so exactly one of them wins.
//! A handler that runs late (its capture timed out) therefore finds `0` and writes nothing; if a newer capture
//! has armed the slot meanwhile, the late handler serves *that* request, which is correct: it records the stack
//! at a moment after the newer capture asked. A handler never claims a key naming another tid, which protects
//! slots reused for a new thread. If the handler won the race but is slow, the capture reports a timeout and the
//! next capture of that slot waits until the handler has finished (`request` back to `0`) before arming it, so
//! the buffer is never written while it is being read.

use std::fmt;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::restart::Interrupt;
use super::{
    CaptureError, CaptureMethod, CaptureOptions, MAX_DEPTH_LIMIT, RawStack, RunningCapture, SamplerConfig,
    StackSampler, Unwinder,
};
use crate::thread::SyscallLine;
use crate::{ProbeError, Tid, sys};

mod handler;
mod without_signal;

use handler::handler;
use without_signal::capture_without_signal;

/// Number of threads the table can hold. A tokio runtime has one worker per core; the agent only registers
/// threads it watches. Slots are recycled by `forget_thread`.
pub(super) const TABLE_SIZE: usize = 1024;
/// Upper bound of handler-side frames (our handler, the `backtrace` crate, libgcc, the kernel's signal
/// trampoline) before the interrupted frame; if the unwinder has not reached the interrupted instruction by then,
/// something is wrong and only the interrupted instruction is recorded.
const MAX_PROBE_FRAMES: usize = 24;
const BUF_LEN: usize = MAX_DEPTH_LIMIT + MAX_PROBE_FRAMES;

const EMPTY: i32 = 0;
const TOMBSTONE: i32 = -1;
const WRITING: u64 = 1;

const FLAG_TRUNCATED: u32 = 1;
const FLAG_INCOMPLETE: u32 = 2;
/// The frame-pointer walk had no cached stack bounds and used `process_vm_readv` for every read.
const FLAG_FP_SLOW: u32 = 4;

const MODE_DWARF: u32 = 0;
const MODE_FRAME_POINTER: u32 = 1;

/// How far above the interrupted stack pointer the slow frame-pointer walk may go: bigger than any sane thread
/// stack (Rust's default is 2 MiB, the main thread's 8 MiB), small enough to stop quickly on garbage.
const MAX_SLOW_FP_SPAN: usize = 256 << 20;

/// The preallocated instruction-pointer buffer of one slot. Atomics (relaxed) rather than plain `usize` so that the
/// capturer and a handler can never form a data race in the Rust memory model, even in the scenarios the protocol
/// rules out.
struct Buffer {
    ips: [AtomicUsize; BUF_LEN],
}

struct Slot {
    /// The registered thread, `EMPTY` (never used) or `TOMBSTONE` (forgotten).
    tid: AtomicI32,
    /// Allocated when the slot is first used, never freed (slots are reused): the handler may hold a pointer.
    buf: AtomicPtr<Buffer>,
    /// See the module documentation.
    request: AtomicU64,
    /// The key of the last completed capture.
    done: AtomicU64,
    /// Futex word the handler bumps and wakes when it completes a capture.
    wake: AtomicU32,
    /// Per-slot capture counter (31 bits used).
    seq: AtomicU32,
    /// Serializes capturers of this slot.
    capturing: AtomicBool,
    // Request parameters, written by the capturer before arming.
    mode: AtomicU32,
    max_depth: AtomicU32,
    // Results, written by the handler before `done`.
    len: AtomicU32,
    probe_frames: AtomicU32,
    flags: AtomicU32,
    sp: AtomicUsize,
    /// A readable mapping `[stack_lo, stack_hi)` that contained the thread's stack pointer at an earlier
    /// capture; lets the frame-pointer walker read the stack directly instead of through `process_vm_readv`.
    /// Written by capturers only while no handler owns the slot.
    stack_lo: AtomicUsize,
    stack_hi: AtomicUsize,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            tid: AtomicI32::new(EMPTY),
            buf: AtomicPtr::new(ptr::null_mut()),
            request: AtomicU64::new(0),
            done: AtomicU64::new(0),
            wake: AtomicU32::new(0),
            seq: AtomicU32::new(0),
            capturing: AtomicBool::new(false),
            mode: AtomicU32::new(MODE_DWARF),
            max_depth: AtomicU32::new(0),
            len: AtomicU32::new(0),
            probe_frames: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            sp: AtomicUsize::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
        }
    }
}

struct Table {
    slots: [Slot; TABLE_SIZE],
    /// Serializes `prepare`/`forget` (never taken by the handler, nor by captures of prepared threads).
    registry: Mutex<()>,
    count: AtomicUsize,
}

/// The table lives in a static so the handler can reach it without any initialization check that could lock.
static TABLE: Table =
    Table { slots: [const { Slot::new() }; TABLE_SIZE], registry: Mutex::new(()), count: AtomicUsize::new(0) };

/// The installed sampler (one per process).
static INSTALLED: Mutex<Option<Arc<StackSampler>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data stays consistent even if a holder panicked (all updates are single stores).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn home(tid: Tid) -> usize {
    // Fibonacci hashing spreads consecutive tids (threads of one runtime) over the table.
    ((tid as u32).wrapping_mul(0x9E37_79B9) as usize) % TABLE_SIZE
}

/// Lock-free, allocation-free lookup. Async-signal-safe.
fn find(tid: Tid) -> Option<&'static Slot> {
    if tid <= 0 {
        // 0 and -1 are the EMPTY and TOMBSTONE markers, not thread ids.
        return None;
    }
    let mut i = home(tid);
    for _ in 0..TABLE_SIZE {
        let slot = &TABLE.slots[i];
        let t = slot.tid.load(Ordering::Acquire);
        if t == tid {
            return Some(slot);
        }
        if t == EMPTY {
            return None;
        }
        i = (i + 1) % TABLE_SIZE;
    }
    None
}

fn prepare_slot(tid: Tid) -> Result<&'static Slot, ProbeError> {
    if let Some(slot) = find(tid) {
        return Ok(slot);
    }
    if tid <= 0 {
        return Err(ProbeError::NoSuchThread { tid, source: io::Error::from_raw_os_error(libc::ESRCH) });
    }
    // Only threads of this process can be signalled; checking now keeps bogus tids out of the table.
    let task = format!("/proc/self/task/{tid}");
    if let Err(source) = std::fs::metadata(&task) {
        return Err(ProbeError::proc_read(tid, task, source));
    }
    let _registry = lock(&TABLE.registry);
    if let Some(slot) = find(tid) {
        return Ok(slot);
    }
    let mut i = home(tid);
    for _ in 0..TABLE_SIZE {
        let slot = &TABLE.slots[i];
        let t = slot.tid.load(Ordering::Acquire);
        if t == EMPTY || t == TOMBSTONE {
            if slot.buf.load(Ordering::Acquire).is_null() {
                let buf = Box::new(Buffer { ips: [const { AtomicUsize::new(0) }; BUF_LEN] });
                // Published before the tid, so a handler that finds the tid also finds the buffer.
                slot.buf.store(Box::into_raw(buf), Ordering::Release);
            }
            slot.stack_lo.store(0, Ordering::Relaxed);
            slot.stack_hi.store(0, Ordering::Relaxed);
            slot.tid.store(tid, Ordering::Release);
            TABLE.count.fetch_add(1, Ordering::Relaxed);
            return Ok(slot);
        }
        i = (i + 1) % TABLE_SIZE;
    }
    Err(ProbeError::TableFull { capacity: TABLE_SIZE })
}

pub(super) fn prepare(tid: Tid) -> Result<(), ProbeError> {
    prepare_slot(tid).map(|_| ())
}

pub(super) fn forget(tid: Tid) {
    let _registry = lock(&TABLE.registry);
    if let Some(slot) = find(tid) {
        // The buffer stays allocated for the next thread that takes this slot; a handler of the forgotten thread
        // that is still running cannot claim a request of the next owner (the key names the tid).
        slot.tid.store(TOMBSTONE, Ordering::Release);
        TABLE.count.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) fn is_prepared(tid: Tid) -> bool {
    find(tid).is_some()
}

pub(super) fn prepared_tids() -> Vec<Tid> {
    TABLE.slots.iter().map(|slot| slot.tid.load(Ordering::Acquire)).filter(|&tid| tid > 0).collect()
}

pub(super) fn prepared_count() -> usize {
    TABLE.count.load(Ordering::Relaxed)
}

pub(super) fn installed() -> Option<Arc<StackSampler>> {
    lock(&INSTALLED).clone()
}

pub(super) fn install(config: SamplerConfig) -> Result<Arc<StackSampler>, ProbeError> {
    let mut installed = lock(&INSTALLED);
    if let Some(existing) = installed.as_ref() {
        let compatible = existing.config.unwinder == config.unwinder
            && existing.config.max_depth == config.max_depth
            && config.signal.is_none_or(|s| s == existing.signal);
        return if compatible {
            Ok(Arc::clone(existing))
        } else {
            Err(ProbeError::AlreadyInstalled {
                installed: format!("signal {}, {:?}", existing.signal, existing.config),
                requested: format!("{config:?}"),
            })
        };
    }
    let signal = install_handler(config.signal)?;
    // DWARF unwinding in the handler only on the platform baseline that makes it safe; else frame pointers.
    let dwarf_refused = super::baseline::dwarf_in_handler(&super::baseline::Platform::detect()).err();
    let warm_up = warm_up(signal, &config, dwarf_refused.is_none());
    let sampler = Arc::new(StackSampler { config, signal, warm_up, dwarf_refused });
    *installed = Some(Arc::clone(&sampler));
    Ok(sampler)
}

/// Why stack capture was switched off for the rest of the process (set once, never cleared).
static DISABLED: OnceLock<String> = OnceLock::new();

/// Checks that `signal` still has our handler. On a mismatch, switches stack capture off for good (the
/// application owns the signal now; taking it back would change the application's behaviour) and returns why.
/// One `sigaction` query: cheap enough for every capture.
pub(super) fn check_disposition(signal: i32) -> Result<(), String> {
    if let Some(reason) = DISABLED.get() {
        return Err(reason.clone());
    }
    let mut current = zeroed_sigaction();
    let reason = match sigaction(signal, None, Some(&mut current)) {
        Err(e) => format!("cannot query the disposition of signal {signal}: {e}"),
        Ok(()) if current.sa_sigaction == our_handler() && current.sa_flags & libc::SA_SIGINFO != 0 => return Ok(()),
        Ok(()) if current.sa_sigaction == libc::SIG_DFL => format!(
            "the application reset signal {signal} to SIG_DFL after install (a capture would have killed the process)"
        ),
        Ok(()) if current.sa_sigaction == libc::SIG_IGN => {
            format!("the application set signal {signal} to SIG_IGN after install (captures would time out)")
        }
        Ok(()) => format!(
            "the application installed its own handler for signal {signal} after install (captures would time out \
             and its handler would run for each)"
        ),
    };
    let _ = DISABLED.set(reason);
    Err(DISABLED.get().cloned().unwrap_or_default())
}

fn our_handler() -> libc::sighandler_t {
    let entry: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = handler;
    entry as libc::sighandler_t
}

/// The first realtime signal offset tried when none is configured. The lowest few realtime signals are the ones
/// applications and libraries grab by convention (`SIGRTMIN`, `SIGRTMIN+1`, ...), so we leave them alone even
/// when they are free at install time; they may be claimed later.
const FIRST_OFFSET: i32 = 4;

fn install_handler(explicit: Option<i32>) -> Result<i32, ProbeError> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if let Some(signal) = explicit {
        if signal < min || signal > max {
            return Err(ProbeError::InvalidSignal { signal, min, max });
        }
        return match try_install(signal)? {
            true => Ok(signal),
            false => Err(ProbeError::SignalInUse { signal }),
        };
    }
    let first = (min + FIRST_OFFSET).min(max);
    for signal in first..=max {
        if try_install(signal)? {
            return Ok(signal);
        }
    }
    Err(ProbeError::NoFreeSignal { first, last: max })
}

fn zeroed_sigaction() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes is a valid value (SIG_DFL, no flags, empty
    // mask).
    unsafe { std::mem::zeroed() }
}

fn sigaction(signal: i32, new: Option<&libc::sigaction>, old: Option<&mut libc::sigaction>) -> Result<(), ProbeError> {
    let new_ptr = new.map_or(ptr::null(), |n| n as *const libc::sigaction);
    let old_ptr = old.map_or(ptr::null_mut(), |o| o as *mut libc::sigaction);
    // SAFETY: both pointers are either null or point to valid `sigaction` structs that outlive the call.
    let rc = unsafe { libc::sigaction(signal, new_ptr, old_ptr) };
    if rc == 0 { Ok(()) } else { Err(ProbeError::Sigaction { signal, source: io::Error::last_os_error() }) }
}

/// Installs our handler for `signal` if its disposition is `SIG_DFL`. Returns `Ok(false)` if the signal is taken.
fn try_install(signal: i32) -> Result<bool, ProbeError> {
    let mut current = zeroed_sigaction();
    sigaction(signal, None, Some(&mut current))?;
    if current.sa_sigaction != libc::SIG_DFL {
        return Ok(false);
    }
    let mut ours = zeroed_sigaction();
    ours.sa_sigaction = our_handler();
    // SA_SIGINFO: we need the ucontext (interrupted registers) and the sender's pid.
    // SA_RESTART: interrupted read/write/futex/... calls restart transparently instead of failing with EINTR.
    // It does not cover poll, epoll_wait, nanosleep, timed socket calls, ...: threads blocked in those are never
    // signalled (`capture_without_signal`).
    // No SA_ONSTACK: std threads have a small alternate stack for stack-overflow reporting; the unwinder needs
    // more room than that, and tokio workers run on ordinary 2 MiB stacks.
    // No SA_NODEFER: the signal stays blocked while the handler runs, so the handler never nests on one thread.
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset_t inside `ours`. sigemptyset cannot fail for a valid pointer.
    unsafe { libc::sigemptyset(&mut ours.sa_mask) };
    let mut previous = zeroed_sigaction();
    sigaction(signal, Some(&ours), Some(&mut previous))?;
    if previous.sa_sigaction != libc::SIG_DFL {
        // Someone installed a handler between our check and our install: give it back and report the signal
        // as taken.
        sigaction(signal, Some(&previous), None)?;
        return Ok(false);
    }
    Ok(true)
}

/// Runs one capture of each unwinder on a helper thread, so that the first real capture does not pay for
/// libgcc's one-time initialization and for faulting in the unwind tables of std and libc.
fn warm_up(signal: i32, config: &SamplerConfig, dwarf_allowed: bool) -> Result<Duration, String> {
    let (tid_tx, tid_rx) = mpsc::channel::<Tid>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let helper = std::thread::Builder::new()
        .name("loopscope-warmup".into())
        .spawn(move || {
            let _ = tid_tx.send(sys::gettid());
            // Blocks in futex until the warm-up is over: an ordinary blocked thread, like a stalled worker.
            let _ = stop_rx.recv();
        })
        .map_err(|e| format!("cannot spawn the warm-up thread: {e}"))?;
    let result = (|| {
        let tid =
            tid_rx.recv_timeout(Duration::from_secs(5)).map_err(|e| format!("warm-up thread did not start: {e}"))?;
        prepare(tid).map_err(|e| e.to_string())?;
        let (configured, other) = match (config.unwinder, dwarf_allowed) {
            (_, false) => (Unwinder::FramePointer, Unwinder::FramePointer),
            (Unwinder::Dwarf, true) => (Unwinder::Dwarf, Unwinder::FramePointer),
            (Unwinder::FramePointer, true) => (Unwinder::FramePointer, Unwinder::Dwarf),
        };
        let start = Instant::now();
        let first = capture(
            signal,
            tid,
            Duration::from_secs(5),
            CaptureOptions { unwinder: configured, max_depth: config.max_depth, running: RunningCapture::Signal },
        );
        let elapsed = start.elapsed();
        let second = capture(
            signal,
            tid,
            Duration::from_secs(5),
            CaptureOptions { unwinder: other, max_depth: config.max_depth, running: RunningCapture::Signal },
        );
        forget(tid);
        first.map_err(|e| e.to_string())?;
        second.map_err(|e| e.to_string())?;
        Ok(elapsed)
    })();
    drop(stop_tx);
    let _ = helper.join();
    result
}

struct CaptureGuard(&'static Slot);

impl CaptureGuard {
    fn acquire(slot: &'static Slot, deadline: Instant) -> Option<CaptureGuard> {
        let mut spins = 0u32;
        loop {
            if slot.capturing.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Some(CaptureGuard(slot));
            }
            if Instant::now() >= deadline {
                return None;
            }
            backoff(&mut spins);
        }
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        self.0.capturing.store(false, Ordering::Release);
    }
}

fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else if *spins < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50));
    }
}

fn thread_state(tid: Tid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    crate::thread::parse_stat(&stat).ok().map(|s| s.state)
}

pub(super) fn capture(
    signal: i32,
    tid: Tid,
    timeout: Duration,
    options: CaptureOptions,
) -> Result<RawStack, CaptureError> {
    if let Some(reason) = DISABLED.get() {
        return Err(CaptureError::Disabled(reason.clone()));
    }
    let deadline = Instant::now() + timeout;
    let slot = prepare_slot(tid).map_err(|source| match source {
        ProbeError::NoSuchThread { tid, source } => CaptureError::NoSuchThread { tid, source },
        source => CaptureError::Prepare { tid, source },
    })?;
    let _guard = CaptureGuard::acquire(slot, deadline).ok_or(CaptureError::Busy { tid })?;
    // Never interrupt a call that would not restart: a thread blocked in one is unwound from outside instead.
    if let Some(outcome) = capture_without_signal(tid, deadline, options) {
        return outcome;
    }
    if slot.tid.load(Ordering::Acquire) != tid {
        // The slot was forgotten and reused while we waited for it.
        return Err(CaptureError::Busy { tid });
    }
    // A late handler of an earlier, timed-out capture may still be writing: wait for it.
    let mut spins = 0;
    while slot.request.load(Ordering::Acquire) != 0 {
        if Instant::now() >= deadline {
            return Err(CaptureError::Busy { tid });
        }
        backoff(&mut spins);
    }
    let seq = loop {
        let s = slot.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & 0x7FFF_FFFF;
        if s != 0 {
            break s;
        }
    };
    let key = (u64::from(tid as u32) << 32) | (u64::from(seq) << 1);
    let mode = match options.unwinder {
        Unwinder::Dwarf => MODE_DWARF,
        Unwinder::FramePointer => MODE_FRAME_POINTER,
    };
    // The application may have changed our signal's disposition since install: with SIG_DFL the signal would
    // kill the process, with its own handler the capture would time out. Checked right before every signal.
    if let Err(reason) = check_disposition(signal) {
        return Err(CaptureError::Disabled(reason));
    }
    slot.mode.store(mode, Ordering::Relaxed);
    slot.max_depth.store(options.max_depth as u32, Ordering::Relaxed);
    if slot.request.compare_exchange(0, key, Ordering::Release, Ordering::Relaxed).is_err() {
        return Err(CaptureError::Busy { tid });
    }
    let sent = Instant::now();
    if let Err(source) = sys::tgkill(tid, signal) {
        // Nobody will answer; take the request back (cannot fail: no handler was asked).
        let _ = slot.request.compare_exchange(key, 0, Ordering::AcqRel, Ordering::Acquire);
        return Err(if source.raw_os_error() == Some(libc::ESRCH) {
            CaptureError::NoSuchThread { tid, source }
        } else {
            CaptureError::Signal { tid, signal, source }
        });
    }
    loop {
        let observed = slot.wake.load(Ordering::Acquire);
        if slot.done.load(Ordering::Acquire) == key {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            match slot.request.compare_exchange(key, 0, Ordering::AcqRel, Ordering::Acquire) {
                // Disarmed: the handler, whenever it runs, will not write.
                Ok(_) => {
                    return Err(CaptureError::Timeout {
                        tid,
                        timeout,
                        state: thread_state(tid),
                        handler_started: false,
                    });
                }
                Err(current) if current == key | WRITING => {
                    return Err(CaptureError::Timeout {
                        tid,
                        timeout,
                        state: thread_state(tid),
                        handler_started: true,
                    });
                }
                // The handler finished between our two checks.
                Err(_) if slot.done.load(Ordering::Acquire) == key => break,
                Err(_) => {
                    return Err(CaptureError::Timeout {
                        tid,
                        timeout,
                        state: thread_state(tid),
                        handler_started: false,
                    });
                }
            }
        }
        sys::futex_wait(&slot.wake, observed, deadline - now);
    }
    let latency = sent.elapsed();
    // `done == key` was read with acquire ordering, so every store the handler made for this key is visible.
    // SAFETY: the buffer pointer was published (release) before the tid and is never freed, and `prepare`
    // returned this slot for our tid, so the pointer is non-null.
    let buf = unsafe { &*slot.buf.load(Ordering::Acquire) };
    let len = (slot.len.load(Ordering::Relaxed) as usize).min(BUF_LEN);
    let probe_frames = (slot.probe_frames.load(Ordering::Relaxed) as usize).min(len);
    let flags = slot.flags.load(Ordering::Relaxed);
    let stack_pointer = slot.sp.load(Ordering::Relaxed);
    let ips = buf.ips[..len].iter().map(|ip| ip.load(Ordering::Relaxed)).collect();
    if flags & FLAG_FP_SLOW != 0 {
        // Cache the mapping that holds this thread's stack, so the next frame-pointer walk can read directly.
        if let Some((lo, hi)) = readable_mapping_containing(stack_pointer) {
            slot.stack_lo.store(lo, Ordering::Relaxed);
            slot.stack_hi.store(hi, Ordering::Relaxed);
        }
    }
    Ok(RawStack {
        tid,
        ips,
        probe_frames,
        truncated: flags & FLAG_TRUNCATED != 0,
        incomplete: flags & FLAG_INCOMPLETE != 0,
        unwinder: options.unwinder,
        stack_pointer,
        latency,
        method: CaptureMethod::Signal,
    })
}

/// The `[start, end)` of the readable, writable mapping containing `addr`, from `/proc/self/maps`. Everything from
/// `addr` up to `end` can be read without faulting as long as the mapping exists.
fn readable_mapping_containing(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (lo, hi) = parts.next()?.split_once('-')?;
        let perms = parts.next()?;
        let lo = usize::from_str_radix(lo, 16).ok()?;
        let hi = usize::from_str_radix(hi, 16).ok()?;
        (lo <= addr && addr < hi && perms.starts_with("rw")).then_some((lo, hi))
    })
}
