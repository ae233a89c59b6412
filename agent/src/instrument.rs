//! Timing futures that are not tasks (stage: hooks). tokio's task hooks see only spawned tasks, so the body of
//! `block_on` (and of `#[tokio::main]` / `#[loopscope::main]`) would be a blind spot: on a current-thread
//! runtime that body shares its thread with every task, and many servers run their accept loop in it.
//!
//! [`Instrumented`] times each poll of the future it wraps exactly as the hooks time a task's poll (the same
//! slot, the same watchdog, the same probes), under an id loopscope gives it and the location where it was
//! instrumented. Reads: the shared state's slot for this thread. Writes: the slot, as the hooks do.

use crate::shared::{Shared, slots};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A future whose every poll loopscope times like a task's poll: a poll that holds the thread past the
/// stall threshold is reported (as [`StallKind::BlockOn`](crate::StallKind::BlockOn)) while it still runs,
/// with its stack and classification. Made by [`Agent::instrument`](crate::Agent::instrument).
///
/// Polled inside another poll on the same thread (a `LocalSet`'s tasks inside the `block_on` body, or inside a
/// spawned task that drives the `LocalSet`), it pauses that poll for its own: each slice of time is charged
/// once, to the future that ran it.
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F> {
    fut: Pin<Box<F>>,
    /// `None` when the agent isn't installed (the future then runs untimed).
    shared: Option<Arc<Shared>>,
    start: fn(&Arc<Shared>),
    id: u64,
    location_addr: usize,
    /// A task (`Agent::spawn_local`, `Agent::spawn`): its id is tokio's, learned at its first poll.
    local: bool,
}

impl<F> std::fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented").field("id", &self.id).field("timed", &self.shared.is_some()).finish()
    }
}

impl<F: Future> Instrumented<F> {
    pub(crate) fn new(
        fut: F,
        shared: Option<Arc<Shared>>,
        start: fn(&Arc<Shared>),
        location: &'static std::panic::Location<'static>,
    ) -> Self {
        // Interned now, off the poll path, so the watchdog can name the location of a stall.
        if let Some(s) = &shared {
            s.locations.intern(location);
        }
        let location_addr = location as *const std::panic::Location<'static> as usize;
        Instrumented {
            fut: Box::pin(fut),
            shared,
            start,
            id: crate::taskid::next_instrumented_id(),
            location_addr,
            local: false,
        }
    }

    /// The same for a task (spawned onto a `LocalSet` by `Agent::spawn_local`, or onto the runtime by
    /// `Agent::spawn`), which keeps tokio's task id.
    pub(crate) fn local_task(mut self) -> Self {
        self.local = true;
        self
    }
}

/// Ends this poll even if the future panics, so the slot never stays "in a poll", and resumes the poll it
/// interrupted, if any.
struct EndPoll<'a> {
    shared: &'a Arc<Shared>,
    start: fn(&Arc<Shared>),
    /// The poll in flight when this one began (its task id and location): it goes on from here.
    outer: Option<(u64, usize)>,
}

impl Drop for EndPoll<'_> {
    fn drop(&mut self) {
        self.shared.end_poll();
        if let Some((id, location_addr)) = self.outer {
            self.shared.begin_poll(id, location_addr, self.start);
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `Instrumented` is `Unpin` (the future is boxed), so this is a plain `&mut`.
        let this = self.get_mut();
        let Some(shared) = &this.shared else { return this.fut.as_mut().poll(cx) };
        if this.local
            && crate::taskid::is_instrumented(this.id)
            && let Some(id) = tokio::task::try_id()
        {
            this.id = crate::taskid::LOCAL_TASK_BIT | crate::taskid::task_id(id);
        }
        // Polled inside another poll on this thread (a `LocalSet`'s tasks inside the `block_on` body or a
        // spawned task that drives it): that poll pauses here and goes on when this one ends, so each slice of
        // time is charged once, to the future that ran it.
        let outer = slots::existing_slot(shared.id, |s| s.in_flight()).flatten().map(|f| (f.task_id, f.location_addr));
        if outer.is_some() {
            shared.end_poll();
        }
        shared.begin_poll(this.id, this.location_addr, this.start);
        let _end = EndPoll { shared, start: this.start, outer };
        this.fut.as_mut().poll(cx)
    }
}
