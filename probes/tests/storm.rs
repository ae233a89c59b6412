//! A signal storm: thousands of captures against threads doing real work and threads blocked in system calls.
//! Nothing may crash, no computation may be corrupted, and no `EINTR` may leak into the application.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use loopscope_probes::stack::{CaptureOptions, Unwinder};
use loopscope_probes::thread::{self, RunState};

/// Deterministic pseudo-random input (xorshift64).
fn input(n: usize) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
        .collect()
}

/// FNV-1a over the sorted data: any corruption (a clobbered register, a lost write) changes it.
#[inline(never)]
fn sort_and_hash(data: &[u64]) -> u64 {
    let mut v = data.to_vec();
    v.sort_unstable();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for x in v {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn storm(tid: i32, captures: usize, capturers: usize) -> usize {
    let sampler = sampler();
    let ok = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..capturers)
        .map(|i| {
            let sampler = Arc::clone(&sampler);
            let ok = Arc::clone(&ok);
            std::thread::spawn(move || {
                let unwinder = if i % 2 == 0 { Unwinder::Dwarf } else { Unwinder::FramePointer };
                for _ in 0..captures / capturers {
                    let raw =
                        sampler.capture_with(tid, CAPTURE_TIMEOUT, CaptureOptions { unwinder, max_depth: 64 }).unwrap();
                    assert_eq!(raw.tid, tid);
                    assert!(!raw.ips.is_empty());
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    ok.load(Ordering::Relaxed)
}

#[test]
fn storm_against_a_computing_thread() {
    let data = Arc::new(input(20_000));
    let expected = sort_and_hash(&data);
    let worker_data = Arc::clone(&data);
    let worker = Target::spawn("storm-worker", move |stop: &AtomicBool| {
        let (mut rounds, mut wrong) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            if sort_and_hash(&worker_data) != expected {
                wrong += 1;
            }
            rounds += 1;
        }
        (rounds, wrong)
    });
    let start = Instant::now();
    let done = storm(worker.tid, 10_000, 2);
    let elapsed = start.elapsed();
    let (rounds, wrong) = worker.stop();
    assert_eq!(done, 10_000);
    assert_eq!(wrong, 0, "corrupted results in {rounds} rounds");
    assert!(rounds > 0);
    println!("10,000 captures in {elapsed:?} while the worker did {rounds} verified rounds");
}

#[test]
fn storm_against_blocked_syscalls() {
    // A read on a pipe that gets its data only after the storm.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by these Files only.
    let (mut reader_end, mut writer_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let reader = Target::spawn("storm-reader", move |_: &AtomicBool| {
        let mut buf = [0u8; 64];
        // A single read: with SA_RESTART it must neither fail with EINTR nor return early.
        let n = reader_end.read(&mut buf).map_err(|e| e.to_string())?;
        Ok::<Vec<u8>, String>(buf[..n].to_vec())
    });
    // A sleep whose duration must be respected (std retries the EINTR of clock_nanosleep with the remaining
    // time).
    let sleeper = Target::spawn("storm-sleeper", |_: &AtomicBool| {
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(400));
        start.elapsed()
    });
    // A channel receive (futex wait).
    let (tx, rx) = mpsc::channel::<u64>();
    let receiver = Target::spawn("storm-receiver", move |_: &AtomicBool| rx.recv_timeout(Duration::from_secs(30)));
    wait_for_sample(reader.tid, "reader blocked in read", |s| s.state == RunState::Sleeping && in_syscall(s, "read"));
    wait_for_sample(receiver.tid, "receiver blocked in futex", |s| {
        s.state == RunState::Sleeping && in_syscall(s, "futex")
    });

    let sleeper_tid = sleeper.tid;
    let sleeper_storm = std::thread::spawn(move || {
        let sampler = sampler();
        let mut n = 0;
        // Bounded: every interruption of a relative sleep makes the kernel report a remaining time that includes
        // the thread's timer slack (50 us by default), so an endless storm would keep a sleeper asleep forever
        // (see the README). Stop early if the sleeper finished (its capture then fails: the thread is gone).
        while n < 1_500 && sampler.capture(sleeper_tid, CAPTURE_TIMEOUT).is_ok() {
            n += 1;
        }
        n
    });
    let reads = storm(reader.tid, 3_000, 2);
    let recvs = storm(receiver.tid, 3_000, 2);
    assert_eq!((reads, recvs), (3_000, 3_000));

    // The blocked read is still blocked, not failed.
    let s = thread::sample(reader.tid).unwrap();
    assert!(in_syscall(&s, "read"), "reader left its read: {s:?}");

    writer_end.write_all(b"payload after the storm").unwrap();
    assert_eq!(reader.stop().unwrap(), b"payload after the storm");
    tx.send(42).unwrap();
    assert_eq!(receiver.stop(), Ok(42));
    let slept = sleeper.stop();
    let sleeper_captures = sleeper_storm.join().unwrap();
    assert!(slept >= Duration::from_millis(400), "sleep cut short by {sleeper_captures} interruptions: {slept:?}");
    assert!(sleeper_captures > 10, "the sleeper was really interrupted: {sleeper_captures}");
}
