//! Cost of a stack capture: signal to raw instruction pointers (warm), and signal to symbols with a fresh
//! (cold) or reused (warm) symbolizer.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-probes cargo bench -p loopscope-probes`
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use loopscope_probes::stack::{CaptureOptions, RunningCapture, SamplerConfig, StackSampler, Symbolizer, Unwinder};
use loopscope_probes::{Tid, current_tid};

const TIMEOUT: Duration = Duration::from_secs(5);

#[inline(never)]
fn bench_spin(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}

#[inline(never)]
fn bench_block(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A target thread at a realistic depth (a few user frames on top of std's thread start).
fn target(spin: bool) -> (Tid, Arc<AtomicBool>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        tx.send(current_tid()).unwrap();
        if spin {
            black_box(bench_spin(&flag));
        } else {
            bench_block(&flag);
        }
    });
    (rx.recv().unwrap(), stop, handle)
}

fn benches(c: &mut Criterion) {
    let sampler = StackSampler::install(SamplerConfig::default()).unwrap();
    let mut group = c.benchmark_group("capture");
    for (label, spin) in [("sleeping_target", false), ("spinning_target", true)] {
        let (tid, stop, handle) = target(spin);
        sampler.prepare_thread(tid).unwrap();
        for unwinder in [Unwinder::Dwarf, Unwinder::FramePointer] {
            let options = CaptureOptions { unwinder, max_depth: 64, running: RunningCapture::Signal };
            // Warm this path (and, for frame pointers, the cached stack bounds).
            sampler.capture_with(tid, TIMEOUT, options).unwrap();
            group.bench_function(format!("{label}/{unwinder:?}/signal_to_ips"), |b| {
                b.iter(|| black_box(sampler.capture_with(tid, TIMEOUT, options).unwrap()))
            });
        }
        if spin && sampler.perf_sampling().is_ok() {
            // The default for a running thread: a perf sample (open the event, wait for the thread to run 100 µs
            // of its own code, copy 48 KiB of stack, close), then the DWARF unwind of the copy. No signal.
            let options = CaptureOptions::new(Unwinder::Dwarf, 64);
            sampler.capture_with(tid, TIMEOUT, options).unwrap();
            group.bench_function(format!("{label}/Dwarf/perf_sample_to_ips"), |b| {
                b.iter(|| black_box(sampler.capture_with(tid, TIMEOUT, options).unwrap()))
            });
        }
        if !spin {
            let mut warm = Symbolizer::new();
            warm.warm();
            group.bench_function(format!("{label}/Dwarf/signal_to_symbols_warm"), |b| {
                b.iter(|| {
                    let raw = sampler.capture(tid, TIMEOUT).unwrap();
                    black_box(warm.symbolize(&raw))
                })
            });
            // Cold: a fresh symbolizer each time (empty address cache). The `backtrace` crate's own cache of
            // parsed debug info is process-wide and stays loaded, as it would in the agent after `warm()`.
            group.bench_function(format!("{label}/Dwarf/signal_to_symbols_cold"), |b| {
                b.iter_batched(
                    Symbolizer::new,
                    |mut cold| {
                        let raw = sampler.capture(tid, TIMEOUT).unwrap();
                        black_box(cold.symbolize(&raw))
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        sampler.forget_thread(tid);
    }
    group.finish();
}

criterion_group! {
    name = capture;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(capture);
