//! Thin, safe wrappers around the few raw Linux system calls this crate needs.
//!
//! Everything here that the signal handler calls (`gettid`, `errno`, `set_errno`, `futex_wake`) is a plain system
//! call or a TLS access and therefore async-signal-safe.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::Tid;

/// `gettid(2)`. Async-signal-safe.
pub(crate) fn gettid() -> Tid {
    // SAFETY: gettid takes no arguments, cannot fail and has no memory effects. We use the raw syscall rather than
    // glibc's wrapper so that the handler path contains nothing but a system call.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // Thread ids are `pid_t` (i32) by kernel ABI; the syscall returns them widened to `long`.
    tid as Tid
}

/// `getpid(2)`.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no memory effects.
    unsafe { libc::getpid() }
}

/// Sends `sig` to thread `tid` of this process with `tgkill(2)`. Using tgkill (not tkill) guarantees that a
/// recycled tid that now belongs to another process is never signalled: the kernel checks the thread group.
pub(crate) fn tgkill(tid: Tid, sig: i32) -> io::Result<()> {
    // SAFETY: tgkill only reads its integer arguments. Its return value is checked below.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, getpid(), tid, sig) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Reads the calling thread's `errno`. Async-signal-safe.
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`. Async-signal-safe.
pub(crate) fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns a valid pointer to the calling thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// Waits until `*word != expected` or `timeout` elapsed (`FUTEX_WAIT_PRIVATE`). Spurious wake-ups are possible;
/// callers re-check their condition in a loop.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the call; `ts` outlives the call.
    // The result is deliberately ignored after inspection: EAGAIN (value already changed), EINTR and ETIMEDOUT
    // all mean "re-check the condition", which every caller does.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        )
    };
    if rc != 0 {
        let err = errno();
        debug_assert!(
            err == libc::EAGAIN || err == libc::EINTR || err == libc::ETIMEDOUT,
            "unexpected futex error {err}"
        );
    }
}

/// Wakes all waiters on `word` (`FUTEX_WAKE_PRIVATE`). Async-signal-safe (a single system call).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned 32-bit atomic. FUTEX_WAKE cannot fail for a valid private address; its
    // return value (the number of woken waiters) carries no error we could act upon inside a signal handler.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

/// Reads `len <= 16` bytes at `addr` of this process without ever faulting, using `process_vm_readv(2)` on
/// ourselves: an unmapped or unreadable address makes the system call fail with `EFAULT` instead of raising
/// `SIGSEGV`. Async-signal-safe. Returns `false` if the read failed (including when a seccomp policy forbids the
/// call).
pub(crate) fn read_no_fault(addr: usize, out: &mut [usize; 2]) -> bool {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: std::mem::size_of::<[usize; 2]>() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: std::mem::size_of::<[usize; 2]>() };
    // SAFETY: `local` describes `out`, which is valid for writes of its full size; `remote` is only ever accessed
    // by the kernel, which validates it and reports EFAULT instead of faulting.
    let n = unsafe { libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0) };
    n == std::mem::size_of::<[usize; 2]>() as isize
}
