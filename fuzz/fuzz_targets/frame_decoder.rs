//! Arbitrary bytes as a server's stream after the preamble: the blocking and the incremental frame decoders,
//! message decoding, and applying whatever decodes to a client `State`. Must never panic or allocate beyond
//! one maximal frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loopscope_wire::proto::{self, Decoded, FrameDecoder, MAX_FRAME_LEN};
use loopscope_wire::state::State;

fuzz_target!(|data: &[u8]| {
    let mut state = State::new();
    let mut r = data;
    while let Ok(Some(payload)) = proto::read_frame(&mut r, MAX_FRAME_LEN) {
        if let Ok(Decoded::Message(m)) = proto::decode_server(&payload) {
            state.apply(&m);
        }
    }
    // The incremental decoder, fed in uneven pieces, must agree with the blocking one.
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    let mut blocking = &data[..];
    for chunk in data.chunks(1 + data.len() % 13) {
        d.push(chunk);
        while let Ok(Some(p)) = d.next_frame() {
            let expected = proto::read_frame(&mut blocking, MAX_FRAME_LEN).ok().flatten();
            assert_eq!(Some(&p), expected.as_ref());
        }
    }
    let _ = proto::decode_client(data);
});
