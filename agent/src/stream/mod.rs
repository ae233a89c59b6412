//! Stream.
pub(crate) mod feed;
