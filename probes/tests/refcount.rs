//! Prepared threads are reference-counted and swept: the probes are shared by every agent of a process, and a
//! runtime that goes away must not keep its threads' perf fds and stack slots. One test, one process, so the
//! counts are not disturbed by other tests.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use loopscope_probes::{ProbeConfig, Probes};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn park_until_stopped(stop: &AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_millis(5));
    }
}

#[test]
fn prepared_threads_are_reference_counted_and_swept() {
    let probes = Probes::new(ProbeConfig { warm_symbolizer: false, ..ProbeConfig::default() });
    let slots = probes.prepared_threads();
    let fds = open_fds();

    // Two agents prepare the same thread: the first forget keeps it, the second releases it.
    let t = Target::spawn("shared", park_until_stopped);
    probes.prepare_thread(t.tid).unwrap();
    probes.prepare_thread(t.tid).unwrap();
    assert_eq!(probes.prepared_threads(), slots + 1);
    probes.forget_thread(t.tid);
    assert!(probes.sampler().unwrap().is_prepared(t.tid), "one reference left");
    probes.forget_thread(t.tid);
    assert!(!probes.sampler().unwrap().is_prepared(t.tid));
    assert_eq!(open_fds(), fds, "perf counters closed with the last reference");
    t.stop();

    // Threads that exit without being forgotten (a runtime dropped while its watchdog was not looking) are
    // swept: their slots and perf fds come back.
    let mut exited = Vec::new();
    for i in 0..20 {
        let t = Target::spawn(&format!("exits-{i}"), park_until_stopped);
        probes.prepare_thread(t.tid).unwrap();
        exited.push(t.tid);
        t.stop();
    }
    assert_eq!(probes.prepared_threads(), slots + 20);
    assert!(open_fds() >= fds, "perf counters are held until swept");
    wait_for("the exited threads to be gone from /proc", || {
        exited.iter().all(|tid| !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()).then_some(())
    });
    assert_eq!(probes.sweep(), 20);
    assert_eq!(probes.prepared_threads(), slots);
    assert_eq!(open_fds(), fds);
    assert_eq!(probes.sweep(), 0, "nothing left to sweep");

    // A slot a capture prepared implicitly (no reference) is swept too once its thread exits.
    let t = Target::spawn("captured", park_until_stopped);
    let tid = t.tid;
    let _ = probes.sampler().unwrap().capture(tid, CAPTURE_TIMEOUT);
    assert!(probes.sampler().unwrap().is_prepared(tid));
    t.stop();
    wait_for("the captured thread to be gone", || {
        (!std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()).then_some(())
    });
    assert_eq!(probes.sweep(), 1);
    assert_eq!(probes.prepared_threads(), slots);
}
