//! Unwinding a thread blocked in a system call from another thread, without signalling it.
//!
//! While a thread sleeps in the kernel its user stack does not change, and it lives in our own address space.
//! `/proc/self/task/<tid>/syscall` gives the thread's user stack pointer and instruction pointer at the system
//! call (the instruction after `syscall`, inside libc's wrapper). From there the DWARF call frame information
//! (`.eh_frame`, found through each loaded object's `.eh_frame_hdr`) is evaluated by `framehop`, on the capturing
//! thread — never in a signal handler.
//!
//! Safety of the reads: nothing here dereferences an address taken from the target thread. The stack is copied
//! with `process_vm_readv` on our own pid (an unmapped page makes the copy stop with `EFAULT` instead of raising
//! `SIGSEGV`), growing from the stack pointer on demand, and the unwinder reads only that copy. Unwind
//! information is copied the same way, once per loaded object, while `dl_iterate_phdr` holds the loader lock (so
//! no object is unloaded during the copy). The copies are refreshed when the unwinder meets an address outside
//! every known object (a library loaded later).
//!
//! The one register `/proc` does not show is the frame pointer (`rbp`). Frames whose CFI computes the frame
//! address from `rbp` (functions built with frame pointers, such as std's) need it; as long as no frame on the
//! way has restored `rbp` from the stack, its value is unknown. Then [`find_frame_pointer`] looks for the saved
//! `rbp`/return-address pair above the frame's static area (from its prologue) and accepts a candidate only if
//! the return address points right after a direct call *to this very function* or to a function that tail-calls
//! it (found by [`reaches`]), or after an indirect call whose saved `rbp` is plausible provided no direct-call
//! return address was refused below it (a stale pair of a dead frame is then as likely as a live one). If no
//! candidate passes, the stack ends there (what was unwound is kept).

use std::sync::{Mutex, MutexGuard};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

/// The result of an outside unwind.
#[derive(Debug)]
pub(super) struct Unwound {
    /// The instruction pointer at the system call first, then return addresses.
    pub(super) ips: Vec<usize>,
    /// More frames existed beyond the requested depth.
    pub(super) truncated: bool,
    /// Why the unwinder stopped before the outermost frame, if it did.
    pub(super) stopped: Option<String>,
}

/// How much of a thread's stack may be copied: more than any sane stack depth of a tokio worker, small enough
/// that a wild stack pointer costs little.
const MAX_STACK_COPY: usize = 1 << 20;
/// The stack is copied in chunks of this size as the unwinder climbs.
const STACK_CHUNK: usize = 16 << 10;
const PAGE: u64 = 4096;
/// How far above a frame's stack pointer the saved frame-pointer pair is looked for.
const FP_SCAN_LIMIT: u64 = 32 << 10;
/// Unwind information larger than this is not copied (no real object has that much).
const MAX_EH_FRAME: u64 = 256 << 20;

/// One loaded object, as far as the frame-pointer search needs it (framehop keeps its own copy of the CFI).
struct Object {
    /// `[start, end)` of the object's loaded segments.
    start: u64,
    end: u64,
    /// Executable segments, `[start, end)`.
    exec: Vec<(u64, u64)>,
    /// The address `.eh_frame_hdr` is loaded at, and a copy of it.
    hdr_avma: u64,
    hdr: Vec<u8>,
}

struct State {
    unwinder: UnwinderX86_64<Vec<u8>>,
    cache: CacheX86_64,
    objects: Vec<Object>,
    stack: StackCopy,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Unwinds from `pc`/`sp` (a thread blocked in a system call) into at most `max_depth` addresses.
pub(super) fn unwind(pc: u64, sp: u64, max_depth: usize) -> Unwound {
    let mut guard = lock(&STATE);
    let state = guard.get_or_insert_with(State::load);
    state.stack.reset(sp);
    let first = state.unwind(pc, sp, 0, max_depth);
    if first.stopped.as_deref() == Some(UNKNOWN_CODE) {
        // An address outside every object we know: a library was loaded since. Reload and try again.
        *state = State::load();
        state.stack.reset(sp);
        return state.unwind(pc, sp, 0, max_depth);
    }
    first
}

/// Like [`unwind`], for a thread caught running: from its registers `pc`, `sp` and `bp` and `stack`, a copy of
/// its stack from `sp` up taken at that moment (a perf sample, `perf_sample.rs`). Only the copy is read: the
/// live stack has moved on since.
pub(super) fn unwind_copy(pc: u64, sp: u64, bp: u64, stack: Vec<u8>, max_depth: usize) -> Unwound {
    let mut guard = lock(&STATE);
    let state = guard.get_or_insert_with(State::load);
    state.stack.preset(sp, stack);
    let first = state.unwind(pc, sp, bp, max_depth);
    if first.stopped.as_deref() == Some(UNKNOWN_CODE) {
        let stack = std::mem::take(&mut state.stack.bytes);
        *state = State::load();
        state.stack.preset(sp, stack);
        return state.unwind(pc, sp, bp, max_depth);
    }
    first
}

const UNKNOWN_CODE: &str = "an address outside every loaded object";

impl State {
    fn load() -> State {
        let objects = loaded_objects();
        let mut unwinder = UnwinderX86_64::new();
        let mut kept = Vec::with_capacity(objects.len());
        for o in objects {
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                eh_frame_svma: Some(o.eh_frame_avma - o.bias..o.eh_frame_avma - o.bias + o.eh_frame.len() as u64),
                eh_frame: Some(o.eh_frame),
                eh_frame_hdr_svma: Some(o.hdr_avma - o.bias..o.hdr_avma - o.bias + o.hdr.len() as u64),
                eh_frame_hdr: Some(o.hdr.clone()),
                text_svma: o.exec.first().map(|&(s, e)| s - o.bias..e - o.bias),
                ..Default::default()
            };
            unwinder.add_module(Module::new(o.name, o.start..o.end, o.bias, info));
            kept.push(Object { start: o.start, end: o.end, exec: o.exec, hdr_avma: o.hdr_avma, hdr: o.hdr });
        }
        kept.sort_by_key(|o| o.start);
        State { unwinder, cache: CacheX86_64::new(), objects: kept, stack: StackCopy::default() }
    }

    /// Unwinds from `pc`, `sp` and `bp` over `self.stack`, which the caller has reset or preset for `sp`.
    fn unwind(&mut self, pc: u64, sp: u64, bp: u64, max_depth: usize) -> Unwound {
        let State { unwinder, cache, objects, stack } = self;
        let mut ips = vec![pc as usize];
        let mut truncated = false;
        let mut stopped = None;
        // 0 stands for "unknown" (/proc does not show rbp); it becomes known once a frame restores it.
        let mut regs = UnwindRegsX86_64::new(pc, sp, bp);
        let mut address = FrameAddress::from_instruction_pointer(pc);
        loop {
            if !is_code(objects, address.address_for_lookup()) {
                stopped = Some(UNKNOWN_CODE.to_owned());
                break;
            }
            let before = regs;
            let mut read = |addr: u64| stack.read_u64(addr);
            let mut step = unwinder.unwind_frame(address, &mut regs, cache, &mut read);
            // framehop reports a frame-pointer frame with `rbp == 0` as the end of the stack (the convention for
            // the outermost frame), and other failures as errors; with rbp unknown, both may be a frame-pointer
            // frame.
            if matches!(step, Err(_) | Ok(None)) && before.bp() == 0 {
                // Maybe a frame-pointer frame while rbp is unknown: find its saved rbp and try again.
                let is_return_address = matches!(address, FrameAddress::ReturnAddress(_));
                if let Some(bp) =
                    find_frame_pointer(objects, stack, before.sp(), address.address_for_lookup(), is_return_address)
                {
                    regs = before;
                    regs.set_bp(bp);
                    let mut read = |addr: u64| stack.read_u64(addr);
                    step = unwinder.unwind_frame(address, &mut regs, cache, &mut read);
                }
            }
            match step {
                Ok(Some(ra)) if regs.sp() > before.sp() || address == FrameAddress::InstructionPointer(pc) => {
                    if ips.len() >= max_depth {
                        truncated = true;
                        break;
                    }
                    let Some(next) = FrameAddress::from_return_address(ra) else {
                        break;
                    };
                    ips.push(ra as usize);
                    address = next;
                }
                Ok(Some(_)) => {
                    stopped = Some("the stack pointer did not move up".to_owned());
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    stopped = Some(e.to_string());
                    break;
                }
            }
        }
        Unwound { ips, truncated, stopped }
    }
}

fn object_of(objects: &[Object], addr: u64) -> Option<&Object> {
    let i = objects.partition_point(|o| o.start <= addr).checked_sub(1)?;
    objects.get(i).filter(|o| addr < o.end)
}

fn is_code(objects: &[Object], addr: u64) -> bool {
    object_of(objects, addr).is_some_and(|o| o.exec.iter().any(|&(s, e)| s <= addr && addr < e))
}

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
fn find_frame_pointer(
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
const TAIL_DEPTH: u32 = 3;
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
fn reaches(objects: &[Object], callee: u64, target: u64, depth: u32) -> bool {
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
fn static_frame_size(o: &Object, start: u64, lookup: u64) -> u64 {
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
fn is_indirect_call(code: &[u8; 7]) -> bool {
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

/// The start of the function containing `addr`, from the object's `.eh_frame_hdr` search table.
fn function_start(o: &Object, addr: u64) -> Option<u64> {
    let (table, count) = search_table(o)?;
    table_entry(o, table, entry_after(o, table, count, addr)?.checked_sub(1)?)
}

/// The start of the function after the one containing `addr`, from the same table (`None` after the last one).
fn function_end(o: &Object, addr: u64) -> Option<u64> {
    let (table, count) = search_table(o)?;
    let i = entry_after(o, table, count, addr)?;
    if i < count { table_entry(o, table, i) } else { None }
}

/// The `.eh_frame_hdr` search table (pairs of initial location and FDE address) and its length.
fn search_table(o: &Object) -> Option<(&[u8], usize)> {
    let hdr = &o.hdr;
    let (&version, &ptr_enc, &count_enc, &table_enc) = (hdr.first()?, hdr.get(1)?, hdr.get(2)?, hdr.get(3)?);
    if version != 1 || count_enc != 0x03 || table_enc != 0x3b {
        return None; // not the layout every GNU and LLVM linker writes
    }
    let (_, ptr_len) = decode_pointer(hdr, 4, ptr_enc, o.hdr_avma)?;
    let count_at = 4 + ptr_len;
    let count = u32::from_le_bytes(hdr.get(count_at..count_at + 4)?.try_into().ok()?) as usize;
    let table = hdr.get(count_at + 4..count_at + 4 + count.checked_mul(8)?)?;
    Some((table, count))
}

/// The initial location of entry `i`.
fn table_entry(o: &Object, table: &[u8], i: usize) -> Option<u64> {
    let rel = i32::from_le_bytes(table.get(i * 8..i * 8 + 4)?.try_into().ok()?);
    Some(o.hdr_avma.wrapping_add_signed(i64::from(rel)))
}

/// The index of the first entry after `addr` (entries are sorted by initial location).
fn entry_after(o: &Object, table: &[u8], count: usize, addr: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if table_entry(o, table, mid)? <= addr { lo = mid + 1 } else { hi = mid }
    }
    Some(lo)
}

/// Decodes a `DW_EH_PE_*`-encoded pointer at `pos` of `bytes`, which are loaded at `avma`. Returns the value and
/// its size. Supports the absolute, pc-relative and data-relative fixed-size forms (what linkers write).
fn decode_pointer(bytes: &[u8], pos: usize, enc: u8, avma: u64) -> Option<(u64, usize)> {
    if enc == 0xff {
        return None;
    }
    let field = |n: usize| bytes.get(pos..pos + n);
    let (raw, len): (i64, usize) = match enc & 0x0f {
        0x00 | 0x04 => (u64::from_le_bytes(field(8)?.try_into().ok()?) as i64, 8),
        0x02 => (i64::from(u16::from_le_bytes(field(2)?.try_into().ok()?)), 2),
        0x03 => (i64::from(u32::from_le_bytes(field(4)?.try_into().ok()?)), 4),
        0x0a => (i64::from(i16::from_le_bytes(field(2)?.try_into().ok()?)), 2),
        0x0b => (i64::from(i32::from_le_bytes(field(4)?.try_into().ok()?)), 4),
        0x0c => (i64::from_le_bytes(field(8)?.try_into().ok()?), 8),
        _ => return None,
    };
    let value = match enc & 0x70 {
        0x00 => raw as u64,
        0x10 => avma.wrapping_add(pos as u64).wrapping_add_signed(raw),
        0x30 => avma.wrapping_add_signed(raw),
        _ => return None,
    };
    Some((value, len))
}

/// A copy of the target thread's stack from its stack pointer up, grown on demand.
#[derive(Default)]
struct StackCopy {
    base: u64,
    bytes: Vec<u8>,
    exhausted: bool,
}

impl StackCopy {
    fn reset(&mut self, sp: u64) {
        self.base = sp & !7;
        self.bytes.clear();
        self.exhausted = false;
    }

    /// A copy taken elsewhere (a perf sample's), starting exactly at `sp`: read as is, never grown.
    fn preset(&mut self, sp: u64, bytes: Vec<u8>) {
        self.base = sp;
        self.bytes = bytes;
        self.exhausted = true;
    }

    fn read_u64(&mut self, addr: u64) -> Result<u64, ()> {
        let offset = usize::try_from(addr.checked_sub(self.base).ok_or(())?).map_err(|_| ())?;
        let end = offset.checked_add(8).ok_or(())?;
        while self.bytes.len() < end {
            if !self.grow() {
                return Err(());
            }
        }
        let word = self.bytes.get(offset..end).ok_or(())?;
        Ok(u64::from_le_bytes(word.try_into().map_err(|_| ())?))
    }

    /// Copies the next chunk of the stack. Page by page, so that a copy reaching an unmapped page (the end of
    /// the stack mapping) keeps the pages before it.
    fn grow(&mut self) -> bool {
        if self.exhausted || self.bytes.len() >= MAX_STACK_COPY {
            return false;
        }
        let from = self.base + self.bytes.len() as u64;
        let to = ((from + STACK_CHUNK as u64) & !(PAGE - 1)).max(from + 8);
        let old = self.bytes.len();
        self.bytes.resize(old + (to - from) as usize, 0);
        let mut remote = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; STACK_CHUNK / PAGE as usize + 1];
        let mut n = 0;
        let mut at = from;
        while at < to && n < remote.len() {
            let page_end = ((at / PAGE) + 1) * PAGE;
            let len = page_end.min(to) - at;
            remote[n] = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: len as usize };
            n += 1;
            at += len;
        }
        let local = libc::iovec { iov_base: self.bytes[old..].as_mut_ptr().cast(), iov_len: (to - from) as usize };
        // SAFETY: `local` describes the bytes just reserved in `self.bytes`, valid for writes; the remote iovecs
        // are only accessed by the kernel, which reports unmapped memory as a short read or EFAULT instead of
        // faulting. The result is checked below.
        let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, remote.as_ptr(), n as u64, 0) };
        let got = usize::try_from(read).unwrap_or(0);
        self.bytes.truncate(old + got);
        if got < (to - from) as usize {
            self.exhausted = true;
        }
        got > 0
    }
}

/// Copies `out.len()` bytes at `addr` of this process without ever faulting (`process_vm_readv` on ourselves).
fn read_memory(addr: u64, out: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: out.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: out.len() };
    // SAFETY: `local` describes `out`, valid for writes of its length; `remote` is only accessed by the kernel,
    // which fails with EFAULT instead of faulting.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).is_ok_and(|n| n == out.len())
}

/// A loaded object with a copy of its unwind information.
struct LoadedObject {
    name: String,
    bias: u64,
    start: u64,
    end: u64,
    exec: Vec<(u64, u64)>,
    hdr_avma: u64,
    hdr: Vec<u8>,
    eh_frame_avma: u64,
    eh_frame: Vec<u8>,
}

/// Every loaded object that has `.eh_frame_hdr`, with copies of its unwind information.
fn loaded_objects() -> Vec<LoadedObject> {
    let mut out: Vec<LoadedObject> = Vec::new();
    // SAFETY: the callback only reads the `dl_phdr_info` glibc passes (valid during the call) and copies memory
    // with `process_vm_readv`; `data` is `&mut out`, which outlives the call and is used by nothing else meanwhile.
    unsafe {
        libc::dl_iterate_phdr(Some(collect_object), (&mut out as *mut Vec<LoadedObject>).cast());
    }
    out
}

/// `dl_iterate_phdr` callback: appends the object to the `Vec<LoadedObject>` behind `data`.
unsafe extern "C" fn collect_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> i32 {
    // SAFETY: glibc passes a valid `dl_phdr_info`, and `data` is the `&mut Vec` of `loaded_objects`.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedObject>>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of the loaded object.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let bias = info.dlpi_addr;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
    };
    if let Some(object) = object_from_headers(name, bias, phdrs) {
        out.push(object);
    }
    0
}

fn object_from_headers(name: String, bias: u64, phdrs: &[libc::Elf64_Phdr]) -> Option<LoadedObject> {
    const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
    const PF_X: u32 = 1;
    let loads: Vec<&libc::Elf64_Phdr> = phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).collect();
    let start = bias.wrapping_add(loads.iter().map(|p| p.p_vaddr).min()?);
    let end = bias.wrapping_add(loads.iter().map(|p| p.p_vaddr + p.p_memsz).max()?);
    let exec = loads
        .iter()
        .filter(|p| p.p_flags & PF_X != 0)
        .map(|p| (bias.wrapping_add(p.p_vaddr), bias.wrapping_add(p.p_vaddr + p.p_memsz)))
        .collect();
    let eh = phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME)?;
    let hdr_avma = bias.wrapping_add(eh.p_vaddr);
    let mut hdr = vec![0u8; usize::try_from(eh.p_memsz).ok()?];
    if hdr.len() < 8 || !read_memory(hdr_avma, &mut hdr) {
        return None;
    }
    let (eh_frame_avma, _) = decode_pointer(&hdr, 4, hdr[1], hdr_avma)?;
    // `.eh_frame` has no size of its own in the headers: take the rest of the segment that holds it.
    let segment = loads.iter().find(|p| {
        let s = bias.wrapping_add(p.p_vaddr);
        s <= eh_frame_avma && eh_frame_avma < s + p.p_filesz
    })?;
    let len = (bias.wrapping_add(segment.p_vaddr) + segment.p_filesz - eh_frame_avma).min(MAX_EH_FRAME);
    let mut eh_frame = vec![0u8; usize::try_from(len).ok()?];
    if !read_memory(eh_frame_avma, &mut eh_frame) {
        return None;
    }
    Some(LoadedObject { name, bias, start, end, exec, hdr_avma, hdr, eh_frame_avma, eh_frame })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod thread_tests;
