//! The peers suite: what loopscope costs a tokio app, side by side with the other ways to watch one.
//!
//! One command runs every workload under every mode, each run in a fresh process, in interleaved pairs
//! against bare tokio (bare, mode, bare, mode, ...), and prints ratios to bare as median [min–max]:
//!
//! ```text
//! cargo run --release -p loopscope-peers             # everything, under 10 minutes on 2 cores
//! cargo run --release -p loopscope-peers -- --quick  # a smoke run with tiny sizes
//! ```
//!
//! Process layout (every arrow is a separate process):
//!
//! * the **runner** ([`runner`]) starts one **child** per measured run and reads `key=value` lines from it;
//! * a child ([`child`]) builds a 2-worker runtime under one [`Mode`], runs one [`Workload`] and prints its
//!   figures from `/proc` ([`procfs`]);
//! * in the client modes the child starts a **client** process that reads its stream (loopscope's, see
//!   [`stream_client`], or console-subscriber's gRPC updates) for the whole run, as a dashboard would;
//! * the HTTP workload's **load generator** ([`loadgen`]) is a process of its own, on 127.0.0.1.
//!
//! The console modes run in `examples/console_peer.rs`, built apart from the rest: console-subscriber turns
//! on tokio's `tracing` feature, and every other mode (bare tokio above all) must run on the tokio an app
//! without console gets.

#![forbid(unsafe_code)]

pub mod child;
pub mod loadgen;
pub mod procfs;
pub mod runner;
pub mod stream_client;
pub mod workloads;

use std::time::Duration;

/// How a child's runtime is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// tokio alone: the baseline of every ratio.
    Bare,
    /// loopscope at its defaults (probes on, stream served on an ephemeral 127.0.0.1 port), no client.
    Loopscope,
    /// loopscope at its defaults, with a dashboard-like client process reading the stream.
    LoopscopeClient,
    /// loopscope with probes and the stream server off.
    LoopscopeLean,
    /// tokio-metrics: every task wrapped in one `TaskMonitor`.
    TaskMonitor,
    /// tokio's own per-worker poll-time histogram (`Builder::enable_metrics_poll_time_histogram`).
    PollHistogram,
    /// console-subscriber's layer and gRPC server, no client.
    Console,
    /// console-subscriber with a client process subscribed to its instrument updates.
    ConsoleClient,
}

impl Mode {
    /// Every mode, the baseline first, in the order the tables list them.
    pub const ALL: [Mode; 8] = [
        Mode::Bare,
        Mode::Loopscope,
        Mode::LoopscopeClient,
        Mode::LoopscopeLean,
        Mode::TaskMonitor,
        Mode::PollHistogram,
        Mode::Console,
        Mode::ConsoleClient,
    ];

    /// The row label in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Bare => "bare tokio",
            Mode::Loopscope => "loopscope (defaults), no client",
            Mode::LoopscopeClient => "loopscope (defaults), stream client",
            Mode::LoopscopeLean => "loopscope lean (probes, server off)",
            Mode::TaskMonitor => "tokio-metrics TaskMonitor",
            Mode::PollHistogram => "tokio poll-time histogram",
            Mode::Console => "console-subscriber, no client",
            Mode::ConsoleClient => "console-subscriber, gRPC client",
        }
    }

    /// The name on the command line (`--modes`, `child --mode`).
    pub fn arg(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Loopscope => "loopscope",
            Mode::LoopscopeClient => "loopscope-client",
            Mode::LoopscopeLean => "loopscope-lean",
            Mode::TaskMonitor => "task-monitor",
            Mode::PollHistogram => "poll-histogram",
            Mode::Console => "console",
            Mode::ConsoleClient => "console-client",
        }
    }

    /// Whether the child for this mode is the console example rather than the suite's own binary.
    pub fn needs_console(self) -> bool {
        matches!(self, Mode::Console | Mode::ConsoleClient)
    }

    /// Whether loopscope's agent is installed.
    pub fn is_loopscope(self) -> bool {
        matches!(self, Mode::Loopscope | Mode::LoopscopeClient | Mode::LoopscopeLean)
    }
}

/// What a child does while it is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Workload {
    /// N tasks × M `yield_now`: the CPU cost of one poll.
    Yield,
    /// A keep-alive HTTP/1.1 server on 127.0.0.1 under the load generator: req/s and p99 latency.
    Http,
    /// Spawn and join many trivial tasks: time, peak RSS, and loopscope's untracked tasks.
    Spawn,
    /// Many tasks, each polled once and then pending forever: resident bytes per task, and fixed RSS.
    Idle,
}

impl Workload {
    /// Every workload, in the order the tables list them.
    pub const ALL: [Workload; 4] = [Workload::Yield, Workload::Http, Workload::Spawn, Workload::Idle];

    /// The name on the command line.
    pub fn arg(self) -> &'static str {
        match self {
            Workload::Yield => "yield",
            Workload::Http => "http",
            Workload::Spawn => "spawn",
            Workload::Idle => "idle",
        }
    }
}

/// How big each workload is. [`Sizes::FULL`] is what BENCHMARKS.md reports; [`Sizes::QUICK`] only checks that
/// every mode still runs.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Tasks in the yield storm.
    pub yield_tasks: usize,
    /// `yield_now` calls per task in the yield storm.
    pub yields: usize,
    /// Tasks in the spawn storm.
    pub spawn_tasks: usize,
    /// Tasks left pending in the idle workload.
    pub idle_tasks: usize,
    /// How long the idle workload waits after the last first poll before it reads RSS, so that agents that
    /// record tasks on their own thread (loopscope's, console's aggregator) have done so.
    pub idle_settle: Duration,
    /// Connections the load generator keeps open.
    pub http_connections: usize,
    /// Load before measuring starts (connections opened, caches warm).
    pub http_warmup: Duration,
    /// Load that is measured.
    pub http_duration: Duration,
}

impl Sizes {
    /// The sizes of the reported run.
    pub const FULL: Sizes = Sizes {
        yield_tasks: 200,
        yields: 10_000,
        spawn_tasks: 200_000,
        idle_tasks: 100_000,
        idle_settle: Duration::from_millis(500),
        http_connections: 32,
        http_warmup: Duration::from_millis(500),
        http_duration: Duration::from_secs(2),
    };

    /// Tiny sizes for the smoke run (`--quick`, and the crate's test).
    pub const QUICK: Sizes = Sizes {
        yield_tasks: 10,
        yields: 200,
        spawn_tasks: 2_000,
        idle_tasks: 1_000,
        idle_settle: Duration::from_millis(50),
        http_connections: 4,
        http_warmup: Duration::from_millis(50),
        http_duration: Duration::from_millis(250),
    };

    /// The sizes for `--quick` or not.
    pub fn pick(quick: bool) -> Sizes {
        if quick { Sizes::QUICK } else { Sizes::FULL }
    }
}

/// Worker threads of every measured runtime: the machine this suite is written for has 2 cores.
pub const WORKERS: usize = 2;
