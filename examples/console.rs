//! An app for `tokio-console` to watch, through the tokio-console API loopscope serves (the `console`
//! feature, on in the examples): a few long-lived tasks, one of which blocks its worker now and then.
//!
//! ```text
//! cargo run --example console              # serves on 127.0.0.1:6669 for a minute
//! tokio-console http://127.0.0.1:6669      # in another terminal
//! ```
//!
//! Options: `--seconds N` (default 60), `--port N` (default 6669).

mod common;

use std::time::{Duration, Instant};

/// The culprit: a synchronous sleep inside an async task blocks the whole worker thread.
#[inline(never)]
fn blocking_sleep(d: Duration) {
    std::thread::sleep(d);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let seconds = common::arg("--seconds", 60)?;
    let port = common::arg("--port", 6669)?;

    let mut builder = common::runtime_builder();
    let agent = loopscope::Agent::builder().console_addr(&port.to_string()).install(&mut builder)?;
    common::note_missing(&agent);
    let runtime = builder.build()?;
    if let Some(addr) = agent.console_addr() {
        eprintln!("serving the tokio-console API: tokio-console http://{addr}");
    }

    runtime.block_on(async {
        let end = Instant::now() + Duration::from_secs(seconds);
        // Well-behaved tasks: tick and yield.
        for i in 0..4u64 {
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    n = n.wrapping_add(i);
                    tokio::time::sleep(Duration::from_millis(10 * (i + 1))).await;
                }
            });
        }
        // The blocking one: every 2 s, 300 ms of std::thread::sleep on a worker.
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                blocking_sleep(Duration::from_millis(300));
            }
        });
        // Short-lived request handlers, some of which live past a sample.
        while Instant::now() < end {
            let handles: Vec<_> = (0..20u64)
                .map(|i| {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(i * 20)).await;
                        i
                    })
                })
                .collect();
            for h in handles {
                let _ = h.await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok(())
}
