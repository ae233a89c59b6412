//! OS-level probes for loopscope. All `unsafe`, FFI and signal code of the project lives here, behind safe types.
//!
//! This crate deliberately has no tokio dependency: it knows about OS threads, not tasks.
