//! Watch.
pub(crate) mod accounting;
pub(crate) mod prober;
pub(crate) mod probing;
pub(crate) mod watchdog;
