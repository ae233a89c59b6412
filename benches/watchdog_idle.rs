//! CPU used by loopscope's own threads while the app is idle (a runtime whose only task sleeps), per
//! watchdog interval, and by the app's two worker threads (which loopscope's lag probes wake; a bare idle
//! runtime's workers use none). The budget is ≤ 0.5% of one core in all at the default 1 ms tick.
//!
//! ```text
//! cargo bench --bench watchdog_idle            # 5 s per setting
//! cargo bench --bench watchdog_idle -- 20      # 20 s per setting
//! ```
//!
//! CPU time comes from `/proc/self/task/<tid>/schedstat` (nanoseconds on CPU), so other load on the machine
//! does not change the figure, only how long it takes to get it.

use std::time::{Duration, Instant};

/// CPU nanoseconds of this process's threads whose name starts with `prefix`.
fn cpu_ns_of(prefix: &str) -> u64 {
    let mut total = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for t in dir.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(prefix)
                && let Ok(s) = std::fs::read_to_string(t.path().join("schedstat"))
            {
                total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

fn main() {
    let secs: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    println!("\n## loopscope threads' CPU while the app is idle ({secs} s per setting)\n");
    println!(
        "| watchdog interval | watchdog thread | agent thread | stream server (no client) | app's workers | total, % of one core |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for interval in [Duration::from_millis(1), Duration::from_micros(250), Duration::from_millis(10)] {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        let _agent = loopscope::Agent::builder()
            .ignore_env()
            .serve("127.0.0.1:0")
            .watchdog_interval(interval)
            .install(&mut b)
            .expect("valid config");
        let rt = b.build().expect("runtime");
        // One poll starts the agent's threads; then the app sleeps.
        rt.block_on(async { tokio::spawn(async {}).await.expect("task") });
        std::thread::sleep(Duration::from_millis(200));
        let (w0, a0, s0, r0, t0) = (
            cpu_ns_of("loopscope-watch"),
            cpu_ns_of("loopscope-agent"),
            cpu_ns_of("loopscope-serve"),
            cpu_ns_of("tokio-runtime-w"),
            Instant::now(),
        );
        rt.block_on(async { tokio::time::sleep(Duration::from_secs(secs)).await });
        let wall = t0.elapsed().as_nanos() as f64;
        let (w, a, s, r) = (
            cpu_ns_of("loopscope-watch") - w0,
            cpu_ns_of("loopscope-agent") - a0,
            cpu_ns_of("loopscope-serve") - s0,
            cpu_ns_of("tokio-runtime-w") - r0,
        );
        println!(
            "| {interval:?} | {:.3}% | {:.3}% | {:.3}% | {:.3}% | {:.3}% |",
            100.0 * w as f64 / wall,
            100.0 * a as f64 / wall,
            100.0 * s as f64 / wall,
            100.0 * r as f64 / wall,
            100.0 * (w + a + s + r) as f64 / wall
        );
        drop(rt);
    }
}
