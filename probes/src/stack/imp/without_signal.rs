//! Captures that send no signal: the decision (`restart.rs`) and, for a thread that must not be signalled, its
//! stack taken another way (unwound from outside while it sleeps, or sampled by perf while it runs).

use super::*;
#[cfg(target_arch = "x86_64")]
use crate::stack::perf_sample;

/// How often an outside unwind is retried when the thread ran while it was being unwound.
const OUTSIDE_ATTEMPTS: usize = 3;
/// A thread `/proc` shows as running is signalled only once its CPU clock has advanced this much since it was
/// first seen running (see [`capture_without_signal`]).
const RUNNING_PROOF: Duration = Duration::from_micros(50);
/// Pause between two looks at a thread that is running but has not yet proven it is on a CPU.
const RUNNING_POLL: Duration = Duration::from_micros(20);

/// Decides whether `tid` may be signalled (see `restart.rs`). Returns `None` if it may; otherwise the result of
/// capturing its stack without a signal: unwound from outside while it sleeps in the kernel, or an error that
/// says why not. Never sends a signal.
///
/// `/proc/self/task/<tid>/syscall` says `running` for any thread that is not asleep, including one that was
/// just woken inside a call that does not restart (a `poll` whose timeout expired, waiting for a CPU to return
/// 0): a signal arriving then turns the timeout into `EINTR` (the kernel checks for signals once more before
/// returning). So a running thread is signalled only after its CPU clock advanced by [`RUNNING_PROOF`] while it
/// kept showing `running` — longer than any system call's way out — i.e. once it is executing its own code.
pub(super) fn capture_without_signal(
    tid: Tid,
    deadline: Instant,
    options: CaptureOptions,
) -> Option<Result<RawStack, CaptureError>> {
    if tid == sys::gettid() {
        // Our own thread is running this code: the signal is taken as tgkill returns.
        return None;
    }
    let start = Instant::now();
    let mut attempts = 0;
    let mut running_since: Option<Duration> = None;
    // The perf event of a thread found running, kept armed while the loop looks at /proc again.
    #[cfg(target_arch = "x86_64")]
    let mut sampling: Option<perf_sample::Sampling> = None;
    loop {
        // The CPU clock first: if it has not moved when we are done, the thread did not run in between, so the
        // stack we copied was frozen (see `outside.rs`).
        let cpu_before = crate::thread::cpu_time(tid).ok();
        let text = match read_syscall_line(tid) {
            Ok(text) => text,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
                return Some(Err(CaptureError::NoSuchThread { tid, source: e }));
            }
            Err(e) => {
                // Without the syscall file we cannot tell which call a blocked thread is in: only a running
                // thread may be signalled blind.
                return match thread_state(tid) {
                    Some('R') => None,
                    state => Some(Err(CaptureError::NotInterruptible {
                        tid,
                        call: "an unknown system call".into(),
                        reason: format!(
                            "/proc/self/task/{tid}/syscall is unreadable ({e}) and the thread is not running \
                             (state {state:?}), so it is never signalled"
                        ),
                    })),
                };
            }
        };
        let Ok(line) = crate::thread::parse_syscall(&text) else {
            return Some(Err(CaptureError::NotInterruptible {
                tid,
                call: "an unknown system call".into(),
                reason: format!("cannot parse /proc/self/task/{tid}/syscall: {text:?}"),
            }));
        };
        let SyscallLine::Blocked { number, stack_pointer, instruction_pointer, .. } = line else {
            // Running. Where perf events allow it, the kernel samples its registers and stack as it runs its own
            // code, and it is never signalled (see `perf_sample.rs`).
            #[cfg(target_arch = "x86_64")]
            if options.running == RunningCapture::Auto && perf_sample::usable().is_ok() {
                let armed = match &mut sampling {
                    Some(armed) => armed,
                    None => match perf_sample::Sampling::start(tid) {
                        Ok(s) => sampling.insert(s),
                        Err(e) => return Some(Err(sample_error(tid, e))),
                    },
                };
                // Wait a little, then look at /proc again: a thread seen running between two blocking calls
                // is back in the next one before it has run long enough for a sample, and is then unwound
                // from outside instead.
                let until = deadline.min(Instant::now() + PERF_RECHECK);
                match armed.wait(until) {
                    Ok(Some(sample)) => return Some(perf_sample::unwind(tid, sample, options.max_depth)),
                    Ok(None) if Instant::now() < deadline => continue,
                    Ok(None) => return Some(Err(sample_error(tid, perf_sample::SampleError::NotRunning))),
                    Err(e) => return Some(Err(sample_error(tid, e))),
                }
            }
            // Signal it only once it has proven to be on a CPU, executing its own code.
            let cpu = cpu_before?;
            match running_since {
                Some(since) if cpu.saturating_sub(since) >= RUNNING_PROOF => return None,
                Some(_) => {}
                None => running_since = Some(cpu),
            }
            if Instant::now() + RUNNING_POLL >= deadline {
                return Some(Err(CaptureError::NotInterruptible {
                    tid,
                    call: "no system call /proc can show (the thread is runnable)".into(),
                    reason: format!(
                        "it did not run for {RUNNING_PROOF:?} within the timeout: a runnable thread that is not on a \
                         CPU may be on its way out of a call that a signal would turn into EINTR, so it is not \
                         signalled"
                    ),
                }));
            }
            std::thread::sleep(RUNNING_POLL);
            continue;
        };
        running_since = None;
        let call = match super::super::restart::interrupt_safety(&line, super::super::restart::fd_kind) {
            // A thread in uninterruptible sleep would take the signal only once it wakes: unwind it now instead.
            Interrupt::Safe if thread_state(tid) == Some('D') => {
                format!("{} in uninterruptible sleep (D)", crate::thread::syscall_name(number))
            }
            Interrupt::Safe => return None,
            Interrupt::Unsafe(why) => why,
        };
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (stack_pointer, instruction_pointer, options, start, attempts);
            return Some(Err(CaptureError::NotInterruptible {
                tid,
                call,
                reason: "unwinding a blocked thread from outside is implemented for x86_64 only (elsewhere the \
                         innermost return address is in a register /proc does not show)"
                    .into(),
            }));
        }
        #[cfg(target_arch = "x86_64")]
        {
            let unwound = super::super::outside::unwind(instruction_pointer, stack_pointer, options.max_depth);
            let text_after = read_syscall_line(tid).ok();
            let cpu_after = crate::thread::cpu_time(tid).ok();
            if text_after.as_deref() == Some(text.as_str()) && cpu_before.is_some() && cpu_after == cpu_before {
                if unwound.ips.len() <= 1 {
                    let why = unwound.stopped.unwrap_or_else(|| "no frame beyond the system call".into());
                    return Some(Err(CaptureError::NotInterruptible {
                        tid,
                        call,
                        reason: format!("the unwinder did not get past the system call's wrapper: {why}"),
                    }));
                }
                return Some(Ok(RawStack {
                    tid,
                    incomplete: false,
                    ips: unwound.ips,
                    probe_frames: 0,
                    truncated: unwound.truncated,
                    unwinder: Unwinder::Dwarf,
                    stack_pointer: stack_pointer as usize,
                    latency: start.elapsed(),
                    method: CaptureMethod::Outside,
                }));
            }
            attempts += 1;
            if attempts >= OUTSIDE_ATTEMPTS || Instant::now() >= deadline {
                return Some(Err(CaptureError::NotInterruptible {
                    tid,
                    call,
                    reason: format!(
                        "the thread ran while it was being unwound ({attempts} attempts; stacks discarded)"
                    ),
                }));
            }
        }
    }
}

fn read_syscall_line(tid: Tid) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
}

/// How long a capture waits for a running thread's perf sample before it reads `/proc` again.
#[cfg(target_arch = "x86_64")]
const PERF_RECHECK: Duration = Duration::from_millis(1);

/// The capture error for a perf sample that could not be taken.
#[cfg(target_arch = "x86_64")]
fn sample_error(tid: Tid, e: perf_sample::SampleError) -> CaptureError {
    match e {
        perf_sample::SampleError::NoSuchThread(source) => CaptureError::NoSuchThread { tid, source },
        perf_sample::SampleError::NotRunning => CaptureError::NotInterruptible {
            tid,
            call: "no system call /proc can show (the thread is runnable)".into(),
            reason: format!(
                "it did not run {:?} of its own code within the timeout (perf sampling; it is never signalled)",
                perf_sample::SAMPLE_PERIOD
            ),
        },
        // Worked for this process at first use, refused now (a policy changed): this capture only says so; the
        // next ones still try.
        perf_sample::SampleError::Unavailable(why) => CaptureError::NotInterruptible {
            tid,
            call: "no system call /proc can show (the thread is running)".into(),
            reason: why,
        },
    }
}
