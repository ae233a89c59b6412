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
//! cargo run --release --example accuracy -- --only false  # the false-stall workloads alone
//! ```

#[path = "../common/mod.rs"]
mod common;
mod false_stalls;
mod patterns;

use loopscope::wire::{Classification, StallEvent, StallPhase};
use loopscope::{Agent, StallSubscription};
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use patterns::*;

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
    // `--only false`: no pattern's name has it, so this runs the false-stall workloads alone.
    if only.as_deref().is_some_and(|o| o != "false") {
        return report_misses(misses);
    }
    println!();
    println!("| workload, {seconds} s | place | polls | false stalls | delayed by the OS (listed apart) |");
    println!("|---|---|---:|---:|---:|");
    for (name, place, polls, own, delayed) in false_stalls::false_stalls(threshold, seconds)? {
        let polls = polls.map_or_else(|| "–".to_string(), |p| p.to_string());
        println!("| {name} | {place} | {polls} | {own} | {delayed} |");
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
