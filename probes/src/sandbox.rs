//! Restricting this process the way locked-down deployments do, to check that the probes degrade.
//!
//! Containers and sandboxes often forbid `perf_event_open` with a seccomp policy (Docker's default profile
//! does). [`deny_perf_event_open`] applies such a policy to the calling thread and every thread it creates
//! afterwards, so tests (and curious users) can see loopscope keep working with perf refused.

/// Makes `perf_event_open` fail with `EPERM` for the calling thread and the threads it creates later, as
/// Docker's default seccomp profile does. **Irreversible** for those threads (a seccomp filter can't be
/// removed): call it in a process made for the purpose, such as a child process of a test.
///
/// ```no_run
/// loopscope_probes::sandbox::deny_perf_event_open().expect("seccomp available");
/// let probes = loopscope_probes::Probes::new(Default::default());
/// assert!(probes.status().iter().any(|s| s.name == "perf:task-clock" && !s.active));
/// ```
#[cfg(target_os = "linux")]
pub fn deny_perf_event_open() -> std::io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "seccomp filter written for x86_64/aarch64"));

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
        let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
        let filter = [
            // Another architecture's syscall numbers mean something else: allow, don't guess.
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4), // seccomp_data.arch
            jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH, 1, 0),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // seccomp_data.nr
            jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::SYS_perf_event_open as u32, 0, 1),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA)),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes plain integers and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `prog` points at `filter`, both live across the call; the kernel copies the program and
        // keeps no pointer to our memory.
        if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Not available off Linux.
#[cfg(not(target_os = "linux"))]
pub fn deny_perf_event_open() -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "seccomp is Linux-only"))
}

/// Pins the calling thread to one CPU: the first CPU it may run on now (its affinity mask can be narrower
/// than the machine). Returns that CPU. Used to *make* a busy machine on purpose: several threads pinned to
/// one CPU preempt each other for certain, so tests can check that loopscope tells the OS's preemption from
/// the code's blocking.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// let first = std::thread::spawn(|| loopscope_probes::sandbox::pin_to_first_cpu().unwrap()).join().unwrap();
/// let again = std::thread::spawn(|| loopscope_probes::sandbox::pin_to_first_cpu().unwrap()).join().unwrap();
/// assert_eq!(first, again);
/// # }
/// ```
#[cfg(target_os = "linux")]
pub fn pin_to_first_cpu() -> std::io::Result<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set, and the index is below CPU_SETSIZE.
    let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|&c| unsafe { libc::CPU_ISSET(c, &set) }) else {
        return Err(std::io::Error::other("the thread's CPU affinity mask is empty"));
    };
    // SAFETY: as above, an all-zero cpu_set_t is valid; CPU_SET writes one bit below CPU_SETSIZE.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (found in the loop above).
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cpu)
}
