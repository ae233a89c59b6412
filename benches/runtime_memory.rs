//! Resident memory of one idle runtime with the agent: what the agent costs before an app spawns anything.
//!
//! ```text
//! cargo bench --bench runtime_memory
//! ```
//!
//! Each measurement runs in a fresh child process (this binary re-executed): it reads its resident set
//! (`/proc/self/statm`), builds a 2-worker runtime (bare, or with the agent at its defaults but with probes
//! and the server off, which have their own figures in `stream_memory`), runs one trivial task (the first
//! poll starts the agent's threads), lets the agent thread run a few sample intervals (every tick refreshes
//! the feed's marks), and reports how much the resident set grew. The agent's cost is the difference of the
//! medians, with the agent and bare.

use std::process::Command;
use std::time::Duration;

const RUNS: usize = 7;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Child mode: how much building and idling one runtime grew the resident set.
fn child(with_agent: bool) {
    let before = rss_bytes();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let agent = with_agent.then(|| {
        loopscope::Agent::builder()
            .ignore_env()
            .serve("off")
            .tracing(false)
            .probes(false)
            .install(&mut b)
            .expect("installs")
    });
    let rt = b.build().expect("runtime");
    rt.block_on(async { tokio::spawn(async {}).await.expect("a trivial task") });
    // Four sample intervals (250 ms each): the feed has refreshed its marks and the agent thread has
    // reclaimed the task, so its state is at its idle size.
    std::thread::sleep(Duration::from_millis(1_000));
    if let Some(a) = &agent {
        assert!(a.snapshot().totals.finished_tasks >= 1, "the agent ran");
    }
    println!("{}", rss_bytes().saturating_sub(before));
    drop(rt);
}

fn measure(mode: &str) -> u64 {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe).arg("--child").arg(mode).output().expect("runs the child");
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the child prints its RSS growth")
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args.get(i + 1).is_some_and(|m| m == "agent"));
        return;
    }
    // Interleaved, so drift in the machine's state hits both alike.
    let (mut bare, mut agent) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        bare.push(measure("bare"));
        agent.push(measure("agent"));
    }
    let (bare, agent) = (median(bare), median(agent));
    let kib = |b: u64| b as f64 / 1024.0;
    println!("## Resident memory of one idle runtime (2 workers), median of {RUNS} fresh processes\n");
    println!("| | KiB resident after build + idle |");
    println!("|---|---:|");
    println!("| bare runtime | {:.0} |", kib(bare));
    println!("| with the agent (defaults, probes and server off) | {:.0} |", kib(agent));
    println!("| the agent's share | {:.0} |", kib(agent.saturating_sub(bare)));
}
