//! Setting up a check: the limit, the exemptions and the tolerance ([`Check`]), and the agent it installs
//! on a runtime ([`CheckGuard`]), whose stalls become a [`Report`].

use super::report::{CheckedStall, Report, allowed_by};

use crate::agent::{Agent, AgentBuilder};
use loopscope_wire::StallSummary;
use loopscope_wire::ci_record::AllowList;
use std::future::Future;
use std::time::{Duration, Instant};

/// Environment variable: a directory where every agent in the process writes its stalls, one JSON object
/// per line, for `loopscope check`. Set by the CLI; apps don't set it themselves.
pub const CHECK_DIR_ENV: &str = "LOOPSCOPE_CHECK_DIR";

/// Configures a check: the longest poll allowed, what is exempt, and how many stalls are tolerated.
#[derive(Debug, Clone)]
#[must_use]
pub struct Check {
    pub(super) max_poll: Duration,
    pub(super) allow: AllowList,
    pub(super) max_stalls: usize,
    pub(super) count_preemption: bool,
    pub(super) agent: AgentBuilder,
}

impl Default for Check {
    fn default() -> Self {
        // A check must see every stall: no rate limit. The environment can't loosen a test's limit, but under
        // `loopscope check` its stalls are reported to the CLI as well.
        let mut agent = Agent::builder().ignore_env().serve("off").max_reports_per_second(0).tracing(false);
        agent.config.check_dir = loopscope_wire::ci_record::check_dir_from_env();
        Check {
            max_poll: Duration::from_millis(10),
            allow: AllowList::default(),
            max_stalls: 0,
            count_preemption: false,
            agent,
        }
    }
}

impl Check {
    /// A check with a 10 ms limit, no allow-list and no tolerated stalls.
    pub fn new() -> Self {
        Check::default()
    }

    /// The longest a single poll may hold its thread (at least 100 µs).
    pub fn max_poll(mut self, d: Duration) -> Self {
        self.max_poll = d;
        self
    }

    /// Exempts stalls of tasks spawned at a location: `"src/legacy.rs"` (a path suffix) or
    /// `"src/legacy.rs:42"` (a line).
    pub fn allow_spawn(mut self, location: impl Into<String>) -> Self {
        self.allow.spawn.push(location.into());
        self
    }

    /// Exempts stalls whose captured stack contains a function whose name contains `function`, e.g.
    /// `"my_crate::legacy::load_config"`. Needs the stack probe (on by default on Linux).
    pub fn allow_fn(mut self, function: impl Into<String>) -> Self {
        self.allow.functions.push(function.into());
        self
    }

    /// Tolerates up to `n` stalls that are not allowed (default 0).
    pub fn max_stalls(mut self, n: usize) -> Self {
        self.max_stalls = n;
        self
    }

    /// Judges polls by wall time (`true`) instead of by their own time (default `false`).
    ///
    /// By default a poll fails the check only when its own time, its wall time less the time its thread was
    /// runnable but waiting for a CPU, passes `max_poll`. On a machine with more runnable threads than cores
    /// (parallel tests, a busy CI runner) the OS can keep a worker off the CPU for tens of milliseconds in the
    /// middle of a short poll; such polls are listed apart in the report, not counted. Stalls that could not be
    /// measured always count.
    pub fn count_preemption(mut self, yes: bool) -> Self {
        self.count_preemption = yes;
        self
    }

    /// Replaces the agent settings (for example to log stalls with `tracing(true)`). The stall threshold is
    /// always `max_poll`. Under `loopscope check` (`LOOPSCOPE_CHECK_DIR` set) the runtime reports its stalls
    /// to the CLI too, whatever the settings say.
    pub fn agent(mut self, mut agent: AgentBuilder) -> Self {
        if agent.config.check_dir.is_none() {
            agent.config.check_dir = loopscope_wire::ci_record::check_dir_from_env();
        }
        self.agent = agent;
        self
    }

    /// Runs `body` as a task on a multi-thread runtime with `workers` worker threads, then reports.
    /// Panics in `body` are re-raised on the calling thread, so `#[should_panic]` works.
    pub fn run_multi_thread<F>(self, workers: usize, body: F) -> Report
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers.max(1)).enable_all();
        self.run(b, body).0
    }

    /// Runs `body` as a task on a current-thread runtime, then reports.
    pub fn run_current_thread<F>(self, body: F) -> Report
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        self.run(b, body).0
    }

    /// Installs the agent on `builder`, runs `body` as a spawned task (so its own polls are timed too), drops
    /// the runtime, and returns the report with the body's output.
    pub fn run<F>(self, mut builder: tokio::runtime::Builder, body: F) -> (Report, F::Output)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let guard = match self.install(&mut builder) {
            Ok(g) => g,
            Err(e) => panic!("loopscope check: {e}"),
        };
        let runtime = match builder.build() {
            Ok(rt) => rt,
            Err(e) => panic!("loopscope check: could not build the runtime: {e}"),
        };
        let joined = runtime.block_on(async move { tokio::spawn(body).await });
        drop(runtime);
        let report = guard.finish();
        match joined {
            Ok(out) => (report, out),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("loopscope check: the test body was cancelled: {e}"),
        }
    }

    /// Installs the agent on your own builder. Build and run the runtime, drop it, then call
    /// [`CheckGuard::finish`] for the report.
    pub fn install(self, builder: &mut tokio::runtime::Builder) -> Result<CheckGuard, crate::agent::Error> {
        let agent = self.agent.clone().stall_threshold(self.max_poll).install(builder)?;
        Ok(CheckGuard { agent, check: self })
    }
}

/// An agent installed by [`Check::install`].
#[derive(Debug)]
pub struct CheckGuard {
    agent: Agent,
    check: Check,
}

impl CheckGuard {
    /// The agent, for snapshots while the runtime runs.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Waits (up to 30 s) for the agent to finish after the runtime was dropped, then reports. If the runtime
    /// is still alive, reports what was seen so far.
    pub fn finish(self) -> Report {
        // The agent thread names every stack before it closes a stall; the first names wait for the debug
        // info to load, which takes seconds for a large debug binary on a busy machine. Stalls it had no time
        // for would count "without details", so be patient: it always finishes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.agent.is_drained() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Report::from_agent(&self.agent, &self.check)
    }
}

impl Report {
    /// Builds a report from everything `agent` has seen.
    pub fn from_agent(agent: &Agent, check: &Check) -> Report {
        let summaries = agent.stalls();
        let counted = agent.snapshot().totals.stall_count;
        let stalls: Vec<CheckedStall> = summaries
            .into_iter()
            .map(|StallSummary { last, .. }| {
                let allowed_by = allowed_by(&last, &check.allow);
                let delayed_by_os = last.delayed_by_os(check.max_poll);
                CheckedStall { event: last, allowed_by, delayed_by_os }
            })
            .collect();
        let unlisted = counted.saturating_sub(stalls.len() as u64);
        Report {
            max_poll: check.max_poll,
            max_stalls: check.max_stalls,
            count_preemption: check.count_preemption,
            stalls,
            unlisted,
        }
    }
}
