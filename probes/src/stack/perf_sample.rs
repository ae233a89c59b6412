//! Stacks of *running* threads without a signal: one perf-event sample of the thread's user registers and a copy
//! of its user stack, taken by the kernel itself.
//!
//! # Why not a signal
//!
//! A signal that reaches a thread inside a system call which does not restart after a handler (`poll`,
//! `epoll_wait`, `nanosleep`, a socket call with a timeout, ...; see `restart.rs`) makes that call fail with
//! `EINTR`, and the application sees it. Blocked threads are never signalled for that reason (their frozen
//! stacks are unwound from outside, `outside.rs`), but a thread that `/proc` shows running can enter such a
//! call in the microseconds between the last look and `tgkill`: the probes' storm test saw it happen twice in
//! 10,000 captures. No handler can undo an `EINTR` once delivered, so the only way to never cause one is to
//! never signal a thread that might be about to block.
//!
//! # How
//!
//! A software `task-clock` event on the target thread, sampling every [`SAMPLE_PERIOD`] of its run time, with
//! `PERF_SAMPLE_REGS_USER` (rip, rsp, rbp) and `PERF_SAMPLE_STACK_USER` (up to [`STACK_COPY`] bytes from rsp
//! up). The kernel takes the sample in its timer interrupt while the thread runs, so it never changes what the
//! thread sees; `exclude_kernel` drops samples that land in kernel mode, so a sample is proof that the thread
//! was executing its own code. The stack is then unwound with DWARF CFI on the capturing thread, from the copy
//! (the same unwinder as `outside.rs`). This works for unprivileged processes at `perf_event_paranoid` 2 (user
//! samples of the process's own threads). Where perf events are refused (paranoid 3+, seccomp, no
//! `CONFIG_PERF_EVENTS`) the sampler falls back to the signal, after the running-thread proof in `imp/without_signal.rs`.
//!
//! Each capture opens its own event and ring buffer (68 KiB) and closes them at once: a running thread is
//! captured only when a stall is in flight, and nothing is kept open per thread.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use perf_event_open_sys::bindings as sys;

use super::{CaptureError, CaptureMethod, RawStack, Unwinder};
use crate::Tid;

/// How long the thread must have run, in user mode, when the sample is taken: the proof that it is executing its
/// own code (the signal path's `RUNNING_PROOF` is 50 µs). The kernel's minimum is 10 µs.
pub(super) const SAMPLE_PERIOD: Duration = Duration::from_micros(100);

/// Bytes of stack copied from the stack pointer up. The whole sample must fit a perf record (its size is a
/// `u16`); 48 KiB reaches the outermost frames of a tokio worker in a debug build with deep async nesting. A
/// stack that goes deeper is unwound as far as the copy goes (the innermost frames, which name the culprit).
const STACK_COPY: u32 = 48 * 1024;

/// Data pages of the ring buffer (a power of two): room for one sample, however large.
const DATA_PAGES: usize = 16;

/// The x86_64 perf register numbers (`arch/x86/include/uapi/asm/perf_regs.h`) of the registers sampled, in the
/// order the kernel writes them (ascending).
const REG_BP: u64 = 6;
const REG_SP: u64 = 7;
const REG_IP: u64 = 8;

/// One sample: where the thread was, and its stack.
#[derive(Debug)]
pub(super) struct Sample {
    pub(super) ip: u64,
    pub(super) sp: u64,
    pub(super) bp: u64,
    pub(super) stack: Vec<u8>,
    /// From enabling the event to seeing the sample.
    pub(super) waited: Duration,
}

/// Why a sample could not be taken.
#[derive(Debug)]
pub(super) enum SampleError {
    /// perf events can't sample here (permission, kernel, seccomp): use the signal instead.
    Unavailable(String),
    /// The thread does not exist (any more).
    NoSuchThread(std::io::Error),
    /// The thread did not run [`SAMPLE_PERIOD`] of its own code before the deadline.
    NotRunning,
}

/// Whether perf sampling works in this process, checked once on the calling thread (with the same event and ring
/// buffer a capture uses), with the reason if not.
pub(super) fn usable() -> Result<(), &'static str> {
    static USABLE: OnceLock<Result<(), String>> = OnceLock::new();
    USABLE
        .get_or_init(|| match Event::open(crate::current_tid()) {
            Ok(_) => Ok(()),
            Err(SampleError::Unavailable(why)) => Err(why),
            Err(SampleError::NoSuchThread(e)) => Err(format!("cannot open a sampling event on this thread: {e}")),
            Err(SampleError::NotRunning) => Err("unexpected".to_owned()),
        })
        .as_ref()
        .map(|_| ())
        .map_err(String::as_str)
}

/// A sampling event armed on one thread for one capture: it keeps counting the thread's user-mode run time
/// while the capturer looks at `/proc` in between (the thread may block again before it has run long enough).
pub(super) struct Sampling {
    event: Event,
    start: Instant,
}

impl Sampling {
    /// Opens and enables the event on thread `tid`.
    pub(super) fn start(tid: Tid) -> Result<Sampling, SampleError> {
        let event = Event::open(tid)?;
        let start = Instant::now();
        event.enable()?;
        Ok(Sampling { event, start })
    }

    /// The first sample, waiting for it until `until`: `Ok(None)` if none came by then,
    /// [`SampleError::NotRunning`] if the thread exited without leaving one.
    pub(super) fn wait(&self, until: Instant) -> Result<Option<Sample>, SampleError> {
        loop {
            if let Some(mut s) = self.event.first_sample() {
                s.waited = self.start.elapsed();
                return Ok(Some(s));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            if !self.event.wait(until - now) {
                // The thread exited (the event hung up); a sample it left is still in the ring.
                return self.event.first_sample().map(Some).ok_or(SampleError::NotRunning);
            }
        }
    }
}

/// Takes one sample of thread `tid`, waiting until `deadline` for it to run [`SAMPLE_PERIOD`] in user mode.
#[cfg(test)]
fn sample(tid: Tid, deadline: Instant) -> Result<Sample, SampleError> {
    Sampling::start(tid)?.wait(deadline)?.ok_or(SampleError::NotRunning)
}

/// A raw stack from `sample`, unwound from its copy of the stack.
pub(super) fn unwind(tid: Tid, sample: Sample, max_depth: usize) -> Result<RawStack, CaptureError> {
    let unwound = super::outside::unwind_copy(sample.ip, sample.sp, sample.bp, sample.stack, max_depth);
    if unwound.ips.len() <= 1 && unwound.stopped.is_some() {
        return Err(CaptureError::NotInterruptible {
            tid,
            call: "no system call (the thread was running its own code)".into(),
            reason: format!(
                "its perf sample at {:#x} could not be unwound: {}",
                sample.ip,
                unwound.stopped.unwrap_or_default()
            ),
        });
    }
    Ok(RawStack {
        tid,
        ips: unwound.ips,
        probe_frames: 0,
        truncated: unwound.truncated,
        incomplete: false,
        unwinder: Unwinder::Dwarf,
        stack_pointer: sample.sp as usize,
        latency: sample.waited,
        method: CaptureMethod::PerfSample,
    })
}

/// An open sampling event and its mapped ring buffer; both released on drop.
struct Event {
    fd: OwnedFd,
    ring: *mut u8,
    len: usize,
    page: usize,
}

impl Event {
    fn open(tid: Tid) -> Result<Event, SampleError> {
        // SAFETY: `perf_event_attr` is plain old data, for which all zeroes is a valid value (every field off).
        let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = sys::PERF_TYPE_SOFTWARE;
        attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
        attr.config = u64::from(sys::PERF_COUNT_SW_TASK_CLOCK);
        attr.__bindgen_anon_1.sample_period = SAMPLE_PERIOD.as_nanos() as u64;
        attr.sample_type = u64::from(
            sys::PERF_SAMPLE_IP | sys::PERF_SAMPLE_TID | sys::PERF_SAMPLE_REGS_USER | sys::PERF_SAMPLE_STACK_USER,
        );
        attr.sample_regs_user = (1 << REG_BP) | (1 << REG_SP) | (1 << REG_IP);
        attr.sample_stack_user = STACK_COPY;
        attr.set_disabled(1);
        // A sample in kernel mode is dropped: only user code counts as "running its own code", and an
        // unprivileged process may not sample the kernel anyway.
        attr.set_exclude_kernel(1);
        attr.set_exclude_hv(1);
        attr.__bindgen_anon_2.wakeup_events = 1;
        // SAFETY: `attr` is a valid, initialized attribute of the size it states; the call reads it only.
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(&mut attr, tid, -1, -1, libc::c_ulong::from(sys::PERF_FLAG_FD_CLOEXEC))
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => SampleError::NoSuchThread(e),
                _ => SampleError::Unavailable(format!(
                    "perf_event_open of a user-mode task-clock sampling event failed: {e}{}",
                    match e.raw_os_error() {
                        Some(libc::EACCES) | Some(libc::EPERM) => {
                            " (kernel.perf_event_paranoid above 2, or a seccomp or security policy)"
                        }
                        _ => "",
                    }
                )),
            });
        }
        // SAFETY: `fd` was just returned by perf_event_open and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = page * (DATA_PAGES + 1);
        // SAFETY: a fresh shared mapping of the event's ring buffer (one metadata page and a power of two of data
        // pages, as perf requires); the result is checked before use and unmapped exactly once, in `drop`.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(SampleError::Unavailable(format!(
                "mapping the sampling event's ring buffer failed: {e} (kernel.perf_event_mlock_kb too small?)"
            )));
        }
        Ok(Event { fd, ring: ring.cast(), len, page })
    }

    fn enable(&self) -> Result<(), SampleError> {
        // SAFETY: an ioctl on our own perf event descriptor, with no argument.
        if unsafe { perf_event_open_sys::ioctls::ENABLE(self.fd.as_raw_fd(), 0) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(SampleError::Unavailable(format!("enabling the sampling event failed: {e}")));
        }
        Ok(())
    }

    fn meta(&self) -> *const sys::perf_event_mmap_page {
        self.ring.cast_const().cast()
    }

    /// Waits up to `timeout` for the kernel to signal a sample. `false` when the event hung up (thread gone).
    fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd and a valid timespec; no signal mask is changed (null).
        let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        !(n > 0 && pfd.revents & libc::POLLHUP != 0 && pfd.revents & libc::POLLIN == 0)
    }

    /// The first `PERF_RECORD_SAMPLE` in the ring, if one arrived.
    fn first_sample(&self) -> Option<Sample> {
        let meta = self.meta();
        // SAFETY: `meta` points to the mapped metadata page, which the kernel keeps valid for the mapping's life;
        // `data_head` is written by the kernel, so it is read with a volatile load followed by an acquire fence
        // (the protocol in perf_event_open(2)) before any record it covers.
        let head = unsafe { std::ptr::read_volatile(&raw const (*meta).data_head) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        // SAFETY: as above; these fields are set once when the buffer is mapped.
        let (offset, size) = unsafe { ((*meta).data_offset, (*meta).data_size) };
        // Kernels before 4.1 leave both 0: the data starts one page in, and spans the rest of the mapping.
        let (offset, size) = if size == 0 {
            (self.page, self.len - self.page)
        } else {
            (usize::try_from(offset).ok()?, usize::try_from(size).ok()?)
        };
        // SAFETY: the data area lies inside the mapping (offset + size <= len, as the kernel sets them up), and
        // nothing writes to the bytes up to `head` any more: we never advance `data_tail`, so the kernel never
        // reuses them.
        let data = unsafe { std::slice::from_raw_parts(self.ring.add(offset).cast_const(), size) };
        let head = usize::try_from(head).ok()?.min(size);
        let mut at = 0;
        // Records never wrap before the buffer fills once, and the first sample is all we need.
        while at + 8 <= head {
            let kind = u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?);
            let len = usize::from(u16::from_ne_bytes(data.get(at + 6..at + 8)?.try_into().ok()?));
            if len < 8 || at + len > head {
                return None;
            }
            if kind == sys::PERF_RECORD_SAMPLE
                && let Some(sample) = parse_sample(data.get(at + 8..at + len)?)
            {
                return Some(sample);
            }
            at += len;
        }
        None
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: `ring`/`len` describe the mapping made in `open`, unmapped only here.
        unsafe { libc::munmap(self.ring.cast(), self.len) };
    }
}

/// Reads a sample's body: ip, pid/tid, the user registers (abi, bp, sp, ip) and the stack copy.
fn parse_sample(body: &[u8]) -> Option<Sample> {
    let word = |i: usize| -> Option<u64> { Some(u64::from_ne_bytes(body.get(i..i + 8)?.try_into().ok()?)) };
    // ip (0), pid+tid (8), abi (16).
    let abi = word(16)?;
    if abi == 0 {
        // No user registers: the sample was taken in a kernel thread or outside user context.
        return None;
    }
    let (bp, sp, ip) = (word(24)?, word(32)?, word(40)?);
    let size = usize::try_from(word(48)?).ok()?;
    let stack = body.get(56..56 + size)?;
    let dyn_size = if size == 0 { 0 } else { usize::try_from(word(56 + size)?).ok()? };
    Some(Sample { ip, sp, bp, stack: stack.get(..dyn_size.min(size))?.to_vec(), waited: Duration::ZERO })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

    #[inline(never)]
    fn spin_here(stop: &AtomicBool) {
        let mut x = 0u64;
        while !stop.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn a_spinning_thread_is_sampled_with_its_stack() {
        if let Err(why) = usable() {
            eprintln!("perf sampling unavailable here, nothing to test: {why}");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let t = {
            let (stop, tid) = (stop.clone(), tid.clone());
            std::thread::spawn(move || {
                tid.store(crate::current_tid(), Ordering::Release);
                spin_here(&stop);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tid.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
        let s = sample(tid.load(Ordering::Acquire), Instant::now() + Duration::from_secs(5)).expect("a sample");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(s.sp != 0 && s.ip != 0, "{s:?}");
        assert!(!s.stack.is_empty(), "no stack copied");
    }

    #[test]
    fn a_sleeping_thread_gives_no_sample() {
        if usable().is_err() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tid_tx.send(crate::current_tid()).unwrap();
            let _ = rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let r = sample(tid, Instant::now() + Duration::from_millis(30));
        drop(tx);
        t.join().unwrap();
        assert!(matches!(r, Err(SampleError::NotRunning)), "{r:?}");
    }
}
