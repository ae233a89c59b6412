//! The workloads that must not stall at all (a storm of short polls, idle timers, timer churn), and how many
//! false stalls each produced. Split out of `main.rs`.

use super::*;

/// Workloads with no blocking at all: every stall they produce is a false one.
/// Per workload: its name, the place (task hooks or stable mode), polls (counted by the task hooks; none in
/// stable mode), false stalls, and stalls delayed by the OS (listed apart, never failing).
pub(super) type FalseStalls = Vec<(&'static str, &'static str, Option<u64>, usize, usize)>;

pub(super) fn false_stalls(threshold: Duration, seconds: u64) -> Result<FalseStalls, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for place in [Place::Task, Place::Stable] {
        out.extend(false_stalls_in(place, threshold, seconds)?);
    }
    Ok(out)
}

fn false_stalls_in(place: Place, threshold: Duration, seconds: u64) -> Result<FalseStalls, Box<dyn std::error::Error>> {
    let rig = Rig::new(place, threshold)?;
    let mut out = Vec::new();
    let run_for = Duration::from_secs(seconds);
    let workloads: [(&'static str, Workload); 5] = [
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
        // Stable mode's own trap: tasks caught inside tokio's channel code poll after poll (the rule that wants
        // the app's own code innermost exists for this).
        ("ping-pong over channels (100 pairs)", |run_for| {
            Box::pin(async move {
                let deadline = Instant::now() + run_for;
                let mut tasks = Vec::new();
                for _ in 0..100 {
                    let (a_tx, mut a_rx) = tokio::sync::mpsc::channel::<u64>(1);
                    let (b_tx, mut b_rx) = tokio::sync::mpsc::channel::<u64>(1);
                    tasks.push(tokio::spawn(async move {
                        let mut v = 0;
                        while Instant::now() < deadline && a_tx.send(v).await.is_ok() {
                            v = b_rx.recv().await.unwrap_or(0) + 1;
                        }
                    }));
                    tasks.push(tokio::spawn(async move {
                        while let Some(v) = a_rx.recv().await {
                            if b_tx.send(v).await.is_err() {
                                break;
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        }),
        // And the stable-mode rule that does not want it (no worker at a scheduling point): tasks under
        // `unconstrained` that drain bursts from always-busy producers, so their samples are in tokio's code,
        // but every poll ends when the burst does.
        ("unconstrained consumers of bursts (8 pairs)", |run_for| {
            Box::pin(async move {
                let deadline = Instant::now() + run_for;
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
                    tasks.push(tokio::spawn(async move {
                        while Instant::now() < deadline {
                            for v in 0..100 {
                                if tx.send(v).is_err() {
                                    return;
                                }
                            }
                            tokio::task::yield_now().await;
                        }
                    }));
                    tasks.push(tokio::spawn(tokio::task::unconstrained(async move {
                        let mut sum = 0u64;
                        while let Some(v) = rx.recv().await {
                            sum = patterns::pattern_unconstrained_step(sum, v);
                        }
                        std::hint::black_box(sum);
                    })));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        }),
    ];
    for (name, make) in workloads {
        let from = rig.received();
        let polls_before = rig.agent.snapshot().workers.iter().map(|w| w.poll_count).sum::<u64>();
        rig.run(place, make(run_for));
        let polls = rig.agent.snapshot().workers.iter().map(|w| w.poll_count).sum::<u64>() - polls_before;
        // Anything reported arrives within a threshold or so of the poll; wait out a few.
        std::thread::sleep(threshold * 5);
        let events = rig.events.lock().unwrap_or_else(|e| e.into_inner())[from..].to_vec();
        // What `check` would fail on (own time past the threshold), and what it lists apart as delayed by the OS.
        let ended: Vec<&StallEvent> =
            events.iter().map(|(_, e)| e).filter(|e| e.phase == StallPhase::Ended && e.agent_task.is_none()).collect();
        let own = ended.iter().filter(|e| !e.delayed_by_os(rig.threshold)).count();
        for e in ended.iter().filter(|e| !e.delayed_by_os(rig.threshold)) {
            eprintln!("false stall ({}): {}", place.name(), e.summary());
        }
        let polls = (place != Place::Stable).then_some(polls);
        out.push((name, place.name(), polls, own, ended.len() - own));
    }
    Ok(out)
}
