//! How accurate loopscope's verdicts are: an experiment, not a test (its figures are in BENCHMARKS.md).
//!
//! Eight blocking patterns (a sleep, a CPU spin, a `std::sync::Mutex` wait, a pipe read, a wait for a child
//! process, a sleep inside nested async functions, a sleep inside one branch of `select!`, and a future that
//! never yields under `tokio::task::unconstrained`), each run in three places (a spawned task, the body of
//! `block_on` through `Agent::instrument`, and a `LocalSet` task through `Agent::spawn_local`), each blocking
//! for 2.5× the stall threshold; and the spawned task once more in the stable-Rust mode (no task hooks). For
//! every stall it checks:
//!
//! * **caught**: reported while still running;
//! * **class**: the classification matches the pattern (the syscall by name, the lock, the CPU);
//! * **named**: the innermost frame of the app's own code is the pattern's function;
//! * **delay**: from the threshold to the moment a subscriber received the first report.
//!
//! Then three workloads that must not stall at all: a storm of short polls, thousands of idle timers, and
//! timer churn. It prints Markdown tables.
//!
//! ```text
//! cargo run --release --example accuracy                      # 10 runs of each, threshold 20 ms
//! cargo run --release --example accuracy -- --runs 3 --threshold-ms 10
//! ```

mod common;

use loopscope::wire::{Classification, StallEvent, StallPhase};
use loopscope::{Agent, StallSubscription};
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When the pattern began to block, in Unix nanoseconds: stored by the pattern itself, just before it blocks.
static BLOCK_START: AtomicU64 = AtomicU64::new(0);

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn mark_start() {
    BLOCK_START.store(unix_nanos(), Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    Sleep,
    Spin,
    Mutex,
    Pipe,
    Child,
    Nested,
    Select,
    Unconstrained,
}

const PATTERNS: [Pattern; 8] = [
    Pattern::Sleep,
    Pattern::Spin,
    Pattern::Mutex,
    Pattern::Pipe,
    Pattern::Child,
    Pattern::Nested,
    Pattern::Select,
    Pattern::Unconstrained,
];

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Sleep => "sleep",
            Pattern::Spin => "CPU spin",
            Pattern::Mutex => "std Mutex",
            Pattern::Pipe => "pipe read",
            Pattern::Child => "child wait",
            Pattern::Nested => "nested async",
            Pattern::Select => "select!",
            Pattern::Unconstrained => "unconstrained",
        }
    }

    /// The function the report should name (part of the innermost app frame's name).
    fn culprit(self) -> &'static str {
        match self {
            Pattern::Sleep => "pattern_sleep",
            Pattern::Spin => "pattern_spin",
            Pattern::Mutex => "pattern_mutex",
            Pattern::Pipe => "pattern_pipe",
            Pattern::Child => "pattern_child",
            Pattern::Nested => "pattern_nested",
            Pattern::Select => "pattern_select",
            Pattern::Unconstrained => "pattern_unconstrained",
        }
    }

    fn classified_right(self, c: &Classification) -> bool {
        match self {
            Pattern::Sleep | Pattern::Nested | Pattern::Select => {
                matches!(c, Classification::Syscall { name, .. } if name.contains("nanosleep"))
            }
            Pattern::Spin | Pattern::Unconstrained => matches!(c, Classification::CpuBound),
            Pattern::Mutex => matches!(c, Classification::LockWait { .. }),
            Pattern::Pipe => {
                matches!(c, Classification::Syscall { name, fd_target: Some(t) } if name == "read" && t.contains("pipe"))
            }
            Pattern::Child => matches!(c, Classification::Syscall { name, .. } if name == "wait4" || name == "waitid"),
        }
    }
}

#[inline(never)]
fn pattern_sleep(d: Duration) {
    mark_start();
    std::thread::sleep(d);
}

/// Spins for `d` of the thread's own CPU time, not wall time: on a busy machine a wall-time spin may get too
/// little CPU to be a stall of its own at all (loopscope then rightly calls it delayed by the OS).
#[inline(never)]
fn pattern_spin(d: Duration) -> u64 {
    mark_start();
    let tid = loopscope_probes::current_tid();
    let cpu = || loopscope_probes::thread::cpu_time(tid).unwrap_or_default();
    let start = cpu();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    // The clock is read every ~100 µs of work, so a stack sample almost always lands in this loop rather than
    // in loopscope's clock function (which counts as runtime code, not the app's: the stable mode's rule wants
    // the app's own code innermost).
    while cpu() - start < d {
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = std::hint::black_box(x);
    }
    x
}

#[inline(never)]
fn pattern_mutex(m: &Mutex<()>) {
    mark_start();
    drop(m.lock());
}

#[inline(never)]
fn pattern_pipe(r: &mut std::io::PipeReader) {
    mark_start();
    let mut b = [0u8; 1];
    let _ = r.read(&mut b);
}

#[inline(never)]
fn pattern_child(d: Duration) {
    let child = std::process::Command::new("sleep").arg(format!("{:.3}", d.as_secs_f64())).spawn();
    mark_start();
    if let Ok(mut child) = child {
        let _ = child.wait();
    }
}

// The three sleeping patterns differ by a nanosecond or two: identical functions are merged in release builds
// (rustc enables LLVM's function merging), and all three would then be named `pattern_sleep`.
#[inline(never)]
fn pattern_nested(d: Duration) {
    mark_start();
    std::thread::sleep(d + Duration::from_nanos(1));
}

async fn nested_inner(d: Duration) {
    tokio::task::yield_now().await;
    pattern_nested(d);
}

async fn nested_outer(d: Duration) {
    nested_inner(d).await;
}

#[inline(never)]
fn pattern_select(d: Duration) {
    mark_start();
    std::thread::sleep(d + Duration::from_nanos(2));
}

/// Receives until `d` has passed from a channel that always has a message ready: under `unconstrained`, tokio's
/// cooperative budget never makes `recv` return `Pending`, so the task never yields.
async fn pattern_unconstrained(mut rx: tokio::sync::mpsc::UnboundedReceiver<u64>, d: Duration) -> u64 {
    mark_start();
    let start = Instant::now();
    let mut sum = 0u64;
    while start.elapsed() < d {
        match rx.recv().await {
            Some(v) => sum = pattern_unconstrained_step(sum, v),
            None => break,
        }
    }
    sum
}

#[inline(never)]
fn pattern_unconstrained_step(sum: u64, v: u64) -> u64 {
    std::hint::black_box(sum.wrapping_mul(31).wrapping_add(v))
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A workload of the false-stall table: its future, for a run of the given length.
type Workload = fn(Duration) -> BoxFuture;

/// The pattern's future, with whatever it needs set up outside the poll (a lock holder, a pipe writer), so
/// that only the blocking itself happens inside it.
fn prepare(p: Pattern, d: Duration) -> BoxFuture {
    match p {
        Pattern::Sleep => Box::pin(async move { pattern_sleep(d) }),
        Pattern::Spin => Box::pin(async move {
            std::hint::black_box(pattern_spin(d));
        }),
        Pattern::Mutex => {
            let m = Arc::new(Mutex::new(()));
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let holder = m.clone();
            std::thread::spawn(move || {
                let guard = holder.lock();
                let _ = held_tx.send(());
                std::thread::sleep(d);
                drop(guard);
            });
            let _ = held_rx.recv();
            Box::pin(async move { pattern_mutex(&m) })
        }
        Pattern::Pipe => {
            let (mut r, mut w) = std::io::pipe().expect("a pipe");
            std::thread::spawn(move || {
                std::thread::sleep(d);
                let _ = w.write_all(b"x");
            });
            Box::pin(async move { pattern_pipe(&mut r) })
        }
        Pattern::Child => Box::pin(async move { pattern_child(d) }),
        Pattern::Nested => Box::pin(nested_outer(d)),
        Pattern::Select => Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                _ = async { pattern_select(d) } => {}
            }
        }),
        Pattern::Unconstrained => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // More messages than 2.5 thresholds can drain, so one is always ready.
            for i in 0..4_000_000u64 {
                let _ = tx.send(i);
            }
            Box::pin(async move {
                std::hint::black_box(tokio::task::unconstrained(pattern_unconstrained(rx, d)).await);
                drop(tx);
            })
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Task,
    Body,
    Local,
    /// A spawned task, found by the stable-Rust mode (`Mode::Stable`: no task hooks, the workers' busy spans
    /// confirmed by the probes), as in a build without `--cfg tokio_unstable`.
    Stable,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Task => "spawned task",
            Place::Body => "block_on body",
            Place::Local => "LocalSet task",
            Place::Stable => "task, stable mode",
        }
    }
}

/// A runtime with the agent attached, and a thread receiving its stall events as they arrive.
struct Rig {
    rt: tokio::runtime::Runtime,
    agent: Agent,
    events: Arc<Mutex<Vec<(u64, StallEvent)>>>,
    threshold: Duration,
}

impl Rig {
    fn new(place: Place, threshold: Duration) -> Result<Rig, Box<dyn std::error::Error>> {
        let mut builder = match place {
            Place::Local => tokio::runtime::Builder::new_current_thread(),
            Place::Task | Place::Body | Place::Stable => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        };
        builder.enable_all();
        // No rate limit: this counts what is detected, and one stall every ~100 ms would pass the default 10
        // reports a second (each stall has several: started, updated at 2× and 4×, ended).
        let mode = if place == Place::Stable { loopscope::Mode::Stable } else { loopscope::Mode::TaskHooks };
        let agent = Agent::builder()
            .stall_threshold(threshold)
            .tracing(false)
            .max_reports_per_second(0)
            .mode(mode)
            .install(&mut builder)?;
        let rt = builder.build()?;
        let events = Arc::new(Mutex::new(Vec::new()));
        collect(agent.subscribe(), events.clone());
        // The agent's threads start with the first poll, and its first symbolization is slow: warm both up.
        rt.block_on(agent.instrument(async { tokio::time::sleep(Duration::from_millis(50)).await }));
        Ok(Rig { rt, agent, events, threshold })
    }

    fn run(&self, place: Place, fut: BoxFuture) {
        match place {
            Place::Task | Place::Stable => self.rt.block_on(async {
                let _ = tokio::spawn(fut).await;
            }),
            Place::Body => self.rt.block_on(self.agent.instrument(fut)),
            Place::Local => {
                let local = tokio::task::LocalSet::new();
                let agent = self.agent.clone();
                local.block_on(&self.rt, async move {
                    let _ = agent.spawn_local(fut).await;
                });
            }
        }
    }

    /// Stall events received since index `from`, waiting up to `wait` for one of them to be an `Ended`.
    fn events_after(&self, from: usize, wait: Duration) -> Vec<(u64, StallEvent)> {
        let deadline = Instant::now() + wait;
        loop {
            let got: Vec<_> = self.events.lock().unwrap_or_else(|e| e.into_inner())[from..].to_vec();
            if got.iter().any(|(_, e)| e.phase == StallPhase::Ended) || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn received(&self) -> usize {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Stores every event with the moment it arrived.
fn collect(sub: StallSubscription, into: Arc<Mutex<Vec<(u64, StallEvent)>>>) {
    std::thread::spawn(move || {
        while let Some(ev) = sub.recv() {
            let at = unix_nanos();
            into.lock().unwrap_or_else(|e| e.into_inner()).push((at, ev));
        }
    });
}

#[derive(Default)]
struct Tally {
    runs: u32,
    caught: u32,
    class: u32,
    named: u32,
    extra: u32,
    delays_ms: Vec<f64>,
    misses: Vec<String>,
}

fn measure(rig: &Rig, place: Place, p: Pattern, d: Duration, tally: &mut Tally) {
    let from = rig.received();
    BLOCK_START.store(0, Ordering::SeqCst);
    let fut = prepare(p, d);
    rig.run(place, fut);
    let started_ns = BLOCK_START.load(Ordering::SeqCst);
    tally.runs += 1;
    let events = rig.events_after(from, Duration::from_secs(3));
    let ids: std::collections::BTreeSet<u64> = events.iter().map(|(_, e)| e.stall_id).collect();
    tally.extra += u32::try_from(ids.len().saturating_sub(1)).unwrap_or(u32::MAX);
    let Some(stall_id) = events.iter().find(|(_, e)| e.phase == StallPhase::Started).map(|(_, e)| e.stall_id) else {
        tally.misses.push(format!("{} in a {}: no report in flight ({} events)", p.name(), place.name(), events.len()));
        return;
    };
    tally.caught += 1;
    if let Some((at, _)) = events.iter().find(|(_, e)| e.stall_id == stall_id) {
        let due = started_ns + u64::try_from(rig.threshold.as_nanos()).unwrap_or(u64::MAX);
        tally.delays_ms.push(at.saturating_sub(due) as f64 / 1e6);
    }
    // The culprit's latest figures: the stall as the agent keeps it, once the probes' last look is in.
    let deadline = Instant::now() + Duration::from_secs(3);
    let summary = loop {
        let s = rig.agent.stalls().into_iter().find(|s| s.last.stall_id == stall_id);
        if s.as_ref().is_some_and(|s| s.ended && s.last.culprit.is_some()) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let Some(culprit) = summary.and_then(|s| s.last.culprit) else {
        tally.misses.push(format!("{} in a {}: no culprit", p.name(), place.name()));
        return;
    };
    if p.classified_right(&culprit.classification) {
        tally.class += 1;
    } else {
        tally.misses.push(format!("{} in a {}: classified {}", p.name(), place.name(), culprit.classification));
    }
    let top = culprit.first_user_frame().and_then(|f| f.function.clone()).unwrap_or_default();
    if top.contains(p.culprit()) {
        tally.named += 1;
    } else {
        let why = match culprit.frames() {
            [] => culprit.samples.iter().find_map(|s| s.stack_error.clone()).unwrap_or_else(|| "no stack".into()),
            frames => format!("{} frames, the first `{}`", frames.len(), frames[0].display_short()),
        };
        tally.misses.push(format!("{} in a {}: innermost app frame `{top}` ({why})", p.name(), place.name()));
    }
}

fn median_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    format!("{:.1} / {:.1}", v[v.len() / 2], v[v.len() - 1])
}

/// Workloads with no blocking at all: every stall they produce is a false one.
/// Per workload: its name, polls, false stalls, and stalls delayed by the OS (listed apart, never failing).
type FalseStalls = Vec<(&'static str, u64, usize, usize)>;

fn false_stalls(threshold: Duration, seconds: u64) -> Result<FalseStalls, Box<dyn std::error::Error>> {
    let rig = Rig::new(Place::Task, threshold)?;
    let mut out = Vec::new();
    let run_for = Duration::from_secs(seconds);
    let workloads: [(&'static str, Workload); 3] = [
        ("storm of short polls (1,000 tasks yielding)", |run_for| {
            Box::pin(async move {
                let deadline = Instant::now() + run_for;
                let mut polls = 0u64;
                let tasks: Vec<_> = (0..1_000)
                    .map(|_| {
                        tokio::spawn(async move {
                            let mut n = 0u64;
                            while Instant::now() < deadline {
                                tokio::task::yield_now().await;
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                for t in tasks {
                    polls += t.await.unwrap_or(0);
                }
                std::hint::black_box(polls);
            })
        }),
        ("idle timers (10,000 tasks sleeping 1–100 ms)", |run_for| {
            Box::pin(async move {
                let deadline = tokio::time::Instant::now() + run_for;
                let mut tasks = Vec::with_capacity(10_000);
                for i in 0..10_000u64 {
                    tasks.push(tokio::spawn(async move {
                        while tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(Duration::from_millis(1 + i % 100)).await;
                        }
                    }));
                    // Spawning 10,000 tasks in one poll is itself a long poll (26 ms of CPU in a debug build).
                    if i % 100 == 99 {
                        tokio::task::yield_now().await;
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        }),
        ("timer churn (timeouts set and dropped)", |run_for| {
            Box::pin(async move {
                let deadline = Instant::now() + run_for;
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        tokio::spawn(async move {
                            while Instant::now() < deadline {
                                for _ in 0..100 {
                                    let _ = tokio::time::timeout(Duration::from_secs(5), async {}).await;
                                }
                                let _ = tokio::time::timeout(Duration::from_micros(100), std::future::pending::<()>())
                                    .await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            })
        }),
    ];
    for (name, make) in workloads {
        let from = rig.received();
        let polls_before = rig.agent.snapshot().workers.iter().map(|w| w.poll_count).sum::<u64>();
        rig.run(Place::Task, make(run_for));
        let polls = rig.agent.snapshot().workers.iter().map(|w| w.poll_count).sum::<u64>() - polls_before;
        // Anything reported arrives within a threshold or so of the poll; wait out a few.
        std::thread::sleep(threshold * 5);
        let events = rig.events.lock().unwrap_or_else(|e| e.into_inner())[from..].to_vec();
        // What `check` would fail on (own time past the threshold), and what it lists apart as delayed by the OS.
        let ended: Vec<&StallEvent> =
            events.iter().map(|(_, e)| e).filter(|e| e.phase == StallPhase::Ended && e.agent_task.is_none()).collect();
        let own = ended.iter().filter(|e| !e.delayed_by_os(rig.threshold)).count();
        for e in ended.iter().filter(|e| !e.delayed_by_os(rig.threshold)) {
            eprintln!("false stall: {}", e.summary());
        }
        out.push((name, polls, own, ended.len() - own));
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs = common::arg("--runs", 10)?;
    let threshold = Duration::from_millis(common::arg("--threshold-ms", 20)?);
    let seconds = common::arg("--seconds", 3)?;
    let d = threshold * 5 / 2;
    // `--only WORD`: the patterns and places whose names contain it (e.g. `nested`, `LocalSet`).
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let chosen = |p: Pattern, place: Place| {
        only.as_ref().is_none_or(|o| p.name().contains(o.as_str()) || place.name().contains(o.as_str()))
    };
    println!(
        "{runs} runs of each pattern in each place, blocking {d:?} against a {threshold:?} threshold ({} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    let mut misses = Vec::new();
    println!();
    println!("| pattern | place | caught | class | named | extra stalls | delay ms, median / max |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut total = Tally::default();
    for place in [Place::Task, Place::Body, Place::Local, Place::Stable] {
        let rig = Rig::new(place, threshold)?;
        for p in PATTERNS.into_iter().filter(|p| chosen(*p, place)) {
            let mut t = Tally::default();
            for _ in 0..runs {
                measure(&rig, place, p, d, &mut t);
                // An idle gap between stalls, so no two merge.
                std::thread::sleep(threshold);
            }
            println!(
                "| {} | {} | {}/{} | {}/{} | {}/{} | {} | {} |",
                p.name(),
                place.name(),
                t.caught,
                t.runs,
                t.class,
                t.runs,
                t.named,
                t.runs,
                t.extra,
                median_max(&t.delays_ms)
            );
            total.runs += t.runs;
            total.caught += t.caught;
            total.class += t.class;
            total.named += t.named;
            total.extra += t.extra;
            total.delays_ms.extend(&t.delays_ms);
            misses.append(&mut t.misses);
        }
    }
    println!(
        "| **all** | | **{}/{}** | **{}/{}** | **{}/{}** | **{}** | **{}** |",
        total.caught,
        total.runs,
        total.class,
        total.runs,
        total.named,
        total.runs,
        total.extra,
        median_max(&total.delays_ms)
    );
    if only.is_some() {
        return report_misses(misses);
    }
    println!();
    println!("| workload, {seconds} s | polls | false stalls | delayed by the OS (listed apart) |");
    println!("|---|---:|---:|---:|");
    for (name, polls, own, delayed) in false_stalls(threshold, seconds)? {
        println!("| {name} | {polls} | {own} | {delayed} |");
    }
    report_misses(misses)
}

fn report_misses(misses: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    if !misses.is_empty() {
        println!();
        println!("Misses:");
        for m in misses {
            println!("- {m}");
        }
    }
    Ok(())
}
