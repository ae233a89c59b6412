//! A small server whose `/report` handler blocks its worker with `std::thread::sleep`, while well-behaved
//! handlers keep serving. loopscope flags the sleeping poll while it is still running and names the task and
//! where it was spawned.
//!
//! ```text
//! cargo run --example blocking_sleep            # prints stall reports for a few seconds
//! LOOPSCOPE_STALL_THRESHOLD=50ms cargo run --example blocking_sleep
//! ```
//!
//! Options: `--seconds N` (default 3), `--sleep-ms N` (default 120).

use std::time::{Duration, Instant};

/// The culprit: a synchronous sleep inside an async handler blocks the whole worker thread.
#[inline(never)]
fn blocking_sleep(d: Duration) {
    std::thread::sleep(d);
}

async fn report_handler(sleep: Duration) -> usize {
    blocking_sleep(sleep);
    42
}

async fn healthy_handler(i: u64) -> u64 {
    tokio::task::yield_now().await;
    i * 2
}

fn arg(name: &str, default: u64) -> Result<u64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} takes a whole number")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Colours only on a terminal: CI logs and `loopscope check` output stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_target(false).with_ansi(ansi).with_writer(std::io::stderr).init();
    let seconds = arg("--seconds", 3)?;
    let sleep = Duration::from_millis(arg("--sleep-ms", 120)?);

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    // The one line that attaches loopscope. Stall reports go to `tracing` (stderr here) and to subscribers.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    for missing in agent.capabilities().missing {
        eprintln!("note: {missing}");
    }
    let runtime = builder.build()?;
    let stalls = agent.subscribe();

    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut served = 0u64;
        while Instant::now() < deadline {
            // Mostly healthy traffic...
            let mut handles = Vec::new();
            for i in 0..50 {
                handles.push(tokio::spawn(healthy_handler(i)));
            }
            // ...and now and then a request to the handler that blocks.
            handles.push(tokio::spawn(async move { report_handler(sleep).await as u64 }));
            for h in handles {
                served += h.await.unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        served
    });
    drop(runtime);

    let snap = agent.snapshot();
    println!(
        "\n{} polls, {} stalls ({} reports, {} suppressed by the rate limit)",
        snap.totals.poll_count, snap.totals.stall_count, snap.totals.stall_reports, snap.totals.suppressed_reports
    );
    let mut n = 0;
    while let Some(ev) = stalls.try_recv() {
        if ev.phase == loopscope::StallPhase::Ended {
            n += 1;
            println!("stall #{n}: {}", ev.summary());
        }
    }
    Ok(())
}
