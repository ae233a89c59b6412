//! The HTTP load generator: a process of its own, so that its CPU is never charged to the server under test.
//! Closed loop: each connection sends a request, waits for the whole response, and sends the next, for a
//! fixed time; latency is measured per request. Targets 127.0.0.1 only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::workloads::{Figures, HTTP_RESPONSE};

/// The load generator's arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadgenArgs {
    /// The server, on the loopback interface.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Connections kept open, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Load before measuring (ms).
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// Load measured (ms).
    #[arg(long, default_value_t = 2000)]
    pub duration_ms: u64,
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: loopscope-peers\r\n\r\n";

/// Runs the load and returns `requests`, `rps`, `p50_us`, `p99_us` and `max_us`.
pub fn run(args: &LoadgenArgs) -> Result<Figures> {
    if !args.addr.ip().is_loopback() {
        bail!("the load generator only targets the loopback interface, not {}", args.addr);
    }
    if args.connections == 0 || args.duration_ms == 0 {
        bail!("--connections and --duration-ms must be at least 1");
    }
    // One thread: the server under test has the machine's other core (2-core machine, 2 workers that share).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let warmup = Duration::from_millis(args.warmup_ms);
    let measured = Duration::from_millis(args.duration_ms);
    let mut latencies: Vec<u32> = rt.block_on(async {
        let start = Instant::now();
        let (from, until) = (start + warmup, start + warmup + measured);
        let mut conns = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let stream = tokio::net::TcpStream::connect(args.addr)
                .await
                .with_context(|| format!("connecting to {}", args.addr))?;
            conns.push(tokio::spawn(connection(stream, from, until)));
        }
        let mut all = Vec::new();
        for c in conns {
            all.extend(c.await.context("connection task")??);
        }
        anyhow::Ok(all)
    })?;
    if latencies.is_empty() {
        bail!("no request completed in the measured window");
    }
    latencies.sort_unstable();
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64;
    let mut f = Figures::default();
    f.push("requests", latencies.len() as f64);
    f.push("rps", latencies.len() as f64 / measured.as_secs_f64());
    f.push("p50_us", q(0.50));
    f.push("p99_us", q(0.99));
    f.push("max_us", q(1.0));
    Ok(f)
}

/// One connection's closed loop; returns the latency (µs) of each request that started in `[from, until)`.
async fn connection(mut stream: tokio::net::TcpStream, from: Instant, until: Instant) -> Result<Vec<u32>> {
    stream.set_nodelay(true)?;
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let t0 = Instant::now();
        if t0 >= until {
            return Ok(lat);
        }
        stream.write_all(REQUEST).await?;
        // The server's answer is fixed, so a response is complete at exactly its length.
        let mut got = 0;
        while got < HTTP_RESPONSE.len() {
            match stream.read(&mut buf[got..]).await? {
                0 => bail!("the server closed the connection"),
                n => got += n,
            }
        }
        if t0 >= from {
            lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
}
