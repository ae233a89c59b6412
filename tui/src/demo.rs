//! `loopscope demo`: a small HTTP-like server with the loopscope agent installed, its own load generator,
//! and handlers that sometimes block their worker, each in a different way.
//!
//! | path | handler | blocks with |
//! |---|---|---|
//! | `/items` | [`list_items`] | nothing: a well-behaved async handler |
//! | `/report` | [`blocking_sleep`] | `std::thread::sleep` |
//! | `/resize` | [`cpu_spin`] | a CPU-bound loop |
//! | `/cache` | [`sync_mutex_wait`] | a `std::sync::Mutex` held by another thread |
//! | `/config` | [`blocking_pipe_read`] | a blocking `read` on a pipe that is slow to fill |
//!
//! The blocking helpers are `#[inline(never)]` and named after what they do, so they show up by name in
//! the stall's stack.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Blocks the worker with a synchronous sleep: the classic mistake.
#[inline(never)]
pub fn blocking_sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Burns CPU for `d` (an image resize done inline instead of on a blocking thread).
#[inline(never)]
pub fn cpu_spin(d: Duration) -> u64 {
    let start = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    std::hint::black_box(x)
}

/// The cache shared with the refresher thread, which holds the lock while it "reloads".
fn cache() -> &'static Mutex<u64> {
    static CACHE: Mutex<u64> = Mutex::new(0);
    &CACHE
}

/// Waits for a `std::sync::Mutex` that a background thread holds for a while now and then.
#[inline(never)]
pub fn sync_mutex_wait() -> u64 {
    // A poisoned lock still holds a usable value; the demo never panics while holding it anyway.
    let guard = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *guard
}

/// Reads a config "file" from a pipe whose writer takes `delay` to produce it: a blocking `read` syscall.
#[inline(never)]
pub fn blocking_pipe_read(delay: Duration) -> std::io::Result<usize> {
    let (mut reader, mut writer) = std::io::pipe()?;
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = writer.write_all(b"max_connections = 128\n");
    });
    let mut buf = String::new();
    reader.read_to_string(&mut buf)
}

/// A well-behaved handler: awaits instead of blocking.
async fn list_items(n: u64) -> String {
    tokio::time::sleep(Duration::from_millis(1)).await;
    (0..n % 5 + 1).map(|i| format!("item{i}")).collect::<Vec<_>>().join(",")
}

async fn report(ms: u64) -> String {
    blocking_sleep(Duration::from_millis(ms));
    "report ready".into()
}

async fn resize(ms: u64) -> String {
    format!("resized {}", cpu_spin(Duration::from_millis(ms)) % 1000)
}

async fn cached() -> String {
    format!("cache v{}", sync_mutex_wait())
}

async fn config(ms: u64) -> String {
    match blocking_pipe_read(Duration::from_millis(ms)) {
        Ok(n) => format!("config {n} bytes"),
        Err(e) => format!("config error {e}"),
    }
}

/// Routes a request to its handler. Each handler runs as a task of its own, spawned at its own line, so
/// the Tasks screen's "by location" table tells the handlers apart.
async fn route(path: &str, seed: u64) -> String {
    let ms = 40 + seed % 160;
    let handle = match path {
        "/report" => tokio::spawn(report(ms)),
        "/resize" => tokio::spawn(resize(ms)),
        "/cache" => tokio::spawn(cached()),
        "/config" => tokio::spawn(config(ms)),
        _ => tokio::spawn(list_items(seed)),
    };
    handle.await.unwrap_or_else(|e| format!("handler failed: {e}"))
}

async fn serve_connection(stream: TcpStream, requests: Arc<AtomicU64>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // "GET /path HTTP/1.1"; headers end with an empty line.
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        while let Ok(Some(h)) = lines.next_line().await {
            if h.is_empty() {
                break;
            }
        }
        let n = requests.fetch_add(1, Ordering::Relaxed);
        let body = route(&path, n.wrapping_mul(2_654_435_761)).await;
        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if write.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn server(listener: TcpListener, requests: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve_connection(stream, requests.clone()));
    }
}

/// A deterministic pseudo-random sequence (xorshift), so the demo needs no dependency for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One simulated client: keep-alive connection, a request every few milliseconds, now and then to a
/// handler that blocks.
async fn client(addr: SocketAddr, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed | 1);
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        for _ in 0..200 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // About one request in 500 goes to a blocking handler: with 8 clients at ~40 req/s each, a
            // stall every two seconds or so, as in a real incident.
            let path = match rng.next() % 2000 {
                0 => "/report",
                1 => "/resize",
                2 => "/cache",
                3 => "/config",
                _ => "/items",
            };
            let req = format!("GET {path} HTTP/1.1\r\nhost: demo\r\n\r\n");
            if write.write_all(req.as_bytes()).await.is_err() {
                break;
            }
            // Status line, content-length, blank line, body (no newline at the end: read what is there).
            let mut ok = true;
            for _ in 0..3 {
                ok &= matches!(lines.next_line().await, Ok(Some(_)));
            }
            if !ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(15 + rng.next() % 20)).await;
        }
    }
}

/// Holds the cache lock for a while every couple of seconds, so `/cache` requests sometimes wait on it.
fn cache_refresher(stop: Arc<AtomicBool>) {
    let mut rng = Rng(0xC0FFEE);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 300));
        let mut guard = cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard += 1;
        std::thread::sleep(Duration::from_millis(60 + rng.next() % 150));
        drop(guard);
    }
}

/// The running demo app. Dropping it stops everything.
#[derive(Debug)]
pub struct DemoApp {
    runtime: Option<tokio::runtime::Runtime>,
    load: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    agent: loopscope::Agent,
    http: SocketAddr,
}

/// Settings of the demo app.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the agent serves (`127.0.0.1:0` picks a free port).
    pub serve: String,
    /// Worker threads of the app's runtime.
    pub workers: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { serve: "127.0.0.1:0".into(), workers: 4 }
    }
}

impl DemoApp {
    /// Starts the server (on a free loopback port), its load generator and the agent.
    pub fn start(opts: &DemoOptions) -> anyhow::Result<DemoApp> {
        use anyhow::Context as _;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(opts.workers.max(1)).enable_all().thread_name("demo-worker");
        let agent = loopscope::Agent::builder()
            .serve(&opts.serve)
            .name("loopscope-demo")
            .track_schedule_latency(true)
            // The dashboard (or `--no-ui`'s own lines) shows every stall; a report on stderr would draw over it.
            .tracing(false)
            .install(&mut builder)
            .context("installing the loopscope agent in the demo app")?;
        let runtime = builder.build().context("building the demo app's runtime")?;
        let requests = Arc::new(AtomicU64::new(0));
        let listener =
            runtime.block_on(TcpListener::bind("127.0.0.1:0")).context("binding the demo server to a loopback port")?;
        let http = listener.local_addr()?;
        runtime.spawn(server(listener, requests));
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new().name("demo-cache-refresher".into()).spawn({
            let stop = stop.clone();
            move || cache_refresher(stop)
        })?;
        // The clients run on a runtime of their own, without the agent: they stand for the outside world.
        let load = std::thread::Builder::new().name("demo-load".into()).spawn({
            let stop = stop.clone();
            move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    let clients: Vec<_> =
                        (0..8u64).map(|i| tokio::spawn(client(http, 0x5EED + i * 7919, stop.clone()))).collect();
                    for c in clients {
                        let _ = c.await;
                    }
                });
            }
        })?;
        Ok(DemoApp { runtime: Some(runtime), load: Some(load), stop, agent, http })
    }

    /// The address the agent serves its stream on, once it is listening.
    pub fn agent_addr(&self) -> anyhow::Result<loopscope_wire::proto::ServeAddr> {
        match (self.agent.serve_addr(), self.agent.serve_error()) {
            (Some(a), _) => Ok(a),
            (None, Some(e)) => anyhow::bail!("the demo's agent is not serving: {e}"),
            (None, None) => anyhow::bail!(
                "the demo's agent is not serving (LOOPSCOPE_ADDR=off, or built without --cfg tokio_unstable?)"
            ),
        }
    }

    /// The demo server's own (HTTP-like) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Stall events of the demo app as the agent reports them (bounded; the app never waits on the reader).
    pub fn subscribe(&self) -> loopscope::StallSubscription {
        self.agent.subscribe()
    }

    /// What the agent cannot measure in this build, in words.
    pub fn missing_capabilities(&self) -> Vec<String> {
        self.agent.capabilities().missing
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The clients see the flag after their current request; a request may wait on a handler that blocks
        // for up to 200 ms. Do not wait longer than that for them: the dashboard promises to be gone within a
        // second of its terminal closing, and a load thread left behind ends with the process.
        if let Some(l) = self.load.take() {
            let deadline = Instant::now() + Duration::from_millis(400);
            while !l.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if l.is_finished() {
                let _ = l.join();
            }
        }
        if let Some(rt) = self.runtime.take() {
            // A handler may be in the middle of a blocking call; do not wait for it long.
            rt.shutdown_timeout(Duration::from_millis(300));
        }
    }
}
