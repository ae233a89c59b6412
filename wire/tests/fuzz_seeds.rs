//! The fuzz targets (`fuzz/fuzz_targets/*`), run as ordinary tests: the same bodies (`fuzz/checks.rs`, shared
//! by `#[path]`) on well-formed seeds and a fixed number of deterministic mutations of them.
//!
//! This is not fuzzing: libFuzzer needs nightly Rust and finds new inputs by coverage, and CI has stable Rust
//! only. What it gives CI is every assertion the targets make (no panic, the incremental and blocking frame
//! decoders agree, an accepted handshake re-encodes, a recording reader stops at its first error), checked on
//! inputs that reach deep into each decoder: valid streams, handshakes and recordings, then bit flips,
//! truncations, forged lengths and splices of them. It also replays every file under
//! `fuzz/regressions/TARGET/` (committed: put an input that crashed a fuzzing run there, so it stays fixed)
//! and, when present, `fuzz/corpus/TARGET/` (the local corpus of `cargo fuzz`, not committed). The same
//! seed gives the same inputs on every run, so a failure reproduces; the test names the failing input.

// A failed unwrap is a failed test, in helpers too.
#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/checks.rs"]
mod checks;

use loopscope_wire::proto::{
    self, FullState, Goodbye, LocationInfo, PROTOCOL_VERSION, Pong, ProtocolVersion, ServerFrame, ServerMessage,
    TaskSample, Tick,
};
use loopscope_wire::record::{Recorder, example_hello};
use loopscope_wire::{Location, example_stall};
use std::path::Path;

/// Mutated inputs per target: about a second for all three in a debug build.
const ITERATIONS: usize = 10_000;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Messages of every kind a server sends, with content in every field a client interprets.
fn server_messages() -> Vec<ServerMessage> {
    let location = LocationInfo { id: 0, location: Location::new("src/main.rs", 12, 5) };
    let tasks: Vec<TaskSample> = (1..=20).map(|id| TaskSample::new(id, 0)).collect();
    let full = FullState { locations: vec![location.clone()], ..FullState::default() };
    let mut out = vec![ServerMessage::Hello(Box::new(example_hello()))];
    out.extend(proto::full_state_messages(full, tasks.clone()));
    out.push(ServerMessage::Tick(Box::new(Tick {
        seq: 1,
        uptime_nanos: 250_000_000,
        new_locations: vec![location],
        tasks,
        finished: vec![3, 4],
        client_dropped_frames: 2,
        ..Tick::default()
    })));
    out.push(ServerMessage::Stall(Box::new(example_stall(1, 12, 2))));
    out.push(ServerMessage::Pong(Pong { nonce: 7 }));
    out.push(ServerMessage::Goodbye(Goodbye { reason: "runtime dropped".into() }));
    out
}

/// Server streams after the preamble: the whole conversation as a 1.1 client and as a 1.0 client gets it
/// (stall events compressed or plain), and each message alone.
fn server_streams() -> Vec<Vec<u8>> {
    let frames: Vec<ServerFrame> = server_messages().iter().map(|m| ServerFrame::encode(m).unwrap()).collect();
    let mut seeds = Vec::new();
    for client in [PROTOCOL_VERSION, ProtocolVersion { major: 1, minor: 0 }] {
        seeds.push(frames.iter().flat_map(|f| f.parts_for(client, 1).to_vec()).collect());
    }
    seeds.extend(frames.iter().map(|f| f.parts(0).to_vec()));
    seeds
}

/// Client openings: preamble and `ClientHello`, well-formed, with an empty and a non-ASCII name.
fn handshakes() -> Vec<Vec<u8>> {
    ["loopscope-top", "", "réseau µs"]
        .iter()
        .map(|name| {
            let mut v = Vec::new();
            proto::write_client_handshake(&mut v, name).unwrap();
            v
        })
        .collect()
}

/// Recordings of the server's messages, whole and with the header only.
fn recordings() -> Vec<Vec<u8>> {
    let mut rec = Recorder::new(Vec::new(), &example_hello(), 1_000).unwrap();
    let header_len = rec.bytes_written() as usize;
    for m in server_messages() {
        rec.write(&m).unwrap();
    }
    let whole = rec.finish().unwrap();
    vec![whole[header_len..].to_vec(), whole.clone(), whole[..header_len].to_vec()]
}

/// Length prefixes and counts that sit on the decoders' limits.
const INTERESTING_U32: [u32; 9] =
    [0, 1, 4, 0x7f, 0x80, 0xffff, proto::MAX_FRAME_LEN, proto::MAX_FRAME_LEN + 1, u32::MAX];

/// One to four mutations of `seed`, sometimes spliced with another seed.
fn mutate(rng: &mut Rng, seed: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if v.is_empty() { 0 } else { rng.below(v.len()) };
        match rng.below(8) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = rng.next() as u8,
            2 => v.truncate(at),
            3 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if !v.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                v.drain(at..end);
            }
            5 => {
                // A forged length prefix or count, little-endian like the frame header.
                let x = INTERESTING_U32[rng.below(INTERESTING_U32.len())].to_le_bytes();
                let end = (at + 4).min(v.len());
                v.splice(at..end, x);
            }
            6 if !v.is_empty() => {
                // A chunk repeated, as a duplicated frame or record would be.
                let end = (at + 1 + rng.below(256)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(end..end, chunk);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
        }
    }
    v
}

/// Saved inputs for `target`: committed regressions, and a local `cargo fuzz` corpus if there is one.
fn saved_inputs(target: &str) -> Vec<Vec<u8>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                inputs.push(bytes);
            }
        }
    }
    inputs
}

/// Runs `check` on the seeds, the saved inputs, random bytes and mutations; on a panic, names the input.
fn run(target: &str, seeds: Vec<Vec<u8>>, check: fn(&[u8])) {
    assert!(seeds.iter().all(|s| !s.is_empty()), "every seed has content");
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
    inputs.extend(seeds.iter().cloned());
    inputs.extend(saved_inputs(target));
    let mut rng = Rng(0x5EED_F022_0000_0001 ^ target.len() as u64);
    for _ in 0..64 {
        let n = rng.below(512);
        inputs.push((0..n).map(|_| rng.next() as u8).collect());
    }
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.below(seeds.len())];
        inputs.push(mutate(&mut rng, seed, &seeds));
    }
    for (i, input) in inputs.iter().enumerate() {
        if let Err(panic) = std::panic::catch_unwind(|| check(input)) {
            let head: Vec<u8> = input.iter().copied().take(64).collect();
            panic!(
                "{target}: input {i} of {} ({} bytes, starting {head:02x?}) failed: {panic:?}",
                inputs.len(),
                input.len()
            );
        }
    }
}

#[test]
fn frame_decoder_seeds_and_mutations() {
    run("frame_decoder", server_streams(), checks::frame_decoder);
}

#[test]
fn handshake_seeds_and_mutations() {
    let mut seeds = handshakes();
    // The server's side of the opening too: its preamble alone, and a hello frame behind it.
    seeds.push(proto::preamble(PROTOCOL_VERSION).to_vec());
    seeds.extend(server_streams().into_iter().take(1));
    run("handshake", seeds, checks::handshake);
}

#[test]
fn recording_reader_seeds_and_mutations() {
    run("recording_reader", recordings(), checks::recording_reader);
}

/// The mutations do reach past the first check: some mutated server streams still decode to messages, so
/// the decoders' deeper paths run, not only their first length check.
#[test]
fn mutations_keep_some_inputs_decodable() {
    let seeds = server_streams();
    let mut rng = Rng(1);
    let decodable = (0..500)
        .filter(|_| {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, &seeds);
            let mut r = &input[..];
            matches!(proto::read_frame(&mut r, proto::MAX_FRAME_LEN), Ok(Some(p)) if proto::decode_server(&p).is_ok())
        })
        .count();
    assert!(decodable >= 50, "only {decodable} of 500 mutated streams start with a decodable frame");
}
