//! tokio's `task::Id` as a `u64`.
//!
//! tokio exposes the id only through `Display`, `Debug` and `Hash`. Formatting on every poll would allocate,
//! so we feed the id to a `Hasher` that keeps the one `u64` tokio's derived `Hash` writes. A unit test checks
//! this against `Display` so a change in tokio's representation fails loudly instead of mixing tasks up.

use std::hash::{Hash, Hasher};

#[derive(Default)]
struct Capture(u64);

impl Hasher for Capture {
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by tokio's current representation; fold anything else into a stable value.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

/// The task id as a number (never 0 for a real task).
#[inline]
pub(crate) fn task_id(id: tokio::task::Id) -> u64 {
    let mut h = Capture(0);
    id.hash(&mut h);
    h.0
}

/// Ids loopscope gives futures that are not tasks (`Agent::instrument`, the body of `#[loopscope::main]`) have
/// this bit set; tokio's task ids count up from 1 and never reach it.
pub(crate) const FUTURE_ID_BIT: u64 = 1 << 62;

/// Whether `id` is one loopscope gave an instrumented future, not a tokio task's.
#[inline]
pub(crate) fn is_instrumented(id: u64) -> bool {
    id & FUTURE_ID_BIT != 0
}

/// A task whose future loopscope wraps — a `LocalSet` task spawned with `Agent::spawn_local` (tokio fires no
/// hooks for those), or a task spawned with `Agent::spawn` (stable mode has no task hooks) — carries tokio's own
/// id with this bit set, so the watchdog knows it is a task whatever thread runs it.
pub(crate) const LOCAL_TASK_BIT: u64 = 1 << 61;

/// The id to report for a poll: tokio's, without loopscope's marker bit for local tasks.
#[inline]
pub(crate) fn reported_id(id: u64) -> u64 {
    id & !LOCAL_TASK_BIT
}

/// A fresh id for an instrumented future.
pub(crate) fn next_instrumented_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    FUTURE_ID_BIT | NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_display() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for _ in 0..3 {
            let j = rt.spawn(async {});
            let id = j.id();
            assert_eq!(super::task_id(id).to_string(), id.to_string());
            rt.block_on(j).unwrap();
        }
    }
}
