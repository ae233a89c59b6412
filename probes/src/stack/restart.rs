//! Which blocked system calls a signal handler may interrupt.
//!
//! The stack sampler's handler is installed with `SA_RESTART`, but signal(7) lists calls that the kernel never
//! restarts after a handler ran: they fail with `EINTR`, which the application sees (C code, std's socket reads,
//! `usleep`, `poll`, `epoll_wait`, ...). Capturing a stack must never change what the application sees, so a
//! thread blocked in such a call is never signalled: its stack is unwound from outside instead
//! (`super::outside`). This module decides, from `/proc/self/task/<tid>/syscall` and what the blocking file
//! descriptor is, whether the call is *known* to restart transparently. Everything not known is treated as
//! unsafe: a wrong "unsafe" costs a slightly less complete stack, a wrong "safe" costs the application an
//! `EINTR`.
//!
//! The kernel facts behind the list (x86_64 `arch/x86/kernel/signal.c`): a call interrupted by a handler returns
//! `EINTR` when it failed with `-ERESTARTNOHAND` or `-ERESTART_RESTARTBLOCK` whatever the flags, and restarts only
//! for `-ERESTARTSYS` with `SA_RESTART` (and `-ERESTARTNOINTR` always).
//!
//! * `read`/`write` and their vector and positional forms on pipes, FIFOs, regular files, terminals, eventfd,
//!   timerfd and signalfd: `-ERESTARTSYS`. On a socket only without a timeout: `sock_intr_errno()` returns
//!   `-EINTR` (never restarted) when `SO_RCVTIMEO`/`SO_SNDTIMEO` is set. inotify reads are left out (they always
//!   failed with `EINTR` before Linux 3.8).
//! * `recvfrom`/`recvmsg`/`accept`/`accept4` (`SO_RCVTIMEO`), `sendto`/`sendmsg`/`sendmmsg`/`connect`
//!   (`SO_SNDTIMEO`): the same socket rule. `recvmmsg` has its own timeout argument: never restarted.
//! * `futex`: `FUTEX_WAIT`/`FUTEX_WAIT_BITSET` *without* a timeout return `-ERESTARTSYS`; with a timeout the
//!   kernel sets up a restart block and returns `-ERESTART_RESTARTBLOCK`, i.e. `EINTR` (std's `park_timeout`,
//!   `Condvar::wait_timeout` and `recv_timeout` retry it, but glibc's `sem_timedwait` hands it to C code).
//!   `FUTEX_LOCK_PI`, `FUTEX_LOCK_PI2` and `FUTEX_TRYLOCK_PI` turn an interruption into `-ERESTARTNOINTR`.
//! * `wait4`, `waitid`, `flock`, `fcntl` (`F_SETLKW`), `open`/`openat`/`openat2` (a FIFO), `getrandom`,
//!   `mq_timedsend`/`mq_timedreceive`: `-ERESTARTSYS`.
//! * Everything else that blocks: `poll`, `ppoll`, `select`, `pselect6`, `epoll_wait`, `epoll_pwait(2)`,
//!   `nanosleep`, `clock_nanosleep` (so `usleep` and std's `thread::sleep`), `semop`/`semtimedop`,
//!   `io_getevents`, `msgrcv`/`msgsnd`, `rt_sigtimedwait`, `pause`, `rt_sigsuspend`, `futex_waitv`, `ioctl`
//!   (driver-dependent), `splice`, ...: not known to restart.

use crate::thread::SyscallLine;

/// What the file descriptor a thread is blocked on refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// A pipe, FIFO, regular file, terminal, eventfd, timerfd or signalfd: reads and writes restart.
    Restarting,
    /// A socket, with whether `SO_RCVTIMEO` and `SO_SNDTIMEO` are set (`None`: could not be read).
    Socket { recv_timeout: Option<bool>, send_timeout: Option<bool> },
    /// Anything else (inotify, userfaultfd, an unknown device, an fd that could not be resolved).
    Other,
}

/// Whether a signal handler may interrupt the thread now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The thread is running, or blocked in a call that restarts transparently after the handler.
    Safe,
    /// The thread is blocked in a call that would fail with `EINTR` (or might): never signal it. The string
    /// says which call and why, for error messages.
    Unsafe(String),
}

/// `FUTEX_*` commands (`include/uapi/linux/futex.h`).
const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_TRYLOCK_PI: u64 = 8;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_LOCK_PI2: u64 = 13;
/// `FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME`: modifiers, not part of the command.
const FUTEX_MODIFIERS: u64 = 128 | 256;

// `c_long` is `i64` on the 64-bit targets this is built for; the conversion keeps the intent visible.
#[allow(clippy::useless_conversion)]
fn num(n: libc::c_long) -> i64 {
    i64::from(n)
}

/// Decides from a parsed `/proc/self/task/<tid>/syscall` line whether the thread may be signalled. `fd_kind` is
/// asked only for calls whose answer depends on the descriptor (argument 0), so callers can resolve it lazily.
pub(crate) fn interrupt_safety(line: &SyscallLine, fd_kind: impl FnOnce(i32) -> FdKind) -> Interrupt {
    let (number, args) = match line {
        SyscallLine::Running => return Interrupt::Safe,
        // Blocked outside a system call (a page fault): there is no call to interrupt.
        SyscallLine::Blocked { number: -1, .. } => return Interrupt::Safe,
        SyscallLine::Blocked { number, args, .. } => (*number, args),
    };
    let name = crate::thread::syscall_name(number);
    let unsafe_because = |why: &str| Interrupt::Unsafe(format!("{name}: {why}"));
    // fds are C ints; the register holds them zero- or sign-extended.
    let fd = || args[0] as u32 as i32;

    // Calls whose restart depends on the descriptor.
    let reads = [libc::SYS_read, libc::SYS_readv, libc::SYS_pread64, libc::SYS_preadv, libc::SYS_preadv2];
    let writes = [libc::SYS_write, libc::SYS_writev, libc::SYS_pwrite64, libc::SYS_pwritev, libc::SYS_pwritev2];
    let socket_recv = [libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_accept, libc::SYS_accept4];
    let socket_send = [libc::SYS_sendto, libc::SYS_sendmsg, libc::SYS_sendmmsg, libc::SYS_connect];
    let is = |list: &[libc::c_long]| list.iter().any(|&n| num(n) == number);
    if is(&reads) || is(&writes) || is(&socket_recv) || is(&socket_send) {
        let receiving = is(&reads) || is(&socket_recv);
        return match fd_kind(fd()) {
            FdKind::Restarting if !is(&socket_recv) && !is(&socket_send) => Interrupt::Safe,
            FdKind::Restarting => unsafe_because("not a socket"),
            FdKind::Socket { recv_timeout, send_timeout } => {
                let timeout = if receiving { recv_timeout } else { send_timeout };
                let option = if receiving { "SO_RCVTIMEO" } else { "SO_SNDTIMEO" };
                match timeout {
                    Some(false) => Interrupt::Safe,
                    Some(true) => unsafe_because(&format!("the socket has {option}, so the call is never restarted")),
                    None => unsafe_because(&format!("cannot read the socket's {option}")),
                }
            }
            FdKind::Other => unsafe_because("the descriptor is not known to restart its calls"),
        };
    }
    if number == num(libc::SYS_futex) {
        let command = args[1] & !FUTEX_MODIFIERS;
        return match command {
            FUTEX_WAIT | FUTEX_WAIT_BITSET if args[3] == 0 => Interrupt::Safe,
            FUTEX_WAIT | FUTEX_WAIT_BITSET => {
                unsafe_because("a futex wait with a timeout fails with EINTR after a signal handler")
            }
            FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_TRYLOCK_PI => Interrupt::Safe,
            _ => unsafe_because("this futex operation is not known to restart"),
        };
    }
    #[cfg(target_arch = "x86_64")]
    if number == num(libc::SYS_open) {
        return Interrupt::Safe;
    }
    let restarting = [
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_flock,
        libc::SYS_fcntl,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_getrandom,
        libc::SYS_mq_timedsend,
        libc::SYS_mq_timedreceive,
    ];
    if is(&restarting) {
        return Interrupt::Safe;
    }
    unsafe_because("never restarted after a signal handler (signal(7)), or not known to be")
}

/// Classifies the target of `readlink /proc/self/fd/<fd>`.
pub(crate) fn fd_kind_of_target(target: &str) -> Option<FdKind> {
    const RESTARTING_ANON: [&str; 3] = ["anon_inode:[eventfd]", "anon_inode:[timerfd]", "anon_inode:[signalfd]"];
    const TERMINALS: [&str; 4] = ["/dev/pts/", "/dev/tty", "/dev/ptmx", "/dev/console"];
    if target.starts_with("socket:") {
        return None; // the caller reads the socket's options
    }
    let kind = if target.starts_with("pipe:")
        || RESTARTING_ANON.contains(&target)
        || TERMINALS.iter().any(|t| target.starts_with(t))
        || (target.starts_with('/') && !target.starts_with("/dev/"))
    {
        FdKind::Restarting
    } else {
        FdKind::Other
    };
    Some(kind)
}

/// Resolves what `fd` of this process is, reading a socket's timeouts with `getsockopt`. The link is read again
/// afterwards, so a descriptor closed and reused for another file meanwhile is reported as [`FdKind::Other`].
#[cfg(target_os = "linux")]
pub(crate) fn fd_kind(fd: i32) -> FdKind {
    if fd < 0 {
        return FdKind::Other;
    }
    let link = format!("/proc/self/fd/{fd}");
    let Ok(target) = std::fs::read_link(&link) else {
        return FdKind::Other;
    };
    let target = target.to_string_lossy().into_owned();
    if let Some(kind) = fd_kind_of_target(&target) {
        return kind;
    }
    let recv_timeout = socket_timeout_set(fd, libc::SO_RCVTIMEO);
    let send_timeout = socket_timeout_set(fd, libc::SO_SNDTIMEO);
    match std::fs::read_link(&link) {
        Ok(again) if again.to_string_lossy() == target => FdKind::Socket { recv_timeout, send_timeout },
        _ => FdKind::Other,
    }
}

/// Whether the socket option `option` (`SO_RCVTIMEO` or `SO_SNDTIMEO`) of `fd` is a non-zero timeout; `None` if
/// `getsockopt` failed (not a socket, closed meanwhile).
#[cfg(target_os = "linux")]
fn socket_timeout_set(fd: i32, option: i32) -> Option<bool> {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid for writes and `len` holds the size of `tv`; getsockopt only reads the
    // option into them. A descriptor that is not a socket gives ENOTSOCK, a closed one EBADF.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut tv as *mut libc::timeval).cast(), &mut len) };
    (rc == 0).then_some(tv.tv_sec != 0 || tv.tv_usec != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(number: libc::c_long, args: [u64; 6]) -> SyscallLine {
        SyscallLine::Blocked { number: num(number), args, stack_pointer: 0x1000, instruction_pointer: 0x2000 }
    }

    fn never(_: i32) -> FdKind {
        panic!("fd kind asked for a call that does not depend on it")
    }

    #[test]
    fn running_and_page_faults_are_safe() {
        assert_eq!(interrupt_safety(&SyscallLine::Running, never), Interrupt::Safe);
        let fault = SyscallLine::Blocked { number: -1, args: [0; 6], stack_pointer: 1, instruction_pointer: 2 };
        assert_eq!(interrupt_safety(&fault, never), Interrupt::Safe);
    }

    #[test]
    fn calls_that_never_restart_are_unsafe() {
        let mut never_restart = vec![
            libc::SYS_ppoll,
            libc::SYS_pselect6,
            libc::SYS_epoll_pwait,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_semtimedop,
            libc::SYS_io_getevents,
            libc::SYS_msgrcv,
            libc::SYS_msgsnd,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_rt_sigsuspend,
            libc::SYS_recvmmsg,
            libc::SYS_ioctl,
        ];
        #[cfg(target_arch = "x86_64")]
        never_restart.extend([libc::SYS_poll, libc::SYS_select, libc::SYS_epoll_wait, libc::SYS_pause]);
        for n in never_restart {
            match interrupt_safety(&blocked(n, [3, 0, 0, 0, 0, 0]), never) {
                Interrupt::Unsafe(why) => assert!(why.contains("never restarted"), "{n}: {why}"),
                Interrupt::Safe => panic!("syscall {n} must not be interrupted"),
            }
        }
    }

    #[test]
    fn reads_depend_on_the_descriptor() {
        let read = blocked(libc::SYS_read, [7, 0, 0, 0, 0, 0]);
        let mut asked = None;
        let pipe = interrupt_safety(&read, |fd| {
            asked = Some(fd);
            FdKind::Restarting
        });
        assert_eq!((pipe, asked), (Interrupt::Safe, Some(7)));
        let plain_socket = FdKind::Socket { recv_timeout: Some(false), send_timeout: Some(true) };
        assert_eq!(interrupt_safety(&read, |_| plain_socket), Interrupt::Safe);
        let timed = FdKind::Socket { recv_timeout: Some(true), send_timeout: Some(false) };
        assert!(matches!(interrupt_safety(&read, |_| timed), Interrupt::Unsafe(w) if w.contains("SO_RCVTIMEO")));
        let unknown = FdKind::Socket { recv_timeout: None, send_timeout: None };
        assert!(matches!(interrupt_safety(&read, |_| unknown), Interrupt::Unsafe(_)));
        assert!(matches!(interrupt_safety(&read, |_| FdKind::Other), Interrupt::Unsafe(_)));
        // A write only cares about the send timeout.
        let write = blocked(libc::SYS_write, [7, 0, 0, 0, 0, 0]);
        assert_eq!(interrupt_safety(&write, |_| timed), Interrupt::Safe);
        assert!(
            matches!(interrupt_safety(&write, |_| plain_socket), Interrupt::Unsafe(w) if w.contains("SO_SNDTIMEO"))
        );
    }

    #[test]
    fn socket_calls_need_a_socket_without_timeout() {
        let plain = FdKind::Socket { recv_timeout: Some(false), send_timeout: Some(false) };
        let timed = FdKind::Socket { recv_timeout: Some(true), send_timeout: Some(true) };
        for n in [libc::SYS_accept, libc::SYS_accept4, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_connect] {
            assert_eq!(interrupt_safety(&blocked(n, [4, 0, 0, 0, 0, 0]), |_| plain), Interrupt::Safe, "{n}");
            assert!(matches!(interrupt_safety(&blocked(n, [4, 0, 0, 0, 0, 0]), |_| timed), Interrupt::Unsafe(_)));
            assert!(matches!(
                interrupt_safety(&blocked(n, [4, 0, 0, 0, 0, 0]), |_| FdKind::Restarting),
                Interrupt::Unsafe(_)
            ));
        }
    }

    #[test]
    fn futex_waits_are_safe_only_without_timeout() {
        let private = 128;
        let wait = blocked(libc::SYS_futex, [0x1000, FUTEX_WAIT | private, 1, 0, 0, 0]);
        assert_eq!(interrupt_safety(&wait, never), Interrupt::Safe);
        let bitset = blocked(libc::SYS_futex, [0x1000, FUTEX_WAIT_BITSET | private | 256, 1, 0, 0, u64::MAX]);
        assert_eq!(interrupt_safety(&bitset, never), Interrupt::Safe);
        let timed = blocked(libc::SYS_futex, [0x1000, FUTEX_WAIT | private, 1, 0x7ffd_0000, 0, 0]);
        assert!(matches!(interrupt_safety(&timed, never), Interrupt::Unsafe(w) if w.contains("timeout")));
        let pi = blocked(libc::SYS_futex, [0x1000, FUTEX_LOCK_PI, 0, 0x7ffd_0000, 0, 0]);
        assert_eq!(interrupt_safety(&pi, never), Interrupt::Safe);
        let requeue = blocked(libc::SYS_futex, [0x1000, 11, 0, 0, 0, 0]);
        assert!(matches!(interrupt_safety(&requeue, never), Interrupt::Unsafe(_)));
    }

    #[test]
    fn other_restarting_calls() {
        for n in [libc::SYS_wait4, libc::SYS_waitid, libc::SYS_flock, libc::SYS_openat, libc::SYS_getrandom] {
            assert_eq!(interrupt_safety(&blocked(n, [0; 6]), never), Interrupt::Safe, "{n}");
        }
    }

    #[test]
    fn fd_targets() {
        assert_eq!(fd_kind_of_target("pipe:[1234]"), Some(FdKind::Restarting));
        assert_eq!(fd_kind_of_target("/tmp/fifo"), Some(FdKind::Restarting));
        assert_eq!(fd_kind_of_target("/dev/pts/3"), Some(FdKind::Restarting));
        assert_eq!(fd_kind_of_target("anon_inode:[eventfd]"), Some(FdKind::Restarting));
        assert_eq!(fd_kind_of_target("anon_inode:inotify"), Some(FdKind::Other));
        assert_eq!(fd_kind_of_target("anon_inode:[userfaultfd]"), Some(FdKind::Other));
        assert_eq!(fd_kind_of_target("/dev/sda"), Some(FdKind::Other));
        assert_eq!(fd_kind_of_target("socket:[99]"), None);
    }
}
