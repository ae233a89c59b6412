//! Runtimes that come and go (apps that build runtimes repeatedly, `#[loopscope::test]`) must give back what
//! the process-wide probes hold for their threads: perf fds, stack slots, threads and memory. Runs in a child
//! process, so the counts are not disturbed by the other tests of this binary.

use crate::support::*;
use loopscope_probes::stack::StackSampler;
use std::time::{Duration, Instant};

const RUNTIMES: usize = 500;
const CHILD_OK: &str = "PROBE-LEAKS-CHILD-OK";

#[derive(Debug, Clone, Copy)]
struct Resources {
    fds: usize,
    threads: usize,
    slots: usize,
    rss: u64,
}

impl Resources {
    fn now() -> Resources {
        let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(usize::MAX);
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(u64::MAX / 8192);
        Resources {
            fds: count("/proc/self/fd"),
            threads: count("/proc/self/task"),
            slots: StackSampler::installed().map_or(0, |s| s.prepared_threads()),
            rss: pages * 4096,
        }
    }

    /// Back to `base`, give or take a little: the allocator keeps some freed memory (measured here: +15 MB after
    /// 250 runtimes, +16 MB after 1,000, +21 MB after 1,500: glibc's per-thread arenas, not a per-runtime leak),
    /// and a runtime's threads may still be on their way out for a moment, which the deadline absorbs.
    fn near(&self, base: &Resources) -> bool {
        self.fds <= base.fds + 2
            && self.threads <= base.threads + 1
            && self.slots <= base.slots
            && self.rss <= base.rss + 24 * 1024 * 1024
    }
}

/// One short-lived runtime with the agent installed: two workers, a few tasks, then dropped.
fn one_runtime() {
    let (rt, agent) = multi_thread(2, agent());
    rt.block_on(async {
        let tasks: Vec<_> = (0..4u64)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    i
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task runs");
        }
    });
    drop(rt);
    drop(agent);
}

#[inline(never)]
fn leak_test_sleeps() {
    std::thread::sleep(ms(50));
}

#[test]
#[ignore = "run by runtimes_come_and_go_without_leaking_probes in a child process"]
fn child_runtimes_come_and_go() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    // The first agent starts the process-wide probes (signal handler, symbols loaded on a thread of their own):
    // that is paid once per process, not per runtime, so it belongs to the baseline.
    let before = Resources::now();
    {
        let (rt, agent) = multi_thread(2, agent());
        rt.block_on(async { tokio::spawn(async {}).await.expect("task runs") });
        wait_until("the probes to be ready", || agent.probes_ready());
    }
    wait_until("the first runtime's threads to leave", || Resources::now().threads <= before.threads);
    // So does the allocator's own growth: glibc gives threads up to 8 arenas per core, and each keeps some
    // memory once used. A hundred runtimes (five threads each) reach that steady state; a leak per runtime
    // would still show in the 500 after it.
    for _ in 0..100 {
        one_runtime();
    }
    wait_until("the warm-up runtimes' threads to leave", || Resources::now().threads <= before.threads);
    let base = Resources::now();

    let start = Instant::now();
    for _ in 0..RUNTIMES {
        one_runtime();
    }
    let made = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = Resources::now();
    while !last.near(&base) {
        assert!(
            Instant::now() < deadline,
            "fds, threads, stack slots or memory did not come back after {RUNTIMES} runtimes: baseline {base:?}, now \
             {last:?}"
        );
        std::thread::sleep(ms(5));
        last = Resources::now();
    }
    println!("baseline {base:?}; after {RUNTIMES} runtimes (built, run and dropped in {made:?}): {last:?}");

    // The 501st runtime still gets stacks: nothing ran out.
    let (rt, agent) = multi_thread(2, agent().stall_threshold(ms(10)));
    wait_until("the probes to be ready", || agent.probes_ready());
    rt.block_on(async { tokio::spawn(async { leak_test_sleeps() }).await.expect("task runs") });
    let mut seen = Vec::new();
    wait_until("the stall's culprit with its stack", || {
        seen = agent.stalls();
        seen.iter()
            .filter_map(|s| s.last.culprit.as_ref())
            .flat_map(|c| &c.samples)
            .any(|s| s.frames.iter().any(|f| f.function.as_deref().is_some_and(|n| n.ends_with("leak_test_sleeps"))))
    });
    drop(rt);
    println!("{CHILD_OK}");
}

#[test]
fn runtimes_come_and_go_without_leaking_probes() {
    let out = rerun("probe_leaks::child_runtimes_come_and_go", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(CHILD_OK), "the child did not run the check:\n{stdout}\n{stderr}");
    println!("{}", stdout.lines().find_map(|l| l.split_once("baseline").map(|(_, rest)| rest)).unwrap_or(""));
}
