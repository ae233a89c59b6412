//! `slots.rs`'s loom model checks (see the doc on `mod loom` there), in a file of their own.

#![allow(clippy::unwrap_used)]

use super::*;
use ::loom::sync::Arc;
use ::loom::thread;

/// What `begin` published for a poll of `task`: distinct per task, so a mixed read shows.
fn fields_of(task: u64) -> (usize, u64) {
    (0x1000 * task as usize, 100 * task)
}

/// A consistent read of the poll in flight is exactly one poll's sequence and fields.
fn check(f: InFlight, polls: &[(u64, u64)]) {
    let (location_addr, start) = fields_of(f.task_id);
    assert!(polls.contains(&(f.seq, f.task_id)), "poll {} read with sequence {}", f.task_id, f.seq);
    assert_eq!((f.location_addr, f.start), (location_addr, start), "fields of two polls mixed");
}

fn begin(slot: &WorkerSlot, task: u64) {
    let (location_addr, start) = fields_of(task);
    slot.begin(task, location_addr, start);
}

/// The watchdog reads the poll in flight while its thread ends one poll and starts the next.
#[test]
fn in_flight_is_one_poll() {
    ::loom::model(|| {
        let slot = Arc::new(WorkerSlot::new());
        begin(&slot, 1);
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                if let Some(f) = slot.in_flight() {
                    check(f, &[(1, 1), (3, 2)]);
                }
            })
        };
        slot.end(5, false);
        begin(&slot, 2);
        reader.join().unwrap();
    });
}

/// The same when a before-hook comes without its after-hook (`nested`).
#[test]
fn in_flight_is_one_poll_when_nested() {
    ::loom::model(|| {
        let slot = Arc::new(WorkerSlot::new());
        begin(&slot, 1);
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                if let Some(f) = slot.in_flight() {
                    check(f, &[(1, 1), (3, 2)]);
                }
            })
        };
        begin(&slot, 2);
        reader.join().unwrap();
    });
}

/// Completes one long poll of `task` (sequence, duration, entry and location all derived from it).
fn long_poll(slot: &WorkerSlot, task: u64) {
    begin(slot, task);
    slot.record_long(task * 1_000, task as u32, task as u32 + 7);
    slot.end(task * 1_000, true);
}

/// The watchdog reads the ring's entry 0 while the thread overwrites it with entry `LONG_POLLS`: it gets
/// the old long poll whole, or nothing, never the new one's fields under the old one's number.
#[test]
fn long_poll_ring_is_one_poll() {
    ::loom::model(|| {
        let slot = Arc::new(WorkerSlot::new());
        for task in 1..=LONG_POLLS as u64 {
            long_poll(&slot, task);
        }
        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                if let Some(r) = slot.long_poll(0) {
                    assert_eq!((r.seq, r.ns, r.task_id, r.entry, r.location), (1, 1_000, 1, 1, 8));
                }
                if let Some(ns) = slot.long_poll_ns(1) {
                    assert_eq!(ns, 1_000, "the duration of another long poll");
                }
            })
        };
        // Overwrites entry 0 (the poll of task 1, sequence 1).
        long_poll(&slot, LONG_POLLS as u64 + 1);
        reader.join().unwrap();
    });
}
