//! Tests of `frame.rs`, in a file of their own to keep that one short.

use super::super::messages::*;
use super::*;

#[test]
fn varint_matches_postcard() {
    for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
        let (bytes, n) = varint(v);
        assert_eq!(&bytes[..n], &postcard::to_allocvec(&v).unwrap()[..], "{v}");
    }
}

#[test]
fn per_client_patch_for_every_value_width() {
    for v in [0u64, 1, 200, 70_000, u64::MAX] {
        for orig in [0u64, 5, u64::MAX] {
            let tick = ServerMessage::Tick(Box::new(Tick { seq: 9, client_dropped_frames: orig, ..Tick::default() }));
            let frame = ServerFrame::encode(&tick).unwrap();
            let bytes = frame.parts(v).to_vec();
            let payload = read_frame(&mut &bytes[..], MAX_FRAME_LEN).unwrap().unwrap();
            let Decoded::Message(ServerMessage::Tick(t)) = decode_server(&payload).unwrap() else { panic!() };
            assert_eq!((t.seq, t.client_dropped_frames), (9, v));
            let full = ServerMessage::Full(Box::new(FullState { client_dropped_frames: orig, ..Default::default() }));
            let bytes = ServerFrame::encode(&full).unwrap().parts(v).to_vec();
            let Decoded::Message(ServerMessage::Full(f)) = decode_server(&bytes[4..]).unwrap() else { panic!() };
            assert_eq!(f.client_dropped_frames, v);
        }
    }
    let pong = ServerFrame::encode(&ServerMessage::Pong(Pong { nonce: 3 })).unwrap();
    assert!(!pong.is_per_client());
    assert_eq!(pong.parts(99).to_vec(), encode_frame(&ServerMessage::Pong(Pong { nonce: 3 }), MAX_FRAME_LEN).unwrap());
}

/// A stall event shaped like a real one: four samples of a 60-frame stack with long generic names.
fn realistic_stall() -> ServerMessage {
    ServerMessage::Stall(Box::new(crate::stall::example_stall(7, 60, 4)))
}

#[test]
fn stall_events_travel_compressed_and_decode_the_same() {
    let msg = realistic_stall();
    let plain = encode_payload(&msg, "Stall").unwrap();
    let packed = encode_server_payload(&msg).unwrap();
    assert_eq!(packed[0], COMPRESSED_KIND as u8, "a compressed envelope");
    assert!(packed.len() * 5 < plain.len(), "{} bytes compressed to {}", plain.len(), packed.len());
    assert_eq!(decode_server(&packed).unwrap(), Decoded::Message(msg.clone()));

    // Shared frames: 1.1 clients get the envelope, 1.0 clients the plain message.
    let frame = ServerFrame::encode(&msg).unwrap();
    assert!(frame.is_compressed());
    assert_eq!(frame.parts(0).to_vec()[4..], packed[..]);
    let old = frame.parts_for(ProtocolVersion { major: 1, minor: 0 }, 0).to_vec();
    assert_eq!(old[4..], plain[..]);
    assert_eq!(frame.wire_len(), FRAME_HEADER_LEN + plain.len());

    // Small messages and other kinds stay plain.
    let pong = ServerMessage::Pong(Pong { nonce: 1 });
    assert_eq!(encode_server_payload(&pong).unwrap(), encode_payload(&pong, "Pong").unwrap());
    assert!(!ServerFrame::encode(&pong).unwrap().is_compressed());
}

#[test]
fn bad_envelopes_are_errors_and_nested_ones_are_skipped() {
    let tag = COMPRESSED_KIND as u8;
    // Not DEFLATE data.
    let e = decode_server(&[tag, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(e.to_string().contains("compressed"), "{e}");
    // Cut short.
    let packed = encode_server_payload(&realistic_stall()).unwrap();
    assert!(decode_server(&packed[..packed.len() / 2]).is_err());
    // Inflates past the frame limit: refused, without holding more than the limit.
    let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; MAX_FRAME_LEN as usize + 1], 9);
    let mut env = vec![tag];
    env.extend(bomb);
    assert!(env.len() < 256 * 1024, "a small payload: {} bytes", env.len());
    assert!(decode_server(&env).is_err());
    // An envelope in an envelope is no message this version knows.
    let mut nested = vec![tag];
    nested.extend(miniz_oxide::deflate::compress_to_vec(&packed, 1));
    assert_eq!(decode_server(&nested).unwrap(), Decoded::Unknown { kind: COMPRESSED_KIND });
}

#[test]
fn preamble_errors_are_clear() {
    let e = read_preamble(&mut &b"HTTP/1.1 400 Bad Request\r\n"[..]).unwrap_err();
    assert!(e.to_string().contains("HTTP server"), "{e}");
    let e = read_preamble(&mut &b"LOOP"[..]).unwrap_err();
    assert!(matches!(e, ProtoError::Truncated { got: 4, .. }), "{e}");
    let e = read_preamble(&mut &b"LOX"[..]).unwrap_err();
    assert!(matches!(e, ProtoError::NotLoopscope { .. }), "{e}");
    let e = read_preamble(&mut &[][..]).unwrap_err();
    assert!(matches!(e, ProtoError::Truncated { got: 0, .. }), "{e}");
}

#[test]
fn oversized_length_is_refused_before_reading() {
    let mut bytes = u32::MAX.to_le_bytes().to_vec();
    bytes.extend([0u8; 16]);
    let e = read_frame(&mut &bytes[..], MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(e, ProtoError::FrameTooLarge { len, max } if len == u32::MAX as u64 && max == MAX_FRAME_LEN));
    let mut d = FrameDecoder::new(1000);
    d.push(&1001u32.to_le_bytes());
    assert!(matches!(d.next_frame(), Err(ProtoError::FrameTooLarge { len: 1001, max: 1000 })));
}

#[test]
fn truncated_frames_and_clean_eof() {
    assert!(read_frame(&mut &[][..], MAX_FRAME_LEN).unwrap().is_none());
    let e = read_frame(&mut &[5u8, 0][..], MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(e, ProtoError::Truncated { what: "a frame header", got: 2, expected: 4 }), "{e}");
    let e = read_frame(&mut &[5u8, 0, 0, 0, 1, 2][..], MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(e, ProtoError::Truncated { what: "a frame", got: 2, expected: 5 }), "{e}");
}

#[test]
fn unknown_kinds_are_skipped_and_trailing_bytes_rejected() {
    // Tag 200 as a varint: 0xc8 0x01.
    assert_eq!(decode_server(&[0xc8, 0x01, 1, 2, 3]).unwrap(), Decoded::Unknown { kind: 200 });
    assert_eq!(decode_client(&[7]).unwrap(), Decoded::Unknown { kind: 7 });
    let mut p = encode_payload(&ServerMessage::Pong(Pong { nonce: 1 }), "Pong").unwrap();
    p.push(0);
    assert!(matches!(decode_server(&p), Err(ProtoError::Decode { .. })));
    assert!(matches!(decode_server(&[]), Err(ProtoError::Decode { .. })));
}

#[test]
fn client_handshake_round_trip_and_mismatch() {
    let mut bytes = Vec::new();
    write_client_handshake(&mut bytes, "test client").unwrap();
    let (v, hello) = read_client_handshake(&mut &bytes[..]).unwrap();
    assert_eq!(v, PROTOCOL_VERSION);
    assert_eq!(hello.client_name, "test client");

    let other = ProtocolVersion { major: PROTOCOL_VERSION.major + 1, minor: 4 };
    let mut bytes = preamble(other).to_vec();
    bytes.extend([0xff; 8]);
    let e = read_client_handshake(&mut &bytes[..]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&PROTOCOL_VERSION.to_string()) && msg.contains(&other.to_string()), "{msg}");

    let mut bytes = preamble(PROTOCOL_VERSION).to_vec();
    bytes.extend(encode_frame(&ClientMessage::Ping(Ping { nonce: 1 }), MAX_FRAME_LEN).unwrap());
    assert!(matches!(read_client_handshake(&mut &bytes[..]), Err(ProtoError::Unexpected { .. })));
}

#[test]
fn decoder_handles_byte_by_byte_input() {
    let msgs: Vec<ServerMessage> = (0..5).map(|n| ServerMessage::Pong(Pong { nonce: n * 1000 })).collect();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| encode_frame(m, MAX_FRAME_LEN).unwrap()).collect();
    let mut d = FrameDecoder::new(MAX_FRAME_LEN);
    let mut out = Vec::new();
    for b in bytes {
        d.push(&[b]);
        while let Some(p) = d.next_frame().unwrap() {
            out.push(decode_server(&p).unwrap());
        }
    }
    assert_eq!(out, msgs.into_iter().map(Decoded::Message).collect::<Vec<_>>());
    assert!(d.buffered().is_empty());
}
