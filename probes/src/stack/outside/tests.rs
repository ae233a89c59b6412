//! `outside.rs`'s tests, in a file of their own to keep that one short.

use super::*;

#[test]
fn call_instructions() {
    // call *%rax (ff d0), call *0x18(%rax) (ff 50 18), call *0x100(%rip) (ff 15 + disp32),
    // call *%r11 (41 ff d3)
    assert!(is_indirect_call(&[0, 0, 0, 0, 0, 0xFF, 0xD0]));
    assert!(is_indirect_call(&[0, 0, 0, 0, 0xFF, 0x50, 0x18]));
    assert!(is_indirect_call(&[0, 0xFF, 0x15, 0, 1, 0, 0]));
    assert!(is_indirect_call(&[0, 0, 0, 0, 0x41, 0xFF, 0xD3]));
    // jmp *%rax (ff e0) is not a call.
    assert!(!is_indirect_call(&[0, 0, 0, 0, 0, 0xFF, 0xE0]));
}

#[test]
fn pointer_encodings() {
    let bytes = [1, 0x1b, 0x03, 0x3b, 0x10, 0, 0, 0, 0xF0, 0xFF, 0xFF, 0xFF];
    // pcrel sdata4 at offset 4: field address + 0x10.
    assert_eq!(decode_pointer(&bytes, 4, 0x1b, 0x1000), Some((0x1014, 4)));
    // datarel sdata4 at offset 8: base - 0x10.
    assert_eq!(decode_pointer(&bytes, 8, 0x3b, 0x1000), Some((0xFF0, 4)));
    assert_eq!(decode_pointer(&bytes, 4, 0x03, 0x1000), Some((0x10, 4)));
    assert_eq!(decode_pointer(&bytes, 4, 0xff, 0x1000), None);
    assert_eq!(decode_pointer(&bytes, 10, 0x0b, 0x1000), None, "out of bounds");
}

/// An object whose only "code" is `bytes` (read through `process_vm_readv` like real code).
fn fake_object(bytes: &[u8]) -> (Object, u64) {
    let start = bytes.as_ptr() as u64;
    let end = start + bytes.len() as u64;
    (Object { start, end, exec: vec![(start, end)], hdr_avma: 0, hdr: Vec::new() }, start)
}

#[test]
fn static_frame_sizes() {
    // push rbp; mov rbp, rsp; push r15; push rbx; sub rsp, 0x20; call ...
    static CODE: [u8; 16] = [0x55, 0x48, 0x89, 0xE5, 0x41, 0x57, 0x53, 0x48, 0x83, 0xEC, 0x20, 0xE8, 0, 0, 0, 0];
    let (o, f) = fake_object(&CODE);
    assert_eq!(static_frame_size(&o, f, f + 15), 48);
    // A lookup address inside the prologue counts only what ran before it.
    assert_eq!(static_frame_size(&o, f, f + 7), 16);
    // endbr64; push rbp; mov rbp, rsp (8B EC form); sub rsp, 0x1000
    static LARGE: [u8; 16] = [0xF3, 0x0F, 0x1E, 0xFA, 0x55, 0x48, 0x8B, 0xEC, 0x48, 0x81, 0xEC, 0, 0x10, 0, 0, 0x90];
    let (o, f) = fake_object(&LARGE);
    assert_eq!(static_frame_size(&o, f, f + 15), 0x1000);
    // No frame pointer set up at the start: nothing is known.
    static NO_FP: [u8; 8] = [0x48, 0x83, 0xEC, 0x28, 0x55, 0x48, 0x89, 0xE5];
    let (o, f) = fake_object(&NO_FP);
    assert_eq!(static_frame_size(&o, f, f + 7), 0);
}

#[test]
fn tail_calls_reach_their_target() {
    // nop; jmp rel32 to (end of the jmp) + 0x40; int3
    static CODE: [u8; 8] = [0x90, 0xE9, 0x40, 0, 0, 0, 0xCC, 0xCC];
    let (o, f) = fake_object(&CODE);
    let objects = [o];
    assert!(reaches(&objects, f, f + 6 + 0x40, TAIL_DEPTH));
    assert!(reaches(&objects, f, f, TAIL_DEPTH), "a call to the function itself");
    assert!(!reaches(&objects, f, f + 6 + 0x41, TAIL_DEPTH));
    assert!(!reaches(&objects, f, f + 6 + 0x40, 0), "no jumps followed at depth 0");
}

#[inline(never)]
fn marker() -> u64 {
    std::hint::black_box(42)
}

#[test]
fn objects_and_function_starts() {
    let state = State::load();
    let here = marker as *const () as u64;
    assert!(is_code(&state.objects, here));
    let object = object_of(&state.objects, here).expect("the test binary is a loaded object");
    assert_eq!(function_start(object, here + 1), Some(here));
    assert!(!is_code(&state.objects, 8));
}

#[test]
fn stack_copy_stops_at_unmapped_memory() {
    let mut copy = StackCopy::default();
    copy.reset(8);
    assert_eq!(copy.read_u64(8), Err(()));
    let value = std::hint::black_box([7u64, 9u64]);
    let at = value.as_ptr() as u64;
    copy.reset(at);
    assert_eq!(copy.read_u64(at), Ok(7));
    assert_eq!(copy.read_u64(at + 8), Ok(9));
    assert_eq!(copy.read_u64(at - 8), Err(()), "below the stack pointer");
}
