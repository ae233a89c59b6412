//! Configuring and installing an agent: [`AgentBuilder`] builds the shared state from its configuration,
//! starts the outputs and the probes, and sets the hooks on the runtime builder; [`Error`] says why an
//! install failed. Split out of `agent.rs`, which holds the handles an installed agent is read through.

use super::Agent;
use crate::busy::{self, ThreadChain};
use crate::config::{Config, ConfigError, ENV_VARS, Mode, ReportTo};
#[cfg(tokio_unstable)]
use crate::hooks::{self};
use crate::shared::Shared;
use crate::stream::outputs;
use crate::watch::probing;
use std::sync::Arc;
use std::time::Duration;

/// Errors from [`AgentBuilder::install`].
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (in code or in a `LOOPSCOPE_*` variable) is invalid.
    #[error("loopscope configuration: {0}")]
    Config(#[from] ConfigError),
    /// The stream server could not listen on the configured address, or the recording could not be created.
    /// (The *default* address being taken is not an error: the agent then runs without serving.)
    #[error("{0}")]
    Output(String),
}

/// The message, as `Display` gives it: an app whose `main` returns this error with `?` prints it with
/// `Debug` (`Error: ...`), and a derived `Debug` would show Rust syntax (`Config(InvalidEnv { .. })`) instead
/// of the one line that names the setting (as `anyhow::Error` does).
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Builds and installs an [`Agent`]. Start from [`Agent::builder`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), loopscope::Error> {
/// let mut builder = tokio::runtime::Builder::new_current_thread();
/// let agent = loopscope::Agent::builder()
///     .stall_threshold(Duration::from_millis(5))
///     .name("api")
///     .install(&mut builder)?;
/// assert_eq!(agent.config().stall_threshold, Duration::from_millis(5));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .install(&mut builder) to attach the agent"]
pub struct AgentBuilder {
    pub(crate) config: Config,
    use_env: bool,
    /// A `serve` address that did not parse; reported by `install`.
    bad_serve: Option<loopscope_wire::proto::AddrError>,
    /// A `metrics_addr` that did not parse (the value and why); reported by `install`.
    bad_metrics: Option<(String, String)>,
    /// A `console_addr` that did not parse (the value and why); reported by `install`.
    pub(crate) bad_console: Option<(String, String)>,
    #[cfg(tokio_unstable)]
    chain: hooks::Chain,
    threads: ThreadChain,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            config: Config::default(),
            bad_serve: None,
            bad_metrics: None,
            bad_console: None,
            use_env: true,
            #[cfg(tokio_unstable)]
            chain: hooks::Chain::default(),
            threads: ThreadChain::default(),
        }
    }
}

impl AgentBuilder {
    /// How stalls are found (default [`Mode::TaskHooks`] in builds with `--cfg tokio_unstable`, else
    /// [`Mode::Stable`]); `LOOPSCOPE_MODE` overrides it. [`Mode::TaskHooks`] in a build without the cfg falls
    /// back to [`Mode::Stable`], and [`Agent::capabilities`] says so.
    ///
    /// ```
    /// use loopscope::Mode;
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// let agent = loopscope::Agent::builder().mode(Mode::Stable).ignore_env().serve("off").install(&mut builder).unwrap();
    /// assert!(agent.capabilities().stall_detection);
    /// assert!(!agent.capabilities().poll_timing);
    /// ```
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// A poll that holds its thread longer than this is a stall (default 10 ms, at least 100 µs).
    pub fn stall_threshold(mut self, d: Duration) -> Self {
        self.config.stall_threshold = d;
        self
    }

    /// Polls at least this long count as slow (default 50 µs, as in tokio-metrics).
    pub fn slow_poll_threshold(mut self, d: Duration) -> Self {
        self.config.slow_poll_threshold = d;
        self
    }

    /// How often the watchdog looks at running polls (default 1 ms). A stall is flagged within the threshold
    /// plus about one interval.
    pub fn watchdog_interval(mut self, d: Duration) -> Self {
        self.config.watchdog_interval = d;
        self
    }

    /// Whether to ask for real-time scheduling (`SCHED_FIFO` priority 1) for the watchdog thread (default
    /// on). Where it is refused (no root, `CAP_SYS_NICE` or `RLIMIT_RTPRIO`), or when off, the watchdog asks
    /// for nice -10 instead, and runs unchanged if that is refused too; `probe_status()` says what it got.
    /// It wakes for microseconds at a time; on a busy machine a watchdog at normal priority can be kept
    /// waiting for milliseconds, which delays reports and the readings that tell preemption from blocking.
    pub fn realtime_watchdog(mut self, on: bool) -> Self {
        self.config.realtime_watchdog = on;
        self
    }

    /// At most this many stall reports per second are delivered and logged (default 10; 0 = unlimited).
    /// Suppressed reports are counted and the count is carried by the next delivered report.
    pub fn max_reports_per_second(mut self, n: u32) -> Self {
        self.config.max_reports_per_second = n;
        self
    }

    /// Report each stall (default on): where, [`report`](Self::report) says. `false` silences reports (the
    /// stalls are still counted, kept in [`Agent::stalls`] and sent to subscribers).
    pub fn tracing(mut self, on: bool) -> Self {
        self.config.tracing = on;
        self
    }

    /// Where stall reports go (default [`ReportTo::Auto`]: a `tracing` warning if the app's subscriber shows
    /// target `loopscope::stall` at WARN, else a line on stderr). `LOOPSCOPE_REPORT` overrides it.
    pub fn report(mut self, to: ReportTo) -> Self {
        self.config.tracing = true;
        self.config.report = to;
        self
    }

    /// Tasks tracked individually (default 65,536). Each costs 128 bytes (192 with schedule latency on). Tasks beyond this are
    /// counted in `Dropped::untracked_tasks` but still timed per worker and watched for stalls.
    pub fn max_tasks(mut self, n: usize) -> Self {
        self.config.max_tasks = n;
        self
    }

    /// Distinct spawn locations tracked (default 4,096).
    pub fn max_locations(mut self, n: usize) -> Self {
        self.config.max_locations = n;
        self
    }

    /// Finished tasks kept for display (default 256).
    pub fn retain_finished(mut self, n: usize) -> Self {
        self.config.retain_finished = n;
        self
    }

    /// Ask tokio to measure each task's wake→poll latency (default off: it costs two clock reads per wake).
    pub fn track_schedule_latency(mut self, on: bool) -> Self {
        self.config.schedule_latency = on;
        self
    }

    /// Describe stall culprits with the OS probes: the stalled thread's stack, its state and syscall, CPU
    /// time and perf counters (default on). The probes are process-wide; the first agent's settings win.
    pub fn probes(mut self, on: bool) -> Self {
        self.config.probes = on;
        self
    }

    /// Capture stalled threads' stacks with a realtime signal (default on).
    pub fn stacks(mut self, on: bool) -> Self {
        self.config.stacks = on;
        self
    }

    /// Read per-thread perf counters (default on; degrades by itself where perf is unavailable).
    pub fn perf(mut self, on: bool) -> Self {
        self.config.perf = on;
        self
    }

    /// Unwind stacks with frame pointers instead of DWARF unwind tables. Only useful if the app is built with
    /// `-C force-frame-pointers=yes`; otherwise stacks come out partial.
    pub fn frame_pointer_unwinding(mut self, on: bool) -> Self {
        self.config.unwinder =
            if on { loopscope_probes::stack::Unwinder::FramePointer } else { loopscope_probes::stack::Unwinder::Dwarf };
        self
    }

    /// How often runtime metrics and the event-loop lag probes are sampled (default 250 ms).
    pub fn sample_interval(mut self, d: Duration) -> Self {
        self.config.sample_interval = d;
        self
    }

    /// Where to serve the live stream (default `127.0.0.1:6670`): `HOST:PORT` with an IP address (port 0
    /// picks a free port; see [`Agent::serve_addr`]), `unix:/path/to.sock` (created with mode 0600), or
    /// `off`. An address that does not parse makes [`install`](Self::install) fail.
    ///
    /// ```
    /// # fn main() -> Result<(), loopscope::Error> {
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder().serve("127.0.0.1:0").ignore_env().install(&mut builder)?;
    /// assert!(agent.serve_addr().is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve(mut self, addr: &str) -> Self {
        match loopscope_wire::proto::ServeAddr::parse(addr) {
            Ok(a) => {
                self.config.serve = a;
                self.bad_serve = None;
            }
            Err(e) => self.bad_serve = Some(e),
        }
        self
    }

    /// Serve Prometheus/OpenMetrics metrics over HTTP at `http://ADDR/metrics` (default: off).
    /// `LOOPSCOPE_METRICS_ADDR` overrides it.
    ///
    /// `addr` is `HOST:PORT` with an IP address (`0.0.0.0:9464` to let other machines scrape), a port alone
    /// (`"9464"` or `":9464"`, served on 127.0.0.1), or `off`. Port 0 picks a free port (see
    /// [`Agent::metrics_addr`]). An address that does not parse, or cannot be bound, makes
    /// [`install`](Self::install) fail with an error that names it.
    ///
    /// The server runs on a thread of its own and serves what the agent thread last published (every
    /// sample interval): a scrape never touches the app's runtime or the task hooks, and a slow or broken
    /// scraper holds up only its own connection. The metrics are listed in the README.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{Read, Write};
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// let agent = loopscope::Agent::builder()
    ///     .metrics_addr("127.0.0.1:0")
    ///     .serve("off")
    ///     .ignore_env()
    ///     .install(&mut builder)?;
    /// let addr = agent.metrics_addr().expect("serving metrics");
    /// let mut conn = std::net::TcpStream::connect(addr)?;
    /// conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    /// let mut response = String::new();
    /// conn.read_to_string(&mut response)?;
    /// assert!(response.starts_with("HTTP/1.1 200 OK"));
    /// assert!(response.contains("loopscope_build_info"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn metrics_addr(mut self, addr: &str) -> Self {
        match crate::config::parse_metrics_addr(addr) {
            Ok(a) => {
                self.config.metrics = a;
                self.bad_metrics = None;
            }
            Err(reason) => self.bad_metrics = Some((addr.to_string(), reason)),
        }
        self
    }

    /// How many spawn locations get a `location` label of their own in `/metrics` (default 100, at most
    /// 10,000); stalls of tasks spawned anywhere else are counted under `location="other"`, so the number
    /// of series Prometheus keeps stays bounded. `LOOPSCOPE_METRICS_MAX_LOCATIONS` overrides it.
    ///
    /// ```
    /// let builder = loopscope::Agent::builder().metrics_addr("9464").metrics_max_locations(20).ignore_env();
    /// assert_eq!(builder.resolve().unwrap().metrics_max_locations, 20);
    /// ```
    pub fn metrics_max_locations(mut self, n: usize) -> Self {
        self.config.metrics_max_locations = n;
        self
    }

    /// Also write the stream to `path`, a recording that `loopscope replay` plays back.
    pub fn record(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.record = Some(path.into());
        self
    }

    /// A name for this runtime in reports.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Turns the agent off (installs nothing); `LOOPSCOPE_ENABLED` can turn it back on.
    pub fn enabled(mut self, on: bool) -> Self {
        self.config.enabled = on;
        self
    }

    /// Ignore `LOOPSCOPE_*` environment variables (for tests and embedded uses).
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// Your own `on_task_spawn` callback, called after loopscope's.
    #[cfg(tokio_unstable)]
    pub fn on_task_spawn(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.chain.spawn = Some(Arc::new(f));
        self
    }

    /// Your own `on_before_task_poll` callback, called *before* loopscope starts its timer (so its cost is not
    /// charged to the task).
    #[cfg(tokio_unstable)]
    pub fn on_before_task_poll(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.chain.before_poll = Some(Arc::new(f));
        self
    }

    /// Your own `on_after_task_poll` callback, called after loopscope stops its timer.
    #[cfg(tokio_unstable)]
    pub fn on_after_task_poll(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.chain.after_poll = Some(Arc::new(f));
        self
    }

    /// Your own `on_task_terminate` callback, called after loopscope's.
    #[cfg(tokio_unstable)]
    pub fn on_task_terminate(mut self, f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static) -> Self {
        self.chain.terminate = Some(Arc::new(f));
        self
    }

    /// Your own `on_thread_start` callback. tokio keeps one per runtime and stable mode sets it, so pass yours
    /// here rather than on the runtime builder; it runs after loopscope's (in either mode).
    pub fn on_thread_start(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.threads.start = Some(Arc::new(f));
        self
    }

    /// Your own `on_thread_stop` callback, run before loopscope's (in either mode); see
    /// [`on_thread_start`](Self::on_thread_start).
    pub fn on_thread_stop(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.threads.stop = Some(Arc::new(f));
        self
    }

    /// Your own `on_thread_park` callback. tokio keeps one per runtime and stable mode sets it, so pass yours
    /// here rather than on the runtime builder; it runs after loopscope's (in either mode).
    pub fn on_thread_park(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.threads.park = Some(Arc::new(f));
        self
    }

    /// Your own `on_thread_unpark` callback, run before loopscope's (in either mode); see
    /// [`on_thread_park`](Self::on_thread_park).
    pub fn on_thread_unpark(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.threads.unpark = Some(Arc::new(f));
        self
    }

    /// The configuration this builder would install: code settings with `LOOPSCOPE_*` variables applied.
    pub fn resolve(&self) -> Result<Config, Error> {
        let mut config = self.config.clone();
        if let Some(e) = &self.bad_serve {
            return Err(Error::Config(ConfigError::OutOfRange {
                setting: "serve",
                value: e.input.clone(),
                reason: e.to_string(),
            }));
        }
        for (setting, bad) in [("metrics_addr", &self.bad_metrics), ("console_addr", &self.bad_console)] {
            if let Some((value, reason)) = bad {
                return Err(Error::Config(ConfigError::OutOfRange {
                    setting,
                    value: value.clone(),
                    reason: reason.clone(),
                }));
            }
        }
        config.validate()?;
        if self.use_env {
            let unknown = config.apply_env(std::env::vars_os().filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                k.starts_with("LOOPSCOPE_").then(|| (k, v.to_string_lossy().into_owned()))
            }))?;
            for var in unknown {
                tracing::warn!(target: "loopscope", "ignoring unknown variable {var} (known: {})", ENV_VARS.join(", "));
            }
        }
        Ok(config)
    }

    /// Attaches the agent to a tokio runtime builder (multi-thread or current-thread). Call it once per
    /// builder, before `build()`.
    ///
    /// Fails only on invalid configuration, naming the setting or variable. Without `--cfg tokio_unstable` it
    /// runs in [`Mode::Stable`]: stalls are found and described, but tasks' polls are not timed and a stall's
    /// task is unknown; see [`Agent::capabilities`].
    pub fn install(self, builder: &mut tokio::runtime::Builder) -> Result<Agent, Error> {
        let config = self.resolve()?;
        let shared = Shared::new(config, outputs::finish_check);
        let agent = Agent { shared: shared.clone() };
        if !shared.config.enabled {
            return Ok(agent);
        }
        probing::start(&shared.config);
        outputs::start(&shared, &agent.capabilities()).map_err(Error::Output)?;
        // The timer-lateness probe needs tokio's time driver; `sleep` would panic without it. Enabling it is
        // idempotent and costs nothing until a timer is used.
        builder.enable_time();
        match shared.config.mode.effective() {
            Mode::TaskHooks => {
                #[cfg(tokio_unstable)]
                hooks::install(builder, &shared, self.chain, crate::lifecycle::start);
                busy::pass_through(builder, self.threads);
            }
            Mode::Stable => {
                busy::install(builder, &shared, self.threads, crate::lifecycle::start);
                note_stable_mode();
            }
        }
        Ok(agent)
    }
}

/// Says once per process what stable mode can't see, and how to get it: on stderr too when the build chose it
/// (no `--cfg tokio_unstable`), since the user may not know; only as a `tracing` event when the code did.
fn note_stable_mode() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let built_without = !cfg!(tokio_unstable);
        let why = if built_without {
            "this program was built without `--cfg tokio_unstable`, so tokio offers no task hooks"
        } else {
            "Mode::Stable was chosen"
        };
        let msg = format!(
            "loopscope: stable mode ({why}): stalls are found from the workers' busy spans and stack samples and \
             reported with stack and classification, but their task id and spawn location are unknown and tasks' \
             polls are not timed. For those, rebuild with RUSTFLAGS=\"--cfg tokio_unstable\" (or add it to \
             .cargo/config.toml), or spawn the code you want timed with agent.spawn(..) / agent.instrument(..)."
        );
        tracing::info!(target: "loopscope", "{msg}");
        if built_without {
            eprintln!("{msg}");
        }
    });
}
