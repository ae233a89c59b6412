//! One measured run: a fresh process that builds a runtime under one mode, runs one workload, prints its
//! figures and exits. A fresh process per run keeps memory figures clean (a process's RSS does not shrink
//! reliably after a runtime is dropped) and start-up costs honest.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::runtime::{Builder, Runtime};

use crate::workloads::{self, Figures, Spawner};
use crate::{Mode, Sizes, Workload, procfs};

/// What the runner passes to a child.
#[derive(Clone, Debug, clap::Args)]
pub struct ChildArgs {
    /// How the runtime is watched.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// What the run does.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Tiny sizes (a smoke run).
    #[arg(long)]
    pub quick: bool,
}

/// A runtime ready for the workload, with whatever watches it.
#[derive(Debug)]
pub struct Prepared {
    /// The runtime under test: multi-thread, [`WORKERS`](crate::WORKERS) workers.
    pub runtime: Runtime,
    /// How tasks are spawned (wrapped in a `TaskMonitor` in that mode).
    pub spawner: Spawner,
    /// loopscope's agent, in its modes.
    pub agent: Option<loopscope::Agent>,
    /// The client process, in the client modes.
    pub client: Option<ClientProcess>,
}

/// The runtime builder every mode starts from.
pub fn runtime_builder() -> Builder {
    let mut b = Builder::new_multi_thread();
    b.worker_threads(crate::WORKERS).enable_all();
    b
}

/// Builds the runtime for every mode but the console ones (those live in `examples/console_peer.rs`, built
/// apart so that only they get tokio's `tracing` feature).
pub fn prepare(mode: Mode) -> Result<Prepared> {
    let mut b = runtime_builder();
    let agent = match mode {
        Mode::Loopscope | Mode::LoopscopeClient => Some(
            // The defaults, but from code only (no LOOPSCOPE_* variable of the caller's shell changes a run) and
            // served on an ephemeral port, so that a stale run or a real app on 6670 can't collide with it.
            loopscope::Agent::builder().ignore_env().serve("127.0.0.1:0").install(&mut b)?,
        ),
        Mode::LoopscopeLean => {
            Some(loopscope::Agent::builder().ignore_env().probes(false).serve("off").install(&mut b)?)
        }
        Mode::PollHistogram => {
            b.enable_metrics_poll_time_histogram();
            None
        }
        Mode::Bare | Mode::TaskMonitor => None,
        Mode::Console | Mode::ConsoleClient => {
            bail!("mode {} runs in the console child (examples/console_peer.rs)", mode.arg())
        }
    };
    let runtime = b.build().context("building the runtime")?;
    let spawner = match mode {
        Mode::TaskMonitor => Spawner::monitored(tokio_metrics::TaskMonitor::new()),
        _ => Spawner::default(),
    };
    let client = match (mode, &agent) {
        (Mode::LoopscopeClient, Some(a)) => {
            let addr = a.serve_addr().context("the agent serves no stream (is LOOPSCOPE_ADDR=off forced?)")?;
            let exe = std::env::current_exe().context("finding this executable to start the stream client")?;
            let mut cmd = Command::new(exe);
            cmd.args(["client", &addr.to_string()]);
            Some(ClientProcess::start(cmd)?)
        }
        _ => None,
    };
    Ok(Prepared { runtime, spawner, agent, client })
}

/// Runs the workload on a prepared runtime, prints its figures to stdout and exits the process without
/// dropping the runtime (tearing down 100k pending tasks would only cost time).
pub fn run(args: &ChildArgs, p: Prepared) -> Result<()> {
    let sizes = Sizes::pick(args.quick);
    workloads::warm_up(&p.runtime, &p.spawner);
    let mut f = match args.workload {
        Workload::Yield => workloads::yield_storm(&p.runtime, &p.spawner, sizes.yield_tasks, sizes.yields),
        Workload::Spawn => workloads::spawn_storm(&p.runtime, &p.spawner, sizes.spawn_tasks),
        Workload::Idle => workloads::idle_tasks(&p.runtime, &p.spawner, sizes.idle_tasks, sizes.idle_settle),
        Workload::Http => serve_http(&p)?,
    };
    if let Some(a) = &p.agent {
        let snap = a.snapshot();
        f.push("agent_polls", snap.totals.poll_count as f64);
        f.push("untracked_tasks", snap.dropped.untracked_tasks as f64);
    }
    if let Some(polls) = p.spawner.monitored_polls() {
        f.push("monitor_polls", polls as f64);
    }
    if let Some(c) = p.client {
        f.push("client_messages", c.finish()? as f64);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(f.to_lines().as_bytes())?;
    out.flush()?;
    std::process::exit(0)
}

/// Serves HTTP until the runner closes stdin: prints `port=N`, and when stdin ends, the server's CPU time over
/// that window (the load generator, another process, reports req/s and latency).
fn serve_http(p: &Prepared) -> Result<Figures> {
    let port = workloads::start_http_server(&p.runtime, &p.spawner).context("starting the HTTP server")?;
    let cpu0 = procfs::cpu_ns();
    let mut out = std::io::stdout().lock();
    writeln!(out, "port={port}")?;
    out.flush()?;
    drop(out);
    // The runner closes our stdin once the load generator is done.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).context("waiting for the runner to close stdin")?;
    let mut f = Figures::default();
    f.push("server_cpu_ms", procfs::cpu_ns().saturating_sub(cpu0) as f64 / 1e6);
    f.push("peak_rss_mib", procfs::peak_rss_kib() as f64 / 1024.0);
    Ok(f)
}

/// A client process (stream reader or console subscriber) that a child keeps running beside its workload.
///
/// Protocol: the client prints `ready` once it is connected and has its first data, and, when its stdin
/// closes, one line `received=N` (messages or updates read) before it exits.
#[derive(Debug)]
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// How long a client gets to connect.
const CLIENT_READY_TIMEOUT: Duration = Duration::from_secs(30);

impl ClientProcess {
    /// Starts `cmd` and waits until it says `ready`.
    pub fn start(mut cmd: Command) -> Result<ClientProcess> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the client {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("the client's stdout is piped")?);
        let mut c = ClientProcess { child, stdin, stdout };
        // A blocking read bounded by the client itself: it gives up (and exits, closing stdout) after
        // CLIENT_READY_TIMEOUT without a connection.
        let line = c.read_line()?;
        if line.trim() != "ready" {
            bail!("the client did not get ready (said {line:?}); its error is above");
        }
        Ok(c)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).context("reading the client's stdout")?;
        Ok(line)
    }

    /// Closes the client's stdin and returns how many messages it read.
    pub fn finish(mut self) -> Result<u64> {
        drop(self.stdin.take());
        let line = self.read_line()?;
        let status = self.child.wait()?;
        let n = line.trim().strip_prefix("received=").and_then(|v| v.parse().ok());
        match n {
            Some(n) if status.success() => Ok(n),
            _ => bail!("the client ended with {status} after saying {line:?}"),
        }
    }
}

/// The rest of a client process, once it is connected and has its first data, and its receive loop runs on
/// another thread counting into `received`: says `ready`, waits for stdin to close, prints the count, exits.
pub fn client_main(received: std::sync::Arc<std::sync::atomic::AtomicU64>) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let _ = writeln!(out, "received={}", received.load(std::sync::atomic::Ordering::Relaxed));
    let _ = out.flush();
    std::process::exit(0)
}

/// How long a client may take to connect before it gives up.
pub fn client_ready_timeout() -> Duration {
    CLIENT_READY_TIMEOUT
}
