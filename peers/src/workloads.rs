//! The four workloads, each run inside one child process on a runtime some [`Mode`](crate::Mode) watches.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::procfs;

/// Figures one run reports, in order, as `key=value` lines on the child's stdout.
#[derive(Debug, Default)]
pub struct Figures(pub Vec<(&'static str, f64)>);

impl Figures {
    /// Adds one figure.
    pub fn push(&mut self, key: &'static str, value: f64) {
        self.0.push((key, value));
    }

    /// The lines the runner reads.
    pub fn to_lines(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

/// Spawns the workload's tasks: plainly, or each wrapped in one tokio-metrics `TaskMonitor`, which is how
/// that crate instruments tasks (it has no runtime hook).
#[derive(Clone, Debug, Default)]
pub struct Spawner {
    monitor: Option<tokio_metrics::TaskMonitor>,
}

impl Spawner {
    /// A spawner that wraps every task in `monitor`.
    pub fn monitored(monitor: tokio_metrics::TaskMonitor) -> Spawner {
        Spawner { monitor: Some(monitor) }
    }

    /// `tokio::spawn`, through the monitor if there is one. Must be called inside the runtime. `track_caller`,
    /// as `tokio::spawn` is, so that loopscope names the workload's line as the spawn location, not this one.
    #[track_caller]
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.monitor {
            Some(m) => tokio::spawn(m.instrument(fut)),
            None => tokio::spawn(fut),
        }
    }

    /// Polls the monitor saw, if there is one: proof that the mode really instrumented the workload.
    pub fn monitored_polls(&self) -> Option<u64> {
        self.monitor.as_ref().map(|m| m.cumulative().total_poll_count)
    }
}

/// Starts the runtime's workers (and whatever an agent starts on first use) before anything is timed.
pub fn warm_up(rt: &Runtime, spawner: &Spawner) {
    let s = spawner.clone();
    rt.block_on(async move {
        for _ in 0..crate::WORKERS * 4 {
            s.spawn(async { tokio::task::yield_now().await }).await.expect("warm-up task never panics");
        }
    });
}

/// `tasks` × `yields` `yield_now`: every poll does almost nothing, so the figure is what watching one poll
/// costs. CPU time is the whole process's (every thread, the agent's and console's included) over the storm
/// alone, not start-up.
pub fn yield_storm(rt: &Runtime, spawner: &Spawner, tasks: usize, yields: usize) -> Figures {
    let s = spawner.clone();
    let cpu0 = procfs::cpu_ns();
    let t0 = Instant::now();
    rt.block_on(async move {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                s.spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("yielding task never panics");
        }
    });
    let wall = t0.elapsed();
    let cpu = procfs::cpu_ns().saturating_sub(cpu0);
    let polls = (tasks * (yields + 1)) as f64;
    let mut f = Figures::default();
    f.push("polls", polls);
    f.push("cpu_ns_per_poll", cpu as f64 / polls);
    f.push("wall_ns_per_poll", wall.as_nanos() as f64 / polls);
    f
}

/// Spawns `tasks` trivial tasks from a worker as fast as it can, then joins them all. Spawning from a task
/// (not from `block_on`'s thread) is what a server's accept loop does, and takes tokio's local-queue path.
pub fn spawn_storm(rt: &Runtime, spawner: &Spawner, tasks: usize) -> Figures {
    let s = spawner.clone();
    let cpu0 = procfs::cpu_ns();
    let t0 = Instant::now();
    rt.block_on(async move {
        let inner = s.clone();
        s.spawn(async move {
            let mut handles = Vec::with_capacity(tasks);
            for i in 0..tasks {
                handles.push(inner.spawn(async move { std::hint::black_box(i) }));
                yield_now_and_then(i).await;
            }
            for h in handles {
                h.await.expect("trivial task never panics");
            }
        })
        .await
        .expect("spawning task never panics");
    });
    let wall = t0.elapsed();
    let cpu = procfs::cpu_ns().saturating_sub(cpu0);
    let mut f = Figures::default();
    f.push("tasks", tasks as f64);
    f.push("wall_ms", wall.as_secs_f64() * 1e3);
    f.push("cpu_ms", cpu as f64 / 1e6);
    f.push("peak_rss_mib", procfs::peak_rss_kib() as f64 / 1024.0);
    f
}

/// Yields after every [`SPAWNS_PER_POLL`]th spawn.
async fn yield_now_and_then(i: usize) {
    if i % SPAWNS_PER_POLL == SPAWNS_PER_POLL - 1 {
        tokio::task::yield_now().await;
    }
}

/// How many tasks a spawning task spawns per poll. Spawning 200k tasks in one poll would hold a worker for
/// tens of milliseconds: a stall by loopscope's definition, which it would flag and capture stacks for, so
/// the storm would time that rather than the spawn path. An accept loop also yields between spawns.
pub const SPAWNS_PER_POLL: usize = 1024;

/// `tasks` tasks, each polled once and then pending forever (as connections waiting for a request are).
/// Bytes per task is the growth of the resident set over the task count; `fixed_rss_mib` is the resident
/// set before the first of them (runtime, agent and client connected), compared with bare tokio's.
pub fn idle_tasks(rt: &Runtime, spawner: &Spawner, tasks: usize, settle: Duration) -> Figures {
    // Let start-up work (an agent's first samples, a client's full state) land before the baseline.
    std::thread::sleep(settle);
    let before = procfs::rss_kib();
    let s = spawner.clone();
    let polled = Arc::new(AtomicUsize::new(0));
    let seen = polled.clone();
    rt.block_on(async move {
        let inner = s.clone();
        s.spawn(async move {
            for i in 0..tasks {
                let polled = polled.clone();
                // Dropped handles: the tasks live on in the runtime, as detached tasks do.
                drop(inner.spawn(async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    std::future::pending::<()>().await;
                }));
                yield_now_and_then(i).await;
            }
        })
        .await
        .expect("spawning task never panics");
        while seen.load(Ordering::Relaxed) < tasks {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    std::thread::sleep(settle);
    let after = procfs::rss_kib();
    let mut f = Figures::default();
    f.push("tasks", tasks as f64);
    f.push("fixed_rss_mib", before as f64 / 1024.0);
    f.push("bytes_per_task", after.saturating_sub(before) as f64 * 1024.0 / tasks as f64);
    f
}

/// The fixed answer of the HTTP server: small, so that the figure is the cost of a request's tasks and
/// polls, not of copying bytes.
pub const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

/// Starts a keep-alive HTTP/1.1 server on an ephemeral 127.0.0.1 port and returns the port. Every connection
/// is a task; every request gets [`HTTP_RESPONSE`]. It reads no body (the load generator sends none), which
/// is all this benchmark needs from HTTP.
pub fn start_http_server(rt: &Runtime, spawner: &Spawner) -> std::io::Result<u16> {
    let s = spawner.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let conns = s.clone();
        s.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(conns.spawn(serve_connection(stream)));
            }
        });
        Ok(port)
    })
}

async fn serve_connection(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        // Answer every complete request in the buffer (a client may pipeline), then read more.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream.write_all(HTTP_RESPONSE).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
