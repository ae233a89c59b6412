//! The prober (`loopscope-prober`): takes the looks at stalled threads that the watchdog asks for, so the
//! watchdog itself never waits on a probe.
//!
//! A look can take milliseconds: reading `/proc/self/task/<tid>/syscall` of a thread that is on a CPU waits
//! until the kernel takes it off, and a stack capture waits until the thread runs to take the signal, which
//! on a crowded CPU can be many milliseconds. A watchdog doing that itself was blind for as long: other
//! workers' stalls were flagged late, and the next poll's first scheduler reading came late (which leans the
//! poll's figures toward "blocked"). So the watchdog only reads clocks, sequence numbers and `schedstat`,
//! and hands every message about a stall to this thread, with the look it wants taken. The prober takes
//! the look, puts it in the message and forwards the message to the agent thread.
//!
//! Every message of a stall passes through here in order (its start, updates, samples and end), so the
//! agent thread never sees a stall end before it started. The prober may block on the agent thread's queue:
//! only it waits then, never the watchdog, and looks that come too late to describe their poll are thrown
//! away by the sequence check below.

use crate::shared::Shared;
use crate::watch::probing::{self, Look, WorkerMotion};
use crate::watch::watchdog::{LookRequest, ProbeJob, WatchMsg};
use loopscope_probes::thread::RunState;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeMetrics};

pub(crate) fn run(shared: Arc<Shared>, handle: Option<Handle>, rx: Receiver<ProbeJob>, tx: SyncSender<WatchMsg>) {
    // Stable mode's confirmations read the workers' figures around their looks (`probing::WorkerMotion`).
    let metrics = handle.map(|h| h.metrics());
    // A look that comes after its poll ended is thrown away, so on a busy machine a prober kept waiting for a
    // CPU loses the looks. Nice -10 where permitted (never real-time: a capture may wait for its target).
    let _ = loopscope_probes::thread::raise_priority(false, -10);
    // Ends when the watchdog exits (its sender is dropped) after draining what it sent.
    while let Ok(ProbeJob { mut msg, look }) = rx.recv() {
        let confirm = look.as_ref().filter(|req| req.confirm).map(|req| (req.slot.clone(), req.seq, req.tid));
        let look = look.and_then(|req| take_look(&shared, &req));
        match &mut msg {
            WatchMsg::Started(flag) => {
                let first = look.as_ref().map(|l| (l.at_elapsed, std::time::Instant::now()));
                if let (Some((slot, seq, tid)), Some((at, t0))) = (confirm, first) {
                    let stacks = usize::from(look.as_ref().is_some_and(|l| matches!(l.snapshot.stack, Some(Ok(_)))));
                    let first = (at, t0, stacks);
                    (flag.more_looks, flag.span_ended, flag.motion) =
                        confirm_looks(&shared, metrics.as_ref(), &slot, seq, tid, first);
                }
                flag.look = look;
            }
            WatchMsg::Updated { look: l, .. } => *l = look,
            WatchMsg::Sampled { look: l, .. } => match look {
                Some(look) => *l = Some(look),
                // Nothing to add: the poll ended before the look.
                None => continue,
            },
            WatchMsg::Late(_) | WatchMsg::Ended { .. } => {}
        }
        if tx.send(msg).is_err() {
            return;
        }
    }
}

/// Looks at the thread, if it still runs the poll. The look must describe that poll:
///
/// * its `/proc` state is thrown away (with the stack) if the poll ended while it was read;
/// * its stack is captured only if the poll is still in flight right before the capture, and kept only if it
///   still is right after. A thread running on another CPU can end the poll in the microseconds before a
///   signal lands (`tests/busy` saw a 2.3 ms sleep blamed on the worker's condvar wait that followed it), so
///   a stack that may come from after the end is dropped, at the cost of the stack of a stall that ends just
///   after its capture; a stall that goes on is captured again at its next doubling.
/// * a stack unwound from outside (a thread blocked in a call that a signal would interrupt) is likewise kept
///   only if the poll is still in flight after the unwind. That unwind takes whatever call the thread is blocked in
///   when it reads it: the poll's sleep, or (seen in `examples/accuracy/`, a `block_on` body) the next sleep
///   of the code that ran after the poll ended, which then stood as the stall's culprit. The unwinder proves
///   the thread did not move while it was read, so a poll in flight before and after means the call was the
///   poll's.
fn take_look(shared: &Shared, req: &LookRequest) -> Option<Look> {
    if !req.slot.still_in(req.seq) {
        shared.discarded_looks.fetch_add(1, Relaxed);
        return None;
    }
    let mut look = Look { at_elapsed: req.at_elapsed, snapshot: probing::look(req.tid, None) };
    if !req.slot.still_in(req.seq) {
        shared.discarded_looks.fetch_add(1, Relaxed);
        return None;
    }
    if req.with_stack && req.slot.still_in(req.seq) {
        // A runnable thread takes the signal only when it gets a CPU; don't hold the other looks up for
        // long. A stall that goes on is captured again at its next doubling.
        let runnable = look.snapshot.sample.as_ref().is_ok_and(|s| s.state == RunState::Running);
        let first_stack = req.captured.load(Relaxed) == 0;
        let timeout = match (runnable, req.confirm) {
            (true, true) => probing::CONFIRM_CAPTURE_TIMEOUT,
            (true, false) if !first_stack => probing::RUNNABLE_CAPTURE_TIMEOUT,
            (true, false) | (false, _) => probing::CAPTURE_TIMEOUT,
        };
        let stack = probing::look(req.tid, Some(timeout)).stack;
        // Kept only if the poll is still in flight after the capture (see above): a signal can also land after
        // the poll ended, on a thread that was running when asked and then went on to park (seen: a 2.3 ms
        // sleep blamed on the worker's own condvar wait).
        if !req.slot.still_in(req.seq) {
            shared.discarded_looks.fetch_add(1, Relaxed);
        } else {
            look.snapshot.stack = stack;
            if matches!(look.snapshot.stack, Some(Ok(_))) {
                req.captured.fetch_add(1, Relaxed);
            }
        }
    }
    Some(look)
}

/// Looks taken after the first at a busy worker (stable mode), `probing::CONFIRM_GAP` apart, until
/// `CONFIRM_STACKS` stacks (counting the first look's stacks, in `first` with its time into the span and the
/// moment it was taken) or `CONFIRM_MAX_LOOKS` looks, for the agent thread to decide whether one poll holds it
/// (`probing::confirm_busy`). Stops early if the span ends (the worker parked: whatever held it is over), and
/// says so. The prober sleeps between them: it looks at nothing else meanwhile, for a few milliseconds, as it
/// does while a capture waits for a thread.
///
/// Also returns what tokio's stable worker metrics did meanwhile, and how long the thread ran on a CPU
/// ([`WorkerMotion`]; `None` without the metrics; an empty window when the span ended at the first look after).
/// While the thread is runnable but has not yet run [`probing::MIN_RUN`] in the window, the window is
/// stretched: on a crowded machine a worker the OS keeps waiting runs few polls between looks, too few for
/// tokio to publish anything.
fn confirm_looks(
    shared: &Shared,
    metrics: Option<&RuntimeMetrics>,
    slot: &std::sync::Arc<crate::shared::slots::WorkerSlot>,
    seq: u64,
    tid: i32,
    (first_at, first_taken, mut stacks): (Duration, Instant, usize),
) -> (Vec<Look>, bool, Option<WorkerMotion>) {
    // The workers' figures and the thread's CPU clock, read together.
    let reading = || metrics.map(|m| Reading { marks: worker_marks(m), at: Instant::now(), cpu: cpu_time(tid) });
    let before = reading();
    // The last reading taken before a look that found the span still open: the window ends there, so a park
    // that ends the span (and publishes the worker's figures) never counts as the poll's.
    let mut last_in_span: Option<Reading> = None;
    let mut looks: Vec<Look> = Vec::new();
    let mut ended = false;
    while stacks < probing::CONFIRM_STACKS && looks.len() + 1 < probing::CONFIRM_MAX_LOOKS {
        std::thread::sleep(probing::CONFIRM_GAP);
        let req = LookRequest {
            slot: slot.clone(),
            seq,
            tid,
            at_elapsed: first_at + first_taken.elapsed(),
            with_stack: true,
            captured: Default::default(),
            confirm: true,
        };
        let pre = reading();
        match take_look(shared, &req) {
            Some(l) => {
                stacks += usize::from(matches!(l.snapshot.stack, Some(Ok(_))));
                looks.push(l);
                last_in_span = pre;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    // A runnable thread that has not yet run `MIN_RUN` in the window: the OS keeps it waiting, and the workers'
    // figures would say little yet. Wait for it (no more looks: a reading and the span still open after it are
    // enough), for at most a threshold from the window's start; by then the stall, if it is one, is reported
    // anyway at the next candidate.
    let runnable = looks.last().is_some_and(|l| l.snapshot.sample.as_ref().is_ok_and(|s| s.state == RunState::Running));
    let until = before.as_ref().map(|b| b.at + Duration::from_nanos(shared.stall_ns));
    let ran_between = |a: &Reading, b: &Reading| a.cpu.zip(b.cpu).map(|(a, b)| b.saturating_sub(a));
    if !ended && runnable && last_in_span.is_some() {
        loop {
            let r = reading();
            if !slot.still_in(seq) {
                ended = true;
                break;
            }
            let short = before
                .as_ref()
                .zip(r.as_ref())
                .and_then(|(b, r)| ran_between(b, r))
                .is_some_and(|d| d < probing::MIN_RUN);
            last_in_span = r;
            if !short || until.is_none_or(|u| Instant::now() >= u) {
                break;
            }
            std::thread::sleep(probing::CONFIRM_GAP);
        }
    }
    // No reading inside the span after the first (it ended at the next look): an empty window, which says
    // nothing, so the figures agree with no rule (`WorkerMotion::still`). Without this, a run of "the same
    // frames" carried over from earlier candidates of a storm was confirmed as a stall that just ended.
    let motion = before.map(|from| {
        let to = last_in_span.as_ref().unwrap_or(&from);
        // The workers this thread may run: all of them until the park hooks have narrowed it down, less those
        // that other threads are known to run.
        let mask = match slot.worker_mask.load(Relaxed) {
            0 => u64::MAX,
            m => m,
        };
        let others = shared
            .slots
            .list()
            .iter()
            .filter(|s| !std::sync::Arc::ptr_eq(s, slot))
            .map(|s| s.worker_mask.load(Relaxed))
            .filter(|m| m.count_ones() == 1)
            .fold(0u64, |acc, m| acc | m);
        let mask = if mask & !others == 0 { mask } else { mask & !others };
        let n = from.marks.len();
        let mine = |i: usize| n > 64 || mask & (1 << i) != 0;
        let candidates = (0..n).filter(|&i| mine(i)).count();
        // A worker gone between the readings (the runtime shutting down) counts as moved.
        let moved = (0..n).filter(|&i| mine(i) && to.marks.get(i) != from.marks.get(i)).count();
        let thread_ran = ran_between(&from, to);
        WorkerMotion { window: to.at - from.at, candidates, moved, thread_ran }
    });
    (looks, ended || !slot.still_in(seq), motion)
}

/// The workers' published figures and a thread's CPU clock at one moment (see [`confirm_looks`]).
struct Reading {
    marks: Vec<(Duration, u64)>,
    at: Instant,
    cpu: Option<Duration>,
}

fn cpu_time(tid: i32) -> Option<Duration> {
    loopscope_probes::thread::cpu_time(tid).ok()
}

/// Each worker's published busy time and park count (see [`WorkerMotion`]).
fn worker_marks(m: &RuntimeMetrics) -> Vec<(Duration, u64)> {
    (0..m.num_workers()).map(|i| (m.worker_total_busy_duration(i), m.worker_park_count(i))).collect()
}
