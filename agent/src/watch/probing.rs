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
use loopscope_probes::stack::{Frame as ProbeFrame, RawStack, SamplerConfig};
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
    let newest_frames: Vec<ProbeFrame> = looks
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

fn symbolize(raw: &RawStack, wait: bool) -> Option<Vec<ProbeFrame>> {
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
    static LOADING: AtomicBool = AtomicBool::new(false);
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

/// The wire's frame: the probes' frame less what only the symbolizer needs (inlined, object). The origin is
/// the same type on both sides (`loopscope-types`).
fn frame(f: ProbeFrame) -> Frame {
    Frame { ip: f.ip as u64, function: f.function, file: f.file, line: f.line, origin: f.origin }
}

/// Stable mode: stacks wanted before the agent thread decides whether one poll holds a worker busy past the
/// threshold. Three: a storm of short polls by one task shows that task's frames in a sample now and then, but
/// rarely in three samples milliseconds apart.
pub(crate) const CONFIRM_STACKS: usize = 3;
/// The most looks taken for them (a runnable thread on a crowded CPU may miss a capture's deadline).
pub(crate) const CONFIRM_MAX_LOOKS: usize = 6;
/// A confirming capture waits this long for a runnable thread to take the signal: longer than a mid-stall
/// look's ([`RUNNABLE_CAPTURE_TIMEOUT`]), since without the stacks there is no report at all.
pub(crate) const CONFIRM_CAPTURE_TIMEOUT: Duration = Duration::from_millis(5);
/// The time between the confirming looks: long enough that a storm of sub-millisecond polls has moved on,
/// short enough that a stall of twice the threshold is confirmed while it still runs.
pub(crate) const CONFIRM_GAP: Duration = Duration::from_micros(1500);

/// Names of the frames that poll a task (tokio's harness) or a current-thread runtime's `block_on` body: the
/// app's frames above the innermost of them are the poll's.
const POLL_FRAMES: &[&str] =
    &["tokio::runtime::task::", "tokio::runtime::scheduler::current_thread::CoreGuard::block_on"];
/// A frame of a tokio scheduler: a worker's task polls run under one; a `spawn_blocking` closure on a
/// blocking-pool thread (also under `tokio::runtime::task::`) does not.
const SCHEDULER_FRAMES: &str = "tokio::runtime::scheduler::";

/// What [`confirm_busy`] decided about a busy worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BusyVerdict {
    /// One poll holds the worker: why; whether the poll is inside `block_in_place` (tokio moved the worker's
    /// queue to another thread, so this is reported as such); and the app's frames under its poll frame, when
    /// stacks showed them, by which later looks tell whether it is still the same poll ([`same_poll`]).
    Stall { reason: String, block_in_place: bool, frames: Option<UserFrames> },
    /// Not shown to be one poll (many short polls, or the scheduler's own work): why not.
    NotOnePoll(String),
    /// No stack shows a scheduler: a `spawn_blocking` thread (busy from its start, it never parks), or a thread
    /// back in the blocking pool after `block_in_place`, where no park hook ends its busy span.
    NotWorker,
}

/// One stack seen from the task poll it is in.
#[derive(Debug, PartialEq, Eq)]
struct PollView {
    in_scheduler: bool,
    block_in_place: bool,
    /// The innermost frame of the poll that isn't the standard library's is the app's: a poll stuck in a
    /// sleep, a lock or a loop is in the app's code or in std under it, while a task that keeps being polled
    /// is mostly caught inside tokio (sending, receiving, waking).
    own_code: bool,
    /// The app's frames above the innermost poll frame (innermost first); `None` without a poll frame.
    user: Option<UserFrames>,
}

/// The app's frames of a poll, innermost first: each function's name and, for the outermost (the task's body,
/// right under the poll frame), the address it was at: the call site it is in (its return address). A task
/// polled over and over (a ping-pong over channels) is sampled at different awaits, so that call site differs
/// where a long poll's stays put. `0` for the other frames (a long poll calls one function, then another) and
/// for a body in its own code (a spin loop's address moves): they match any address.
pub(crate) type UserFrames = Vec<(String, usize)>;

/// Whether two polls' frames are the same (see [`UserFrames`]), compared from the outermost (the task's body,
/// with its call site) inward as far as the shorter goes: a long poll calls into helpers of the app's own and
/// comes back (`spin` alone, then `spin::{closure}` under it), and samples land at either depth; the body's call
/// site still tells a ping-pong's awaits apart.
fn same_frames(a: &UserFrames, b: &UserFrames) -> bool {
    !a.is_empty()
        && !b.is_empty()
        && a.iter().rev().zip(b.iter().rev()).all(|((na, ia), (nb, ib))| na == nb && (ia == ib || *ia == 0 || *ib == 0))
}

impl PollView {
    /// Inside a poll that a scheduler runs, with some of the app's frames in it.
    fn in_poll(&self) -> bool {
        self.in_scheduler && self.own_code && self.user.as_ref().is_some_and(|u| !u.is_empty())
    }
}

fn poll_view(frames: &[ProbeFrame]) -> PollView {
    let name = |f: &ProbeFrame| f.function.clone().unwrap_or_default();
    let poll = frames.iter().position(|f| {
        let n = name(f);
        POLL_FRAMES.iter().any(|m| n.contains(m))
    });
    let own_code = poll.is_some_and(|i| {
        frames
            .iter()
            .take(i)
            .find(|f| !matches!(f.origin, FrameOrigin::Std | FrameOrigin::Probe | FrameOrigin::Unknown))
            .is_some_and(|f| f.origin == FrameOrigin::User)
    });
    PollView {
        own_code,
        in_scheduler: frames.iter().any(|f| name(f).contains(SCHEDULER_FRAMES)),
        block_in_place: frames.iter().any(|f| name(f).contains("block_in_place")),
        user: poll.map(|i| {
            let innermost = frames.first().map_or(0, |f| f.ip);
            let mut user: UserFrames = frames
                .iter()
                .take(i)
                .filter(|f| f.origin == FrameOrigin::User)
                .map(|f| (name(f), if f.ip == innermost { 0 } else { f.ip }))
                .collect();
            // Only the outermost frame's call site (the await the task's body is at) tells polls apart; frames
            // inside a long poll call one function, then another.
            let outer = user.len().saturating_sub(1);
            for (_, ip) in user.iter_mut().take(outer) {
                *ip = 0;
            }
            user
        }),
    }
}

/// The look's stack seen from its poll, symbolized (waiting for the symbolizer: a verdict needs names).
fn view_of(look: &Look) -> Option<PollView> {
    let raw = look.snapshot.stack.as_ref()?.as_ref().ok()?;
    symbolize(raw, true).map(|frames| poll_view(&frames))
}

/// Stable mode: whether the looks at a worker busy past the threshold show **one poll** holding it. Any of:
///
/// * the thread is asleep in the same system call at two looks in a row or more (a blocking syscall, or a
///   lock wait: a futex under a lock's frames), inside a poll — with no stacks, any call but the park's
///   `futex`/`epoll_wait`;
/// * [`CONFIRM_STACKS`] stack samples in a row (two when they are all and the worker parked right after: the
///   poll is over) have the same frames of the app's own under the task's poll frame: one task that yields in
///   a tight loop shows its frames in a sample now and then, rarely in three in a row. The run may begin in
///   the span's previous candidate (`carry`, returned on rejection for the next one).
///
/// A run of looks counts wherever it is: the first may come before the poll began (the busy span began with
/// other work), the last after it ended (the worker hasn't parked yet).
pub(crate) fn confirm_busy(
    looks: &[Look],
    span_ended: bool,
    carry: Option<&(UserFrames, usize)>,
) -> (BusyVerdict, Option<(UserFrames, usize)>) {
    let views: Vec<Option<PollView>> = looks.iter().map(view_of).collect();
    let stacks: Vec<&PollView> = views.iter().flatten().collect();
    if !stacks.is_empty() && stacks.iter().all(|v| !v.in_scheduler) {
        return (BusyVerdict::NotWorker, None);
    }
    let block_in_place = stacks.iter().any(|v| v.block_in_place);
    let first_frames = || stacks.iter().find(|v| v.in_poll()).and_then(|v| v.user.clone());
    use loopscope_probes::thread::{RunState, ThreadSample};
    let asleep_in = |s: &ThreadSample| {
        matches!(s.state, RunState::Sleeping | RunState::DiskSleep)
            .then(|| s.syscall.as_ref().map_or_else(|| "no system call".to_string(), |c| c.name.to_string()))
    };
    // Runs of looks asleep in one call, each inside a poll (or without a stack): the first may come before the
    // poll began (the span began with other work), later ones after it ended.
    let mut runs: Vec<(String, usize, bool)> = Vec::new();
    for (l, v) in looks.iter().zip(&views) {
        // The app's frames in one stack of a run are enough: an outside unwind of a thread asleep in a call can
        // come out shorter than a signal's.
        let call = l
            .snapshot
            .sample
            .as_ref()
            .ok()
            .and_then(asleep_in)
            .filter(|_| v.as_ref().is_none_or(|v| v.in_scheduler && v.user.is_some()));
        match (call, runs.last_mut()) {
            (Some(c), Some((last, n, seen))) if *last == c && *n > 0 => {
                *n += 1;
                *seen |= v.as_ref().is_some_and(PollView::in_poll);
            }
            (Some(c), _) => runs.push((c, 1, v.as_ref().is_some_and(PollView::in_poll))),
            (None, _) => runs.push((String::new(), 0, false)),
        }
    }
    for (call, n, seen_in_poll) in runs {
        // Without a stack, the park's own waits can't be told from the app's.
        let park = !seen_in_poll && (loopscope_probes::thread::is_futex_syscall(&call) || call.starts_with("epoll_"));
        if n >= 2 && !park && (seen_in_poll || stacks.is_empty()) {
            let verdict = BusyVerdict::Stall {
                reason: format!("asleep in {call} at {n} looks in a row, inside one poll"),
                block_in_place,
                frames: first_frames(),
            };
            return (verdict, None);
        }
    }
    // Runs of stacks (failed captures don't count either way) inside one poll with the same app frames, the
    // first continuing the run the span's previous candidate ended on (`carry`): a runnable thread on a crowded
    // CPU gives few stacks per candidate, and a spin goes on agreeing with itself from one to the next.
    let (mut frames, mut run) = carry.map_or((None, 0), |(f, n)| (Some(f.clone()), *n));
    let mut best = (None, 0);
    for v in &stacks {
        if !v.in_poll() {
            (frames, run) = (None, 0);
        } else if let (Some(f), Some(u)) = (&frames, &v.user)
            && same_frames(f, u)
        {
            run += 1;
        } else {
            (frames, run) = (v.user.clone(), 1);
        }
        if run > best.1 {
            best = (frames.clone(), run);
        }
    }
    let carried = frames.map(|f| (f, run));
    let wanted = if span_ended && best.1 == stacks.len() + carry.map_or(0, |c| c.1) { 2 } else { CONFIRM_STACKS };
    if best.1 >= wanted {
        let verdict = BusyVerdict::Stall {
            reason: format!("the same frames under the task's poll in {} stack samples in a row", best.1),
            block_in_place,
            frames: best.0,
        };
        return (verdict, None);
    }
    let why = format!(
        "{} looks, {} stacks: not one poll (short polls, or the scheduler's own work)",
        looks.len(),
        stacks.len()
    );
    (BusyVerdict::NotOnePoll(why), carried)
}

/// Stable mode: whether a later look at a confirmed stall still shows the same poll (the app's `frames` under
/// a poll frame, when the confirmation saw them). `None` when the look has no stack to tell by, or when it shows
/// a scheduler but the confirmation had no frames to compare with.
///
/// A stack with no scheduler on it is never the same poll, frames or not: the thread left the runtime without
/// a park hook ending its busy span (a current-thread runtime's `block_on` returned, or `block_in_place` sent it
/// back to the blocking pool). A stall confirmed by its system call alone (no stack then) has no frames:
/// leaving the scheduler is the only end a later look can show for it.
pub(crate) fn same_poll(look: &Look, frames: Option<&UserFrames>) -> Option<bool> {
    still_in_poll(&view_of(look)?, frames)
}

/// [`same_poll`] on a stack already seen from its poll.
fn still_in_poll(v: &PollView, frames: Option<&UserFrames>) -> Option<bool> {
    if !v.in_scheduler {
        return Some(false);
    }
    let frames = frames?;
    Some(v.user.as_ref().is_some_and(|u| same_frames(u, frames)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str, origin: FrameOrigin) -> ProbeFrame {
        ProbeFrame { ip: 0, function: Some(name.into()), file: None, line: None, origin, inlined: false, object: None }
    }

    /// A worker's stack, innermost first: the app's frames, tokio's task poll, the scheduler, and (below it)
    /// the blocking-pool task that runs the worker itself.
    fn worker_stack(app: &[&str]) -> Vec<ProbeFrame> {
        let mut frames = vec![frame("std::thread::sleep", FrameOrigin::Std)];
        frames.extend(app.iter().map(|f| frame(f, FrameOrigin::User)));
        frames.extend([
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", FrameOrigin::Runtime),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::blocking::pool::Inner::run", FrameOrigin::Runtime),
        ]);
        frames
    }

    #[test]
    fn a_task_poll_shows_the_apps_frames_above_the_innermost_poll_frame() {
        let v = poll_view(&worker_stack(&["app::handler", "app::serve::{async block}"]));
        assert!(v.in_scheduler && v.in_poll() && !v.block_in_place);
        let names: Vec<String> = v.user.unwrap_or_default().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app::handler", "app::serve::{async block}"]);
    }

    #[test]
    fn the_schedulers_own_work_is_no_poll_of_the_app() {
        // Between polls: the innermost poll frame is the one that runs the worker, with no app frame above it.
        let v = poll_view(&worker_stack(&[]));
        assert!(v.in_scheduler && !v.in_poll());
    }

    #[test]
    fn a_spawn_blocking_closure_is_no_worker() {
        let frames = vec![
            frame("app::load_file", FrameOrigin::User),
            frame("tokio::runtime::blocking::task::BlockingTask::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::blocking::pool::Inner::run", FrameOrigin::Runtime),
        ];
        let v = poll_view(&frames);
        assert!(!v.in_scheduler, "{v:?}");
    }

    #[test]
    fn a_task_polled_again_and_again_differs_by_its_call_sites() {
        // A long poll: the body stays at one call site; the frames inside it match by name.
        let spin_a = vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1010)];
        let spin_b = vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1010)];
        assert!(same_frames(&spin_a, &spin_b));
        // Sampled one level deeper, in a helper the spin calls: still the same poll.
        let deeper = vec![("app::spin::{closure}".to_string(), 0), ("app::spin".to_string(), 0), spin_a[1].clone()];
        assert!(same_frames(&spin_a, &deeper) && same_frames(&deeper, &spin_b));
        // ... but not a different body, nor one at another call site.
        let other = vec![("app::spin".to_string(), 0), ("app::other".to_string(), 0x1010)];
        assert!(!same_frames(&spin_a, &other));
        assert!(!same_frames(&spin_a, &vec![("app::spin".to_string(), 0), ("app::handler".to_string(), 0x1090)]));
        let frames = worker_stack(&["app::spin", "app::handler"]);
        let v = poll_view(&frames);
        assert!(v.user.is_some_and(|u| u.iter().take(1).all(|(_, ip)| *ip == 0)));
        // A ping-pong: sampled at its send, then at its receive.
        let at_send = vec![("app::ping::{async block}".to_string(), 0x3010)];
        let at_recv = vec![("app::ping::{async block}".to_string(), 0x3080)];
        assert!(!same_frames(&at_send, &at_recv));
    }

    #[test]
    fn a_task_caught_inside_tokio_is_not_held_by_its_own_code() {
        let mut frames = worker_stack(&["app::ping::{async block}"]);
        frames.insert(1, frame("tokio::sync::mpsc::bounded::Sender::send", FrameOrigin::Runtime));
        let v = poll_view(&frames);
        assert!(v.in_scheduler && !v.own_code && !v.in_poll(), "{v:?}");
    }

    #[test]
    fn block_in_place_is_seen_on_the_stack() {
        let v = poll_view(&worker_stack(&[
            "app::legacy",
            "tokio::runtime::scheduler::multi_thread::worker::block_in_place",
            "app::handler",
        ]));
        assert!(v.block_in_place && v.in_poll());
    }

    /// A current-thread runtime's thread inside `block_on`, polling a task, and the same thread after
    /// `block_on` returned, asleep in the caller's own code (no park hook ended its busy span).
    #[test]
    fn a_thread_out_of_its_runtime_is_no_longer_in_the_poll() {
        let in_runtime = vec![
            frame("std::thread::sleep", FrameOrigin::Std),
            frame("app::handler", FrameOrigin::User),
            frame("app::serve::{async block}", FrameOrigin::User),
            frame("tokio::runtime::task::harness::Harness::poll", FrameOrigin::Runtime),
            frame("tokio::runtime::scheduler::current_thread::CoreGuard::block_on", FrameOrigin::Runtime),
            frame("tokio::runtime::runtime::Runtime::block_on", FrameOrigin::Runtime),
            frame("app::main", FrameOrigin::User),
        ];
        let left = vec![
            frame("std::thread::sleep", FrameOrigin::Std),
            frame("app::after_the_runtime", FrameOrigin::User),
            frame("app::main", FrameOrigin::User),
        ];
        let inside = poll_view(&in_runtime);
        let frames = inside.user.clone().expect("a poll frame");
        assert_eq!(still_in_poll(&inside, Some(&frames)), Some(true));
        // Confirmed from its system call alone, the stall has no frames: a stack inside the runtime can't tell.
        assert_eq!(still_in_poll(&inside, None), None);
        // Out of the runtime it is over, whether the confirmation saw frames or not.
        let outside = poll_view(&left);
        assert_eq!(still_in_poll(&outside, Some(&frames)), Some(false));
        assert_eq!(still_in_poll(&outside, None), Some(false));
    }
}
