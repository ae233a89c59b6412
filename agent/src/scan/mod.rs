//! Scan.
pub(crate) mod snapshot;
