//! Resident memory and start-up cost of the symbolizer (issue 12, item 6), measured in this process:
//! RSS before the probes exist, after `Probes::new` (what an app pays for having probes on, idle), and after
//! symbolizing one real stack (a thread blocked in `recv`, captured by the probes).
//!
//! One test per file, so the figures are not disturbed by other tests of this binary. Run with
//! `--nocapture` to see the figures (`BENCHMARKS.md`, "Symbolizer memory and start-up"). Fails if the probes
//! hold more than 10 MiB resident, idle or after symbolizing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Target, has_function, names};
use loopscope_probes::{ProbeConfig, Probes};

/// `VmRSS`, `RssAnon` and `RssFile` of this process, in KiB.
fn rss() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[inline(never)]
fn memory_marker_blocked(rx: &mpsc::Receiver<()>) {
    // Blocks in an untimed futex wait (a signal capture) until the sender goes away.
    let _ = std::hint::black_box(rx.recv());
}

#[test]
fn symbolizer_memory_and_startup() {
    let before = rss();
    let start = Instant::now();
    let probes = Probes::new(ProbeConfig::default());
    let install = start.elapsed();
    let idle = rss();

    let (tx, rx) = mpsc::channel::<()>();
    let target = Target::spawn("memory-target", move |_| memory_marker_blocked(&rx));
    // Wait until the thread is parked in the kernel, so the capture sees the marker on its stack.
    common::wait_for_sample(target.tid, "target blocked in futex", |s| common::in_syscall(s, "futex"));
    let raw = common::wait_for("a stack", || {
        probes.snapshot(target.tid, Some(common::CAPTURE_TIMEOUT)).stack.and_then(|s| s.ok())
    });
    let start = Instant::now();
    let frames = probes.symbolize(&raw);
    let first = start.elapsed();
    let after_one = rss();
    let start = Instant::now();
    let again = probes.symbolize(&raw);
    let cached = start.elapsed();
    drop(tx);
    target.stop();

    assert!(has_function(&frames, "memory_marker_blocked"), "{:#?}", names(&frames));
    assert_eq!(frames, again);
    let line = |what: &str, (total, anon, file): (u64, u64, u64)| {
        println!(
            "{what:<28} VmRSS {:>7.1} MiB (+{:>6.1})  RssAnon {:>7.1} MiB (+{:>6.1})  RssFile {:>7.1} MiB (+{:>6.1})",
            mib(total),
            mib(total.saturating_sub(before.0)),
            mib(anon),
            mib(anon.saturating_sub(before.1)),
            mib(file),
            mib(file.saturating_sub(before.2)),
        );
    };
    println!("symbolizer memory ({} build)", if cfg!(debug_assertions) { "debug" } else { "release" });
    line("before probes", before);
    line("after Probes::new (idle)", idle);
    line("after one stack", after_one);
    println!("Probes::new {install:?}; first symbolization {first:?} ({} frames); cached {cached:?}", frames.len());
    for f in &frames {
        println!(
            "  {}{} {:?} {}:{}",
            if f.inlined { "(inlined) " } else { "" },
            f.display_name(),
            f.origin,
            f.file.as_deref().unwrap_or("-"),
            f.line.unwrap_or(0)
        );
    }
    for status in probes.status().iter().filter(|s| s.name == "symbolizer") {
        println!("status: symbolizer: {}", status.detail);
    }
    // The budget (issue 12): at most 10 MiB of fixed resident memory with probes on, idle and after a stack.
    let budget = 10 * 1024;
    assert!(idle.0.saturating_sub(before.0) <= budget, "idle probes hold {} KiB", idle.0 - before.0);
    assert!(after_one.0.saturating_sub(before.0) <= budget, "a symbolized stack holds {} KiB", after_one.0 - before.0);
    // And no symbol work before the first stall: creating the probes reads no debug info.
    assert!(install < Duration::from_secs(1), "Probes::new took {install:?}");
}
