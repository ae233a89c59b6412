//! The atomics of the per-thread slots (`shared/slots.rs`), swapped for [loom](https://docs.rs/loom)'s model-checked
//! ones in the slots' loom tests.
//!
//! Only the slots go through this shim: they hold the seqlock that the watchdog reads while a poll runs, the
//! one piece of memory-ordering reasoning that x86 would never catch being wrong (a store can only become
//! visible early on weaker hardware, e.g. aarch64). Everywhere else, and in every ordinary build, these are
//! `std`'s types, so the shim costs nothing.
//!
//! `loom` is a dev-dependency, so the swap needs `test` as well as `--cfg loopscope_loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loopscope_loom --cfg tokio_unstable" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release -p loopscope --lib shared::slots::loom
//! ```
//!
//! The cfg is this project's own, not loom's customary `--cfg loom`: every crate sees a `RUSTFLAGS` cfg, and
//! under `cfg(loom)` tokio builds its own loom model instead of its runtime, whose `Builder` has no
//! `on_thread_start` (nor the task hooks), so the agent no longer compiles. `RUSTFLAGS` replaces
//! `.cargo/config.toml`'s flags, hence `--cfg tokio_unstable` again; the separate target directory keeps the
//! ordinary build cached (every crate is rebuilt under new flags). A few minutes to build the first time, a few
//! seconds to run in release (about a minute without `--release`).

#[cfg(all(test, loopscope_loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};
#[cfg(not(all(test, loopscope_loom)))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};

/// Locks a mutex, recovering from poisoning: the data behind our locks stays consistent across a panic
/// (plain counters and lists), and the host app must never panic because a loopscope thread did.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
