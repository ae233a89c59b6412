//! CI mode: fail a test when any handler blocks the event loop, and name the culprit.
//!
//! Three ways in:
//!
//! * `#[loopscope::test(max_poll = "5ms")]`, a drop-in replacement for `#[tokio::test]`;
//! * [`Check`], the same as a function, for custom runtimes and harnesses;
//! * `loopscope check -- cargo test` (the CLI), which collects stalls from every runtime of every process
//!   it runs, through files the agents write when `LOOPSCOPE_CHECK_DIR` is set (see [`CHECK_DIR_ENV`]).
//!
//! ```
//! use std::time::Duration;
//!
//! let report = loopscope::check::Check::new()
//!     .max_poll(Duration::from_millis(50))
//!     .run_current_thread(async {
//!         tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
//!     });
//! report.assert_no_stalls();
//! assert_eq!(report.stalls().count(), 0);
//! ```

use crate::agent::{Agent, AgentBuilder};
use loopscope_wire::ci_record::{AllowList, Exemption};
use loopscope_wire::{FrameOrigin, StallEvent, StallKind, StallPhase, StallSummary, StallTime};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Environment variable: a directory where every agent in the process writes its stalls, one JSON object
/// per line, for `loopscope check`. Set by the CLI; apps don't set it themselves.
pub const CHECK_DIR_ENV: &str = "LOOPSCOPE_CHECK_DIR";

/// Configures a check: the longest poll allowed, what is exempt, and how many stalls are tolerated.
#[derive(Debug, Clone)]
#[must_use]
pub struct Check {
    max_poll: Duration,
    allow: AllowList,
    max_stalls: usize,
    count_preemption: bool,
    agent: AgentBuilder,
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

/// One stall in a report: its final event, and whether it counts against the check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedStall {
    /// The stall's latest event (its `Ended` event once the poll returned).
    pub event: StallEvent,
    /// Which allow-list entry exempts it, if any.
    pub allowed_by: Option<String>,
    /// The OS, not the code, made it a stall: its own time stayed under `max_poll` while its thread waited
    /// for a CPU (see [`Check::count_preemption`]). Not counted unless `count_preemption` is set.
    pub delayed_by_os: bool,
}

impl CheckedStall {
    /// Whether the stall counts against the check: not allowed, not loopscope's own task, and not an OS delay
    /// (unless `count_preemption` asked for wall-time verdicts).
    fn counts(&self, count_preemption: bool) -> bool {
        self.allowed_by.is_none() && self.event.agent_task.is_none() && (count_preemption || !self.delayed_by_os)
    }
}

/// What a check found. Display it for a readable failure message.
#[derive(Debug, Clone)]
pub struct Report {
    max_poll: Duration,
    max_stalls: usize,
    count_preemption: bool,
    stalls: Vec<CheckedStall>,
    /// Stalls counted but not listed (more than the agent remembers, or found without details).
    unlisted: u64,
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

    /// Every stall seen, allowed or not.
    pub fn all(&self) -> impl Iterator<Item = &CheckedStall> {
        self.stalls.iter()
    }

    /// The stalls that count against the check: not exempted by the allow-list, not delayed by the OS (unless
    /// [`Check::count_preemption`]), and not loopscope's own tasks.
    pub fn stalls(&self) -> impl Iterator<Item = &StallEvent> {
        self.stalls.iter().filter(|s| s.counts(self.count_preemption)).map(|s| &s.event)
    }

    /// Stalls whose wall time passed `max_poll` only because the OS kept their thread waiting for a CPU; they
    /// don't count unless [`Check::count_preemption`] is set.
    pub fn delayed_by_os(&self) -> impl Iterator<Item = &StallEvent> {
        self.stalls.iter().filter(|s| s.delayed_by_os && s.allowed_by.is_none()).map(|s| &s.event)
    }

    /// Stalls counted without details (beyond what the agent remembers); they count against the check.
    pub fn unlisted(&self) -> u64 {
        self.unlisted
    }

    /// The number of stalls that count against the check.
    pub fn violations(&self) -> u64 {
        self.stalls().count() as u64 + self.unlisted
    }

    /// Whether the check passes: no more than `max_stalls` violations.
    pub fn passed(&self) -> bool {
        self.violations() <= self.max_stalls as u64
    }

    /// Panics with the readable report unless the check passed.
    #[track_caller]
    pub fn assert_no_stalls(&self) {
        if !self.passed() {
            panic!("{self}");
        }
    }
}

fn allowed_by(ev: &StallEvent, allow: &AllowList) -> Option<String> {
    allow.exempts(ev).map(|e| match e {
        Exemption::Spawn(a) => format!("allow_spawn {a:?}"),
        Exemption::Function(f) => format!("allow_fn {f:?}"),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.violations();
        if self.passed() && v == 0 {
            writeln!(f, "loopscope: no poll held its thread longer than {:?}", self.max_poll)?;
        } else {
            writeln!(
                f,
                "loopscope: {v} poll{} held a worker thread longer than max_poll = {:?}{}:",
                if v == 1 { "" } else { "s" },
                self.max_poll,
                if self.max_stalls > 0 { format!(" (up to {} tolerated)", self.max_stalls) } else { String::new() }
            )?;
        }
        for (i, s) in self.stalls.iter().filter(|s| s.counts(self.count_preemption)).enumerate() {
            writeln!(f)?;
            write_stall(f, i + 1, &s.event)?;
        }
        let delayed: Vec<_> = if self.count_preemption {
            Vec::new()
        } else {
            self.stalls.iter().filter(|s| s.delayed_by_os && s.counts(true)).collect()
        };
        if !delayed.is_empty() {
            let n = delayed.len();
            writeln!(
                f,
                "\n  {n} poll{} delayed by the OS, not by {} code (the machine was oversubscribed); not counted \
                 (count_preemption = true counts them):",
                if n == 1 { " was" } else { "s were" },
                if n == 1 { "its" } else { "their" }
            )?;
            for s in delayed.iter().take(5) {
                let loc = s.event.location.as_ref().map_or("unknown location".into(), ToString::to_string);
                let how = s.event.time.as_ref().map(StallTime::describe).unwrap_or_default();
                writeln!(f, "    {:.1?} at {loc}: {how}", s.event.elapsed)?;
            }
            if n > 5 {
                writeln!(f, "    ... and {} more", n - 5)?;
            }
        }
        let own = self.stalls.iter().filter(|s| s.event.agent_task.is_some()).count();
        if own > 0 {
            writeln!(f, "\n  {own} stall(s) of loopscope's own tasks (lag probes), not counted")?;
        }
        if self.unlisted > 0 {
            writeln!(f, "\n  ... and {} more stall(s) counted without details", self.unlisted)?;
        }
        let allowed: Vec<_> = self.stalls.iter().filter(|s| s.allowed_by.is_some()).collect();
        if !allowed.is_empty() {
            writeln!(f, "\n  {} stall(s) exempted by the allow-list:", allowed.len())?;
            for s in allowed {
                let loc = s.event.location.as_ref().map_or("unknown location".into(), ToString::to_string);
                writeln!(f, "    {:.1?} at {loc} ({})", s.event.elapsed, s.allowed_by.as_deref().unwrap_or_default())?;
            }
        }
        Ok(())
    }
}

/// How many frames of each stack a report shows: the user's frames first, then a few more for context.
const REPORT_FRAMES: usize = 12;

fn write_stall(f: &mut fmt::Formatter<'_>, n: usize, ev: &StallEvent) -> fmt::Result {
    let loc = ev.location.as_ref().map_or("an unknown location".into(), ToString::to_string);
    let whose = match (ev.kind, ev.worker) {
        (StallKind::BlockInPlace, _) => "in block_in_place".to_string(),
        (_, Some(w)) => format!("on worker {w}"),
        (_, None) => format!("on thread {}", ev.thread.tid),
    };
    let still = if ev.phase == StallPhase::Ended { "" } else { " (still running at the end)" };
    writeln!(f, "  {n}. {:.1?}{still}: task {} spawned at {loc}, {whose}", ev.elapsed, ev.task_id)?;
    let Some(c) = &ev.culprit else {
        if !ev.caught_in_flight {
            writeln!(f, "     (found after it ended: no stack)")?;
        }
        return Ok(());
    };
    let mut how = c.classification.to_string();
    match &ev.time {
        Some(t) => how.push_str(&format!(" ({})", t.describe())),
        None => {
            if let Some(r) = c.on_cpu_ratio {
                how.push_str(&format!(", {:.0}% on CPU", r * 100.0));
            }
        }
    }
    writeln!(f, "     {how}")?;
    let frames = c.frames();
    if frames.is_empty() {
        if let Some(err) = c.samples.iter().find_map(|s| s.stack_error.as_deref()) {
            writeln!(f, "     (no stack: {err})")?;
        }
        return Ok(());
    }
    // The user's own frames first (innermost first), then the rest.
    let user: Vec<_> = frames.iter().filter(|fr| fr.origin == FrameOrigin::User).collect();
    let other = frames.len() - user.len();
    for (i, fr) in user.iter().take(REPORT_FRAMES).enumerate() {
        writeln!(f, "     {} {}", if i == 0 { "at" } else { "  " }, fr.display_short())?;
    }
    if other > 0 {
        writeln!(f, "     ({other} runtime/std frames not shown)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopscope_wire::{Location, ThreadInfo};

    fn ev(file: &str, line: u32) -> StallEvent {
        StallEvent {
            stall_id: 1,
            phase: StallPhase::Ended,
            kind: StallKind::WorkerBlocked,
            runtime_id: 1,
            worker: Some(0),
            thread: ThreadInfo { tid: 1, name: None },
            task_id: 3,
            location: Some(Location::new(file, line, 5)),
            elapsed: Duration::from_millis(30),
            threshold: Duration::from_millis(10),
            at_unix_nanos: 0,
            suppressed: 0,
            caught_in_flight: true,
            time: None,
            agent_task: None,
            culprit: None,
        }
    }

    #[test]
    fn allow_list_by_spawn_location() {
        let e = ev("/home/x/src/legacy.rs", 42);
        let spawn = |a: &str| AllowList { spawn: vec![a.into()], functions: vec![] };
        assert_eq!(allowed_by(&e, &spawn("src/legacy.rs")).as_deref(), Some("allow_spawn \"src/legacy.rs\""));
        assert!(allowed_by(&e, &spawn("src/legacy.rs:42")).is_some());
        assert!(allowed_by(&e, &spawn("src/legacy.rs:43")).is_none());
        assert!(allowed_by(&e, &spawn("src/other.rs")).is_none());
    }

    #[test]
    fn report_counts_and_formats() {
        let check = Check::new().max_poll(Duration::from_millis(10)).allow_spawn("legacy.rs");
        let stalls = vec![
            CheckedStall { event: ev("src/a.rs", 1), allowed_by: None, delayed_by_os: false },
            CheckedStall {
                event: ev("src/legacy.rs", 2),
                allowed_by: Some("allow_spawn".into()),
                delayed_by_os: false,
            },
        ];
        let r = Report { max_poll: check.max_poll, max_stalls: 0, count_preemption: false, stalls, unlisted: 0 };
        assert_eq!(r.violations(), 1);
        assert!(!r.passed());
        let text = r.to_string();
        assert!(text.contains("1 poll held a worker thread longer than max_poll = 10ms"), "{text}");
        assert!(text.contains("task 3 spawned at src/a.rs:1:5, on worker 0"), "{text}");
        assert!(text.contains("1 stall(s) exempted by the allow-list"), "{text}");
        let tolerant = Report { max_stalls: 1, ..r };
        assert!(tolerant.passed());
    }

    #[test]
    fn polls_delayed_by_the_os_are_listed_apart_and_count_only_when_asked() {
        let ms = Duration::from_millis;
        let mut preempted = ev("src/busy.rs", 7);
        preempted.elapsed = ms(22);
        preempted.time = Some(StallTime {
            wall: ms(22),
            on_cpu: ms(2),
            off_cpu: Duration::ZERO,
            run_queue: ms(19),
            unmeasured: ms(1),
            estimated: false,
        });
        let mut own = ev("src/loopscope/sampler.rs", 1);
        own.agent_task = Some("timer-lateness probe".into());
        let max_poll = ms(10);
        let stalls: Vec<_> = [preempted, own]
            .into_iter()
            .map(|e| CheckedStall { delayed_by_os: e.delayed_by_os(max_poll), event: e, allowed_by: None })
            .collect();
        let r = Report { max_poll, max_stalls: 0, count_preemption: false, stalls, unlisted: 0 };
        assert!(r.passed(), "{r}");
        assert_eq!(r.delayed_by_os().count(), 1);
        let text = r.to_string();
        assert!(text.contains("1 poll was delayed by the OS, not by its code"), "{text}");
        assert!(text.contains("waiting for a CPU 19.0ms of 22.0ms, own time 3.0ms"), "{text}");
        assert!(text.contains("1 stall(s) of loopscope's own tasks"), "{text}");
        let strict = Report { count_preemption: true, ..r };
        assert_eq!(strict.violations(), 1, "wall-time verdicts count the OS's delay, never loopscope's tasks");
    }
}
