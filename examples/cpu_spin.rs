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
    let spin = Duration::from_millis(arg("--spin-ms", 120)?);

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    // The one line that attaches loopscope.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    for missing in agent.capabilities().missing {
        eprintln!("note: {missing}");
    }
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
    let mut n = 0;
    while let Some(ev) = stalls.try_recv() {
        if ev.phase == loopscope::StallPhase::Ended {
            n += 1;
            println!("stall #{n}: {}", ev.summary());
        }
    }
    Ok(())
}
