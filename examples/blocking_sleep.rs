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

mod common;

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let seconds = common::arg("--seconds", 3)?;
    let sleep = Duration::from_millis(common::arg("--sleep-ms", 120)?);

    let mut builder = common::runtime_builder();
    // The one line that attaches loopscope. Stall reports go to `tracing` (stderr here) and to subscribers.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    common::note_missing(&agent);
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
    common::print_ended_stalls(&stalls);
    Ok(())
}
