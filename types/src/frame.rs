//! Where a stack frame's code comes from.

/// Where a stack frame's code comes from; used to put the user's own frames first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum FrameOrigin {
    /// The application's own code.
    User,
    /// The async runtime and its ecosystem (tokio, futures, mio, loopscope).
    Runtime,
    /// The standard library, libc, the unwinder.
    Std,
    /// The sampling signal's own frames.
    Probe,
    /// Not symbolized.
    Unknown,
}
