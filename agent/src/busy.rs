//! Stable mode's hooks: tokio's `on_thread_start` / `on_thread_stop` / `on_thread_park` / `on_thread_unpark`
//! (stable APIs, every build). Between an unpark and the next park a worker runs polls (and driver work); each
//! hook marks the start or the end of such a *busy span* in the thread's slot (`WorkerSlot::unpark` / `park`),
//! and the watchdog treats a span that has lasted past the stall threshold as a candidate stall for the probes
//! to confirm (see `watch/watchdog.rs`).
//!
//! Budget, as the task hooks' (`poll.rs`): no lock, no allocation, no channel, no syscall — a thread-local
//! lookup, one clock read and two stores, twice per park rather than twice per poll; and, to learn which of
//! tokio's workers the thread runs, one relaxed load of each worker's park count (`Shared::learn_worker`). The
//! first park of a thread registers its slot (once per thread).
//!
//! A thread is busy from its start (`on_thread_start`) to its first park, so a worker that finds a task queued
//! as it starts is watched from the first poll; and not busy after `on_thread_stop`. tokio runs its
//! multi-thread workers on blocking-pool threads, so `on_thread_start` fires for `spawn_blocking` threads just
//! the same: those never park, and the probes tell them apart the first time their span passes the threshold
//! (no scheduler on their stack: `probing::BusyVerdict::NotWorker`), after which the watchdog leaves them alone.
//! The park hooks fire on workers only (and on a current-thread runtime's `block_on` thread, which tokio starts
//! no thread for: it is known from its first park).
//!
//! A span can outlive the runtime on its thread: tokio's current-thread scheduler runs the park hooks only
//! around a park inside `block_on`, so when the `block_on` future completes after an unpark the thread returns to
//! its caller with its span open, and no hook ever says so (`on_thread_stop` does not fire for the caller's
//! thread, nor do the runtime's metrics move). Nothing here can close it, short of a hook on every poll; the
//! watchdog finds it from the thread's stack instead: no scheduler on it, no stall (`probing::same_poll`, and
//! `NotWorker` for a span not yet confirmed).

use crate::shared::{Shared, slots};
use std::sync::Arc;
use tokio::runtime::Builder;

/// A thread hook callback, as tokio's builder takes it (`on_thread_park`, `on_thread_unpark`).
pub type ThreadHook = Arc<dyn Fn() + Send + Sync + 'static>;

/// The app's thread callbacks, chained behind loopscope's own (tokio keeps one callback per hook).
#[derive(Default, Clone)]
pub(crate) struct ThreadChain {
    pub(crate) start: Option<ThreadHook>,
    pub(crate) stop: Option<ThreadHook>,
    pub(crate) park: Option<ThreadHook>,
    pub(crate) unpark: Option<ThreadHook>,
}

impl std::fmt::Debug for ThreadChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadChain")
            .field("start", &self.start.is_some())
            .field("stop", &self.stop.is_some())
            .field("park", &self.park.is_some())
            .field("unpark", &self.unpark.is_some())
            .finish()
    }
}

/// Sets the four thread hooks on `builder`, each calling the app's chained callback too. `start` starts the
/// agent's threads at the first hook (see `lifecycle.rs`; tokio runs all four inside the runtime's context).
pub(crate) fn install(builder: &mut Builder, shared: &Arc<Shared>, chain: ThreadChain, start: fn(&Arc<Shared>)) {
    let s = shared.clone();
    let app = chain.start;
    builder.on_thread_start(move || {
        s.unparked(start, false);
        if let Some(f) = &app {
            f();
        }
    });
    let s = shared.clone();
    let app = chain.stop;
    builder.on_thread_stop(move || {
        if let Some(f) = &app {
            f();
        }
        // Only a thread that has a slot can be busy; an exiting thread registers none.
        slots::existing_slot(s.id, |slot| slot.park());
    });
    let s = shared.clone();
    let app = chain.unpark;
    builder.on_thread_unpark(move || {
        // The app's callback first, so its cost is not counted in the busy span.
        if let Some(f) = &app {
            f();
        }
        s.unparked(start, true);
    });
    let s = shared.clone();
    let app = chain.park;
    builder.on_thread_park(move || {
        s.parking(start);
        if let Some(f) = &app {
            f();
        }
    });
}

/// Sets the app's own thread callbacks, unchanged, when loopscope doesn't use those hooks (task-hooks
/// mode): passed through the agent, they must still run.
pub(crate) fn pass_through(builder: &mut Builder, chain: ThreadChain) {
    if let Some(f) = chain.start {
        builder.on_thread_start(move || f());
    }
    if let Some(f) = chain.stop {
        builder.on_thread_stop(move || f());
    }
    if let Some(f) = chain.unpark {
        builder.on_thread_unpark(move || f());
    }
    if let Some(f) = chain.park {
        builder.on_thread_park(move || f());
    }
}

impl Shared {
    /// This worker unparked (`after_park`; or the thread started): it is busy from now on.
    #[inline]
    fn unparked(self: &Arc<Self>, start: fn(&Arc<Shared>), after_park: bool) {
        if !self.started.load(std::sync::atomic::Ordering::Relaxed) {
            start(self);
        }
        // Read the clock last, inside, so neither the lookup nor the learning is charged to the span.
        slots::with_slot(self.id, &self.slots, |slot| {
            if after_park {
                self.learn_worker(slot);
            }
            slot.unpark(self.clock.raw());
        });
        // After an idle pause the watchdog sleeps until a hook wakes it (see watchdog.rs); in stable mode this is
        // that hook. The span's start is stored above, before the flag is read: the watchdog's membarrier makes
        // it see the span, or this read see the flag.
        if self.watchdog_asleep.load(std::sync::atomic::Ordering::Relaxed) {
            self.wake_sleeping_watchdog();
        }
    }

    /// Narrows down which of tokio's workers this thread runs (`WorkerSlot::worker_mask`), from the workers'
    /// published park/unpark counts. tokio's unpark hook runs after the worker's park loop has published its
    /// figures on waking (`unparked()`, then maintenance's `submit`), and its park hook before the worker
    /// publishes the park (`about_to_park()`, then `submit`), so at both this thread's worker shows an even
    /// count, as does any worker busy since its own last wake; a parked worker shows an odd one (published on
    /// the way into its park). So the thread's worker is among the even ones at every park and unpark, and the
    /// intersection shrinks to it as soon as the others have been seen parked. An empty intersection (tokio
    /// moved a worker's core to another thread in `block_in_place`) starts afresh.
    ///
    /// Costs a runtime handle from the thread's context and one relaxed load per worker, twice per park (not
    /// per poll); no lock, no allocation.
    #[inline]
    fn learn_worker(&self, slot: &slots::WorkerSlot) {
        use std::sync::atomic::Ordering::Relaxed;
        // The hooks run inside the runtime's context. (A handle kept in `Shared` would keep the runtime alive:
        // the runtime holds these hooks, which hold `Shared`.) Two reference counts, no allocation.
        let Ok(h) = tokio::runtime::Handle::try_current() else { return };
        let m = h.metrics();
        let n = m.num_workers();
        if n > 64 {
            return;
        }
        let even = (0..n).filter(|&i| m.worker_park_unpark_count(i) & 1 == 0).fold(0u64, |acc, i| acc | 1 << i);
        let known = slot.worker_mask.load(Relaxed);
        let narrowed = if known & even == 0 { even } else { known & even };
        slot.worker_mask.store(narrowed, Relaxed);
    }

    /// This worker is about to park: its busy span ends. The first park of a thread registers its slot, which
    /// is how a worker becomes known.
    #[inline]
    fn parking(self: &Arc<Self>, start: fn(&Arc<Shared>)) {
        if !self.started.load(std::sync::atomic::Ordering::Relaxed) {
            start(self);
        }
        slots::with_slot(self.id, &self.slots, |slot| {
            slot.park();
            self.learn_worker(slot);
        });
    }
}
