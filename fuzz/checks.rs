//! The bodies of the fuzz targets, one function per target, so that the same code runs in two places:
//!
//! * `fuzz_targets/*.rs`, under libFuzzer (`cargo +nightly fuzz run TARGET`, nightly only);
//! * `wire/tests/fuzz_seeds.rs`, in every `cargo test`, on a fixed set of seeds and deterministic mutations
//!   of them, because CI has stable Rust only and never runs libFuzzer.
//!
//! Both include this file with `#[path]`; it uses only `loopscope_wire`'s public API.

// Each fuzz target binary uses one of the three.
#![allow(dead_code)]

use loopscope_wire::proto::{self, Decoded, FrameDecoder, MAX_FRAME_LEN, PROTOCOL_VERSION};
use loopscope_wire::record::{Recorder, RecordingReader, example_hello};
use loopscope_wire::state::State;

/// Arbitrary bytes as a server's stream after the preamble: the blocking and the incremental frame decoders,
/// message decoding, and applying whatever decodes to a client `State`. Must never panic or allocate beyond
/// one maximal frame.
pub(crate) fn frame_decoder(data: &[u8]) {
    let mut state = State::new();
    let mut r = data;
    while let Ok(Some(payload)) = proto::read_frame(&mut r, MAX_FRAME_LEN) {
        if let Ok(Decoded::Message(m)) = proto::decode_server(&payload) {
            state.apply(&m);
        }
    }
    // The incremental decoder, fed in uneven pieces, must agree with the blocking one.
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    let mut blocking = data;
    for chunk in data.chunks(1 + data.len() % 13) {
        d.push(chunk);
        while let Ok(Some(p)) = d.next_frame() {
            let expected = proto::read_frame(&mut blocking, MAX_FRAME_LEN).ok().flatten();
            assert_eq!(Some(&p), expected.as_ref());
        }
    }
    let _ = proto::decode_client(data);
}

/// Arbitrary bytes as what a client sends a server: the preamble and the `ClientHello`, as the agent's server
/// reads them. Must never panic, and must reject rather than accept anything but a well-formed opening.
pub(crate) fn handshake(data: &[u8]) {
    let _ = proto::read_preamble(&mut &data[..]);
    let _ = proto::check_magic_prefix(data);
    if let Ok((version, hello)) = proto::read_client_handshake(&mut &data[..]) {
        assert!(version.is_compatible_with(PROTOCOL_VERSION));
        // What was accepted re-encodes to a valid opening.
        let mut again = Vec::new();
        proto::write_client_handshake(&mut again, &hello.client_name).expect("re-encodes an accepted hello");
        assert!(proto::read_client_handshake(&mut &again[..]).is_ok());
    }
    // The same bytes behind a valid preamble reach the frame decoder.
    let mut opening = proto::preamble(PROTOCOL_VERSION).to_vec();
    opening.extend_from_slice(data);
    let _ = proto::read_client_handshake(&mut &opening[..]);
}

fn read_all(bytes: &[u8]) {
    if let Ok(reader) = RecordingReader::new(bytes) {
        let mut errors = 0;
        for r in reader {
            if r.is_err() {
                errors += 1;
            }
        }
        assert!(errors <= 1, "the reader stops after its first error");
    }
}

/// Arbitrary bytes as a recording file, and behind a valid header: the reader yields good records and then at
/// most one error, never panics, and never allocates what a forged length announces.
pub(crate) fn recording_reader(data: &[u8]) {
    read_all(data);
    let rec = Recorder::new(Vec::new(), &example_hello(), 0).expect("a recorder into memory");
    let header_len = rec.bytes_written() as usize;
    let mut bytes = rec.finish().expect("an empty recording")[..header_len].to_vec();
    bytes.extend_from_slice(data);
    read_all(&bytes);
}
