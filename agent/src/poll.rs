//! The start and end of a timed poll: the hot path that the task hooks (`hooks.rs`, with `--cfg tokio_unstable`)
//! and instrumented futures (`instrument.rs`, in every build) share. It writes only this thread's slot and,
//! after the poll, the task's table entry.
//!
//! Budget: no lock, no allocation, no channel send. A poll costs two TSC reads, a thread-local lookup, one probe
//! into the task table, and a handful of `Relaxed` stores into memory that only this thread writes (see
//! `slots.rs` and `tables.rs` for why that is sound). Two rare paths make syscalls (still no lock or
//! allocation): a poll that ran past a quarter of the stall threshold, and a poll that starts more than a
//! quarter of the threshold after the thread's last such reading, read the thread's own scheduler clocks (a
//! few µs; see `slots::Closing`).

use crate::shared::Shared;
use crate::shared::slots;
use std::sync::Arc;
use std::sync::atomic::Ordering::*;

impl Shared {
    /// A poll of `id` (a task, or a future timed with `Agent::instrument`) starts on this thread.
    #[inline]
    pub(crate) fn begin_poll(self: &Arc<Self>, id: u64, location_addr: usize, start: fn(&Arc<Shared>)) {
        if !self.started.load(Relaxed) {
            start(self);
        }
        // Only this thread's own slot is written here; the task table is touched once per poll, after it.
        slots::with_slot(self.id, &self.slots, |slot| {
            // Read the clock last so the hook's own work is not charged to the task.
            let start = self.clock.raw();
            slot.begin(id, location_addr, start);
            // Rare: the thread's newest own scheduler reading is older than a quarter of the threshold (a pause,
            // or a run of short polls). Take one now, so that this poll opens with a reading from its start
            // even if the watchdog, starved on a busy machine, first sees it late or never: without it, all of
            // the poll up to the watchdog's first reading would count as the poll's own time. A few µs, at most
            // once per quarter threshold per busy thread (0.2% of its time at the default threshold).
            if self.config.probes && start.wrapping_sub(slot.own_at.load(Relaxed)) > self.own_reading_every_raw {
                self.refresh_own_reading(slot, id);
            }
        });
        // After an idle pause the watchdog sleeps a whole threshold; wake it so that this poll's first
        // scheduler reading comes early (see watchdog.rs). Only the first poll after the pause pays for it.
        if self.watchdog_asleep.load(Relaxed) {
            self.wake_watchdog(id);
        }
    }

    /// The poll in flight on this thread ends.
    #[inline]
    pub(crate) fn end_poll(&self) {
        // Read the clock first, for the same reason.
        let end = self.clock.raw();
        slots::with_slot(self.id, &self.slots, |slot| {
            let ns = self.clock.delta_as_nanos(slot.poll_start.load(Relaxed), end);
            let slow = ns >= self.slow_ns;
            let long = ns >= self.stall_ns;
            if ns >= self.closing_ns && self.config.probes {
                // Rare: a poll of a quarter of the threshold or more just ended. The thread's own scheduler
                // clocks now, published with the end, split this poll's time exactly if it was a stall (the
                // watchdog's reading would come later, or never if the thread exits), and open the thread's next
                // poll (see `slots::Closing`). A few µs of syscalls after a poll of at least 2.5 ms at the default
                // threshold; no lock, no allocation.
                slot.record_own_closing(&self.clock);
            }
            // The task in flight (none if the hooks were installed while a poll ran), looked up before its end
            // is published: a long poll must be remembered first, or a watchdog that sees the end in between
            // (this thread preempted right here, as on any busy machine) would close the stall with the last
            // duration it saw in flight, not the poll's own.
            let Some(id) = slot.in_flight_task() else { return };
            let entry = self.tasks.find(id);
            let tracked = self.tasks.get(entry);
            if long {
                // Rare: remember the location now, while the entry is certainly this task's.
                let location = match tracked {
                    Some(e) => e.location.load(Relaxed),
                    None => self.locations.find(slot.task_location.load(Relaxed)),
                };
                slot.record_long(ns, entry, location);
            }
            slot.end(ns, slow);
            // Untracked tasks (table full) still count in this thread's totals above.
            match tracked {
                Some(e) => {
                    e.record_poll(ns, slow);
                    // tokio runs the terminate hook inside the final poll, before this hook: finish (or retire)
                    // the entry only now, so nobody frees an entry this poll is still writing. One relaxed load
                    // of the state on every other poll.
                    self.tasks.end_of_poll(entry, e, &self.locations, &self.finished_ring);
                }
                // Also a future loopscope instruments (not a task, so no entry): its polls belong in the poll
                // histogram all the same.
                None => slot.record_untracked(ns),
            }
        });
    }
}
