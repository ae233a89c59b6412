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
use crate::watch::probing::{self, Look};
use crate::watch::watchdog::{LookRequest, ProbeJob, WatchMsg};
use loopscope_probes::thread::RunState;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;
use std::sync::mpsc::{Receiver, SyncSender};

pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<ProbeJob>, tx: SyncSender<WatchMsg>) {
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
                    (flag.more_looks, flag.span_ended) = confirm_looks(&shared, &slot, seq, tid, at, t0, stacks);
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
/// `CONFIRM_STACKS` stacks (counting the first look's `stacks`) or `CONFIRM_MAX_LOOKS` looks, for the agent
/// thread to decide whether one poll holds it (`probing::confirm_busy`). Stops early if the span ends (the
/// worker parked: whatever held it is over), and says so. The prober sleeps between them: it looks at nothing
/// else meanwhile, for a few milliseconds, as it does while a capture waits for a thread.
fn confirm_looks(
    shared: &Shared,
    slot: &std::sync::Arc<crate::shared::slots::WorkerSlot>,
    seq: u64,
    tid: i32,
    first_at: std::time::Duration,
    first_taken: std::time::Instant,
    mut stacks: usize,
) -> (Vec<Look>, bool) {
    let mut looks = Vec::new();
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
        match take_look(shared, &req) {
            Some(l) => {
                stacks += usize::from(matches!(l.snapshot.stack, Some(Ok(_))));
                looks.push(l);
            }
            None => return (looks, true),
        }
    }
    (looks, false)
}
