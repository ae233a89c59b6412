//! The process's first stack is symbolized on a thread of its own, and the agent thread goes on delivering
//! meanwhile (issue 10 item 6: detection latency). Before, a stall's end event read the first symbols on the
//! agent thread itself: 0.2–0.5 s in a release build beside busy processes, and the next stall's start waited
//! behind it.
//!
//! A test binary of its own: the symbols are read once per process, and another test in the same process
//! would have read them already. The other integration binaries' harness, as `stable_mode.rs` shares it.
#![allow(unreachable_pub, dead_code)]

#[path = "integration/support.rs"]
mod support;

use loopscope::{StallEvent, StallPhase};
use support::{agent, ms, multi_thread, wait_until};

#[test]
fn the_next_stall_is_reported_while_the_first_symbols_load() {
    let (rt, agent) = multi_thread(2, agent().stall_threshold(ms(10)));
    let events = agent.subscribe_with_capacity(1_000);
    rt.block_on(async {
        tokio::spawn(async {
            // Two polls of one task, back to back: the second stall starts as the first ends, while the first
            // stack's symbols are still being read (over 100 ms in a debug build).
            std::thread::sleep(ms(40));
            tokio::task::yield_now().await;
            std::thread::sleep(ms(40));
        })
        .await
        .expect("the task never panics");
    });
    let mut seen: Vec<StallEvent> = Vec::new();
    wait_until("two ended stalls", || {
        while let Some(e) = events.try_recv() {
            seen.push(e);
        }
        seen.iter().filter(|e| e.phase == StallPhase::Ended && e.agent_task.is_none()).count() >= 2
    });
    drop(rt);
    let app: Vec<&StallEvent> = seen.iter().filter(|e| e.agent_task.is_none()).collect();
    let mut ids: Vec<u64> = app.iter().map(|e| e.stall_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let [first, second] = ids[..] else { panic!("two stalls expected: {app:#?}") };
    let at = |id: u64, phase: StallPhase| {
        app.iter().position(|e| e.stall_id == id && e.phase == phase).unwrap_or_else(|| panic!("{phase:?} of {id}"))
    };
    assert!(
        at(second, StallPhase::Started) < at(first, StallPhase::Ended),
        "the second stall's start waited for the first one's symbols: {:#?}",
        app.iter().map(|e| (e.stall_id, e.phase)).collect::<Vec<_>>()
    );
    // And the first stall's end still carries names: it waited for them, not the thread.
    let end = app[at(first, StallPhase::Ended)];
    let culprit = end.culprit.as_ref().expect("a culprit");
    assert!(
        culprit
            .samples
            .iter()
            .flat_map(|s| &s.frames)
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains("first_symbols"))),
        "the end event's stacks are symbolized: {culprit:#?}"
    );
}
