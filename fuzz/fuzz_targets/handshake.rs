//! Arbitrary bytes as what a client sends a server: the preamble and the `ClientHello`, as the agent's server
//! reads them. Must never panic, and must reject rather than accept anything but a well-formed opening.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loopscope_wire::proto::{self, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let _ = proto::read_preamble(&mut &data[..]);
    let _ = proto::check_magic_prefix(data);
    if let Ok((version, hello)) = proto::read_client_handshake(&mut &data[..]) {
        assert!(version.is_compatible_with(PROTOCOL_VERSION));
        // What was accepted re-encodes to a valid opening.
        let mut again = Vec::new();
        proto::write_client_handshake(&mut again, &hello.client_name).unwrap();
        assert!(proto::read_client_handshake(&mut &again[..]).is_ok());
    }
    // The same bytes behind a valid preamble reach the frame decoder.
    let mut opening = proto::preamble(PROTOCOL_VERSION).to_vec();
    opening.extend_from_slice(data);
    let _ = proto::read_client_handshake(&mut &opening[..]);
});
