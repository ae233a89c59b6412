//! Agent memory per live task, and stream bytes per second, at 100,000 live tasks.
//!
//! ```text
//! cargo bench --bench stream_memory
//! ```
//!
//! Memory: each measurement runs in a fresh child process (this binary re-executed), because a process's
//! resident set does not shrink reliably after a runtime is dropped. The child spawns N tasks that stay alive
//! (each waits on a watch channel, and polls once), waits until every task has been polled, and reports its
//! resident set size. The agent's cost per live task is (RSS with the agent − RSS bare) / N, the median of
//! several runs of each.
//!
//! Stream: with the agent serving on 127.0.0.1:0 and one client connected, 1% of the tasks wake every
//! 10 ms (so each 250 ms tick carries about 25% of them), and the client counts the bytes it receives over
//! a few seconds; the full state it receives at connect time is reported separately.

use std::process::Command;
use std::time::{Duration, Instant};

const N: usize = 100_000;
const RUNS: usize = 5;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Child mode: build a runtime (with or without the agent), hold `n` live tasks, print the RSS.
fn child(with_agent: bool, probes: bool, n: usize) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let agent = with_agent.then(|| {
        loopscope::Agent::builder()
            .ignore_env()
            .serve("off")
            .tracing(false)
            .probes(probes)
            .max_tasks(N)
            .install(&mut b)
            .expect("installs")
    });
    let rt = b.build().expect("runtime");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rt.block_on(async {
        for _ in 0..n {
            let mut rx = rx.clone();
            let polled = polled.clone();
            tokio::spawn(async move {
                polled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = rx.wait_for(|go| *go).await;
            });
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    while polled.load(std::sync::atomic::Ordering::Relaxed) < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the agent thread run a few sample intervals, so its own state is at its steady size.
    std::thread::sleep(Duration::from_millis(1_000));
    if let Some(a) = &agent {
        let s = a.snapshot();
        assert!(s.dropped.untracked_tasks == 0, "tasks went untracked: {:?}", s.dropped);
    }
    println!("{}", rss_bytes());
    tx.send(true).ok();
    drop(rx);
}

fn measure(mode: &str, n: usize) -> u64 {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe).arg("--child").arg(mode).arg(n.to_string()).output().expect("runs the child");
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the child prints its RSS")
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn stream() {
    use loopscope::wire::client::Client;
    use loopscope::wire::proto::ServerMessage;
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    let agent = loopscope::Agent::builder()
        .ignore_env()
        .serve("127.0.0.1:0")
        .tracing(false)
        .max_tasks(N)
        .install(&mut b)
        .expect("installs");
    let rt = b.build().expect("runtime");
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    rt.block_on(async {
        for i in 0..N {
            let running = running.clone();
            tokio::spawn(async move {
                if i % 100 == 0 {
                    // 1% of the tasks wake every 10 ms.
                    while running.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                } else {
                    while running.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
            });
        }
    });
    while agent.snapshot().totals.poll_count < N as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = agent.serve_addr().expect("serving");
    let t0 = Instant::now();
    let mut c = Client::connect(&addr, Duration::from_secs(5)).expect("connects");
    let mut full_bytes = 0;
    let mut tasks = 0;
    while tasks < N {
        if let Some(ServerMessage::FullTasks(t)) = c.recv(Duration::from_secs(5)).expect("stream") {
            tasks += t.tasks.len();
        }
        full_bytes = c.bytes_received();
    }
    let full_time = t0.elapsed();
    let start_bytes = c.bytes_received();
    let t1 = Instant::now();
    let mut ticks = 0;
    let mut tick_tasks = 0;
    while t1.elapsed() < Duration::from_secs(5) {
        if let Some(ServerMessage::Tick(t)) = c.recv(Duration::from_millis(500)).expect("stream") {
            ticks += 1;
            tick_tasks += t.tasks.len();
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    let rate = (c.bytes_received() - start_bytes) as f64 / secs;
    println!(
        "stream at {N} live tasks (1% waking every 10 ms): full state {:.2} MB in {:.0} ms; then {:.0} kB/s over {:.1} s ({ticks} ticks, {:.0} tasks per tick)",
        full_bytes as f64 / 1e6,
        full_time.as_secs_f64() * 1e3,
        rate / 1e3,
        secs,
        tick_tasks as f64 / f64::from(ticks.max(1)),
    );
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    drop(c);
    drop(rt);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let mode = args.get(i + 1).map(String::as_str).unwrap_or("bare");
        let n = args.get(i + 2).and_then(|v| v.parse().ok()).unwrap_or(N);
        child(mode != "bare", mode == "agent", n);
        return;
    }
    // `cargo bench` passes --bench; filters are ignored.
    let run = |mode: &str, n: usize| median((0..RUNS).map(|_| measure(mode, n)).collect());
    println!("resident memory, median of {RUNS} child processes each (MB):");
    println!("  {:<28} {:>10} {:>14}", "", "0 tasks", format!("{N} tasks"));
    let mut rows = Vec::new();
    for (mode, label) in
        [("bare", "bare runtime"), ("agent", "with the agent"), ("agent-noprobes", "agent, probes off")]
    {
        let (zero, full) = (run(mode, 0), run(mode, N));
        println!("  {label:<28} {:>10.1} {:>14.1}", zero as f64 / 1e6, full as f64 / 1e6);
        rows.push((zero, full));
    }
    let per_task = |(z, f): (u64, u64)| f.saturating_sub(z) as f64 / N as f64;
    let bare = per_task(rows[0]);
    println!(
        "  per live task: bare {bare:.0} B; the agent adds {:.0} B ({:.0} B with probes off)",
        per_task(rows[1]) - bare,
        per_task(rows[2]) - bare
    );
    println!(
        "  fixed cost of the agent (0 tasks): {:.1} MB ({:.1} MB with probes off)",
        (rows[1].0 as f64 - rows[0].0 as f64) / 1e6,
        (rows[2].0 as f64 - rows[0].0 as f64) / 1e6
    );
    stream();
}
