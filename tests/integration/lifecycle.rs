//! Installing, chaining the app's own hooks, configuration errors, bounded memory, and shutdown.

use crate::support::*;
use loopscope::wire::TaskState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Child side of `malformed_env_is_a_clear_error`: installs with the environment applied.
#[test]
#[ignore = "run by malformed_env_is_a_clear_error in a child process"]
fn child_install_with_env() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    match loopscope::Agent::builder().install(&mut b) {
        Ok(a) => println!("INSTALLED threshold={:?}", a.config().stall_threshold),
        Err(e) => {
            println!("ERROR: {e}");
            std::process::exit(3);
        }
    }
}

#[test]
fn malformed_env_is_a_clear_error() {
    let out = rerun("lifecycle::child_install_with_env", &[("LOOPSCOPE_STALL_THRESHOLD", "ten")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("LOOPSCOPE_STALL_THRESHOLD=\"ten\" is not valid"), "{stdout}");
    assert!(stdout.contains("10ms"), "the message should show an accepted form: {stdout}");

    let out = rerun("lifecycle::child_install_with_env", &[("LOOPSCOPE_MAX_TASKS", "lots")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("LOOPSCOPE_MAX_TASKS"));

    // And a good value overrides the code's default.
    let out = rerun("lifecycle::child_install_with_env", &[("LOOPSCOPE_STALL_THRESHOLD", "250us")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("INSTALLED threshold=250µs"), "{stdout}");
}

/// Child side of `main_macro_survives_bad_env`.
#[test]
#[ignore = "run by main_macro_survives_bad_env in a child process"]
fn child_main_macro() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    #[loopscope::main(flavor = "current_thread", stall_threshold = "5ms")]
    async fn app() -> u32 {
        tokio::spawn(async { 40 + 2 }).await.unwrap()
    }
    println!("APP RESULT {}", app());
}

#[test]
fn main_macro_survives_bad_env() {
    let out = rerun("lifecycle::child_main_macro", &[("LOOPSCOPE_TRACING", "sometimes")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("APP RESULT 42"), "the app must still run: {stdout}");
    assert!(stderr.contains("LOOPSCOPE_TRACING") && stderr.contains("NOT installed"), "{stderr}");
}

#[test]
fn app_hooks_are_chained_not_dropped() {
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let c = counts.clone();
    let builder = agent()
        .on_task_spawn({
            let c = c.clone();
            move |_| {
                c[0].fetch_add(1, SeqCst);
            }
        })
        .on_before_task_poll({
            let c = c.clone();
            move |_| {
                c[1].fetch_add(1, SeqCst);
            }
        })
        .on_after_task_poll({
            let c = c.clone();
            move |_| {
                c[2].fetch_add(1, SeqCst);
            }
        })
        .on_task_terminate(move |_| {
            c[3].fetch_add(1, SeqCst);
        });
    let (rt, agent) = current_thread(builder);
    rt.block_on(async {
        for _ in 0..10 {
            tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
        }
    });
    let s = agent.snapshot();
    let [spawn, before, after, term] = [0, 1, 2, 3].map(|i| counts[i].load(SeqCst));
    // The agent's sentinel task is spawned from its own thread, possibly after this; count only ours.
    assert!(spawn >= 10 && term >= 10, "spawn {spawn} terminate {term}");
    assert_eq!(before, after);
    assert!(before >= 20, "before {before}");
    assert_eq!(s.totals.poll_count, after, "loopscope and the app hook saw different polls");
}

#[test]
fn finished_tasks_are_reclaimed_and_memory_stays_bounded() {
    // A tiny table: a storm of 5,000 concurrently live tasks must overflow it, be counted, and not grow it.
    let (rt, agent) = multi_thread(2, agent().max_tasks(256).retain_finished(16));
    let line = line!() + 6;
    rt.block_on(async {
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let tasks: Vec<_> = (0..5_000)
            .map(|_| {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let _ = rx.recv().await;
                })
            })
            .collect();
        tx.send(()).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let s = agent.snapshot();
    assert!(s.dropped.untracked_tasks >= 5_000 - 256, "{:#?}", s.dropped);
    // Finished tasks' entries are freed by their own hooks; the agent thread lists the newest 16 (every 100 ms).
    wait_until("finished tasks to be reclaimed", || {
        let s = agent.snapshot();
        s.tasks.iter().filter(|t| t.state == TaskState::Live).count() <= 1 && s.tasks.len() <= 16 + 1
    });
    // The freed entries are reused: a new wave is tracked again.
    rt.block_on(async {
        for _ in 0..100 {
            tokio::spawn(async {}).await.unwrap();
        }
    });
    let after = agent.snapshot();
    assert_eq!(after.dropped.untracked_tasks, s.dropped.untracked_tasks, "entries were not reused");
    let loc = after.location("tests/integration/lifecycle.rs", line).expect("storm location");
    assert!(loc.spawned_tasks >= 200, "tracked storm tasks are folded into the location: {loc:#?}");
    assert_eq!(loc.live_tasks, 0);
}

#[test]
fn snapshots_are_cumulative_and_deltas_pure() {
    let (rt, agent) = multi_thread(2, agent());
    let work = |n: usize| {
        rt.block_on(async move {
            for _ in 0..n {
                tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
            }
        })
    };
    // A JoinHandle completes inside the task's last poll, just before tokio runs the after-poll hook: wait
    // for the hooks to catch up rather than assuming they already have.
    work(100);
    wait_until("200 polls", || agent.snapshot().totals.poll_count >= 200);
    let a = agent.snapshot();
    work(100);
    wait_until("200 more polls", || agent.snapshot().totals.poll_count >= a.totals.poll_count + 200);
    let b = agent.snapshot();
    assert!(b.uptime > a.uptime && b.taken_at_unix_nanos >= a.taken_at_unix_nanos);
    assert!(b.totals.poll_count >= a.totals.poll_count + 200);
    let d = b.delta(&a);
    assert_eq!(d, b.delta(&a));
    assert!(d.poll_count >= 200, "{d:#?}");
    assert_eq!(d.spawned_tasks, 100);
    assert!(d.workers.iter().all(|w| (0.0..=1.0).contains(&w.busy_ratio)));
    // A snapshot reads thread counters and then histograms, not atomically; loopscope's own lag-probe tasks
    // keep polling (about 55 times a second), so the two may differ by a poll or two.
    let skew = d.poll_histogram.count().abs_diff(d.poll_count);
    assert!(skew <= 5, "histogram {} vs polls {}", d.poll_histogram.count(), d.poll_count);
}

#[test]
fn dropping_the_runtime_stops_the_agent() {
    let (rt, agent) = multi_thread(2, agent());
    let sub = agent.subscribe();
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    assert!(!agent.is_stopped());
    drop(rt);
    wait_until("the agent to notice the runtime is gone", || agent.is_stopped());
    // The subscription ends rather than hanging forever.
    assert!(sub.recv().is_none());
    // Values stay readable afterwards.
    assert!(agent.snapshot().totals.poll_count >= 1);
}

#[test]
fn disabled_agent_installs_nothing() {
    let (rt, agent) = current_thread(agent().enabled(false));
    rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    assert_eq!(agent.snapshot().totals.poll_count, 0);
    assert!(!agent.capabilities().poll_timing);
}
