//! The bridge to `loopscope-probes`: one set of probes per process, and the conversion of what they see
//! into the culprit of a stall report.
//!
//! The probes are process-wide because the stack sampler owns a signal handler. The first agent installed
//! starts them, with its configuration. Starting is quick (install the handler, one warm-up unwind, check
//! /proc and perf). Symbols cost nothing up front: the symbolizer reads debug information on demand, per
//! compilation unit, when a stall's stack needs it. While another thread holds the symbolizer, stall
//! reports carry raw stacks (`symbolized: false`) and a later event of the same stall carries the names: a
//! report is never held back waiting for symbols.

use crate::config::Config;
use loopscope_probes::classify::{PollTime, classify, classify_poll};
use loopscope_probes::stack::{RawStack, SamplerConfig};
use loopscope_probes::{ProbeConfig, Probes, StallSnapshot, Tid};
use loopscope_wire::{
    Classification, CounterDeltas, Culprit, CulpritSample, Frame, FrameOrigin, ProbeStatus as WireStatus, StallTime,
};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

static PROBES: OnceLock<Probes> = OnceLock::new();
static DISABLED: OnceLock<String> = OnceLock::new();
static SYMBOLS_READY: AtomicBool = AtomicBool::new(false);
/// Set once a thread of its own started on the process's first stack (see `symbolize`).
static LOADING: AtomicBool = AtomicBool::new(false);

/// Whether the process's first stack is being symbolized on a thread of its own right now. An end event, which
/// waits for names, then waits in the agent thread's queue of ending stalls instead of blocking that thread:
/// reading the first symbols took 0.2–0.5 s in a release build beside busy processes, and every other event
/// (the next stall's start among them) waited behind it.
pub(crate) fn symbols_loading() -> bool {
    LOADING.load(Acquire) && !SYMBOLS_READY.load(Acquire)
}

/// How long the prober waits for a stack capture. A thread that doesn't take the signal in time (in
/// uninterruptible sleep, stopped) gets a report without a stack rather than a late one.
pub(crate) const CAPTURE_TIMEOUT: Duration = Duration::from_millis(10);
/// The same for a runnable thread, which takes the signal only once it gets a CPU: on a crowded CPU that
/// can be many milliseconds, during which the prober would look at no other stall. A stall that goes on is
/// captured again at its next doubling. Used once the stall has a stack; until then a runnable thread gets
/// the full [`CAPTURE_TIMEOUT`]: with three busy threads on its CPU a worker runs about 3 ms in every 12, so
/// a 2 ms window caught it about 40% of the time, and a CPU-bound stall of 200 ms (four or five tries) went
/// without a stack in about one run in twelve (`tests/busy`).
pub(crate) const RUNNABLE_CAPTURE_TIMEOUT: Duration = Duration::from_millis(2);
/// Stack captures per stall: at 1×, 2×, 4× and 8× the threshold. Later re-reports sample /proc only: each
/// capture interrupts the thread, and interrupting a sleeping thread too often keeps it from ever waking.
/// Stable mode's confirmed busy spans are the exception: each report takes a stack, the only sign that the
/// thread left the runtime without parking (see `watchdog::look_busy`).
pub(crate) const MAX_CAPTURES: usize = 4;

/// Starts the process-wide probes once. Later calls (other agents) do nothing.
pub(crate) fn start(config: &Config) {
    if PROBES.get().is_some() || DISABLED.get().is_some() {
        return;
    }
    if !config.probes {
        let _ = DISABLED.set("disabled by configuration (LOOPSCOPE_PROBES=0)".into());
        return;
    }
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if PROBES.get().is_some() {
        return;
    }
    let probes = Probes::new(ProbeConfig {
        stacks: config.stacks,
        perf: config.perf,
        sampler: SamplerConfig { unwinder: config.unwinder, ..SamplerConfig::default() },
        warm_symbolizer: false,
    });
    let _ = PROBES.set(probes);
    // Nothing to warm: symbols are read on demand, when the first stall's stack needs them (`symbolize`).
}

/// Whether the probes are started (or disabled). Symbols need no loading ahead of time.
pub(crate) fn ready() -> bool {
    DISABLED.get().is_some() || PROBES.get().is_some()
}

/// The probes' status, as users see it.
pub(crate) fn status() -> Vec<WireStatus> {
    if let Some(why) = DISABLED.get() {
        return vec![WireStatus { name: "probes".into(), active: false, detail: why.clone() }];
    }
    let Some(p) = PROBES.get() else {
        return vec![WireStatus { name: "probes".into(), active: false, detail: "not started yet".into() }];
    };
    p.status().into_iter().map(|s| WireStatus { name: s.name, active: s.active, detail: s.detail }).collect()
}

/// Registers a thread the watchdog watches (opens its perf counters, reserves its stack slot).
pub(crate) fn prepare(tid: Tid) {
    if let Some(p) = PROBES.get() {
        let _ = p.prepare_thread(tid);
    }
}

pub(crate) fn forget(tid: Tid) {
    if let Some(p) = PROBES.get() {
        p.forget_thread(tid);
    }
}

/// Looks at thread `tid` now: /proc state first, then perf counters, then (if `stack` gives a timeout) its
/// stack. Works
/// without the probes too (no /proc access gives an error sample, which classifies as unknown).
pub(crate) fn look(tid: Tid, stack: Option<Duration>) -> StallSnapshot {
    match PROBES.get() {
        Some(p) => p.snapshot(tid, stack),
        None => StallSnapshot {
            tid,
            at: Instant::now(),
            sample: loopscope_probes::thread::sample(tid),
            perf: None,
            stack: None,
        },
    }
}

/// One look at a stalled thread, with how far into the stall it was taken.
#[derive(Debug)]
pub(crate) struct Look {
    pub(crate) at_elapsed: Duration,
    pub(crate) snapshot: StallSnapshot,
}

/// Builds the culprit of a stall from its looks (the first taken when it was flagged) and, when measured, where
/// the poll's wall time went (`time`, judged against the stall `threshold`; final once the poll `ended`). With
/// `wait` false, stacks are symbolized only if the symbolizer is free; otherwise they are sent as raw addresses.
pub(crate) fn culprit(
    looks: &[Look],
    wait: bool,
    time: Option<&StallTime>,
    threshold: Duration,
    ended: bool,
) -> Option<Culprit> {
    let first = looks.first()?;
    let last = looks.last()?;
    let mut samples: Vec<CulpritSample> = looks.iter().map(|l| sample(l, wait)).collect();
    let frames_of = |s: &CulpritSample| s.frames.clone();
    let newest_frames: Vec<Frame> = looks
        .iter()
        .rev()
        .find_map(|l| l.snapshot.stack.as_ref().and_then(|s| s.as_ref().ok()))
        .and_then(|raw| symbolize(raw, wait))
        .unwrap_or_default();
    // Shares over the whole poll, when any of it was measured; else over the window between the looks.
    let poll_time = time.filter(|t| !t.measured().is_zero()).map(|t| PollTime {
        wall: t.wall,
        on_cpu: t.on_cpu,
        off_cpu: t.off_cpu,
        run_queue: t.run_queue,
        unmeasured: t.unmeasured,
        threshold,
        ended,
    });
    let frames = (!newest_frames.is_empty()).then_some(&newest_frames[..]);
    let judge = |a, b| match &poll_time {
        Some(t) => classify_poll(a, b, frames, t),
        None => classify(a, b, frames),
    };
    let verdict = match (&first.snapshot.sample, &last.snapshot.sample) {
        (Ok(a), Ok(b)) => Some(judge(a, b)),
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => Some(judge(a, a)),
        (Err(_), Err(_)) => None,
    };
    let counters = match (&first.snapshot.perf, &last.snapshot.perf) {
        (Some(Ok(a)), Some(Ok(b))) if looks.len() > 1 => {
            let d = b.delta(a);
            Some(CounterDeltas {
                task_clock: d.task_clock,
                page_faults: d.page_faults,
                context_switches: d.context_switches,
                cycles: d.cycles,
                instructions: d.instructions,
            })
        }
        _ => None,
    };
    // Did the user's part of the stack change between the first and the latest capture?
    let with_frames: Vec<&CulpritSample> = samples.iter().filter(|s| s.symbolized && !s.frames.is_empty()).collect();
    let stack_moved = match (with_frames.first(), with_frames.last()) {
        (Some(a), Some(b)) if with_frames.len() > 1 => Some(user_part(&frames_of(a)) != user_part(&frames_of(b))),
        _ => None,
    };
    // Keep payloads small: only the samples with stacks carry frames; the rest keep their state.
    for s in samples.iter_mut() {
        s.frames.truncate(64);
    }
    let (classification, reason, on_cpu_ratio, run_queue_ratio, vol, invol) = match verdict {
        Some(v) => {
            let multi = looks.len() > 1;
            (
                v.classification,
                v.reason,
                v.on_cpu_ratio,
                v.run_queue_ratio,
                multi.then_some(v.voluntary_switches),
                multi.then_some(v.involuntary_switches),
            )
        }
        None => (Classification::Unknown, "the thread's /proc files could not be read".into(), None, None, None, None),
    };
    Some(Culprit {
        classification,
        reason,
        on_cpu_ratio,
        run_queue_ratio,
        counters,
        voluntary_switches: vol,
        involuntary_switches: invol,
        samples,
        stack_moved,
    })
}

/// The culprit of a stall that no look saw in flight (found after it ended), from its time split alone:
/// whether the OS delayed it, or where its own time went. No stack, no thread state.
pub(crate) fn culprit_from_time(time: &StallTime, threshold: Duration) -> Option<Culprit> {
    let measured = time.measured();
    if measured.is_zero() {
        return None;
    }
    let (classification, reason) = if !time.run_queue.is_zero() && time.self_time() < threshold {
        (
            Classification::Preempted,
            format!(
                "the OS kept the thread waiting for a CPU {:.1?} of {:.1?}; the poll itself took {:.1?}, under the \
                 {threshold:.1?} threshold (found after it ended)",
                time.run_queue,
                time.wall,
                time.self_time()
            ),
        )
    } else if time.on_cpu >= time.off_cpu && time.on_cpu * 2 >= measured.saturating_sub(time.run_queue) {
        (Classification::CpuBound, format!("{} (found after it ended: no stack)", time.describe()))
    } else {
        (Classification::Unknown, format!("{} (found after it ended: no stack or state)", time.describe()))
    };
    let own = measured.saturating_sub(time.run_queue);
    Some(Culprit {
        classification,
        reason,
        on_cpu_ratio: Some(time.on_cpu.as_secs_f64() / measured.as_secs_f64()),
        run_queue_ratio: Some(time.run_queue.as_secs_f64() / measured.as_secs_f64()),
        counters: None,
        voluntary_switches: None,
        involuntary_switches: None,
        samples: Vec::new(),
        stack_moved: None,
    })
    .filter(|_| !own.is_zero() || !time.run_queue.is_zero())
}

fn user_part(frames: &[Frame]) -> Vec<Option<String>> {
    frames.iter().filter(|f| f.origin == FrameOrigin::User).map(|f| f.function.clone()).collect()
}

fn symbolize(raw: &RawStack, wait: bool) -> Option<Vec<Frame>> {
    let p = PROBES.get()?;
    if wait {
        let frames = p.symbolize(raw);
        // The indexes are read now: later reports need not wait for them (see below).
        SYMBOLS_READY.store(true, Release);
        return Some(frames);
    }
    if SYMBOLS_READY.load(Acquire) {
        // A stack in units not parsed yet costs milliseconds (more in debug builds): never wait for another
        // thread's symbolization on the way to a report.
        return p.try_symbolize(raw);
    }
    // The process's first stack: reading the symbol and unit indexes and the first units takes milliseconds in a
    // release build, over 100 ms in a debug one. Do it on a thread of its own, so this report goes out now with
    // raw addresses and later events of the stall carry the names (the end event always waits for them).
    if !LOADING.swap(true, AcqRel) {
        let first = raw.clone();
        let spawned = std::thread::Builder::new().name("loopscope-symbols".into()).spawn(move || {
            if let Some(p) = PROBES.get() {
                let start = Instant::now();
                let _ = p.symbolize(&first);
                tracing::debug!(target: "loopscope", "first stack symbolized in {:?}", start.elapsed());
            }
            SYMBOLS_READY.store(true, Release);
        });
        if spawned.is_err() {
            SYMBOLS_READY.store(true, Release);
            return Some(p.symbolize(raw));
        }
    }
    None
}

fn sample(l: &Look, wait: bool) -> CulpritSample {
    let (state, syscall, fd_target) = match &l.snapshot.sample {
        Ok(s) => (
            Some(s.state.letter()),
            s.syscall.as_ref().map(|c| c.name.to_string()),
            s.syscall.as_ref().and_then(|c| c.fd_target.clone()),
        ),
        Err(_) => (None, None, None),
    };
    let (frames, symbolized, stack_error) = match &l.snapshot.stack {
        None => (Vec::new(), true, None),
        Some(Err(e)) => (Vec::new(), true, Some(error_chain(e))),
        Some(Ok(raw)) => match symbolize(raw, wait) {
            Some(frames) => {
                (frames.into_iter().filter(|f| f.origin != FrameOrigin::Probe).map(frame).collect(), true, None)
            }
            None => (
                raw.thread_ips()
                    .iter()
                    .map(|&ip| Frame {
                        ip: ip as u64,
                        function: None,
                        file: None,
                        line: None,
                        origin: FrameOrigin::Unknown,
                        inlined: false,
                        object: None,
                    })
                    .collect(),
                false,
                None,
            ),
        },
    };
    CulpritSample { at_elapsed: l.at_elapsed, frames, symbolized, stack_error, state, syscall, fd_target }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A symbolized frame as a stall event carries it: without what only the symbolizer needs (`inlined`,
/// `object`), which the stream never sends (see [`Frame`]), so the agent's own events equal its clients'.
fn frame(f: Frame) -> Frame {
    Frame { inlined: false, object: None, ..f }
}

mod confirm;

pub(crate) use confirm::{
    BusyVerdict, CONFIRM_CAPTURE_TIMEOUT, CONFIRM_GAP, CONFIRM_MAX_LOOKS, CONFIRM_STACKS, MIN_RUN, UserFrames,
    WorkerMotion, confirm_busy, same_poll,
};
