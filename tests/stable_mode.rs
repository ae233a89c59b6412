//! Stable mode (`Mode::Stable`): stalls found from the workers' busy spans (tokio's park/unpark hooks, stable
//! APIs) and confirmed by the probes, with no task hooks. Real runtimes, real blocking.
//!
//! Runs in both builds: with `--cfg tokio_unstable` (the workspace's `cargo test`) the mode is chosen with
//! `.mode(Mode::Stable)`; without it (CI: `RUSTFLAGS="-D warnings" CARGO_TARGET_DIR=target/no-unstable cargo test
//! -p loopscope --test stable_mode`) it is the default, and these tests are what shows that such a build finds
//! stalls at all.

// The other integration binaries' harness (`ms`, `wait_event`, `wait_until`, the environment-proof builder);
// only what stable mode changes is written here.
#![allow(unreachable_pub, dead_code)]

#[path = "integration/support.rs"]
mod support;

use loopscope::wire::{Classification, StallEvent, StallKind, StallPhase};
use loopscope::{Agent, AgentBuilder, Mode};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{DEADLINE, ms, wait_event};

const THRESHOLD: Duration = Duration::from_millis(10);

fn agent() -> AgentBuilder {
    support::agent().mode(Mode::Stable).stall_threshold(THRESHOLD)
}

fn multi_thread(workers: usize) -> (tokio::runtime::Runtime, Agent) {
    support::multi_thread(workers, agent())
}

/// Every function name on the stalled thread's stacks, innermost first.
fn functions(ev: &StallEvent) -> Vec<String> {
    let culprit = ev.culprit.as_ref().expect("a confirmed stall has a culprit");
    culprit.samples.iter().flat_map(|s| s.frames.iter()).filter_map(|f| f.function.clone()).collect()
}

/// A stall of this test's own `handler` reported in flight and then ended: what a stable-mode user sees.
fn assert_found(ev: &StallEvent, handler: &str) {
    assert_eq!(ev.kind, StallKind::WorkerBlocked, "{}", ev.summary());
    assert!(ev.caught_in_flight);
    // What stable mode can't know, and says so.
    assert_eq!(ev.task_id, 0);
    assert!(ev.location.is_none());
    assert!(ev.summary().contains("unknown task"), "{}", ev.summary());
    assert!(ev.summary().contains("--cfg tokio_unstable"), "{}", ev.summary());
    let names = functions(ev);
    assert!(names.iter().any(|n| n.contains(handler)), "no frame of {handler} on the stack: {names:#?}");
}

#[inline(never)]
fn sleeping_handler() {
    std::thread::sleep(ms(150));
}

#[test]
fn a_sleep_in_a_task_is_found_with_its_syscall_and_stack() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    let h = rt.spawn(async { sleeping_handler() });
    let started = wait_event(&sub, "the sleep to be reported while it sleeps", |e| e.phase == StallPhase::Started);
    assert_found(&started, "sleeping_handler");
    let culprit = started.culprit.as_ref().expect("culprit");
    assert!(
        matches!(&culprit.classification, Classification::Syscall { name, .. } if name.contains("nanosleep")),
        "{}",
        started.summary()
    );
    assert!(started.summary().contains("blocked in syscall"), "{}", started.summary());
    let ended = wait_event(&sub, "the stall's end", |e| e.phase == StallPhase::Ended && e.stall_id == started.stall_id);
    // The end comes at the worker's park, or, when a later look finds the poll over before the park (a worker
    // kept busy, or slow to park on a loaded machine), with the duration of the last report that still saw it:
    // 80 ms, the last doubling of the threshold before the sleep's end.
    assert!(ended.elapsed >= ms(80), "{ended:?}");
    rt.block_on(h).unwrap();
    assert_eq!(agent.snapshot().totals.stall_count, 1);
}

/// Long enough that a spin is confirmed on a loaded machine too: the probes take a runnable thread's stack only
/// once it has proven to be on a CPU, and a few tries may pass before three in a row come back.
#[inline(never)]
fn spinning_handler() -> u64 {
    let end = Instant::now() + ms(600);
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..1000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[test]
fn a_cpu_spin_in_a_task_is_found_as_cpu_bound() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    let h = rt.spawn(async { spinning_handler() });
    let ended = wait_event(&sub, "the spin's end", |e| e.phase == StallPhase::Ended);
    assert_found(&ended, "spinning_handler");
    let culprit = ended.culprit.as_ref().expect("culprit");
    assert_eq!(culprit.classification, Classification::CpuBound, "{}", ended.summary());
    rt.block_on(h).unwrap();
}

#[inline(never)]
fn long_spinning_handler() -> u64 {
    spin_for(THRESHOLD * 30)
}

/// A spin on one worker while the other runs a storm of short polls, whose figures move all the time: only
/// knowing which worker the spinning thread runs (learned at its parks) lets the metrics agree with the stacks.
/// At least one of three spins must be found: on a crowded machine (this binary's tests run side by side) the
/// spinning thread may run too little for the metrics to say anything, and is then rightly left alone.
#[test]
fn a_cpu_spin_beside_a_busy_worker_is_found() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Parks and wakes first, one worker at a time, as any app does between bursts.
    rt.block_on(async {
        for _ in 0..20 {
            tokio::spawn(tokio::time::sleep(ms(1))).await.unwrap();
        }
    });
    let storm: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(spin_for(Duration::from_micros(20)));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for _ in 0..3 {
        rt.block_on(rt.spawn(async { long_spinning_handler() })).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in storm {
        rt.block_on(t).unwrap();
    }
    // The first report of a process waits for the symbolizer to load, which takes seconds on a loaded machine.
    let mut found = Vec::new();
    let end = Instant::now() + DEADLINE;
    while found.is_empty()
        && let Some(ev) = sub.recv_timeout(end.saturating_duration_since(Instant::now()))
    {
        if ev.phase == StallPhase::Started && functions(&ev).iter().any(|f| f.contains("long_spinning_handler")) {
            found.push(ev.summary());
        }
    }
    eprintln!("a spin beside a busy worker ({:?}): {found:#?}", agent.busy_snapshot());
    assert!(!found.is_empty(), "no spin beside a busy worker was found ({:?})", agent.busy_snapshot());
}

#[inline(never)]
fn locking_handler(m: &std::sync::Mutex<u32>) -> u32 {
    *m.lock().expect("the test's mutex is never poisoned")
}

#[test]
fn a_std_mutex_wait_in_a_task_is_found_as_a_lock_wait() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    let m = std::sync::Arc::new(std::sync::Mutex::new(7));
    let guard = m.lock().unwrap();
    let task_m = m.clone();
    let h = rt.spawn(async move { locking_handler(&task_m) });
    let started = wait_event(&sub, "the lock wait to be reported while it waits", |e| e.phase == StallPhase::Started);
    drop(guard);
    assert_found(&started, "locking_handler");
    let culprit = started.culprit.as_ref().expect("culprit");
    assert!(matches!(culprit.classification, Classification::LockWait { .. }), "{}", started.summary());
    assert_eq!(rt.block_on(h).unwrap(), 7);
}

/// Receives from a channel that always has a message ready: under `unconstrained`, tokio's cooperative budget
/// never makes `recv` return `Pending`, so the poll never ends until `d` has passed. Its stack samples land in
/// tokio's channel code rather than in this function's own.
async fn unconstrained_handler(mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>, d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut sum = 0u64;
    while Instant::now() < end {
        match rx.recv().await {
            Some(v) => sum = std::hint::black_box(sum.wrapping_add(v)),
            None => break,
        }
    }
    sum
}

/// A poll that never returns while tokio's own code runs inside it: the stack rule alone (the app's own code
/// innermost) confirmed 2 of 10; the workers' metrics, which its worker never moves, confirm every one.
#[test]
fn a_task_that_never_yields_inside_tokio_code_is_found() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    for round in 0..5 {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // More messages than the poll can take in four thresholds (a debug build's `recv` takes ~100 ns): one is
        // always ready.
        for v in 0..3_000_000u64 {
            if tx.send(v).is_err() {
                break;
            }
        }
        let h = rt.spawn(tokio::task::unconstrained(unconstrained_handler(rx, THRESHOLD * 4)));
        let what = format!("round {round}: the never-yielding poll's stall");
        let started = wait_event(&sub, &what, |e| e.phase == StallPhase::Started);
        assert_found(&started, "unconstrained_handler");
        rt.block_on(h).unwrap();
        wait_event(&sub, "its end", |e| e.phase == StallPhase::Ended);
        // Whatever else the round reported (later updates) is drained before the next.
        while sub.try_recv().is_some() {}
        drop(tx);
    }
}

#[test]
fn a_storm_of_short_polls_is_no_stall() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    rt.block_on(async {
        // A thousand tasks with one body, each poll 20 µs of its own work: three stack samples in a row nearly
        // always show "the same frames" (that work, at its one call site), and only the workers' metrics, which
        // both workers move every 61 polls, tell it from one poll.
        let storm: Vec<_> = (0..1_000)
            .map(|_| {
                tokio::spawn(async {
                    let end = Instant::now() + ms(1000);
                    while Instant::now() < end {
                        std::hint::black_box(spin_for(Duration::from_micros(20)));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in storm {
            t.await.unwrap();
        }
        let storm: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async {
                    let end = Instant::now() + ms(1000);
                    while Instant::now() < end {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in storm {
            t.await.unwrap();
        }
        // `yield_now` defers its wake-up to the worker's next park, so the workers above park often. Tasks that
        // wake each other directly keep a worker's queue full and its span unbroken: pairs playing ping-pong
        // over channels, each turn a few microseconds of work.
        let pairs: Vec<_> = (0..2)
            .map(|_| {
                let (to_b, mut from_a) = tokio::sync::mpsc::channel::<u64>(1);
                let (to_a, mut from_b) = tokio::sync::mpsc::channel::<u64>(1);
                let a = tokio::spawn(async move {
                    let end = Instant::now() + ms(1000);
                    let mut n = 0u64;
                    while Instant::now() < end {
                        to_b.send(std::hint::black_box(n)).await.unwrap();
                        n = from_b.recv().await.unwrap().wrapping_add(1);
                    }
                });
                let b = tokio::spawn(async move {
                    while let Some(n) = from_a.recv().await {
                        if to_a.send(n).await.is_err() {
                            break;
                        }
                    }
                });
                (a, b)
            })
            .collect();
        for (a, b) in pairs {
            a.await.unwrap();
            b.await.unwrap();
        }
    });
    // The workers were busy for the whole second: the candidates were looked at, and none was one poll.
    let end = Instant::now() + DEADLINE;
    while agent.busy_snapshot().candidates == 0 && Instant::now() < end {
        std::thread::sleep(ms(5));
    }
    drop(rt);
    let busy = agent.busy_snapshot();
    eprintln!("stable mode, 2 s of yield storms and 1 s of ping-pong on 2 workers: {busy:?}");
    assert!(busy.candidates >= 1, "the storm's busy workers were never examined: {busy:?}");
    let stalls: Vec<String> = std::iter::from_fn(|| sub.try_recv()).map(|e| e.summary()).collect();
    assert!(stalls.is_empty(), "a storm of short polls was reported as stalls ({busy:?}): {stalls:#?}");
    assert_eq!(busy.rejected, busy.candidates);
}

#[test]
fn an_idle_runtime_is_no_stall() {
    let (rt, agent) = multi_thread(2);
    rt.block_on(async {
        for _ in 0..5 {
            tokio::spawn(async { tokio::time::sleep(ms(100)).await }).await.unwrap();
        }
    });
    drop(rt);
    assert_eq!(agent.busy_snapshot().candidates, 0);
    assert_eq!(agent.snapshot().totals.stall_count, 0);
}

/// `on_thread_start` fires for `spawn_blocking` threads too, and they never park: their spans pass the threshold,
/// and the probes find no scheduler on their stacks.
#[test]
fn spawn_blocking_is_never_a_stall() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    rt.block_on(async {
        let jobs: Vec<_> = (0..2).map(|_| tokio::task::spawn_blocking(|| std::thread::sleep(ms(300)))).collect();
        for j in jobs {
            j.await.unwrap();
        }
    });
    let end = Instant::now() + DEADLINE;
    while agent.busy_snapshot().candidates < 2 && Instant::now() < end {
        std::thread::sleep(ms(5));
    }
    drop(rt);
    let busy = agent.busy_snapshot();
    let stalls: Vec<String> = std::iter::from_fn(|| sub.try_recv()).map(|e| e.summary()).collect();
    assert!(stalls.is_empty(), "spawn_blocking reported as stalls ({busy:?}): {stalls:#?}");
    assert!(busy.candidates >= 2, "the blocking threads' spans were never examined: {busy:?}");
}

#[test]
fn agent_spawn_times_its_task_exactly_and_names_it() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    let line = line!() + 3;
    let h = {
        let _in_runtime = rt.enter();
        agent.spawn(async { sleeping_handler() })
    };
    let ended = wait_event(&sub, "the timed task's stall to end", |e| e.phase == StallPhase::Ended);
    rt.block_on(h).unwrap();
    assert_ne!(ended.task_id, 0, "{}", ended.summary());
    let location = ended.location.as_ref().expect("the spawn site");
    assert!(location.file.ends_with("stable_mode.rs") && location.line == line, "{location}");
    assert!(ended.elapsed >= ms(150));
    drop(rt);
    // The busy span around the timed poll is not a second report of the same sleep.
    let others: Vec<String> =
        std::iter::from_fn(|| sub.try_recv()).filter(|e| e.stall_id != ended.stall_id).map(|e| e.summary()).collect();
    assert!(others.is_empty(), "{others:#?}");
}

#[test]
fn a_current_thread_runtime_is_watched_too() {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_all();
    let agent = agent().install(&mut b).unwrap();
    let rt = b.build().unwrap();
    let sub = agent.subscribe();
    // The runtime's thread parks first (so the agent knows it), then the task sleeps; the watchdog and the
    // prober look at it from their own threads while `block_on` is held.
    rt.block_on(async {
        tokio::time::sleep(ms(20)).await;
        tokio::spawn(async { sleeping_handler() }).await.unwrap();
    });
    let ended = wait_event(&sub, "the sleep's end", |e| e.phase == StallPhase::Ended);
    assert_found(&ended, "sleeping_handler");
}

/// How long the stall inside `block_on` lasts in the test below: long enough that the reports inside it take
/// every stack `MAX_CAPTURES` allowed a stall, even when the confirmation waits 200 ms for the symbolizer (the
/// first stall of a process), so that the first report after `block_on` returned (at 64×, 640 ms) took none.
const INSIDE: Duration = Duration::from_millis(400);

#[inline(never)]
fn long_sleeping_handler() {
    std::thread::sleep(INSIDE);
}

/// Issue #15: no park hook fires when a current-thread runtime's `block_on` returns, so the thread's busy span
/// stays open after it. A stall confirmed inside `block_on` must end once it has returned, and what the thread
/// blocks in afterwards, outside any runtime, is no stall: neither the same one going on, nor a new one.
#[test]
fn a_thread_that_left_block_on_is_not_reported_for_blocking_outside_it() {
    let (rt, agent) = support::current_thread(agent());
    let sub = agent.subscribe();
    // The thread parks first (so the agent knows it), then the task's sleep is confirmed as a stall while it runs.
    rt.block_on(async {
        tokio::time::sleep(ms(20)).await;
        tokio::spawn(async { long_sleeping_handler() }).await.unwrap();
    });
    // Out of the runtime for good, with its busy span still open: from here the thread blocks in the test's own
    // code, first waiting on the subscription (a futex wait) for the stall's end, then asleep.
    let end = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    let ended = loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the stall inside block_on never ended after it returned: {events:#?}");
        let Some(ev) = sub.recv_timeout(left.min(ms(100))) else { continue };
        events.push(ev.summary());
        // Any report 1.5× the stall's length into it was taken while the thread was out of the runtime (the
        // first doubling after it is at 640 ms): it described the test's wait as the stall.
        assert!(ev.elapsed < INSIDE + INSIDE / 2, "the wait after block_on reported as the stall: {events:#?}");
        if ev.phase == StallPhase::Ended {
            break ev;
        }
    };
    eprintln!("the stall inside block_on, as reported: {events:#?}");
    assert_found(&ended, "long_sleeping_handler");
    assert_eq!(agent.snapshot().totals.stall_count, 1);
    // The span is still open: the watchdog looks at it again a threshold after the stall's end, while the thread
    // sleeps here, outside any runtime (the blocking under test); the looks find no scheduler on its stack.
    let before = agent.busy_snapshot();
    std::thread::sleep(THRESHOLD * 3);
    // Decided either way: rejected, or (the bug) counted as a second stall. The agent thread counts a candidate
    // before its rejection, so waiting on the candidates alone could read the rejections a moment too early.
    support::wait_until("the span after block_on to be looked at", || {
        agent.busy_snapshot().rejected > before.rejected || agent.snapshot().totals.stall_count > 1
    });
    let after = agent.busy_snapshot();
    assert!(after.candidates > before.candidates, "{before:?} -> {after:?}");
    let more: Vec<String> = std::iter::from_fn(|| sub.try_recv()).map(|e| e.summary()).collect();
    assert!(more.is_empty(), "blocking outside the runtime reported as a stall: {more:#?}");
    assert_eq!(agent.snapshot().totals.stall_count, 1);
}

/// Recall at twice the threshold: stalls of 20 ms, one at a time with idle gaps, and how many were reported.
/// The goal is 95% (the figures are printed: `cargo test --test stable_mode recall -- --nocapture`).
///
/// A thread asleep in a call is confirmed from `/proc` alone; a spinning one needs stack samples, and the probes
/// take a runnable thread's stack only once it has run its own code (a perf sample after 100 µs of it, or the
/// signal's 50 µs proof: `probes/src/stack/imp/without_signal.rs`): on a machine
/// with several runnable threads per core it often isn't within the confirmation's few milliseconds, and a
/// stall of twice the threshold is over before the next try. Measured on a 2-core machine at load 7 to 9
/// (three spinning processes and two builds): sleeps 17 to 20 of 20, spins 0 to 7 of 10. The assertion holds
/// the sleeps to 80%, which such a machine still meets (and judges nothing on a machine loaded past 3 runnable
/// threads per core); `a_cpu_spin_in_a_task_is_found_as_cpu_bound` checks that a spin is found at all.
#[test]
fn recall_at_twice_the_threshold() {
    let (rt, agent) = multi_thread(2);
    let sub = agent.subscribe();
    const SLEEPS: usize = 20;
    const SPINS: usize = 10;
    rt.block_on(async {
        for i in 0..SLEEPS + SPINS {
            let spin = i % 3 == 2;
            tokio::spawn(async move {
                if spin {
                    std::hint::black_box(spin_for(THRESHOLD * 2));
                } else {
                    std::thread::sleep(THRESHOLD * 2);
                }
            })
            .await
            .unwrap();
            // Idle between stalls, so each is a busy span of its own.
            tokio::time::sleep(ms(30)).await;
        }
    });
    drop(rt);
    let end = Instant::now() + DEADLINE;
    while !agent.is_drained() && Instant::now() < end {
        std::thread::sleep(ms(5));
    }
    let mut stalls = BTreeMap::new();
    while let Some(ev) = sub.try_recv() {
        stalls.insert(ev.stall_id, ev);
    }
    // Which kind each report is about: a spin's stack has `spin_for` on it.
    let culprit_is_spin = |ev: &StallEvent| functions(ev).iter().any(|f| f.contains("spin_for"));
    let found_spins = stalls.values().filter(|e| culprit_is_spin(e)).count();
    let found_sleeps = stalls.len() - found_spins;
    let busy = agent.busy_snapshot();
    eprintln!(
        "stable mode recall at 2x threshold: sleeps {found_sleeps}/{SLEEPS}, spins {found_spins}/{SPINS}, all {}/{} \
         ({busy:?})",
        stalls.len(),
        SLEEPS + SPINS
    );
    let summaries: Vec<String> = stalls.values().map(StallEvent::summary).collect();
    assert!(found_sleeps <= SLEEPS && found_spins <= SPINS, "more stalls than were made: {summaries:#?}");
    // A stall of twice the threshold leaves the looks 10 ms. With several runnable threads per core the prober
    // waits longer than that for a CPU, and no detector that looks while the stall runs can keep its recall:
    // measured at load 16 on 2 cores, sleeps fell to 7 of 20. There the figure is printed, not judged.
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    if load > 3.0 * cores {
        eprintln!("recall not judged: load {load} on {cores} cores");
        return;
    }
    assert!(found_sleeps * 100 >= SLEEPS * 80, "sleeps: recall {found_sleeps}/{SLEEPS}: {summaries:#?}");
}
#[inline(never)]
fn spin_for(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    x
}

/// CPU time of this process's threads whose name starts with `prefix` (`/proc/self/task/*/schedstat`: ns on a
/// CPU).
fn threads_cpu(prefix: &str) -> Duration {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc/self/task").expect("Linux: /proc/self/task lists the threads").flatten() {
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else { continue };
        let ns: u64 = stat.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0);
        total += Duration::from_nanos(ns);
    }
    total
}

/// Stable mode's idle cost: no hook wakes the watchdog, so it looks every threshold (100 times a second at
/// 10 ms). Over 3 s of an idle runtime, the watchdog and the prober together must stay under 1% of a core.
/// The limit is 0.5% (the task-hooks mode's watchdog keeps it); this is a debug build on a shared CI machine,
/// where a look costs several times what it costs optimized (measured: 0.6% at load 7 on 2 cores), so the
/// test allows twice that. Measured in a process of its own (this test binary, run again for the test below
/// alone), so that other tests' agents don't count.
#[test]
fn the_idle_cost_stays_under_one_percent_of_a_core() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "idle_cost_measurement", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", text.lines().filter(|l| l.contains("idle cost")).collect::<Vec<_>>().join("\n"));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the measurement did not run: {text}");
}

/// The measurement for the test above; `#[ignore]`d so that it runs only alone, in a process of its own.
#[test]
#[ignore = "run by the_idle_cost_stays_under_one_percent_of_a_core in a process of its own"]
fn idle_cost_measurement() {
    let (rt, agent) = multi_thread(2);
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    let cpu = || threads_cpu("loopscope-watch") + threads_cpu("loopscope-probe");
    let before = cpu();
    let wall = Instant::now();
    rt.block_on(async { tokio::time::sleep(ms(3000)).await });
    let used = cpu() - before;
    let wall = wall.elapsed();
    let share = used.as_secs_f64() / wall.as_secs_f64();
    eprintln!("stable mode idle cost: watchdog + prober {used:?} over {wall:?} = {:.3}% of a core", share * 100.0);
    assert!(share < 0.01, "idle cost {:.3}% of a core", share * 100.0);
    assert_eq!(agent.snapshot().totals.stall_count, 0);
}

/// `Check` (what `loopscope check` and `#[loopscope::test]` run on) in stable mode: a blocking handler fails the
/// check and is named by its stack; clean code passes.
#[test]
fn check_fails_a_blocking_handler_and_names_it() {
    let report = loopscope::check::Check::new().max_poll(THRESHOLD).agent(agent()).run_multi_thread(2, async {
        tokio::spawn(async { sleeping_handler() }).await.unwrap();
    });
    assert!(!report.passed(), "a 150 ms sleep passed:\n{report}");
    let worst = report.stalls().max_by_key(|e| e.elapsed).expect("a stall");
    assert!(functions(worst).iter().any(|n| n.contains("sleeping_handler")), "{report}");
    assert!(report.to_string().contains("sleeping_handler"), "{report}");
}

#[test]
fn check_passes_clean_code() {
    let report = loopscope::check::Check::new().max_poll(THRESHOLD).agent(agent()).run_multi_thread(2, async {
        for _ in 0..100 {
            tokio::time::sleep(ms(1)).await;
            std::hint::black_box(spin_for(Duration::from_micros(300)));
        }
    });
    assert!(report.passed(), "clean code failed:\n{report}");
}

// The test attribute ignores the environment, so it runs in stable mode in a build without
// `--cfg tokio_unstable` (CI's second run of this file), and with task hooks in the workspace's build.
#[loopscope::test(max_poll = "10ms", flavor = "multi_thread", worker_threads = 2)]
async fn the_test_attribute_passes_clean_code() {
    for _ in 0..100 {
        tokio::time::sleep(ms(1)).await;
        std::hint::black_box(spin_for(Duration::from_micros(300)));
    }
}

#[loopscope::test(max_poll = "10ms", flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "sleeping_handler")]
async fn the_test_attribute_fails_a_blocking_handler() {
    tokio::spawn(async { sleeping_handler() }).await.unwrap();
}
