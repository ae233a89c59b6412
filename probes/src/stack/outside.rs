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
//! it (found by [`reaches`](frame_pointer::reaches)), or after an indirect call whose saved `rbp` is plausible provided no direct-call
//! return address was refused below it (a stale pair of a dead frame is then as likely as a live one). If no
//! candidate passes, the stack ends there (what was unwound is kept).

use std::sync::{Mutex, MutexGuard};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

mod eh_frame_hdr;
mod frame_pointer;
mod memory;

#[cfg(test)]
use eh_frame_hdr::{decode_pointer, function_start};
use frame_pointer::find_frame_pointer;
#[cfg(test)]
use frame_pointer::{TAIL_DEPTH, is_indirect_call, reaches, static_frame_size};
use memory::{StackCopy, loaded_objects};

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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod thread_tests;
