//! Agent configuration: set in code with [`AgentBuilder`](crate::AgentBuilder), overridden by `LOOPSCOPE_*`
//! environment variables.

use loopscope_probes::stack::Unwinder;
use loopscope_wire::parse_duration;
use loopscope_wire::proto::ServeAddr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables the agent reads. The environment overrides values set in code.
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `LOOPSCOPE_ENABLED` | `0`/`false`/`off` installs nothing | on |
/// | `LOOPSCOPE_MODE` | `hooks` (tokio's task hooks: every poll timed, needs `--cfg tokio_unstable`) or `stable` (workers' busy spans and stack samples, any build) | `hooks` with the cfg, else `stable` |
/// | `LOOPSCOPE_STALL_THRESHOLD` | a poll running longer than this is a stall (≥ 100µs) | `10ms` |
/// | `LOOPSCOPE_SLOW_POLL_THRESHOLD` | polls at least this long count as slow | `50us` |
/// | `LOOPSCOPE_WATCHDOG_INTERVAL` | how often the watchdog looks at running polls (100µs..=1s) | `1ms` |
/// | `LOOPSCOPE_REALTIME_WATCHDOG` | run the watchdog thread at `SCHED_FIFO` priority 1 where permitted (else nice -10), so it runs on time on a busy machine | on |
/// | `LOOPSCOPE_MAX_REPORTS_PER_SECOND` | stall reports per second before the rate limit suppresses (and counts) them | `10` |
/// | `LOOPSCOPE_TRACING` | report each stall at all (`0` is the same as `LOOPSCOPE_REPORT=off`) | on |
/// | `LOOPSCOPE_REPORT` | where stall reports go: `auto` (a `tracing` warning when a subscriber enables target `loopscope::stall` at WARN, else a line on stderr), `tracing`, `stderr` or `off` | `auto` |
/// | `LOOPSCOPE_MAX_TASKS` | tasks tracked individually (memory bound: about 128 bytes each, 192 with schedule latency) | `65536` |
/// | `LOOPSCOPE_MAX_LOCATIONS` | distinct spawn locations tracked | `4096` |
/// | `LOOPSCOPE_RETAIN_FINISHED` | finished tasks kept for display | `256` |
/// | `LOOPSCOPE_SCHEDULE_LATENCY` | ask tokio to measure wake→poll latency per task (costs two clock reads per wake) | off |
/// | `LOOPSCOPE_PROBES` | OS probes for stall culprits (stack, thread state, perf); process-wide | on |
/// | `LOOPSCOPE_STACKS` | capture the stalled thread's stack (a realtime signal) | on |
/// | `LOOPSCOPE_PERF` | per-thread perf counters | on |
/// | `LOOPSCOPE_UNWINDER` | `dwarf`, or `frame-pointer` for apps built with `-C force-frame-pointers=yes` | `dwarf` |
/// | `LOOPSCOPE_SAMPLE_INTERVAL` | how often runtime metrics and lag probes are sampled (10ms..=60s) | `250ms` |
/// | `LOOPSCOPE_NAME` | a name for this runtime in reports | none |
/// | `LOOPSCOPE_ADDR` | where to serve the live stream: `HOST:PORT` (loopback by default), `unix:/path.sock` (mode 0600) or `off` | `127.0.0.1:6670` |
/// | `LOOPSCOPE_RECORD` | also write the stream to this file (replay it with `loopscope replay FILE`) | none |
/// | `LOOPSCOPE_METRICS_ADDR` | serve Prometheus/OpenMetrics `/metrics` over HTTP: `HOST:PORT` (an IP), a port alone (on 127.0.0.1), or `off` | off |
/// | `LOOPSCOPE_METRICS_MAX_LOCATIONS` | spawn locations that get a `location` label of their own in `/metrics`; stalls elsewhere count under `other` | `100` |
/// | `LOOPSCOPE_CONSOLE_ADDR` | serve the tokio-console API (needs the `console` feature): `HOST:PORT` (an IP), a port alone (on 127.0.0.1; tokio-console's default is `6669`), or `off` | off |
/// | `LOOPSCOPE_CHECK_DIR` | CI mode: write every stall to a file in this directory (set by `loopscope check`) | none |
///
/// Durations take a number and a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m`; e.g. `250us`, `1.5ms`, `2s`.
/// Booleans take `1`/`0`, `true`/`false`, `on`/`off`, `yes`/`no`.
pub const ENV_VARS: &[&str] = &[
    "LOOPSCOPE_ENABLED",
    "LOOPSCOPE_MODE",
    "LOOPSCOPE_STALL_THRESHOLD",
    "LOOPSCOPE_SLOW_POLL_THRESHOLD",
    "LOOPSCOPE_WATCHDOG_INTERVAL",
    "LOOPSCOPE_REALTIME_WATCHDOG",
    "LOOPSCOPE_MAX_REPORTS_PER_SECOND",
    "LOOPSCOPE_TRACING",
    "LOOPSCOPE_REPORT",
    "LOOPSCOPE_MAX_TASKS",
    "LOOPSCOPE_MAX_LOCATIONS",
    "LOOPSCOPE_RETAIN_FINISHED",
    "LOOPSCOPE_SCHEDULE_LATENCY",
    "LOOPSCOPE_SAMPLE_INTERVAL",
    "LOOPSCOPE_PROBES",
    "LOOPSCOPE_STACKS",
    "LOOPSCOPE_PERF",
    "LOOPSCOPE_UNWINDER",
    "LOOPSCOPE_NAME",
    "LOOPSCOPE_ADDR",
    "LOOPSCOPE_RECORD",
    "LOOPSCOPE_METRICS_ADDR",
    "LOOPSCOPE_METRICS_MAX_LOCATIONS",
    "LOOPSCOPE_CONSOLE_ADDR",
    "LOOPSCOPE_CHECK_DIR",
];

/// The smallest stall threshold the watchdog supports.
pub const MIN_STALL_THRESHOLD: Duration = Duration::from_micros(100);

/// A configuration value that cannot be used. The message names the setting (or the environment variable)
/// and says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable holds a value that does not parse.
    #[error("{var}={value:?} is not valid: {reason}")]
    InvalidEnv {
        /// The variable, e.g. `LOOPSCOPE_STALL_THRESHOLD`.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// A value set in code is out of range.
    #[error("{setting} = {value} is out of range: {reason}")]
    OutOfRange {
        /// The builder method, e.g. `stall_threshold`.
        setting: &'static str,
        /// The value.
        value: String,
        /// The accepted range.
        reason: String,
    },
}

/// Where stall reports go ([`Config::report`], `LOOPSCOPE_REPORT`).
///
/// # Examples
/// ```
/// use loopscope::ReportTo;
/// // Apps whose logging drops WARN from other crates still see their stalls on stderr:
/// let agent = loopscope::Agent::builder().report(ReportTo::Auto);
/// # let _ = agent;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportTo {
    /// A `tracing` warning (target `loopscope::stall`) when the app's subscriber enables that target at WARN;
    /// otherwise one line on stderr, and a one-time note saying how to route reports to `tracing` instead. A
    /// stall report nobody sees is worse than none: the user concludes that nothing blocks.
    #[default]
    Auto,
    /// Always a `tracing` warning, even if no subscriber shows it.
    Tracing,
    /// Always one line on stderr.
    Stderr,
}

impl ReportTo {
    /// `auto`, `tracing`, `stderr`; `off` gives `None` (no reports).
    fn parse(s: &str) -> Result<Option<ReportTo>, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Some(ReportTo::Auto)),
            "tracing" => Ok(Some(ReportTo::Tracing)),
            "stderr" => Ok(Some(ReportTo::Stderr)),
            "off" | "0" | "false" | "no" => Ok(None),
            _ => Err("expected auto, tracing, stderr or off".into()),
        }
    }
}

/// How the agent finds stalls ([`Config::mode`], `LOOPSCOPE_MODE`).
///
/// # Examples
/// ```
/// use loopscope::Mode;
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// let agent = loopscope::Agent::builder().mode(Mode::Stable).serve("off").install(&mut builder).unwrap();
/// assert_eq!(agent.capabilities().mode, Mode::Stable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// tokio's task hooks time every task poll: exact durations, task ids and spawn locations, per-task
    /// statistics. Needs `--cfg tokio_unstable`; without it, `install` falls back to [`Mode::Stable`] and says so.
    TaskHooks,
    /// Built only from stable tokio APIs: the workers' park/unpark hooks say when each worker is busy, and a
    /// worker busy past the threshold is confirmed as one long poll by the probes (a blocking syscall, a lock
    /// wait, or the same frames under the task's poll in several stack samples) before it is reported, with
    /// stack and classification. Task ids and spawn locations are unknown (reported as such); futures run
    /// through [`Agent::spawn`](crate::Agent::spawn) or [`Agent::instrument`](crate::Agent::instrument) are
    /// timed exactly, with their location, as in [`Mode::TaskHooks`].
    Stable,
}

impl Default for Mode {
    /// [`Mode::TaskHooks`] in builds with `--cfg tokio_unstable`, else [`Mode::Stable`].
    fn default() -> Self {
        if cfg!(tokio_unstable) { Mode::TaskHooks } else { Mode::Stable }
    }
}

impl Mode {
    /// `hooks` or `stable`.
    fn parse(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "hooks" | "task-hooks" | "unstable" => Ok(Mode::TaskHooks),
            "stable" => Ok(Mode::Stable),
            _ => Err("expected hooks or stable".into()),
        }
    }

    /// The mode this build can run: [`Mode::TaskHooks`] needs `--cfg tokio_unstable`.
    pub(crate) fn effective(self) -> Mode {
        if cfg!(tokio_unstable) { self } else { Mode::Stable }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::TaskHooks => "task hooks",
            Mode::Stable => "stable",
        })
    }
}

/// The agent's settings after code and environment are combined. Read it back with
/// [`Agent::config`](crate::Agent::config).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Install the agent at all.
    pub enabled: bool,
    /// How stalls are found: every poll timed through tokio's task hooks, or (stable tokio only) the
    /// workers' busy spans confirmed by stack samples.
    pub mode: Mode,
    /// A poll that has run longer than this is a stall.
    pub stall_threshold: Duration,
    /// Polls at least this long count as slow.
    pub slow_poll_threshold: Duration,
    /// How often the watchdog checks running polls.
    pub watchdog_interval: Duration,
    /// Ask for real-time scheduling (`SCHED_FIFO` priority 1) for the watchdog thread, where permitted; else
    /// (or when off) nice -10 where permitted. It wakes for microseconds at a time, and a late watchdog means
    /// late reports and late readings on a busy machine.
    pub realtime_watchdog: bool,
    /// Rate limit for stall reports; 0 means unlimited.
    pub max_reports_per_second: u32,
    /// Report stalls at all (as `tracing` warnings or on stderr, see `report`).
    pub tracing: bool,
    /// Where stall reports go when `tracing` is on.
    pub report: ReportTo,
    /// Task table capacity (rounded up to a power of two).
    pub max_tasks: usize,
    /// Location table capacity.
    pub max_locations: usize,
    /// How many finished tasks to keep for display.
    pub retain_finished: usize,
    /// Turn on tokio's per-task schedule-latency tracking.
    pub schedule_latency: bool,
    /// How often runtime metrics and the lag probes are sampled.
    pub sample_interval: Duration,
    /// Use the OS probes to describe stall culprits. Process-wide: the first agent's setting wins.
    pub probes: bool,
    /// Capture stalled threads' stacks.
    pub stacks: bool,
    /// Open per-thread perf counters.
    pub perf: bool,
    /// How stacks are unwound.
    pub unwinder: loopscope_probes::stack::Unwinder,
    /// A name for the runtime.
    pub name: Option<String>,
    /// Where the live stream is served; `None` serves nothing. If the default address is taken (another
    /// agent got there first), the agent warns and runs without serving; any other address that can't be
    /// bound fails [`install`](crate::AgentBuilder::install).
    pub serve: Option<ServeAddr>,
    /// Write the stream to this file as well.
    pub record: Option<PathBuf>,
    /// Where to serve Prometheus/OpenMetrics `/metrics` over HTTP; `None` (the default) serves nothing.
    /// An address that can't be bound fails [`install`](crate::AgentBuilder::install).
    pub metrics: Option<SocketAddr>,
    /// How many spawn locations get a `location` label of their own in `/metrics` (the first seen keep
    /// theirs); stalls anywhere else are counted under `location="other"`, so the number of series stays
    /// bounded however many places the app spawns from.
    pub metrics_max_locations: usize,
    /// Where to serve the tokio-console gRPC API (`console-api`), so that `tokio-console http://ADDR` can
    /// watch the app; `None` (the default) serves nothing. Needs the crate's `console` feature: without it,
    /// an address here makes [`install`](crate::AgentBuilder::install) fail with an error that says so.
    pub console: Option<SocketAddr>,
    /// CI mode (`loopscope check`): write every stall into a file in this directory.
    pub check_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            mode: Mode::default(),
            stall_threshold: Duration::from_millis(10),
            slow_poll_threshold: Duration::from_micros(50),
            watchdog_interval: Duration::from_millis(1),
            realtime_watchdog: true,
            max_reports_per_second: 10,
            tracing: true,
            report: ReportTo::Auto,
            max_tasks: 65_536,
            max_locations: 4_096,
            retain_finished: 256,
            schedule_latency: false,
            sample_interval: Duration::from_millis(250),
            probes: true,
            stacks: true,
            perf: true,
            unwinder: loopscope_probes::stack::Unwinder::Dwarf,
            name: None,
            serve: Some(ServeAddr::default()),
            record: None,
            metrics: None,
            metrics_max_locations: 100,
            console: None,
            check_dir: None,
        }
    }
}

impl Config {
    /// Applies `LOOPSCOPE_*` variables from `lookup` (a function from name to value) on top of `self`.
    /// Unknown `LOOPSCOPE_*` names are returned so the caller can warn about likely typos.
    pub(crate) fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut unknown = Vec::new();
        for (var, value) in vars {
            if !var.starts_with("LOOPSCOPE_") {
                continue;
            }
            let v = value.trim();
            let err = |reason: String| ConfigError::InvalidEnv { var: var.clone(), value: value.clone(), reason };
            match var.as_str() {
                "LOOPSCOPE_ENABLED" => self.enabled = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_MODE" => self.mode = Mode::parse(v).map_err(err)?,
                "LOOPSCOPE_STALL_THRESHOLD" => self.stall_threshold = parse_duration(v).map_err(err)?,
                "LOOPSCOPE_SLOW_POLL_THRESHOLD" => self.slow_poll_threshold = parse_duration(v).map_err(err)?,
                "LOOPSCOPE_WATCHDOG_INTERVAL" => self.watchdog_interval = parse_duration(v).map_err(err)?,
                "LOOPSCOPE_REALTIME_WATCHDOG" => self.realtime_watchdog = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_MAX_REPORTS_PER_SECOND" => self.max_reports_per_second = parse_num(v).map_err(err)?,
                "LOOPSCOPE_TRACING" => self.tracing = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_REPORT" => match ReportTo::parse(v).map_err(err)? {
                    Some(to) => {
                        self.tracing = true;
                        self.report = to;
                    }
                    None => self.tracing = false,
                },
                "LOOPSCOPE_MAX_TASKS" => self.max_tasks = parse_num(v).map_err(err)?,
                "LOOPSCOPE_MAX_LOCATIONS" => self.max_locations = parse_num(v).map_err(err)?,
                "LOOPSCOPE_RETAIN_FINISHED" => self.retain_finished = parse_num(v).map_err(err)?,
                "LOOPSCOPE_SCHEDULE_LATENCY" => self.schedule_latency = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_SAMPLE_INTERVAL" => self.sample_interval = parse_duration(v).map_err(err)?,
                "LOOPSCOPE_PROBES" => self.probes = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_STACKS" => self.stacks = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_PERF" => self.perf = parse_bool(v).map_err(err)?,
                "LOOPSCOPE_UNWINDER" => self.unwinder = parse_unwinder(v).map_err(err)?,
                "LOOPSCOPE_NAME" => self.name = if v.is_empty() { None } else { Some(v.to_string()) },
                "LOOPSCOPE_ADDR" => self.serve = ServeAddr::parse(v).map_err(|e| err(e.to_string()))?,
                "LOOPSCOPE_RECORD" => self.record = (!v.is_empty()).then(|| PathBuf::from(v)),
                "LOOPSCOPE_METRICS_ADDR" => self.metrics = parse_metrics_addr(v).map_err(err)?,
                "LOOPSCOPE_METRICS_MAX_LOCATIONS" => self.metrics_max_locations = parse_num(v).map_err(err)?,
                "LOOPSCOPE_CONSOLE_ADDR" => self.console = parse_console_addr(v).map_err(err)?,
                "LOOPSCOPE_CHECK_DIR" => self.check_dir = (!v.is_empty()).then(|| PathBuf::from(v)),
                _ if EXTRA_ENV_VARS.contains(&var.as_str()) => {}
                _ => {
                    unknown.push(var);
                    continue;
                }
            }
            // Range checks name the variable too, so the user knows which one to fix.
            self.validate().map_err(|e| ConfigError::InvalidEnv {
                var: var.clone(),
                value: value.clone(),
                reason: match e {
                    ConfigError::OutOfRange { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
        }
        Ok(unknown)
    }

    /// Checks ranges. Called after code settings and again after each environment variable.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let range = |setting: &'static str, value: String, reason: &str| {
            Err(ConfigError::OutOfRange { setting, value, reason: reason.to_string() })
        };
        if self.stall_threshold < MIN_STALL_THRESHOLD {
            return range(
                "stall_threshold",
                format!("{:?}", self.stall_threshold),
                "must be at least 100us: shorter polls are normal scheduling noise",
            );
        }
        if self.stall_threshold > Duration::from_secs(3600) {
            return range("stall_threshold", format!("{:?}", self.stall_threshold), "must be at most 1h");
        }
        if self.watchdog_interval < Duration::from_micros(100) || self.watchdog_interval > Duration::from_secs(1) {
            return range("watchdog_interval", format!("{:?}", self.watchdog_interval), "must be between 100us and 1s");
        }
        if self.sample_interval < Duration::from_millis(10) || self.sample_interval > Duration::from_secs(60) {
            return range("sample_interval", format!("{:?}", self.sample_interval), "must be between 10ms and 60s");
        }
        if self.max_tasks == 0 || self.max_tasks > (1 << 26) {
            return range("max_tasks", self.max_tasks.to_string(), "must be between 1 and 67108864");
        }
        if self.max_locations == 0 || self.max_locations > (1 << 20) {
            return range("max_locations", self.max_locations.to_string(), "must be between 1 and 1048576");
        }
        if self.metrics_max_locations > 10_000 {
            // Each location label is a series per kind and classification: past this, a scrape's size and
            // Prometheus' memory grow more than any dashboard needs.
            return range("metrics_max_locations", self.metrics_max_locations.to_string(), "must be at most 10000");
        }
        if self.retain_finished > 1 << 20 {
            return range("retain_finished", self.retain_finished.to_string(), "must be at most 1048576");
        }
        Ok(())
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err("expected one of 1/0, true/false, on/off, yes/no".into()),
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "").parse().map_err(|_| "expected a whole number".to_string())
}

/// Environment variables read by later parts of loopscope (the stream server, CI mode); accepted without a
/// typo warning.
pub(crate) const EXTRA_ENV_VARS: &[&str] = &[];

/// The address `/metrics` is served on (`LOOPSCOPE_METRICS_ADDR`, [`AgentBuilder::metrics_addr`]): `HOST:PORT`
/// with an IP address (`[::1]:9464` for IPv6) or `localhost`, a port alone (`9464` or `:9464`, served on
/// 127.0.0.1: metrics say what the app runs, so they stay on this machine unless asked), or `off`. Host
/// names other than `localhost` are refused rather than resolved: resolving could pick any address.
///
/// [`AgentBuilder::metrics_addr`]: crate::AgentBuilder::metrics_addr
pub(crate) fn parse_metrics_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    parse_local_addr(s, 9464)
}

/// The address the tokio-console API is served on (`LOOPSCOPE_CONSOLE_ADDR`, `AgentBuilder::console_addr`):
/// the same forms as [`parse_metrics_addr`], for the same reason (a port alone is served on 127.0.0.1).
/// tokio-console connects to `http://127.0.0.1:6669` by default.
pub(crate) fn parse_console_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    parse_local_addr(s, 6669)
}

/// `HOST:PORT` with an IP or `localhost`, a port alone (on 127.0.0.1), or `off`; `example` is the port the
/// error message shows.
fn parse_local_addr(s: &str, example: u16) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expected = format!(
        "expected HOST:PORT with an IP address (e.g. 127.0.0.1:{example} or [::1]:{example}), a port alone \
         ({example}, served on 127.0.0.1), or off"
    );
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port (0-65535); {expected}"));
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Some(p) = s.strip_prefix(':') {
        return Ok(Some(SocketAddr::new(loopback, port(p)?)));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Some(SocketAddr::new(loopback, port(s)?)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    match s.rsplit_once(':') {
        Some((host, p)) if host.eq_ignore_ascii_case("localhost") => Ok(Some(SocketAddr::new(loopback, port(p)?))),
        Some((_, p)) if p.parse::<u16>().is_err() => Err(format!("{p:?} is not a port (0-65535); {expected}")),
        _ => Err(expected),
    }
}

/// The unwinder named by `LOOPSCOPE_UNWINDER`.
fn parse_unwinder(s: &str) -> Result<Unwinder, String> {
    match s.to_ascii_lowercase().as_str() {
        "dwarf" => Ok(Unwinder::Dwarf),
        "fp" | "frame-pointer" | "frame-pointers" | "framepointer" => Ok(Unwinder::FramePointer),
        _ => Err("expected dwarf or frame-pointer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_code() {
        let mut c = Config { stall_threshold: Duration::from_millis(50), ..Config::default() };
        let unknown = c
            .apply_env(env(&[
                ("LOOPSCOPE_STALL_THRESHOLD", "5ms"),
                ("LOOPSCOPE_TRACING", "off"),
                ("LOOPSCOPE_MAX_TASKS", "1_000"),
                ("PATH", "/bin"),
                ("LOOPSCOPE_STALL_THRESHHOLD", "1ms"),
            ]))
            .unwrap();
        assert_eq!(c.stall_threshold, Duration::from_millis(5));
        assert!(!c.tracing);
        assert_eq!(c.max_tasks, 1000);
        assert_eq!(unknown, vec!["LOOPSCOPE_STALL_THRESHHOLD".to_string()]);
    }

    #[test]
    fn malformed_env_names_the_variable() {
        let mut c = Config::default();
        let e = c.apply_env(env(&[("LOOPSCOPE_STALL_THRESHOLD", "abc")])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("LOOPSCOPE_STALL_THRESHOLD"), "{msg}");
        assert!(msg.contains("abc"), "{msg}");
        let e = c.apply_env(env(&[("LOOPSCOPE_STALL_THRESHOLD", "10us")])).unwrap_err();
        assert!(e.to_string().contains("LOOPSCOPE_STALL_THRESHOLD") && e.to_string().contains("100us"), "{e}");
        let e = c.apply_env(env(&[("LOOPSCOPE_TRACING", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("LOOPSCOPE_TRACING"));
        let e = c.apply_env(env(&[("LOOPSCOPE_MAX_TASKS", "-3")])).unwrap_err();
        assert!(e.to_string().contains("LOOPSCOPE_MAX_TASKS"));
    }

    #[test]
    fn metrics_addr_forms() {
        let parse = |s| parse_metrics_addr(s).map(|a| a.map(|a| a.to_string()));
        assert_eq!(parse("off"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("9464").unwrap().as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(parse(":9464").unwrap().as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(parse("localhost:9464").unwrap().as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(parse("0.0.0.0:9464").unwrap().as_deref(), Some("0.0.0.0:9464"));
        assert_eq!(parse("[::1]:0").unwrap().as_deref(), Some("[::1]:0"));
        for bad in ["example.com:9464", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http", "nine", ":"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn malformed_metrics_addr_names_the_variable() {
        let mut c = Config::default();
        let e = c.apply_env(env(&[("LOOPSCOPE_METRICS_ADDR", "127.0.0.1:port")])).unwrap_err().to_string();
        assert!(e.contains("LOOPSCOPE_METRICS_ADDR") && e.contains("127.0.0.1:port") && e.contains("HOST:PORT"), "{e}");
        let e = c.apply_env(env(&[("LOOPSCOPE_METRICS_MAX_LOCATIONS", "1000000")])).unwrap_err().to_string();
        assert!(e.contains("LOOPSCOPE_METRICS_MAX_LOCATIONS") && e.contains("10000"), "{e}");
        let mut c = Config::default();
        assert_eq!(c.metrics, None, "metrics are off by default");
        c.apply_env(env(&[("LOOPSCOPE_METRICS_ADDR", "9464")])).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn console_addr_is_off_by_default_and_loopback_when_a_port_alone() {
        let mut c = Config::default();
        assert_eq!(c.console, None, "the console API is off by default");
        c.apply_env(env(&[("LOOPSCOPE_CONSOLE_ADDR", "6669")])).unwrap();
        assert_eq!(c.console, Some("127.0.0.1:6669".parse().unwrap()));
        let e = c.apply_env(env(&[("LOOPSCOPE_CONSOLE_ADDR", "console.example:6669")])).unwrap_err().to_string();
        assert!(e.contains("LOOPSCOPE_CONSOLE_ADDR") && e.contains("127.0.0.1:6669"), "{e}");
        c.apply_env(env(&[("LOOPSCOPE_CONSOLE_ADDR", "off")])).unwrap();
        assert_eq!(c.console, None);
    }
}
