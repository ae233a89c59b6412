//! Outside unwinding through a tail call, with a stale frame left in dead stack memory above it.
//!
//! The fixture is written in assembly so that its layout does not depend on the optimizer (the tests are built
//! without optimization, where rustc emits no tail calls):
//!
//! * `fp_sleeper(stop)` is a frame-pointer function (like std's, whose CFI computes the frame from `rbp`) that
//!   sleeps in `usleep` until `*stop`; glibc's `usleep` → `__nanosleep` → `clock_nanosleep` never save `rbp`, so
//!   the outside unwinder reaches `fp_sleeper` with `rbp` unknown and has to find its saved pair on the stack;
//! * `tail_sleeper(stop)` is nothing but `jmp fp_sleeper`: the return address above `fp_sleeper`'s frame follows
//!   `call tail_sleeper` (in [`tail_caller`]), not a call to `fp_sleeper`;
//! * `pollute(f)` calls `f` indirectly (`call rdi`, the shape of a call through a `dyn Fn` or a vtable) 512 bytes
//!   below its own frame, and `leaf` pushes `rbp`: once both returned, a saved-`rbp`/return-address pair that is
//!   on no live call chain stays behind, exactly where [`tail_caller`]'s uninitialized buffer will be later. This
//!   is what loopscope's `before_poll` hook (called by tokio through a `dyn Fn`) left above `std::thread::sleep`
//!   in the `blocking_sleep` example, whose `blocking_sleep` tail-calls `sleep` in release builds.
//!
//! The old frame-pointer search rejected the real pair (its return address does not follow a call to
//! `fp_sleeper`), accepted the stale one (it follows an indirect call), and the stack read `fp_sleeper` →
//! `pollute` → the thread body, losing `tail_caller`.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicBool;

use common::*;
use loopscope_probes::stack::{CaptureMethod, CaptureOptions, Symbolizer, Unwinder};

std::arch::global_asm!(
    ".pushsection .text.loopscope_tail_call_fixture,\"ax\",@progbits",
    // fn fp_sleeper(stop: *const AtomicBool): rbp frame, 32 bytes below the saved rbp, usleep(20 ms) until *stop.
    ".globl loopscope_fixture_fp_sleeper",
    ".type loopscope_fixture_fp_sleeper,@function",
    "loopscope_fixture_fp_sleeper:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rbx",
    ".cfi_offset rbx, -24",
    "sub rsp, 24",
    "mov rbx, rdi",
    "2:",
    "cmp byte ptr [rbx], 0",
    "jne 3f",
    "mov edi, 20000",
    "call {usleep}@PLT",
    "jmp 2b",
    "3:",
    "add rsp, 24",
    "pop rbx",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size loopscope_fixture_fp_sleeper, . - loopscope_fixture_fp_sleeper",
    // fn tail_sleeper(stop: *const AtomicBool): a tail call, nothing else.
    ".globl loopscope_fixture_tail_sleeper",
    ".type loopscope_fixture_tail_sleeper,@function",
    "loopscope_fixture_tail_sleeper:",
    ".cfi_startproc",
    "jmp loopscope_fixture_fp_sleeper",
    ".cfi_endproc",
    ".size loopscope_fixture_tail_sleeper, . - loopscope_fixture_tail_sleeper",
    // fn pollute(f: extern "C" fn()): calls f indirectly from 512 bytes below its frame.
    ".globl loopscope_fixture_pollute",
    ".type loopscope_fixture_pollute,@function",
    "loopscope_fixture_pollute:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "sub rsp, 512",
    "call rdi",
    "mov rsp, rbp",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size loopscope_fixture_pollute, . - loopscope_fixture_pollute",
    ".globl loopscope_fixture_pollute_end",
    "loopscope_fixture_pollute_end:",
    // fn leaf(): an rbp frame that does nothing, leaving (saved rbp, return address) behind.
    ".globl loopscope_fixture_leaf",
    ".type loopscope_fixture_leaf,@function",
    "loopscope_fixture_leaf:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size loopscope_fixture_leaf, . - loopscope_fixture_leaf",
    ".popsection",
    usleep = sym libc::usleep,
);

unsafe extern "C" {
    fn loopscope_fixture_tail_sleeper(stop: *const AtomicBool);
    fn loopscope_fixture_pollute(f: unsafe extern "C" fn());
    fn loopscope_fixture_pollute_end();
    fn loopscope_fixture_leaf();
}

/// Calls `tail_sleeper` with 1 KiB of uninitialized stack above it: the stale pair `pollute` left stays there.
#[inline(never)]
fn tail_caller(stop: &AtomicBool) {
    let mut room = MaybeUninit::<[u64; 128]>::uninit();
    black_box(&mut room);
    // A direct `call rel32`, as in the example (rustc calls an `extern` function through the GOT, `call *[rip]`,
    // which the frame-pointer search treats as an indirect call).
    // SAFETY: `tail_sleeper` follows the C ABI (hence `clobber_abi("C")`) and only reads `*stop` (a live
    // `AtomicBool`, read as its byte) and calls `usleep`. The stack is 16-byte aligned here (this function
    // calls others, so its frame keeps the call-site alignment) and the asm may push (no `nostack`).
    unsafe {
        std::arch::asm!(
            "call {f}",
            f = sym loopscope_fixture_tail_sleeper,
            in("rdi") stop as *const AtomicBool,
            clobber_abi("C"),
        )
    };
    black_box(&mut room);
}

#[inline(never)]
fn polluted_then_tail_called(stop: &AtomicBool) {
    // SAFETY: `pollute` calls `leaf`, which touches nothing but its own stack frame.
    unsafe { loopscope_fixture_pollute(black_box(loopscope_fixture_leaf)) };
    tail_caller(stop);
}

#[test]
fn unwinds_through_a_tail_call_without_taking_a_stale_frame() {
    let sampler = sampler();
    let t = Target::spawn("tail-call", polluted_then_tail_called);
    wait_for_sample(t.tid, "the fixture in clock_nanosleep", |s| {
        in_syscall(s, "clock_nanosleep") || in_syscall(s, "nanosleep")
    });
    let pollute = loopscope_fixture_pollute as *const () as usize..loopscope_fixture_pollute_end as *const () as usize;
    for _ in 0..5 {
        let raw = sampler.capture_with(t.tid, CAPTURE_TIMEOUT, CaptureOptions::new(Unwinder::Dwarf, 64)).unwrap();
        assert_eq!(raw.method, CaptureMethod::Outside, "{raw:?}");
        let frames = Symbolizer::new().symbolize(&raw);
        let stack = names(&frames);
        assert!(
            !raw.ips.iter().any(|ip| pollute.contains(ip)),
            "a stale frame of `pollute` was taken for a caller: {:x?}\n{stack:#?}",
            raw.ips
        );
        // Right above the frame-pointer frame: its live caller, nothing stale (the thread's start-up left stale
        // pairs of std's channel code in this memory too).
        let at = stack.iter().position(|n| n.contains("fp_sleeper")).unwrap();
        assert!(stack.get(at + 1).is_some_and(|n| n.ends_with("tail_caller")), "{stack:#?}");
        assert!(has_function(&frames, "polluted_then_tail_called"), "{stack:#?}");
        assert!(stack.iter().any(|n| n.contains("start_thread") || n.contains("clone")), "{stack:#?}");
    }
    t.stop();
}
