//! The first burst of spawns: 1,000 `tokio::spawn`s inside one poll of a fresh runtime, bare and with the agent
//! (defaults, stream server off), interleaved, each round in a runtime of its own so that every round meets a
//! task table the spawns have not touched yet. Reports the medians and their ratio.
//!
//! A burst like this is an app's start (connections accepted, a fan-out): the agent must not turn it into a
//! stall of its own. It did (19-100 ms against 0.3 ms bare): the task table's first read of each page mapped the
//! kernel's zero page, and the spawn's write then flushed the TLB of every CPU (see `TaskTable::insert`).
//!
//! ```text
//! cargo bench --bench spawn_burst            # 30 rounds of each
//! cargo bench --bench spawn_burst -- 100     # 100 rounds of each
//! ```

use std::time::{Duration, Instant};

/// One fresh runtime (with the agent or not); the time of 1,000 spawns in one poll of its first task.
fn burst(with_agent: bool) -> Duration {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let _agent = with_agent
        .then(|| loopscope::Agent::builder().serve("off").tracing(false).install(&mut b).expect("install the agent"));
    let rt = b.build().expect("build the runtime");
    rt.block_on(async {
        tokio::spawn(async {
            let start = Instant::now();
            let handles: Vec<_> = (0..1_000).map(|i| tokio::spawn(async move { std::hint::black_box(i) })).collect();
            let took = start.elapsed();
            for h in handles {
                let _ = h.await;
            }
            took
        })
        .await
        .expect("the burst task")
    })
}

/// (median, min, max) of at least one duration.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |i: usize| v.get(i).copied().unwrap_or_default();
    (at(v.len() / 2), at(0), at(v.len().saturating_sub(1)))
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30).max(1);
    let (mut bare, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        bare.push(burst(false));
        agent.push(burst(true));
    }
    let (b, a) = (stats(bare), stats(agent));
    println!("\n## 1,000 spawns in the first poll of a fresh runtime ({rounds} rounds each, interleaved)\n");
    println!("| | median | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, (median, min, max)) in [("bare tokio", b), ("with the agent", a)] {
        println!("| {name} | {median:.2?} | {min:.2?} | {max:.2?} |");
    }
    println!("\nratio of medians: {:.2}×", a.0.as_secs_f64() / b.0.as_secs_f64());
}
