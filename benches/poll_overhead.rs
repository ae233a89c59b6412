//! Per-poll overhead of the agent's hooks: a yield storm (100 tasks × 10,000 `yield_now`) on a bare runtime
//! and on runtimes with instrumentation, measured in the same run, rounds interleaved, medians reported.
//!
//! ```text
//! cargo bench --bench poll_overhead            # 15 rounds
//! cargo bench --bench poll_overhead -- 31      # more rounds
//! ```
//!
//! Two figures per configuration:
//! * **wall ns/poll**: elapsed time / polls. With 2 workers both busy, this is half the CPU cost.
//! * **CPU ns/poll**: CPU time of *every* thread in the process (workers, and loopscope's own watchdog and
//!   agent threads) / polls, from `/proc/self/task/*/schedstat` (nanosecond resolution).
//!
//! "added" is the difference of medians against the bare runtime in the same run.

use std::time::{Duration, Instant};

const TASKS: usize = 100;
const YIELDS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    Bare,
    Loopscope,
    LoopscopeScheduleLatency,
    /// Serving the stream (sampled every 50 ms, five times the default rate) to a connected client.
    LoopscopeStreaming,
    TokioMetricsTaskMonitor,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare tokio",
            Setup::Loopscope => "loopscope",
            Setup::LoopscopeScheduleLatency => "loopscope + schedule latency",
            Setup::LoopscopeStreaming => "loopscope + stream client (50 ms ticks)",
            Setup::TokioMetricsTaskMonitor => "tokio-metrics TaskMonitor",
        }
    }
}

/// CPU time of every thread of this process, in ns, except the stream client's (a client runs in another
/// process in real use: the dashboard).
fn process_cpu_ns() -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "bench-client") {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

struct Sample {
    wall: Duration,
    cpu_ns: u64,
    polls: u64,
}

fn run(setup: Setup, workers: usize) -> Sample {
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all();
    let agent = match setup {
        Setup::Loopscope | Setup::LoopscopeScheduleLatency | Setup::LoopscopeStreaming => Some(
            loopscope::Agent::builder()
                .ignore_env()
                .tracing(false)
                .serve(if setup == Setup::LoopscopeStreaming { "127.0.0.1:0" } else { "off" })
                .sample_interval(Duration::from_millis(if setup == Setup::LoopscopeStreaming { 50 } else { 250 }))
                .track_schedule_latency(setup == Setup::LoopscopeScheduleLatency)
                .install(&mut b)
                .expect("valid config"),
        ),
        _ => None,
    };
    let rt = b.build().expect("runtime");
    let monitor = tokio_metrics::TaskMonitor::new();
    // Warm up: start the agent's threads and touch the code paths before timing.
    rt.block_on(async {
        tokio::spawn(async { tokio::task::yield_now().await }).await.expect("warmup");
    });
    // A client that reads the stream for the whole run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = agent.as_ref().and_then(|a| a.serve_addr()).map(|addr| {
        let stop = stop.clone();
        let mut c = loopscope::wire::client::Client::connect(&addr, Duration::from_secs(5)).expect("connects");
        std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(move || {
                let mut ticks = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(Some(loopscope::wire::proto::ServerMessage::Tick(_))) = c.recv(Duration::from_millis(20))
                    {
                        ticks += 1;
                    }
                }
                ticks
            })
            .expect("client thread")
    });
    let cpu0 = process_cpu_ns();
    let t0 = Instant::now();
    rt.block_on(async {
        let mut handles = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            let work = async {
                for _ in 0..YIELDS {
                    tokio::task::yield_now().await;
                }
            };
            handles.push(match setup {
                Setup::TokioMetricsTaskMonitor => tokio::spawn(monitor.instrument(work)),
                _ => tokio::spawn(work),
            });
        }
        for h in handles {
            h.await.expect("task");
        }
    });
    let wall = t0.elapsed();
    let cpu_ns = process_cpu_ns().saturating_sub(cpu0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(r) = reader {
        let ticks = r.join().expect("reader");
        assert!(ticks > 0 || wall < Duration::from_millis(100), "the client received no tick in {wall:?}");
    }
    let polls = (TASKS * (YIELDS + 1)) as u64;
    if let Some(a) = &agent {
        // Sanity: the agent really saw the storm (minus at most the last few after-poll hooks in flight).
        let seen = a.snapshot().totals.poll_count;
        assert!(seen + 10 >= polls, "agent saw only {seen} of {polls} polls");
    }
    drop(rt);
    Sample { wall, cpu_ns, polls }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(15);
    // `--only loopscope` runs one setup (for profiling with perf).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let setups: Vec<Setup> = [
        Setup::Bare,
        Setup::Loopscope,
        Setup::LoopscopeScheduleLatency,
        Setup::LoopscopeStreaming,
        Setup::TokioMetricsTaskMonitor,
    ]
    .into_iter()
    .filter(|s| only.as_deref().is_none_or(|o| s.name() == o))
    .collect();
    for workers in [2usize, 1] {
        let flavor = if workers == 1 { "current_thread" } else { "multi_thread, 2 workers" };
        println!("\n## yield storm: {TASKS} tasks x {YIELDS} yield_now, {flavor}, {rounds} rounds (medians)\n");
        let mut wall: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
        for round in 0..rounds {
            // Rotate the order each round so drift on a noisy machine hits every setup alike.
            for k in 0..setups.len() {
                let i = (k + round) % setups.len();
                let s = run(setups[i], workers);
                wall[i].push(s.wall.as_nanos() as f64 / s.polls as f64);
                cpu[i].push(s.cpu_ns as f64 / s.polls as f64);
            }
        }
        let (bw, bc) = (median(wall[0].clone()), median(cpu[0].clone()));
        println!("| setup | wall ns/poll | CPU ns/poll | added CPU ns/poll | wall ratio |");
        println!("|---|---:|---:|---:|---:|");
        for (i, s) in setups.iter().enumerate() {
            let (w, c) = (median(wall[i].clone()), median(cpu[i].clone()));
            println!("| {} | {w:.1} | {c:.1} | {:+.1} | {:.2}x |", s.name(), c - bc, w / bw);
        }
    }
}
