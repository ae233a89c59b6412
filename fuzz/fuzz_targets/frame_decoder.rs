//! Arbitrary bytes as a server's stream after the preamble: the blocking and the incremental frame decoders,
//! message decoding, and applying whatever decodes to a client `State`. Must never panic or allocate beyond
//! one maximal frame.
//!
//! The body is `checks::frame_decoder`, shared with `wire/tests/fuzz_seeds.rs`, which runs it in every
//! `cargo test`.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::frame_decoder(data));
