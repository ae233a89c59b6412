//! The signal handler and its two unwinders. Everything here runs on the interrupted thread inside the
//! handler: async-signal-safe, preallocated buffers only, no allocation, no lock, errno restored.

use super::*;

/// Registers of the interrupted context.
#[derive(Clone, Copy)]
struct Regs {
    pc: usize,
    fp: usize,
    sp: usize,
}

impl fmt::Debug for Regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pc={:#x} fp={:#x} sp={:#x}", self.pc, self.fp, self.sp)
    }
}

/// # Safety
/// `ucontext` must be the third argument the kernel passed to an `SA_SIGINFO` handler.
#[cfg(target_arch = "x86_64")]
unsafe fn regs(ucontext: *mut libc::c_void) -> Regs {
    // SAFETY: the caller guarantees `ucontext` points to the kernel-provided ucontext_t on our stack.
    let uc = unsafe { &*(ucontext as *const libc::ucontext_t) };
    let g = &uc.uc_mcontext.gregs;
    Regs {
        pc: g[libc::REG_RIP as usize] as usize,
        fp: g[libc::REG_RBP as usize] as usize,
        sp: g[libc::REG_RSP as usize] as usize,
    }
}

/// # Safety
/// `ucontext` must be the third argument the kernel passed to an `SA_SIGINFO` handler.
#[cfg(target_arch = "aarch64")]
unsafe fn regs(ucontext: *mut libc::c_void) -> Regs {
    // SAFETY: the caller guarantees `ucontext` points to the kernel-provided ucontext_t on our stack.
    let uc = unsafe { &*(ucontext as *const libc::ucontext_t) };
    let m = &uc.uc_mcontext;
    Regs { pc: m.pc as usize, fp: m.regs[29] as usize, sp: m.sp as usize }
}

/// The signal handler. Async-signal-safe by construction: it touches only the static table, atomics, the
/// preallocated buffer and its own stack; its only calls are `gettid`/`getpid`, the unwinder, `process_vm_readv`
/// and `futex` (all system calls, except the unwinder: see [`unwind_dwarf`]). errno is saved and restored because
/// the interrupted code may be between a failing system call and its errno check.
pub(super) extern "C" fn handler(_signal: libc::c_int, info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
    let saved_errno = sys::errno();
    // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to an SA_SIGINFO handler.
    unsafe { handle(info, ucontext) };
    sys::set_errno(saved_errno);
}

/// # Safety
/// `info` and `ucontext` must be the arguments the kernel passed to an `SA_SIGINFO` handler.
unsafe fn handle(info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
    // Only our own tgkill counts; a stray signal from another process is ignored.
    // SAFETY: `info` is valid per the caller; si_pid is meaningful for SI_TKILL/SI_USER (kill-like) signals, which
    // is how this signal is sent; for other codes the pid check simply fails.
    let sender = unsafe { (*info).si_pid() };
    if sender != sys::getpid() {
        return;
    }
    let tid = sys::gettid();
    let Some(slot) = find(tid) else {
        return;
    };
    let req = slot.request.load(Ordering::Acquire);
    if req == 0 || req & WRITING != 0 || (req >> 32) as u32 != tid as u32 {
        return;
    }
    if slot.request.compare_exchange(req, req | WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return;
    }
    let buf_ptr = slot.buf.load(Ordering::Acquire);
    if buf_ptr.is_null() {
        slot.request.store(0, Ordering::Release);
        return;
    }
    // SAFETY: the buffer was allocated before the tid was published and is never freed.
    let buf = unsafe { &*buf_ptr };
    // SAFETY: forwarded from the caller.
    let regs = unsafe { regs(ucontext) };
    let depth = (slot.max_depth.load(Ordering::Relaxed) as usize).clamp(1, MAX_DEPTH_LIMIT);
    let (len, probe_frames, flags) = match slot.mode.load(Ordering::Relaxed) {
        MODE_FRAME_POINTER => unwind_frame_pointers(slot, buf, regs, depth),
        _ => unwind_dwarf(buf, regs.pc, depth),
    };
    slot.len.store(len as u32, Ordering::Relaxed);
    slot.probe_frames.store(probe_frames as u32, Ordering::Relaxed);
    slot.flags.store(flags, Ordering::Relaxed);
    slot.sp.store(regs.sp, Ordering::Relaxed);
    slot.done.store(req, Ordering::Release);
    slot.request.store(0, Ordering::Release);
    slot.wake.fetch_add(1, Ordering::Release);
    sys::futex_wake(&slot.wake);
}

/// DWARF unwinding from inside the handler. Records every frame the unwinder reports: first our own frames and
/// the signal trampoline, then (once the unwinder reaches the interrupted instruction `pc`) the thread's frames.
/// Returns `(len, probe_frames, flags)`.
fn unwind_dwarf(buf: &Buffer, pc: usize, depth: usize) -> (usize, usize, u32) {
    let mut n = 0usize;
    let mut probe: Option<usize> = None;
    let mut flags = 0u32;
    // SAFETY: `trace_unsynchronized` is unsafe because it does not take the `backtrace` crate's global lock; we
    // must not take a lock in a signal handler, and the unwinder itself is reentrant (it keeps its state on our
    // stack). It calls libgcc's `_Unwind_Backtrace`, which is not formally async-signal-safe. With glibc >= 2.35
    // and libgcc >= 12 (this crate's supported baseline), the FDE lookup goes through `_dl_find_object`, which
    // glibc documents as async-signal-safe and lock-free, and libgcc skips its object mutex when no frames were
    // registered with `__register_frame` (Rust and C binaries do not; JITs do). The one-time initialization
    // (`pthread_once` for the register size table) ran at install, in the warm-up. Residual risks (documented in
    // the README): a process with JIT-registered unwind info takes libgcc's object mutex here, which deadlocks if
    // the interrupted thread held it; and corrupt unwind info or a corrupt stack can make libgcc read invalid
    // memory. The callback below never panics (`backtrace` would abort) and never allocates.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip == 0 {
                return false;
            }
            match probe {
                None if ip == pc => probe = Some(n),
                None if n >= MAX_PROBE_FRAMES => return false,
                None => {}
                Some(p) if n - p >= depth => {
                    flags |= FLAG_TRUNCATED;
                    return false;
                }
                Some(_) => {}
            }
            match buf.ips.get(n) {
                Some(cell) => {
                    cell.store(ip, Ordering::Relaxed);
                    n += 1;
                    true
                }
                None => false,
            }
        });
    }
    match probe {
        Some(p) => (n, p, flags),
        None => {
            // The unwinder never reached the interrupted frame: keep what we know for sure.
            buf.ips[0].store(pc, Ordering::Relaxed);
            (1, 0, FLAG_INCOMPLETE)
        }
    }
}

/// Frame-pointer walk from the interrupted registers. Never faults: every frame address must be aligned, above
/// the interrupted stack pointer and strictly increasing, and is read either directly inside a mapping known to
/// be readable (cached from an earlier capture, see [`readable_mapping_containing`]) or through
/// `process_vm_readv`, which reports `EFAULT` instead of faulting. Returns `(len, probe_frames = 0, flags)`.
fn unwind_frame_pointers(slot: &Slot, buf: &Buffer, regs: Regs, depth: usize) -> (usize, usize, u32) {
    const WORD: usize = std::mem::size_of::<usize>();
    buf.ips[0].store(regs.pc, Ordering::Relaxed);
    let mut n = 1usize;
    let lo = slot.stack_lo.load(Ordering::Relaxed);
    let hi = slot.stack_hi.load(Ordering::Relaxed);
    let fast = lo != 0 && lo <= regs.sp && regs.sp < hi;
    let mut flags = if fast { 0 } else { FLAG_FP_SLOW };
    let mut fp = regs.fp;
    let mut floor = regs.sp;
    loop {
        if fp < floor || !fp.is_multiple_of(WORD) {
            break;
        }
        let Some(end) = fp.checked_add(2 * WORD) else {
            break;
        };
        let mut pair = [0usize; 2];
        if fast {
            if end > hi {
                break;
            }
            // SAFETY: `[fp, fp + 16)` lies inside `[sp, hi)`, which is part of a readable mapping (the one that
            // held this thread's stack pointer at an earlier capture, re-validated by the `lo <= sp < hi` check:
            // the current stack pointer is inside it, so it is still this thread's live stack mapping).
            // `read_volatile` because another thread could in principle modify the stack; values are only
            // used after validation.
            unsafe {
                pair[0] = ptr::read_volatile(fp as *const usize);
                pair[1] = ptr::read_volatile((fp + WORD) as *const usize);
            }
        } else {
            if fp - regs.sp > MAX_SLOW_FP_SPAN || !sys::read_no_fault(fp, &mut pair) {
                break;
            }
        }
        let (next, ret) = (pair[0], pair[1]);
        if ret == 0 {
            break;
        }
        if n >= depth {
            flags |= FLAG_TRUNCATED;
            break;
        }
        if let Some(cell) = buf.ips.get(n) {
            cell.store(ret, Ordering::Relaxed);
            n += 1;
        } else {
            break;
        }
        if next <= fp {
            break;
        }
        floor = fp;
        fp = next;
    }
    if n == 1 {
        flags |= FLAG_INCOMPLETE;
    }
    (n, 0, flags)
}
