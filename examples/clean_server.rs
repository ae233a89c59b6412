//! A small TCP server and its clients that never block the event loop: every wait is an `.await`, slow
//! work goes to `spawn_blocking`, and shared state sits behind `tokio::sync::Mutex`. loopscope reports no
//! stall, and `loopscope check` passes.
//!
//! ```text
//! cargo run --example clean_server
//! loopscope check -- cargo run --example clean_server     # exits 0
//! ```
//!
//! Options: `--seconds N` (default 3), `--clients N` (default 8).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Answers each line with its length; the "expensive" part runs on the blocking pool.
async fn serve_connection(stream: TcpStream, hits: Arc<tokio::sync::Mutex<u64>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let len = tokio::task::spawn_blocking(move || line.chars().count()).await.unwrap_or(0);
        *hits.lock().await += 1;
        write.write_all(format!("{len}\n").as_bytes()).await?;
    }
    Ok(())
}

async fn client(addr: std::net::SocketAddr, deadline: Instant) -> std::io::Result<u64> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut replies = BufReader::new(read).lines();
    let mut answered = 0;
    while Instant::now() < deadline {
        write.write_all(b"hello, loop\n").await?;
        if replies.next_line().await?.is_some() {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(answered)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_tracing();
    let seconds = common::arg("--seconds", 3)?;
    let clients = common::arg("--clients", 8)?;

    let mut builder = common::runtime_builder();
    // The one line that attaches loopscope.
    let agent = loopscope::Agent::builder().install(&mut builder)?;
    common::note_missing(&agent);
    let runtime = builder.build()?;

    let answered = runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(tokio::sync::Mutex::new(0u64));
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { break };
                tokio::spawn(serve_connection(stream, hits.clone()));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let handles: Vec<_> = (0..clients).map(|_| tokio::spawn(client(addr, deadline))).collect();
        let mut answered = 0;
        for h in handles {
            answered += h.await.map_err(std::io::Error::other)??;
        }
        server.abort();
        Ok::<u64, std::io::Error>(answered)
    })?;
    drop(runtime);

    let snap = agent.snapshot();
    println!("{answered} requests answered; {} polls, {} stalls", snap.totals.poll_count, snap.totals.stall_count);
    Ok(())
}
