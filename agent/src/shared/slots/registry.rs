//! Which slot is this thread's: the registry of an agent's slots, and the thread-local lookup the hooks use
//! (one slot per OS thread per agent, registered on the thread's first poll).

use super::*;

/// Every slot of one agent, live or exited. Locked only when a thread polls for the first time and when the
/// background threads refresh their copy (when `generation` moved) — never on the per-poll path.
#[derive(Debug, Default)]
pub(crate) struct SlotRegistry {
    slots: Mutex<Vec<Arc<WorkerSlot>>>,
    pub(crate) generation: AtomicU64,
}

impl SlotRegistry {
    fn register(&self) -> Arc<WorkerSlot> {
        let slot = Arc::new(WorkerSlot::new());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // A thread that left and came back (e.g. a blocking-pool thread that ran `block_in_place` twice) keeps
        // one slot per registration; old dead ones are pruned by the aggregator.
        slots.push(slot.clone());
        self.generation.fetch_add(1, Release);
        slot
    }

    /// A copy of the current slot list.
    pub(crate) fn list(&self) -> Vec<Arc<WorkerSlot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks every slot as belonging to a shut-down agent.
    pub(crate) fn mark_agent_gone(&self) {
        for s in self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            s.agent_gone.store(true, Relaxed);
        }
    }

    /// Removes dead slots for which `keep` says false (after their counts were folded into totals).
    pub(crate) fn retain(&self, keep: impl FnMut(&Arc<WorkerSlot>) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let before = slots.len();
        slots.retain(keep);
        if slots.len() != before {
            self.generation.fetch_add(1, Release);
        }
    }
}

/// The thread-local handle to this thread's slot in one agent. Dropping it (thread exit) marks the slot dead.
struct SlotRef {
    agent: u64,
    slot: Arc<WorkerSlot>,
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        self.slot.alive.store(false, Release);
    }
}

thread_local! {
    /// This thread's slots, one per agent it has polled for. Nearly always one element.
    static SLOTS: RefCell<Vec<SlotRef>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's slot in agent `agent`, registering one on first use. Returns `None` only if
/// the thread-local is being destroyed (thread exit) or re-entered, in which case the poll is not recorded.
#[inline]
pub(crate) fn with_slot<R>(agent: u64, registry: &SlotRegistry, f: impl FnOnce(&WorkerSlot) -> R) -> Option<R> {
    SLOTS
        .try_with(|cell| {
            {
                let slots = cell.try_borrow().ok()?;
                // Fast path: the first entry is this agent's.
                if let Some(r) = slots.first()
                    && r.agent == agent
                {
                    return Some(f(&r.slot));
                }
                if let Some(r) = slots.iter().find(|r| r.agent == agent) {
                    return Some(f(&r.slot));
                }
            }
            register_slow(cell, agent, registry, f)
        })
        .ok()
        .flatten()
}

#[cold]
#[inline(never)]
fn register_slow<R>(
    cell: &RefCell<Vec<SlotRef>>,
    agent: u64,
    registry: &SlotRegistry,
    f: impl FnOnce(&WorkerSlot) -> R,
) -> Option<R> {
    let slot = registry.register();
    let mut slots = cell.try_borrow_mut().ok()?;
    // Bounded: a thread keeps slots only for agents that are still running (think of a test harness thread
    // that runs many short-lived runtimes one after another).
    slots.retain(|r| !r.slot.agent_gone.load(Relaxed));
    slots.push(SlotRef { agent, slot: slot.clone() });
    drop(slots);
    Some(f(&slot))
}

/// This thread's slot in `agent`, if it has one (does not register).
pub(crate) fn existing_slot<R>(agent: u64, f: impl FnOnce(&WorkerSlot) -> R) -> Option<R> {
    SLOTS
        .try_with(|cell| {
            let slots = cell.try_borrow().ok()?;
            slots.iter().find(|r| r.agent == agent).map(|r| f(&r.slot))
        })
        .ok()
        .flatten()
}
