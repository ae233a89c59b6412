//! Records that an agent writes for `loopscope check` (CI mode), and the reader the CLI uses.
//!
//! Work in progress: see issue 6.
