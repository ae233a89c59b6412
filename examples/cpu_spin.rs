//! A small server whose `/resize` handler does heavy computation inline: a CPU-bound loop inside an async
//! handler holds its worker as surely as a sleep does, while well-behaved handlers keep serving. loopscope
//! flags the spinning poll while it is still running, classifies it as CPU-bound and names the function.
//!
//! ```text
//! cargo run --example cpu_spin                  # prints stall reports for a few seconds
//! loopscope check -- cargo run --example cpu_spin
//! ```
//!
//! Options: `--seconds N` (default 3), `--spin-ms N` (default 120).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The culprit: a CPU-bound loop (think image resizing or password hashing) run inline in an async handler
/// instead of in `spawn_blocking`, so no other task on its worker runs until it is done.
#[inline(never)]
fn cpu_spin(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < d {
        for _ in 0..1000 {
            // xorshift: real work the optimizer can't remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x = black_box(x);
    }
    x
}

async fn resize_handler(spin: Duration) -> u64 {
    cpu_spin(spin)
}

async fn healthy_handler(i: u64) -> u64 {
    tokio::task::yield_now().await;
    i * 2
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let seconds = common::arg("--seconds", 3)?;
    let spin = Duration::from_millis(common::arg("--spin-ms", 120)?);

    let mut builder = common::runtime_builder();
    // The one line that attaches loopscope.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    common::note_missing(&agent);
    let runtime = builder.build()?;
    let stalls = agent.subscribe();

    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            let mut handles = Vec::new();
            for i in 0..50 {
                handles.push(tokio::spawn(healthy_handler(i)));
            }
            handles.push(tokio::spawn(resize_handler(spin)));
            for h in handles {
                let _ = h.await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    drop(runtime);

    let snap = agent.snapshot();
    println!("\n{} polls, {} stalls", snap.totals.poll_count, snap.totals.stall_count);
    common::print_ended_stalls(&stalls);
    Ok(())
}
