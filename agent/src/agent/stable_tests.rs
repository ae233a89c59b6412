//! Stable mode's hooks (`busy.rs`), tested through an installed agent; here rather than in `busy.rs`, which
//! the agent module imports (a test there importing `Agent` back would be an import cycle).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Each worker thread learns which worker it runs, checked against tokio's own answer (`worker_thread_id`,
/// an unstable API that stable mode can't use), and never learns another's.
#[test]
fn each_worker_thread_learns_its_own_worker() {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let agent = super::Agent::builder()
        .mode(crate::Mode::Stable)
        .ignore_env()
        .serve("off")
        .tracing(false)
        .install(&mut b)
        .expect("install");
    let rt = b.build().expect("runtime");
    let m = rt.metrics();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Short sleeps, one task at a time: workers park and wake, one while the other sleeps.
        rt.block_on(async {
            for _ in 0..10 {
                tokio::spawn(tokio::time::sleep(Duration::from_millis(1))).await.expect("task");
            }
        });
        let slots = agent.shared.slots.list();
        let mut right = 0;
        for s in &slots {
            let mask = s.worker_mask.load(Relaxed);
            let runs = (0..2).find(|&i| m.worker_thread_id(i) == Some(s.thread_id));
            if let (Some(i), 1) = (runs, mask.count_ones()) {
                // A worker's core moves between threads only in `block_in_place`, which this never calls.
                assert_eq!(mask, 1 << i, "thread {:?} learned the wrong worker", s.thread_id);
                right += 1;
            }
        }
        if right == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers' threads never learned their workers");
    }
}
