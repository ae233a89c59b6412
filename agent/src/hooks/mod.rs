//! Hooks (the hot path).
pub(crate) mod slots;
pub(crate) mod tables;
#[cfg(tokio_unstable)]
pub(crate) mod task_hooks;
