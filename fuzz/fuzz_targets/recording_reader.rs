//! Arbitrary bytes as a recording file, and behind a valid header: the reader yields good records and then at
//! most one error, never panics, and never allocates what a forged length announces.
//!
//! The body is `checks::recording_reader`, shared with `wire/tests/fuzz_seeds.rs`, which runs it in every
//! `cargo test`.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::recording_reader(data));
