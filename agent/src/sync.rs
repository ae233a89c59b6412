//! The atomics of the per-thread slots (`shared/slots.rs`), swapped for [loom](https://docs.rs/loom)'s model-checked
//! ones in the slots' loom tests.
//!
//! Only the slots go through this shim: they hold the seqlock that the watchdog reads while a poll runs, the
//! one piece of memory-ordering reasoning that x86 would never catch being wrong (a store can only become
//! visible early on weaker hardware, e.g. aarch64). Everywhere else, and in every ordinary build, these are
//! `std`'s types, so the shim costs nothing.
//!
//! `loom` is a dev-dependency, so the swap needs `test` as well as `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p loopscope --lib shared::slots::loom
//! ```
//!
//! `RUSTFLAGS` replaces `.cargo/config.toml`'s `--cfg tokio_unstable`, and it has to: under `cfg(loom)` tokio
//! compiles out `Builder::on_task_spawn` and `on_task_terminate`, so the agent builds as it does without
//! `tokio_unstable` (no hooks), which the slots' model does not need. `-p loopscope` because the dashboard
//! needs tokio's `net` and `signal`, which `cfg(loom)` also removes; the separate target directory keeps the
//! ordinary build cached. A few minutes to build the first time, about ten seconds to run.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};

/// Locks a mutex, recovering from poisoning: the data behind our locks stays consistent across a panic
/// (plain counters and lists), and the host app must never panic because a loopscope thread did.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
