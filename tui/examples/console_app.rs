//! A small app instrumented with console-subscriber (not loopscope) whose task blocks its worker, to try
//! `loopscope top --console` (and tokio-console) on:
//!
//! ```text
//! cargo run -p loopscope-tui --example console_app -- 127.0.0.1:6669
//! cargo run --bin loopscope -- top --console          # in another terminal
//! ```
//!
//! console-subscriber is a dev-dependency of the dashboard (it turns on tokio's `tracing` feature), hence an
//! example.

use std::net::SocketAddr;
use std::time::Duration;
use tracing_subscriber::prelude::*;

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:6669").parse()?;
    let layer = console_subscriber::ConsoleLayer::builder().server_addr(addr).spawn();
    tracing_subscriber::registry().with(layer).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    eprintln!("console_app: console-subscriber on {addr}; Ctrl-C stops");
    runtime.block_on(async {
        // Blocks its worker for 200 ms at every poll: a stall for any threshold below that.
        tokio::spawn(async {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        // Well-behaved: polls of microseconds.
        for _ in 0..4 {
            tokio::spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(())
}
