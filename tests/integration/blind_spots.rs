//! Futures that are not tasks: the body of `block_on` and of `#[loopscope::main]`, timed with
//! `Agent::instrument` like a task's polls.

use crate::support::*;
use loopscope::wire::{Classification, StallKind, StallPhase};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const FILE: &str = "tests/integration/blind_spots.rs";

/// Blocks in the body of `block_on`; the stall must be reported while the body still blocks.
fn body_stall_is_reported(rt: tokio::runtime::Runtime, agent: loopscope::Agent) {
    let sub = agent.subscribe();
    let returned = Arc::new(AtomicBool::new(false));
    let r = returned.clone();
    let line = line!() + 1;
    let body = agent.instrument(async move {
        // The agent's threads start with the first poll; give them a moment.
        tokio::time::sleep(ms(20)).await;
        // Long enough that the first report (after the first symbolization of this large debug binary) comes
        // while the body still blocks, on a loaded CI machine too.
        std::thread::sleep(ms(1000));
        r.store(true, Ordering::SeqCst);
    });
    let waiter = std::thread::spawn(move || {
        let ev = wait_event(&sub, "a Started event", |e| e.phase == StallPhase::Started);
        (ev, returned.load(Ordering::SeqCst))
    });
    rt.block_on(body);
    let (ev, returned) = waiter.join().unwrap();
    assert!(!returned, "reported only after the body returned: {ev:#?}");
    ExpectedStall::default().location(FILE, line).kind(StallKind::BlockOn).assert(&ev);
    assert!(ev.summary().contains("block_on body"), "{}", ev.summary());
    drop(rt);
    wait_until("the agent to drain", || agent.is_drained());
    let last = agent.stalls().into_iter().find(|s| s.last.stall_id == ev.stall_id).expect("the stall is kept");
    let culprit = last.last.culprit.clone().expect("a culprit");
    assert!(
        matches!(&culprit.classification, Classification::Syscall { name, .. } if name == "clock_nanosleep"),
        "{:?}: {}\n{:#?}",
        culprit.classification,
        culprit.reason,
        last.last.time
    );
}

#[test]
fn a_block_on_body_is_watched_on_a_current_thread_runtime() {
    let (rt, agent) = current_thread(agent().stall_threshold(ms(20)));
    body_stall_is_reported(rt, agent);
}

#[test]
fn a_block_on_body_is_watched_on_a_multi_thread_runtime() {
    let (rt, agent) = multi_thread(2, agent().stall_threshold(ms(20)));
    body_stall_is_reported(rt, agent);
}

#[test]
fn an_instrumented_future_inside_a_task_is_not_charged_twice() {
    let (rt, agent) = multi_thread(1, agent().stall_threshold(ms(20)));
    let a = agent.clone();
    let line = line!() + 2;
    rt.block_on(async move {
        tokio::spawn(async move { a.instrument(async { std::thread::sleep(ms(80)) }).await }).await.unwrap();
    });
    drop(rt);
    wait_until("the agent to drain", || agent.is_drained());
    let stalls = agent.stalls();
    assert_eq!(stalls.len(), 1, "one blocking poll, one stall: {stalls:#?}");
    // The task's poll paused while the instrumented future ran: the time is the future's.
    ExpectedStall::default().location(FILE, line).kind(StallKind::BlockOn).assert(&stalls[0].last);
}

#[test]
fn local_set_tasks_are_watched_with_their_own_identity() {
    let (rt, agent) = current_thread(agent().stall_threshold(ms(20)));
    let local = tokio::task::LocalSet::new();
    let a = agent.clone();
    let line = line!() + 5;
    // The LocalSet runs inside the timed body of `block_on`, as under `#[loopscope::main]`.
    let id = rt.block_on(agent.instrument(local.run_until(async move {
        tokio::time::sleep(ms(20)).await;
        let not_send = std::rc::Rc::new(());
        let h = a.spawn_local(async move {
            std::thread::sleep(ms(80));
            drop(not_send);
        });
        let id = h.id();
        h.await.unwrap();
        id
    })));
    drop(rt);
    wait_until("the agent to drain", || agent.is_drained());
    let stalls = agent.stalls();
    assert_eq!(stalls.len(), 1, "the local task's stall, not also the body's: {stalls:#?}");
    let ev = &stalls[0].last;
    ExpectedStall::default().location(FILE, line).kind(StallKind::WorkerBlocked).assert(ev);
    assert_eq!(ev.task_id.to_string(), id.to_string(), "tokio's id of the local task");
}

#[test]
fn a_body_without_stalls_reports_nothing_and_returns_its_value() {
    let (rt, agent) = current_thread(agent().stall_threshold(ms(20)));
    let n = rt.block_on(agent.instrument(async {
        let mut n = 0;
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
            n += 1;
        }
        n
    }));
    assert_eq!(n, 1_000);
    drop(rt);
    wait_until("the agent to drain", || agent.is_drained());
    assert!(agent.stalls().is_empty(), "{:#?}", agent.stalls());
    assert_eq!(agent.snapshot().dropped.untracked_tasks, 0, "a timed body is not an untracked task");
}

/// Child side of `the_main_macro_times_its_body`.
#[test]
#[ignore = "run by the_main_macro_times_its_body in a child process"]
fn child_main_macro_body_blocks() {
    if std::env::var_os("LOOPSCOPE_TEST_CHILD").is_none() {
        return;
    }
    #[loopscope::main(flavor = "current_thread", stall_threshold = "20ms")]
    async fn app() {
        tokio::time::sleep(ms(20)).await;
        std::thread::sleep(ms(150));
    }
    app();
}

#[test]
fn the_main_macro_times_its_body() {
    let out = rerun("blind_spots::child_main_macro_body_blocks", &[("LOOPSCOPE_ADDR", "off")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("block_on body") && stderr.contains(FILE), "no report of the body's stall:\n{stderr}");
}
