//! The frame-pointer search for frames whose `rbp` the unwinder does not know (see `outside.rs`'s module
//! docs), with the instruction decoding and `.eh_frame_hdr` lookups it relies on. Split out of `outside.rs`.

use super::eh_frame_hdr::{function_end, function_start};
use super::memory::{StackCopy, read_memory};
use super::{FP_SCAN_LIMIT, MAX_STACK_COPY, Object, is_code, object_of};

/// Finds the frame address (`rbp`) of a frame-pointer frame whose `rbp` is unknown. See the module documentation;
/// the rules, and why each is needed:
///
/// 1. **Skip the frame's own static area.** `lookup`'s function set `rbp` in its prologue (`push rbp; mov rbp,
///    rsp`) and then lowered `rsp` by its pushes and `sub rsp, N`: at any of its call sites `rbp >= sp + that`
///    ([`static_frame_size`], a lower bound even with `alloca` or realignment, which only lower `rsp` further).
///    Stale pairs in the function's uninitialized locals are never looked at.
/// 2. **A return address after a direct call must come from a call that reaches this function**: a call to it,
///    or to a function that *tail-calls* it (`jmp` to its start, possibly through a PLT stub or a GOT slot, up to
///    [`TAIL_DEPTH`] jumps deep: [`reaches`]). A tail call leaves no frame of its own, so the live return address
///    above a tail-called function follows a call to the tail caller (the `blocking_sleep` example: `call
///    blocking_sleep`, which is `jmp sleep`).
/// 3. **Once such a return address is refused, indirect calls are no longer trusted.** A slot above the frame's
///    static area holding a return address after a direct call that cannot reach this function is either the
///    live pair of a caller we cannot verify (an indirect tail call) or stale memory of a dead frame; either way
///    an indirect-call pair further up is as likely to be stale (dead frames of earlier calls lie inside the live
///    frames above: tokio's `dyn Fn` hook left one above `std::thread::sleep`). Only a verified direct call is
///    accepted after that; otherwise the stack ends here, short but not wrong.
///
/// An indirect call's target is unknown, so before any refusal it is accepted when its saved `rbp` is plausible
/// (0, or a little above the pair), as before.
pub(super) fn find_frame_pointer(
    objects: &[Object],
    stack: &mut StackCopy,
    sp: u64,
    lookup: u64,
    is_return_address: bool,
) -> Option<u64> {
    let object = object_of(objects, lookup);
    let target = object.and_then(|o| function_start(o, lookup));
    let skip = match (object, target) {
        (Some(o), Some(t)) if is_return_address => static_frame_size(o, t, lookup),
        _ => 0,
    };
    let mut x = sp.checked_add(skip)?.checked_add(7)? & !7;
    let mut refused = false;
    while x < sp.saturating_add(FP_SCAN_LIMIT) {
        let Ok(ra) = stack.read_u64(x + 8) else {
            return None;
        };
        if ra > 7 && is_code(objects, ra) {
            match call_before(ra) {
                Some(Call::Direct(callee)) => {
                    if target.is_some_and(|t| reaches(objects, callee, t, TAIL_DEPTH)) {
                        return Some(x);
                    }
                    refused = true;
                }
                Some(Call::Indirect) => {
                    if !refused
                        && let Ok(saved) = stack.read_u64(x)
                        && (saved == 0 || (saved > x && saved - x < MAX_STACK_COPY as u64 * 8))
                    {
                        return Some(x);
                    }
                }
                None => {}
            }
        }
        x += 8;
    }
    None
}

/// How many jumps a tail-call chain from a call's target to the frame's function may have.
pub(super) const TAIL_DEPTH: u32 = 3;
/// How much of a function's code is searched for tail jumps.
const MAX_BODY: u64 = 4096;

/// The call instruction a return address follows.
#[derive(Debug, PartialEq)]
enum Call {
    /// `call rel32`, or `call [rip + disp32]` (through a GOT slot: how rustc calls a function of another object
    /// or an `extern` one) whose slot could be read: the callee's address.
    Direct(u64),
    /// Any other `call` through a register or memory.
    Indirect,
}

/// Which call, if any, ends right before `ra`.
fn call_before(ra: u64) -> Option<Call> {
    let mut code = [0u8; 7];
    if !read_memory(ra - 7, &mut code) {
        return None;
    }
    if code[2] == 0xE8 {
        let rel = i32::from_le_bytes([code[3], code[4], code[5], code[6]]);
        return Some(Call::Direct(ra.wrapping_add_signed(i64::from(rel))));
    }
    if code[1] == 0xFF && code[2] == 0x15 {
        let disp = i32::from_le_bytes([code[3], code[4], code[5], code[6]]);
        let mut slot = [0u8; 8];
        if read_memory(ra.wrapping_add_signed(i64::from(disp)), &mut slot) {
            return Some(Call::Direct(u64::from_le_bytes(slot)));
        }
        return Some(Call::Indirect);
    }
    is_indirect_call(&code).then_some(Call::Indirect)
}

/// Can a call to `callee` arrive at the function starting at `target` without leaving a frame: is it `target`,
/// or does its code jump (not call) to `target`, directly or through at most `depth - 1` further such functions?
///
/// The jumps looked for are `jmp rel32`, `jmp rel8` and `jmp [rip + disp32]` (a GOT slot, read through
/// `process_vm_readv`), anywhere in the callee's code up to the next function in `.eh_frame_hdr` (at most
/// [`MAX_BODY`] bytes): a tail call may sit in any branch. The bytes are not decoded instruction by instruction,
/// so a jump may be found inside another instruction's bytes, but it must land *exactly* on `target`'s start (or,
/// to be followed further, on a function start from `.eh_frame_hdr`), which random bytes practically never do.
/// An indirect tail jump (`jmp rax`) cannot be verified and does not count: the search then refuses the pair.
pub(super) fn reaches(objects: &[Object], callee: u64, target: u64, depth: u32) -> bool {
    if callee == target {
        return true;
    }
    if depth == 0 {
        return false;
    }
    let Some(o) = object_of(objects, callee) else {
        return false;
    };
    let Some(&(_, exec_end)) = o.exec.iter().find(|&&(s, e)| s <= callee && callee < e) else {
        return false;
    };
    // The callee's extent: up to the next function start, or MAX_BODY. A PLT stub has no entry of its own (one
    // FDE covers the whole `.plt`): its jump comes first, well within any extent.
    let end = function_end(o, callee).unwrap_or(exec_end).min(exec_end).min(callee.saturating_add(MAX_BODY));
    let Ok(len) = usize::try_from(end.saturating_sub(callee)) else {
        return false;
    };
    let mut code = vec![0u8; len];
    if len == 0 || !read_memory(callee, &mut code) {
        return false;
    }
    let mut followed = 0;
    for i in 0..code.len() {
        let at = callee + i as u64;
        let jump = match code[i..] {
            [0xE9, a, b, c, d, ..] => {
                Some(at.wrapping_add(5).wrapping_add_signed(i64::from(i32::from_le_bytes([a, b, c, d]))))
            }
            [0xEB, r, ..] => Some(at.wrapping_add(2).wrapping_add_signed(i64::from(r as i8))),
            [0xFF, 0x25, a, b, c, d, ..] => {
                let slot = at.wrapping_add(6).wrapping_add_signed(i64::from(i32::from_le_bytes([a, b, c, d])));
                let mut value = [0u8; 8];
                read_memory(slot, &mut value).then(|| u64::from_le_bytes(value))
            }
            _ => None,
        };
        let Some(to) = jump else { continue };
        if to == target {
            return true;
        }
        // Follow a jump out of the callee to another function's start (a thunk's target), a few of them.
        let leaves = to < callee || to >= end;
        if depth > 1 && leaves && followed < 8 && object_of(objects, to).and_then(|t| function_start(t, to)) == Some(to)
        {
            followed += 1;
            if reaches(objects, to, target, depth - 1) {
                return true;
            }
        }
    }
    false
}

/// How far a frame-pointer function lowers `rsp` below its saved `rbp` in its prologue: `push rbp; mov rbp, rsp`
/// (after an optional `endbr64`), then the pushes and `sub rsp, imm` that follow, counting only instructions that
/// end at or before `lookup`. 0 when the function does not start that way (no frame pointer, or a shrink-wrapped
/// prologue). At any call site after them `rbp - rsp` is at least this much: later code (`alloca`, realignment,
/// pushed arguments) only lowers `rsp` further.
pub(super) fn static_frame_size(o: &Object, start: u64, lookup: u64) -> u64 {
    let Some(&(_, exec_end)) = o.exec.iter().find(|&&(s, e)| s <= start && start < e) else {
        return 0;
    };
    let mut buf = [0u8; 64];
    let len = exec_end.saturating_sub(start).min(buf.len() as u64) as usize;
    if len == 0 || !read_memory(start, &mut buf[..len]) {
        return 0;
    }
    let code = &buf[..len];
    let mut i = if code.starts_with(&[0xF3, 0x0F, 0x1E, 0xFA]) { 4 } else { 0 };
    // push rbp; mov rbp, rsp (either encoding of the mov).
    match code.get(i..i + 4) {
        Some([0x55, 0x48, 0x89, 0xE5] | [0x55, 0x48, 0x8B, 0xEC]) => i += 4,
        _ => return 0,
    }
    let mut size = 0u64;
    loop {
        let (len, lowers) = match code.get(i..) {
            // push r8..r15
            Some([0x41, 0x50..=0x57, ..]) => (2, 8),
            // push rax, rcx, rdx, rbx, rsi, rdi (not rsp or rbp).
            Some([0x50..=0x53 | 0x56 | 0x57, ..]) => (1, 8),
            // sub rsp, imm8 / imm32
            Some([0x48, 0x83, 0xEC, imm, ..]) if (*imm as i8) > 0 => (4, u64::from(*imm)),
            Some([0x48, 0x81, 0xEC, a, b, c, d, ..]) => match i32::from_le_bytes([*a, *b, *c, *d]) {
                imm @ 1.. => (7, imm as u64),
                _ => break,
            },
            _ => break,
        };
        if start + (i + len) as u64 > lookup {
            break;
        }
        size += lowers;
        i += len;
    }
    // Never skip more than could be scanned.
    size.min(FP_SCAN_LIMIT / 2)
}

/// `code` holds the 7 bytes before a return address: does an indirect `call` (`FF /2`) end there?
pub(super) fn is_indirect_call(code: &[u8; 7]) -> bool {
    let modrm_ok = |at: usize, len: usize| {
        let m = code[at + 1];
        let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
        if code[at] != 0xFF || reg != 2 {
            return false;
        }
        // Instruction length from the ModRM byte: opcode + modrm + [sib] + displacement.
        let sib = usize::from(md != 3 && rm == 4);
        let disp = match (md, rm) {
            (0, 5) => 4,
            (0, _) | (3, _) => 0,
            (1, _) => 1,
            _ => 4,
        };
        2 + sib + disp == len
    };
    (2..=7).any(|len| modrm_ok(7 - len, len))
}
