//! System call names and the "which argument is a file descriptor" table.

use std::borrow::Cow;

use super::syscalls_table::{AARCH64, X86_64};

/// The CPU architectures whose syscall numbering this crate knows.
fn table_for_arch(arch: &str) -> Option<&'static [(u16, &'static str)]> {
    match arch {
        "x86_64" => Some(X86_64),
        "aarch64" => Some(AARCH64),
        _ => None,
    }
}

/// Looks a syscall number up in the table of `arch` (`"x86_64"` or `"aarch64"`, as in
/// `std::env::consts::ARCH`). Unknown numbers give `"syscall_<n>"`, `-1` gives `"none"`.
///
/// ```
/// use loopscope_probes::thread::syscall_name_for_arch;
/// assert_eq!(syscall_name_for_arch("x86_64", 230), "clock_nanosleep");
/// assert_eq!(syscall_name_for_arch("aarch64", 115), "clock_nanosleep");
/// assert_eq!(syscall_name_for_arch("x86_64", 9999), "syscall_9999");
/// ```
pub fn syscall_name_for_arch(arch: &str, number: i64) -> Cow<'static, str> {
    if number < 0 {
        return Cow::Borrowed("none");
    }
    let found = table_for_arch(arch).and_then(|table| {
        let n = u16::try_from(number).ok()?;
        table.binary_search_by_key(&n, |&(nr, _)| nr).ok().map(|i| table[i].1)
    });
    match found {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("syscall_{number}")),
    }
}

/// The name of system call `number` on the architecture this crate was compiled for.
///
/// ```
/// let name = loopscope_probes::thread::syscall_name(-1);
/// assert_eq!(name, "none");
/// ```
pub fn syscall_name(number: i64) -> Cow<'static, str> {
    syscall_name_for_arch(std::env::consts::ARCH, number)
}

/// System calls whose first argument is the file descriptor the thread waits on. Only calls that can block (or
/// that name the thing the thread is working on) are listed; `*at` calls are excluded because their first
/// argument is a directory fd (usually `AT_FDCWD`), which says nothing useful.
const FD_FIRST_ARG: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "recvmmsg",
    "sendmmsg",
    "accept",
    "accept4",
    "connect",
    "shutdown",
    "bind",
    "listen",
    "getsockopt",
    "setsockopt",
    "fsync",
    "fdatasync",
    "syncfs",
    "sync_file_range",
    "flock",
    "fcntl",
    "ioctl",
    "lseek",
    "fstat",
    "fstatfs",
    "getdents",
    "getdents64",
    "ftruncate",
    "fallocate",
    "fadvise64",
    "readahead",
    "close",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "io_uring_enter",
    "mq_timedsend",
    "mq_timedreceive",
];

/// The index of the file-descriptor argument of system call `number` (on this crate's target architecture),
/// if it has one this crate resolves.
///
/// ```
/// # #[cfg(target_arch = "x86_64")] {
/// use loopscope_probes::thread::fd_argument_index;
/// assert_eq!(fd_argument_index(0), Some(0)); // read(fd, ...)
/// assert_eq!(fd_argument_index(230), None); // clock_nanosleep
/// # }
/// ```
pub fn fd_argument_index(number: i64) -> Option<usize> {
    let name = syscall_name(number);
    FD_FIRST_ARG.contains(&name.as_ref()).then_some(0)
}

/// Whether `name` is a futex wait: how `std::sync::Mutex`, `Condvar`, `RwLock`, `parking_lot`, glibc's
/// `pthread_mutex_*` and thread parking all block.
///
/// ```
/// assert!(loopscope_probes::thread::is_futex_syscall("futex"));
/// assert!(!loopscope_probes::thread::is_futex_syscall("read"));
/// ```
pub fn is_futex_syscall(name: &str) -> bool {
    matches!(name, "futex" | "futex_waitv" | "futex_wait")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_unique() {
        for table in [X86_64, AARCH64] {
            assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(table.iter().all(|(_, n)| !n.is_empty()));
        }
    }

    #[test]
    fn well_known_x86_64_numbers() {
        let cases = [
            (0, "read"),
            (1, "write"),
            (7, "poll"),
            (17, "pread64"),
            (35, "nanosleep"),
            (45, "recvfrom"),
            (202, "futex"),
            (230, "clock_nanosleep"),
            (232, "epoll_wait"),
            (281, "epoll_pwait"),
            (288, "accept4"),
            (426, "io_uring_enter"),
            (441, "epoll_pwait2"),
            (449, "futex_waitv"),
        ];
        for (nr, name) in cases {
            assert_eq!(syscall_name_for_arch("x86_64", nr), name, "x86_64 #{nr}");
        }
    }

    #[test]
    fn well_known_aarch64_numbers() {
        let cases = [
            (22, "epoll_pwait"),
            (63, "read"),
            (64, "write"),
            (98, "futex"),
            (101, "nanosleep"),
            (115, "clock_nanosleep"),
            (207, "recvfrom"),
        ];
        for (nr, name) in cases {
            assert_eq!(syscall_name_for_arch("aarch64", nr), name, "aarch64 #{nr}");
        }
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn table_agrees_with_libc_constants() {
        let cases = [
            (libc::SYS_read, "read"),
            (libc::SYS_futex, "futex"),
            (libc::SYS_clock_nanosleep, "clock_nanosleep"),
            (libc::SYS_epoll_wait, "epoll_wait"),
            (libc::SYS_recvmsg, "recvmsg"),
            (libc::SYS_io_uring_enter, "io_uring_enter"),
            (libc::SYS_perf_event_open, "perf_event_open"),
        ];
        for (nr, name) in cases {
            assert_eq!(syscall_name(nr), name);
        }
    }

    #[test]
    fn unknown_and_negative() {
        assert_eq!(syscall_name_for_arch("x86_64", -1), "none");
        assert_eq!(syscall_name_for_arch("x86_64", 100_000), "syscall_100000");
        assert_eq!(syscall_name_for_arch("riscv64", 63), "syscall_63");
        // 335..424 is an unused gap on x86_64 except 335 (uretprobe).
        assert_eq!(syscall_name_for_arch("x86_64", 400), "syscall_400");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fd_arguments() {
        assert_eq!(fd_argument_index(0), Some(0));
        assert_eq!(fd_argument_index(45), Some(0));
        assert_eq!(fd_argument_index(232), Some(0));
        assert_eq!(fd_argument_index(202), None);
        assert_eq!(fd_argument_index(257), None, "openat has a dirfd, not a data fd");
        assert_eq!(fd_argument_index(-1), None);
    }

    #[test]
    fn futex_names() {
        assert!(is_futex_syscall("futex"));
        assert!(is_futex_syscall("futex_waitv"));
        assert!(!is_futex_syscall("epoll_wait"));
    }
}
