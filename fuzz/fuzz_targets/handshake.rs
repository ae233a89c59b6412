//! Arbitrary bytes as what a client sends a server: the preamble and the `ClientHello`, as the agent's server
//! reads them. Must never panic, and must reject rather than accept anything but a well-formed opening.
//!
//! The body is `checks::handshake`, shared with `wire/tests/fuzz_seeds.rs`, which runs it in every
//! `cargo test`.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::handshake(data));
